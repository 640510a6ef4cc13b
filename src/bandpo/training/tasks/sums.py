"""The embedded task for a real pretrained model: Sums, small additions asked in plain English.

A prompt is ``"What is 47 + 8? Reply with only the number."`` (sent as one user message through the model's
chat template); the reward is 1 when the last number of the reply equals the sum (``"55"``, ``"47 + 8 = 55"``,
``"The answer is 55."`` and ``"55.0"`` all score 1), else 0. The verifier reads numbers, never the phrasing, and is exact
(integers).

Why this task: SmolLM2-135M-Instruct must sometimes, not always, get it right for RL to have a signal (the
group-relative advantage is 0 when all samples of a prompt agree). At temperature 1 it solves one-digit sums
``a + b`` (a, b in 1–9) in about one sample in five and two-digit-plus-one-digit sums ``a + b`` (a in 10–99,
b in 1–9) in about one in fourteen, so a half-and-half mix puts the held-out pass@8 near the middle of
[0, 1] (docs/models.md has the calibration). Asked for a ``\\boxed{}`` answer it almost never complies, and
two-digit-plus-two-digit sums it almost never gets right: both leave nothing to learn from. The answers are
a few tokens long, so a step is cheap on a CPU, and no sympy or math-verify is needed.

The embedded tiny model cannot read these prompts (its tokenizer knows digits and ``+-*|:`` only), so the
task has no warm-up: it needs ``--model``.

Held-out prompts are those whose text hashes (CRC-32) into the first `HELD_OUT_BUCKETS` of 100 buckets:
40 for one-digit sums (their pool holds only 81 prompts, so that evaluation can have 32 of them), 10 for
the 810 two-digit ones; training prompts come from the rest. Training and
evaluation prompts are half one-digit, half two-digit (order shuffled by the seed). Deterministic given the
seed (``random.Random`` seeded with a string; no global RNG).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

from bandpo.training.tasks.registry import EmbeddedTask, in_held_out_buckets

__all__ = [
    "COMPLETION_LENGTH",
    "HARD_SHARE",
    "HELD_OUT_BUCKETS",
    "TASK",
    "SumsProblem",
    "answer_key",
    "format_prompt",
    "is_correct",
    "is_held_out",
    "last_number",
    "parse_prompt",
    "sample_eval_problems",
    "sample_train_problems",
    "score",
]

HELD_OUT_BUCKETS: dict[bool, int] = {False: 40, True: 10}  # of 100, for one-digit (False) / two-digit sums
HARD_SHARE = 0.5  # of training and evaluation prompts have a two-digit first operand
COMPLETION_LENGTH = 16  # tokens: room for "The answer is 55." and a little more
ANSWER_LENGTH = 3  # characters of the longest sum, 99 + 9
_PROMPT = "What is {a} + {b}? Reply with only the number."
_PROMPT_PATTERN = re.compile(r"What is (\d+) \+ (\d+)\? Reply with only the number\.")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class SumsProblem:
    """One prompt: ``a + b``."""

    a: int
    b: int

    @property
    def prompt(self) -> str:
        return format_prompt(self.a, self.b)

    @property
    def answer(self) -> str:
        """The reference the verifier receives (the sum, as text)."""
        return str(self.a + self.b)

    @property
    def needs_rare(self) -> None:
        """Sums has no rare strategy (the field Countdown and Reach use for it)."""
        return None

    @property
    def hard(self) -> bool:
        return self.a >= 10


def format_prompt(a: int, b: int) -> str:
    return _PROMPT.format(a=a, b=b)


def parse_prompt(prompt: str) -> SumsProblem:
    """Inverse of `format_prompt` (found anywhere in the text); ValueError naming the expected format."""
    match = _PROMPT_PATTERN.search(prompt)
    if match is None:
        raise ValueError(f"not a Sums prompt: {prompt[-80:]!r}; expected {_PROMPT.format(a='A', b='B')!r}")
    return SumsProblem(a=int(match.group(1)), b=int(match.group(2)))


def last_number(text: str) -> float | None:
    """The last number written in `text` (thousands separators ignored), None when there is none."""
    found = _NUMBER.findall(text.replace(",", ""))
    return float(found[-1]) if found else None


def _reference(prompt: str, answer: str | None) -> int:
    if answer is not None and str(answer).strip():
        return int(str(answer).strip())
    problem = parse_prompt(prompt)
    return problem.a + problem.b


def is_correct(completion: str, problem: SumsProblem) -> bool:
    return last_number(completion) == problem.a + problem.b


def score(prompt: str, completion: str, answer: str | None) -> float:
    """Reward: 1 when the reply's last number equals the sum (given as `answer`, or read from the prompt)."""
    return 1.0 if last_number(completion) == _reference(prompt, answer) else 0.0


def answer_key(prompt: str, completion: str, answer: str | None) -> str:
    """Majority-vote key: the reply's last number (``"55"`` for 55 and 55.0)."""
    value = last_number(completion)
    if value is None:
        return f"invalid:{completion.strip()}"
    return str(int(value)) if value.is_integer() else str(value)


def is_held_out(prompt: str) -> bool:
    """Whether `prompt` belongs to the evaluation pool (stable across seeds, Python versions and runs)."""
    return in_held_out_buckets(prompt, HELD_OUT_BUCKETS[parse_prompt(prompt).hard])


@lru_cache(maxsize=1)
def _pools() -> dict[tuple[bool, bool], tuple[SumsProblem, ...]]:
    """(held_out, hard) -> every problem of that pool, in a fixed order."""
    pools: dict[tuple[bool, bool], list[SumsProblem]] = {
        key: [] for key in ((False, False), (False, True), (True, False), (True, True))
    }
    for a in range(1, 100):
        for b in range(1, 10):
            problem = SumsProblem(a=a, b=b)
            pools[(is_held_out(problem.prompt), problem.hard)].append(problem)
    return {key: tuple(values) for key, values in pools.items()}


def _hard_flags(count: int, rng: random.Random) -> list[bool]:
    flags = [index < round(count * HARD_SHARE) for index in range(count)]
    rng.shuffle(flags)
    return flags


def sample_train_problems(count: int, *, seed: int) -> list[SumsProblem]:
    """RL training prompts, half one-digit and half two-digit, never from the held-out pool."""
    rng = random.Random(f"sums-train-{seed}")
    pools = _pools()
    return [rng.choice(pools[(False, hard)]) for hard in _hard_flags(count, rng)]


def sample_eval_problems(count: int, *, seed: int) -> list[SumsProblem]:
    """Distinct held-out prompts, half one-digit and half two-digit."""
    rng = random.Random(f"sums-eval-{seed}")
    pools = _pools()
    flags = _hard_flags(count, rng)
    for hard in (False, True):
        needed, available = sum(flag == hard for flag in flags), len(pools[(True, hard)])
        if needed > available:
            most = 2 * min(len(pools[(True, False)]), len(pools[(True, True)]))
            raise ValueError(
                f"eval_prompts={count} is more than the held-out pool of the sums task can supply; use at most "
                f"{most}"
            )
    picked = {hard: rng.sample(pools[(True, hard)], sum(f == hard for f in flags)) for hard in (False, True)}
    return [picked[hard].pop() for hard in flags]


TASK = EmbeddedTask(
    name="sums",
    sample_train_problems=sample_train_problems,
    sample_eval_problems=sample_eval_problems,
    is_held_out=is_held_out,
    score=score,
    answer_key=answer_key,
    answer_length=ANSWER_LENGTH,
    completion_length=COMPLETION_LENGTH,
)
