"""Sums at mixed operand shapes, for a study on a real model: a held-out pool of more than a thousand prompts.

The prompts, the verifier and the answers are Sums' (`bandpo.training.tasks.sums`: ``"What is 47 + 8? Reply
with only the number."``, reward 1 when the reply's last number is the sum). What differs is where the prompts
come from: Sums holds out at most 56 prompts, too few for an evaluation whose noise is small beside the
seed-to-seed spread, and SmolLM2's held-out pass@8 after 20 RL steps is already 0.83–0.88 there. This task
draws from four operand shapes (`SHAPES`), each with its own held-out share, so that

- the held-out pool holds 1,308 prompts (`held_out_pool`), disjoint from the training pool (a prompt's
  shape and CRC-32 decide its side, the same in every run, seed and Python version), so an evaluation of
  256 distinct prompts (at most 260: the one-digit sums are the scarce shape) is possible;
- the mix of shapes, the same for training and evaluation prompts, puts the held-out pass@8 of
  SmolLM2-135M-Instruct before RL inside [0.3, 0.6] at temperature 0.7 (0.469 on 64 prompts; at 1.0 it is
  0.281, just below), with room above it for RL: one-digit sums, which it solves in most groups of 8 samples,
  are a quarter of the prompts, and the sums with a two-digit operand, which it solves in far fewer, the rest
  (`benchmarks/sums_mix_calibration.py`; docs/models.md has the measurements).

The one-digit sums are few (81), so most of them (82 of 100 buckets: 65 prompts) are held out and the
training prompts of that shape repeat a pool of 16; the other shapes hold out 25% (two-digit plus
one-digit, either order) and 10% (two-digit plus two-digit).

Deterministic given the seed (``random.Random`` seeded with a string; no global RNG).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from bandpo.training.tasks import sums
from bandpo.training.tasks.registry import EmbeddedTask, in_held_out_buckets
from bandpo.training.tasks.sums import COMPLETION_LENGTH, SumsProblem, parse_prompt

__all__ = [
    "COMPLETION_LENGTH",
    "SHAPES",
    "TASK",
    "Shape",
    "held_out_pool",
    "is_held_out",
    "sample_eval_problems",
    "sample_train_problems",
    "shape_of",
]


@dataclass(frozen=True)
class Shape:
    """Additions ``a + b`` with `a` in `first` and `b` in `second`; `held_out` of 100 CRC-32 buckets of their
    prompts are held out; `share` of the training and evaluation prompts have this shape."""

    name: str
    first: range
    second: range
    held_out: int
    share: float

    def contains(self, problem: SumsProblem) -> bool:
        return problem.a in self.first and problem.b in self.second


ONE, TWO = range(1, 10), range(10, 100)
SHAPES: tuple[Shape, ...] = (
    Shape("1+1", ONE, ONE, held_out=82, share=0.25),  # 81 prompts: 65 held out, so 64 of 256 can be evaluated
    Shape("2+1", TWO, ONE, held_out=25, share=0.25),  # 810 prompts
    Shape("1+2", ONE, TWO, held_out=25, share=0.125),  # 810 prompts
    Shape("2+2", TWO, TWO, held_out=10, share=0.375),  # 8,100 prompts
)


def shape_of(problem: SumsProblem) -> Shape:
    """The shape a problem belongs to; ValueError when it is none of `SHAPES`."""
    for shape in SHAPES:
        if shape.contains(problem):
            return shape
    raise ValueError(f"{problem.a} + {problem.b} is none of the shapes {[s.name for s in SHAPES]}")


def is_held_out(prompt: str) -> bool:
    """Whether `prompt` belongs to the evaluation pool (stable across seeds, Python versions and runs)."""
    return in_held_out_buckets(prompt, shape_of(parse_prompt(prompt)).held_out)


@lru_cache(maxsize=1)
def _pools() -> dict[tuple[bool, str], tuple[SumsProblem, ...]]:
    """(held_out, shape name) -> every problem of that pool, in a fixed order."""
    pools: dict[tuple[bool, str], list[SumsProblem]] = {}
    for shape in SHAPES:
        for held_out in (False, True):
            pools[(held_out, shape.name)] = []
        for a in shape.first:
            for b in shape.second:
                problem = SumsProblem(a=a, b=b)
                pools[(is_held_out(problem.prompt), shape.name)].append(problem)
    return {key: tuple(values) for key, values in pools.items()}


def held_out_pool() -> list[SumsProblem]:
    """Every held-out problem, shape by shape."""
    return [problem for shape in SHAPES for problem in _pools()[(True, shape.name)]]


def _shape_counts(count: int) -> dict[str, int]:
    """How many of `count` prompts each shape gets (its share, rounded; the largest shape takes the rest)."""
    counts = {shape.name: round(count * shape.share) for shape in SHAPES[:-1]}
    counts[SHAPES[-1].name] = count - sum(counts.values())
    return counts


def _shuffled_shapes(count: int, rng: random.Random) -> list[str]:
    names = [name for name, n in _shape_counts(count).items() for _ in range(n)]
    rng.shuffle(names)
    return names


def sample_train_problems(count: int, *, seed: int) -> list[SumsProblem]:
    """RL training prompts in the shapes' shares, never from the held-out pool."""
    rng = random.Random(f"sums-mix-train-{seed}")
    pools = _pools()
    return [rng.choice(pools[(False, name)]) for name in _shuffled_shapes(count, rng)]


def sample_eval_problems(count: int, *, seed: int) -> list[SumsProblem]:
    """Distinct held-out prompts in the shapes' shares (the order shuffled by the seed)."""
    rng = random.Random(f"sums-mix-eval-{seed}")
    pools = _pools()
    counts = _shape_counts(count)
    for shape in SHAPES:
        available = len(pools[(True, shape.name)])
        if counts[shape.name] > available:
            most = min(int(len(pools[(True, s.name)]) / s.share) for s in SHAPES)
            raise ValueError(
                f"eval_prompts={count} is more than the held-out pool of the sums_mix task can supply in its "
                f"shares (shape {shape.name}: {available} prompts); use at most {most}"
            )
    picked = {shape.name: rng.sample(pools[(True, shape.name)], counts[shape.name]) for shape in SHAPES}
    return [picked[name].pop() for name in _shuffled_shapes(count, rng)]


TASK = EmbeddedTask(
    name="sums_mix",
    sample_train_problems=sample_train_problems,
    sample_eval_problems=sample_eval_problems,
    is_held_out=is_held_out,
    score=sums.score,  # Sums' verifier: the prompts are Sums'
    answer_key=sums.answer_key,
    answer_length=sums.ANSWER_LENGTH,
    completion_length=COMPLETION_LENGTH,
)
