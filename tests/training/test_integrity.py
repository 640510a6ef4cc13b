"""Run integrity of `bandpo train`: one writer per run directory, nothing left running after a kill, loud
reward failures, model folders and inputs checked before the first write, and a failed start that never
blocks its own retry.

Kill and concurrency tests use real processes and signals. The runs use a tiny model folder built here
(no warm-up), so each takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from bandpo.cli import main
from process_helpers import children, gone_within, start_cli, wait_for

pytest.importorskip("trl")

SMALL = ["--prompts-per-step", "4", "--num-generations", "2", "--minibatches", "2", "--num-iterations", "1"]
SMALL += ["--eval-prompts", "2", "--eval-samples", "1", "--max-completion-length", "4", "--no-progress"]


def _one_line_error(argv: list[str], capsys, command: str = "train") -> str:
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"bandpo {command}: error:"), err
    return err


def _run_argv(model_dir: Path, run_dir: Path, *, max_steps: int, save_every: int) -> list[str]:
    """`bandpo train` flags for a run of `model_dir` into `run_dir` (the SMALL flags not included)."""
    argv = ["--model", str(model_dir), "--output-dir", str(run_dir)]
    return [*argv, "--max-steps", str(max_steps), "--save-every", str(save_every)]


def _training_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum('"train/reward"' in line for line in path.read_text().splitlines())


def _lock_is_free(path: Path) -> bool:
    from bandpo.training._lifetime import FolderLock, FolderLocked

    try:
        FolderLock(path, what="x", fix="y").release()
    except FolderLocked:
        return False
    return True


# --- one writer per run directory; nothing left after a kill ------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_live_run_refuses_a_second_writer_and_a_killed_one_leaves_nothing(
    tiny_model_dir, tmp_path, sig, capsys
):
    run_dir = tmp_path / "run"
    argv = ["train", *_run_argv(tiny_model_dir, run_dir, max_steps=5000, save_every=2), *SMALL]
    writer = start_cli(argv)
    try:
        wait_for(lambda: _training_steps(run_dir) >= 3, 180, "three training steps", writer)
        assert (run_dir / "run.lock").read_text().strip() == str(writer.pid)
        # a second writer, while the first trains: refused before it writes anything
        lines_before = (run_dir / "metrics.jsonl").read_text().count("\n")
        err = _one_line_error([*argv[1:], "--resume"], capsys)
        assert f"is being written by process {writer.pid}" in err and "--output-dir" in err
        workers = children(writer.pid)  # its reward worker
        assert workers, "the run's reward worker should be running"
        assert (run_dir / "metrics.jsonl").read_text().count("\n") >= lines_before
        writer.send_signal(sig)
        stderr = writer.communicate(timeout=60)[1]
    finally:
        writer.kill()
        writer.wait()
    if sig == signal.SIGTERM:
        assert writer.returncode == 143
        assert "stopped by SIGTERM; continue the run with --resume" in stderr
        assert "Traceback" not in stderr
    else:
        assert writer.returncode == -signal.SIGKILL
    assert gone_within(workers, 10), "a child of the killed run is still running"
    assert _lock_is_free(run_dir / "run.lock"), "the lock must die with its holder"


def test_a_held_lock_refuses_a_fresh_start_before_any_write(tiny_model_dir, tmp_path, capsys):
    from bandpo.training._lifetime import FolderLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with FolderLock(run_dir / "run.lock", what="run", fix="wait"):
        err = _one_line_error(
            ["--model", str(tiny_model_dir), "--output-dir", str(run_dir), "--max-steps", "1", *SMALL], capsys
        )
    assert f"is being written by process {os.getpid()}" in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.lock"]  # no config.json, no metrics


# --- total reward failure is loud ----------------------------------------------------------------------


def _math_dataset(path: Path, rows: int = 40) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": f"{i}+{i}=", "answer": str(2 * i)}) + "\n" for i in range(rows))
    )
    return path


def test_a_reward_that_fails_on_every_prompt_is_refused_before_any_write(tiny_model_dir, tmp_path, capsys):
    dataset = _math_dataset(tmp_path / "math.jsonl")
    run_dir = tmp_path / "run"
    argv = ["--model", str(tiny_model_dir), "--dataset", str(dataset), "--reward", "countdown"]
    err = _one_line_error([*argv, "--output-dir", str(run_dir), "--max-steps", "2", *SMALL], capsys)
    assert "reward='countdown' fails on every one of the first" in err
    assert "not a Countdown prompt" in err  # the last error is shown
    assert not run_dir.exists()


def _failing_countdown(monkeypatch, fails) -> None:
    """The countdown reward, raising on the completions `fails` picks (in the forked worker too); the check
    before the first write is left out, so that the failures happen while training."""
    import dataclasses

    from bandpo.training import runner
    from bandpo.training.tasks import registry

    monkeypatch.setattr(runner, "check_rewards_work", lambda *args, **kwargs: None)

    real = registry.get_task("countdown")

    def score(prompt, completion, answer):
        if fails(completion):
            raise RuntimeError(f"verifier broke on {completion!r}")
        return real.score(prompt, completion, answer)

    monkeypatch.setitem(registry._REGISTRY, "countdown", dataclasses.replace(real, score=score))


def test_every_reward_failing_while_training_stops_the_run_and_the_retry_is_free(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    _failing_countdown(monkeypatch, lambda completion: True)
    run_dir = tmp_path / "run"
    argv = ["--model", str(tiny_model_dir), "--output-dir", str(run_dir), "--max-steps", "3", *SMALL]
    err = _one_line_error(argv, capsys)
    assert "every reward failed: all 16 samples of the first 2 RL step(s)" in err
    assert "RuntimeError: verifier broke on" in err
    assert not run_dir.exists()  # nothing to resume from: the failed start is undone


def test_partial_reward_failures_are_counted_in_the_summary_and_reported(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    calls = {"n": 0}

    def every_other(completion: str) -> bool:
        calls["n"] += 1
        return calls["n"] % 2 == 0

    _failing_countdown(monkeypatch, every_other)
    run_dir = tmp_path / "run"
    argv = ["--model", str(tiny_model_dir), "--output-dir", str(run_dir), "--max-steps", "2", *SMALL]
    assert main(["train", *argv]) == 0
    err = capsys.readouterr().err
    failures = json.loads((run_dir / "summary.json").read_text())["reward_failures"]
    assert failures["samples"] == 16 and 0 < failures["errors"] < 16
    assert failures["last_error"].startswith("RuntimeError: verifier broke on")
    assert f"warning: {failures['errors']} of 16 training rewards failed" in err


# --- model folders, datasets and inputs, checked before the first write --------------------------------


def _copy_model(source: Path, destination: Path) -> Path:
    import shutil

    shutil.copytree(source, destination)
    return destination


def test_a_model_folder_without_tokenizer_files_is_refused(tiny_model_dir, tmp_path, capsys):
    model_dir = _copy_model(tiny_model_dir, tmp_path / "model")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model_dir / name).unlink(missing_ok=True)
    run_dir = tmp_path / "run"
    argv = ["--model", str(model_dir), "--output-dir", str(run_dir), "--max-steps", "1", *SMALL]
    err = _one_line_error(argv, capsys)
    assert "has no tokenizer" in err
    assert not run_dir.exists()
    # the retry with a complete folder is not blocked
    _copy_model(tiny_model_dir, tmp_path / "fixed")
    assert main(["train", "--model", str(tmp_path / "fixed"), *argv[2:]]) == 0


def test_nan_weights_are_refused_before_any_write(tiny_model_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model_dir = _copy_model(tiny_model_dir, tmp_path / "model")
    weights = load_file(model_dir / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name].clone().fill_(float("nan"))
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    run_dir = tmp_path / "run"
    err = _one_line_error(
        ["--model", str(model_dir), "--output-dir", str(run_dir), "--max-steps", "1", *SMALL], capsys
    )
    assert "NaN or inf" in err
    assert not run_dir.exists()


def test_a_dataset_the_embedded_model_cannot_read_is_refused(tmp_path, capsys):
    dataset = tmp_path / "words.jsonl"
    dataset.write_text(
        "".join(json.dumps({"prompt": f"what is {i}?", "answer": str(i)}) + "\n" for i in range(40))
    )
    run_dir = tmp_path / "run"
    err = _one_line_error(
        ["--dataset", str(dataset), "--output-dir", str(run_dir), "--max-steps", "1", *SMALL], capsys
    )
    assert "embedded tiny model reads only the characters" in err and "--model" in err
    assert not run_dir.exists()


def test_a_failure_after_the_first_write_does_not_block_the_retry(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    """A fresh run that fails before its first checkpoint removes what it wrote."""
    from bandpo.training import runner

    def broken(*args, **kwargs):
        raise ValueError("evaluation broke")

    monkeypatch.setattr(runner, "_evaluate_rows", broken)
    run_dir = tmp_path / "run"
    argv = ["--model", str(tiny_model_dir), "--output-dir", str(run_dir), "--max-steps", "1", *SMALL]
    assert "evaluation broke" in _one_line_error(argv, capsys)
    assert not run_dir.exists()
    monkeypatch.undo()
    assert main(["train", *argv]) == 0


@pytest.mark.slow
def test_a_run_that_failed_after_it_trained_is_kept_for_resume(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """Without a checkpoint yet, a run that trained is kept: --resume reuses its evaluation before training."""
    from bandpo.training.metrics_log import MetricsLog

    real = MetricsLog.record_step

    def record_step(self, rl_step, logs):
        if rl_step == 2:
            raise OSError(5, "Input/output error", str(self.path))
        return real(self, rl_step, logs)

    monkeypatch.setattr(MetricsLog, "record_step", record_step)
    run_dir = tmp_path / "run"
    argv = _run_argv(tiny_model_dir, run_dir, max_steps=3, save_every=5)
    assert "Input/output error" in _one_line_error([*argv, *SMALL], capsys)
    assert (run_dir / "config.json").exists() and (run_dir / "eval_before.json").exists()
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())
    monkeypatch.undo()
    assert main(["train", *argv, *SMALL, "--resume"]) == 0


# --- resume: settings added later, a damaged checkpoint, another number of processes -------------------


def test_resume_of_a_config_from_before_a_field_existed(tmp_path):
    from bandpo.training import TrainConfig
    from bandpo.training.run_dir import RunDir

    config = TrainConfig(output_dir=str(tmp_path), resume=True)
    stored = json.loads(json.dumps(config.to_dict()))
    del stored["task"]  # written by a version without the field
    (tmp_path / "config.json").write_text(json.dumps(stored))
    RunDir(tmp_path).check(config)  # the default task is what that version ran
    with pytest.raises(ValueError, match="task: run has 'countdown', given 'reach'"):
        RunDir(tmp_path).check(config.replace(task="reach"))


def test_a_truncated_optimizer_state_names_the_checkpoint_to_drop(tmp_path):
    import torch

    from bandpo.training.run_dir import check_checkpoint_files

    checkpoint = tmp_path / "checkpoint-8"
    checkpoint.mkdir()
    torch.save({"state": torch.zeros(100)}, checkpoint / "optimizer.pt")
    torch.save({}, checkpoint / "rng_state.pth")
    check_checkpoint_files(checkpoint, world_size=1)
    data = (checkpoint / "optimizer.pt").read_bytes()
    (checkpoint / "optimizer.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError, match=r"optimizer.pt is truncated or corrupt.*delete .*checkpoint-8 to resume"
    ):
        check_checkpoint_files(checkpoint, world_size=1)


def test_resume_with_another_number_of_processes_is_refused(tmp_path):
    import torch

    from bandpo.training.run_dir import check_checkpoint_files

    checkpoint = tmp_path / "checkpoint-8"
    checkpoint.mkdir()
    for rank in range(2):
        torch.save({}, checkpoint / f"rng_state_{rank}.pth")
    check_checkpoint_files(checkpoint, world_size=2)
    with pytest.raises(ValueError, match=r"written by a run on 2 process\(es\), this launch has 1"):
        check_checkpoint_files(checkpoint, world_size=1)


@pytest.mark.slow
def test_resume_from_a_damaged_checkpoint_is_one_line_with_the_checkpoint_to_drop(
    tiny_model_dir, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    argv = _run_argv(tiny_model_dir, run_dir, max_steps=2, save_every=1)
    assert main(["train", *argv, *SMALL]) == 0
    capsys.readouterr()
    last = run_dir / "checkpoints" / "checkpoint-4"  # 2 optimiser steps per RL step
    optimizer = last / "optimizer.pt"
    intact = optimizer.read_bytes()
    optimizer.write_bytes(intact[:100])
    err = _one_line_error(["--resume", "--output-dir", str(run_dir), "--no-progress"], capsys)
    assert f"{optimizer} is truncated or corrupt" in err and f"delete {last} to resume" in err
    optimizer.write_bytes(intact)
    (last / "rng_state.pth").rename(last / "rng_state_0.pth")  # as a run on 2 processes writes it
    (last / "rng_state_1.pth").write_bytes((last / "rng_state_0.pth").read_bytes())
    err = _one_line_error(["--resume", "--output-dir", str(run_dir), "--no-progress"], capsys)
    assert "written by a run on 2 process(es), this launch has 1" in err


def test_only_the_first_process_prints_an_error(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--delta", "-1"]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "--delta", "-1"]) == 2
    assert "delta" in capsys.readouterr().err


def test_a_corrupt_byte_in_metrics_names_the_file_and_line(tmp_path):
    from bandpo.training.metrics_log import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"train/step": 1}\n{"train/step": \xff2}\n{"train/step": 3}\n{"train/st')
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is corrupt \(not UTF-8\)"):
        read_metrics(path)
    path.write_bytes(b'{"train/step": 1}\n{"train/st')  # a torn last line is a kill, not corruption
    assert read_metrics(path) == [{"train/step": 1}]
    path.unlink()
    assert read_metrics(path, missing_ok=True) == []  # a run that has not written it yet
    with pytest.raises(FileNotFoundError):
        read_metrics(path)


# --- bounds on input -------------------------------------------------------------------------------------


def test_a_huge_prompt_is_refused_before_tokenizing(tmp_path):
    from bandpo.training.data import load_prompt_rows

    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"prompt": "1" * 300_000, "answer": "1"}) + "\n")
    with pytest.raises(ValueError, match=r"big.jsonl row 1: 'prompt' is 300,000 characters long, more than"):
        load_prompt_rows(path)


def test_a_deeply_nested_row_is_one_line(tmp_path):
    from bandpo.training.data import load_prompt_rows

    for name, text in (("deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n"), ("deep.json", "[" * 100_000)):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ValueError, match=f"{name}.*(nested too deeply|not valid JSON)"):
            load_prompt_rows(path)


@pytest.mark.parametrize("name", ["dup.jsonl", "dup.json"])
def test_a_key_given_twice_is_refused(tmp_path, name):
    from bandpo.training.data import load_prompt_rows

    row = '{"prompt": "12+3", "answer": "15", "answer": "16"}'
    path = tmp_path / name
    path.write_text(row + "\n" if name.endswith("jsonl") else f"[{row}]")
    with pytest.raises(ValueError, match="key 'answer' appears twice"):
        load_prompt_rows(path)


def test_too_many_eval_prompts_names_the_true_pool_size():
    from bandpo.training.tasks.countdown import sample_eval_problems

    with pytest.raises(
        ValueError, match=r"eval_prompts=500 .*\((\d+) distinct prompts\); use at most \1"
    ) as raised:
        sample_eval_problems(500, seed=0)
    assert "~1000" not in str(raised.value)
