"""`bandpo compare` for the language model, with a stand-in for `train` that writes synthetic run directories.

No training happens here: the stand-in writes config.json, metrics.jsonl and summary.json the way
`bandpo.training.train` does, so these tests check planning, resuming and the report's arithmetic.
"""

from __future__ import annotations

import json
import math
import struct
import time
from pathlib import Path

import pytest

from bandpo import metric_names as mn
from bandpo.experiments.arms import parse_method_specs
from bandpo.experiments.lm_compare import plan_runs, run_lm_compare
from bandpo.experiments.lm_results import DONE_MARKER, QUICK_SETTINGS, WALL_LOG, effective
from bandpo.experiments.stats import STATS_RULE

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
    # band_upper - clip is the same on both seeds: a constant difference is no test, never a win
    constant = "on every seed, n=2 (constant, no spread: not a test)"
    identical = "+0.000 on every seed, n=2 (identical: no test)"
    paired = (
        f"| band_upper | +0.100 {constant} | +0.100 {constant} | +0.100 {constant} | {identical} "
        f"| +0.050 {constant} | {identical} |"
    )
    assert paired in text
    assert "0 tested difference(s) in the Holm family" in text
    assert "| clip | 0.010/0.200 | 0.125/0.500 |" in text  # clip fractions: all tokens, then the first bin
    assert "| band_upper | 0.010/0.050 | 0.125/0.000 |" in text
    data = (tmp_path / "compare_training.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24])[0] > 1000
    bins = (
        tmp_path / "compare_clip_bins.png"
    ).read_bytes()  # the per-bin curves: one bin logged, the rest gaps
    assert bins[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", bins[16:24])[0] > 1000
    assert "![clip fractions by p_old bin, per RL step](compare_clip_bins.png)" in text
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
    plan = (tmp_path / "compare.json").read_text()
    with pytest.raises(ValueError, match="max_steps"):
        run_lm_compare(specs, [0, 1], tmp_path, steps=3, train_fn=fake)
    assert fake.calls == []
    assert (tmp_path / "compare.json").read_text() == plan  # a refused compare leaves the plan it had


def test_record_of_an_older_trainer_still_counts_as_finished(tmp_path: Path) -> None:
    """A record written before a field existed, or with an automatic value written out, is the same run."""
    _compare(tmp_path, FakeTrain())
    for marker in (tmp_path / "runs").glob(f"*/{DONE_MARKER}"):
        record = json.loads(marker.read_text())
        config = record["config"]
        config.update(config.pop("resolved", {}) or {})  # older records: concrete values, no "resolved"
        config["max_completion_length"] = 8  # what the embedded task resolves None to
        config.pop("keep_checkpoints")  # a field the older trainer did not have
        marker.write_text(json.dumps(record))
    again = FakeTrain()
    _compare(tmp_path, again)
    assert again.calls == []
    assert effective({"a": None, "b": 1, "resolved": {"a": 8, "c": 2}}) == {"a": 8, "b": 1}


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


class BinTrain(FakeTrain):
    """Like FakeTrain, with per-step values of the first p_old bin given by the test (None: key absent)."""

    def __init__(self, up: list[float | None], tokens: list[float] | None = None) -> None:
        super().__init__()
        self.up, self.tokens = up, tokens

    def __call__(self, config, *, progress: bool = True):
        result = super().__call__(config, progress=progress)
        path = Path(config.output_dir) / "metrics.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        training = [r for r in records if mn.TRAIN_REWARD in r]
        for index, record in enumerate(training):
            record.pop(mn.clip_frac_up_bin("p0_001"))
            if self.up[index] is not None:
                record[mn.clip_frac_up_bin("p0_001")] = self.up[index]
            if self.tokens is not None:
                record[mn.clip_tokens_bin("p0_001")] = self.tokens[index]
        path.write_text("".join(json.dumps(r) + "\n" for r in records))  # nan is written as NaN
        return result


def _clip_row(report: Path, label: str) -> list[str]:
    text = report.read_text()
    clip_section = text[text.index("## Clip fractions by p_old bin") :]
    row = next(line for line in clip_section.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_clip_fraction_of_a_bin_ignores_steps_without_a_value(tmp_path: Path) -> None:
    """An absent key or nan (a step with no token in the bin) is missing, not 0, and does not poison the mean."""
    fake = BinTrain(up=[0.25, math.nan, None, 0.75])
    specs = parse_method_specs(["clip"])
    report, _ = run_lm_compare(specs, [0], tmp_path, steps=4, train_fn=fake)
    assert _clip_row(report, "clip")[2] == "0.500/0.500"  # mean of 0.25 and 0.75, the 2 steps with a value
    text = report.read_text()
    assert "left out of that bin's mean rather than counted as 0" in text
    assert "every step of these runs logged every bin" not in text


def test_clip_fraction_of_a_bin_is_weighted_by_its_token_count_when_logged(tmp_path: Path) -> None:
    fake = BinTrain(up=[0.5, 0.0], tokens=[2.0, 6.0])  # 1 clipped token out of 8 in the bin: 0.125
    specs = parse_method_specs(["clip"])
    report, _ = run_lm_compare(specs, [0], tmp_path, steps=2, train_fn=fake)
    assert _clip_row(report, "clip")[2] == "0.125/0.500"
    assert "weighted by the bin's token count" in report.read_text()


def test_wall_time_adds_up_every_call_of_a_resumed_run(tmp_path: Path) -> None:
    """A run interrupted once and finished by a second compare reports both calls' time, not the last one."""
    specs = parse_method_specs(["clip"])

    def interrupted(config, *, progress: bool = True):
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.output_dir) / "config.json").write_text(config.to_json())
        time.sleep(0.05)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_lm_compare(specs, [0], tmp_path, steps=2, train_fn=interrupted)
    fake = FakeTrain()
    _report, table = run_lm_compare(specs, [0], tmp_path, steps=2, train_fn=fake)
    assert fake.calls == [("clip", 0, True)]
    marker = json.loads((tmp_path / "runs" / "clip-seed0" / DONE_MARKER).read_text())
    first, last = marker["wall_time_calls_s"]
    assert first >= 0.05 and last == 60.0  # FakeTrain reports 60 s for seed 0
    assert marker["wall_time_s"] == pytest.approx(first + last)
    assert "wall min / run (all calls)" in table


def test_parallel_jobs_record_the_time_of_a_failed_run(tmp_path: Path) -> None:
    specs = parse_method_specs(["clip", "band_upper"])

    def failing(config, *, progress: bool = True):
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        time.sleep(0.05)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_lm_compare(specs, [0, 1], tmp_path, steps=2, train_fn=failing, jobs=2)
    logs = list((tmp_path / "runs").glob(f"*/{WALL_LOG}"))
    assert logs, "no interrupted call was recorded"
    seconds = [json.loads(log.read_text())["interrupted_calls_s"][0] for log in logs]
    # the run that failed first slept its 0.05 s; a run stopped by that failure may not have finished its sleep
    assert max(seconds) >= 0.05 and min(seconds) > 0


def test_paired_table_and_report_state_the_t_rule(tmp_path: Path) -> None:
    """One seed has no spread: the paired table says n/a instead of calling a win."""
    specs = parse_method_specs(["clip", "band_upper"])
    report, _ = run_lm_compare(specs, [0], tmp_path, steps=2, train_fn=FakeTrain())
    text = report.read_text()
    assert "| band_upper | n/a (n=1) | n/a (n=1) | n/a (n=1) | n/a (n=1) | n/a (n=1) | n/a (n=1) |" in text
    assert STATS_RULE in text and "Holm-Bonferroni" in text


def test_compare_json_records_the_task_and_every_resolved_parameter(tmp_path: Path) -> None:
    specs = parse_method_specs(["clip", "band_upper:delta=0.1"])
    run_lm_compare(specs, [0], tmp_path, steps=2, train_fn=FakeTrain())
    plan = json.loads((tmp_path / "compare.json").read_text())
    assert plan["task"] == "countdown"
    band = plan["arms"][1]
    assert band["label"] == "band_upper:delta=0.1" and band["given"] == {"delta": 0.1}
    # every parameter of the method, not only the one given
    assert band["params"]["delta"] == 0.1 and band["resolved"]["lower_side"] == "fixed"
    assert {"divergence", "ratio_max", "eps_low"} <= set(band["params"])
    assert band["resolved"]["upper_side"] == "band" and band["resolved"]["ratio_max"] == 10.0
    assert plan["arms"][0]["params"] == {"eps_low": 0.2, "eps_high": 0.2}


def test_per_seed_file_holds_every_final_evaluation_and_rebuilds_the_report(tmp_path: Path) -> None:
    from bandpo.experiments.lm_compare import report_only
    from bandpo.experiments.lm_results import PER_SEED_FILE

    PASS_K.setdefault("band", 0.55)  # FakeTrain keys on the method name
    specs = parse_method_specs(["clip", "band_upper", "band:ratio_max=inf"])
    report, table = run_lm_compare(specs, [0, 1], tmp_path, steps=2, train_fn=FakeTrain())
    per_seed = json.loads((tmp_path / PER_SEED_FILE).read_text())
    dppo = next(r for r in per_seed["runs"] if r["label"] == "band:ratio_max=inf")
    assert dppo["given"] == {"ratio_max": math.inf}
    assert per_seed["task"] == "countdown" and len(per_seed["runs"]) == 6
    run = next(r for r in per_seed["runs"] if r["label"] == "clip" and r["seed"] == 1)
    assert run["after"][mn.EVAL_PASS_AT_K] == pytest.approx(0.6) and run["k"] == 16
    assert run["before"][mn.EVAL_PASS_AT_K] == 0.25 and run["wall_time_s"] == 120.0
    assert run["clip"]["p0_001"] == [0.125, 0.5]
    assert (tmp_path / PER_SEED_FILE).stat().st_size < 10_000
    original = report.read_text()
    # without the run directories (as committed under docs/results), the tables come back identical
    import shutil

    shutil.rmtree(tmp_path / "runs")
    report.unlink()
    rebuilt, rebuilt_table = report_only(tmp_path)
    assert rebuilt_table == table
    assert rebuilt.read_text() == original
    assert (tmp_path / "compare_training.png").exists()  # kept from the first call


def test_quick_report_says_the_quick_budget_ranks_noise(tmp_path: Path) -> None:
    messages: list[str] = []
    report, _ = run_lm_compare(
        parse_method_specs(["clip"]),
        [0],
        tmp_path,
        quick=True,
        train_fn=FakeTrain(),
        progress=messages.append,
    )
    assert "ranking of the methods is noise" in report.read_text()
    assert any("ranking of the methods is noise" in message for message in messages)


def test_sweep_expands_the_arms_and_plots_against_the_parameter(tmp_path: Path) -> None:
    from bandpo.experiments.arms import expand_sweep, parse_sweep

    param, values = parse_sweep("delta=0.02,0.05,0.1,0.2")
    assert (param, values) == ("delta", [0.02, 0.05, 0.1, 0.2])
    specs = expand_sweep(parse_method_specs(["clip", "band_upper"]), param, values)
    assert [s.label for s in specs] == ["clip"] + [f"band_upper:delta={v}" for v in values]
    with pytest.raises(ValueError, match="none of --methods"):
        expand_sweep(parse_method_specs(["clip"]), "delta", values)
    with pytest.raises(ValueError, match="twice"):
        parse_sweep("delta=0.1,0.1")
    report, _ = run_lm_compare(
        specs, [0, 1], tmp_path, steps=2, train_fn=FakeTrain(), sweep={"param": param, "values": values}
    )
    data = (tmp_path / "sweep_delta.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24])[0] > 1000
    assert "![sweep over delta](sweep_delta.png)" in report.read_text()
    assert json.loads((tmp_path / "compare.json").read_text())["sweep"]["values"] == values


def test_one_progress_bar_counts_the_steps_of_the_whole_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messages: list[str] = []
    _compare(tmp_path, FakeTrain(), jobs=2, progress=messages.append)
    err = capsys.readouterr().err
    assert err.count("compare (RL steps, all runs)") >= 1
    assert "8/8" in err  # 2 methods x 2 seeds x 2 steps, one bar
    assert "warm-up" not in err and sum("done in" in m for m in messages) == 4
    # a second call: every run finished earlier, nothing to train, no bar
    _compare(tmp_path, FakeTrain(), jobs=2, progress=messages.append)
    assert "compare (RL steps" not in capsys.readouterr().err
