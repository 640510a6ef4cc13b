"""The preregistered confirmatory analysis: its cells, the stopping rule and the both-tests decision."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bandpo import metric_names as mn
from bandpo.cli import main
from bandpo.experiments.confirmatory import PRIMARY, SECONDARY, complete_seeds, confirmatory_report
from bandpo.experiments.lm_results import SeedResult, write_per_seed


def _study(folder: Path, task: str, seeds: range, entropy_gain: float) -> Path:
    """band_upper ends with `entropy_gain` more entropy than clip (plus noise); band like clip."""
    rng = random.Random(task)
    results = []
    for seed in seeds:
        for arm in ("clip", "band", "band_upper"):
            gain = entropy_gain if arm == "band_upper" else 0.0
            after = {
                mn.EVAL_ENTROPY: 0.12 + gain + rng.gauss(0, 0.01),
                mn.EVAL_PASS_AT_K: 0.6 + rng.gauss(0, 0.05),
                mn.EVAL_DISTINCT_CORRECT: 1.0 + rng.gauss(0, 0.1),
            }
            results.append(SeedResult(arm, arm, {}, seed, 16, {}, after, 60.0))
    folder.mkdir(parents=True)
    header = {"task": task, "arms": [{"label": arm} for arm in ("clip", "band", "band_upper")]}
    write_per_seed(folder / "per_seed.json", results, header)
    return folder


def test_the_cells_are_the_preregistered_ones() -> None:
    assert [c.name for c in PRIMARY] == ["P1", "P2", "P3", "P4", "P5", "P6"]
    assert {(c.task, c.arm, c.reference) for c in SECONDARY} >= {("countdown", "band_upper", "band")}


def test_a_clear_effect_is_confirmed_and_a_null_is_not(tmp_path: Path) -> None:
    countdown = _study(tmp_path / "c", "countdown", range(24), 0.03)
    reach = _study(tmp_path / "r", "reach", range(24), 0.03)
    text = confirmatory_report({"countdown": countdown, "reach": reach})
    primary = text.split("## Secondary")[0].splitlines()
    rows = {line.split(" | ")[0].strip("| "): line for line in primary if line.startswith("| P")}
    assert "**confirmed** (arm higher)" in rows["P1"] and "24+/0−" in rows["P1"]
    assert "confirmed" not in rows["P3"].replace("not confirmed", "")  # band = clip: no effect to find
    sensitivity = text.split("## Sensitivity analysis")[1]
    assert "| P1 | countdown: band_upper − clip, entropy | 16 |" in sensitivity  # seeds 8-23 only
    assert "| P4 | reach: band_upper − clip, entropy | 20 |" in sensitivity


def test_the_stopping_rule_refuses_an_incomplete_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    countdown = _study(tmp_path / "c", "countdown", range(23), 0.03)
    reach = _study(tmp_path / "r", "reach", range(24), 0.03)
    with pytest.raises(ValueError, match="23 of 24 seeds"):
        confirmatory_report({"countdown": countdown, "reach": reach})
    argv = ["compare", "--confirmatory", str(countdown), str(reach), "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "stopping rule" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_complete_seeds_need_every_arm(tmp_path: Path) -> None:
    results = [SeedResult(arm, arm, {}, 0, 16, {}, {}, 1.0) for arm in ("clip", "band", "band_upper")]
    results.append(SeedResult("clip", "clip", {}, 1, 16, {}, {}, 1.0))
    assert list(complete_seeds(results)) == [0]


def test_a_folder_of_the_wrong_task_is_refused(tmp_path: Path) -> None:
    countdown = _study(tmp_path / "c", "countdown", range(24), 0.03)
    with pytest.raises(ValueError, match="not 'reach'"):
        confirmatory_report({"countdown": countdown, "reach": countdown})


def test_a_seed_split_across_cpu_models_is_refused(tmp_path: Path) -> None:
    countdown = _study(tmp_path / "c", "countdown", range(24), 0.03)
    reach = _study(tmp_path / "r", "reach", range(24), 0.03)
    path = countdown / "per_seed.json"
    data = json.loads(path.read_text())
    for run in data["runs"]:
        if run["seed"] == 3:  # clip on one CPU model, band and band_upper on another
            run["machine"] = "AMD EPYC" if run["label"] == "clip" else "Intel Xeon"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"seeds \[3\] have arms trained on different CPU models"):
        confirmatory_report({"countdown": countdown, "reach": reach})
