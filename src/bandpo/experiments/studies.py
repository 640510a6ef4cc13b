"""The preregistered studies as data: each study's tasks, settings, arms, seeds and cells, declared once.

A preregistration fixes, before any of its runs, what every run trains with and what is tested. Declared
here, it is what `bandpo compare --confirmatory` checks every record against (`check_records`: a record
made with other settings is refused with the first difference named, so a hand-edited or mistaken
per_seed.json cannot produce a verdict), what it analyses (`confirmatory`), and what
`scripts/power_analysis.py` simulates. docs/experiments.md states the same study in words.

- `EMBEDDED_STUDY`: the confirmatory test of 2026-12-03 on the embedded tasks (Countdown and Reach).
- `REAL_MODEL_PLAN`: the study of SmolLM2-135M-Instruct on `sums_mix` (issue 26) as planned for its pilot:
  settings and arms fixed, no cells and no n yet (`preregistered` is None), so no verdict can be computed
  from it. The pilot's records are checked against it.
- `REAL_MODEL_STUDY`: that study as preregistered on 2026-12-07: the plan's settings with float32 passes
  (`autocast` off), two primary cells, six secondary ones, n = 10 new seeds (200-209).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bandpo import metric_names as mn
from bandpo.experiments.lm_results import effective

__all__ = [
    "EMBEDDED_STUDY",
    "REAL_MODEL_PLAN",
    "REAL_MODEL_STUDY",
    "STUDIES",
    "Arm",
    "Cell",
    "Study",
    "candidate_cells",
    "get_study",
]


@dataclass(frozen=True)
class Arm:
    """One arm: its label, method, the parameters `--methods` gave it, every method parameter resolved, and
    the loss settings it may set for itself (`arms.LOSS_PARAMS`), as per_seed.json's `arms` block holds them."""

    label: str
    method: str
    params: Mapping[str, Any]
    loss: Mapping[str, Any]
    given: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One hypothesis: `arm` − `reference` on `metric` (after RL), paired by seed, on `task`."""

    name: str
    task: str
    arm: str
    reference: str
    metric: str

    @property
    def title(self) -> str:
        return f"{self.task}: {self.arm} − {self.reference}, {self.metric.removeprefix('eval/')}"


@dataclass(frozen=True)
class Study:
    """A study's design. `settings[task]` are the TrainConfig fields (resolved) every run of that task must
    have; `seeds[task]` the seeds of the confirmatory analysis; `fresh_seeds[task]` those of the
    prespecified new-seeds-only sensitivity analysis; `preregistered` where the preregistration is (None: a
    plan, which no verdict may be computed from)."""

    name: str
    settings: Mapping[str, Mapping[str, Any]]
    arms: tuple[Arm, ...]
    seeds: Mapping[str, range] = field(default_factory=dict)
    fresh_seeds: Mapping[str, range] = field(default_factory=dict)
    primary: tuple[Cell, ...] = ()
    secondary: tuple[Cell, ...] = ()
    preregistered: str | None = None

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.settings)

    @property
    def arm_labels(self) -> tuple[str, ...]:
        return tuple(arm.label for arm in self.arms)

    def arm(self, label: str) -> Arm:
        return next(arm for arm in self.arms if arm.label == label)

    def check_records(self, where: str, task: str, header: Mapping[str, Any], runs: list[Any]) -> None:
        """Refuse a per_seed.json (`header` and its `runs`, `lm_results.SeedResult`) of `task` that was not
        made with this study's settings and arms, naming the first difference; runs of other arms are left
        alone (they are not analysed)."""
        difference = self.first_difference(task, header, runs)
        if difference:
            raise ValueError(
                f"{where} was not made with the settings of the study {self.name!r} ({difference}); only runs "
                "of the preregistered settings can enter its analysis (studies.py declares them)"
            )

    def first_difference(self, task: str, header: Mapping[str, Any], runs: list[Any]) -> str:
        """The first way in which the records differ from the study's declaration; "" when none does."""
        if header.get("task") != task:
            return f"task {header.get('task')!r}, the study's is {task!r}"
        if header.get("quick"):
            return "made with --quick"
        config = header.get("config")
        if not isinstance(config, dict) or not config:
            return "no settings block ('config'): cannot show which settings the runs had"
        stored = effective(config)
        for key, wanted in self.settings[task].items():
            if key not in stored:
                return f"{key} not recorded, the study's is {wanted!r}"
            if not _same(stored[key], wanted):
                return f"{key} {stored[key]!r}, the study's is {wanted!r}"
        arms = {arm.get("label"): arm for arm in header.get("arms") or [] if isinstance(arm, dict)}
        for arm in self.arms:
            record = arms.get(arm.label)
            if record is None:
                return f"no arm {arm.label!r} in the file's arms"
            for part in ("params", "loss", "given"):
                if not _same(record.get(part) or {}, dict(getattr(arm, part))):
                    return f"arm {arm.label!r} {part} {record.get(part)!r}, the study's are {dict(getattr(arm, part))!r}"
        k = self.settings[task].get("eval_samples")
        for run in runs:
            if run.label not in self.arm_labels:
                continue
            arm = self.arm(run.label)
            if run.method != arm.method or not _same(run.given, dict(arm.given)):
                return f"run {run.label!r} seed {run.seed}: method {run.method!r} {run.given!r}, the arm is {arm.method!r} {dict(arm.given)!r}"
            if k is not None and run.k != k:
                return f"run {run.label!r} seed {run.seed}: k {run.k!r}, the study's eval_samples is {k!r}"
        return ""


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (1 == 1.0, inf as written), nan equal to nan."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    normal = lambda value: json.loads(json.dumps(value, sort_keys=True, default=str))  # noqa: E731
    return normal(a) == normal(b)


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


# ---- the embedded study (docs/experiments.md, "Preregistered confirmatory test", committed 2026-12-03)

_BAND_PARAMS = {
    "divergence": "kl",
    "delta": 0.05,
    "ratio_max": 10.0,
    "relax": False,
    "eps_low": 0.2,
    "eps_high": 0.28,
}
_DEFAULT_ARMS = (
    Arm("clip", "clip", _frozen({"eps_low": 0.2, "eps_high": 0.2}), _frozen({"dual_clip_c": 10.0})),
    Arm(
        "band",
        "band",
        _frozen({**_BAND_PARAMS, "lower_side": "band", "upper_side": "band"}),
        _frozen({"dual_clip_c": 10.0}),
    ),
    Arm("band_upper", "band_upper", _frozen(_BAND_PARAMS), _frozen({"dual_clip_c": 10.0})),
)
_EMBEDDED_SETTINGS = {  # `bandpo compare`'s default budget, as the preregistration states it
    "model": None,
    "dataset": None,
    "max_steps": 250,
    "prompts_per_step": 32,
    "num_generations": 8,
    "num_iterations": 2,
    "minibatches": 4,
    "micro_batch_size": 64,
    "learning_rate": 3e-4,
    "max_grad_norm": 1.0,
    "agg": "seq_mean_token_mean",
    "scale_rewards": "group",
    "kl_coef": 0.0,
    "entropy_coef": 0.0,
    "temperature": 1.0,
    "max_completion_length": 8,
    "use_chat_template": True,
    "eval_prompts": 256,
    "eval_samples": 16,
    "eval_every": 50,
    "warmup_target_accuracy": 0.35,
    "warmup_max_steps": 1500,
    "warmup_rare_fraction": 0.01,
    "preset": "default",
}

EMBEDDED_STUDY = Study(
    name="embedded-2026-12-03",
    settings=_frozen(
        {
            task: _frozen({**_EMBEDDED_SETTINGS, "task": task, "reward": task})
            for task in ("countdown", "reach")
        }
    ),
    arms=_DEFAULT_ARMS,
    seeds=_frozen({"countdown": range(24), "reach": range(24)}),
    fresh_seeds=_frozen({"countdown": range(8, 24), "reach": range(4, 24)}),
    primary=(
        Cell("P1", "countdown", "band_upper", "clip", mn.EVAL_ENTROPY),
        Cell("P2", "countdown", "band_upper", "clip", mn.EVAL_PASS_AT_K),
        Cell("P3", "countdown", "band", "clip", mn.EVAL_ENTROPY),
        Cell("P4", "reach", "band_upper", "clip", mn.EVAL_ENTROPY),
        Cell("P5", "reach", "band_upper", "clip", mn.EVAL_PASS_AT_K),
        Cell("P6", "reach", "band", "clip", mn.EVAL_ENTROPY),
    ),
    secondary=(
        Cell("S1", "countdown", "band_upper", "band", mn.EVAL_ENTROPY),
        Cell("S2", "reach", "band_upper", "band", mn.EVAL_ENTROPY),
        Cell("S3", "countdown", "band_upper", "clip", mn.EVAL_DISTINCT_CORRECT),
        Cell("S4", "reach", "band_upper", "clip", mn.EVAL_DISTINCT_CORRECT),
    ),
    preregistered="docs/experiments.md, 'Preregistered confirmatory test' (committed 2026-12-03)",
)

# ---- the real-model study (issue 26): its plan, before the pilot; docs/experiments.md, "Real-model study: plan"

REAL_MODEL_SETTINGS = {  # the pilot's and the study's settings (`bandpo compare --set` of the plan's command)
    "model": "smollm2-135m-instruct",
    "dataset": None,
    "task": "sums_mix",
    "reward": "sums_mix",
    "max_steps": 8,
    "prompts_per_step": 4,
    "num_generations": 8,
    "num_iterations": 2,
    "minibatches": 2,
    "learning_rate": 3e-5,
    "max_grad_norm": 1.0,
    "agg": "seq_mean_token_mean",
    "scale_rewards": "group",
    "kl_coef": 0.0,
    "entropy_coef": 0.0,
    "temperature": 0.7,  # sums_mix's pass@8 before RL: 0.281 at 1.0 (128 prompts), 0.469 at 0.7 (64)
    "max_completion_length": 16,
    "use_chat_template": True,
    "eval_prompts": 256,
    "eval_samples": 4,
    "eval_every": 0,
}
REAL_MODEL_PLAN = Study(
    name="smollm2-sums-mix-plan",
    settings=_frozen({"sums_mix": _frozen(REAL_MODEL_SETTINGS)}),
    arms=_DEFAULT_ARMS,
    fresh_seeds=_frozen({"sums_mix": range(0)}),  # every confirmatory seed is new (docs/experiments.md)
)

# ---- the real-model study, preregistered (docs/experiments.md, "Real-model study: preregistration", 2026-12-07),
# its cells and n set from the pilot by the rule committed before the pilot's analysis (docs/results/power-smollm2)

REAL_MODEL_STUDY = Study(
    name="smollm2-sums-mix",
    settings=_frozen({"sums_mix": _frozen({**REAL_MODEL_SETTINGS, "autocast": "off"})}),
    arms=_DEFAULT_ARMS,
    seeds=_frozen({"sums_mix": range(200, 210)}),  # n = 10, every seed new (the pilot's were 100-102)
    primary=(
        Cell("P1", "sums_mix", "band_upper", "clip", mn.EVAL_PASS_AT_K),
        Cell("P2", "sums_mix", "band", "clip", mn.EVAL_ENTROPY),
    ),
    secondary=(
        Cell("S1", "sums_mix", "band_upper", "clip", mn.EVAL_ENTROPY),
        Cell("S2", "sums_mix", "band", "clip", mn.EVAL_PASS_AT_K),
        Cell("S3", "sums_mix", "band_upper", "band", mn.EVAL_ENTROPY),
        Cell("S4", "sums_mix", "band_upper", "clip", mn.EVAL_MEAN_AT_K),
        Cell("S5", "sums_mix", "band", "clip", mn.EVAL_MEAN_AT_K),
        Cell("S6", "sums_mix", "band_upper", "clip", mn.EVAL_DISTINCT_CORRECT),
    ),
    preregistered="docs/experiments.md, 'Real-model study: preregistration' (committed 2026-12-07)",
)

STUDIES: Mapping[str, Study] = _frozen(
    {study.name: study for study in (EMBEDDED_STUDY, REAL_MODEL_PLAN, REAL_MODEL_STUDY)}
)


def candidate_cells(study: Study) -> Study:
    """A plan with the candidate primary cells its pilot informs: band_upper − clip and band − clip on final
    entropy, pass@k and mean@k of each task (the preregistration chooses among them)."""
    cells = tuple(
        Cell(f"{arm}-{metric.removeprefix('eval/')}", task, arm, "clip", metric)
        for task in study.tasks
        for arm in ("band_upper", "band")
        for metric in (mn.EVAL_ENTROPY, mn.EVAL_PASS_AT_K, mn.EVAL_MEAN_AT_K)
    )
    return dataclasses.replace(study, primary=cells)


def get_study(name: str) -> Study:
    """The study called `name`; ValueError listing the declared ones otherwise."""
    try:
        return STUDIES[name]
    except KeyError:
        raise ValueError(f"study {name!r} is not declared; use one of {list(STUDIES)}") from None
