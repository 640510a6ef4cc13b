"""`bandpo plot bounds`: the paper's Fig. 1 (ratio bounds and probability margins against p) and Fig. 2 (the
clipping region over p and ratio) for any divergences and radii, beside clip, Clip-Higher and DCPO."""

from __future__ import annotations

import argparse
from pathlib import Path

FIGURES = ("bounds",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("figure", choices=FIGURES, help="what to plot: 'bounds' writes Fig. 1 and Fig. 2")
    parser.add_argument(
        "--divergence",
        nargs="+",
        default=["kl"],
        metavar="NAME",
        help="one or more registered divergences (default: kl; e.g. kl tv chi2)",
    )
    parser.add_argument(
        "--delta",
        nargs="+",
        type=float,
        default=[0.05],
        metavar="DELTA",
        help="one or more radii (default: 0.05)",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("plots"), help="where to write (default: ./plots)"
    )
    parser.add_argument("--svg", action="store_true", help="also write SVG files beside the PNGs")


def run(args: argparse.Namespace) -> int:
    from bandpo._atomic import check_writable
    from bandpo.experiments.bound_plots import plot_bounds

    check_writable(args.output_dir, "output_dir", "--output-dir")  # before any figure is drawn
    written = plot_bounds(args.divergence, args.delta, args.output_dir, svg=args.svg)
    for path in written:
        print(f"wrote {path}")
    return 0
