"""`BandPOTrainer` with a LoRA adapter (TRL's ``peft_config``), in TRL's own `train()` on the tiny Qwen2.

A LoRA run changes what trains, not the loss: the bounds come from ``old_per_token_logps``, which TRL
computes with the policy *with* its adapter (the sampling policy). Checked here: the bounds that reach TRL's
loss are ``method(old_logp)`` of their rows (as in a full run); at the first generation batch, where the
adapter is still zero (peft initialises ``lora_B`` to 0), a LoRA run samples the same completions as a full
run from the same weights and seed and uses the same old log-probs and bounds; later the old log-probs are
the adapted policy's, not the base's; only the adapter trains; the KL reference is the base with the adapter
disabled.
"""

from __future__ import annotations

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

import warnings
from typing import Any

import peft
import torch
from trl_recording import BOUND_ULPS, FLOAT32_EPS, RecordingTrainer, build, misaligned_rows

pytestmark = pytest.mark.integration

LOGP_TOLERANCE = 1e-5
"""Two forward passes of the same weights on the same tokens, one batched by TRL (its fused LM head) and one
here: float32 log-probabilities agree to ~1e-6 on this model; 1e-5 leaves room for another CPU's kernels."""


class GenerationRecorder(RecordingTrainer):
    """Also keeps every generation batch, with the log-probabilities of its completions recomputed here with
    the adapter on and off (the model has not moved since TRL sampled it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.batches: list[dict[str, Any]] = []
        super().__init__(*args, **kwargs)

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        batch = {key: output[key].detach().clone() for key in ("completion_ids", "completion_mask")}
        for key in ("old_per_token_logps", "ratio_low", "ratio_high"):
            batch[key] = output[key].detach().clone()
        batch["logp_adapter_on"] = _completion_logps(self.model, output)
        if isinstance(self.model, peft.PeftModel):
            with self.model.disable_adapter():
                batch["logp_adapter_off"] = _completion_logps(self.model, output)
        self.batches.append(batch)
        return output


@torch.no_grad()
def _completion_logps(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """log p(completion token | prefix) of each completion token: the naive forward (B, T)."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)  # (B, P + T)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    logits = model(input_ids=ids, attention_mask=attention).logits.float()  # (B, P + T, V)
    width = batch["completion_ids"].shape[1]
    logits = logits[:, -width - 1 : -1]  # the logits that predict each completion token, (B, T, V)
    return torch.log_softmax(logits, dim=-1).gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)


def _lora() -> Any:
    return peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0, bias="none")


def _train(trainer: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    return trainer


# two generation batches of 8 completions, each used for 2 optimiser steps of 4: old log-probs computed
SCHEDULE = dict(steps_per_generation=2, num_iterations=1, max_steps=4)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor, tolerance: float) -> None:
    difference = ((actual - expected).abs() * mask).max().item()
    assert difference <= tolerance, f"differ by {difference:.3g} > {tolerance:.3g}"


def test_a_lora_run_uses_the_bounds_of_its_old_logps_like_a_full_run(tmp_path):
    lora = _train(
        build(str(tmp_path / "lora"), trainer_class=GenerationRecorder, peft_config=_lora(), **SCHEDULE)
    )
    full = _train(build(str(tmp_path / "full"), trainer_class=GenerationRecorder, **SCHEDULE))
    assert isinstance(lora.model, peft.PeftModel) and not isinstance(full.model, peft.PeftModel)
    assert len(lora.batches) == len(full.batches) == 2

    # in TRL's loop the bounds reaching every micro-batch are method(old_logp) of its rows, in both runs
    for trainer in (lora, full):
        bad, checked = misaligned_rows(trainer.records, trainer.bound_method)
        assert checked == 4 * trainer.args.per_device_train_batch_size and bad == 0

    # first generation batch: the adapter is zero, so the LoRA run is the full run's policy: same completions,
    # same old log-probs, and so the same bounds (float32: BOUND_ULPS ulps of max(1, bound))
    first_lora, first_full = lora.batches[0], full.batches[0]
    assert torch.equal(first_lora["completion_ids"], first_full["completion_ids"])
    mask = first_full["completion_mask"].float()
    _assert_close(first_lora["old_per_token_logps"], first_full["old_per_token_logps"], mask, LOGP_TOLERANCE)
    method = full.bound_method
    expected = method(first_full["old_per_token_logps"])
    for key in ("ratio_low", "ratio_high"):
        bound_tolerance = BOUND_ULPS * FLOAT32_EPS * max(1.0, getattr(expected, key).abs().max().item())
        _assert_close(first_lora[key], getattr(expected, key), mask, bound_tolerance)
        # and the LoRA run's bounds are exactly its method of its own old log-probs (same function, same tensor)
        assert torch.equal(first_lora[key], getattr(method(first_lora["old_per_token_logps"]), key))

    # the old log-probs are the policy's with its adapter: equal to it at both batches, and, once the adapter
    # has trained, different from the base's (adapter disabled)
    for batch in lora.batches:
        mask = batch["completion_mask"].float()
        _assert_close(batch["old_per_token_logps"], batch["logp_adapter_on"], mask, LOGP_TOLERANCE)
    _assert_close(
        lora.batches[0]["logp_adapter_off"],
        lora.batches[0]["logp_adapter_on"],
        lora.batches[0]["completion_mask"],
        0,
    )
    second = lora.batches[1]
    moved = ((second["logp_adapter_on"] - second["logp_adapter_off"]).abs() * second["completion_mask"]).max()
    assert moved > 100 * LOGP_TOLERANCE


def test_a_lora_run_trains_only_the_adapter_against_the_base_as_reference(tmp_path):
    trainer = build(str(tmp_path), peft_config=_lora(), beta=0.04, **SCHEDULE)
    base = {
        name: parameter.detach().clone()
        for name, parameter in trainer.model.named_parameters()
        if "lora_" not in name
    }
    adapter_before = {
        name: parameter.detach().clone()
        for name, parameter in trainer.model.named_parameters()
        if "lora_" in name
    }
    assert trainer.ref_model is None  # TRL keeps no copy: the reference is the base, adapter disabled
    _train(trainer)

    after = dict(trainer.model.named_parameters())
    assert adapter_before and all(not after[name].requires_grad for name in base)
    for name, value in base.items():  # never updated: bit-identical
        assert torch.equal(after[name], value), name
    changed = [name for name, value in adapter_before.items() if not torch.equal(after[name], value)]
    assert {name for name in changed if "lora_B" in name} == {n for n in adapter_before if "lora_B" in n}
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(after[name]) for name in adapter_before}

    # the KL to the reference is 0 at the first optimiser step (zero adapter: policy = base) and grows after
    kl = [record["kl"] for record in trainer.state.log_history if "kl" in record]
    assert len(kl) == 4 and abs(kl[0]) < 1e-7 and kl[-1] > 1e-6
