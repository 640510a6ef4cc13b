"""One tiny real comparison through `bandpo.training.train`: 2 methods x 1 seed, a few RL steps, in 2 processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from bandpo import metric_names as mn
from bandpo.experiments.arms import parse_method_specs
from bandpo.experiments.lm_compare import run_lm_compare
from bandpo.experiments.lm_results import DONE_MARKER

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TINY = dict(
    prompts_per_step=4,
    num_generations=4,
    num_iterations=2,
    minibatches=2,
    learning_rate=1e-3,
    save_every=2,
    eval_prompts=8,
    eval_samples=4,
    eval_every=0,
    warmup_max_steps=20,
)


def test_tiny_real_compare_trains_reports_and_skips_on_rerun(tmp_path: Path) -> None:
    specs = parse_method_specs(["clip", "band_upper"])
    settings = {**TINY, "cache_dir": str(tmp_path / "cache")}
    messages: list[str] = []
    report, table = run_lm_compare(
        specs, [0], tmp_path / "cmp", steps=3, jobs=2, extra_settings=settings, progress=messages.append
    )
    for label in ("clip", "band_upper"):
        run_dir = tmp_path / "cmp" / "runs" / f"{label}-seed0"
        marker = json.loads((run_dir / DONE_MARKER).read_text())
        assert marker["config"]["method"] == label and marker["config"]["max_steps"] == 3
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert max(r[mn.TRAIN_STEP] for r in records if mn.TRAIN_REWARD in r) == 3
    assert "| clip | 1 |" in table and "| band_upper | 1 |" in table
    assert (tmp_path / "cmp" / "compare_training.png").stat().st_size > 10_000
    assert "## Clip fractions by p_old bin" in report.read_text()
    # the same command again trains nothing
    again: list[str] = []
    run_lm_compare(
        specs, [0], tmp_path / "cmp", steps=3, jobs=2, extra_settings=settings, progress=again.append
    )
    assert sum("finished earlier, skipped" in m for m in again) == 2
    assert not any("training" in m for m in again)
