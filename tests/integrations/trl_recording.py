"""Test helpers for `BandPOTrainer` inside TRL's own `train()`: a trainer that records, for every micro-batch,
the ratio bounds TRL's loss actually used and the rows they were used on, and a check that they equal
``method(old_per_token_logps)`` of the same rows.

Shared by `test_trl_train_alignment.py` (one process) and `trl_two_process_run.py` (launched by torchrun).
Offline: a tiny Qwen2 and a character tokenizer built locally.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from datasets import Dataset

from bandpo.integrations.trl import BandPOConfig, BandPOTrainer
from bandpo.methods import BoundMethod
from bandpo.training.model import build_char_tokenizer, build_tiny_model

FLOAT32_EPS = torch.finfo(torch.float32).eps
BOUND_ULPS = 2
"""Bounds reach TRL as 1 - (1 - ratio_low) and 1 + (ratio_high - 1) in float32: each rounds once, so a used
bound equals the method's within 2 ulps of max(1, |bound|)."""


def reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    return [float(len(completion)) for completion in completions]


def dataset(rows: int = 64) -> Dataset:
    return Dataset.from_list(
        [{"prompt": f"{i % 9 + 1}{i * 7 % 9 + 1}{i * 5 % 9 + 1}|0{i % 90 + 10}:"} for i in range(rows)]
    )


def config(output_dir: str, **overrides: Any) -> BandPOConfig:
    values = dict(
        output_dir=output_dir,
        method="band",
        beta=0.0,
        num_generations=4,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        steps_per_generation=2,
        num_iterations=1,
        max_completion_length=6,
        max_steps=2,
        learning_rate=5e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    values.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "every method is identical" is expected for some
        return BandPOConfig(**values)


def _row_key(batch: dict[str, Any], i: int) -> tuple[int, ...]:
    return (*batch["prompt_ids"][i].tolist(), -1, *batch["completion_ids"][i].tolist())


class RecordingTrainer(BandPOTrainer):
    """`BandPOTrainer` that records what reaches TRL's loss in each micro-batch of `train()`.

    ``misalign=True`` is the negative control: the bounds of each generation batch are rolled by one row, so
    they no longer belong to their tokens.
    """

    def __init__(self, *args: Any, misalign: bool = False, **kwargs: Any) -> None:
        self.misalign = misalign
        self.records: list[dict[str, Any]] = []
        self.generation: dict[tuple[int, ...], list[torch.Tensor | None]] = {}
        self._recording: dict[str, Any] | None = None
        super().__init__(*args, **kwargs)
        self.records.clear()  # the start-up self-check is not a micro-batch of train()

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        old_logp = output.get("old_per_token_logps")
        self.generation = {}  # the rows of this generation batch and their old log-probs
        for i in range(len(output["completion_ids"])):
            row_old = None if old_logp is None else old_logp[i].detach().clone()
            self.generation.setdefault(_row_key(output, i), []).append(row_old)
        if self.misalign and "ratio_low" in output:
            output["ratio_low"] = output["ratio_low"].roll(1, dims=0)
            output["ratio_high"] = output["ratio_high"].roll(1, dims=0)
        return output

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        self._recording = inputs
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._recording = None

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        inputs = self._recording
        if self._capturing and inputs is not None:
            self._recording = None  # the policy forward of this micro-batch: TRL's clamp uses these epsilons
            self.records.append(
                {
                    "rows": [_row_key(inputs, i) for i in range(len(inputs["completion_ids"]))],
                    "generation": self.generation,
                    "mask": inputs["completion_mask"].bool(),
                    "advantages": inputs["advantages"].detach(),
                    "logp": result[0].detach(),
                    "ratio_low": (1 - self.epsilon_low).detach(),  # what TRL clamps to, per token
                    "ratio_high": (1 + self.epsilon_high).detach(),
                }
            )
        return result


def _close(used: torch.Tensor, expected: torch.Tensor) -> bool:
    tolerance = BOUND_ULPS * FLOAT32_EPS * expected.abs().clamp(min=1.0)
    return bool(((used - expected).abs() <= tolerance).all())


def misaligned_rows(records: list[dict[str, Any]], method: BoundMethod) -> tuple[int, int]:
    """(rows whose used bounds differ from ``method(old_logp)`` of that row, rows checked), valid tokens only.

    A row's old log-probs are those recorded at generation for the same tokens; without old log-probs (TRL's
    ratio ≡ 1 regime) the bounds must equal ``method`` of the micro-batch's own log-probs.
    """
    bad = checked = 0
    for record in records:
        if not isinstance(record["ratio_low"], torch.Tensor) or record["ratio_low"].dim() != 2:
            bad += len(record["rows"])  # a scalar epsilon reached TRL: no per-token bounds at all
            checked += len(record["rows"])
            continue
        for i, key in enumerate(record["rows"]):
            valid = record["mask"][i]
            used_low, used_high = record["ratio_low"][i][valid], record["ratio_high"][i][valid]
            candidates = record["generation"].get(key)
            if candidates is None:
                bad += 1  # a row that this generation batch never produced
            else:
                olds = [record["logp"][i] if old is None else old for old in candidates]
                expected = [method(old[None]) for old in olds]  # (1, T) each
                if not any(
                    _close(used_low, bounds.ratio_low[0][valid])
                    and _close(used_high, bounds.ratio_high[0][valid])
                    for bounds in expected
                ):
                    bad += 1
            checked += 1
    return bad, checked


def build(
    output_dir: str,
    *,
    misalign: bool = False,
    trainer_class: type[RecordingTrainer] = RecordingTrainer,
    peft_config: Any = None,
    **overrides: Any,
) -> RecordingTrainer:
    """A `trainer_class` on the tiny model (wrapped by TRL in a LoRA adapter when `peft_config` is given)."""
    tokenizer = build_char_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer_class(
            model=build_tiny_model(tokenizer, seed=0),
            peft_config=peft_config,
            reward_funcs=reward,
            args=config(output_dir, **overrides),
            train_dataset=dataset(),
            processing_class=tokenizer,
            misalign=misalign,
        )
