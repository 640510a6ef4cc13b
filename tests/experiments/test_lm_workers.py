"""`bandpo compare`'s run processes (`bandpo.experiments.lm_workers`): how a run's config reaches them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bandpo.experiments.lm_workers import WORKER_ERROR_PREFIX, RunFailed, _Subprocesses, worker_command
from bandpo.training import TrainConfig


def test_the_command_line_of_a_run_process_holds_no_config(tmp_path: Path) -> None:
    """The config (a few kB of JSON, with every path of the run) was the last argument, visible in `ps`."""
    config = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=3)
    command = " ".join(worker_command())
    assert str(tmp_path) not in command and "max_steps" not in command
    assert worker_command()[1:] == ["-m", "bandpo.experiments.lm_workers"]
    assert len(command) < len(sys.executable) + 64 < len(config.to_json())


def test_a_run_process_reads_its_config_from_stdin(tmp_path: Path) -> None:
    """The process validates the config it was given: a dataset deleted after planning is that run's own
    one-line error, which it can only name if the config (with that path) reached it."""
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text('{"prompt": "1+1", "answer": "2"}\n')
    config = TrainConfig(dataset=str(dataset), output_dir=str(tmp_path / "run"), max_steps=1)
    dataset.unlink()
    with pytest.raises(
        RunFailed, match=r"failed: dataset=.*prompts\.jsonl' does not exist; pass a local path"
    ):
        _Subprocesses().train(config)


def test_a_run_process_started_by_hand_says_how_to_call_it() -> None:
    done = subprocess.run(
        [*worker_command(), "config.json"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert (
        done.returncode == 2 and "usage: python -m bandpo.experiments.lm_workers < CONFIG_JSON" in done.stderr
    )
    not_an_object = subprocess.run(
        worker_command(), input="[1, 2]", capture_output=True, text=True, timeout=300
    )
    assert not_an_object.returncode == 2
    assert not_an_object.stderr.strip().splitlines()[-1] == (
        f"{WORKER_ERROR_PREFIX} stdin holds a JSON list, not a TrainConfig's JSON object"
    )
