"""What a finished `bandpo train` leaves for its user: files with the modes of the umask (not tempfile's or
safetensors' private 0600/0700), and a summary that names only what the run wrote (no TensorBoard command
after ``--no-tensorboard``). A real run of a tiny model folder in a child process with its own umask."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("trl")

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SMALL = ["--prompts-per-step", "4", "--num-generations", "2", "--minibatches", "2", "--num-iterations", "1"]
SMALL += ["--eval-prompts", "2", "--eval-samples", "1", "--max-completion-length", "4", "--no-progress"]


def test_a_run_without_tensorboard_names_none_and_its_files_follow_the_umask(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "bandpo",
        "train",
        "--model",
        str(tiny_model_dir),
        "--output-dir",
        str(run_dir),
    ]
    done = subprocess.run(
        [*command, "--max-steps", "2", "--save-every", "1", "--no-tensorboard", *SMALL],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.umask(0o027),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "TensorBoard" not in done.stdout and "--logdir" not in done.stdout
    assert not (run_dir / "tensorboard").exists()
    assert f"summary {run_dir / 'summary.json'}" in done.stdout
    folders = [run_dir, run_dir / "model", *sorted((run_dir / "checkpoints").iterdir())]
    files = [path for path in run_dir.rglob("*") if path.is_file() and path.suffix != ".lock"]
    assert {"config.json", "summary.json", "model.safetensors"} <= {path.name for path in files}
    assert {folder.name: folder.stat().st_mode & 0o777 for folder in folders} == {
        folder.name: 0o750 for folder in folders
    }
    modes = {str(path.relative_to(run_dir)): path.stat().st_mode & 0o777 for path in files}
    assert {name: mode for name, mode in modes.items() if mode != 0o640} == {}
