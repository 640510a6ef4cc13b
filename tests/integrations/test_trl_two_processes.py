"""`BandPOTrainer.train()` in 2 processes (torchrun, CPU, gloo): both ranks train, the bounds stay with their
tokens on each rank, and bandpo's metrics are pooled over the tokens of both ranks as TRL pools its own.

About 30 s on 2 CPU cores: the launcher runs `trl_two_process_run.py` once for all the tests here.
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

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # two ranks under a launcher: minutes

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    output = tmp_path_factory.mktemp("two_processes")
    src = str(Path(bandpo.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(HERE / "trl_two_process_run.py"),
        str(output),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((output / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_both_ranks_train_with_bounds_aligned_to_their_tokens(ranks):
    for rank, result in enumerate(ranks):
        assert result["rank"] == rank and result["world_size"] == 2
        assert result["steps"] == 4 and len(result["micro_batches"]) == 4 * 2  # max_steps x GA
        assert result["checked"] == 8 * 4 and result["misaligned"] == 0  # 8 micro-batches of 4 rows


def test_band_metrics_are_pooled_over_tokens_of_both_ranks(ranks):
    history = ranks[0]["history"]

    def pooled_keys(logged: dict) -> dict:
        return {
            k: v
            for k, v in logged.items()
            if k.split("/")[0] in {"clip", "bounds", "ratio", "kl", "clip_ratio"}
        }

    # every rank logs the same pooled values (not its own)
    assert [pooled_keys(h) for h in history] == [pooled_keys(h) for h in ranks[1]["history"]]
    assert len(history) == 4
    accumulation = 2
    separated = 0
    for step, logged in enumerate(history):
        window = slice(step * accumulation, (step + 1) * accumulation)
        per_rank = [result["micro_batches"][window] for result in ranks]  # [rank][micro-batch]
        pooled = [
            sum(r[j]["down"] for r in per_rank) / max(sum(r[j]["tokens"] for r in per_rank), 1)
            for j in range(accumulation)
        ]
        mean_of_means = [
            sum(r[j]["down"] / max(r[j]["tokens"], 1) for r in per_rank) / len(per_rank)
            for j in range(accumulation)
        ]
        # TRL averages the micro-batches of a logging step; each micro-batch is pooled over both ranks
        expected = sum(pooled) / accumulation
        assert logged[mn.CLIP_FRAC_DOWN] == pytest.approx(expected, abs=1e-6)
        assert logged[mn.CLIP_FRAC_DOWN] == pytest.approx(
            logged["clip_ratio/low_mean"], abs=1e-6
        )  # TRL's own
        assert logged[mn.CLIP_FRAC_UP] == pytest.approx(logged["clip_ratio/high_mean"], abs=1e-6)
        separated += abs(expected - sum(mean_of_means) / accumulation) > 1e-4
    # the ranks' token counts differ, so a mean of per-rank means would have been caught
    assert separated > 0
    assert any(logged[mn.CLIP_FRAC_DOWN] > 0 for logged in history)  # bounds bind: the check is not vacuous
