"""The embedded tasks, by name: what the warm-up, training and evaluation need from each.

- ``countdown`` (`bandpo.training.tasks.countdown`, the default): three given digits, use each once.
- ``reach`` (`bandpo.training.tasks.reach`): four allowed digits, any two or three of them, repeats allowed.
- ``sums`` (`bandpo.training.tasks.sums`): small additions in plain English, for a real pretrained model
  (``--model smollm2-135m-instruct``); it has no warm-up, since the tiny model cannot read it.
- ``sums_mix`` (`bandpo.training.tasks.sums_mix`): the same prompts and verifier at four operand shapes, with a
  held-out pool of over a thousand prompts: the task of the real-model study.

Countdown and Reach use the same character alphabet (`countdown.ALPHABET`), so the same tokenizer and tiny model,
and make the multiplication operator the rare strategy that a known share of prompts needs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bandpo.training.tasks import countdown, reach, sums, sums_mix

__all__ = ["EMBEDDED_TASKS", "EmbeddedTask", "get_task"]

EMBEDDED_TASKS: tuple[str, ...] = ("countdown", "reach", "sums", "sums_mix")


@dataclass(frozen=True)
class EmbeddedTask:
    """The functions of one embedded task; problems have `.prompt` and `.needs_rare`, and `.answer` when the
    verifier's reference is not the prompt itself."""

    name: str
    rare_marker: str | None  # substring of a completion that uses the rare strategy (None: no such strategy)
    answer_length: int  # characters of the longest answer
    sample_train_problems: Callable[..., list[Any]]  # (count, *, seed)
    sample_eval_problems: Callable[..., list[Any]]  # (count, *, seed)
    # (count, *, seed, rare_fraction); None: no warm-up, the task needs a pretrained --model
    sample_warmup_examples: Callable[..., list[tuple[Any, str]]] | None
    sample_check_problems: Callable[..., list[Any]] | None  # (count, *, seed): the warm-up's accuracy checks
    is_correct: Callable[[str, Any], bool]
    # bump when the task's prompts or warm-up examples change: it enters the warm-up cache key
    version: int = 1
    completion_length: int = 8  # default max_completion_length (tokens) of a run on this task

    @property
    def needs_pretrained(self) -> bool:
        """True when the embedded tiny model cannot do the task (no warm-up): a run needs ``--model``."""
        return self.sample_warmup_examples is None


def _countdown_check_problems(count: int, *, seed: int) -> list[countdown.CountdownProblem]:
    return [
        countdown.make_problem(random.Random(f"countdown-warmup-check-{seed}-{i}"), held_out=False)
        for i in range(count)
    ]


_TASKS: dict[str, EmbeddedTask] = {
    "countdown": EmbeddedTask(
        name="countdown",
        rare_marker=countdown.RARE_OPERATOR,
        answer_length=countdown.ANSWER_LENGTH,
        sample_train_problems=countdown.sample_train_problems,
        sample_eval_problems=countdown.sample_eval_problems,
        sample_warmup_examples=countdown.sample_warmup_examples,
        sample_check_problems=_countdown_check_problems,
        is_correct=countdown.is_correct,
    ),
    "reach": EmbeddedTask(
        name="reach",
        rare_marker=reach.RARE_OPERATOR,
        answer_length=reach.ANSWER_LENGTH,
        sample_train_problems=reach.sample_train_problems,
        sample_eval_problems=reach.sample_eval_problems,
        sample_warmup_examples=reach.sample_warmup_examples,
        sample_check_problems=reach.sample_check_problems,
        is_correct=reach.is_correct,
        version=5,  # 2: targets 0-99; 3-5: 1, 3, then 2 in 10 of the warm-up's "*" examples need it
    ),
    "sums": EmbeddedTask(
        name="sums",
        rare_marker=None,
        answer_length=3,
        sample_train_problems=sums.sample_train_problems,
        sample_eval_problems=sums.sample_eval_problems,
        sample_warmup_examples=None,
        sample_check_problems=None,
        is_correct=sums.is_correct,
        completion_length=sums.COMPLETION_LENGTH,
    ),
    "sums_mix": EmbeddedTask(
        name="sums_mix",
        rare_marker=None,
        answer_length=3,
        sample_train_problems=sums_mix.sample_train_problems,
        sample_eval_problems=sums_mix.sample_eval_problems,
        sample_warmup_examples=None,
        sample_check_problems=None,
        is_correct=sums.is_correct,
        completion_length=sums_mix.COMPLETION_LENGTH,
    ),
}


def get_task(name: str) -> EmbeddedTask:
    """The embedded task called `name`; ValueError listing the valid names otherwise."""
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(
            f"task={name!r} is not an embedded task; use one of {list(EMBEDDED_TASKS)}"
        ) from None
