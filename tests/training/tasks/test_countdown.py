"""The embedded Countdown task: exact verifier, determinism by seed, held-out prompts never in training."""

from __future__ import annotations

import itertools

import pytest

from bandpo.training.tasks import countdown


def test_evaluate_expression_uses_standard_precedence():
    assert countdown.evaluate_expression("3+4*7") == 31
    assert countdown.evaluate_expression("3*4+7") == 19
    assert countdown.evaluate_expression("9-2*3") == 3
    assert countdown.evaluate_expression("2*3*4") == 24
    assert countdown.evaluate_expression("8-3-2") == 3
    for bad in ("3+4", "3+4*77", "a+4*7", "3/4*7", "3+4*7 "):
        assert countdown.evaluate_expression(bad) is None


def test_solutions_are_exactly_the_correct_expressions():
    digits, target = (3, 4, 7), 19
    expected = set()
    for order in itertools.permutations(digits):
        for op1, op2 in itertools.product("+-*", repeat=2):
            expression = f"{order[0]}{op1}{order[1]}{op2}{order[2]}"
            if eval(expression) == target:  # Python's precedence is the reference
                expected.add(expression)
    assert set(countdown.solutions(digits, target)) == expected
    assert {"3*4+7", "4*3+7", "7+3*4", "7+4*3"} <= expected


def test_is_correct_requires_the_given_digits():
    problem = countdown.CountdownProblem(digits=(3, 4, 7), target=14)
    assert countdown.is_correct("3+4+7", problem)
    assert countdown.is_correct(" 7+4+3\n", problem)
    assert not countdown.is_correct("5+2+7", problem)  # right value, wrong digits
    assert not countdown.is_correct("3+4-7", problem)
    assert not countdown.is_correct("", problem)


def test_prompt_round_trip_and_needs_rare():
    problem = countdown.CountdownProblem(digits=(2, 3, 4), target=24)
    assert problem.prompt == "234|024:"
    assert countdown.parse_prompt(problem.prompt) == problem
    assert problem.needs_rare  # only 2*3*4 and its orders reach 24
    assert not countdown.CountdownProblem(digits=(2, 3, 4), target=9).needs_rare
    with pytest.raises(ValueError, match=r"xyz\|ttt:"):
        countdown.parse_prompt("hello")


def test_generators_are_deterministic_by_seed():
    assert countdown.sample_train_problems(50, seed=3) == countdown.sample_train_problems(50, seed=3)
    assert countdown.sample_train_problems(50, seed=3) != countdown.sample_train_problems(50, seed=4)
    assert countdown.sample_eval_problems(40, seed=1) == countdown.sample_eval_problems(40, seed=1)
    a = countdown.sample_warmup_examples(100, seed=0, rare_fraction=0.01)
    assert a == countdown.sample_warmup_examples(100, seed=0, rare_fraction=0.01)


def test_held_out_prompts_never_appear_in_training_or_warmup():
    held_out = {p.prompt for p in countdown.sample_eval_problems(256, seed=0)}
    assert len(held_out) == 256
    training = {p.prompt for seed in range(3) for p in countdown.sample_train_problems(3000, seed=seed)}
    warmup = {p.prompt for p, _ in countdown.sample_warmup_examples(3000, seed=0, rare_fraction=0.5)}
    assert held_out.isdisjoint(training)
    assert held_out.isdisjoint(warmup)
    assert all(countdown.is_held_out(prompt) for prompt in held_out)


def test_the_task_has_the_rare_strategy_structure():
    problems = countdown.sample_train_problems(2000, seed=0)
    needs_rare = sum(p.needs_rare for p in problems) / len(problems)
    assert 0.35 < needs_rare < 0.75  # many prompts need '*'
    assert sum(len(p.solutions) for p in problems) / len(problems) > 2  # several valid answers
    examples = countdown.sample_warmup_examples(5000, seed=0, rare_fraction=0.01)
    uses_rare = sum(countdown.RARE_OPERATOR in answer for _, answer in examples) / len(examples)
    assert uses_rare < 0.02  # the warm-up prior almost never shows '*'
    assert all(countdown.is_correct(answer, problem) for problem, answer in examples)
