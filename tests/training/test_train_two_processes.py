"""`bandpo train` in 2 processes (``torchrun --standalone --nproc_per_node 2``, CPU, gloo): both train, the
main one alone writes one run directory; and the warm-up's child process trains alone under a launcher.

The run starts from a planted cache entry (an untrained tiny model under the key of the CLI's warm-up
settings), so it takes about 40 s on 2 CPU cores instead of a full warm-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

import bandpo
from bandpo import metric_names as mn
from bandpo.training import TrainConfig
from bandpo.training.run_dir import find_last_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # two processes under a launcher: minutes

STEPS = 4
FLAGS = ["--max-steps", str(STEPS), "--prompts-per-step", "8", "--num-generations", "4", "--minibatches", "2"]
FLAGS += ["--eval-prompts", "8", "--eval-samples", "2", "--save-every", "2", "--no-progress", "--json"]


def _plant_warmup(cache_dir: Path, config: TrainConfig) -> None:
    """An untrained tiny model as the cached warm-up of `config` (what `load_policy` looks up)."""
    from bandpo.training.model import build_char_tokenizer, build_tiny_model
    from bandpo.training.warmup import WarmupConfig

    key = WarmupConfig(
        seed=config.seed,
        target_accuracy=config.warmup_target_accuracy,
        max_steps=config.warmup_max_steps,
        rare_fraction=config.warmup_rare_fraction,
    ).cache_key()
    entry = cache_dir / "warmup" / key
    tokenizer = build_char_tokenizer()
    build_tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2).save_pretrained(entry)
    tokenizer.save_pretrained(entry)
    (entry / "warmup.json").write_text(json.dumps({"steps": 0, "accuracy": 0.0, "seconds": 0.0}))


def _environment() -> dict[str, str]:
    src = str(Path(bandpo.__file__).resolve().parents[1])
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_two_processes")
    cache_dir, run_dir = root / "cache", root / "run"
    _plant_warmup(cache_dir, TrainConfig())
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "bandpo", "train", "--output-dir", str(run_dir), "--cache-dir", str(cache_dir), *FLAGS]
    done = subprocess.run(
        command, env=_environment(), capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return run_dir, done


def test_both_processes_train_and_the_main_one_writes_one_run_directory(two_process_run):
    run_dir, done = two_process_run
    printed = json.loads(done.stdout)  # only the main process prints: one JSON document
    summary = json.loads((run_dir / "summary.json").read_text())
    assert printed["world_size"] == summary["world_size"] == 2
    assert summary["steps"] == STEPS and summary["warmup"]["from_cache"] is True
    assert json.loads((run_dir / "config.json").read_text())["prompts_per_step"] == 8
    assert json.loads((run_dir / "eval_after.json").read_text())["k"] == 2
    assert (run_dir / "model" / "model.safetensors").is_file()
    last = find_last_checkpoint(run_dir / "checkpoints")
    trl_steps = TrainConfig(
        max_steps=STEPS, prompts_per_step=8, num_generations=4, minibatches=2
    ).trl_max_steps
    assert last is not None and last.name == f"checkpoint-{trl_steps}"
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_metrics_have_each_step_once_with_catalogued_keys(two_process_run):
    run_dir, _ = two_process_run
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines))
    records = [json.loads(line) for line in lines]
    training = [r for r in records if mn.TRAIN_REWARD in r]
    assert [r[mn.TRAIN_STEP] for r in training] == list(range(1, STEPS + 1))
    evaluations = [r[mn.TRAIN_STEP] for r in records if mn.EVAL_MEAN_AT_K in r]
    assert evaluations == [0, STEPS]
    for record in training:
        for key in (
            mn.LOSS_TOTAL,
            mn.CLIP_FRAC_UP,
            mn.CLIP_FRAC_DOWN,
            mn.BOUNDS_LOW_MEAN,
            mn.TRAIN_STEP_TIME,
        ):
            assert key in record, key


def test_the_warm_up_child_trains_alone_under_a_launcher(tmp_path, monkeypatch):
    """Under torchrun's variables the child still warms up in one process (else its HF Trainer would wait
    for a rank that never comes) and fills the cache the other processes then read."""
    from bandpo.training.policy import warm_up_in_child

    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")  # nothing listens there: joining a group would fail
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = TrainConfig(cache_dir=str(tmp_path), warmup_max_steps=1)
    info = warm_up_in_child(config.policy_source, progress=False)
    assert info is not None and info["from_cache"] is False and info["steps"] == 1
    assert (Path(info["path"]) / "warmup.json").is_file()


def test_a_failing_warm_up_child_raises_its_error_here(tmp_path):
    from bandpo.training.policy import warm_up_in_child

    (tmp_path / "file").write_text("")
    config = TrainConfig(cache_dir=str(tmp_path / "file" / "cache"), warmup_max_steps=1)
    with pytest.raises(ValueError, match="cache_dir"):
        warm_up_in_child(config.policy_source, progress=False)
