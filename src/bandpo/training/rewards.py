"""Verifiable rewards, and the guard that keeps a failing reward from stopping a run.

Two verifiers ship:

- ``countdown``: the embedded task (`bandpo.training.task`); 1 when the completion is a correct expression.
- ``math``: math-verify equivalence between the completion's final answer and the reference. The final answer
  is the last ``\\boxed{...}`` of the completion, else the text after the last ``Answer:`` (the DAPO prompt
  format); a completion with neither scores 0. The reference may be plain (DAPO-Math: ``"34"``), a MATH
  solution with ``\\boxed{}``, or a GSM8K solution ending in ``#### 72``.

`GuardedReward` wraps a verifier as a TRL reward function. A sample whose verifier raises or runs longer than
``timeout_s`` scores 0 and is counted (`metric_names.REWARD_ERRORS`, per generation batch); the run goes on.
On the main thread the timeout is a ``SIGALRM`` timer that interrupts the verifier; elsewhere the verifier
runs in a daemon thread that is abandoned on timeout (Python cannot kill a thread).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bandpo import metric_names as mn
from bandpo.training import reach, task

__all__ = [
    "REWARDS",
    "GuardedReward",
    "RewardTimeout",
    "Verifier",
    "completion_text",
    "extract_final_answer",
    "get_verifier",
]


class RewardTimeout(Exception):
    """A verifier ran longer than its time limit."""


@dataclass(frozen=True)
class Verifier:
    """A task's checker: `score` gives the reward, `answer_key` the answer that majority voting counts."""

    name: str
    score: Callable[[str, str, str | None], float]
    answer_key: Callable[[str, str, str | None], str]


def completion_text(value: Any) -> str:
    """The text of a TRL prompt or completion: a string, or the content of the last chat message."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        content = value[-1].get("content", "")
        if isinstance(content, list):  # content blocks
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return str(value)


# --- countdown -------------------------------------------------------------------------------------


def _countdown_problem(prompt: str, answer: str | None) -> task.CountdownProblem:
    return task.parse_prompt(answer if answer else prompt[-8:])


def _countdown_score(prompt: str, completion: str, answer: str | None) -> float:
    return 1.0 if task.is_correct(completion, _countdown_problem(prompt, answer)) else 0.0


def _countdown_key(prompt: str, completion: str, answer: str | None) -> str:
    """Votes count values: every correct expression of one prompt shares the key ``str(target)``."""
    problem = _countdown_problem(prompt, answer)
    expression = completion.strip()
    value = task.evaluate_expression(expression)
    uses_digits = sorted(expression[0::2]) == sorted(str(d) for d in problem.digits)
    return str(value) if value is not None and uses_digits else f"invalid:{expression}"


# --- math ------------------------------------------------------------------------------------------

_ANSWER_LINE = re.compile(r"Answer\s*:\s*(.+)", re.IGNORECASE)


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (balanced braces), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for index in range(brace, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : index]
    return None


def extract_final_answer(text: str) -> str | None:
    """The final answer of a completion or reference: last ``\\boxed{}``, else after ``####`` or ``Answer:``."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        return tail.splitlines()[0].strip().replace(",", "") if tail else None
    matches = _ANSWER_LINE.findall(text)
    if matches:
        return matches[-1].strip().rstrip(".").strip("$ ").strip() or None
    return None


def _math_parse(answer: str) -> Any:
    from math_verify import parse

    parsed = parse(f"${answer}$", parsing_timeout=None)
    return parsed if parsed else parse(answer, parsing_timeout=None)


def _reference_answer(answer: str | None) -> str:
    if answer is None or not str(answer).strip():
        raise ValueError("the math reward needs a non-empty 'answer' for every prompt")
    text = str(answer)
    extracted = extract_final_answer(text) if ("\\boxed" in text or "####" in text) else None
    return extracted if extracted is not None else text.strip()


def _math_score(prompt: str, completion: str, answer: str | None) -> float:
    from math_verify import verify

    predicted = extract_final_answer(completion)
    if predicted is None:
        return 0.0
    gold = _math_parse(_reference_answer(answer))
    return 1.0 if verify(gold, _math_parse(predicted), timeout_seconds=None) else 0.0


def _math_key(prompt: str, completion: str, answer: str | None) -> str:
    predicted = extract_final_answer(completion)
    if predicted is None:
        return "invalid:"
    parsed = _math_parse(predicted)
    return str(parsed[0]) if parsed else predicted


REWARDS: dict[str, Verifier] = {
    "countdown": Verifier("countdown", _countdown_score, _countdown_key),
    "reach": Verifier("reach", reach.score, reach.answer_key),
    "math": Verifier("math", _math_score, _math_key),
}


def get_verifier(name: str) -> Verifier:
    if name not in REWARDS:
        raise ValueError(f"reward={name!r} is unknown; use one of {sorted(REWARDS)}")
    if name == "math":
        try:
            import math_verify  # noqa: F401
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("the math reward needs math-verify: pip install 'bandpo[train]'") from error
        logging.getLogger("math_verify").setLevel(logging.ERROR)
    return REWARDS[name]


# --- the guard -------------------------------------------------------------------------------------


def _call_with_timeout(function: Callable[[], float], timeout_s: float | None) -> float:
    if timeout_s is None or timeout_s <= 0:
        return function()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):

        def on_alarm(signum: int, frame: Any) -> None:
            raise RewardTimeout(f"reward ran longer than {timeout_s} s")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            return function()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = function()
        except BaseException as error:  # re-raised in the caller's thread
            box["error"] = error

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise RewardTimeout(f"reward ran longer than {timeout_s} s")
    if "error" in box:
        raise box["error"]
    return float(box["value"])


class GuardedReward:
    """A TRL reward function around a per-sample scorer; failures and timeouts score 0 and are counted.

    Args:
        score: ``score(prompt, completion, answer) -> float``.
        timeout_s: time limit per sample (None or 0: no limit).
        answer_column: dataset column passed to `score` as ``answer`` (missing: None).
        name: reported by TRL as the reward's name.
    """

    def __init__(
        self,
        score: Callable[[str, str, str | None], float],
        *,
        timeout_s: float | None = 5.0,
        answer_column: str = "answer",
        name: str = "reward",
    ) -> None:
        self.score = score
        self.timeout_s = timeout_s
        self.answer_column = answer_column
        self.__name__ = name
        self.errors_total = 0
        self.samples_total = 0
        self.last_error: str | None = None

    def score_one(self, prompt: Any, completion: Any, answer: Any) -> tuple[float, bool]:
        """(reward, failed) for one sample."""
        prompt_text, completion_text_ = completion_text(prompt), completion_text(completion)
        answer_text = None if answer is None else str(answer)
        try:
            value = float(
                _call_with_timeout(
                    lambda: self.score(prompt_text, completion_text_, answer_text), self.timeout_s
                )
            )
        except Exception as error:  # any failure of a user's verifier: score 0, count it, go on
            self.last_error = f"{type(error).__name__}: {error}"
            return 0.0, True
        if value != value or value in (float("inf"), float("-inf")):
            self.last_error = f"non-finite reward {value}"
            return 0.0, True
        return value, False

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        answers = kwargs.get(self.answer_column) or [None] * len(prompts)
        rewards, errors = [], 0
        for prompt, completion, answer in zip(prompts, completions, answers, strict=True):
            value, failed = self.score_one(prompt, completion, answer)
            rewards.append(value)
            errors += int(failed)
        self.errors_total += errors
        self.samples_total += len(rewards)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric(mn.REWARD_ERRORS, float(errors))
            log_metric(mn.TRAIN_ACCURACY, sum(r >= 1.0 for r in rewards) / max(len(rewards), 1))
        return rewards
