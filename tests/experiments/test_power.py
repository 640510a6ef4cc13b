"""Power by simulation under the preregistered decision rule (`bandpo.experiments.power`), checked on the
embedded study's committed records: planned (its exploratory seeds) against observed (its 24 seeds)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bandpo.experiments.power import CellData, cells_from_study, simulate_power, t_only_power, wilcoxon_p
from bandpo.experiments.stats import wilcoxon_signed_rank_p
from bandpo.experiments.studies import EMBEDDED_STUDY

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"


def test_the_vectorised_wilcoxon_is_the_exact_one() -> None:
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 30)
        values = [rng.choice([0.0, 0.25, -0.25, 0.5, -1.0, rng.gauss(0, 1)]) for _ in range(n)]  # ties, zeros
        expected = wilcoxon_signed_rank_p(values)
        assert wilcoxon_p(torch.tensor(values, dtype=torch.float64)) == pytest.approx(
            expected, rel=1e-12, abs=1e-15
        )


def _cells(countdown: str, reach: str) -> dict[str, CellData]:
    cells = cells_from_study(EMBEDDED_STUDY, {"countdown": RESULTS / countdown, "reach": RESULTS / reach})
    return {cell.name: cell for cell in cells}


def test_p2_planned_against_observed() -> None:
    planned = _cells("lm-countdown-8", "lm-reach-4")
    observed = _cells("confirm-countdown-24", "confirm-reach-24")
    assert len(planned["P2"].differences) == 8 and len(observed["P2"].differences) == 24
    assert planned["P2"].d == pytest.approx(0.87, abs=0.005) and observed["P2"].d == pytest.approx(
        0.70, abs=0.005
    )
    # the figure the preregistration stated (t alone at 0.05/6, normal, n = 24) and the same at the observed d
    assert t_only_power(planned["P2"], 24, 6) == pytest.approx(0.90, abs=0.02)
    assert t_only_power(observed["P2"], 24, 6) == pytest.approx(0.72, abs=0.03)
    # on the new seeds alone (n = 16), where the tests disagreed, the t-test alone had about even odds
    assert t_only_power(observed["P2"], 16, 6) == pytest.approx(0.5, abs=0.07)
    # the real rule from the observed seeds (bootstrap): Holm's later steps and the Wilcoxon test weigh in
    rule = simulate_power(list(observed.values()), 24, model="bootstrap", draws=300)
    assert rule["P1"] > 0.95 and rule["P3"] < 0.3


def test_no_effect_is_rarely_confirmed() -> None:
    observed = list(_cells("confirm-countdown-24", "confirm-reach-24").values())
    null = simulate_power(observed, 24, model="bootstrap", shrink=0.0, draws=300, seed=1)
    assert max(null.values()) < 0.06  # every cell centred at 0: a confirmation is a false one


def test_a_pilot_of_few_seeds_is_not_bootstrapped() -> None:
    cells = list(_cells("lm-countdown-8", "lm-reach-4").values())  # reach has 4 seeds
    with pytest.raises(ValueError, match="use model='normal'"):
        simulate_power(cells, 16, model="bootstrap", draws=10)
    powers = simulate_power(cells, 16, model="normal", draws=50)
    assert set(powers) == {f"P{i}" for i in range(1, 7)}


def test_the_script_prints_both_figures() -> None:
    script = ROOT / "scripts" / "power_analysis.py"
    folders = [str(RESULTS / "confirm-countdown-24"), str(RESULTS / "confirm-reach-24")]
    done = subprocess.run(
        [sys.executable, str(script), *folders, "--ns", "24", "--draws", "50", "--shrink", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "bootstrap simulation" in done.stdout
    p2 = next(line for line in done.stdout.splitlines() if line.startswith("| P2 |"))
    assert "+0.70" in p2 and len(p2.split("|")) == 7  # cell, observed, d, t alone, one rule column


def test_the_script_simulates_the_family_named_by_cells() -> None:
    """--cells picks the family: Holm runs over those cells only, so the header counts them and no other
    cell is printed; a name the study does not declare is refused."""
    script = ROOT / "scripts" / "power_analysis.py"
    folders = [str(RESULTS / "confirm-countdown-24"), str(RESULTS / "confirm-reach-24")]
    options = ["--ns", "24", "--draws", "20", "--shrink", "1", "--cells"]

    def run(*cells: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), *folders, *options, *cells], capture_output=True, text=True
        )

    done = run("P1", "P5")
    assert done.returncode == 0, done.stderr
    assert "Holm over 2 primary cells" in done.stdout
    rows = [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| P")]
    assert rows == ["P1", "P5"]
    refused = run("P1", "P9")
    assert refused.returncode == 2 and "--cells ['P9']" in refused.stderr
