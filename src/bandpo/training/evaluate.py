"""Held-out evaluation: k samples per prompt, then mean@k, pass@k, maj@k, entropy and diversity.

`evaluate` samples ``k`` completions per prompt at the training temperature (seeded, the global RNG is left
as it was), scores them with the task's verifier and returns both the aggregate metrics (keys
``metric_names.EVAL_*``) and the per-prompt results (samples, correctness, answers voted on, whether the
prompt needs the rare strategy), so that callers such as `bandpo compare` can compute any other statistic.

Definitions (per prompt, then averaged over prompts): mean@k = fraction of correct samples; pass@1 and
pass@k = the unbiased estimator of Chen et al. (with n = k samples, pass@k is "any sample correct");
maj@k = the most frequent answer (`Verifier.answer_key`: a Countdown expression's value, a math answer) is
correct; distinct correct = number of distinct correct completion strings; entropy = mean over sampled completion
tokens (EOS included) of the policy's next-token entropy. The ``rare`` metrics use the prompts that need
the rare strategy (Countdown: every solution uses ``*``), and rare usage counts samples that contain it.

Distinct correct is a diversity measure for Countdown, where a completion *is* its answer (an expression)
and two correct completions are two different solutions. For math it is not meaningful: every correct
answer is the reference answer (distinct parsed answers would be 1 whenever any sample is correct), and
free-form reasoning texts almost never coincide, so the count is close to the number of correct samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bandpo import metric_names as mn
from bandpo.training.data import prompt_token_ids
from bandpo.training.rewards import GuardedReward, Verifier, completion_text
from bandpo.training.settings import SETTINGS
from bandpo.training.tasks import get_task

__all__ = ["EvalPrompt", "EvalResult", "PromptResult", "evaluate", "sample_completions", "sampling"]


@dataclass(frozen=True)
class EvalPrompt:
    """One evaluation prompt: the text (or chat messages) given to the model and the reference answer."""

    prompt: Any
    answer: str | None = None
    needs_rare: bool | None = None


@dataclass(frozen=True)
class PromptResult:
    """All samples of one prompt and how they scored."""

    prompt: str
    answer: str | None
    samples: list[str]
    correct: list[bool]
    answer_keys: list[str]
    needs_rare: bool | None = None
    uses_rare: list[bool] | None = None


@dataclass(frozen=True)
class EvalResult:
    """Aggregate metrics (`metric_names.EVAL_*` keys) and per-prompt results of one evaluation."""

    metrics: dict[str, float]
    prompts: list[PromptResult] = field(default_factory=list)
    k: int = 0
    reward_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        prompts = [PromptResult(**row) for row in data.get("prompts", [])]
        return cls(
            metrics=dict(data["metrics"]),
            prompts=prompts,
            k=data.get("k", 0),
            reward_errors=data.get("reward_errors", 0),
        )


def _summarise(results: list[PromptResult], k: int, entropy: float) -> dict[str, float]:
    from bandpo.estimators import distinct_correct, maj_at_k, mean_at_k, pass_at_k_from_correct

    if not results:
        return {}
    correct = [r.correct for r in results]
    metrics = {
        mn.EVAL_MEAN_AT_K: mean_at_k(correct),
        mn.EVAL_PASS_AT_1: pass_at_k_from_correct(correct, 1),
        mn.EVAL_PASS_AT_K: pass_at_k_from_correct(correct, k),
        mn.EVAL_MAJ_AT_K: sum(maj_at_k(r.answer_keys, correctness=r.correct) for r in results) / len(results),
        mn.EVAL_ENTROPY: entropy,
        mn.EVAL_DISTINCT_CORRECT: sum(distinct_correct(r.samples, r.correct) for r in results) / len(results),
    }
    rare = [r for r in results if r.needs_rare]
    if any(r.needs_rare is not None for r in results):
        metrics[mn.EVAL_RARE_PASS_AT_K] = (
            pass_at_k_from_correct([r.correct for r in rare], k) if rare else 0.0
        )
        metrics[mn.EVAL_RARE_MEAN_AT_K] = mean_at_k([r.correct for r in rare]) if rare else 0.0
    usage = [flag for r in results if r.uses_rare is not None for flag in r.uses_rare]
    if usage:
        metrics[mn.EVAL_RARE_USAGE] = sum(usage) / len(usage)
    return metrics


def evaluate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[EvalPrompt],
    verifier: Verifier,
    *,
    k: int = SETTINGS["eval_samples"].default,
    seed: int = SETTINGS["seed"].default,
    temperature: float = SETTINGS["temperature"].default,
    max_new_tokens: int = get_task(SETTINGS["task"].default).completion_length,
    batch_size: int = 1024,
    rare_marker: str | None = None,
    timeout_s: float | None = SETTINGS["reward_timeout_s"].default,
) -> EvalResult:
    """Sample `k` completions for each prompt and score them (see the module docstring).

    Args:
        prompts: the held-out prompts; a chat-message prompt is rendered with the tokenizer's template.
        verifier: the task's `Verifier` (reward and answer key).
        rare_marker: substring that marks the rare strategy in a completion (Countdown: ``"*"``); None skips
            the usage statistic.
        batch_size: completions generated per `generate` call.
    """

    from bandpo.regularizers import entropy_from_logits

    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    prompt_ids = [prompt_token_ids(tokenizer, p.prompt) for p in prompts]
    guard = GuardedReward(verifier.score, timeout_s=timeout_s)
    samples: list[str] = []
    entropy_sum, entropy_count = 0.0, 0
    expanded = [ids for ids in prompt_ids for _ in range(k)]
    with sampling(model, seed):
        for start in range(0, len(expanded), batch_size):
            chunk = expanded[start : start + batch_size]
            completion_ids, logits, valid = sample_completions(
                model, tokenizer, chunk, temperature=temperature, max_new_tokens=max_new_tokens
            )
            entropy = entropy_from_logits(logits.float() / temperature)  # (b, t)
            entropy_sum += float(entropy[valid].sum())
            entropy_count += int(valid.sum())
            samples.extend(tokenizer.batch_decode(completion_ids, skip_special_tokens=True))

    try:  # one batch through the guard's worker process
        scored_all = guard.score_many(
            [p.prompt for p in prompts for _ in range(k)],
            samples,
            [p.answer for p in prompts for _ in range(k)],
        )
    finally:
        guard.close()
    results = []
    errors = 0
    for index, prompt in enumerate(prompts):
        chunk = samples[index * k : (index + 1) * k]
        scored = scored_all[index * k : (index + 1) * k]
        errors += sum(failed for _, failed in scored)
        keys = []
        for sample in chunk:
            try:
                keys.append(verifier.answer_key(completion_text(prompt.prompt), sample, prompt.answer))
            except Exception:  # an unparsable answer abstains from the vote under its own text
                keys.append(f"invalid:{sample}")
        results.append(
            PromptResult(
                prompt=completion_text(prompt.prompt),
                answer=prompt.answer,
                samples=chunk,
                correct=[value >= 1.0 for value, _ in scored],
                answer_keys=keys,
                needs_rare=prompt.needs_rare,
                uses_rare=[rare_marker in s for s in chunk] if rare_marker else None,
            )
        )
    entropy_mean = entropy_sum / max(entropy_count, 1)
    return EvalResult(
        metrics=_summarise(results, k, entropy_mean), prompts=results, k=k, reward_errors=errors
    )


@contextlib.contextmanager
def sampling(model: Any, seed: int) -> Iterator[None]:
    """Eval mode, no gradients and a private RNG seeded with `seed`; the model's mode and the global RNG are
    restored on the way out."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            yield
    finally:
        model.train(was_training)


def sample_completions(
    model: Any,
    tokenizer: Any,
    rows: Sequence[Sequence[int]],
    *,
    temperature: float,
    max_new_tokens: int,
) -> tuple[Any, Any, Any]:
    """One completion per prompt in `rows` (token ids), sampled from the full distribution at `temperature`.

    Run it inside `sampling` for eval mode, no gradients and a seeded RNG.

    Returns:
        completion ids (b, t), the logits of each step before the temperature (b, t, V), and the mask of the
        tokens that count (b, t): up to and including the first EOS.
    """
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = _left_pad(rows, pad_id, model.device)
    output = model.generate(
        **encoded,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_id,
        eos_token_id=tokenizer.eos_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )
    completion_ids = output.sequences[:, encoded["input_ids"].shape[1] :]  # (b, t)
    logits = torch.stack(output.logits, dim=1)  # (b, t, V)
    is_eos = completion_ids == tokenizer.eos_token_id
    valid = (is_eos.cumsum(dim=1) - is_eos.long()) == 0  # (b, t)
    return completion_ids, logits, valid


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> dict[str, Any]:
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (b, width)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, width - len(row) :] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
