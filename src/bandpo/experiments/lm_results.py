"""The records of an LM comparison's runs: where a run lives (`PlannedRun`), its completion marker and wall-time
log, the settings it ran with against the plan's, and its results: read from the run directories, kept in
per_seed.json, and carried over from another comparison's per_seed.json (`bandpo compare --reuse FILE`).

Every run of a comparison shares one budget: `FULL_SETTINGS`, or `QUICK_SETTINGS` with its warning
(`quick_note`, said by the command and written at the top of report.md).

per_seed.json is small (a few hundred bytes per run) and holds everything report.md's tables are computed
from: each run's held-out evaluation before and after RL, its wall time and its clip fractions by p_old bin.
Committed next to report.md, it lets anyone recompute every verdict without the run directories
(`bandpo compare --report-only DIR`).

Reuse: a study larger than one sitting, or one that adds seeds to a committed comparison, needs the runs
already finished elsewhere without their run directories (which are never committed). A per_seed.json record
stands for a planned run when its arm (label, method, given parameters) and seed are the run's, and the file's
shared settings are the plan's: the task, the budget and every training field except the ones an arm or a
seed sets. A record that matches the arm and seed but not the settings is refused with the field named:
silently mixing budgets would corrupt the comparison.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo.experiments.arms import LOSS_PARAMS, MethodSpec
from bandpo.experiments.report import machine_info
from bandpo.methods import settable_parameters
from bandpo.training._atomic import write_text_atomic
from bandpo.training.config import RUN_INDEPENDENT_FIELDS
from bandpo.training.run_dir import RunDir

__all__ = [
    "DONE_MARKER",
    "FULL_SETTINGS",
    "OPEN_CALL_SUFFIX",
    "PER_SEED_FILE",
    "QUICK_SETTINGS",
    "WALL_LOG",
    "PlannedRun",
    "SeedResult",
    "call_records",
    "clip_rule",
    "comparable",
    "effective",
    "interrupted_calls",
    "load_run",
    "quick_note",
    "read_per_seed",
    "reused_results",
    "settings_difference",
    "write_per_seed",
]

DONE_MARKER = "compare_done.json"
WALL_LOG = "compare_wall.json"  # {"interrupted_calls": [...]}: the calls that did not finish the run
OPEN_CALL_SUFFIX = ".call.json"  # runs/<run>.call.json: a call is training the run (removed when it ends)
PER_SEED_FILE = "per_seed.json"
PER_SEED_FORMAT = 1
ALL_TOKENS = "all"  # key of the clip fractions over every token, beside the p_old bins

# Shared settings of every run (on top of TrainConfig's "default" preset). The full comparison keeps the
# default budget (250 RL steps of 32 prompts x 8 samples); --quick trades steps and evaluation prompts for time.
FULL_SETTINGS: dict[str, Any] = {"eval_every": 50}
QUICK_SETTINGS: dict[str, Any] = {"max_steps": 60, "eval_prompts": 128, "eval_every": 30, "save_every": 20}


def quick_note(settings: dict[str, Any]) -> str:
    """The warning of a --quick comparison, with the budget it actually ran (``--steps`` changes it)."""
    steps = settings.get("max_steps", QUICK_SETTINGS["max_steps"])
    prompts = settings.get("eval_prompts", QUICK_SETTINGS["eval_prompts"])
    return (
        f"quick budget ({steps} RL steps, {prompts} evaluation prompts, 3 seeds by default): a smoke test of the "
        "pipeline, not evidence. At this budget the ranking of the methods is noise (it changes from one "
        "machine to another); compare methods with the default budget and 8 seeds."
    )


@dataclass(frozen=True)
class PlannedRun:
    spec: MethodSpec
    seed: int
    run_dir: Path

    @classmethod
    def under(cls, output_dir: Path, spec: MethodSpec, seed: int) -> PlannedRun:
        """The run of `spec` and `seed` in the comparison folder `output_dir` (runs/<slug>-seed<k>)."""
        return cls(spec=spec, seed=seed, run_dir=Path(output_dir) / "runs" / f"{spec.slug}-seed{seed}")

    @property
    def name(self) -> str:
        return f"{self.spec.label} seed {self.seed}"

    @property
    def files(self) -> RunDir:
        """The run directory's own files and state (`bandpo.training.run_dir.RunDir`)."""
        return RunDir(self.run_dir)


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The fields that define what a run measures (not where it is written or how many threads it uses)."""
    return {key: value for key, value in config.items() if key not in RUN_INDEPENDENT_FIELDS}


def effective(config: dict[str, Any]) -> dict[str, Any]:
    """The settings a run actually uses: a field left to its automatic value (e.g. `max_completion_length`
    None) takes the value of the config's `resolved` entry, which older run records wrote as the field itself."""
    resolved = config.get("resolved") or {}
    values = {key: value for key, value in config.items() if key != "resolved"}
    for key, value in resolved.items():
        if key in values:
            values[key] = value
    return values


def _same_number(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def settings_difference(stored: dict[str, Any], config: Any, *, skip: frozenset[str] = frozenset()) -> str:
    """The fields (but `skip`) in which a run's `stored` settings differ from the planned `config`, both resolved
    by `effective`, as `field: stored there, planned now` (the first four); "" when none does.

    A field the stored record lacks (added to `TrainConfig` after it was written) is not compared: the run used
    the behaviour before that field existed, which the field's default keeps.
    """
    planned = effective(comparable(config.to_dict()))
    different = sorted(
        key
        for key in planned
        if key not in skip and key in stored and not _same_number(stored[key], planned[key])
    )
    return ", ".join(f"{key}: {stored[key]!r} there, {planned[key]!r} now" for key in different[:4])


def call_records(run: PlannedRun) -> list[dict[str, Any]]:
    """Every call that trained the run without finishing it (its `WALL_LOG`), oldest first, as
    ``{"wall_s", "cpu_s", "code", "ended", "machine"}`` (the CPU model: recorded since 2026-12-07); logs
    written before calls recorded CPU time and code give ``cpu_s`` and ``code`` None."""
    path = run.run_dir / WALL_LOG
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
        if isinstance(data.get("interrupted_calls"), list):
            return [dict(call) for call in data["interrupted_calls"]]
        walls = [float(value) for value in data.get("interrupted_calls_s", [])]
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
        return []
    return [{"wall_s": wall, "cpu_s": None, "code": None, "ended": "stopped"} for wall in walls]


def interrupted_calls(run: PlannedRun) -> list[float]:
    """The seconds of the calls that stopped before the run finished (its `WALL_LOG`)."""
    return [float(call.get("wall_s") or 0.0) for call in call_records(run)]


@dataclass
class SeedResult:
    """One finished run: its arm, seed, evaluations before and after RL, wall time and clip fractions."""

    label: str
    method: str
    given: dict[str, Any]  # the parameters the arm set (`--methods NAME:key=value`)
    seed: int
    k: int | None
    before: dict[str, float]
    after: dict[str, float]
    wall_time_s: float
    clip: dict[str, list[float]] = field(default_factory=dict)  # bin (or "all") -> [up, down]
    machine: str | None = None  # the CPU the run trained on (per_seed.json files before 0.6 name it once)
    source: str | None = None  # the per_seed.json it was reused from (`--reuse`); None: trained here
    # recorded since the records became auditable (absent from older files: "not recorded")
    cpu_time_s: float | None = None  # CPU seconds of every call that trained the run (the known ones)
    calls: list[dict[str, Any]] | None = None  # each call: wall_s, cpu_s, code, ended ("finished", ...)
    code: dict[str, Any] | None = None  # the code of the call that finished it (`provenance.code_version`)

    def value(self, key: str, *, before: bool = False) -> float:
        value = (self.before if before else self.after).get(key)
        return math.nan if value is None else float(value)


def training_records(run_dir: Path) -> list[dict[str, Any]]:
    """The training records (those with a reward) of a run's metrics.jsonl, in step order."""
    records = [r for r in RunDir(Path(run_dir)).metrics_records(missing_ok=True) if mn.TRAIN_REWARD in r]
    return sorted(records, key=lambda r: r.get(mn.TRAIN_STEP, 0))


def clip_rule(weighted: bool, every_bin_logged: bool) -> str:
    """How the clip-fraction table averages, including what the runs' logs say about empty bins."""
    text = (
        "the fraction among the tokens of the bin, over the RL steps that logged a value for the bin "
        + ("(weighted by the bin's token count per step)" if weighted else "(mean of the per-step fractions)")
        + ", then the mean over seeds. A step that logged no value (or nan) for a bin, as a step with no token "
        "in the bin should, is left out of that bin's mean rather than counted as 0"
    )
    if every_bin_logged:
        text += (
            "; every step of these runs logged every bin, so if their trainer wrote 0 for an empty bin, such "
            "steps count as 0 here"
        )
    return text + ":"


def _clip_fractions(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """[up, down] over the run's steps (`metric_names.over_steps`: a bin's weighted by its token count) for
    every token and each p_old bin."""
    clip = {ALL_TOKENS: [mn.over_steps(records, mn.CLIP_FRAC_UP), mn.over_steps(records, mn.CLIP_FRAC_DOWN)]}
    for bin_label in mn.PROB_BIN_LABELS:
        clip[bin_label] = [
            mn.over_steps(records, mn.clip_frac_up_bin(bin_label)),
            mn.over_steps(records, mn.clip_frac_down_bin(bin_label)),
        ]
    return clip


def clip_logging(records: list[dict[str, Any]]) -> dict[str, bool]:
    """Whether the runs' logs weighted bins by their token counts, and whether every step logged every bin."""
    weighted = any(mn.clip_tokens_bin(label) in r for r in records for label in mn.PROB_BIN_LABELS)
    every = bool(records) and all(
        mn.finite_value(r.get(mn.clip_frac_up_bin(label))) is not None
        for r in records
        for label in mn.PROB_BIN_LABELS
    )
    return {"weighted": weighted, "every_bin_logged": every}


def load_run(run: PlannedRun) -> tuple[SeedResult, list[dict[str, Any]]] | None:
    """The result of a finished run and its training records; None when it has no summary.json yet."""
    if not run.files.finished:
        return None
    summary = run.files.read_summary(fix=f"delete the run directory {run.run_dir} to train that run again")
    records = training_records(run.run_dir)
    marker_path = run.run_dir / DONE_MARKER
    marker = json.loads(marker_path.read_text()) if marker_path.exists() else {}
    wall = marker.get("wall_time_s")
    if wall is None:  # no marker: the run's last call, plus the interrupted ones compare recorded
        wall = float(summary.get("wall_time_s", math.nan)) + sum(interrupted_calls(run))
    before, after = summary.get("before") or {}, summary.get("after") or {}
    result = SeedResult(
        label=run.spec.label,
        method=run.spec.name,
        given=dict(run.spec.params),
        seed=run.seed,
        k=after.get("k"),
        before={key: value for key, value in (before.get("metrics") or {}).items() if value is not None},
        after={key: value for key, value in (after.get("metrics") or {}).items() if value is not None},
        wall_time_s=float(wall),
        clip=_clip_fractions(records),
        machine=_machine_of(marker),
        cpu_time_s=marker.get("cpu_time_s"),
        calls=marker.get("calls"),
        code=marker.get("code"),
    )
    return result, records


def _machine_of(marker: dict[str, Any]) -> str:
    """The CPU a run trained on: its completion marker's record, else this machine's (where it was read). A run
    whose calls ran on different CPU models (resumed elsewhere) gets them all, joined by " + ", so that no seed
    holding it counts as trained on one CPU model."""
    machine = marker.get("machine")
    if isinstance(machine, dict):
        machine = machine.get("processor")
    machine = str(machine) if machine else str(machine_info()["processor"])
    per_call = {
        str(call["machine"])
        for call in marker.get("calls") or []
        if isinstance(call, dict) and call.get("machine")
    }
    return " + ".join(sorted(per_call | {machine})) if per_call - {machine} else machine


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None  # a missing value reads back as nan; inf (e.g. ratio_max) stays Python's Infinity
    if isinstance(value, dict):
        return {key: _json_number(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_number(item) for item in value]
    return value


def _record(result: SeedResult) -> dict[str, Any]:
    record = asdict(result)
    for optional in OPTIONAL_KEYS:  # absent rather than null, as in files written before they existed
        if record[optional] is None:
            del record[optional]
    return record


def write_per_seed(path: Path, results: Sequence[SeedResult], header: dict[str, Any]) -> Path:
    """per_seed.json: `header` (task, shared config, machine, clip logging) and one line per run."""
    head = json.dumps(_json_number({"format": PER_SEED_FORMAT, **header}), default=str)
    lines = [json.dumps(_json_number(_record(result)), default=str) for result in results]
    text = head[:-1] + ', "runs": [\n' + ",\n".join(lines) + "\n]}\n"
    write_text_atomic(Path(path), text)
    return Path(path)


REQUIRED_KEYS = ("label", "method", "given", "seed", "k", "before", "after", "wall_time_s")
OPTIONAL_KEYS = ("machine", "source", "cpu_time_s", "calls", "code")


def _check_metrics(where: str, metrics: Any) -> None:
    if not isinstance(metrics, dict):
        raise ValueError(f"{where}: expected an object of metric values, got {type(metrics).__name__}")
    fractions = {entry.key for entry in mn.catalogued() if entry.fraction}
    for key, value in metrics.items():
        if value is None:
            continue  # a metric the run could not compute (written as null): left out of its mean and n
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{where}: {key} = {value!r} is not a finite number")
        if key in fractions and not 0.0 <= value <= 1.0:
            raise ValueError(f"{where}: {key} = {value!r} is a fraction and must lie in [0, 1]")
        if value < 0:
            raise ValueError(f"{where}: {key} = {value!r} must not be negative")


def _check_run(path: Path, index: int, run: Any, arms: set[str] | None) -> None:
    where = f"{path}: runs[{index}]"
    if not isinstance(run, dict):
        raise ValueError(f"{where}: expected an object, got {type(run).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in run]
    unknown = sorted(set(run) - {f.name for f in fields(SeedResult)})
    if missing or unknown:
        raise ValueError(f"{where}: missing keys {missing}, unknown keys {unknown}")
    where = f"{path}: run {run['label']!r} seed {run['seed']!r}"
    if (
        not isinstance(run["label"], str)
        or not isinstance(run["method"], str)
        or not isinstance(run["given"], dict)
    ):
        raise ValueError(f"{where}: label and method must be strings and given an object")
    if isinstance(run["seed"], bool) or not isinstance(run["seed"], int) or run["seed"] < 0:
        raise ValueError(f"{where}: the seed must be a non-negative integer")
    if arms is not None and run["label"] not in arms:
        raise ValueError(f"{where}: arm {run['label']!r} is not one of the file's arms {sorted(arms)}")
    _check_metrics(f"{where}, before", run["before"])
    _check_metrics(f"{where}, after", run["after"])
    for key in ("wall_time_s", "cpu_time_s"):
        value = run.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise ValueError(f"{where}: {key} = {value!r} must be a non-negative number or null")
    calls = run.get("calls")
    if calls is not None and not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
        raise ValueError(f"{where}: calls must be a list of objects (one per call that trained the run)")
    if run.get("code") is not None and not isinstance(run["code"], dict):
        raise ValueError(f"{where}: code must be an object (version, source, commit, dirty)")


def read_per_seed(path: Path) -> tuple[list[SeedResult], dict[str, Any]]:
    """(results, header) from a per_seed.json, validated: a damaged or hand-edited file is refused with the file,
    the run and the field named, never counted (a duplicated run would be an extra seed, a fraction above 1 a
    wrong mean)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist; run `bandpo compare` first (it writes {PER_SEED_FILE})")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); restore it from version control") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"{path}: expected an object with a 'runs' list, as `bandpo compare` writes")
    if data.get("format") != PER_SEED_FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {PER_SEED_FORMAT}")
    arm_records = data.get("arms")
    arms = {arm.get("label") for arm in arm_records if isinstance(arm, dict)} if arm_records else None

    def number(value: Any) -> float:
        return math.nan if value is None else float(value)

    results, seen = [], set()
    for index, run in enumerate(data.pop("runs")):
        _check_run(path, index, run, arms)
        if (run["label"], run["seed"]) in seen:
            raise ValueError(f"{path}: run {run['label']!r} seed {run['seed']} appears twice")
        seen.add((run["label"], run["seed"]))
        run["clip"] = {key: [number(v) for v in pair] for key, pair in (run.get("clip") or {}).items()}
        run["wall_time_s"] = number(run.get("wall_time_s"))
        results.append(SeedResult(**run))
    return results, data


ARM_FIELDS = frozenset({"method", "seed", *LOSS_PARAMS})  # besides every method's parameters
# settings every per_seed.json has recorded since its first format: a record without them cannot be checked
REUSE_REQUIRED = (
    "model",
    "dataset",
    "max_steps",
    "prompts_per_step",
    "num_generations",
    "eval_prompts",
    "eval_samples",
)


def _arm_key(label: str, method: str, given: dict[str, Any], seed: int) -> tuple[str, str, str, int]:
    """What a record and a planned run must share to be the same run; the parameters as JSON text, so inf and
    floats compare as they were written."""
    return label, method, json.dumps(json.loads(json.dumps(given, default=str)), sort_keys=True), seed


def reused_results(
    paths: Sequence[Path], runs: Sequence[PlannedRun], configs: Sequence[Any]
) -> dict[str, SeedResult]:
    """The planned runs (by `run.name`) that a record of one of `paths` stands for, with its `source` and
    `machine` set; the first file that has a run wins.

    Raises:
        ValueError: a file that cannot be read as per_seed.json, or a record of a planned arm and seed whose
            file was made with other settings (the file and the field named).
    """
    arm_fields = ARM_FIELDS | set(settable_parameters())  # an arm or a seed sets these: not shared settings
    found: dict[str, SeedResult] = {}
    for path in paths:
        results, header = read_per_seed(Path(path))
        config = header.get("config")
        absent = (
            [key for key in REUSE_REQUIRED if key not in config] if isinstance(config, dict) else ["config"]
        )
        if absent:
            raise ValueError(
                f"--reuse {path}: its settings block ('config') lacks {absent}, so whether its runs were trained "
                "with this plan's model, task and budget cannot be checked; reuse only per_seed.json files as "
                "`bandpo compare` writes them"
            )
        stored = effective(config)
        machine = (header.get("machine") or {}).get("processor")
        by_arm = {_arm_key(r.label, r.method, r.given, r.seed): r for r in results}
        for run, config in zip(runs, configs, strict=True):
            if run.name in found:
                continue
            record = by_arm.get(_arm_key(run.spec.label, run.spec.name, dict(run.spec.params), run.seed))
            if record is None:
                continue
            details = settings_difference(stored, config, skip=arm_fields)
            if details:
                raise ValueError(
                    f"--reuse {path}: its run {run.name} was trained with other settings ({details}); reuse only "
                    "runs of the same budget and task"
                )
            record.source = str(path)
            record.machine = record.machine or machine
            found[run.name] = record
    return found
