"""The results of an LM comparison, one record per run: read from the run directories, kept in per_seed.json.

per_seed.json is small (a few hundred bytes per run) and holds everything report.md's tables are computed
from: each run's held-out evaluation before and after RL, its wall time and its clip fractions by p_old bin.
Committed next to report.md, it lets anyone recompute every verdict without the run directories
(`bandpo compare --report-only DIR`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo._atomic import write_text_atomic
from bandpo.experiments.lm_execute import interrupted_calls, read_jsonl
from bandpo.experiments.lm_plan import DONE_MARKER, PlannedRun

__all__ = ["PER_SEED_FILE", "SeedResult", "clip_rule", "load_run", "read_per_seed", "write_per_seed"]

PER_SEED_FILE = "per_seed.json"
PER_SEED_FORMAT = 1
ALL_TOKENS = "all"  # key of the clip fractions over every token, beside the p_old bins


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

    def value(self, key: str, *, before: bool = False) -> float:
        value = (self.before if before else self.after).get(key)
        return math.nan if value is None else float(value)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def mean_over_steps(records: list[dict[str, Any]], key: str, weight_key: str | None = None) -> float:
    """Mean of `key` over the training steps that logged a finite value (absent or nan: left out).

    With `weight_key` present in those steps (e.g. a bin's token count), the mean is weighted by it, so that
    it is the fraction among all tokens of the bin over the run rather than a mean of per-step fractions.
    """
    pairs = [(_finite(r.get(key)), _finite(r.get(weight_key)) if weight_key else None) for r in records]
    pairs = [(value, weight) for value, weight in pairs if value is not None]
    if not pairs:
        return math.nan
    if weight_key and all(weight is not None for _, weight in pairs):
        total = sum(weight for _, weight in pairs)
        if total > 0:
            return sum(value * weight for value, weight in pairs) / total
    return sum(value for value, _ in pairs) / len(pairs)


def training_records(run_dir: Path) -> list[dict[str, Any]]:
    """The training records (those with a reward) of a run's metrics.jsonl, in step order."""
    records = [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if mn.TRAIN_REWARD in r]
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
    clip = {
        ALL_TOKENS: [mean_over_steps(records, mn.CLIP_FRAC_UP), mean_over_steps(records, mn.CLIP_FRAC_DOWN)]
    }
    for bin_label in mn.PROB_BIN_LABELS:
        weight = mn.clip_tokens_bin(bin_label)
        clip[bin_label] = [
            mean_over_steps(records, mn.clip_frac_up_bin(bin_label), weight),
            mean_over_steps(records, mn.clip_frac_down_bin(bin_label), weight),
        ]
    return clip


def clip_logging(records: list[dict[str, Any]]) -> dict[str, bool]:
    """Whether the runs' logs weighted bins by their token counts, and whether every step logged every bin."""
    weighted = any(mn.clip_tokens_bin(label) in r for r in records for label in mn.PROB_BIN_LABELS)
    every = bool(records) and all(
        _finite(r.get(mn.clip_frac_up_bin(label))) is not None
        for r in records
        for label in mn.PROB_BIN_LABELS
    )
    return {"weighted": weighted, "every_bin_logged": every}


def load_run(run: PlannedRun) -> tuple[SeedResult, list[dict[str, Any]]] | None:
    """The result of a finished run and its training records; None when it has no summary.json yet."""
    summary_path = run.run_dir / "summary.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    records = training_records(run.run_dir)
    marker = run.run_dir / DONE_MARKER
    wall = json.loads(marker.read_text()).get("wall_time_s") if marker.exists() else None
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
    )
    return result, records


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None  # a missing value reads back as nan; inf (e.g. ratio_max) stays Python's Infinity
    if isinstance(value, dict):
        return {key: _json_number(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_number(item) for item in value]
    return value


def write_per_seed(path: Path, results: Sequence[SeedResult], header: dict[str, Any]) -> Path:
    """per_seed.json: `header` (task, shared config, machine, clip logging) and one line per run."""
    head = json.dumps(_json_number({"format": PER_SEED_FORMAT, **header}), default=str)
    lines = [json.dumps(_json_number(asdict(result)), default=str) for result in results]
    text = head[:-1] + ', "runs": [\n' + ",\n".join(lines) + "\n]}\n"
    write_text_atomic(Path(path), text)
    return Path(path)


def read_per_seed(path: Path) -> tuple[list[SeedResult], dict[str, Any]]:
    """(results, header) from a per_seed.json."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist; run `bandpo compare` first (it writes {PER_SEED_FILE})")
    data = json.loads(path.read_text())
    if data.get("format") != PER_SEED_FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {PER_SEED_FORMAT}")

    def number(value: Any) -> float:
        return math.nan if value is None else float(value)

    results = []
    for run in data.pop("runs"):
        run["clip"] = {key: [number(v) for v in pair] for key, pair in (run.get("clip") or {}).items()}
        run["wall_time_s"] = number(run.get("wall_time_s"))
        results.append(SeedResult(**run))
    return results, data
