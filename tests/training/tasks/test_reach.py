"""The second embedded task, Reach: verifier against Python's arithmetic, determinism by seed, held-out prompts
never trained on, the designed share of prompts that need the rare operator, and its wiring (tasks, reward)."""

from __future__ import annotations

import itertools

import pytest

from bandpo.training.rewards import get_verifier
from bandpo.training.tasks import get_task, reach, task_names
from bandpo.training.tasks.countdown import ALPHABET


def test_evaluate_expression_uses_standard_precedence() -> None:
    for expression in ("3+4*7", "3*4+7", "9-2*3", "2*3*4", "8-3-2", "7*7", "9-9", "2*3-4*5"[:5]):
        assert reach.evaluate_expression(expression) == eval(
            expression
        )  # Python's precedence is the reference
    for bad in ("3", "3+4*", "3+4*77", "a+4", "3/4", "0+4", "3+4*7 ", "3+4*7+1"):
        assert reach.evaluate_expression(bad) is None


def test_verifier_accepts_every_right_answer_and_only_those() -> None:
    problem = reach.ReachProblem(digits=(2, 5, 7, 9), target=42)
    expected = set()
    for count in (2, 3):
        for chosen in itertools.product("2579", repeat=count):
            for ops in itertools.product("+-*", repeat=count - 1):
                expression = chosen[0] + "".join(op + d for op, d in zip(ops, chosen[1:], strict=True))
                if eval(expression) == 42:
                    expected.add(expression)
    assert set(problem.solutions) == expected and len(expected) == 5  # several right answers
    verifier = get_verifier("reach")
    for answer in sorted(expected):
        assert reach.is_correct(f" {answer}\n", problem)
        assert verifier.score(problem.prompt, answer, None) == 1.0
        assert verifier.answer_key(problem.prompt, answer, problem.prompt) == "42"  # votes count values
    for wrong in ("6*7", "7*6", "9*5-3", "42", "7*5+8", ""):  # digits not allowed, or not an expression
        assert not reach.is_correct(wrong, problem)
        assert verifier.score(problem.prompt, wrong, problem.prompt) == 0.0
    assert verifier.answer_key(problem.prompt, "6*7", None).startswith("invalid:")


def test_prompt_round_trip_and_alphabet() -> None:
    problem = reach.ReachProblem(digits=(1, 3, 4, 8), target=7)
    assert problem.prompt == "1348|007:"
    assert reach.parse_prompt(problem.prompt) == problem
    assert reach.parse_prompt("context " + problem.prompt) == problem
    for bad in ("1348|07:", "3148|007:", "1348-007:", "0348|007:"):
        with pytest.raises(ValueError, match="not a Reach prompt"):
            reach.parse_prompt(bad)
    for problem, answer in reach.sample_warmup_examples(200, seed=0, rare_fraction=0.5):
        assert set(problem.prompt + answer) <= set(ALPHABET)  # the tokenizer of the embedded model fits


def test_sampling_is_deterministic_by_seed() -> None:
    assert reach.sample_train_problems(64, seed=3) == reach.sample_train_problems(64, seed=3)
    assert reach.sample_train_problems(64, seed=3) != reach.sample_train_problems(64, seed=4)
    assert reach.sample_eval_problems(64, seed=1) == reach.sample_eval_problems(64, seed=1)
    warmup = reach.sample_warmup_examples(100, seed=2, rare_fraction=0.01)
    assert warmup == reach.sample_warmup_examples(100, seed=2, rare_fraction=0.01)


def test_held_out_prompts_are_never_trained_on() -> None:
    evaluation = reach.sample_eval_problems(256, seed=0)
    assert len({p.prompt for p in evaluation}) == 256 and all(reach.is_held_out(p.prompt) for p in evaluation)
    trained = {p.prompt for seed in range(3) for p in reach.sample_train_problems(2000, seed=seed)}
    trained |= {p.prompt for p, _ in reach.sample_warmup_examples(5000, seed=0, rare_fraction=0.2)}
    trained |= {p.prompt for p in reach.sample_check_problems(512, seed=0)}
    assert not trained & {p.prompt for p in evaluation}
    assert not any(reach.is_held_out(prompt) for prompt in trained)


def test_rare_share_is_as_designed() -> None:
    for problems in (reach.sample_eval_problems(256, seed=0), reach.sample_train_problems(1000, seed=5)):
        assert sum(p.needs_rare for p in problems) == round(reach.RARE_SHARE * len(problems))
        for problem in problems:  # needs_rare: no solution without "*"; otherwise at least one
            plain = [s for s in problem.solutions if "*" not in s]
            assert problem.needs_rare == (not plain) and problem.solutions
    # the warm-up prior: "*" is rare in the demonstrated answers (rare_fraction 1%)
    answers = [answer for _, answer in reach.sample_warmup_examples(4000, seed=0, rare_fraction=0.01)]
    assert sum("*" in a for a in answers) / len(answers) < 0.02


def test_eval_prompts_beyond_the_pool_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="eval_prompts"):
        reach.sample_eval_problems(5000, seed=0)


@pytest.mark.parametrize("name", [name for name in task_names() if not get_task(name).needs_pretrained])
def test_every_embedded_task_is_complete(name: str) -> None:
    embedded = get_task(name)
    problems = embedded.sample_eval_problems(16, seed=0)
    assert any(p.needs_rare for p in problems) and not all(p.needs_rare for p in problems)
    assert all(embedded.rare_marker in s for p in problems if p.needs_rare for s in p.solutions)
    assert all(embedded.is_correct(p.solutions[0], p) for p in problems)
    assert len(embedded.sample_check_problems(8, seed=0)) == 8
    assert max(len(s) for p in problems for s in p.solutions) <= embedded.answer_length
    with pytest.raises(ValueError, match="not an embedded task"):
        get_task("atari")


def test_train_config_selects_the_task() -> None:
    from bandpo.training import TrainConfig

    config = TrainConfig.from_preset("default", task="reach")
    assert config.resolved_reward == "reach" and config.resolved_max_completion_length == 8
    with pytest.raises(ValueError, match="task="):
        TrainConfig.from_preset("default", task="atari")


def test_warm_up_rarely_shows_a_prompt_that_needs_the_rare_operator() -> None:
    examples = reach.sample_warmup_examples(4000, seed=1, rare_fraction=0.2)
    assert all(reach.is_correct(answer, problem) for problem, answer in examples)
    shown = sum("*" in answer for _, answer in examples) / len(examples)
    needed = sum(problem.needs_rare for problem, _ in examples) / len(examples)
    assert 0.17 < shown < 0.23  # rare_fraction: every one of those examples shows "*"
    # NEEDS_RARE_IN_RARE of those answer a prompt that needs "*"
    assert needed == pytest.approx(0.2 * reach.NEEDS_RARE_IN_RARE, abs=0.015)
    assert all("*" in answer for problem, answer in examples if problem.needs_rare)
    assert all(p.target <= reach.MAX_TARGET for p in reach.sample_train_problems(500, seed=0))
