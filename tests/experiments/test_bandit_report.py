"""Report building blocks and the bandit report, from synthetic results (no training)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from bandpo.experiments.arms import parse_method_spec, parse_method_specs
from bandpo.experiments.bandit import (
    get_scenario,
    headline_table,
    read_bandit_results,
    run_bandit_compare,
    scenario_tables,
    write_bandit_report,
)
from bandpo.experiments.report import (
    clip_cell,
    format_mean_spread,
    markdown_table,
    mean_and_spread,
    moving_average,
    prob_bin_headers,
)
from bandpo.experiments.stats import STATS_RULE


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_mean_and_spread_is_the_standard_error() -> None:
    mean, spread = mean_and_spread([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert spread == pytest.approx(math.sqrt((1.5**2 * 2 + 0.5**2 * 2) / 3) / 2)
    assert mean_and_spread([0.4, math.nan, 0.6]) == pytest.approx((0.5, 0.1))
    mean, spread = mean_and_spread([0.7])
    assert mean == 0.7 and math.isnan(spread)
    assert all(math.isnan(v) for v in mean_and_spread([]))


def test_format_mean_spread() -> None:
    assert format_mean_spread(0.54, 0.08, 2) == "0.54 ± 0.08"
    assert format_mean_spread(0.54, math.nan, 2) == "0.54"
    assert format_mean_spread(math.nan, 0.1) == "n/a"


def test_moving_average_skips_missing_points() -> None:
    assert moving_average([1.0, 3.0, 5.0], 1) == [1.0, 3.0, 5.0]
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    out = moving_average([1.0, math.nan, math.nan, 4.0], 2)
    assert out[:2] == [1.0, 1.0] and math.isnan(out[2]) and out[3] == 4.0


def test_prob_bin_headers_follow_the_metric_bins() -> None:
    assert prob_bin_headers() == ["0–0.01", "0.01–0.1", "0.1–0.5", "0.5–0.9", "0.9–1"]


def test_clip_cell_shows_a_dash_where_nothing_was_measured() -> None:
    assert clip_cell(0.5, 0.125) == "0.500/0.125"
    assert clip_cell(None, None) == clip_cell(math.nan, math.nan) == "–"


def test_markdown_table_and_row_check() -> None:
    assert markdown_table(["a", "b"], [[1, "x|y"]]) == "| a | b |\n|---|---|\n| 1 | x\\|y |"
    with pytest.raises(ValueError, match="2 headers"):
        markdown_table(["a", "b"], [[1]])


def test_method_specs() -> None:
    spec = parse_method_spec("band:delta=0.1,divergence=tv,relax=true")
    assert spec.name == "band"
    assert spec.params == {"delta": 0.1, "divergence": "tv", "relax": True}
    assert spec.label == "band:delta=0.1,divergence=tv,relax=True"
    assert ":" not in spec.slug and "," not in spec.slug
    assert spec.build().params["delta"] == 0.1
    with pytest.raises(ValueError, match="key=value"):
        parse_method_spec("band:delta")
    with pytest.raises(ValueError, match="unknown method"):
        parse_method_specs(["nope"])
    with pytest.raises(ValueError, match="more than once"):
        parse_method_specs(["clip", "clip"])
    with pytest.raises(ValueError, match="no parameter"):
        parse_method_specs(["clip:delta=0.1"])


def _synthetic_results() -> dict:
    steps = 4

    def summary(found: list[float], reward: float) -> dict:
        return {
            "seeds": [0, 1],
            "found": found,
            "median_steps_to_find": 3.0 if max(found) > 0.5 else math.inf,
            "mean_steps_to_find_if_found": 3.0,
            "final_expected_reward": [reward, reward + 0.02],
            "locked_wrong": [0.1, 0.3],
            "entropy": [[2.0, 1.5, 1.0, 0.8, 0.5], [2.0, 1.4, 1.1, 0.7, 0.5]],
            "expected_reward": [[0.4, 0.5, 0.6, 0.7, reward], [0.4, 0.5, 0.6, 0.7, reward + 0.02]],
            "found_curve": [[0, 0, 0.5, 0.5, found[0]], [0, 0, 0.5, 0.5, found[1]]],
            "clip_up_by_bin": [0.5, 0.25, None, 0.0, 0.0],
            "clip_down_by_bin": [0.125, 0.0, None, 0.0, 0.0],
            "token_share_by_bin": [0.5, 0.25, 0.0, 0.25, 0.0],
            "wall_time_s": 1.25,
        }

    scenario = get_scenario("trap").replace(steps=steps).to_dict()
    return {
        "task": "bandit",
        "seeds": [0, 1],
        "machine": {"processor": "cpu", "platform": "test", "torch": "x"},
        "wall_time_s": 2.5,
        "scenarios": {
            "trap": {
                "scenario": scenario,
                "methods": {"clip": summary([0.0, 0.2], 0.6), "band_upper": summary([0.8, 1.0], 0.85)},
                "all_methods_identical": False,
            }
        },
    }


def test_bandit_tables_from_synthetic_results() -> None:
    results = _synthetic_results()
    table = headline_table(results, "found", 2)
    assert table.splitlines()[0] == "| scenario | clip | band_upper |"
    assert table.splitlines()[2] == "| trap | 0.10 ± 0.10 | 0.90 ± 0.10 |"
    text = scenario_tables("trap", results["scenarios"]["trap"])
    rows = text.splitlines()
    assert rows[2] == "| clip | 0.10 ± 0.10 | >4 | 0.610 ± 0.010 | 0.20 ± 0.10 | 2.00/0.50 | 1.2 |"
    assert rows[3].startswith("| band_upper | 0.90 ± 0.10 | 3 | 0.860 ± 0.010 |")
    assert "| clip | 0.500/0.125 | 0.250/0.000 | – | 0.000/0.000 | 0.000/0.000 |" in text
    assert "| share of token-updates (clip) | 0.500 | 0.250 | 0.000 | 0.250 | 0.000 |" in text


def test_write_bandit_report_writes_markdown_and_png(tmp_path: Path) -> None:
    results = _synthetic_results()
    report = write_bandit_report(results, tmp_path)
    text = report.read_text()
    assert "## Scenario `trap`" in text and "![trap](bandit_trap.png)" in text
    assert "bit-identical trajectories: **no**" in text
    assert "| scenario | band_upper − clip |" in text
    # the same +0.80 on both seeds has no spread: no test, never a win (the same rule as the LM report)
    assert "| trap | +0.80 on every seed, n=2 (constant, no spread: not a test) |" in text
    assert STATS_RULE in text and "(0 tested)" in text
    width, height = png_size(tmp_path / "bandit_trap.png")
    assert width > 1000 and height > 300


def test_run_bandit_compare_end_to_end(tmp_path: Path) -> None:
    scenarios = [
        get_scenario("on_policy").replace(steps=3, contexts=2),
        get_scenario("trap").replace(steps=3, contexts=2),
    ]
    specs = parse_method_specs(["clip", "band"])
    messages: list[str] = []
    results = run_bandit_compare(scenarios, specs, [0, 1], tmp_path, progress=messages.append, svg=True)
    assert results["scenarios"]["on_policy"]["all_methods_identical"] is True
    stored = read_bandit_results(tmp_path / "results.json")
    assert set(stored["scenarios"]) == {"on_policy", "trap"}
    assert len(stored["scenarios"]["trap"]["methods"]["band"]["entropy"]) == 2  # seeds
    assert len(stored["scenarios"]["trap"]["methods"]["band"]["entropy"][0]) == 4  # steps + 1
    assert (tmp_path / "bandit_trap.svg").stat().st_size > 0
    assert any("band" in message for message in messages)


def test_read_bandit_results_names_what_is_wrong(tmp_path: Path) -> None:
    """--report-only on a folder holding another kind of results.json (a benchmark's) or a torn one gets an
    error naming the file and the problem, not a KeyError; the file `run_bandit_compare` writes reads back."""
    path = tmp_path / "results.json"
    good = _synthetic_results()
    path.write_text(json.dumps(good))
    assert read_bandit_results(path)["seeds"] == good["seeds"]
    cases = [
        ('{"task": "bandit", "seeds": [0', "not valid JSON"),
        (json.dumps({"command": "sums_learning", "arms": {}}), "task None, expected 'bandit'"),
        (json.dumps({**good, "seeds": []}), "'seeds' must be a non-empty list"),
        (json.dumps({**good, "scenarios": {}}), "'scenarios' must be a non-empty object"),
    ]
    trap = json.loads(json.dumps(good["scenarios"]["trap"]))
    del trap["methods"]["band_upper"]["entropy"]
    cases.append((json.dumps({**good, "scenarios": {"trap": trap}}), "method 'band_upper' lacks entropy"))
    one_seed = json.loads(json.dumps(good["scenarios"]["trap"]))
    one_seed["methods"]["clip"]["found"] = [0.5]
    cases.append((json.dumps({**good, "scenarios": {"trap": one_seed}}), "one value per seed \\(2\\)"))
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(ValueError, match=message) as error:
            read_bandit_results(path)
        assert str(path) in str(error.value)


def test_report_only_refuses_a_results_json_of_another_kind(tmp_path: Path, capsys) -> None:
    from bandpo.cli import main

    (tmp_path / "results.json").write_text(json.dumps({"command": "sums_learning", "arms": {}}))
    assert main(["compare", "--report-only", str(tmp_path)]) == 2
    assert "not the results.json of `bandpo compare --task bandit`" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()
