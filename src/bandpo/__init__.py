"""bandpo: Band-constrained Policy Optimization (BandPO, arXiv 2603.04918) for RL of language models.

The maths is pure torch (`bandpo.band`, `bandpo.methods`, `bandpo.losses`, `bandpo.regularizers`,
`bandpo.advantages`); engines (`bandpo.integrations.trl`, `.verl`, `.skyrl`) and the CLI sit on top.
Public names are imported lazily so that `import bandpo` stays cheap and never pulls in a framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bandpo._version import __version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "BandBounds": "bandpo.band",
    "Divergence": "bandpo.band",
    "band_bounds": "bandpo.band",
    "get_divergence": "bandpo.band",
    "register_divergence": "bandpo.band",
    "list_divergences": "bandpo.band",
    "BoundMethod": "bandpo.methods",
    "RatioBounds": "bandpo.methods",
    "get_method": "bandpo.methods",
    "list_methods": "bandpo.methods",
    "register_method": "bandpo.methods",
    "method_defaults_table": "bandpo.methods",
    "PolicyLossOutput": "bandpo.losses",
    "policy_loss": "bandpo.losses",
    "PerTokenPolicyLoss": "bandpo.losses",
    "per_token_policy_loss": "bandpo.losses",
    "policy_metrics": "bandpo.losses",
    "aggregate_loss": "bandpo.losses",
    "band_metrics": "bandpo.losses",  # the former name of bound_metrics, kept as an alias
    "bound_metrics": "bandpo.losses",
    "check_dual_clip_c": "bandpo.losses",
    "kl_penalty": "bandpo.regularizers",
    "entropy_from_logits": "bandpo.regularizers",
    "compute_advantages": "bandpo.advantages",
    "grpo_advantages": "bandpo.advantages",
    "dr_grpo_advantages": "bandpo.advantages",
    "rloo_advantages": "bandpo.advantages",
    "mean_at_k": "bandpo.estimators",
    "pass_at_k": "bandpo.estimators",
    "maj_at_k": "bandpo.estimators",
}

__all__ = [
    "BandBounds",
    "BoundMethod",
    "Divergence",
    "PerTokenPolicyLoss",
    "PolicyLossOutput",
    "RatioBounds",
    "__version__",
    "aggregate_loss",
    "band_bounds",
    "band_metrics",
    "bound_metrics",
    "check_dual_clip_c",
    "compute_advantages",
    "dr_grpo_advantages",
    "entropy_from_logits",
    "get_divergence",
    "get_method",
    "grpo_advantages",
    "kl_penalty",
    "list_divergences",
    "list_methods",
    "maj_at_k",
    "mean_at_k",
    "method_defaults_table",
    "pass_at_k",
    "per_token_policy_loss",
    "policy_loss",
    "policy_metrics",
    "register_divergence",
    "register_method",
    "rloo_advantages",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bandpo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - static view of the lazy exports
    from bandpo.advantages import compute_advantages, dr_grpo_advantages, grpo_advantages, rloo_advantages
    from bandpo.band import (
        BandBounds,
        Divergence,
        band_bounds,
        get_divergence,
        list_divergences,
        register_divergence,
    )
    from bandpo.estimators import maj_at_k, mean_at_k, pass_at_k
    from bandpo.losses import (
        PerTokenPolicyLoss,
        PolicyLossOutput,
        aggregate_loss,
        band_metrics,
        bound_metrics,
        check_dual_clip_c,
        per_token_policy_loss,
        policy_loss,
        policy_metrics,
    )
    from bandpo.methods import (
        BoundMethod,
        RatioBounds,
        get_method,
        list_methods,
        method_defaults_table,
        register_method,
    )
    from bandpo.regularizers import entropy_from_logits, kl_penalty
