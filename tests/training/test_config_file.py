"""`bandpo train --config FILE`: YAML or JSON settings, checked like the flags, overridden by them.

The round trip through a real run (a run's config.json as ``--config``) is in test_run_outputs_e2e.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from bandpo import methods
from bandpo.cli import build_parser, main
from bandpo.cli.train import build_config
from bandpo.method_params import param
from bandpo.methods import DeclaredMethod
from bandpo.training import TrainConfig
from bandpo.training.config_file import load_config
from bandpo.training.run_dir import to_json


def parse(*argv: str) -> TrainConfig:
    return build_config(build_parser().parse_args(["train", *argv]))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _fails_in_one_line(argv: list[str], capsys) -> str:
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bandpo train: error:"), err
    return err


def test_yaml_sets_fields_and_flags_override_it(tmp_path):
    path = _write(
        tmp_path / "run.yaml",
        "# a comment\nmax_steps: 7\nlearning_rate: 3e-4\nmethod: clip\neps_high: 0.28\nreport_to: [tensorboard, wandb]\n",
    )
    config = parse("--config", str(path))
    # YAML reads 3e-4 as text: it is read as the flag reads it
    assert (config.max_steps, config.learning_rate, config.method, config.eps_high) == (7, 3e-4, "clip", 0.28)
    assert config.report_to == ("tensorboard", "wandb")
    overridden = parse("--config", str(path), "--max-steps", "9", "--report-to", "trackio")
    assert (overridden.max_steps, overridden.learning_rate, overridden.report_to) == (9, 3e-4, ("trackio",))
    assert parse("--config", str(path), "--no-tensorboard").report_to == ("wandb",)


def test_json_and_yaml_give_the_same_config(tmp_path):
    values = {"max_steps": 5, "dual_clip_c": None, "scale_rewards": "batch", "project": "mine"}
    from_json = parse("--config", str(_write(tmp_path / "run.json", json.dumps(values))))
    from_yaml = parse(
        "--config",
        str(
            _write(
                tmp_path / "run.yml", "max_steps: 5\ndual_clip_c: off\nscale_rewards: batch\nproject: mine\n"
            )
        ),
    )
    assert (
        from_json
        == from_yaml
        == TrainConfig(max_steps=5, dual_clip_c=None, scale_rewards="batch", project="mine")
    )


def test_a_config_json_round_trips(tmp_path):
    """Every field as config.json writes it (its resolved block included) gives back the same config."""
    config = TrainConfig(
        method="band",
        delta=0.1,
        dual_clip_c=math.inf,  # written as null: "off"
        max_completion_length=6,
        report_to=("trackio", "tensorboard"),
        output_dir=str(tmp_path / "old"),
    )
    path = _write(tmp_path / "config.json", to_json(config.to_dict(), indent=2))
    assert "resolved" in json.loads(path.read_text())
    assert parse("--config", str(path)) == config
    assert load_config(path) == config
    # the flag wins over the file
    assert parse("--config", str(path), "--output-dir", "new").output_dir == "new"


def test_a_config_json_from_before_report_to_still_reads(tmp_path):
    values = json.loads(to_json(TrainConfig().to_dict()))
    del values["report_to"], values["project"]
    values["report_tensorboard"] = False
    path = _write(tmp_path / "config.json", json.dumps(values))
    assert parse("--config", str(path)).report_to == ()
    assert parse("--config", str(path), "--tensorboard").report_to == ("tensorboard",)


def test_preset_comes_from_the_flag_then_the_file(tmp_path):
    path = _write(tmp_path / "run.yaml", "preset: paper\nmax_steps: 3\n")
    config = parse("--config", str(path))
    assert config.preset == "paper" and config.max_steps == 3 and config.learning_rate == 1e-6
    assert (
        parse("--config", str(_write(tmp_path / "b.yaml", "max_steps: 3\n")), "--preset", "paper") == config
    )


@pytest.mark.parametrize(
    ("text", "flags", "expected"),
    [
        (
            "max_steps: 0\n",
            ["--max-steps", "0"],
            "max_steps=0 is not valid; use an integer in [1, 1,000,000]",
        ),
        ("agg: mean\n", ["--agg", "mean"], None),
        (
            "report_to: [wandb, nope]\n",
            ["--report-to", "wandb", "nope"],
            "report_to=('wandb', 'nope') is not valid",
        ),
        ("learning_rate: fast\n", ["--lr", "fast"], None),
    ],
)
def test_a_bad_value_is_refused_as_its_flag_is(tmp_path, capsys, text, flags, expected):
    path = _write(tmp_path / "run.yaml", text)
    err = _fails_in_one_line(["--config", str(path)], capsys)
    assert str(path) in err
    if expected is not None:  # the setting's own message, as the flag gets it
        assert expected in err
        assert expected in _fails_in_one_line(flags, capsys)
    else:  # argparse refuses these flags before TrainConfig sees them: the file names the value and the fix
        assert "is not valid" in err


def test_an_unknown_key_is_refused_with_the_close_name(tmp_path, capsys):
    path = _write(tmp_path / "run.yaml", "max-steps: 3\nlearning_rte: 0.1\n")
    err = _fails_in_one_line(["--config", str(path)], capsys)
    assert "unknown setting(s) 'max-steps' (did you mean 'max_steps'?)" in err
    assert "'learning_rte' (did you mean 'learning_rate'?)" in err


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("missing.yaml", None, "does not exist"),
        ("list.yaml", "- 1\n- 2\n", "holds a list, not settings"),
        ("broken.yaml", "max_steps: [1\n", "is not valid YAML (line"),
        ("broken.json", '{"max_steps": ', "is not valid JSON (line 1"),
        ("options.yaml", "method_options: [1]\n", "method_options=[1] is not valid; use a mapping"),
    ],
)
def test_a_file_that_is_not_settings_is_refused(tmp_path, capsys, name, text, expected):
    path = tmp_path / name
    if text is not None:
        _write(path, text)
    assert expected in _fails_in_one_line(["--config", str(path)], capsys)


class Tight(DeclaredMethod):
    """A user method with a parameter of its own (no TrainConfig field holds `tightness`)."""

    name: ClassVar[str] = "tight"
    tightness: float = param(0.05, "half-width of the fixed interval", low=0.0, high=1.0)

    def compute_bounds(self, old_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full_like(old_logp, 1 - self.tightness), torch.full_like(old_logp, 1 + self.tightness)


Tight = dataclasses.dataclass(frozen=True, kw_only=True)(Tight)


def test_a_registered_methods_own_parameter_may_stand_at_the_top_level(tmp_path, monkeypatch):
    """As on the command line (``--tightness``), or in method_options as config.json writes it."""
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    methods.register_method("tight", Tight)
    top = parse("--config", str(_write(tmp_path / "a.yaml", "method: tight\ntightness: 0.1\n")))
    nested = parse(
        "--config", str(_write(tmp_path / "b.yaml", "method: tight\nmethod_options: {tightness: 0.1}\n"))
    )
    assert top == nested and top.bound_method() == Tight(tightness=0.1)
    assert parse("--config", str(tmp_path / "a.yaml"), "--tightness", "0.2").method_options == {
        "tightness": 0.2
    }
    with pytest.raises(ValueError, match=r"tight: tightness must be a number in \[0, 1\], got 2"):
        parse("--config", str(_write(tmp_path / "c.yaml", "method: tight\ntightness: 2\n")))


def test_an_empty_file_is_the_preset(tmp_path):
    assert parse("--config", str(_write(tmp_path / "run.yaml", ""))) == TrainConfig()
