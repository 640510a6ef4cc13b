"""A metric added to the catalogue and its views appears in report.md's tables and `bandpo train`'s summary,
built by the real report code: no other module names it (docs/layout.md, "Adding a metric")."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from bandpo import metric_names as mn
from bandpo.cli.train import format_summary
from bandpo.experiments.lm_report import lm_tables
from bandpo.experiments.lm_results import SeedResult
from bandpo.training.config import TrainConfig
from bandpo.training.evaluate import EvalResult

TOKENS = "eval/answer_tokens"  # a new metric: mean completion length of the held-out samples


@pytest.fixture
def answer_tokens(monkeypatch: pytest.MonkeyPatch) -> str:
    """Declare the metric and add it to the comparison table, the paired differences and the run summary."""
    monkeypatch.setattr(mn, "_CATALOGUE", dict(mn._CATALOGUE))
    key = mn.register_metric(
        mn.Metric(
            key=TOKENS, label="answer tokens ({k} samples)", short="tokens", summary="answer tokens", digits=1
        )
    )
    monkeypatch.setattr(mn, "COMPARISON_COLUMNS", (*mn.COMPARISON_COLUMNS, key))
    monkeypatch.setattr(mn, "PAIRED_DIFFERENCES", (*mn.PAIRED_DIFFERENCES, key))
    monkeypatch.setattr(mn, "RUN_SUMMARY_ROWS", (*mn.RUN_SUMMARY_ROWS, key))
    return key


def _result(label: str, seed: int, tokens: float) -> SeedResult:
    after = {mn.EVAL_PASS_AT_K: 0.5, TOKENS: tokens}
    return SeedResult(
        label=label,
        method=label,
        given={},
        seed=seed,
        k=8,
        before={TOKENS: 4.0},
        after=after,
        wall_time_s=60.0,
    )


def test_a_registered_metric_is_a_column_and_a_paired_difference_of_the_report(answer_tokens: str) -> None:
    data = {
        "clip": [_result("clip", 0, 5.0), _result("clip", 1, 7.0)],
        "band": [_result("band", 0, 6.0), _result("band", 1, 9.0)],
    }
    main, paired, _ = lm_tables(data)
    header = main.splitlines()[0]
    assert header.endswith(
        "| final entropy (eval, nats/token) | answer tokens (8 samples) | wall min / run (all calls) |"
    )
    rows = main.splitlines()
    assert rows[2].startswith("| before RL (warm-up policy) | 2 |")
    assert rows[2].endswith("| 4.0 ± 0.0 |  |")  # before RL: one value per seed, no wall time
    assert "| 6.0 ± 1.0 | 1.0 ± 0.0 |" in rows[3]  # clip: its digits (1), then the wall time
    assert "| 7.5 ± 1.5 |" in rows[4]
    assert paired.splitlines()[0].endswith("| Δ final entropy vs clip | Δ tokens vs clip |")
    assert paired.splitlines()[2].startswith("| band |")
    assert paired.splitlines()[2].count("|") == len(mn.PAIRED_DIFFERENCES) + 2


def test_a_registered_metric_is_a_row_of_the_run_summary(answer_tokens: str, tmp_path: Path) -> None:
    paths = {name: tmp_path / name for name in ("metrics", "plots", "model", "summary", "tensorboard")}
    paths["metrics"].write_text("")  # no training record: the reward row shows "-"
    summary = SimpleNamespace(
        config=TrainConfig(),
        before=EvalResult(metrics={TOKENS: 4.25}, k=8),
        after=EvalResult(metrics={TOKENS: 6.0, mn.EVAL_PASS_AT_K: 0.5}, k=8),
        wall_time_s=61.0,
        steps=2,
        paths={"run_dir": tmp_path, **paths},
    )
    lines = format_summary(summary).splitlines()
    assert f"{'pass@8':34}{'-':>9}{'0.500':>9}" in lines
    assert f"{'answer tokens':34}{'4.250':>9}{'6.000':>9}" in lines  # the summary's own 3 decimals
    assert lines.index(f"{'pass@8':34}{'-':>9}{'0.500':>9}") < lines.index(
        f"{'answer tokens':34}{'4.250':>9}{'6.000':>9}"
    )


def test_the_run_summary_keeps_its_labels() -> None:
    """`bandpo train`'s before/after rows as they were printed before the catalogue."""
    rows = [mn.metric(key).text("summary", k=16, rare="'*'") for key in mn.RUN_SUMMARY_ROWS]
    assert rows == [
        "mean@16",
        "pass@16",
        "maj@16",
        "entropy (nats/token)",
        "distinct correct answers/prompt",
        "pass@16, prompts needing '*'",
        "mean@16, prompts needing '*'",
        "samples using '*'",
    ]
