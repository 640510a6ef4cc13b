"""`bandpo bounds`: print Band's ratio interval and probability margins beside clip and Clip-Higher.

Example: `bandpo bounds --divergence kl --delta 0.05 --p 0.01 0.08 0.5 0.9`. The margins are the largest
absolute moves of the token's probability the bound allows: p·(upper − 1) upward and p·(1 − lower) downward.
A fixed clip allows ε·p, which vanishes for rare tokens; Band's KL margin stays near δ.
"""

from __future__ import annotations

import argparse
import math

import torch

from bandpo.methods import method_defaults_table

DEFAULT_P = (0.001, 0.01, 0.08, 0.2, 0.5, 0.9, 0.99)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    band = method_defaults_table()["band"]  # the method's declared defaults, shown and used here
    parser.add_argument(
        "--divergence",
        default=band["divergence"],
        help=f"a registered divergence (kl, tv, chi2, ..., or alpha:<a>); default {band['divergence']}",
    )
    parser.add_argument(
        "--delta",
        type=float,
        default=band["delta"],
        help=f"trust-region radius δ > 0 (default {band['delta']:g})",
    )
    parser.add_argument(
        "--p",
        type=float,
        nargs="+",
        default=list(DEFAULT_P),
        metavar="P",
        help=f"old token probabilities in (0, 1] (default {' '.join(map(str, DEFAULT_P))})",
    )


def run(args: argparse.Namespace) -> int:
    from bandpo.band import band_bounds, get_divergence

    for p in args.p:
        if not (0 < p <= 1) or math.isnan(p):
            raise ValueError(f"--p values must be probabilities in (0, 1], got {p!r}")
    divergence = get_divergence(args.divergence)
    p = torch.tensor(args.p, dtype=torch.float64)
    bounds = band_bounds(torch.log(p), delta=args.delta, divergence=divergence)
    lower, upper = bounds.lower.tolist(), bounds.upper.tolist()

    defaults = method_defaults_table()
    clip_low, clip_high = defaults["clip"]["eps_low"], defaults["clip"]["eps_high"]
    eps_low, eps_high = defaults["clip_higher"]["eps_low"], defaults["clip_higher"]["eps_high"]
    print(f"Band-{divergence.name} bounds, delta = {args.delta:g} (exact interval, no cap)")
    print(
        "ratio interval [lower, upper]; margins = largest change of the token's probability: "
        "up = p·(upper − 1), down = p·(1 − lower)"
    )
    header = (
        f"{'p':>8} | {'lower':>8} {'upper':>10} | {'band up':>8} {'band down':>9} | "
        f"{'clip up':>8} {'clip down':>9} | {'CH up':>8} {'CH down':>8}"
    )
    print(header)
    print("-" * len(header))
    for prob, low, up in zip(args.p, lower, upper, strict=True):
        room = 1 - prob  # a probability cannot rise above 1
        print(
            f"{prob:8.4g} | {low:8.4g} {up:10.5g} | {prob * (up - 1):8.4f} {prob * (1 - low):9.4f} | "
            f"{min(clip_high * prob, room):8.4f} {clip_low * prob:9.4f} | "
            f"{min(eps_high * prob, room):8.4f} {eps_low * prob:8.4f}"
        )
    print(
        f"clip: ratio in [{1 - clip_low:g}, {1 + clip_high:g}]; Clip-Higher (CH): [{1 - eps_low:g}, {1 + eps_high:g}]"
    )
    return 0
