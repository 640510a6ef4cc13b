"""`bandpo train` / `bandpo plot` at the edges of the file system: one line naming the file and the fix,
nothing written before everything is checked, standard JSON, leftovers cleaned, a cheap ``--version``."""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bandpo.cli import main

pytest.importorskip("transformers")

# quick flags: a run that would start at once if nothing were wrong
SMALL = ["--max-steps", "1", "--prompts-per-step", "4", "--num-generations", "2", "--minibatches", "2"]
SMALL += ["--eval-prompts", "2", "--eval-samples", "1", "--max-completion-length", "4", "--no-progress"]


def _fails_in_one_line(argv: list[str], capsys, *, command: str = "train") -> str:
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"bandpo {command}: error:"), err
    assert "Traceback" not in err
    return err


def _chmod_read_only(path: Path) -> None:
    """Make `path` read-only; skip where that does not stop this process (root ignores the mode bits)."""
    path.chmod(0o500)
    if os.access(path, os.W_OK):
        path.chmod(0o700)
        pytest.skip("running as root: chmod does not make a folder read-only (the os.access variant runs)")


@pytest.fixture
def read_only(monkeypatch):
    """Paths under the returned set are reported read-only by os.access, as on a read-only file system."""
    blocked: set[Path] = set()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and any(Path(path) == b or b in Path(path).parents for b in blocked):
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    return blocked


def _copy(source: Path, destination: Path) -> Path:
    import shutil

    shutil.copytree(source, destination)
    return destination


# --- the run directory ---------------------------------------------------------------------------


def test_output_dir_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    err = _fails_in_one_line(["--output-dir", str(target), *SMALL], capsys)
    assert "existing file" in err and "--output-dir" in err


def test_output_dir_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = _fails_in_one_line(["--output-dir", str(tmp_path / "file" / "run"), *SMALL], capsys)
    assert "lies under" in err and "which is a file" in err


@pytest.mark.parametrize("delta", ["1e-100", "1e-20", "0", "5000"])
def test_delta_outside_the_verified_range_is_refused_before_any_write(tmp_path, capsys, delta):
    run_dir = tmp_path / "run"
    err = _fails_in_one_line(["--output-dir", str(run_dir), "--delta", delta, *SMALL], capsys)
    assert "delta must be a number in [1e-05, 1000]" in err
    assert not run_dir.exists()


def test_empty_output_dir_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "" was the current folder: a regression writes here, not into the repo
    err = _fails_in_one_line(["--output-dir", "", *SMALL], capsys)
    assert "--output-dir is empty" in err
    assert list(tmp_path.iterdir()) == []


def test_read_only_output_dir(tmp_path, capsys, read_only):
    folder = tmp_path / "ro"
    folder.mkdir()
    read_only.add(folder)
    err = _fails_in_one_line(["--output-dir", str(folder / "run"), *SMALL], capsys)
    assert "not writable" in err and "--output-dir" in err
    assert not (folder / "run").exists()


def test_read_only_output_dir_by_mode_bits(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    _chmod_read_only(folder)
    try:
        err = _fails_in_one_line(["--output-dir", str(folder / "run"), *SMALL], capsys)
    finally:
        folder.chmod(0o700)
    assert "not writable" in err


def test_read_only_cache_dir_is_refused_before_the_warm_up(tmp_path, capsys, read_only):
    cache = tmp_path / "cache"
    cache.mkdir()
    read_only.add(cache)
    run_dir = tmp_path / "run"
    err = _fails_in_one_line(["--cache-dir", str(cache), "--output-dir", str(run_dir), *SMALL], capsys)
    assert "cache_dir" in err and "not writable" in err and "--cache-dir" in err
    assert not run_dir.exists()  # nothing written: the retry is not blocked


def test_plot_output_dir_read_only(tmp_path, capsys, read_only):
    folder = tmp_path / "plots"
    folder.mkdir()
    read_only.add(folder)
    err = _fails_in_one_line(["bounds", "--output-dir", str(folder)], capsys, command="plot")
    assert "not writable" in err and "--output-dir" in err
    assert list(folder.iterdir()) == []


# --- inputs: dataset, model, stored run files ----------------------------------------------------


def test_bad_utf8_in_a_dataset_names_the_line_and_writes_nothing(tmp_path, capsys):
    dataset = tmp_path / "data.jsonl"
    dataset.write_bytes(b'{"prompt": "a", "answer": "1"}\n{"prompt": "b\xff", "answer": "2"}\n')
    run_dir = tmp_path / "run"
    err = _fails_in_one_line(["--dataset", str(dataset), "--output-dir", str(run_dir), *SMALL], capsys)
    assert "data.jsonl line 2: not UTF-8" in err
    assert not run_dir.exists()
    as_json = tmp_path / "data.json"
    as_json.write_bytes(b'[{"prompt": "a",\n "answer": "\xfe"}]')
    err = _fails_in_one_line(["--dataset", str(as_json), "--output-dir", str(run_dir), *SMALL], capsys)
    assert "data.json line 2: not UTF-8" in err


def test_a_failed_start_does_not_block_the_retry(tmp_path, tiny_model_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')  # no answer
    run_dir = tmp_path / "run"
    _fails_in_one_line(
        ["--model", str(tiny_model_dir), "--dataset", str(bad), "--output-dir", str(run_dir), *SMALL], capsys
    )
    assert not run_dir.exists()


def test_model_that_is_an_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _fails_in_one_line(
        ["--model", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "r"), *SMALL], capsys
    )
    assert "empty folder" in err and "save_pretrained" in err
    assert not (tmp_path / "r").exists()


def test_truncated_model_safetensors(tmp_path, tiny_model_dir, capsys):
    model_dir = _copy(tiny_model_dir, tmp_path / "model")
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    err = _fails_in_one_line(["--model", str(model_dir), "--output-dir", str(tmp_path / "r"), *SMALL], capsys)
    assert "model.safetensors is truncated" in err and "re-copy" in err
    assert not (tmp_path / "r").exists()


def test_truncated_model_config_json(tmp_path, tiny_model_dir, capsys):
    model_dir = _copy(tiny_model_dir, tmp_path / "model")
    config = model_dir / "config.json"
    config.write_text(config.read_text()[:40])
    err = _fails_in_one_line(["--model", str(model_dir), "--output-dir", str(tmp_path / "r"), *SMALL], capsys)
    assert "config.json is not valid JSON" in err


def _stored_run(run_dir: Path) -> None:
    from bandpo.training import TrainConfig

    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(TrainConfig(output_dir=str(run_dir)).to_json())


def test_truncated_run_config_json_on_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _stored_run(run_dir)
    (run_dir / "config.json").write_text('{"method": "ba')
    err = _fails_in_one_line(["--resume", "--output-dir", str(run_dir)], capsys)
    assert "config.json is not valid JSON" in err and "truncated" in err


def test_corrupt_trainer_state_on_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _stored_run(run_dir)
    checkpoint = run_dir / "checkpoints" / "checkpoint-8"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 8, "log_hist')
    err = _fails_in_one_line(["--resume", "--output-dir", str(run_dir)], capsys)
    assert "checkpoint-8/trainer_state.json is not valid JSON" in err and "delete" in err


# --- writes that fail ----------------------------------------------------------------------------


def test_a_full_disk_says_disk_full(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from bandpo.training import run_dir

    def no_space(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(run_dir, "write_text_atomic", no_space)
    err = _fails_in_one_line(
        ["--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "r"), *SMALL], capsys
    )
    assert "disk full" in err and "--resume" in err and "config.json" in err


def test_torch_reporting_a_full_disk_is_translated(tmp_path):
    from bandpo.training.runner import _explain_write_failures

    with pytest.raises(OSError, match="disk is probably full") as caught, _explain_write_failures(tmp_path):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0\nbasic_ios::clear: iostream error"
        )
    assert caught.value.errno == errno.ENOSPC
    with pytest.raises(RuntimeError, match="unrelated"), _explain_write_failures(tmp_path):
        raise RuntimeError("unrelated")


# --- JSON, leftovers, locks, start-up -----------------------------------------------------------


def test_dual_clip_off_is_standard_json_and_reads_back(tmp_path):
    import argparse

    from bandpo.cli.train import add_arguments, build_config
    from bandpo.training import TrainConfig
    from bandpo.training.run_dir import to_json

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for spelling in ("inf", "off"):
        config = build_config(parser.parse_args(["--dual-clip-c", spelling, "--output-dir", str(tmp_path)]))
        assert config.dual_clip_c is None
    # the API may still pass inf: config.json and summary.json stay standard JSON (null = off)
    text = to_json(TrainConfig(dual_clip_c=math.inf).to_dict(), indent=2)
    assert "Infinity" not in text and json.loads(text)["dual_clip_c"] is None
    assert TrainConfig.from_dict(json.loads(text)).dual_clip_c is None


def test_dual_clip_off_resumes_with_the_stored_config(tmp_path):
    from bandpo.training import TrainConfig
    from bandpo.training.run_dir import RunDir, to_json

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(to_json(TrainConfig(dual_clip_c=math.inf).to_dict()))
    RunDir(run_dir).check(TrainConfig(dual_clip_c=math.inf, output_dir=str(run_dir), resume=True))
    RunDir(run_dir).check(TrainConfig(dual_clip_c=None, output_dir=str(run_dir), resume=True))


def test_concurrent_cold_warm_ups_share_one_and_clean_leftovers(tmp_path, monkeypatch):
    from bandpo.training import warmup

    config = warmup.WarmupConfig(max_steps=1)
    key_dir = tmp_path / "warmup" / config.cache_key()
    key_dir.parent.mkdir(parents=True)
    stale = key_dir.parent / f".{key_dir.name}-killed"  # a killed warm-up's staging folder
    stale.mkdir()
    key_dir.mkdir()  # an empty entry: no warmup.json
    calls = []
    started = threading.Event()

    def fake_warm_up(config, destination, progress):
        calls.append(destination)
        started.set()
        threading.Event().wait(0.3)  # the other run arrives while this one works
        return {"steps": 1, "accuracy": 0.5}

    monkeypatch.setattr(warmup, "_warm_up", fake_warm_up)
    results = []
    first = threading.Thread(
        target=lambda: results.append(warmup.load_or_warm_up(config, cache_dir=tmp_path))
    )
    first.start()
    started.wait(30)
    results.append(warmup.load_or_warm_up(config, cache_dir=tmp_path))
    first.join(30)
    assert len(calls) == 1 and sorted(r.from_cache for r in results) == [False, True]
    assert not stale.exists() and (key_dir / "warmup.json").is_file()
    assert sorted(p.name for p in key_dir.parent.iterdir()) == [key_dir.name, f"{key_dir.name}.lock"]


def test_version_does_not_import_torch():
    script = (
        "import sys\n"
        "from bandpo.cli import main\n"
        "code = main(['--version'])\n"
        "print('torch' in sys.modules, code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("bandpo ") and lines[-1] == "False 0"


def test_os_errors_are_one_line_with_the_file_and_the_fix():
    from bandpo.cli import describe_os_error

    denied = describe_os_error(PermissionError(errno.EACCES, "Permission denied", "/runs/a/config.json"))
    assert (
        denied.startswith("cannot write (/runs/a/config.json): Permission denied")
        and "--output-dir" in denied
    )
    full = describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/runs/a/checkpoints"))
    assert full.startswith("disk full") and "/runs/a/checkpoints" in full and "--resume" in full
