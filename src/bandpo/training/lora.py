"""LoRA adapters (``--lora-r``): the ``peft_config`` TRL's `GRPOTrainer` wraps the policy with.

TRL owns the wrapping (``get_peft_model`` on the policy, in place, before training): the base weights are
frozen and only the adapter's ``lora_A`` / ``lora_B`` matrices train. Nothing in bandpo's loss path changes:
TRL computes ``old_per_token_logps`` with ``self.model``, the policy with its adapter on, which is the
sampling policy; `bandpo.integrations.trl.BandPOTrainer` derives the bounds from them as in a full run. With
``kl_coef`` > 0 TRL holds no reference copy: it computes the reference log-probabilities with the adapter
disabled, which is the initial policy exactly (peft initialises ``lora_B`` to zero). Checkpoints and the run's
``model/`` folder hold the adapter only (``adapter_model.safetensors``, ``adapter_config.json``: TRL's and
peft's convention), loaded with ``PeftModel.from_pretrained(base, folder)``. docs/trl.md, "LoRA", has the
rest (what each setting does, what it costs, measured).

peft is an optional extra (``pip install 'bandpo[lora]'``), imported only when a run sets ``lora_r``.
"""

from __future__ import annotations

from typing import Any

from bandpo.training.config import TrainConfig

__all__ = ["PEFT_INSTALL", "check_peft_installed", "lora_config"]

PEFT_INSTALL = "pip install 'bandpo[lora]'"


def check_peft_installed(config: TrainConfig) -> None:
    """One-line ImportError naming the install when `config` trains an adapter and peft is missing."""
    if not config.lora:
        return
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ImportError(
            f"lora_r={config.lora_r} trains a LoRA adapter, which needs peft: {PEFT_INSTALL}"
        ) from None


def lora_config(config: TrainConfig) -> Any:
    """The `peft.LoraConfig` of `config` (None without ``lora_r``: every weight trains).

    TRL's own mapping of its LoRA flags (``trl.get_peft_config``): a causal-LM task, no bias terms trained.
    """
    if not config.lora:
        return None
    check_peft_installed(config)
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.peft_target_modules,
        bias="none",
    )
