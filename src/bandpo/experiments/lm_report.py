"""report.md of an LM comparison, from per-seed results: tables, paired verdicts, plots (and, for a sweep,
sweep_<param>.png: accuracy, diversity and entropy against the swept parameter).

The tables need only the per-seed results (`lm_results.SeedResult`, kept in per_seed.json); the training-curve
plots need the run directories and are redrawn only where those exist.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo.experiments.lm_results import ALL_TOKENS, SeedResult, clip_rule, quick_note, training_records
from bandpo.experiments.provenance import code_text
from bandpo.experiments.report import (
    clip_cell,
    format_values,
    import_pyplot,
    machine_text,
    markdown_table,
    mean_and_spread,
    moving_average,
    plot_curves,
    prob_bin_headers,
    save_figure,
)
from bandpo.experiments.stats import STATS_RULE, holm_verdicts, paired_difference
from bandpo.training.run_dir import RunDir
from bandpo.training.tasks import DEFAULT_TASK

__all__ = ["group_by_label", "lm_tables", "plot_sweep", "render_report"]

# The metrics of each table and plot, their labels and digits: `metric_names` (COMPARISON_COLUMNS,
# PAIRED_DIFFERENCES, SWEEP_PANELS, EVAL_CURVES).
REFERENCE = "clip"
# `ended` of a killed call in records made before calls wrote heartbeats (counted to the run's last write)
_KILLED_BEFORE_HEARTBEATS = "killed (to its last write)"


def group_by_label(results: Sequence[SeedResult]) -> dict[str, list[SeedResult]]:
    data: dict[str, list[SeedResult]] = {}
    for result in results:
        data.setdefault(result.label, []).append(result)
    return data


def _k_text(data: dict[str, list[SeedResult]]) -> str:
    k = next((run.k for runs in data.values() for run in runs if run.k), None)
    return str(k) if k else "k"


def _reference(data: dict[str, list[SeedResult]]) -> str:
    """The arm every other is paired with: clip where it is compared, else the first arm."""
    return REFERENCE if REFERENCE in data else next(iter(data))


def paired_table(data: dict[str, list[SeedResult]]) -> tuple[str, str]:
    """(reference label, Markdown table of paired differences with Holm-corrected verdicts); ("", "") for 1 arm."""
    labels = list(data)
    if len(labels) < 2:
        return "", ""
    reference = _reference(data)
    k_text = _k_text(data)
    ref_by_seed = {run.seed: run for run in data[reference]}
    others = [label for label in labels if label != reference]
    differences = []  # row by row: one per arm and metric
    for label in others:
        paired = [run for run in data[label] if run.seed in ref_by_seed]
        differences += [
            paired_difference(
                [run.value(key) for run in paired], [ref_by_seed[run.seed].value(key) for run in paired]
            )
            for key in mn.PAIRED_DIFFERENCES
        ]
    texts, family_size = holm_verdicts(differences)
    width = len(mn.PAIRED_DIFFERENCES)
    rows = [[label, *texts[row * width : (row + 1) * width]] for row, label in enumerate(others)]
    headers = [
        "method",
        *(f"Δ {mn.metric(key).text('short', k=k_text)} vs {reference}" for key in mn.PAIRED_DIFFERENCES),
    ]
    family = f"{family_size} tested difference(s) in the Holm family"
    return reference, markdown_table(headers, rows) + f"\n\n{family}."


def lm_tables(data: dict[str, list[SeedResult]]) -> tuple[str, str, str]:
    """(main table, paired-difference table, clip-fraction table) in Markdown."""
    k_text = _k_text(data)
    columns = [mn.metric(key) for key in mn.COMPARISON_COLUMNS]
    headers = [
        "method",
        "seeds",
        *(column.text(k=k_text) for column in columns),
        "wall min / run (all calls)",
    ]
    all_runs = [run for runs in data.values() for run in runs]
    with_cpu = any(run.cpu_time_s is not None for run in all_runs)  # records before 0.7 have no CPU time
    if with_cpu:
        headers.append("CPU min / run (all calls)")
    rows = []
    if all_runs:
        by_seed = {r.seed: r for r in all_runs}  # the policy before RL depends on the seed only
        before_row = ["before RL (warm-up policy)", str(len(by_seed))]
        for column in columns:
            values = [r.value(column.key, before=True) for r in by_seed.values()]
            before_row.append(format_values(values, column.digits))
        rows.append([*before_row, "", *([""] if with_cpu else [])])
    for label, runs in data.items():
        row = [label, str(len(runs))]
        for column in columns:
            values = [run.value(column.key) for run in runs]
            counted = sum(math.isfinite(value) for value in values)
            shown = format_values(values, column.digits)
            row.append(shown if counted in (0, len(runs)) else f"{shown} (n={counted})")
        row.append(format_values([run.wall_time_s / 60 for run in runs], 1))
        if with_cpu:
            cpu = [math.nan if run.cpu_time_s is None else run.cpu_time_s / 60 for run in runs]
            counted = sum(math.isfinite(value) for value in cpu)
            row.append(format_values(cpu, 1) + ("" if counted == len(runs) else f" (n={counted})"))
        rows.append(row)
    main = markdown_table(headers, rows)
    _, paired = paired_table(data)

    clip_rows = []
    for label, runs in data.items():
        cells = []
        for key in (ALL_TOKENS, *mn.PROB_BIN_LABELS):
            up = mean_and_spread([run.clip.get(key, [math.nan, math.nan])[0] for run in runs])[0]
            down = mean_and_spread([run.clip.get(key, [math.nan, math.nan])[1] for run in runs])[0]
            cells.append(clip_cell(up, down))
        clip_rows.append([label, *cells])
    clip = markdown_table(["method", "all tokens", *prob_bin_headers()], clip_rows)
    return main, paired, clip


def _provenance(results: Sequence[SeedResult]) -> list[str]:
    """Where the runs were trained, with which code, and which were reused (`--reuse`); nothing for files that
    do not record it."""
    lines = []
    machines: dict[str, int] = {}
    for result in results:
        if result.machine:
            machines[result.machine] = machines.get(result.machine, 0) + 1
    if machines:
        counts = ", ".join(f"{name} ({count} runs)" for name, count in machines.items())
        per_seed: dict[int, set[str]] = {}
        for result in results:
            per_seed.setdefault(result.seed, set()).add(result.machine or "unrecorded")
        mixed = sorted(seed for seed, names in per_seed.items() if len(names) > 1)
        pairing = (
            f"**seeds {mixed} have arms trained on different CPU models: their pairs are not like for like.**"
            if mixed
            else "Every seed's arms were trained on one CPU model."
        )
        lines.append(f"Runs trained on: {counts}. {pairing}")
    lines += _code_lines(results)
    sources: dict[str, list[str]] = {}
    for result in results:
        if result.source:
            sources.setdefault(result.source, []).append(f"{result.label}-seed{result.seed}")
    for source, names in sources.items():
        lines.append(f"Reused from `{source}` ({len(names)} runs, not trained here): {', '.join(names)}.")
    return lines


def _code_lines(results: Sequence[SeedResult]) -> list[str]:
    """Which code trained the runs and how their times were counted; nothing when no record says (old files)."""
    if not any(result.code or result.calls for result in results):
        return []
    codes: dict[str, int] = {}
    for result in results:
        text = code_text(result.code)
        codes[text] = codes.get(text, 0) + 1
    lines = [
        "Code that finished the runs: " + ", ".join(f"{text} ({n} runs)" for text, n in codes.items()) + "."
    ]
    several = [
        f"{r.label}-seed{r.seed}"
        for r in results
        if len({code_text(call.get("code")) for call in r.calls or []}) > 1
    ]
    if several:
        lines.append(
            f"Runs whose calls ran different code (each call's is in per_seed.json): {', '.join(several)}."
        )
    resumed = sum(len(r.calls or []) > 1 for r in results)
    killed = [
        call
        for r in results
        for call in r.calls or []
        if call.get("cpu_s") is None and call.get("ended") != "finished"
    ]
    text = (
        f"Wall and CPU times count every call that trained a run ({resumed} run(s) took more than one call; "
        "per-call times in per_seed.json)"
    )
    if killed:
        until = (
            "the run's last write"
            if all(call.get("ended") == _KILLED_BEFORE_HEARTBEATS for call in killed)
            else "its last sign of life, a heartbeat or the run's last write"
        )
        text += (
            f"; {len(killed)} interrupted call(s) have no CPU time (killed before they could record it, wall time up "
            f"to {until}), so those runs' CPU time is a lower bound"
        )
    return [*lines, text + "."]


def _training_line(header: dict[str, Any], results: Sequence[SeedResult]) -> str:
    """The machine line: where the runs were trained and how many at a time, or, for a folder that only
    gathered runs trained elsewhere (`--reuse`), that nothing was trained by the call that wrote it."""
    machine, jobs = header.get("machine") or {}, header.get("jobs")
    if results and all(result.source for result in results):
        return (
            f"Gathered by a call that trained nothing (every run reused; the records say where each was "
            f"trained) on {machine_text(machine).removeprefix('Machine: ')}. Each run's wall time is that of the "
            "call(s) that trained it"
            + (
                ""
                if any(result.calls for result in results)
                else " as recorded (these records predate per-call records: a call killed before it could record "
                "itself, such as one ended with its session, is missing)"
            )
            + ". Runs are deterministic on one CPU, not across CPU models."
        )
    return (
        machine_text(machine)
        + (f"; {jobs} run(s) trained at a time, so wall times include that contention." if jobs else ".")
        + " Runs are deterministic on one CPU, not across CPU models."
    )


def render_report(
    results: Sequence[SeedResult],
    header: dict[str, Any],
    output_dir: Path,
    *,
    run_dirs: dict[str, list[Path]] | None = None,
    svg: bool = False,
) -> tuple[Path, str]:
    """Write report.md (and the plots) into `output_dir`; returns (path, main table).

    Args:
        header: per_seed.json's header: task, config, settings, machine, jobs, quick, clip logging, sweep and
            the runs missing (not finished).
        run_dirs: label -> run directories, for the training-curve plots (None: keep the plots already there).
    """
    output_dir = Path(output_dir)
    data = group_by_label(results)
    if not data:
        raise ValueError(f"no finished run under {output_dir / 'runs'}: nothing to report")
    main, paired, clip = lm_tables(data)
    config = header.get("config") or {}
    seeds = sorted({run.seed for run in results})
    k = next((run.k for run in results if run.k), None)
    task = header.get("task") or DEFAULT_TASK
    lines = ["# bandpo compare", ""]
    if header.get("quick"):
        lines += [f"**{quick_note(config)}**", ""]
    lines += [
        f"{len(data)} methods x {len(seeds)} seeds ({', '.join(map(str, seeds))}), equal budget: "
        f"{config.get('max_steps')} RL steps of {config.get('prompts_per_step')} prompts x "
        f"{config.get('num_generations')} samples, {config.get('num_iterations')} x {config.get('minibatches')} "
        f"updates per batch, lr {config.get('learning_rate')}; model: {config.get('model') or 'embedded tiny'}, "
        f"task: {task}.",
        f"Held-out evaluation after training: {config.get('eval_prompts')} prompts x {k} samples. "
        "Figures are the mean ± standard error over seeds. Every run's final evaluation is in per_seed.json; "
        "`bandpo compare --report-only DIR` rebuilds this report from it.",
    ]
    if header.get("settings"):
        lines.append(f"Settings shared by every run: `{json.dumps(header['settings'], default=str)}`.")
    lines.append(_training_line(header, results))
    lines += _provenance(results)
    if header.get("missing"):
        lines += ["", f"**Missing (not finished): {', '.join(header['missing'])}.**"]
    lines += ["", "## Held-out evaluation after training", "", main]
    if paired:
        lines += ["", f"Paired differences against {_reference(data)}: {STATS_RULE}.", "", paired]
    logging = header.get("clip_logging") or {}
    lines += [
        "",
        "## Clip fractions by p_old bin",
        "",
        "Upward/downward (up: A > 0 and ratio > ratio_high; down: A < 0 and ratio < ratio_low): "
        + clip_rule(bool(logging.get("weighted")), bool(logging.get("every_bin_logged"))),
        "",
        clip,
    ]
    sweep = header.get("sweep")
    if sweep:
        plot_sweep(results, sweep["param"], output_dir, k=k, svg=svg)
        lines += ["", f"## Sweep over {sweep['param']}", "", f"![sweep over {sweep['param']}](sweep_{sweep['param']}.png)"]  # fmt: skip
    if run_dirs is not None:
        records = {label: [training_records(d) for d in dirs] for label, dirs in run_dirs.items()}
        _plot_training(records, output_dir, svg=svg)
        _plot_clip_bins(records, output_dir, svg=svg)
        _plot_eval(run_dirs, output_dir, svg=svg, k=k)
    if (output_dir / "compare_training.png").exists():
        lines += ["", "## Training curves", "", "![training curves](compare_training.png)"]
    if (output_dir / CLIP_BINS_FIGURE).exists():
        lines += ["", f"![clip fractions by p_old bin, per RL step]({CLIP_BINS_FIGURE})"]
    if (output_dir / "compare_eval.png").exists():
        lines += ["", "![held-out evaluation during training](compare_eval.png)"]
    path = output_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path, main


def _plot_training(records: dict[str, list[list[dict[str, Any]]]], output_dir: Path, *, svg: bool) -> None:
    """Reward, entropy and clip fractions per RL step; `records[label]` are each run's training records."""
    if not any(run for runs in records.values() for run in runs):
        return  # every run reused from another study (no metrics.jsonl here): no empty figure
    plt = import_pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    keys = (mn.TRAIN_REWARD, mn.TRAIN_ENTROPY, mn.CLIP_FRAC_UP, mn.CLIP_FRAC_DOWN)
    for ax, key in zip(axes.flat, keys, strict=True):
        _step_panel(ax, records, key)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("training curves: mean ± s.e. over seeds")
    fig.tight_layout()
    save_figure(fig, output_dir / "compare_training.png", svg=svg)


CLIP_BINS_FIGURE = "compare_clip_bins.png"


def _plot_clip_bins(records: dict[str, list[list[dict[str, Any]]]], output_dir: Path, *, svg: bool) -> None:
    """The clip fractions of each p_old bin per RL step (up above, down below): where in the distribution
    each method's bounds bind, and when. A step that logged no value for a bin (no token in it) is a gap."""
    logged = {key for runs in records.values() for run in runs for r in run for key in r}
    if mn.clip_frac_up_bin(mn.PROB_BIN_LABELS[0]) not in logged:
        return  # runs reused from another study, or logs without the per-bin fractions: no empty figure
    plt = import_pyplot()
    bins = mn.PROB_BIN_LABELS
    fig, axes = plt.subplots(2, len(bins), figsize=(3.6 * len(bins), 7.5), squeeze=False)
    for column, label in enumerate(bins):
        _step_panel(
            axes[0, column], records, mn.clip_frac_up_bin(label), title=f"up, {mn.prob_bin_text(label)}"
        )
        _step_panel(
            axes[1, column], records, mn.clip_frac_down_bin(label), title=f"down, {mn.prob_bin_text(label)}"
        )
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(
        "clip fractions by p_old bin per RL step (up: A > 0, ratio > high; down: A < 0, ratio < low)"
    )
    fig.tight_layout()
    save_figure(fig, output_dir / CLIP_BINS_FIGURE, svg=svg)


def _step_panel(
    ax, records: dict[str, list[list[dict[str, Any]]]], key: str, *, title: str | None = None
) -> None:
    """One panel of per-step curves of `key`, mean ± s.e. over each label's runs, smoothed over 1/25 of the
    steps (no smoothing below 50 steps)."""
    steps_all = sorted({int(r[mn.TRAIN_STEP]) for runs in records.values() for run in runs for r in run})
    window = max(1, len(steps_all) // 25)
    curves = {}
    for label, runs in records.items():
        per_seed = []
        for run in runs:
            by_step = {int(r[mn.TRAIN_STEP]): float(r[key]) for r in run if r.get(key) is not None}
            per_seed.append(moving_average([by_step.get(step, math.nan) for step in steps_all], window))
        curves[label] = (steps_all, per_seed)
    suffix = f" (moving avg. {window} steps)" if window > 1 else ""
    entry = mn.metric(key)
    plot_curves(
        ax,
        curves,
        title=(title or entry.text()) + suffix,
        ylabel=entry.unit or entry.text("short"),
        xlabel="RL step",
    )


def _plot_eval(run_dirs: dict[str, list[Path]], output_dir: Path, *, svg: bool, k: int | None) -> None:
    metrics = {
        label: [RunDir(d).metrics_records(missing_ok=True) for d in dirs] for label, dirs in run_dirs.items()
    }
    if not any(sum(mn.EVAL_PASS_AT_K in r for r in run) > 2 for runs in metrics.values() for run in runs):
        return  # no run evaluated more than twice: no curve worth drawing
    plt = import_pyplot()
    fig, axes = plt.subplots(1, len(mn.EVAL_CURVES), figsize=(16 * len(mn.EVAL_CURVES) / 3, 4.5))
    for ax, key in zip(axes, mn.EVAL_CURVES, strict=True):
        curves = {}
        for label, runs in metrics.items():
            series = [{int(r[mn.TRAIN_STEP]): float(r[key]) for r in run if key in r} for run in runs]
            steps = sorted({step for points in series for step in points})
            curves[label] = (steps, [[points.get(step, math.nan) for step in steps] for points in series])
        entry = mn.metric(key)
        title, ylabel = f"held-out {entry.text(k=k)}", entry.unit or entry.text("short", k=k)
        plot_curves(ax, curves, title=title, ylabel=ylabel, xlabel="RL step")
    axes[0].legend(fontsize=8)
    fig.suptitle("held-out evaluation during training: mean ± s.e. over seeds", y=1.02)
    fig.tight_layout()
    save_figure(fig, output_dir / "compare_eval.png", svg=svg)


def _sweep_series(results: Sequence[SeedResult], param: str, key: str) -> dict[str, dict[float, list[float]]]:
    """Swept arms: group name -> {parameter value: values over seeds}."""
    groups: dict[str, dict[float, list[float]]] = {}
    for result in results:
        if param not in result.given:
            continue
        rest = {name: value for name, value in result.given.items() if name != param}
        group = result.method + ("" if not rest else ":" + ",".join(f"{n}={v}" for n, v in rest.items()))
        groups.setdefault(group, {}).setdefault(float(result.given[param]), []).append(result.value(key))
    return groups


def plot_sweep(
    results: Sequence[SeedResult], param: str, output_dir: Path, *, k: int | None, svg: bool = False
) -> list[Path]:
    """sweep_<param>.png: one panel per metric of `metric_names.SWEEP_PANELS` against the parameter (log scale),
    mean ± s.e. over seeds per swept method, and the arms that do not take the parameter as horizontal lines."""
    plt = import_pyplot()
    fig, axes = plt.subplots(1, len(mn.SWEEP_PANELS), figsize=(4.2 * len(mn.SWEEP_PANELS), 4.2))
    references: dict[str, list[SeedResult]] = {}
    for result in results:
        if param not in result.given:
            references.setdefault(result.label, []).append(result)
    for ax, key in zip(axes, mn.SWEEP_PANELS, strict=True):
        series = _sweep_series(results, param, key)
        for index, (group, by_value) in enumerate(series.items()):
            xs = sorted(by_value)
            stats = [mean_and_spread(by_value[x]) for x in xs]
            means = [mean for mean, _ in stats]
            errors = [0.0 if not math.isfinite(spread) else spread for _, spread in stats]
            dodge = 1.0 + 0.04 * (index - (len(series) - 1) / 2)  # side by side, so error bars do not overlap
            ax.errorbar(
                [x * dodge for x in xs],
                means,
                yerr=errors,
                marker="o",
                capsize=3,
                color=f"C{index}",
                label=group,
            )
        for index, (label, runs) in enumerate(references.items()):
            mean, spread = mean_and_spread([run.value(key) for run in runs])
            if not math.isfinite(mean):
                continue
            color = f"C{(index + 5) % 10}"
            ax.axhline(mean, color=color, linestyle="--", linewidth=1.2, label=label)
            if math.isfinite(spread):
                ax.axhspan(mean - spread, mean + spread, color=color, alpha=0.12, linewidth=0)
        ax.set_xscale("log")
        values = sorted({float(r.given[param]) for r in results if param in r.given})
        ax.set_xticks(values, [f"{value:g}" for value in values])
        ax.minorticks_off()
        ax.set_xlabel(param)
        ax.set_title(mn.metric(key).text(k=k), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"held-out evaluation after training against {param}: mean ± s.e. over seeds", y=1.02)
    fig.tight_layout()
    return save_figure(fig, Path(output_dir) / f"sweep_{param}.png", svg=svg)
