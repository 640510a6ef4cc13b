"""Verifiable rewards, and the guard that keeps a failing reward from stopping a run.

A reward is a `Verifier`, found by name (`get_verifier`, the names `reward_names`):

- each registered task's own (`bandpo.training.tasks`: ``countdown``, ``reach``, ``sums``, ...), declared with
  the task's prompts and split;
- ``math``, for a ``--dataset`` (its default): math-verify equivalence between the completion's final answer
  and the reference. The final answer is the last ``\\boxed{...}`` of the completion, else the text after the
  last ``Answer:`` (the DAPO prompt format); a completion with neither scores 0. The reference may be plain
  (DAPO-Math: ``"34"``), a MATH solution with ``\\boxed{}``, or a GSM8K solution ending in ``#### 72``.

`GuardedReward` wraps a verifier as a TRL reward function. A sample whose verifier raises or runs longer than
``timeout_s`` scores 0 and is counted (`metric_names.REWARD_ERRORS`, per generation batch); the run goes on.
The verifier runs in a worker process that is killed when a sample overruns, so a hung verifier (sympy
expanding ``10^{10^{10}}``, a C extension, a ``try/except Exception`` around the work) costs one
``timeout_s`` and leaves nothing running; the common path pays one round trip per batch. The worker dies with
its parent, however the parent ends (`_worker_main`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from bandpo import metric_names as mn
from bandpo.integrations.math_dapo import last_boxed
from bandpo.training._lifetime import die_with_parent, watch_parent
from bandpo.training.tasks import Verifier, get_task, task_names

__all__ = [
    "ANSWER_COLUMN",
    "DATASET_REWARD",
    "REWARD_CHECK_STEPS",
    "REWARD_TIMEOUT_S",
    "GuardedReward",
    "RewardFailure",
    "RewardTimeout",
    "Verifier",
    "check_rewards_work",
    "completion_text",
    "extract_final_answer",
    "get_verifier",
    "reward_names",
]


class RewardTimeout(Exception):
    """A verifier ran longer than its time limit."""


class RewardFailure(ValueError):
    """Every reward failed: the run would train on zeros (a wrong ``--reward`` for the dataset, say)."""


# a run stops when every sample of its first REWARD_CHECK_STEPS RL steps failed to score
REWARD_CHECK_STEPS = 2


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


# --- math ------------------------------------------------------------------------------------------

_ANSWER_LINE = re.compile(r"Answer\s*:\s*(.+)", re.IGNORECASE)


def extract_final_answer(text: str) -> str | None:
    """The final answer of a completion or reference: last ``\\boxed{}``, else after ``####`` or ``Answer:``."""
    boxed = last_boxed(text)
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


_MATH = Verifier("math", _math_score, _math_key)
REWARD_TIMEOUT_S: float = 5.0
"""Seconds one sample's reward may take (a timeout scores 0 and is counted): ``reward_timeout_s``'s default."""
ANSWER_COLUMN: str = "answer"
"""The column (and reward keyword) holding a prompt's reference answer: ``answer_column``'s default."""
DATASET_REWARD: str = _MATH.name
"""The reward of a run on a ``--dataset`` that names none."""


def reward_names() -> tuple[str, ...]:
    """The valid ``--reward`` values: every registered task's verifier, and ``math``."""
    return (*task_names(), _MATH.name)


def get_verifier(name: str) -> Verifier:
    """The verifier called `name` (a registered task's, or ``math``); ValueError listing the valid names."""
    if name == _MATH.name:
        try:
            import math_verify  # noqa: F401
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("the math reward needs math-verify: pip install 'bandpo[train]'") from error
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        return _MATH
    if name not in task_names():
        raise ValueError(f"reward={name!r} is unknown; use one of {sorted(reward_names())}")
    return get_task(name).verifier


# --- the guard -------------------------------------------------------------------------------------

# how long a fresh worker process may take to start before the guard gives up (not a per-sample limit)
WORKER_START_TIMEOUT_S = 120.0
Sample = tuple[str, str, str | None]


def _worker_main(
    score: Callable[[str, str, str | None], float],
    connection: Any,
    parent_end: Any,
    parent_pid: int,
    pdeathsig: bool,
) -> None:
    """The worker's loop: receive a batch of samples, send back one ``(index, value, error)`` per sample.

    The worker dies with its parent, however the parent ends: the kernel kills it (Linux parent-death
    signal, armed when the parent started it from its main thread), a thread exits it once it is orphaned
    (elsewhere, or while the scorer hangs), and the parent's end of the pipe, inherited by the fork, is
    closed here so that a dead parent reads as end-of-file.
    """
    if parent_end is not None:
        parent_end.close()
    if pdeathsig:
        die_with_parent(parent_pid)
    watch_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which stops the worker
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler (`bandpo.training._lifetime`)
    connection.send(("ready", None, None))
    while True:
        try:
            batch = connection.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        for index, (prompt, completion, answer) in batch:
            try:
                result: tuple[int, float | None, str | None] = (
                    index,
                    float(score(prompt, completion, answer)),
                    None,
                )
            except BaseException as error:  # a user's verifier may raise anything
                result = (index, None, f"{type(error).__name__}: {error}")
            connection.send(result)


class _Worker:
    """One scorer process; killed (SIGKILL) when a sample overruns, and replaced on the next batch."""

    def __init__(self, score: Callable[[str, str, str | None], float]) -> None:
        import multiprocessing
        import warnings

        # fork: the scorer need not be picklable and the worker starts in milliseconds with the parent's
        # imports (math-verify, sympy) already loaded; spawn where the platform has no fork
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        self.connection, child = context.Pipe(duplex=True)
        forked = method == "fork"
        # the parent-death signal follows the thread that forks: only a main-thread fork may arm it
        main_thread = threading.current_thread() is threading.main_thread()
        args = (score, child, self.connection if forked else None, os.getpid(), main_thread)
        self.process = context.Process(target=_worker_main, args=args, daemon=True)
        with warnings.catch_warnings():  # Python >= 3.12 warns on fork in a threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            self.process.start()
        child.close()
        if not self.connection.poll(WORKER_START_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"the reward worker did not start within {WORKER_START_TIMEOUT_S:.0f} s")
        self.connection.recv()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.connection.close()


def _in_daemonic_process() -> bool:
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)


class GuardedReward:
    """A TRL reward function around a per-sample scorer; failures and timeouts score 0 and are counted.

    With a time limit, samples are scored in a separate worker process (forked once, reused for every batch).
    A sample that runs past ``timeout_s`` gets the worker killed, whatever the scorer does (a C extension
    that ignores signals, a ``try/except Exception`` around the work): the sample scores 0 and is counted
    as failed, a fresh worker scores the rest of the batch, and nothing of the hung call keeps running. A
    sample therefore costs at most ``timeout_s`` (plus the fork of a new worker).

    The scorer runs in that worker: it sees a copy of the parent's state at the fork, and its side effects
    stay in the worker. Without a time limit (``timeout_s`` None or 0) it runs in the calling process, as it
    does, unguarded, inside a daemonic `multiprocessing` process (which may not start children).

    Args:
        score: ``score(prompt, completion, answer) -> float``.
        timeout_s: time limit per sample (None or 0: no limit, in process).
        answer_column: dataset column passed to `score` as ``answer`` (missing: None).
        name: reported by TRL as the reward's name.

    Attributes:
        errors_total: failed samples so far (raised, non-finite, timed out or crashed the worker).
        timeouts_total: samples among them that ran past the time limit.
        samples_total: samples scored through ``__call__``.
        last_error: the last failure, ``"<Type>: <message>"``.
    """

    def __init__(
        self,
        score: Callable[[str, str, str | None], float],
        *,
        timeout_s: float | None = REWARD_TIMEOUT_S,
        answer_column: str = ANSWER_COLUMN,
        name: str = "reward",
    ) -> None:
        self.score = score
        self.timeout_s = timeout_s if timeout_s else None
        self.answer_column = answer_column
        self.__name__ = name
        self.errors_total = 0
        self.timeouts_total = 0
        self.samples_total = 0
        self.last_error: str | None = None
        self._worker: _Worker | None = None
        self._lock = threading.Lock()

    # the worker process is this object's own: copies start their own
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_worker"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker process (a later call starts a new one)."""
        worker, self._worker = getattr(self, "_worker", None), None
        if worker is not None:
            with contextlib.suppress(OSError, ValueError):
                worker.connection.send(None)
            worker.kill()

    def score_one(self, prompt: Any, completion: Any, answer: Any) -> tuple[float, bool]:
        """(reward, failed) for one sample."""
        return self.score_many([prompt], [completion], [answer])[0]

    def score_many(
        self, prompts: Sequence[Any], completions: Sequence[Any], answers: Sequence[Any]
    ) -> list[tuple[float, bool]]:
        """(reward, failed) per sample; a failure (raise, non-finite value, timeout) scores 0.0."""
        samples: list[Sample] = [
            (completion_text(p), completion_text(c), None if a is None else str(a))
            for p, c, a in zip(prompts, completions, answers, strict=True)
        ]
        if self.timeout_s is None or _in_daemonic_process():
            raw = [self._score_here(sample) for sample in samples]
        else:
            with self._lock:
                raw = self._score_in_worker(samples, self.timeout_s)
        results = []
        for value, error in raw:
            if error is None and value is not None and not math.isfinite(value):
                error = f"non-finite reward {value}"
            if error is not None:
                self.last_error = error
                results.append((0.0, True))
            else:
                results.append((float(value), False))  # type: ignore[arg-type]
        return results

    def _score_here(self, sample: Sample) -> tuple[float | None, str | None]:
        try:
            return float(self.score(*sample)), None
        except Exception as error:  # any failure of a user's verifier: score 0, count it, go on
            return None, f"{type(error).__name__}: {error}"

    def _score_in_worker(
        self, samples: list[Sample], timeout_s: float
    ) -> list[tuple[float | None, str | None]]:
        results: list[tuple[float | None, str | None]] = []
        while len(results) < len(samples):
            if self._worker is None:
                self._worker = _Worker(self.score)
            worker, first = self._worker, len(results)
            worker.connection.send([(i, samples[i]) for i in range(first, len(samples))])
            while len(results) < len(samples):
                # the worker starts the next sample as soon as it has sent the previous one
                try:
                    message = worker.connection.recv() if worker.connection.poll(timeout_s) else "timeout"
                except (EOFError, OSError):
                    message = "died"
                if isinstance(message, tuple):
                    results.append(message[1:])
                    continue
                if message == "timeout":
                    self.timeouts_total += 1
                    results.append((None, f"RewardTimeout: reward ran longer than {timeout_s} s"))
                else:
                    results.append((None, "RewardWorkerDied: the scorer ended its worker process"))
                worker.kill()
                self._worker = None
                break
        return results

    def failures(self) -> dict[str, Any]:
        """What ``summary.json`` records: failed samples, timeouts among them, samples scored, last error."""
        return {
            "errors": self.errors_total,
            "timeouts": self.timeouts_total,
            "samples": self.samples_total,
            "last_error": self.last_error,
        }

    def check_not_all_failed(self, step: int, steps: int) -> None:
        """Raise `RewardFailure` at RL step `steps` when every sample scored so far has failed."""
        if step == steps and self.samples_total and self.errors_total == self.samples_total:
            raise RewardFailure(
                f"every reward failed: all {self.samples_total} samples of the first {steps} RL step(s) raised "
                f"or timed out in the {self.__name__!r} reward (last error: {self.last_error}); check that "
                "--reward fits the dataset and its answer column"
            )

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        answers = kwargs.get(self.answer_column) or [None] * len(prompts)
        scored = self.score_many(prompts, completions, answers)
        rewards = [value for value, _ in scored]
        errors = sum(failed for _, failed in scored)
        self.errors_total += errors
        self.samples_total += len(rewards)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric(mn.REWARD_ERRORS, float(errors))
            log_metric(mn.TRAIN_ACCURACY, sum(r >= 1.0 for r in rewards) / max(len(rewards), 1))
        return rewards


def check_rewards_work(
    name: str, rows: Sequence[Any], *, timeout_s: float | None, source: str, count: int = 8
) -> None:
    """Before the first write: refuse a shipped reward that raises on every one of the first `count` rows.

    Each row is scored with an empty completion, which a working verifier scores 0; one that raises on every
    row cannot read the prompts or answers at all (``--reward countdown`` on a math dataset), and the run
    would train on zeros. `source` names where the rows come from, for the error.
    """
    if name not in reward_names() or not rows:
        return
    guard = GuardedReward(get_verifier(name).score, timeout_s=timeout_s, name=name)
    try:
        sample = list(rows[:count])
        scored = guard.score_many(
            [row.prompt for row in sample], [""] * len(sample), [r.answer for r in sample]
        )
    finally:
        guard.close()
    if all(failed for _, failed in scored):
        raise RewardFailure(
            f"reward={name!r} fails on every one of the first {len(sample)} prompts of {source} "
            f"(last error: {guard.last_error}); choose the --reward that fits the dataset (one of "
            f"{sorted(reward_names())}) or fix its answer column"
        )
