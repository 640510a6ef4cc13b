"""The metric catalogue: every metric bandpo logs, declared once with everything about it.

Keys are `namespace/name` in snake case. Losses, integrations, the trainer, plots and reports import these
constants and never spell a key by hand, so a renamed metric breaks loudly instead of silently vanishing
from a plot. Each key is declared with its `Metric` entry: the label tables and plots print (``{k}`` stands
for the samples per prompt, ``{rare}`` for what the task's rare strategy is called), the digits a report
shows, how a run's per-step values become one number (`over_steps`), and whether it is a fraction in [0, 1].
The views at the end say which metrics each report shows, in order; reports, plots and the CLI read them,
so adding a metric to the comparison report is one declaration and one line in a view (docs/layout.md,
"Adding a metric").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

_IMPORTED = frozenset(dir())

RARE_STRATEGY = "the rare strategy"  # `{rare}` in a label, unless a caller names the strategy (the CLI: '*')
OVER_STEPS = ("last", "mean", "sum", "max")


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One catalogued metric.

    Attributes:
        key: the `namespace/name` key logged in metrics.jsonl and evaluation files.
        label: its name in the comparison report's tables and the plots' titles.
        short: a shorter name (paired differences' headers, plot legends and axes); None: the label.
        summary: its row in `bandpo train`'s before/after summary; None: the label.
        digits: decimals a report prints.
        over_steps: how a run's per-step values become one: its ``last`` value (an evaluation after RL), their
            ``mean`` over the steps that logged a finite value (weighted by `weight` where every such step
            logged it), their ``sum`` or their ``max``.
        weight: key of the per-step weight of the mean (a bin's token count); None: unweighted.
        fraction: a value in [0, 1] (records holding another are refused).
        unit: a plot's y axis; "": the short name.
    """

    key: str
    label: str
    short: str | None = None
    summary: str | None = None
    digits: int = 3
    over_steps: Literal["last", "mean", "sum", "max"] = "last"
    weight: str | None = None
    fraction: bool = False
    unit: str = ""

    def __post_init__(self) -> None:
        namespace, _, name = self.key.partition("/")
        if not namespace or not name or self.key != self.key.strip().lower():
            raise ValueError(
                f"metric key {self.key!r} must be 'namespace/name' in snake case, e.g. 'eval/pass_at_k'"
            )
        if not self.label:
            raise ValueError(f"metric {self.key!r}: label is empty; give the name its tables print")
        if isinstance(self.digits, bool) or not isinstance(self.digits, int) or self.digits < 0:
            raise ValueError(f"metric {self.key!r}: digits={self.digits!r} must be an integer >= 0")
        if self.over_steps not in OVER_STEPS:
            raise ValueError(
                f"metric {self.key!r}: over_steps={self.over_steps!r} must be one of {OVER_STEPS}"
            )
        for form in ("label", "short", "summary"):
            try:
                self.text(form)  # type: ignore[arg-type]
            except (KeyError, IndexError, ValueError):
                raise ValueError(
                    f"metric {self.key!r}: {form} {getattr(self, form)!r} may hold only {{k}} and {{rare}} "
                    "in braces"
                ) from None
        if self.weight is not None and self.over_steps != "mean":
            raise ValueError(
                f"metric {self.key!r}: a weight needs over_steps='mean', got {self.over_steps!r}"
            )

    def text(
        self,
        form: Literal["label", "short", "summary"] = "label",
        *,
        k: int | str | None = None,
        rare: str = RARE_STRATEGY,
    ) -> str:
        """The label (or its `short` or `summary` form), ``{k}`` and ``{rare}`` filled in (k None: "k")."""
        template = {"label": self.label, "short": self.short, "summary": self.summary}[form] or self.label
        return template.format(k="k" if k is None else k, rare=rare)

    def format(self, value: float) -> str:
        """`value` with the metric's digits."""
        return f"{value:.{self.digits}f}"


_CATALOGUE: dict[str, Metric] = {}


def register_metric(metric: Metric) -> str:
    """Add `metric` to the catalogue and return its key; a key already catalogued is refused."""
    if metric.key in _CATALOGUE:
        raise ValueError(f"metric {metric.key!r} is already catalogued; pick another key")
    _CATALOGUE[metric.key] = metric
    return metric.key


def metric(key: str) -> Metric:
    """The catalogue entry of `key`."""
    try:
        return _CATALOGUE[key]
    except KeyError:
        raise ValueError(
            f"metric {key!r} is not catalogued; declare it in bandpo.metric_names (or `register_metric`)"
        ) from None


def catalogued() -> tuple[Metric, ...]:
    """Every catalogued metric, in declaration order."""
    return tuple(_CATALOGUE.values())


def _declare(key: str, label: str, **fields: Any) -> str:
    return register_metric(Metric(key=key, label=label, **fields))


def finite_value(value: Any) -> float | None:
    """`value` as a float when it is a finite number; None for a step that logged nothing usable (absent, nan,
    inf, not a number), which `over_steps` leaves out."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def over_steps(records: Iterable[Mapping[str, Any]], key: str) -> float:
    """One value of `key` for a run from its per-step `records`, as its entry's `over_steps` says; steps that
    logged no finite value (absent or nan) are left out, and nan when none did.

    A weighted mean (a bin's clip fraction, weighted by the bin's token count) is the fraction among all the
    bin's tokens over the run rather than a mean of per-step fractions; it falls back to the plain mean where
    a step lacks the weight (logs written before the weights were).
    """
    entry = metric(key)
    pairs = [
        (finite_value(r.get(key)), finite_value(r.get(entry.weight)) if entry.weight else None)
        for r in records
    ]
    pairs = [(value, weight) for value, weight in pairs if value is not None]
    if not pairs:
        return math.nan
    if entry.over_steps == "last":
        return pairs[-1][0]
    if entry.over_steps == "sum":
        return sum(value for value, _ in pairs)
    if entry.over_steps == "max":
        return max(value for value, _ in pairs)
    if entry.weight and all(weight is not None for _, weight in pairs):
        total = sum(weight for _, weight in pairs)
        if total > 0:
            return sum(value * weight for value, weight in pairs) / total
    return sum(value for value, _ in pairs) / len(pairs)


# Probability bins of the old (sampling) probability p_old used by the per-bin diagnostics.
# Half-open [lo, hi) except the last, which includes 1.
PROB_BIN_EDGES: tuple[float, ...] = (0.0, 0.01, 0.1, 0.5, 0.9, 1.0)
PROB_BIN_LABELS: tuple[str, ...] = ("p0_001", "p001_01", "p01_05", "p05_09", "p09_1")


def prob_bin_text(label: str) -> str:
    """`p_old in [0.01, 0.1)` for the bin `label` (the last bin is closed: `[0.9, 1]`)."""
    index = PROB_BIN_LABELS.index(label)
    lo, hi = PROB_BIN_EDGES[index], PROB_BIN_EDGES[index + 1]
    return f"p_old in [{lo:g}, {hi:g}{']' if index == len(PROB_BIN_LABELS) - 1 else ')'}"


_FRACTION = {"fraction": True, "over_steps": "mean", "unit": "fraction of tokens"}

# --- policy loss (bandpo.losses.policy_loss) -------------------------------------------------------
LOSS_POLICY = _declare("loss/policy", "policy loss", over_steps="mean")
LOSS_KL = _declare("loss/kl", "KL penalty", over_steps="mean")
LOSS_TOTAL = _declare("loss/total", "total loss", over_steps="mean")

# fraction of valid tokens whose clipped term is active (either side)
CLIP_FRAC = _declare("clip/frac", "clipped (either side)", **_FRACTION)
# A > 0 and ratio > ratio_high: gradient removed
CLIP_FRAC_UP = _declare(
    "clip/frac_up", "clipped up (A > 0, ratio > high)", short="up: A>0, r>high", **_FRACTION
)
# A < 0 and ratio < ratio_low: gradient removed
CLIP_FRAC_DOWN = _declare(
    "clip/frac_down", "clipped down (A < 0, ratio < low)", short="down: A<0, r<low", **_FRACTION
)
# A < 0 and the dual-clip cap is active
CLIP_FRAC_DUAL = _declare("clip/frac_dual", "capped by the dual clip (A < 0)", short="dual-clip", **_FRACTION)
# bound narrower than the ratio actually reached
BOUND_BINDING_FRAC = _declare("clip/frac_bound_binding", "bound binding", **_FRACTION)

BOUNDS_LOW_MEAN = _declare("bounds/ratio_low_mean", "mean lower ratio bound", over_steps="mean")
BOUNDS_HIGH_MEAN = _declare("bounds/ratio_high_mean", "mean upper ratio bound", over_steps="mean")

RATIO_MEAN = _declare("ratio/mean", "mean ratio", over_steps="mean")
RATIO_MAX = _declare("ratio/max", "largest ratio", over_steps="max")
APPROX_KL_K1 = _declare("kl/approx_k1", "approximate KL (k1)", over_steps="mean", digits=4)
APPROX_KL_K3 = _declare("kl/approx_k3", "approximate KL (k3)", over_steps="mean", digits=4)


def clip_frac_up_bin(label: str) -> str:
    """Key of the upward clip fraction among tokens whose p_old lies in the bin `label`."""
    return f"clip/frac_up_{label}"


def clip_frac_down_bin(label: str) -> str:
    """Key of the downward clip fraction among tokens whose p_old lies in the bin `label`."""
    return f"clip/frac_down_{label}"


# --- per-bin token counts ----------------------------------------------------------------------------
# Valid tokens whose p_old lies in a bin, per micro-batch (bandpo.losses.band_metrics). The TRL integration
# logs a bin's clip fractions only for micro-batches with such tokens, so a step without any has no value
# for that key (missing, not 0).


def clip_tokens_bin(label: str) -> str:
    """Key of the number of valid tokens whose p_old lies in the bin `label`."""
    return f"clip/tokens_{label}"


CLIP_FRAC_UP_BINS: tuple[str, ...] = tuple(
    _declare(
        clip_frac_up_bin(label),
        f"clipped up, {prob_bin_text(label)}",
        short=f"up, {prob_bin_text(label)}",
        weight=clip_tokens_bin(label),
        **_FRACTION,
    )
    for label in PROB_BIN_LABELS
)
CLIP_FRAC_DOWN_BINS: tuple[str, ...] = tuple(
    _declare(
        clip_frac_down_bin(label),
        f"clipped down, {prob_bin_text(label)}",
        short=f"down, {prob_bin_text(label)}",
        weight=clip_tokens_bin(label),
        **_FRACTION,
    )
    for label in PROB_BIN_LABELS
)

# --- training (bandpo.training, bandpo.integrations.trl) -------------------------------------------
TRAIN_STEP = _declare("train/step", "RL step", digits=0)
TRAIN_REWARD = _declare("train/reward", "training reward", short="reward", unit="reward", over_steps="mean")
TRAIN_REWARD_STD = _declare("train/reward_std", "reward std within a group", over_steps="mean")
TRAIN_ACCURACY = _declare(
    "train/accuracy", "training accuracy", short="accuracy", fraction=True, over_steps="mean"
)
TRAIN_ENTROPY = _declare(
    "train/entropy",
    "token entropy of the samples",
    short="token entropy (nats)",
    unit="nats",
    over_steps="mean",
)
TRAIN_COMPLETION_LENGTH = _declare("train/completion_length", "completion length (tokens)", over_steps="mean")
TRAIN_LEARNING_RATE = _declare("train/learning_rate", "learning rate", digits=6)
TRAIN_GRAD_NORM = _declare("train/grad_norm", "gradient norm", over_steps="mean")
TRAIN_STEP_TIME = _declare("train/step_time_s", "wall time (s)", digits=1, over_steps="sum")
# samples whose reward function raised or timed out (scored 0)
REWARD_ERRORS = _declare("reward/errors", "failed rewards", digits=0, over_steps="sum")

# --- evaluation (held-out prompts; a run's value is its evaluation after RL) ------------------------
EVAL_MEAN_AT_K = _declare(
    "eval/mean_at_k", "mean@{k} (= pass@1)", short="mean@{k}", summary="mean@{k}", fraction=True
)
EVAL_PASS_AT_1 = _declare("eval/pass_at_1", "pass@1", fraction=True)
EVAL_PASS_AT_K = _declare("eval/pass_at_k", "pass@{k}", fraction=True)
EVAL_MAJ_AT_K = _declare("eval/maj_at_k", "maj@{k}", fraction=True)
EVAL_ENTROPY = _declare(
    "eval/entropy", "final entropy (eval, nats/token)", short="final entropy", summary="entropy (nats/token)"
)
# distinct correct answers per prompt
EVAL_DISTINCT_CORRECT = _declare(
    "eval/distinct_correct",
    "distinct correct / prompt",
    short="distinct correct",
    summary="distinct correct answers/prompt",
    digits=2,
)
# pass@k on prompts that need the rare strategy
EVAL_RARE_PASS_AT_K = _declare(
    "eval/rare_pass_at_k", "pass@{k}, prompts needing {rare}", short="rare pass@{k}", fraction=True
)
EVAL_RARE_MEAN_AT_K = _declare("eval/rare_mean_at_k", "mean@{k}, prompts needing {rare}", fraction=True)
# fraction of samples that use the rare strategy
EVAL_RARE_USAGE = _declare("eval/rare_usage", "samples using {rare}", fraction=True)

CLIP_TOKENS_BINS: tuple[str, ...] = tuple(
    _declare(clip_tokens_bin(label), f"tokens with {prob_bin_text(label)}", digits=0, over_steps="sum")
    for label in PROB_BIN_LABELS
)

# --- views: which metrics each report shows, in order ------------------------------------------------
# report.md's table of the held-out evaluation after training (bandpo.experiments.lm_report)
COMPARISON_COLUMNS: tuple[str, ...] = (
    EVAL_MEAN_AT_K,
    EVAL_PASS_AT_K,
    EVAL_MAJ_AT_K,
    EVAL_DISTINCT_CORRECT,
    EVAL_RARE_PASS_AT_K,
    EVAL_RARE_USAGE,
    EVAL_ENTROPY,
)
# report.md's paired differences against the reference arm, one Holm family
PAIRED_DIFFERENCES: tuple[str, ...] = (
    EVAL_MEAN_AT_K,
    EVAL_PASS_AT_K,
    EVAL_MAJ_AT_K,
    EVAL_DISTINCT_CORRECT,
    EVAL_RARE_PASS_AT_K,
    EVAL_ENTROPY,
)
# sweep_<param>.png's panels: accuracy, diversity and entropy against the swept parameter
SWEEP_PANELS: tuple[str, ...] = (
    EVAL_MEAN_AT_K,
    EVAL_PASS_AT_K,
    EVAL_DISTINCT_CORRECT,
    EVAL_RARE_PASS_AT_K,
    EVAL_ENTROPY,
)
# compare_eval.png's panels: the held-out evaluations during training
EVAL_CURVES: tuple[str, ...] = (EVAL_MEAN_AT_K, EVAL_PASS_AT_K, EVAL_DISTINCT_CORRECT)
# `bandpo train`'s before/after summary (bandpo.cli.train)
RUN_SUMMARY_ROWS: tuple[str, ...] = (
    EVAL_MEAN_AT_K,
    EVAL_PASS_AT_K,
    EVAL_MAJ_AT_K,
    EVAL_ENTROPY,
    EVAL_DISTINCT_CORRECT,
    EVAL_RARE_PASS_AT_K,
    EVAL_RARE_MEAN_AT_K,
    EVAL_RARE_USAGE,
)

# every constant, view, key helper and catalogue function above is public
__all__ = sorted(name for name in dir() if not name.startswith("_") and name not in _IMPORTED)
