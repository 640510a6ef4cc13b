"""TRL's names for bandpo's aggregations, in a module that imports neither TRL nor the demo app.

`bandpo.integrations.trl` (the adapter) and `bandpo.training.config` (what `bandpo train` offers) both read
`AGG_TO_LOSS_TYPE` from here, so the adapter never imports the app and the mapping is written once.
"""

from __future__ import annotations

from bandpo.losses import AGG_MODES

__all__ = ["AGG_TO_LOSS_TYPE"]

_LOSS_TYPE_OF_AGG = {
    "token_mean": "bnpo",
    "seq_mean_token_mean": "grpo",
    "seq_mean_token_sum_norm": "dr_grpo",
}
AGG_TO_LOSS_TYPE: dict[str, str] = {
    agg: _LOSS_TYPE_OF_AGG[agg] for agg in AGG_MODES if agg in _LOSS_TYPE_OF_AGG
}
"""`bandpo.losses.AGG_MODES` names that TRL implements, in that order, and TRL's ``loss_type`` for each:
``token_mean`` → ``bnpo`` (per micro-batch), ``seq_mean_token_mean`` → ``grpo``, ``seq_mean_token_sum_norm`` →
``dr_grpo`` (divides by rows × ``max_completion_length``). ``seq_mean_token_sum`` has no TRL loss type."""
