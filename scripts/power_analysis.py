"""Power of the paired t-test for the preregistered confirmatory cells (docs/experiments.md).

For each cell, the standardised paired effect d = mean / s.d. of the per-seed differences observed in the
exploratory runs (docs/results/lm-countdown-8, lm-reach-4), and the power of a two-sided paired t-test at the
Bonferroni level alpha / family (the strictest step of Holm) for n seeds, at d and at d / 2, by simulation
(normal differences, 20,000 draws, fixed seed). Run: `.venv/bin/python scripts/power_analysis.py`.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import torch

from bandpo.experiments.stats import student_t_quantile

ROOT = Path(__file__).resolve().parent.parent
CELLS = [  # (results folder, arm, reference, metric)
    ("lm-countdown-8", "band_upper", "clip", "eval/entropy"),
    ("lm-countdown-8", "band_upper", "clip", "eval/pass_at_k"),
    ("lm-countdown-8", "band", "clip", "eval/entropy"),
    ("lm-reach-4", "band_upper", "clip", "eval/entropy"),
    ("lm-reach-4", "band_upper", "clip", "eval/pass_at_k"),
    ("lm-reach-4", "band", "clip", "eval/entropy"),
]
FAMILY = 6
ALPHA = 0.05
DRAWS = 20_000


def observed_d(folder: str, arm: str, reference: str, metric: str) -> tuple[float, int]:
    runs = json.loads((ROOT / "docs" / "results" / folder / "per_seed.json").read_text())["runs"]
    after = {(run["label"], run["seed"]): run["after"][metric] for run in runs}
    seeds = sorted({seed for label, seed in after if label == arm})
    differences = [after[(arm, seed)] - after[(reference, seed)] for seed in seeds]
    return statistics.mean(differences) / statistics.stdev(differences), len(differences)


def power(d: float, n: int, alpha: float, generator: torch.Generator) -> float:
    critical = student_t_quantile(1 - alpha / 2, n - 1)
    samples = torch.randn(DRAWS, n, generator=generator, dtype=torch.float64) + d  # (draws, n)
    t = samples.mean(dim=1) / (samples.std(dim=1) / math.sqrt(n))
    return float((t.abs() > critical).double().mean())


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    alpha = ALPHA / FAMILY
    print(f"two-sided paired t at alpha {ALPHA}/{FAMILY} = {alpha:.5f}; power by simulation, {DRAWS} draws")
    print("| cell | observed d (n) | power n=16 | n=24 | n=32 | n=24 at d/2 |")
    print("|---|---|---|---|---|---|")
    for folder, arm, reference, metric in CELLS:
        d, n_observed = observed_d(folder, arm, reference, metric)
        powers = [power(d, n, alpha, generator) for n in (16, 24, 32)]
        half = power(d / 2, 24, alpha, generator)
        cells = " | ".join(f"{p:.2f}" for p in powers)
        print(f"| {folder} {arm} - {reference} {metric} | {d:+.2f} ({n_observed}) | {cells} | {half:.2f} |")


if __name__ == "__main__":
    main()
