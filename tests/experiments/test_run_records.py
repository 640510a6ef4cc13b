"""Auditable run records: each run of `bandpo compare` records the code it ran (version, commit, dirty), the
CPU it trained on, and its wall and CPU time summed over every call that trained it, a killed call included.

The kill tests use a real `bandpo compare` process, its real training child and real signals.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from test_lm_compare import FakeTrain

from bandpo import __version__
from bandpo.cli import main
from bandpo.experiments import lm_workers
from bandpo.experiments.arms import parse_method_specs
from bandpo.experiments.lm_compare import run_lm_compare
from bandpo.experiments.lm_results import read_per_seed
from bandpo.experiments.lm_workers import KILLED
from bandpo.experiments.provenance import code_text, code_version
from process_helpers import start_cli


def test_code_version_names_the_checkout_or_says_there_is_none() -> None:
    code = code_version()
    assert code["version"] == __version__
    if code["source"] == "git":  # the tests run from a checkout (CI, development)
        assert re.fullmatch(r"[0-9a-f]{40}", code["commit"]) and isinstance(code["dirty"], bool)
        assert code_text(code).startswith(f"bandpo {__version__} at {code['commit'][:12]}")
    else:
        assert code["commit"] is None and "no commit recorded" in code_text(code)
    assert code_text(None) == "not recorded"
    assert code_text({"version": "0.1.0", "source": "git", "commit": "ab" * 20, "dirty": True}).endswith(
        "(uncommitted changes)"
    )


def test_a_gathering_call_says_it_trained_nothing(tmp_path: Path) -> None:
    specs = parse_method_specs(["clip", "band_upper"])
    run_lm_compare(specs, [0, 1], tmp_path / "first", steps=2, train_fn=FakeTrain())
    report, _ = run_lm_compare(
        specs,
        [0, 1],
        tmp_path / "gathered",
        steps=2,
        train_fn=FakeTrain(),
        reuse=[tmp_path / "first" / "per_seed.json"],
    )
    text = report.read_text()
    assert "Gathered by a call that trained nothing" in text
    assert "run(s) trained at a time" not in text
    first = (tmp_path / "first" / "report.md").read_text()
    assert "1 run(s) trained at a time" in first  # a call that trained says how many at once (jobs=1)


def test_records_of_a_stand_in_trainer_carry_code_and_calls(tmp_path: Path) -> None:
    run_lm_compare(parse_method_specs(["clip"]), [0], tmp_path, steps=2, train_fn=FakeTrain())
    (result,), _ = read_per_seed(tmp_path / "per_seed.json")
    assert result.code == code_version()
    assert [call["ended"] for call in result.calls] == ["finished"]
    assert result.cpu_time_s is None  # a stand-in runs in a thread: no process of its own to measure
    assert "Code that finished the runs: " in (tmp_path / "report.md").read_text()


def _start_and_stop(argv: list[str], run_dir: Path, sig: signal.Signals) -> None:
    compare = start_cli(argv)
    try:
        deadline = time.monotonic() + 240
        while '"train/reward"' not in (
            (run_dir / "metrics.jsonl").read_text() if (run_dir / "metrics.jsonl").exists() else ""
        ):
            assert compare.poll() is None, compare.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run did not start training"
            time.sleep(0.2)
        compare.send_signal(sig)
        compare.communicate(timeout=60)
    finally:
        compare.kill()
        compare.wait()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "wait4"), reason="CPU time of a child is read with os.wait4")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_resumed_run_counts_every_call(tiny_model_dir: Path, tmp_path: Path, sig: signal.Signals) -> None:
    pytest.importorskip("trl")
    output_dir = tmp_path / "cmp"
    run_dir = output_dir / "runs" / "clip-seed0"
    argv = ["compare", "--methods", "clip", "--seeds", "1", "--quick", "--steps", "12", "--jobs", "1"]
    argv += ["--model", str(tiny_model_dir), "--output-dir", str(output_dir), "--set", "eval_prompts=8"]
    _start_and_stop(argv, run_dir, sig)
    assert not (run_dir / "compare_done.json").exists()
    assert main(argv) == 0  # resumes the run from its checkpoint and finishes it
    (result,), _ = read_per_seed(output_dir / "per_seed.json")
    first, last = result.calls
    if sig == signal.SIGKILL:  # the killed call could not record itself: the next call counted it
        assert first["ended"] == KILLED and first["cpu_s"] is None
    else:
        assert first["ended"] == "stopped" and first["cpu_s"] > 0
    assert first["wall_s"] > 0 and first["code"] == code_version()
    assert last["ended"] == "finished" and last["cpu_s"] > 0
    assert result.wall_time_s == pytest.approx(first["wall_s"] + last["wall_s"])
    assert result.cpu_time_s == pytest.approx(last["cpu_s"] + (first["cpu_s"] or 0.0), abs=1e-2)
    assert result.code == code_version() and result.machine
    text = (output_dir / "report.md").read_text()
    assert "CPU min / run (all calls)" in text
    assert "1 run(s) took more than one call" in text
    assert ("have no CPU time" in text) == (sig == signal.SIGKILL)
    assert not list((output_dir / "runs").glob("*.call.json"))  # no call left open
    marker = json.loads((run_dir / "compare_done.json").read_text())
    assert marker["calls"] == result.calls


def test_a_run_resumed_on_another_cpu_model_names_both(tmp_path: Path) -> None:
    """Each call records its CPU model; a run whose calls ran on two models is recorded with both, so its seed
    is reported (and refused by a confirmatory analysis) as not trained on one CPU model."""
    from bandpo.experiments.report import machine_info

    specs = parse_method_specs(["clip", "band_upper"])
    run_lm_compare(specs, [0], tmp_path, steps=2, train_fn=FakeTrain())
    here = str(machine_info()["processor"])
    (first, _), _ = read_per_seed(tmp_path / "per_seed.json")
    assert [call["machine"] for call in first.calls] == [here]
    # clip's first call "ran elsewhere" and was killed there: unfinished, its open-call record left behind
    now = time.time()
    _killed_elsewhere(
        tmp_path / "runs" / "clip-seed0",
        started=now - 5,
        last_write=now,
        machine="Other CPU (2 logical CPUs)",
    )
    run_lm_compare(specs, [0], tmp_path, steps=2, train_fn=FakeTrain())
    results, _ = read_per_seed(tmp_path / "per_seed.json")
    clip = next(result for result in results if result.label == "clip")
    assert [call["machine"] for call in clip.calls] == ["Other CPU (2 logical CPUs)", here]
    assert clip.machine == " + ".join(sorted(["Other CPU (2 logical CPUs)", here]))
    assert "**seeds [0] have arms trained on different CPU models" in (tmp_path / "report.md").read_text()


def _killed_elsewhere(
    run_dir: Path,
    *,
    started: float,
    last_write: float,
    alive: float | None = None,
    machine: str = "AMD EPYC (2 logical CPUs)",
) -> None:
    """Leave `run_dir` as a call killed outright on `machine` leaves it: unfinished, its open-call record
    behind, its files last written at `last_write`."""
    (run_dir / "compare_done.json").unlink()
    opened = {"started": started, "code": code_version(), "machine": machine}
    if alive is not None:
        opened["alive"] = alive
    run_dir.with_name(run_dir.name + ".call.json").write_text(json.dumps(opened))
    for path in run_dir.rglob("*"):
        os.utime(path, (last_write, last_write))


@pytest.mark.parametrize("heartbeat", [True, False], ids=["heartbeat", "record_without_heartbeat"])
def test_a_killed_call_counts_to_its_last_sign_of_life(tmp_path: Path, heartbeat: bool) -> None:
    """A call killed while the run wrote nothing (an evaluation) is counted to its last heartbeat; an open
    record without one (older code) to the run's last write."""
    specs = parse_method_specs(["clip"])
    run_lm_compare(specs, [0], tmp_path, steps=2, train_fn=FakeTrain())
    now = time.time()
    alive = now - 10 if heartbeat else None
    _killed_elsewhere(tmp_path / "runs" / "clip-seed0", started=now - 100, alive=alive, last_write=now - 70)
    run_lm_compare(specs, [0], tmp_path, steps=2, train_fn=FakeTrain())
    (result,), _ = read_per_seed(tmp_path / "per_seed.json")
    killed, finished = result.calls
    assert killed["ended"] == KILLED and killed["cpu_s"] is None and finished["ended"] == "finished"
    assert killed["wall_s"] == pytest.approx(90.0 if heartbeat else 30.0, abs=0.5)
    assert "wall time up to its last sign of life" in (tmp_path / "report.md").read_text()


class _SlowTrain(FakeTrain):
    """Trains for `seconds`, then reads the heartbeat of its open-call record."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.opened: dict = {}

    def __call__(self, config, *, progress: bool = True):
        time.sleep(self.seconds)
        self.opened = json.loads(Path(config.output_dir + ".call.json").read_text())
        return super().__call__(config, progress=progress)


def test_a_running_call_marks_itself_alive(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(lm_workers, "HEARTBEAT_S", 0.5)
    train = _SlowTrain(seconds=3.0)
    run_lm_compare(parse_method_specs(["clip"]), [0], tmp_path, steps=2, train_fn=train)
    # beaten while it trained, not only when it started
    assert train.opened["alive"] - train.opened["started"] >= 1.5
