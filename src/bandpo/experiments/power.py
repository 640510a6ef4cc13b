"""Power of a study's primary family under its real decision rule, by simulation from per-seed differences.

A preregistered cell is confirmed when the paired t-test and the exact Wilcoxon signed-rank test both reject
after Holm over the primary family (`confirmatory`). The power of that rule is what a study must plan for:
the t-test alone at the strictest Holm step, with an effect size read from a few exploratory seeds, is
optimistic (the embedded study planned P2 at d 0.87 and power 0.90; its 24 seeds showed d 0.70).

Each simulated study draws n seeds per task and applies the rule to every primary cell at once:

- ``bootstrap``: n seeds drawn with replacement from the observed seeds, the rows of all cells of a task
  together (so the correlation between cells of one seed, which Holm's ordering feels, is kept), each cell's
  differences centred and moved to `shrink` x its observed mean. It keeps the real shape of the differences
  (skew, the zeros and ties of pass@k) that decides the Wilcoxon test. It needs enough observed seeds to
  stand for their distribution: 8 or more.
- ``normal``: independent normal differences with each cell's observed standard deviation and `shrink` x
  its observed mean. For a pilot of 3-4 seeds, whose few values a bootstrap would repeat (ties the real data
  would not have, and a spread too small by sqrt((n-1)/n)).

A cell's power is the share of simulated studies in which it is confirmed in the direction of its effect.
`shrink` < 1 plans for an effect smaller than observed (the observed one is selected by the data that
suggested it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bandpo.experiments.confirmatory import cell_differences, read_study
from bandpo.experiments.stats import (
    ALPHA,
    holm_adjust,
    student_t_quantile,
    t_two_sided_p,
    wilcoxon_signed_rank_p,
)
from bandpo.experiments.studies import Study

__all__ = ["CellData", "cells_from_study", "power_table", "simulate_power", "t_only_power", "wilcoxon_p"]

MODELS = ("bootstrap", "normal")
BOOTSTRAP_MIN_SEEDS = 8


@dataclass(frozen=True)
class CellData:
    """One primary cell: its name, task and observed per-seed differences (aligned by seed within a task)."""

    name: str
    task: str
    differences: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.differences) / len(self.differences)

    @property
    def sd(self) -> float:
        m = self.mean
        return math.sqrt(sum((d - m) ** 2 for d in self.differences) / (len(self.differences) - 1))

    @property
    def d(self) -> float:
        """The standardised effect, mean / s.d."""
        return self.mean / self.sd if self.sd > 0 else math.inf


def wilcoxon_p(differences: torch.Tensor) -> float:
    """`stats.wilcoxon_signed_rank_p` (exact, zeros dropped, mid-ranks for ties), with the count of sign
    patterns vectorised; the same value to rounding (tested against it), for up to 60 nonzero differences."""
    nonzero = differences[differences != 0.0]
    n = nonzero.numel()
    if n == 0:
        return 1.0
    if n > 60:  # 2**n no longer fits the int64 counts
        return wilcoxon_signed_rank_p(nonzero.tolist())
    magnitudes = nonzero.abs().tolist()
    order = sorted(range(n), key=lambda i: magnitudes[i])
    doubled = [0] * n  # 2 x mid-rank: an integer even with ties
    start = 0
    while start < n:
        stop = start
        while stop + 1 < n and magnitudes[order[stop + 1]] == magnitudes[order[start]]:
            stop += 1
        for position in range(start, stop + 1):
            doubled[order[position]] = start + stop + 2
        start = stop + 1
    total = sum(doubled)
    counts = torch.zeros(total + 1, dtype=torch.int64)  # counts[w]: sign patterns with doubled W+ = w
    counts[0] = 1
    for rank in doubled:
        counts[rank:] += counts[: total + 1 - rank].clone()
    positive = nonzero.gt(0).tolist()
    observed = sum(rank for rank, up in zip(doubled, positive, strict=True) if up)
    distance = abs(2 * observed - total)
    w = torch.arange(total + 1)
    extreme = int(counts[(2 * w - total).abs() >= distance].sum())
    return min(1.0, extreme / 2.0**n)


def _t_p(differences: torch.Tensor) -> float:
    n = differences.numel()
    mean, sd = float(differences.mean()), float(differences.std())
    if sd <= 1e-12 * max(1.0, abs(mean)):
        return 1.0  # the same value on every seed: no spread, not a test (as the report treats it)
    return t_two_sided_p(mean / (sd / math.sqrt(n)), n - 1)


def simulate_power(
    cells: Sequence[CellData],
    n: int,
    *,
    model: str = "bootstrap",
    shrink: float = 1.0,
    draws: int = 2000,
    seed: int = 0,
    alpha: float = ALPHA,
) -> dict[str, float]:
    """{cell name: power} of the decision rule (paired t and exact Wilcoxon both rejecting after Holm over
    `cells`, in the direction of the cell's effect) at `n` seeds per task; see the module docstring."""
    if model not in MODELS:
        raise ValueError(f"model {model!r}: use one of {MODELS}")
    if n < 2:
        raise ValueError(f"n {n}: the tests need at least 2 seeds")
    if model == "bootstrap":
        few = [c.name for c in cells if len(c.differences) < BOOTSTRAP_MIN_SEEDS]
        if few:
            raise ValueError(
                f"cells {few} have fewer than {BOOTSTRAP_MIN_SEEDS} observed seeds: a bootstrap would repeat their "
                "few values; use model='normal'"
            )
    generator = torch.Generator().manual_seed(random.Random(f"power-{seed}").getrandbits(63))
    tasks = sorted({cell.task for cell in cells})
    seeds_of = {task: len(next(c for c in cells if c.task == task).differences) for task in tasks}
    confirmed = dict.fromkeys((cell.name for cell in cells), 0)
    for _ in range(draws):
        rows = {task: torch.randint(0, seeds_of[task], (n,), generator=generator) for task in tasks}  # (n,)
        samples = []
        for cell in cells:
            if model == "bootstrap":
                observed = torch.tensor(cell.differences, dtype=torch.float64)
                sample = observed[rows[cell.task]] - cell.mean + shrink * cell.mean  # (n,)
            else:
                noise = torch.randn(n, generator=generator, dtype=torch.float64)  # (n,)
                sample = shrink * cell.mean + cell.sd * noise
            samples.append(sample)
        adjusted_t = holm_adjust([_t_p(sample) for sample in samples])
        adjusted_w = holm_adjust([wilcoxon_p(sample) for sample in samples])
        for cell, sample, p_t, p_w in zip(cells, samples, adjusted_t, adjusted_w, strict=True):
            right_way = math.copysign(1.0, float(sample.mean())) == math.copysign(1.0, cell.mean)
            if p_t < alpha and p_w < alpha and right_way:
                confirmed[cell.name] += 1
    return {name: count / draws for name, count in confirmed.items()}


def t_only_power(cell: CellData, n: int, family: int, *, draws: int = 20_000, seed: int = 0) -> float:
    """The power the embedded study planned with: the paired t-test alone at alpha / family, normal
    differences at the observed d. Reported beside `simulate_power` to show how far apart they are."""
    generator = torch.Generator().manual_seed(random.Random(f"t-only-{seed}").getrandbits(63))
    critical = student_t_quantile(1 - ALPHA / family / 2, n - 1)
    samples = torch.randn(draws, n, generator=generator, dtype=torch.float64) + cell.d  # (draws, n)
    t = samples.mean(dim=1) / (samples.std(dim=1) / math.sqrt(n))
    return float((t.abs() > critical).double().mean())


def power_table(
    cells: Sequence[CellData],
    ns: Sequence[int],
    *,
    model: str,
    shrinks: Sequence[float],
    draws: int,
    seed: int = 0,
) -> str:
    """A Markdown table: each cell's observed effect and its power under the decision rule at each n and
    shrink, beside the t-alone figure the embedded study planned with (at the first n, shrink 1)."""
    results = {
        (n, shrink): simulate_power(cells, n, model=model, shrink=shrink, draws=draws, seed=seed)
        for shrink in shrinks
        for n in ns
    }
    headers = ["cell", "observed mean (s.d.), n", "d", f"t alone at {ALPHA}/{len(cells)}, n={ns[0]}"]
    headers += [f"rule, n={n}, effect x{shrink:g}" for shrink in shrinks for n in ns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for cell in cells:
        row = [
            cell.name,
            f"{cell.mean:+.4f} ({cell.sd:.4f}), {len(cell.differences)}",
            f"{cell.d:+.2f}",
            f"{t_only_power(cell, ns[0], len(cells), seed=seed):.2f}",
        ]
        row += [f"{results[(n, shrink)][cell.name]:.2f}" for shrink in shrinks for n in ns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def cells_from_study(study: Study, folders: Mapping[str, Path]) -> list[CellData]:
    """The primary cells of `study` with their per-seed differences read from `{task: folder}` (every record
    checked against the study; every complete seed used)."""
    seeds_by_task, _ = read_study(study, folders, stopping_rule=False)
    return [
        CellData(cell.name, cell.task, tuple(cell_differences(cell, seeds_by_task[cell.task])))
        for cell in study.primary
    ]
