"""The embedded task: Countdown-3, a synthetic verifiable task with many correct answers.

A prompt gives three digits and a target, e.g. ``"347|019:"``; a correct answer is an expression
``"d o d o d"`` that uses the three digits once each, in any order, with operators from ``+ - *`` and the
usual precedence, and equals the target: ``"3*4+7"`` or ``"4*3+7"`` or ``"7+3*4"`` ... (no spaces, so every
answer is five characters). Rewards are exact (integer arithmetic).

Why this task (docs/experiments.md, "The embedded tasks"): a prompt has several valid answers, and the
warm-up set makes one operator rare. Warm-up examples come from ``+ -`` expressions, except a fraction
``rare_fraction`` (about 1%) from full ``+ - *`` expressions, and their answers prefer ``+ -``-only
solutions. RL and evaluation prompts come from full ``+ - *`` expressions, so roughly half of them *need*
``*`` (no ``+ -``-only solution exists) while the warmed-up policy almost never writes it: the rare,
high-advantage tokens the paper is about.

Held-out prompts never appear in training: a prompt belongs to the held-out pool when a stable hash (CRC-32)
of its text falls in the first ``HELD_OUT_BUCKETS`` of 100 buckets; training and warm-up prompts are drawn
from the rest. The split depends on the prompt text only, so it holds for every seed.

Everything here is deterministic given the seed (``random.Random(seed)``; no global RNG).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from bandpo.training.tasks.registry import EmbeddedTask, in_held_out_buckets

__all__ = [
    "ALPHABET",
    "ANSWER_LENGTH",
    "HELD_OUT_BUCKETS",
    "OPERATORS",
    "RARE_OPERATOR",
    "TASK",
    "CountdownProblem",
    "DigitsProblem",
    "answer_key",
    "evaluate_expression",
    "format_prompt",
    "is_correct",
    "is_held_out",
    "make_problem",
    "parse_prompt",
    "sample_check_problems",
    "sample_eval_problems",
    "sample_train_problems",
    "sample_warmup_examples",
    "score",
    "solutions",
]

OPERATORS: tuple[str, ...] = ("+", "-", "*")
RARE_OPERATOR = "*"
ALPHABET: tuple[str, ...] = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "-", "*", "|", ":")
ANSWER_LENGTH = 5
HELD_OUT_BUCKETS = 10  # of 100: about 10% of all prompts are reserved for evaluation
MAX_TARGET = 999


@dataclass(frozen=True)
class DigitsProblem:
    """A prompt of the digit tasks (Countdown, Reach): digits and a target, ``xyz|ttt:``.

    Subclasses give `solutions` (every correct answer, sorted); the prompt and `needs_rare` follow from it.
    """

    digits: tuple[int, ...]
    target: int

    @property
    def prompt(self) -> str:
        return format_prompt(self.digits, self.target)

    @property
    def solutions(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def needs_rare(self) -> bool:
        """True when every correct answer uses the rare operator ``*``."""
        return all(RARE_OPERATOR in s for s in self.solutions)


@dataclass(frozen=True)
class CountdownProblem(DigitsProblem):
    """One prompt: three digits and a target, with every correct answer precomputed."""

    digits: tuple[int, int, int]

    @property
    def solutions(self) -> tuple[str, ...]:
        """Every distinct correct answer, sorted."""
        return solutions(self.digits, self.target)


def format_prompt(digits: Sequence[int], target: int) -> str:
    """``xyz|ttt:``: the digits, a bar, the target in three digits, a colon (Countdown's and Reach's)."""
    return "".join(map(str, digits)) + f"|{target:03d}:"


def parse_prompt(prompt: str) -> CountdownProblem:
    """Inverse of `format_prompt`; raises ValueError naming the expected format."""
    text = prompt.strip()
    if len(text) != 8 or text[3] != "|" or text[7] != ":" or not (text[:3] + text[4:7]).isdigit():
        raise ValueError(
            f"not a Countdown prompt: {prompt!r}; expected 'xyz|ttt:' (three digits, a 3-digit target)"
        )
    return CountdownProblem(digits=(int(text[0]), int(text[1]), int(text[2])), target=int(text[4:7]))


def evaluate_expression(expression: str) -> int | None:
    """Value of ``"d o d o d"`` with ``*`` binding tighter than ``+ -``; None when malformed."""
    if len(expression) != ANSWER_LENGTH:
        return None
    a, op1, b, op2, c = expression
    if not (a.isdigit() and b.isdigit() and c.isdigit()) or op1 not in OPERATORS or op2 not in OPERATORS:
        return None
    x, y, z = int(a), int(b), int(c)
    if op2 == "*" and op1 != "*":
        yz = y * z
        return x + yz if op1 == "+" else x - yz
    left = {"+": x + y, "-": x - y, "*": x * y}[op1]
    return {"+": left + z, "-": left - z, "*": left * z}[op2]


@lru_cache(maxsize=65536)
def solutions(digits: tuple[int, int, int], target: int) -> tuple[str, ...]:
    """All distinct correct answers for `digits` and `target` (at most 6 orders x 9 operator pairs)."""
    found = set()
    for order in itertools.permutations(digits):
        for op1, op2 in itertools.product(OPERATORS, repeat=2):
            expression = f"{order[0]}{op1}{order[1]}{op2}{order[2]}"
            if evaluate_expression(expression) == target:
                found.add(expression)
    return tuple(sorted(found))


def is_correct(completion: str, problem: CountdownProblem) -> bool:
    """Exact check: the completion (surrounding whitespace ignored) is one of the problem's answers."""
    expression = completion.strip()
    if len(expression) != ANSWER_LENGTH or sorted(expression[0::2]) != sorted(str(d) for d in problem.digits):
        return False
    return evaluate_expression(expression) == problem.target


def is_held_out(prompt: str) -> bool:
    """Whether `prompt` belongs to the evaluation pool (stable across seeds, Python versions and runs)."""
    return in_held_out_buckets(prompt, HELD_OUT_BUCKETS)


def _random_expression(rng: random.Random, operators: tuple[str, ...]) -> tuple[tuple[int, int, int], int]:
    """Random digits 1-9 and the value of a random expression over them (non-negative, <= MAX_TARGET)."""
    while True:
        digits = (rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9))
        op1, op2 = rng.choice(operators), rng.choice(operators)
        value = evaluate_expression(f"{digits[0]}{op1}{digits[1]}{op2}{digits[2]}")
        if value is not None and 0 <= value <= MAX_TARGET:
            return digits, value


def make_problem(
    rng: random.Random, *, operators: tuple[str, ...] = OPERATORS, held_out: bool
) -> CountdownProblem:
    """Draw one problem from expressions over `operators`, from the held-out pool or from the training pool."""
    while True:
        digits, target = _random_expression(rng, operators)
        problem = CountdownProblem(digits=digits, target=target)
        if is_held_out(problem.prompt) == held_out:
            return problem


def sample_train_problems(count: int, *, seed: int) -> list[CountdownProblem]:
    """RL training prompts: full ``+ - *`` expressions, never from the held-out pool."""
    rng = random.Random(f"countdown-train-{seed}")
    return [make_problem(rng, held_out=False) for _ in range(count)]


def sample_check_problems(count: int, *, seed: int) -> list[CountdownProblem]:
    """Prompts of the RL distribution for the warm-up's accuracy checks (training pool)."""
    return [
        make_problem(random.Random(f"countdown-warmup-check-{seed}-{i}"), held_out=False)
        for i in range(count)
    ]


@lru_cache(maxsize=1)
def held_out_pool_size() -> int:
    """How many distinct held-out prompts exist: every digit triple and operator pair, enumerated."""
    prompts = set()
    for digits in itertools.product(range(1, 10), repeat=3):
        for op1, op2 in itertools.product(OPERATORS, repeat=2):
            value = evaluate_expression(f"{digits[0]}{op1}{digits[1]}{op2}{digits[2]}")
            if value is not None and 0 <= value <= MAX_TARGET:
                prompt = CountdownProblem(digits=digits, target=value).prompt
                if is_held_out(prompt):
                    prompts.add(prompt)
    return len(prompts)


def sample_eval_problems(count: int, *, seed: int) -> list[CountdownProblem]:
    """Held-out evaluation prompts: distinct, full ``+ - *`` expressions, from the held-out pool only."""
    available = held_out_pool_size()
    if count > available:
        raise ValueError(
            f"eval_prompts={count} is more than the held-out pool can supply ({available} distinct prompts); "
            f"use at most {available}"
        )
    rng = random.Random(f"countdown-eval-{seed}")
    problems: list[CountdownProblem] = []
    seen: set[str] = set()
    for _ in range(count * 1000):
        problem = make_problem(rng, held_out=True)
        if problem.prompt not in seen:
            seen.add(problem.prompt)
            problems.append(problem)
            if len(problems) == count:
                return problems
    raise ValueError(
        f"eval_prompts={count} is more than the held-out pool can supply ({len(problems)} distinct prompts); "
        f"use at most {len(problems)}"
    )


def sample_warmup_examples(
    count: int, *, seed: int, rare_fraction: float
) -> list[tuple[CountdownProblem, str]]:
    """Supervised warm-up pairs (problem, answer) with a biased prior: ``*`` is rare.

    A fraction `rare_fraction` of the problems comes from full ``+ - *`` expressions, the rest from ``+ -``
    expressions. Each answer is drawn uniformly among the problem's ``+ -``-only solutions when there are any
    (so the demonstrated answers are diverse), else among all its solutions.
    """
    rng = random.Random(f"countdown-warmup-{seed}")
    examples = []
    for _ in range(count):
        operators = OPERATORS if rng.random() < rare_fraction else ("+", "-")
        problem = make_problem(rng, operators=operators, held_out=False)
        plain = [s for s in problem.solutions if RARE_OPERATOR not in s]
        examples.append((problem, rng.choice(plain or list(problem.solutions))))
    return examples


def _problem(prompt: str, answer: str | None) -> CountdownProblem:
    return parse_prompt(answer if answer else prompt[-8:])


def score(prompt: str, completion: str, answer: str | None) -> float:
    """Reward: 1 when the completion is a correct answer to the prompt (given as `answer`, or the prompt's end)."""
    return 1.0 if is_correct(completion, _problem(prompt, answer)) else 0.0


def answer_key(prompt: str, completion: str, answer: str | None) -> str:
    """Majority-vote key: the value of a well-formed expression of the given digits, so that every correct
    expression of one prompt shares the key ``str(target)``."""
    problem = _problem(prompt, answer)
    expression = completion.strip()
    value = evaluate_expression(expression)
    uses_digits = sorted(expression[0::2]) == sorted(str(d) for d in problem.digits)
    return str(value) if value is not None and uses_digits else f"invalid:{expression}"


TASK = EmbeddedTask(
    name="countdown",
    sample_train_problems=sample_train_problems,
    sample_eval_problems=sample_eval_problems,
    is_held_out=is_held_out,
    score=score,
    answer_key=answer_key,
    answer_length=ANSWER_LENGTH,
    rare_marker=RARE_OPERATOR,
    sample_warmup_examples=sample_warmup_examples,
    sample_check_problems=sample_check_problems,
)
