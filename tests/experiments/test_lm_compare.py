"""`bandpo compare` for the language model, with a stand-in for `train` that writes synthetic run directories.

No training happens here: the stand-in writes config.json, metrics.jsonl and summary.json the way
`bandpo.training.train` does, so these tests check planning, resuming and the report's arithmetic.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from bandpo import metric_names as mn
from bandpo.experiments.lm_compare import DONE_MARKER, QUICK_SETTINGS, plan_runs, run_lm_compare
from bandpo.experiments.methods_spec import parse_method_specs

PASS_K = {"clip": 0.50, "band_upper": 0.60}  # base pass@k after training, + 0.1 per seed


class FakeTrain:
    """Writes what `train` writes, from a few numbers that depend on the method and the seed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool]] = []

    def __call__(self, config, *, progress: bool = True):
        run_dir = Path(config.output_dir)
        self.calls.append((config.method, config.seed, config.resume))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config.to_json())
        base = PASS_K[config.method] + 0.1 * config.seed
        records = [{mn.TRAIN_STEP: 0, mn.EVAL_PASS_AT_K: 0.3}]
        for step in range(1, config.max_steps + 1):
            records.append(
                {
                    mn.TRAIN_STEP: step,
                    mn.TRAIN_REWARD: 0.1 * step,
                    mn.TRAIN_ENTROPY: 1.0 / step,
                    mn.CLIP_FRAC_UP: 0.01,
                    mn.CLIP_FRAC_DOWN: 0.2 if config.method == "clip" else 0.05,
                    mn.clip_frac_up_bin("p0_001"): 0.25 * (step % 2),  # mean over steps: 0.125 at 2 steps
                    mn.clip_frac_down_bin("p0_001"): 0.5 if config.method == "clip" else 0.0,
                }
            )
        records.append({mn.TRAIN_STEP: config.max_steps, mn.EVAL_PASS_AT_K: base})
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        metrics_after = {
            mn.EVAL_MEAN_AT_K: base - 0.2,
            mn.EVAL_PASS_AT_1: base - 0.2,
            mn.EVAL_PASS_AT_K: base,
            mn.EVAL_MAJ_AT_K: base - 0.1,
            mn.EVAL_DISTINCT_CORRECT: 1.0 + config.seed,
            mn.EVAL_RARE_PASS_AT_K: base / 2,
            mn.EVAL_RARE_USAGE: 0.1,
            mn.EVAL_ENTROPY: 0.2,
        }
        metrics_before = {key: 0.25 for key in metrics_after}
        summary = {
            "config": config.to_dict(),
            "before": {"metrics": metrics_before, "k": 16},
            "after": {"metrics": metrics_after, "k": 16},
            "steps": config.max_steps,
            "wall_time_s": 60.0 * (1 + config.seed),
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return type("Summary", (), {"wall_time_s": summary["wall_time_s"]})()


def _compare(tmp_path: Path, fake: FakeTrain, **kwargs):
    specs = parse_method_specs(["clip", "band_upper"])
    return run_lm_compare(specs, [0, 1], tmp_path, steps=2, train_fn=fake, **kwargs)


def test_report_table_from_synthetic_runs(tmp_path: Path) -> None:
    fake = FakeTrain()
    report, table = _compare(tmp_path, fake)
    assert sorted(fake.calls) == [
        ("band_upper", 0, False),
        ("band_upper", 1, False),
        ("clip", 0, False),
        ("clip", 1, False),
    ]
    lines = table.splitlines()
    assert lines[0].startswith(
        "| method | seeds | mean@16 (= pass@1) | pass@16 | maj@16 | distinct correct / prompt |"
    )
    # clip: pass@16 is 0.5 and 0.6 over seeds 0 and 1 -> 0.550 ± 0.050; wall 1 and 2 min -> 1.5 ± 0.5
    assert lines[2].startswith("| before RL (warm-up policy) | 2 | 0.250 ± 0.000 |")
    assert lines[3] == (
        "| clip | 2 | 0.350 ± 0.050 | 0.550 ± 0.050 | 0.450 ± 0.050 | 1.50 ± 0.50 | 0.275 ± 0.025 "
        "| 0.100 ± 0.000 | 0.200 ± 0.000 | 1.5 ± 0.5 |"
    )
    assert lines[4].startswith("| band_upper | 2 | 0.450 ± 0.050 | 0.650 ± 0.050 |")
    text = report.read_text()
    paired = "| band_upper | +0.100 ± 0.000 (win) | +0.100 ± 0.000 (win) | +0.000 ± 0.000 (tie) | +0.050 ± 0.000 (win) |"
    assert paired in text
    assert "| clip | 0.010/0.200 | 0.125/0.500 |" in text  # clip fractions: all tokens, then the first bin
    assert "| band_upper | 0.010/0.050 | 0.125/0.000 |" in text
    data = (tmp_path / "compare_training.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24])[0] > 1000
    plan = json.loads((tmp_path / "compare.json").read_text())
    assert plan["methods"] == ["clip", "band_upper"] and plan["seeds"] == [0, 1]


def test_rerun_skips_finished_runs_and_resumes_unfinished_ones(tmp_path: Path) -> None:
    fake = FakeTrain()
    _compare(tmp_path, fake)
    assert len(fake.calls) == 4
    # a second call redoes nothing
    again = FakeTrain()
    _compare(tmp_path, again)
    assert again.calls == []
    # an interrupted run (directory without the completion marker) is continued with resume=True
    (tmp_path / "runs" / "band_upper-seed1" / DONE_MARKER).unlink()
    (tmp_path / "runs" / "band_upper-seed1" / "summary.json").unlink()
    third = FakeTrain()
    _compare(tmp_path, third)
    assert third.calls == [("band_upper", 1, True)]


def test_finished_run_with_other_settings_is_an_error(tmp_path: Path) -> None:
    _compare(tmp_path, FakeTrain())
    fake = FakeTrain()
    specs = parse_method_specs(["clip", "band_upper"])
    with pytest.raises(ValueError, match="max_steps"):
        run_lm_compare(specs, [0, 1], tmp_path, steps=3, train_fn=fake)
    assert fake.calls == []


def test_settings_and_method_params_reach_the_train_config(tmp_path: Path) -> None:
    fake = FakeTrain()
    specs = parse_method_specs(["clip:eps_high=0.3"])
    _report, table = run_lm_compare(specs, [0], tmp_path, quick=True, train_fn=fake)
    assert "| clip:eps_high=0.3 | 1 |" in table
    stored = json.loads((tmp_path / "runs" / "clip__eps_high=0.3-seed0" / "config.json").read_text())
    assert stored["eps_high"] == 0.3
    assert stored["max_steps"] == QUICK_SETTINGS["max_steps"]
    assert stored["seed"] == 0 and stored["method"] == "clip"


def test_bad_method_parameter_fails_before_any_run(tmp_path: Path) -> None:
    fake = FakeTrain()
    specs = parse_method_specs(["clip"])
    with pytest.raises(ValueError, match="max_steps"):
        run_lm_compare(specs, [0], tmp_path, train_fn=fake, extra_settings={"max_steps": 0})
    assert fake.calls == []


def test_plan_is_seed_major() -> None:
    specs = parse_method_specs(["clip", "band"])
    names = [run.name for run in plan_runs(specs, [0, 1], Path("out"))]
    assert names == ["clip seed 0", "band seed 0", "clip seed 1", "band seed 1"]


def test_parallel_jobs_never_start_two_runs_of_a_seed_before_one_finished(tmp_path: Path) -> None:
    """With the embedded model the first run of a seed warms up its starting policy; the others must wait."""
    import threading
    import time

    lock = threading.Lock()
    events: list[tuple[str, int, str, float]] = []
    inner = FakeTrain()

    def train(config, *, progress: bool = True):
        with lock:
            events.append(("start", config.seed, config.method, time.perf_counter()))
        time.sleep(0.05)
        result = inner(config, progress=progress)
        with lock:
            events.append(("end", config.seed, config.method, time.perf_counter()))
        return result

    specs = parse_method_specs(["clip", "band_upper"])
    messages: list[str] = []
    run_lm_compare(specs, [0, 1], tmp_path, steps=2, train_fn=train, jobs=2, progress=messages.append)
    assert len(inner.calls) == 4
    assert all((tmp_path / "runs" / f"{m}-seed{s}" / DONE_MARKER).exists() for m in PASS_K for s in (0, 1))
    for seed in (0, 1):
        starts = sorted(t for kind, s, _, t in events if kind == "start" and s == seed)
        first_end = min(t for kind, s, _, t in events if kind == "end" and s == seed)
        assert starts[1] >= first_end
    # two runs did overlap in time (different seeds)
    first_two = sorted(events, key=lambda e: e[3])[:2]
    assert [kind for kind, *_ in first_two] == ["start", "start"]
    assert any("done in" in message for message in messages)


def test_jobs_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--jobs"):
        run_lm_compare(parse_method_specs(["clip"]), [0], tmp_path, train_fn=FakeTrain(), jobs=0)
