"""Verifiers and the guard: a failing or slow reward scores 0, is counted, and the run goes on."""

from __future__ import annotations

import threading
import time

import pytest

from bandpo import metric_names as mn
from bandpo.training.rewards import GuardedReward, extract_final_answer, get_verifier


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


def test_a_slow_reward_times_out_on_the_main_thread():
    def score(prompt, completion, answer):
        if completion == "slow":
            time.sleep(30)
        return 1.0

    reward = GuardedReward(score, timeout_s=0.2)
    start = time.perf_counter()
    assert reward(["p"] * 3, ["ok", "slow", "ok"]) == [1.0, 0.0, 1.0]
    assert time.perf_counter() - start < 10
    assert reward.errors_total == 1 and "RewardTimeout" in reward.last_error


def test_a_slow_reward_times_out_off_the_main_thread():
    def score(prompt, completion, answer):
        if completion == "slow":
            time.sleep(5)
        return 1.0

    reward = GuardedReward(score, timeout_s=0.2)
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("values", reward(["p", "p"], ["slow", "ok"])))
    worker.start()
    worker.join(10)
    assert out["values"] == [0.0, 1.0]
    assert reward.errors_total == 1


def test_unknown_reward_names_the_choices():
    with pytest.raises(ValueError, match="countdown"):
        get_verifier("nope")
