"""Power of a study's primary family under its decision rule, simulated from a comparison's per-seed records.

The rule is the preregistered one (`bandpo.experiments.confirmatory`): a cell is confirmed when the paired
t-test and the exact Wilcoxon signed-rank test both reject after Holm over the primary family. Each cell's
per-seed differences are read from per_seed.json files (one folder per task of the study, every record
checked against the study's settings) and studies of n seeds are simulated from them
(`bandpo.experiments.power`): by bootstrap when every cell has at least 8 observed seeds (it keeps the
differences' real shape and the correlation of cells on one seed), else normal with the observed spread (a
pilot of 3-4 seeds has too few values to resample). `--shrink` plans for effects smaller than observed.
The t-test-alone figure that the embedded study planned with is printed beside it.

    # the embedded study: as planned (its exploratory seeds) and as observed (its 24 seeds)
    python scripts/power_analysis.py docs/results/lm-countdown-8 docs/results/lm-reach-4 --ns 16 24 32
    python scripts/power_analysis.py docs/results/confirm-countdown-24 docs/results/confirm-reach-24 --ns 24
    # the real-model study's pilot (one folder: sums_mix)
    python scripts/power_analysis.py runs/pilot-smollm2 --study smollm2-sums-mix-plan --ns 8 12 16 24
    # one family of the plan's candidate cells (Holm over these four only)
    python scripts/power_analysis.py runs/pilot-smollm2 --study smollm2-sums-mix-plan --ns 8 11 \
        --cells band_upper-entropy band-entropy band_upper-pass_at_k band-pass_at_k
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folders", nargs="+", type=Path, help="one folder with per_seed.json per task of the study"
    )
    parser.add_argument(
        "--study", default="embedded-2026-12-03", help="a declared study (bandpo.experiments.studies)"
    )
    parser.add_argument("--ns", type=int, nargs="+", default=[16, 24, 32], help="seeds per task to simulate")
    parser.add_argument("--model", choices=("auto", "bootstrap", "normal"), default="auto")
    parser.add_argument("--shrink", type=float, nargs="+", default=[1.0, 0.75], help="effect x this factor")
    parser.add_argument("--draws", type=int, default=2000, help="simulated studies per n and shrink")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cells",
        nargs="+",
        help="the primary family to simulate, by cell name (default: all of the study's primary cells, or a "
        "plan's candidates); Holm runs over these cells only",
    )
    args = parser.parse_args(argv)

    from bandpo.experiments.power import BOOTSTRAP_MIN_SEEDS, cells_from_study, power_table
    from bandpo.experiments.studies import get_study

    study = get_study(args.study)
    cells_study = study
    if not study.primary:  # a plan: its cells are those the pilot will choose from (band_upper/band vs clip)
        from bandpo.experiments.studies import candidate_cells

        cells_study = candidate_cells(study)
    if len(args.folders) != len(study.tasks):
        parser.error(f"the study {study.name!r} needs {len(study.tasks)} folder(s): {' '.join(study.tasks)}")
    if args.cells:
        unknown = sorted(set(args.cells) - {cell.name for cell in cells_study.primary})
        if unknown:
            parser.error(f"--cells {unknown}: the study's cells are {[c.name for c in cells_study.primary]}")
        chosen = tuple(cell for cell in cells_study.primary if cell.name in args.cells)
        cells_study = dataclasses.replace(cells_study, primary=chosen)
    cells = cells_from_study(cells_study, dict(zip(study.tasks, args.folders, strict=True)))
    model = args.model
    if model == "auto":
        few = min(len(cell.differences) for cell in cells)
        model = "bootstrap" if few >= BOOTSTRAP_MIN_SEEDS else "normal"
    start = time.process_time()
    table = power_table(cells, args.ns, model=model, shrinks=args.shrink, draws=args.draws, seed=args.seed)
    print(
        f"study {study.name}, from {', '.join(map(str, args.folders))}; decision rule: paired t and exact Wilcoxon "
        f"both below 0.05 after Holm over {len(cells)} primary cells, in the effect's direction; {model} "
        f"simulation, {args.draws} studies per column, seed {args.seed}\n"
    )
    print(table)
    print(f"\n({time.process_time() - start:.0f} CPU s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
