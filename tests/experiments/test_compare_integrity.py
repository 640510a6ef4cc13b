"""Run integrity of `bandpo compare`: killing it ends its runs, one compare per output folder, a run's failure
is one line that says whether a rerun helps, and damaged or mismatched run directories are named before
anything trains.

Kill and concurrency tests use real `bandpo compare` processes, real training children and real signals.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from test_lm_compare import FakeTrain

from bandpo.cli import main
from bandpo.experiments.arms import parse_method_specs
from bandpo.experiments.lm_compare import build_config, plan_runs, run_lm_compare
from bandpo.experiments.lm_results import DONE_MARKER, QUICK_SETTINGS, quick_note
from process_helpers import alive, children, gone_within, holders, start_cli

pytest.importorskip("trl")


def _compare_argv(model_dir: Path, output_dir: Path, steps: int) -> list[str]:
    argv = ["compare", "--methods", "clip", "--seeds", "1", "--quick", "--steps", str(steps), "--jobs", "1"]
    return [*argv, "--model", str(model_dir), "--output-dir", str(output_dir)]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killing_compare_ends_its_runs_and_a_second_compare_is_refused(tiny_model_dir, tmp_path, sig, capsys):
    output_dir = tmp_path / "cmp"
    run_dir = output_dir / "runs" / "clip-seed0"
    argv = _compare_argv(tiny_model_dir, output_dir, 2000)
    compare = start_cli(argv)
    try:
        deadline = time.monotonic() + 240
        while not (
            (run_dir / "metrics.jsonl").exists()
            and '"train/reward"' in (run_dir / "metrics.jsonl").read_text()
        ):
            assert compare.poll() is None, compare.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run did not start training"
            time.sleep(0.2)
        (child,) = children(compare.pid)  # the run's training process
        assert alive(child)
        descendants = [child, *children(child)]  # the training process and its reward worker
        assert len(descendants) >= 2
        if sig == signal.SIGTERM:  # a second compare on the same folder, while the first runs
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert f"comparison {str(output_dir)!r} is being written by process {compare.pid}" in err, err
        compare.send_signal(sig)
        stderr = compare.communicate(timeout=60)[1]
    finally:
        compare.kill()
        compare.wait()
    assert gone_within(descendants, 15), f"compare's runs outlived it ({sig!r})"
    # a process forked after the snapshot above (a restarted reward worker) dies with its parent too, a moment
    # later on a loaded machine: wait for the last holder of either lock rather than read it once
    for lock in (run_dir / "run.lock", output_dir / "compare.lock"):
        assert gone_within(holders(lock), 15), f"a process still holds {lock.name}: {holders(lock)}"
    if sig == signal.SIGKILL:
        assert compare.returncode == -signal.SIGKILL
    else:
        assert compare.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[sig]
        assert "run the same compare again to continue" in stderr
        assert "Traceback" not in stderr
    # the run is free again: a rerun resumes it, alone
    from bandpo.training._lifetime import FolderLock

    FolderLock(run_dir / "run.lock", what="x", fix="y").release()
    FolderLock(output_dir / "compare.lock", what="x", fix="y").release()


@pytest.mark.slow
def test_a_run_that_fails_is_one_line_that_says_a_rerun_does_not_help(tiny_model_dir, tmp_path, capsys):
    from bandpo.training._lifetime import FolderLock

    output_dir = tmp_path / "cmp"
    run_dir = output_dir / "runs" / "clip-seed0"
    run_dir.mkdir(parents=True)
    with FolderLock(run_dir / "run.lock", what="x", fix="y"):  # another writer holds the run
        assert main(_compare_argv(tiny_model_dir, output_dir, 2)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"bandpo compare: error: run {run_dir} failed: run directory")
    assert f"is being written by process {os.getpid()}" in err[-1]
    assert "rerunning the same compare fails the same way" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert sum("is being written by process" in line for line in err) == 1  # said once, by compare


# --- damaged or mismatched run directories are named before anything trains ---------------------------


def _plant(output_dir: Path, tiny_model_dir: Path, steps: int) -> Path:
    """A run directory of the plan `_compare_argv(..., steps)` as an interrupted run leaves it."""
    settings = {**QUICK_SETTINGS, "max_steps": steps, "model": str(tiny_model_dir)}
    run = plan_runs(parse_method_specs(["clip"]), [0], output_dir)[0]
    config = build_config(run.spec, run.seed, run.run_dir, settings)
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    return run.run_dir


def test_an_interrupted_run_with_other_steps_is_refused_before_training(tiny_model_dir, tmp_path, capsys):
    run_dir = _plant(tmp_path, tiny_model_dir, 30)
    assert main(_compare_argv(tiny_model_dir, tmp_path, 4)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{run_dir} holds an interrupted run with other settings (max_steps: 30 there, 4 now)" in err
    assert "settings it was started with" in err
    assert not (run_dir / "metrics.jsonl").exists()


def test_a_truncated_run_config_names_the_file(tiny_model_dir, tmp_path, capsys):
    run_dir = _plant(tmp_path, tiny_model_dir, 4)
    (run_dir / "config.json").write_text('{"method": "cl')
    assert main(_compare_argv(tiny_model_dir, tmp_path, 4)) == 2
    err = capsys.readouterr().err.strip()
    assert f"{run_dir / 'config.json'} is not valid JSON" in err and "delete the run directory" in err


@pytest.mark.parametrize("damaged", ["summary.json", DONE_MARKER])
def test_a_truncated_summary_or_marker_names_the_file(tmp_path, damaged):
    specs = parse_method_specs(["clip"])
    run_lm_compare(specs, [0], tmp_path, steps=2, train_fn=FakeTrain())
    path = tmp_path / "runs" / "clip-seed0" / damaged
    path.write_text(path.read_text()[:10])
    with pytest.raises(ValueError, match=f"{path} is not valid JSON"):
        run_lm_compare(specs, [0], tmp_path, steps=2, train_fn=FakeTrain())


def test_an_interrupted_run_from_before_a_field_existed_resumes(tiny_model_dir, tmp_path):
    from bandpo.experiments.lm_compare import check_resumable

    run_dir = _plant(tmp_path, tiny_model_dir, 4)
    stored = json.loads((run_dir / "config.json").read_text())
    del stored["task"]
    (run_dir / "config.json").write_text(json.dumps(stored))
    settings = {**QUICK_SETTINGS, "max_steps": 4, "model": str(tiny_model_dir)}
    run = plan_runs(parse_method_specs(["clip"]), [0], tmp_path)[0]
    check_resumable(run, build_config(run.spec, run.seed, run.run_dir, settings))  # it ran the default task
    with pytest.raises(ValueError, match="task: 'countdown' there, 'reach' now"):
        check_resumable(run, build_config(run.spec, run.seed, run.run_dir, {**settings, "task": "reach"}))


def test_the_done_marker_records_machine_and_version(tmp_path):
    from bandpo import __version__

    run_lm_compare(parse_method_specs(["clip"]), [0], tmp_path, steps=2, train_fn=FakeTrain())
    marker = json.loads((tmp_path / "runs" / "clip-seed0" / DONE_MARKER).read_text())
    assert marker["bandpo_version"] == __version__
    assert {"platform", "processor", "torch"} <= set(marker["machine"])


def test_the_quick_note_states_the_budget_that_ran(tmp_path):
    assert quick_note({**QUICK_SETTINGS, "max_steps": 4}).startswith(
        "quick budget (4 RL steps, 128 evaluation"
    )
    run_lm_compare(parse_method_specs(["clip"]), [0], tmp_path, quick=True, steps=4, train_fn=FakeTrain())
    assert "quick budget (4 RL steps" in json.loads((tmp_path / "compare.json").read_text())["note"]
    assert "quick budget (4 RL steps" in (tmp_path / "report.md").read_text()
