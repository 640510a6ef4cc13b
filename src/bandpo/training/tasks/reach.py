"""The second embedded task: Reach, build any expression of allowed digits that equals a target.

A prompt gives four allowed digits and a target, e.g. ``"2579|042:"``; a correct answer is any expression of
two or three of the allowed digits, each usable any number of times, joined by ``+ - *`` (usual precedence,
no spaces: ``"d o d"`` or ``"d o d o d"``) that equals 42: ``"7*5+7"``, ``"5*7+7"``, ``"7*7-7"`` ... Unlike
Countdown, the policy chooses which digits to use and how many (answers have two lengths), digits may repeat,
and a prompt often has tens of correct answers (`solutions`). A verifier checks the arithmetic (exact
integers), never the string.

Targets are 0–99. The rare strategy is multiplication, needed here mostly for size rather than for a
combination of given digits: sums and differences of at most three digits never exceed three times the largest
allowed digit, so a larger target (and a few others) has no ``+ -``-only solution. RL and evaluation prompts
are drawn so that exactly `RARE_SHARE`
of them need ``*`` (their order shuffled by the seed). The warm-up prior makes ``*`` rare: a fraction
``rare_fraction`` (1% by default) of its examples shows a ``*`` answer, eight in ten of them to a prompt that
``+ -`` also solves (``2*6`` for 12) and two in ten to a prompt that needs it; the others show a ``+ -``
answer. The warmed-up policy then writes ``*`` often on large targets but rarely a right product: on the
prompts that need ``*``, a right answer is a rare, high-advantage sample.

Held-out prompts are those whose text hashes (CRC-32) into the first `HELD_OUT_BUCKETS` of 100 buckets, as in
Countdown; training and warm-up prompts come from the rest. Everything is deterministic given the seed
(``random.Random`` seeded with a string; no global RNG).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from functools import lru_cache

from bandpo.training.tasks.countdown import (
    HELD_OUT_BUCKETS,
    OPERATORS,
    RARE_OPERATOR,
    DigitsProblem,
    format_prompt,
    is_held_out,
)
from bandpo.training.tasks.registry import EmbeddedTask

__all__ = [
    "DIGITS",
    "HELD_OUT_BUCKETS",
    "OPERATORS",
    "RARE_OPERATOR",
    "RARE_SHARE",
    "TASK",
    "ReachProblem",
    "answer_key",
    "evaluate_expression",
    "format_prompt",
    "is_correct",
    "is_held_out",
    "parse_prompt",
    "sample_check_problems",
    "sample_eval_problems",
    "sample_train_problems",
    "sample_warmup_examples",
    "score",
    "solutions",
]

DIGITS = "123456789"
RARE_SHARE = 0.5  # of RL and evaluation prompts need the rare operator
MAX_TARGET = 99
NEEDS_RARE_IN_RARE = 0.2  # of the warm-up's "*" examples answer a prompt that needs "*"
ANSWER_LENGTH = 5  # the longest answer, ``d o d o d``
ALLOWED = 4  # allowed digits per prompt
PROMPT_LENGTH = ALLOWED + 5  # ``abcd|ttt:``


@dataclass(frozen=True)
class ReachProblem(DigitsProblem):
    """One prompt: the allowed digits (distinct, increasing) and the target."""

    @property
    def solutions(self) -> tuple[str, ...]:
        """Every correct answer, sorted."""
        return solutions(self.digits, self.target)


def parse_prompt(prompt: str) -> ReachProblem:
    """Inverse of `format_prompt` (its last 9 characters); raises ValueError naming the expected format."""
    text = prompt.strip()[-PROMPT_LENGTH:]
    allowed, bar, target, colon = (
        text[:ALLOWED],
        text[ALLOWED : ALLOWED + 1],
        text[ALLOWED + 1 : -1],
        text[-1:],
    )
    if (
        len(text) != PROMPT_LENGTH
        or bar != "|"
        or colon != ":"
        or not target.isdigit()
        or any(d not in DIGITS for d in allowed)
        or sorted(set(allowed)) != list(allowed)
    ):
        raise ValueError(
            f"not a Reach prompt: {prompt!r}; expected 'abcd|ttt:' (4 increasing digits 1-9, a 3-digit target)"
        )
    return ReachProblem(digits=tuple(int(d) for d in allowed), target=int(target))


def evaluate_expression(expression: str) -> int | None:
    """Value of ``d o d`` or ``d o d o d`` (digits 1-9, ``*`` before ``+ -``); None when malformed."""
    if len(expression) not in (3, 5):
        return None
    digits, operators = expression[0::2], expression[1::2]
    if any(d not in DIGITS for d in digits) or any(op not in OPERATORS for op in operators):
        return None
    terms, signs = [int(digits[0])], []
    for op, digit in zip(operators, digits[1:], strict=True):  # fold products first, then + and -
        if op == "*":
            terms[-1] *= int(digit)
        else:
            signs.append(op)
            terms.append(int(digit))
    value = terms[0]
    for sign, term in zip(signs, terms[1:], strict=True):
        value = value + term if sign == "+" else value - term
    return value


@lru_cache(maxsize=256)
def _expressions_by_value(digits: tuple[int, ...]) -> dict[int, tuple[str, ...]]:
    """Every answer over the allowed `digits` (for 4 digits: 48 of two terms, 576 of three), grouped by value."""
    table: dict[int, list[str]] = {}
    symbols = [str(d) for d in digits]
    for count in (2, 3):
        for chosen in itertools.product(symbols, repeat=count):
            for ops in itertools.product(OPERATORS, repeat=count - 1):
                expression = chosen[0] + "".join(op + d for op, d in zip(ops, chosen[1:], strict=True))
                table.setdefault(evaluate_expression(expression), []).append(expression)
    return {value: tuple(sorted(found)) for value, found in table.items()}


@lru_cache(maxsize=65536)
def solutions(digits: tuple[int, ...], target: int) -> tuple[str, ...]:
    """All correct answers: the expressions over the allowed `digits` that equal `target`."""
    return _expressions_by_value(tuple(digits)).get(target, ())


def is_correct(completion: str, problem: ReachProblem) -> bool:
    """Arithmetic check: a well-formed expression of allowed digits that equals the target."""
    expression = completion.strip()
    value = evaluate_expression(expression)
    allowed = {str(d) for d in problem.digits}
    return value == problem.target and set(expression[0::2]) <= allowed


@lru_cache(maxsize=1)
def _pools() -> dict[tuple[bool, bool], tuple[ReachProblem, ...]]:
    """Every solvable prompt with a target in 0..MAX_TARGET, by (held out, needs the rare operator)."""
    pools: dict[tuple[bool, bool], list[ReachProblem]] = {
        key: [] for key in itertools.product((False, True), repeat=2)
    }
    for digits in itertools.combinations(range(1, 10), ALLOWED):
        for target in sorted(v for v in _expressions_by_value(digits) if 0 <= v <= MAX_TARGET):
            problem = ReachProblem(digits=digits, target=target)
            pools[(is_held_out(problem.prompt), problem.needs_rare)].append(problem)
    return {key: tuple(problems) for key, problems in pools.items()}


def _rare_flags(count: int, rng: random.Random, share: float) -> list[bool]:
    """Exactly round(share * count) True, in an order shuffled by `rng`."""
    rare = round(share * count)
    flags = [True] * rare + [False] * (count - rare)
    rng.shuffle(flags)
    return flags


def sample_train_problems(count: int, *, seed: int) -> list[ReachProblem]:
    """RL training prompts, never from the held-out pool; exactly `RARE_SHARE` of them need ``*``."""
    rng = random.Random(f"reach-train-{seed}")
    pools = _pools()
    return [rng.choice(pools[(False, rare)]) for rare in _rare_flags(count, rng, RARE_SHARE)]


def sample_check_problems(count: int, *, seed: int) -> list[ReachProblem]:
    """Prompts of the RL distribution for the warm-up's accuracy checks (training pool)."""
    rng = random.Random(f"reach-warmup-check-{seed}")
    pools = _pools()
    return [rng.choice(pools[(False, rare)]) for rare in _rare_flags(count, rng, RARE_SHARE)]


def sample_eval_problems(count: int, *, seed: int) -> list[ReachProblem]:
    """Distinct held-out prompts; exactly `RARE_SHARE` of them need ``*``."""
    rng = random.Random(f"reach-eval-{seed}")
    pools = _pools()
    flags = _rare_flags(count, rng, RARE_SHARE)
    for rare in (False, True):
        needed, available = flags.count(rare), len(pools[(True, rare)])
        if needed > available:
            raise ValueError(
                f"eval_prompts={count} needs {needed} held-out Reach prompts with needs_rare={rare}, the pool has "
                f"{available}; use eval_prompts <= {int(available / max(RARE_SHARE, 1 - RARE_SHARE))}"
            )
    draws = {rare: iter(rng.sample(pools[(True, rare)], flags.count(rare))) for rare in (False, True)}
    return [next(draws[rare]) for rare in flags]


def sample_warmup_examples(count: int, *, seed: int, rare_fraction: float) -> list[tuple[ReachProblem, str]]:
    """Supervised warm-up pairs (problem, answer) with a biased prior: ``*`` is rare.

    A fraction `rare_fraction` of the examples shows a ``*`` answer: most of those to a prompt that ``+ -``
    also solves (``2*6`` for 12), `NEEDS_RARE_IN_RARE` of them to a prompt that needs ``*``. The
    other examples come from prompts with a ``+ -``-only solution and show one, drawn uniformly so that the
    demonstrated answers are diverse.
    """
    rng = random.Random(f"reach-warmup-{seed}")
    pools = _pools()
    examples = []
    for _ in range(count):
        if rng.random() < rare_fraction:
            needs = rng.random() < NEEDS_RARE_IN_RARE
            candidates = pools[(False, needs)]
            while True:  # a prompt with a "*" solution (every prompt that needs "*" has one)
                problem = rng.choice(candidates)
                shown = [s for s in problem.solutions if RARE_OPERATOR in s]
                if shown:
                    break
        else:
            problem = rng.choice(pools[(False, False)])
            shown = [s for s in problem.solutions if RARE_OPERATOR not in s]
        examples.append((problem, rng.choice(shown)))
    return examples


def score(prompt: str, completion: str, answer: str | None) -> float:
    """Reward: 1 when the completion is a correct answer to the prompt (given as `answer`, or the prompt's end)."""
    return 1.0 if is_correct(completion, parse_prompt(answer if answer else prompt)) else 0.0


def answer_key(prompt: str, completion: str, answer: str | None) -> str:
    """Majority-vote key: the value of a well-formed expression of allowed digits, so that every correct answer
    of one prompt shares the key ``str(target)``."""
    problem = parse_prompt(answer if answer else prompt)
    expression = completion.strip()
    value = evaluate_expression(expression)
    allowed = {str(d) for d in problem.digits}
    return str(value) if value is not None and set(expression[0::2]) <= allowed else f"invalid:{expression}"


TASK = EmbeddedTask(
    name="reach",
    sample_train_problems=sample_train_problems,
    sample_eval_problems=sample_eval_problems,
    is_held_out=is_held_out,
    score=score,
    answer_key=answer_key,
    answer_length=ANSWER_LENGTH,
    rare_marker=RARE_OPERATOR,
    sample_warmup_examples=sample_warmup_examples,
    sample_check_problems=sample_check_problems,
    version=5,  # 2: targets 0-99; 3-5: 1, 3, then 2 in 10 of the warm-up's "*" examples need it
)
