"""The sums_mix task (`bandpo.training.tasks.sums_mix`): its operand shapes, a held-out pool of more than 512
prompts disjoint from training, evaluation sets of 256 distinct held-out prompts in the shapes' shares, its
verifier (Sums'), and determinism by seed."""

from __future__ import annotations

from collections import Counter

import pytest

from bandpo.training import TrainConfig
from bandpo.training.rewards import get_verifier
from bandpo.training.tasks import get_task, sums_mix
from bandpo.training.tasks.sums import format_prompt


def test_the_held_out_pool_is_large_and_disjoint_from_training() -> None:
    pool = sums_mix.held_out_pool()
    assert len(pool) >= 512 and len(set(pool)) == len(pool)
    assert all(sums_mix.is_held_out(problem.prompt) for problem in pool)
    train = {p for seed in range(5) for p in sums_mix.sample_train_problems(400, seed=seed)}
    assert len(train) > 300 and not train & set(pool)  # never a held-out prompt in training
    universe = sum(len(shape.first) * len(shape.second) for shape in sums_mix.SHAPES)
    assert universe == 81 + 810 + 810 + 8100  # every shape counted once: the shapes do not overlap


def test_evaluation_draws_256_distinct_held_out_prompts_in_the_shapes_shares() -> None:
    problems = sums_mix.sample_eval_problems(256, seed=3)
    assert len(set(problems)) == 256 and all(sums_mix.is_held_out(p.prompt) for p in problems)
    counts = Counter(sums_mix.shape_of(p).name for p in problems)
    assert counts == {shape.name: round(256 * shape.share) for shape in sums_mix.SHAPES}
    assert abs(sum(shape.share for shape in sums_mix.SHAPES) - 1.0) < 1e-12
    train = Counter(sums_mix.shape_of(p).name for p in sums_mix.sample_train_problems(256, seed=3))
    assert train == counts  # the same mix for training


def test_more_prompts_than_the_pool_holds_is_refused_with_the_limit() -> None:
    with pytest.raises(ValueError, match="use at most 260"):
        sums_mix.sample_eval_problems(300, seed=0)
    assert len(sums_mix.sample_eval_problems(260, seed=0)) == 260


def test_prompts_are_deterministic_by_seed() -> None:
    assert sums_mix.sample_eval_problems(64, seed=1) == sums_mix.sample_eval_problems(64, seed=1)
    assert sums_mix.sample_train_problems(64, seed=1) == sums_mix.sample_train_problems(64, seed=1)
    assert sums_mix.sample_eval_problems(64, seed=1) != sums_mix.sample_eval_problems(64, seed=2)
    assert sums_mix.sample_train_problems(64, seed=1) != sums_mix.sample_train_problems(64, seed=2)


@pytest.mark.parametrize(("a", "b"), [(3, 4), (47, 8), (8, 47), (63, 29)])
def test_the_verifier_is_sums_on_every_shape(a: int, b: int) -> None:
    prompt = format_prompt(a, b)
    verifier = get_verifier("sums_mix")
    assert verifier.score(prompt, f"It is {a + b}.", None) == 1.0
    assert verifier.score(prompt, f"{a} + {b} = {a + b + 1}", str(a + b)) == 0.0
    problem = sums_mix.SumsProblem(a, b)
    assert get_task("sums_mix").is_correct(str(a + b), problem)
    assert not get_task("sums_mix").is_correct(str(a + b + 10), problem)


def test_a_shape_outside_the_task_is_named() -> None:
    from bandpo.training.tasks.sums import SumsProblem

    with pytest.raises(ValueError, match="none of the shapes"):
        sums_mix.shape_of(SumsProblem(100, 1))


def test_the_task_needs_a_pretrained_model(tmp_path) -> None:
    with pytest.raises(ValueError, match="sums_mix"):
        TrainConfig(task="sums_mix")
    config = TrainConfig(task="sums_mix", model=str(tmp_path))
    assert config.resolved_reward == "sums_mix" and config.resolved_max_completion_length == 16
