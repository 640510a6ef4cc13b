"""Verifiers and the guard: a failing or slow reward scores 0, is counted, and the run goes on."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest

from bandpo import metric_names as mn
from bandpo.training.rewards import GuardedReward, extract_final_answer, get_verifier
from process_helpers import alive, gone_within


def test_countdown_reward():
    verifier = get_verifier("countdown")
    reward = GuardedReward(verifier.score)
    assert reward(["347|019:"] * 3, ["3*4+7", "7+4*3", "3+4+7"]) == [1.0, 1.0, 0.0]
    # TRL chat format: the completion is a list of messages
    assert reward(["347|019:"], [[{"role": "assistant", "content": "4*3+7"}]]) == [1.0]
    assert verifier.answer_key("347|019:", "4*3+7", None) == "19"
    assert verifier.answer_key("347|019:", "1*1+1", None).startswith("invalid:")


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        ("so the answer is \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),
        ("Answer: 0.5", "$\\frac{1}{2}$", 1.0),
        ("Answer: 3", "1/2", 0.0),
        ("no final answer here", "1/2", 0.0),
        ("\\boxed{72}", "Natalia sold 48/2 = 24 clips ... #### 72", 1.0),  # GSM8K reference
        ("Answer: 1,000", "#### 1,000", 1.0),
        ("\\boxed{5}", "We find $x=5$, so \\boxed{5}.", 1.0),  # MATH solution as reference
        ("\\boxed{x^2+1}", "1+x^2", 1.0),
    ],
)
def test_math_reward(completion, reference, expected):
    pytest.importorskip("math_verify")
    reward = GuardedReward(get_verifier("math").score)
    assert reward(["q"], [completion], answer=[reference]) == [expected]
    assert reward.errors_total == 0


def test_extract_final_answer():
    assert extract_final_answer("a \\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert extract_final_answer("work...\nAnswer: $42$.") == "42"
    assert extract_final_answer("#### 72") == "72"
    assert extract_final_answer("nothing") is None


def test_the_math_reward_reads_a_box_as_the_verl_recipes_verifier_does():
    """One extractor (`bandpo.integrations.math_dapo.last_boxed`): only ``\\boxed{`` opens a box, the last one
    counts, braces nest; a box that never closes or a ``\\boxed`` without a brace is not an answer."""
    from bandpo.integrations.math_dapo import last_boxed

    texts = [
        "So \\boxed{ 42 }",
        "\\boxed{1} then \\boxed{\\frac{1}{2}}",
        "\\boxed{\\boxed{3}}",
        "\\boxed{1} \\boxed 2",
    ]
    for text in texts:
        assert extract_final_answer(text) == last_boxed(text).strip()
    assert [extract_final_answer(t) for t in texts] == ["42", "\\frac{1}{2}", "3", "1"]
    assert extract_final_answer("So \\boxed{42") is None and extract_final_answer("\\boxed {5}") is None


def test_exceptions_and_bad_values_score_zero_and_are_counted():
    def score(prompt, completion, answer):
        if completion == "boom":
            raise RuntimeError("verifier crashed")
        if completion == "nan":
            return float("nan")
        return 1.0

    logged = {}
    reward = GuardedReward(score)
    values = reward(["p"] * 4, ["ok", "boom", "nan", "ok"], log_metric=lambda k, v: logged.setdefault(k, v))
    assert values == [1.0, 0.0, 0.0, 1.0]
    assert reward.errors_total == 2 and reward.samples_total == 4
    assert logged[mn.REWARD_ERRORS] == 2.0
    assert logged[mn.TRAIN_ACCURACY] == 0.5
    assert "RuntimeError" in reward.last_error or "non-finite" in reward.last_error


def _slow_unless_ok(prompt, completion, answer):
    if completion == "slow":
        time.sleep(30)
    return 1.0


def test_a_slow_reward_times_out_on_the_main_thread():
    reward = GuardedReward(_slow_unless_ok, timeout_s=0.2)
    start = time.perf_counter()
    assert reward(["p"] * 3, ["ok", "slow", "ok"]) == [1.0, 0.0, 1.0]
    assert time.perf_counter() - start < 20  # liveness (the sleep is 30 s), not speed
    assert reward.errors_total == 1 and reward.timeouts_total == 1
    assert "RewardTimeout" in reward.last_error


def test_a_slow_reward_times_out_off_the_main_thread():
    reward = GuardedReward(_slow_unless_ok, timeout_s=0.2)
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("values", reward(["p", "p"], ["slow", "ok"])))
    worker.start()
    worker.join(20)
    assert out["values"] == [0.0, 1.0]
    assert reward.errors_total == 1


def test_a_scorer_that_catches_exception_cannot_swallow_the_timeout():
    def stubborn(prompt, completion, answer):
        for _ in range(300):
            try:
                time.sleep(0.1)
            except Exception:  # swallowed an in-process timeout signal before
                return 1.0
            with contextlib.suppress(ValueError):  # nor can it switch the alarm off
                signal.signal(signal.SIGALRM, signal.SIG_IGN)
        return 1.0

    reward = GuardedReward(stubborn, timeout_s=0.2)
    start = time.perf_counter()
    assert reward(["p"], ["x"]) == [0.0]
    assert time.perf_counter() - start < 20  # liveness (the scorer runs 30 s), not speed
    assert reward.timeouts_total == 1 and reward.errors_total == 1


def test_a_hung_sample_is_killed_and_the_batch_goes_on():
    reward = GuardedReward(_slow_unless_ok, timeout_s=0.2)
    # several hung samples in one batch: each is counted, the others are still scored
    assert reward(["p"] * 5, ["slow", "ok", "slow", "slow", "ok"]) == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert reward.timeouts_total == 3 and reward.errors_total == 3
    first = reward._worker.process
    assert reward(["p"], ["ok"]) == [1.0]
    assert reward._worker.process is first  # the common path reuses one worker
    reward(["p"], ["slow"])
    assert not first.is_alive()  # the hung call does not keep running
    reward.close()


def test_a_scorer_that_kills_its_process_is_a_failed_sample():
    def exits(prompt, completion, answer):
        if completion == "exit":
            os._exit(3)
        return 1.0

    reward = GuardedReward(exits, timeout_s=5)
    assert reward(["p"] * 3, ["ok", "exit", "ok"]) == [1.0, 0.0, 1.0]
    assert reward.errors_total == 1 and reward.timeouts_total == 0
    assert "RewardWorkerDied" in reward.last_error


def test_math_reward_on_a_tower_of_powers_times_out():
    pytest.importorskip("math_verify")
    reward = GuardedReward(get_verifier("math").score, timeout_s=0.5)
    start = time.perf_counter()
    assert reward.score_one("q", r"\boxed{10^{10^{10}}}", "1") == (0.0, True)
    assert time.perf_counter() - start < 60  # liveness: it never returned before
    assert reward.timeouts_total == 1
    # the guard goes on with a fresh worker; a generous limit now, so that a loaded machine (the fork and the
    # verifier's first call) cannot turn the check of a right answer into a second timeout
    reward.timeout_s = 30.0
    assert reward.score_one("q", r"\boxed{1}", "1") == (1.0, False)


def test_no_time_limit_scores_in_process():
    calls = []
    reward = GuardedReward(lambda p, c, a: calls.append(c) or 1.0, timeout_s=None)
    assert reward(["p", "p"], ["a", "b"]) == [1.0, 1.0]
    assert calls == ["a", "b"] and reward._worker is None


def test_unknown_reward_names_the_choices():
    with pytest.raises(ValueError, match="countdown"):
        get_verifier("nope")


# --- the worker dies with its parent ---------------------------------------------------------------

_PARENT = """
import os, sys, time
from bandpo.training.rewards import GuardedReward

def score(prompt, completion, answer):
    if completion == "hang":
        while True:  # a hung verifier, busy on the CPU
            pass
    return 1.0

reward = GuardedReward(score, timeout_s=600)
reward.score_many(["p"], ["ok"], [None])  # starts the worker
print(reward._worker.process.pid, flush=True)
reward.score_many(["p"], [sys.argv[1]], [None])  # "hang": blocks in the hung sample
time.sleep(600)
"""


@pytest.mark.slow  # six children killed and waited for
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("completion", ["ok", "hang"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGABRT])
def test_the_worker_dies_with_its_parent(completion, sig):
    import subprocess
    import sys

    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, completion], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        worker = int(parent.stdout.readline())
        assert alive(worker)
        time.sleep(0.3)  # the parent is now idle ("ok") or waiting on the hung sample ("hang")
        parent.send_signal(sig)
        parent.wait(timeout=30)
        assert gone_within(worker, 10), f"the reward worker {worker} outlived its parent ({sig!r})"
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
        parent.stderr.close()


def test_the_worker_does_not_keep_the_parents_pipe_end():
    """The fork copies the parent's end of the pipe; the worker closes it, so a dead parent reads as EOF."""
    reward = GuardedReward(lambda p, c, a: 1.0, timeout_s=60)
    try:
        reward.score_many(["p"], ["c"], [None])
        worker = reward._worker.process.pid
        parent_end = os.readlink(f"/proc/{os.getpid()}/fd/{reward._worker.connection.fileno()}")
        worker_fds = [os.readlink(f"/proc/{worker}/fd/{fd}") for fd in os.listdir(f"/proc/{worker}/fd")]
        assert parent_end not in worker_fds
    finally:
        reward.close()
