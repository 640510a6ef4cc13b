"""`bandpo compare --set FIELD=VALUE`: settings shared by every arm (a real model needs a smaller budget)."""

from __future__ import annotations

import pytest

from bandpo import cli
from bandpo.cli.compare import _parse_settings, shared_settings


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


def _compare_args(*argv: str):
    return cli.build_parser().parse_args(["compare", *argv])


def test_a_config_file_sets_the_shared_settings_and_set_overrides_it(tmp_path):
    path = tmp_path / "shared.yaml"
    path.write_text("learning_rate: 3e-5\neval_prompts: 32\nreport_to: none\n")
    assert shared_settings(_compare_args("--config", str(path))) == {
        "learning_rate": 3e-5,
        "eval_prompts": 32,
        "report_to": "none",
    }
    both = shared_settings(_compare_args("--config", str(path), "--set", "eval_prompts=8"))
    assert both["eval_prompts"] == 8 and both["learning_rate"] == 3e-5


def test_a_config_file_is_refused_as_train_refuses_it_and_may_not_set_the_arms(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("eval_prompts: 0\n")
    with pytest.raises(
        ValueError, match=r"bad.yaml: eval_prompts=0 is not valid; use an integer in \[1, 100,000\]"
    ):
        shared_settings(_compare_args("--config", str(bad)))
    arms = tmp_path / "arms.yaml"
    arms.write_text("seed: 3\nmethod: clip\nlearning_rate: 1e-5\n")
    assert cli.main(["compare", "--config", str(arms), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "arms.yaml: method, seed set by the comparison itself" in err and "--methods, --seeds" in err
    assert not (tmp_path / "out").exists()
