"""Start-up self-check of `bandpo.integrations.trl`: the TRL internals that `BandPOTrainer` relies on hold.

`BandPOTrainer` applies per-token bounds through TRL internals (its shuffle and split of a generation batch,
``self.epsilon_low`` / ``self.epsilon_high`` read by ``_compute_loss``, the ``old_per_token_logps`` key), so
it checks them on the installed TRL when it starts and raises `TRLMechanismError`, naming TRL's version and
the supported range, where they no longer hold.
"""

from __future__ import annotations

from typing import Any

import torch
import trl

from bandpo.losses import policy_loss

__all__ = [
    "SUPPORTED_TRL",
    "TRLMechanismError",
    "check_loss_applies_bounds",
    "check_split_carries_bounds",
    "mechanism_error",
]

SUPPORTED_TRL = ">=1.16,<1.17"


class TRLMechanismError(RuntimeError):
    """The installed TRL no longer applies per-token bounds the way `BandPOTrainer` relies on."""


def mechanism_error(what: str) -> TRLMechanismError:
    """The error for a TRL internal that no longer holds (`what`), with TRL's version and the fix."""
    return TRLMechanismError(
        f"bandpo's TRL integration cannot apply per-token bounds with trl {trl.__version__}: {what}; "
        f"bandpo supports trl{SUPPORTED_TRL}: pip install 'trl{SUPPORTED_TRL}'"
    )


def check_split_carries_bounds() -> None:
    """TRL's shuffle and split of a generation batch must carry ratio_low / ratio_high with their rows."""
    from trl.trainer import grpo_trainer

    split = getattr(grpo_trainer, "split_tensor_dict", None)
    shuffle = getattr(grpo_trainer, "shuffle_sequence_dict", None)
    if split is None or shuffle is None:
        raise mechanism_error(
            "trl.trainer.grpo_trainer no longer splits a generation batch with split_tensor_dict and "
            "shuffle_sequence_dict, so the bounds may not follow their tokens"
        )
    rows = torch.arange(4, dtype=torch.float32)[:, None].expand(4, 3)  # (4, 3): row i holds i
    batch = {
        "completion_ids": rows.long(),
        "old_per_token_logps": -rows,
        "ratio_low": rows / 10,
        "ratio_high": rows + 1,
    }
    with torch.random.fork_rng(devices=[]):  # the shuffle draws from the global CPU generator
        parts = split(shuffle(batch), 2)
    for part in parts:
        row = part.get("completion_ids")
        carried = row is not None and all(
            isinstance(part.get(key), torch.Tensor) and part[key].shape == row.shape for key in batch
        )
        if not carried or not (
            torch.equal(part["ratio_low"] * 10, row.float())
            and torch.equal(part["ratio_high"] - 1, row.float())
        ):
            raise mechanism_error(
                "TRL's shuffle_sequence_dict / split_tensor_dict no longer carry extra per-token keys "
                "(ratio_low, ratio_high) with their rows"
            )


def check_loss_applies_bounds(trainer: Any, agg: str) -> None:
    """TRL's `_compute_loss` with per-token epsilons must equal `bandpo.policy_loss` (loss and gradient).

    Runs the trainer's own `_compute_loss` (so a subclass's override too) on a two-row batch (A = +1 and
    A = -1; ratios below, inside and above per-token bounds, and above the dual-clip cap), with TRL's
    log-probability function replaced by fixed log-probs: no forward pass of the model, no optimiser
    state touched, the metrics restored. Eval mode, so that no accumulation scaling or adaptive state
    applies; the entropy bonus, entropy mask, off-policy mask and vLLM correction are switched off for
    the call (they multiply or add to the same per-token loss).

    Args:
        trainer: a constructed `BandPOTrainer`, on every process (TRL's metrics in the loss are collectives).
        agg: the `bandpo.losses` aggregation that ``trainer.loss_type`` implements.
    """
    device = trainer.accelerator.device
    length = min(4, trainer.max_completion_length or 4)

    def tensor(values: list[list[float]]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)[:, :length]  # (2, T)

    old_logp = tensor([[0.5, 0.2, 0.05, 0.3]] * 2).log()
    ratio = tensor([[0.5, 1.3, 1.3, 12.0], [0.5, 0.97, 1.3, 12.0]])
    ratio_low = tensor([[0.9, 0.6, 0.95, 0.7]] * 2)
    ratio_high = tensor([[1.1, 1.5, 1.2, 2.0]] * 2)
    c = trainer.args.delta
    if c is not None:
        ratio_high = ratio_high.clamp(max=c)  # TRL also caps A > 0 ratios at c: keep bounds below it
    logp = (old_logp + ratio.log()).requires_grad_()
    advantages = torch.tensor([1.0, -1.0], device=device)
    mask = torch.ones_like(old_logp, dtype=torch.long)
    inputs = {
        "prompt_ids": torch.zeros((2, 1), dtype=torch.long, device=device),
        "prompt_mask": torch.ones((2, 1), dtype=torch.long, device=device),
        "completion_ids": torch.zeros_like(mask),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old_logp,
        "ref_per_token_logps": logp.detach(),  # k3 = 0 with gradient 0: the KL term adds nothing
        "ratio_low": ratio_low,
        "ratio_high": ratio_high,
        "num_items_in_batch": torch.tensor(
            float(mask.sum() * trainer.accelerator.num_processes), device=device
        ),
    }
    calls: list[bool] = []

    def fixed_logps(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        calls.append(True)
        return logp, torch.zeros_like(logp), torch.zeros((), device=device)

    neutral = {
        "top_entropy_quantile": 1.0,
        "off_policy_mask_threshold": None,
        "use_vllm": False,
        "_entropy_bonus_enabled": False,
        "aux_loss_enabled": False,
    }
    saved = {name: getattr(trainer, name) for name in neutral if hasattr(trainer, name)}
    saved_metrics = {
        mode: {key: list(v) for key, v in values.items()} for mode, values in trainer._metrics.items()
    }
    training = trainer.model.training
    try:
        for name in saved:
            setattr(trainer, name, neutral[name])
        trainer._get_per_token_logps_and_entropies = fixed_logps  # type: ignore[method-assign]
        trainer.model.eval()
        loss = trainer._compute_loss(trainer.model, inputs)
    finally:
        del trainer._get_per_token_logps_and_entropies
        for name, value in saved.items():
            setattr(trainer, name, value)
        trainer.model.train(training)
        for mode, values in saved_metrics.items():
            trainer._metrics[mode].clear()
            trainer._metrics[mode].update(values)
    if not calls:
        raise mechanism_error(
            "GRPOTrainer._compute_loss no longer gets the policy's log-probabilities from "
            "_get_per_token_logps_and_entropies"
        )
    max_len = trainer.max_completion_length if agg == "seq_mean_token_sum_norm" else None
    ours = policy_loss(
        logp,
        old_logp,
        advantages,
        mask,
        bounds=(ratio_low, ratio_high),
        agg=agg,
        dual_clip_c=c,
        max_len=max_len,
    ).loss
    (grad_trl,) = torch.autograd.grad(loss, logp, retain_graph=True)
    (grad_ours,) = torch.autograd.grad(ours, logp)
    if not (
        torch.allclose(loss.detach(), ours.detach(), rtol=1e-5, atol=1e-6)
        and torch.allclose(grad_trl, grad_ours, rtol=1e-5, atol=1e-6)
    ):
        raise mechanism_error(
            f"on a check batch, TRL's loss is {loss.item():.6g} where bandpo.policy_loss gives "
            f"{ours.item():.6g} (gradients {grad_trl.flatten().tolist()} vs {grad_ours.flatten().tolist()}); "
            "GRPOTrainer._compute_loss must clamp the ratio to [1 - self.epsilon_low, 1 + self.epsilon_high] "
            "per token, cap it at args.delta and take the old log-probs from inputs['old_per_token_logps']"
        )
