"""`--report-to`: TRL's logger names, checked like every setting; a missing package is one line naming the
``pip install``; ``--no-tensorboard`` drops tensorboard. The loggers' real files are checked in
test_run_outputs_e2e.py."""

from __future__ import annotations

import importlib.util

import pytest

from bandpo.cli import build_parser, main
from bandpo.cli.train import build_config
from bandpo.training import TrainConfig
from bandpo.training.loggers import LOGGER_NAMES, LOGGERS, RunIdentity, normalize_report_to


def parse(*argv: str) -> TrainConfig:
    return build_config(build_parser().parse_args(["train", *argv]))


def test_report_to_takes_trls_forms():
    assert TrainConfig().report_to == ("tensorboard",)
    assert parse("--report-to", "trackio", "wandb").report_to == ("trackio", "wandb")
    assert parse("--report-to", "trackio,wandb,trackio").report_to == ("trackio", "wandb")
    assert parse("--report-to", "none").report_to == ()
    assert parse("--no-tensorboard").report_to == ()
    assert parse("--report-to", "wandb", "--tensorboard").report_to == ("wandb", "tensorboard")
    assert TrainConfig(report_to="wandb").report_to == ("wandb",)  # TRL's TrainingArguments take a str too
    assert TrainConfig(report_to=["mlflow"]).report_to == ("mlflow",)  # config.json's list
    assert normalize_report_to(3) == 3  # left for the check to refuse


@pytest.mark.parametrize("bad", [("none", "wandb"), ("comet_ml",), 3])
def test_an_unknown_or_mixed_logger_is_refused(bad):
    with pytest.raises(
        ValueError, match=r"^report_to=.* is not valid; use one or more of \[.*\], or 'none' alone"
    ):
        TrainConfig(report_to=bad)


def test_the_help_lists_the_loggers():
    parser = build_parser()
    train = next(a for a in parser._actions if a.dest == "command").choices["train"]
    text = " ".join(train.format_help().split())
    assert "--report-to NAME [NAME ...]" in text
    assert "by TRL's names: " + ", ".join(LOGGER_NAMES[:-1]) + " (several at once), or none" in text
    assert "--tensorboard, --no-tensorboard" in text and "--project PROJECT" in text


def test_names_come_from_the_run_directory(tmp_path, monkeypatch):
    run = RunIdentity(run_dir=tmp_path / "band seed0.x", project=None, config={}, resumed_step=None)
    assert run.run_name == "band seed0.x"
    assert run.run_id().startswith("band-seed0-x-") and run.run_id() == run.run_id()
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    assert run.resolve_project("WANDB_PROJECT") == "bandpo"
    monkeypatch.setenv("WANDB_PROJECT", "theirs")
    assert run.resolve_project("WANDB_PROJECT") == "theirs"
    assert RunIdentity(tmp_path, "mine", {}, None).resolve_project("WANDB_PROJECT") == "mine"


@pytest.mark.parametrize(
    "name", [name for name in LOGGERS if importlib.util.find_spec(LOGGERS[name].module) is None]
)
def test_a_missing_logger_is_one_line_naming_the_install_and_writes_nothing(tmp_path, capsys, name):
    pytest.importorskip("transformers")
    run_dir = tmp_path / "run"
    assert main(["train", "--report-to", name, "--output-dir", str(run_dir), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err == (
        f"bandpo train: error: report_to={name!r} needs the {LOGGERS[name].module} package, which is not "
        f"installed; {LOGGERS[name].install} (or leave {name} out of --report-to)"
    )
    assert not run_dir.exists()
