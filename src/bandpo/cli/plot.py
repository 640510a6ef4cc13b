"""`bandpo plot bounds`: the paper's Fig. 1 (ratio bounds and probability margins against p) and Fig. 2 (the
clipping region over p and ratio) for any divergences and radii, beside clip, Clip-Higher and DCPO."""

from __future__ import annotations

import argparse
from pathlib import Path

FIGURES = ("bounds",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bandpo.methods import method_defaults_table

    band = method_defaults_table()["band"]  # the method's declared defaults, shown and used here
    parser.add_argument("figure", choices=FIGURES, help="what to plot: 'bounds' writes Fig. 1 and Fig. 2")
    parser.add_argument(
        "--divergence",
        nargs="+",
        default=[band["divergence"]],
        metavar="NAME",
        help=f"one or more registered divergences (default: {band['divergence']}; e.g. kl tv chi2)",
    )
    parser.add_argument(
        "--delta",
        nargs="+",
        type=float,
        default=[band["delta"]],
        metavar="DELTA",
        help=f"one or more radii (default: {band['delta']:g})",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("plots"), help="where to write (default: ./%(default)s)"
    )
    parser.add_argument("--svg", action="store_true", help="also write SVG files beside the PNGs")


def run(args: argparse.Namespace) -> int:
    from bandpo.experiments.bound_plots import plot_bounds
    from bandpo.training._atomic import check_writable

    check_writable(args.output_dir, "output_dir", "--output-dir")  # before any figure is drawn
    written = plot_bounds(args.divergence, args.delta, args.output_dir, svg=args.svg)
    for path in written:
        print(f"wrote {path}")
    return 0
