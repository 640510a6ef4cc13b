"""What a task is, and the registry of tasks by name.

A task is one `EmbeddedTask`, declared by its own module (``TASK``) with everything about it: its prompts
(training, evaluation, warm-up), its held-out split and its verifier. `bandpo.training.tasks` registers the
shipped ones; a new task is a module that declares its ``TASK`` and one `register_task` call
(docs/experiments.md, "Adding a task"). Every reader (data, evaluation, rewards, warm-up, config) asks the
registry; none lists task names.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EmbeddedTask",
    "Verifier",
    "get_task",
    "in_held_out_buckets",
    "reference_answer",
    "register_task",
    "task_names",
]

Score = Callable[[str, str, str | None], float]  # (prompt, completion, answer) -> reward
AnswerKey = Callable[[str, str, str | None], str]  # (prompt, completion, answer) -> majority-vote key


@dataclass(frozen=True)
class Verifier:
    """A task's checker: `score` gives the reward, `answer_key` the answer that majority voting counts."""

    name: str
    score: Score
    answer_key: AnswerKey


def in_held_out_buckets(prompt: str, buckets: int) -> bool:
    """Whether the CRC-32 of `prompt` falls in the first `buckets` of 100: a split that depends on the text
    only, so it is the same for every seed, run and Python version."""
    return zlib.crc32(prompt.encode()) % 100 < buckets


def reference_answer(problem: Any) -> str:
    """What the verifier receives as ``answer`` for a task's problem: its `.answer`, else its prompt."""
    return getattr(problem, "answer", problem.prompt)


@dataclass(frozen=True, kw_only=True)
class EmbeddedTask:
    """One task: its prompts, held-out split and verifier.

    Problems have `.prompt` and `.needs_rare` (None: the task has no rare strategy), and `.answer` when the
    verifier's reference is not the prompt itself (`reference_answer`). `sample_train_problems` and
    `sample_check_problems` draw only prompts that `is_held_out` rejects, `sample_eval_problems` only
    prompts it accepts.
    """

    name: str
    sample_train_problems: Callable[..., list[Any]]  # (count, *, seed)
    sample_eval_problems: Callable[..., list[Any]]  # (count, *, seed): distinct held-out prompts
    is_held_out: Callable[[str], bool]  # the split: True for a prompt of the evaluation pool
    score: Score  # the verifier's reward, 1.0 for a correct completion
    answer_key: AnswerKey  # the verifier's majority-vote key: equal for answers that agree
    answer_length: int  # characters of the longest answer
    rare_marker: str | None = (
        None  # substring of a completion that uses the rare strategy (None: no such strategy)
    )
    # (count, *, seed, rare_fraction); None: no warm-up, the task needs a pretrained --model
    sample_warmup_examples: Callable[..., list[tuple[Any, str]]] | None = None
    sample_check_problems: Callable[..., list[Any]] | None = None  # (count, *, seed): the warm-up's checks
    # bump when the task's prompts or warm-up examples change: it enters the warm-up cache key
    version: int = 1
    completion_length: int = 8  # default max_completion_length (tokens) of a run on this task

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(
                f"task name {self.name!r} is not snake_case; use lowercase letters, digits and _"
            )
        if (self.sample_warmup_examples is None) != (self.sample_check_problems is None):
            raise ValueError(
                f"task {self.name!r}: give both sample_warmup_examples and sample_check_problems (a warm-up) "
                "or neither (the task needs a pretrained --model)"
            )

    @property
    def verifier(self) -> Verifier:
        """The task's `Verifier`, as rewards and evaluation take it."""
        return Verifier(self.name, self.score, self.answer_key)

    @property
    def needs_pretrained(self) -> bool:
        """True when the embedded tiny model cannot do the task (no warm-up): a run needs ``--model``."""
        return self.sample_warmup_examples is None

    def is_correct(self, completion: str, problem: Any) -> bool:
        """Whether `completion` solves `problem`: the verifier's reward is 1."""
        return self.score(problem.prompt, completion, reference_answer(problem)) == 1.0


_REGISTRY: dict[str, EmbeddedTask] = {}


def register_task(task: EmbeddedTask) -> EmbeddedTask:
    """Make `task` selectable by name (``--task``, ``--reward``); a name already taken is refused."""
    if not isinstance(task, EmbeddedTask):
        raise TypeError(f"register_task takes an EmbeddedTask, got {type(task).__name__}")
    if task.name in _REGISTRY:
        raise ValueError(
            f"task {task.name!r} is already registered; pick another name (registered: {list(_REGISTRY)})"
        )
    _REGISTRY[task.name] = task
    return task


def task_names() -> tuple[str, ...]:
    """Registered task names, in registration order."""
    return tuple(_REGISTRY)


def get_task(name: str) -> EmbeddedTask:
    """The registered task called `name`; ValueError listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"task={name!r} is not an embedded task; use one of {list(_REGISTRY)}") from None
