"""The task registry: every registered task keeps its split, its verifier is the one rewards and evaluation use,
and a task defined outside the package (here: Parity, in this file) is registered with one call and trained
on by `bandpo.training.train`."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from bandpo.training.data import read_run_rows, task_rows
from bandpo.training.rewards import get_verifier, reward_names
from bandpo.training.tasks import DEFAULT_TASK, EmbeddedTask, get_task, register_task, registry, task_names
from bandpo.training.tasks.registry import in_held_out_buckets, reference_answer

# --- a task of its own: the parity of a two-digit number ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParityProblem:
    number: int

    @property
    def prompt(self) -> str:
        return f"{self.number:02d}:"  # characters the embedded tokenizer knows

    needs_rare = None  # no rare strategy


def parity_held_out(prompt: str) -> bool:
    return in_held_out_buckets(prompt, 30)


def _pool(held_out: bool) -> list[ParityProblem]:
    return [p for p in map(ParityProblem, range(100)) if parity_held_out(p.prompt) == held_out]


def parity_train(count: int, *, seed: int) -> list[ParityProblem]:
    rng = random.Random(f"parity-train-{seed}")
    return [rng.choice(_pool(False)) for _ in range(count)]


def parity_eval(count: int, *, seed: int) -> list[ParityProblem]:
    return random.Random(f"parity-eval-{seed}").sample(_pool(True), count)


def parity_score(prompt: str, completion: str, answer: str | None) -> float:
    """1 when the completion starts with a digit of the number's parity."""
    number, first = int((answer or prompt)[:2]), completion.strip()[:1]
    return 1.0 if first.isdigit() and int(first) % 2 == number % 2 else 0.0


def parity_key(prompt: str, completion: str, answer: str | None) -> str:
    first = completion.strip()[:1]
    return str(int(first) % 2) if first.isdigit() else f"invalid:{completion.strip()}"


PARITY = EmbeddedTask(
    name="parity",
    sample_train_problems=parity_train,
    sample_eval_problems=parity_eval,
    is_held_out=parity_held_out,
    score=parity_score,
    answer_key=parity_key,
    answer_length=1,
    completion_length=2,
)


@pytest.fixture
def parity_registered(monkeypatch: pytest.MonkeyPatch) -> EmbeddedTask:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return register_task(PARITY)


# --- every registered task ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", task_names())
def test_every_task_keeps_its_split_and_its_verifier(name: str) -> None:
    task = get_task(name)
    train = task.sample_train_problems(64, seed=3)
    evaluation = task.sample_eval_problems(16, seed=3)
    assert not any(task.is_held_out(p.prompt) for p in train)
    assert all(task.is_held_out(p.prompt) for p in evaluation)
    assert len({p.prompt for p in evaluation}) == 16
    if task.sample_check_problems is not None:
        assert not any(task.is_held_out(p.prompt) for p in task.sample_check_problems(16, seed=3))
    assert get_verifier(name) == task.verifier and task.verifier.name == name
    # is_correct is the verifier's reward on the row a run builds
    for problem, row in zip(evaluation, task_rows(evaluation), strict=True):
        assert row.answer == reference_answer(problem)
        for completion in (
            "",
            "1",
            "3+4+7",
            str(getattr(problem, "answer", "")),
            *getattr(problem, "solutions", ())[:2],
        ):
            reward = task.score(row.prompt, completion, row.answer)
            assert task.is_correct(completion, problem) == (reward == 1.0)


def test_the_registry_lists_the_shipped_tasks_and_the_default() -> None:
    assert task_names()[:4] == ("countdown", "reach", "sums", "sums_mix")
    assert DEFAULT_TASK == "countdown" and DEFAULT_TASK in task_names()
    assert reward_names() == (*task_names(), "math")
    with pytest.raises(ValueError, match=r"task='atari' is not an embedded task; use one of \['countdown'"):
        get_task("atari")
    with pytest.raises(ValueError, match=r"reward='atari' is unknown; use one of"):
        get_verifier("atari")


def test_registration_refuses_a_taken_name_and_a_half_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ValueError, match="'countdown' is already registered; pick another name"):
        register_task(dataclasses.replace(PARITY, name="countdown"))
    with pytest.raises(ValueError, match="not snake_case"):
        dataclasses.replace(PARITY, name="Parity-2")
    with pytest.raises(ValueError, match="give both sample_warmup_examples and sample_check_problems"):
        dataclasses.replace(PARITY, sample_check_problems=parity_train)
    with pytest.raises(TypeError, match="takes an EmbeddedTask"):
        register_task("parity")  # type: ignore[arg-type]
    assert "parity" not in task_names()


# --- adding a task: one module (this file) and one register_task call ---------------------------------------


def test_a_registered_task_is_selectable_and_reads_its_own_prompts(parity_registered, tiny_model_dir) -> None:
    from bandpo.training import TrainConfig

    with pytest.raises(ValueError, match="task='parity' is for a pretrained model"):  # it has no warm-up
        TrainConfig(task="parity")
    config = TrainConfig(
        task="parity", model=str(tiny_model_dir), eval_prompts=8, prompts_per_step=4, minibatches=2
    )
    assert config.resolved_reward == "parity" and config.resolved_max_completion_length == 2
    assert get_verifier("parity").score("07:", "3", None) == 1.0
    train_rows, eval_rows = read_run_rows(config.prompt_source)
    assert [r.text for r in eval_rows] == [p.prompt for p in parity_eval(8, seed=0)]
    assert all(parity_held_out(r.text) for r in eval_rows)
    assert not any(parity_held_out(r.text) for r in train_rows)


@pytest.mark.slow
@pytest.mark.integration
def test_train_runs_a_registered_task_with_its_verifier(parity_registered, tiny_model_dir, tmp_path) -> None:
    pytest.importorskip("trl")
    from bandpo.training import TrainConfig, train

    run_dir = tmp_path / "parity"
    config = TrainConfig(
        task="parity",
        model=str(tiny_model_dir),
        max_steps=2,
        prompts_per_step=4,
        num_generations=4,
        minibatches=2,
        eval_prompts=8,
        eval_samples=4,
        output_dir=str(run_dir),
    )
    train(config, progress=False)
    evaluation = json.loads(Path(run_dir, "eval_after.json").read_text())
    prompts = evaluation["prompts"]
    assert [p["prompt"] for p in prompts] == [p.prompt for p in parity_eval(8, seed=0)]
    scored = [
        (parity_score(p["prompt"], sample, p["answer"]) == 1.0, parity_key(p["prompt"], sample, p["answer"]))
        for p in prompts
        for sample in p["samples"]
    ]
    recorded = [pair for p in prompts for pair in zip(p["correct"], p["answer_keys"], strict=True)]
    assert recorded == scored
    assert 0 < sum(correct for correct, _ in recorded) < len(recorded)  # the verifier told samples apart
    assert json.loads(Path(run_dir, "config.json").read_text())["resolved"]["reward"] == "parity"
