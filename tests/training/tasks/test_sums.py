"""The Sums task (`bandpo.training.tasks.sums`): prompts, the verifier, the held-out split, and its use in a run's
config (it needs a pretrained model)."""

from __future__ import annotations

import pytest

from bandpo.training import TrainConfig
from bandpo.training.data import task_rows
from bandpo.training.rewards import get_verifier
from bandpo.training.tasks import get_task, sums


@pytest.mark.parametrize(
    ("reply", "reward"),
    [
        ("55", 1.0),
        ("47 + 8 = 55", 1.0),
        ("The answer is 55.", 1.0),
        ("55.0", 1.0),
        ("1,055 minus 1,000 is 55", 1.0),
        ("54", 0.0),
        ("55 is close, but 56", 0.0),
        ("fifty-five", 0.0),
        ("", 0.0),
    ],
)
def test_the_verifier_reads_the_last_number(reply, reward):
    prompt = sums.format_prompt(47, 8)
    assert sums.score(prompt, reply, "55") == reward
    assert sums.score(prompt, reply, None) == reward  # the reference read from the prompt
    assert get_verifier("sums").score(prompt, reply, "55") == reward


def test_answer_keys_group_equal_values():
    prompt = sums.format_prompt(47, 8)
    assert sums.answer_key(prompt, "55", "55") == sums.answer_key(prompt, "It is 55.0", "55") == "55"
    assert sums.answer_key(prompt, "no idea", "55").startswith("invalid:")


def test_prompts_round_trip_and_refuse_other_text():
    problem = sums.parse_prompt("<|im_start|>user\n" + sums.format_prompt(93, 7))
    assert (problem.a, problem.b, problem.answer, problem.hard) == (93, 7, "100", True)
    with pytest.raises(ValueError, match="not a Sums prompt"):
        sums.parse_prompt("What is 2 * 3?")


def test_held_out_prompts_never_train_and_half_are_two_digit():
    train = sums.sample_train_problems(2000, seed=0)
    evaluation = sums.sample_eval_problems(32, seed=0)
    assert not any(sums.is_held_out(p.prompt) for p in train)
    assert all(sums.is_held_out(p.prompt) for p in evaluation)
    assert len({p.prompt for p in evaluation}) == 32
    assert sum(p.hard for p in evaluation) == 16 and sum(p.hard for p in train) == 1000
    assert evaluation == sums.sample_eval_problems(32, seed=0)  # seeded
    with pytest.raises(ValueError, match="use at most"):
        sums.sample_eval_problems(256, seed=0)


def test_rows_carry_the_sum_as_the_reference():
    rows = task_rows(sums.sample_eval_problems(4, seed=0))
    assert all(row.answer == sums.parse_prompt(row.prompt).answer for row in rows)
    assert all(row.needs_rare is None for row in rows)


def test_the_task_needs_a_pretrained_model_and_answers_in_16_tokens(tmp_path):
    assert get_task("sums").needs_pretrained and not get_task("countdown").needs_pretrained
    with pytest.raises(ValueError, match="task='sums' is for a pretrained model"):
        TrainConfig(task="sums")
    (tmp_path / "config.json").write_text("{}")
    config = TrainConfig(task="sums", model=str(tmp_path))
    assert config.resolved_reward == "sums" and config.resolved_max_completion_length == 16
