"""The metric catalogue: every metric key bandpo logs, in one place.

Keys are `namespace/name` in snake case. Losses, integrations, the trainer, plots and reports import these
constants and never spell a key by hand, so a renamed metric breaks loudly instead of silently vanishing
from a plot.
"""

from __future__ import annotations

# Probability bins of the old (sampling) probability p_old used by the per-bin diagnostics.
# Half-open [lo, hi) except the last, which includes 1.
PROB_BIN_EDGES: tuple[float, ...] = (0.0, 0.01, 0.1, 0.5, 0.9, 1.0)
PROB_BIN_LABELS: tuple[str, ...] = ("p0_001", "p001_01", "p01_05", "p05_09", "p09_1")

# --- policy loss (bandpo.losses.policy_loss) -------------------------------------------------------
LOSS_POLICY = "loss/policy"
LOSS_KL = "loss/kl"
LOSS_TOTAL = "loss/total"

CLIP_FRAC = "clip/frac"  # fraction of valid tokens whose clipped term is active (either side)
CLIP_FRAC_UP = "clip/frac_up"  # A > 0 and ratio > ratio_high: gradient removed
CLIP_FRAC_DOWN = "clip/frac_down"  # A < 0 and ratio < ratio_low: gradient removed
CLIP_FRAC_DUAL = "clip/frac_dual"  # A < 0 and the dual-clip cap is active
BOUND_BINDING_FRAC = "clip/frac_bound_binding"  # bound narrower than the ratio actually reached

BOUNDS_LOW_MEAN = "bounds/ratio_low_mean"
BOUNDS_HIGH_MEAN = "bounds/ratio_high_mean"

RATIO_MEAN = "ratio/mean"
RATIO_MAX = "ratio/max"
APPROX_KL_K1 = "kl/approx_k1"
APPROX_KL_K3 = "kl/approx_k3"


def clip_frac_up_bin(label: str) -> str:
    """Key of the upward clip fraction among tokens whose p_old lies in the bin `label`."""
    return f"clip/frac_up_{label}"


def clip_frac_down_bin(label: str) -> str:
    """Key of the downward clip fraction among tokens whose p_old lies in the bin `label`."""
    return f"clip/frac_down_{label}"


CLIP_FRAC_UP_BINS: tuple[str, ...] = tuple(clip_frac_up_bin(label) for label in PROB_BIN_LABELS)
CLIP_FRAC_DOWN_BINS: tuple[str, ...] = tuple(clip_frac_down_bin(label) for label in PROB_BIN_LABELS)

# --- training (bandpo.training, bandpo.integrations.trl) -------------------------------------------
TRAIN_STEP = "train/step"
TRAIN_REWARD = "train/reward"
TRAIN_REWARD_STD = "train/reward_std"
TRAIN_ACCURACY = "train/accuracy"
TRAIN_ENTROPY = "train/entropy"
TRAIN_COMPLETION_LENGTH = "train/completion_length"
TRAIN_LEARNING_RATE = "train/learning_rate"
TRAIN_GRAD_NORM = "train/grad_norm"
TRAIN_STEP_TIME = "train/step_time_s"
REWARD_ERRORS = "reward/errors"  # samples whose reward function raised or timed out (scored 0)

# --- evaluation (held-out prompts) ------------------------------------------------------------------
EVAL_MEAN_AT_K = "eval/mean_at_k"
EVAL_PASS_AT_1 = "eval/pass_at_1"
EVAL_PASS_AT_K = "eval/pass_at_k"
EVAL_MAJ_AT_K = "eval/maj_at_k"
EVAL_ENTROPY = "eval/entropy"
EVAL_DISTINCT_CORRECT = "eval/distinct_correct"  # distinct correct answers per prompt
EVAL_RARE_PASS_AT_K = "eval/rare_pass_at_k"  # pass@k on prompts that need the rare strategy
EVAL_RARE_MEAN_AT_K = "eval/rare_mean_at_k"
EVAL_RARE_USAGE = "eval/rare_usage"  # fraction of samples that use the rare strategy

# --- per-bin token counts ----------------------------------------------------------------------------
# Valid tokens whose p_old lies in a bin, per micro-batch (bandpo.losses.band_metrics). The TRL integration
# logs a bin's clip fractions only for micro-batches with such tokens, so a step without any has no value
# for that key (missing, not 0).


def clip_tokens_bin(label: str) -> str:
    """Key of the number of valid tokens whose p_old lies in the bin `label`."""
    return f"clip/tokens_{label}"


CLIP_TOKENS_BINS: tuple[str, ...] = tuple(clip_tokens_bin(label) for label in PROB_BIN_LABELS)

# every constant and key helper above is public
__all__ = sorted(name for name in dir() if not name.startswith("_") and name not in {"annotations"})
