"""Every committed comparison under docs/results rebuilds from its own records, byte for byte.

`bandpo compare --report-only DIR` on a copy of each folder holding a per_seed.json must write the committed
report.md again, and `--confirmatory` the committed confirmatory.md: a change of the report code that would
silently change a published table (or a record it can no longer read) fails here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bandpo.cli import main

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
RECORDS = sorted(path.parent.name for path in RESULTS.glob("*/per_seed.json"))
IN_PROGRESS = {
    "confirm-smollm2": "smollm2-sums-mix"
}  # a preregistered study's records, no report before all seeds
COMPARISONS = [name for name in RECORDS if name not in IN_PROGRESS]


def test_the_committed_comparisons_are_found() -> None:
    assert {"confirm-countdown-24", "confirm-reach-24", "compare-smollm2-sums"} <= set(COMPARISONS)


def test_only_a_study_in_progress_has_records_without_a_report() -> None:
    """A folder of records without report.md is a preregistered study still running (its stopping rule: no
    report and no verdict before every seed is in), and the analysis indeed refuses it as incomplete."""
    from bandpo.experiments.confirmatory import read_study
    from bandpo.experiments.studies import get_study

    without_report = {name for name in RECORDS if not (RESULTS / name / "report.md").exists()}
    assert without_report == set(IN_PROGRESS)
    for name, study_name in IN_PROGRESS.items():
        study = get_study(study_name)
        with pytest.raises(ValueError, match="stopping rule"):
            read_study(study, {task: RESULTS / name for task in study.tasks})


@pytest.mark.parametrize("name", COMPARISONS)
def test_report_only_rebuilds_the_committed_report(name: str, tmp_path: Path) -> None:
    folder = shutil.copytree(RESULTS / name, tmp_path / name)
    (folder / "report.md").unlink()
    assert main(["compare", "--report-only", str(folder)]) == 0
    assert (folder / "report.md").read_bytes() == (RESULTS / name / "report.md").read_bytes()


def test_confirmatory_rebuilds_the_committed_analysis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(RESULTS.parents[1])  # the committed file names its inputs by their repository paths
    argv = [
        "compare",
        "--confirmatory",
        "docs/results/confirm-countdown-24",
        "docs/results/confirm-reach-24",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    expected = (RESULTS / "confirmatory" / "confirmatory.md").read_bytes()
    assert (tmp_path / "confirmatory.md").read_bytes() == expected
