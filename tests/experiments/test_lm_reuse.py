"""`bandpo compare --reuse`: finished runs of another per_seed.json stand for planned runs of the same arm, seed
and settings; and per_seed.json is validated before anything is counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_lm_compare import FakeTrain

from bandpo.cli import main
from bandpo.experiments.arms import parse_method_specs
from bandpo.experiments.lm_compare import report_only, run_lm_compare
from bandpo.experiments.lm_results import read_per_seed


def _first_study(tmp_path: Path) -> Path:
    specs = parse_method_specs(["clip", "band_upper"])
    run_lm_compare(specs, [0, 1], tmp_path / "first", steps=2, train_fn=FakeTrain())
    return tmp_path / "first" / "per_seed.json"


def test_reused_runs_are_not_trained_and_are_named(tmp_path: Path) -> None:
    first = _first_study(tmp_path)
    fake = FakeTrain()
    specs = parse_method_specs(["clip", "band_upper"])
    report, _ = run_lm_compare(specs, [0, 1, 2], tmp_path / "second", steps=2, train_fn=fake, reuse=[first])
    assert sorted(fake.calls) == [
        ("band_upper", 2, False),
        ("clip", 2, False),
    ]  # seeds 0, 1 came from the file
    results, _ = read_per_seed(tmp_path / "second" / "per_seed.json")
    assert sorted((r.label, r.seed) for r in results) == sorted(
        (label, seed) for label in ("clip", "band_upper") for seed in (0, 1, 2)
    )
    sources = {(r.label, r.seed): r.source for r in results}
    assert sources[("clip", 0)] == str(first) and sources[("clip", 2)] is None
    assert all(r.machine for r in results)
    text = report.read_text()
    assert f"Reused from `{first}` (4 runs, not trained here)" in text
    assert "Every seed's arms were trained on one CPU model." in text
    # the combined file rebuilds its report byte for byte
    rebuilt, _ = report_only(tmp_path / "second")
    assert rebuilt.read_text() == text


def test_a_study_made_only_of_reused_runs_draws_no_empty_training_figure(tmp_path: Path) -> None:
    first = _first_study(tmp_path)
    fake = FakeTrain()
    specs = parse_method_specs(["clip", "band_upper"])
    report, _ = run_lm_compare(specs, [0, 1], tmp_path / "gathered", steps=2, train_fn=fake, reuse=[first])
    assert fake.calls == []
    assert not (tmp_path / "gathered" / "compare_training.png").exists()
    assert "Training curves" not in report.read_text()


def test_reuse_with_another_budget_is_refused(tmp_path: Path) -> None:
    first = _first_study(tmp_path)
    specs = parse_method_specs(["clip"])
    with pytest.raises(ValueError, match=r"other settings \(max_steps: 2 there, 3 now\)"):
        run_lm_compare(specs, [0], tmp_path / "second", steps=3, train_fn=FakeTrain(), reuse=[first])


@pytest.mark.parametrize("drop", ["config", "model"])
def test_a_record_without_its_settings_is_not_reused(tmp_path: Path, drop: str) -> None:
    first = _first_study(tmp_path)
    data = json.loads(first.read_text())
    if drop == "config":
        del data["config"]
    else:
        del data["config"]["model"]  # a run of another model could not be told apart
    first.write_text(json.dumps(data))
    fake = FakeTrain()
    with pytest.raises(ValueError, match=r"settings block \('config'\) lacks \['" + drop):
        run_lm_compare(
            parse_method_specs(["clip"]), [0], tmp_path / "second", steps=2, train_fn=fake, reuse=[first]
        )
    assert fake.calls == [] and not (tmp_path / "second").exists()


def test_reuse_through_the_cli_and_seed_ranges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _first_study(tmp_path)
    argv = ["compare", "--methods", "clip", "--seeds", "5-4", "--reuse", str(first)]
    assert main([*argv, "--output-dir", str(tmp_path / "x")]) == 2
    assert "--seeds: need at least 1 seed" in capsys.readouterr().err
    argv = ["compare", "--methods", "clip", "--seeds", "0-1", "--steps", "3", "--reuse", str(first)]
    assert main([*argv, "--output-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "max_steps: 2 there, 3 now" in err and len(err.splitlines()) == 1


def _tamper(tmp_path: Path, change) -> Path:
    path = _first_study(tmp_path)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path.parent


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["runs"].append(dict(d["runs"][0])), "appears twice"),
        (lambda d: d["runs"][0]["after"].update({"eval/mean_at_k": 5.0}), r"must lie in \[0, 1\]"),
        (lambda d: d["runs"][0]["after"].update({"eval/entropy": "high"}), "not a finite number"),
        (lambda d: d["runs"][0].update({"label": "ghost"}), "not one of the file's arms"),
        (lambda d: d["runs"][0].update({"seed": "0"}), "non-negative integer"),
        (lambda d: d["runs"][0].pop("after"), "missing keys"),
        (lambda d: d["runs"][0].update({"extra": 1}), "unknown keys"),
        (lambda d: d.update({"runs": {}}), "'runs' list"),
    ],
)
def test_tampered_per_seed_is_refused_with_the_file_named(tmp_path: Path, change, message: str) -> None:
    folder = _tamper(tmp_path, change)
    with pytest.raises(ValueError, match=message) as error:
        report_only(folder)
    assert str(folder / "per_seed.json") in str(error.value)


@pytest.mark.parametrize("text", ["[1, 2]", '{"format": 1, "runs": [', "[" * 100_000 + "]" * 100_000])
def test_unreadable_per_seed_is_one_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "per_seed.json").write_text(text)
    with pytest.raises(ValueError, match=r"per_seed\.json"):
        report_only(tmp_path)


def test_a_null_metric_shows_its_own_n(tmp_path: Path) -> None:
    folder = _tamper(tmp_path, lambda d: d["runs"][0]["after"].update({"eval/pass_at_k": None}))
    _report, table = report_only(folder)
    clip_row = next(line for line in table.splitlines() if line.startswith("| clip |"))
    assert "(n=1)" in clip_row  # clip has 2 seeds but only 1 pass@16


def test_collect_writes_the_finished_runs_and_no_report(tmp_path: Path) -> None:
    first = _first_study(tmp_path)
    (first.parent / "report.md").unlink()
    first.unlink()
    fake = FakeTrain()
    specs = parse_method_specs(["clip", "band_upper"])
    path, table = run_lm_compare(specs, [0, 1, 2], first.parent, steps=2, train_fn=fake, collect_only=True)
    assert fake.calls == [] and table == "" and path == first
    assert not (first.parent / "report.md").exists()
    results, _ = read_per_seed(path)
    assert sorted((r.label, r.seed) for r in results) == [
        ("band_upper", 0),
        ("band_upper", 1),
        ("clip", 0),
        ("clip", 1),
    ]
    # the collected file carries the study on: the next call trains only what is missing
    run_lm_compare(specs, [0, 1, 2], tmp_path / "next", steps=2, train_fn=fake, reuse=[path])
    assert sorted(fake.calls) == [("band_upper", 2, False), ("clip", 2, False)]


def test_collect_keeps_whole_seeds_only(tmp_path: Path) -> None:
    specs = parse_method_specs(["clip", "band_upper"])
    run_lm_compare(parse_method_specs(["clip"]), [0, 1], tmp_path, steps=2, train_fn=FakeTrain())  # clip only
    run_lm_compare(parse_method_specs(["band_upper"]), [0], tmp_path, steps=2, train_fn=FakeTrain())
    path, _ = run_lm_compare(specs, [0, 1], tmp_path, steps=2, train_fn=FakeTrain(), collect_only=True)
    results, _ = read_per_seed(path)
    assert sorted((r.label, r.seed) for r in results) == [
        ("band_upper", 0),
        ("clip", 0),
    ]  # seed 1 is half done
