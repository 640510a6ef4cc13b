"""`bandpo compare --set FIELD=VALUE`: settings shared by every arm (a real model needs a smaller budget)."""

from __future__ import annotations

import pytest

from bandpo import cli
from bandpo.cli.compare import _parse_settings


def test_settings_are_typed_train_config_fields():
    settings = _parse_settings(["learning_rate=2e-5", "eval-prompts=32", "use_chat_template=true"])
    assert settings == {"learning_rate": 2e-5, "eval_prompts": 32, "use_chat_template": True}


@pytest.mark.parametrize(
    ("item", "message"),
    [("lr=1", "expected FIELD=VALUE with a TrainConfig field"), ("seed=3", "set by the comparison itself")],
)
def test_unknown_or_fixed_fields_are_refused(item, message):
    with pytest.raises(ValueError, match=message):
        _parse_settings([item])


def test_sums_without_a_model_is_one_line_naming_the_fix(tmp_path, capsys):
    code = cli.main(["compare", "--task", "sums", "--seeds", "1", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert (
        code == 2
        and "task='sums' is for a pretrained model" in err
        and "--model smollm2-135m-instruct" in err
    )
