"""Where the sampled tokens sit: the share of sampled tokens per old-probability bin, and per bin what each
bound method lets such a token do.

Every method differs only in the ratio bounds it gives a token of old probability p, so what a method does in
training depends on which p the sampled tokens have. A tiny model warmed up on a synthetic task may sample
from a different regime than a real pretrained model does, and then its verdicts need not carry over; this
measures both the same way.

`sample_old_logp` samples completions (``top_k`` 0, ``top_p`` 1, the given temperature, as a run's rollout)
and returns the log-probability each sampled token had under the sampling distribution, softmax(logits / T),
which is what TRL records as the old log-prob (tokens up to and including the first EOS). `regime_report`
bins them by p = exp(old_logp) with `BIN_EDGES` (finer than the training metrics' bins at the low end) and
gives, per bin: the share of tokens, the median p, and per method the ratio range [ratio_low, ratio_high] at
that median p and the mean probability rise a token of the bin may make in one update,
mean(min(ratio_high, 1/p)·p − p).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bandpo.training.evaluate import sample_completions, sampling

__all__ = ["BIN_EDGES", "bin_labels", "plot_regime", "regime_markdown", "regime_report", "sample_old_logp"]

BIN_EDGES: tuple[float, ...] = (0.0, 1e-3, 0.01, 0.1, 0.5, 0.9, 1.0)
"""p_old bins: [lo, hi) except the last, which includes 1."""


def bin_labels(edges: Sequence[float] = BIN_EDGES) -> list[str]:
    """``<0.001``, ``0.001–0.01``, ..., ``≥0.9``."""
    inner = [f"{edges[i]:g}–{edges[i + 1]:g}" for i in range(1, len(edges) - 2)]
    return [f"<{edges[1]:g}", *inner, f"≥{edges[-2]:g}"]


def sample_old_logp(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    seed: int = 0,
    batch_size: int = 32,
) -> torch.Tensor:
    """Old log-probs (float64, 1-D) of every sampled completion token of `samples` completions per prompt.

    The global RNG is left as it was. Tokens after the first EOS are dropped; the EOS itself counts.
    """
    expanded = [list(ids) for ids in prompt_ids for _ in range(samples)]
    out: list[torch.Tensor] = []
    with sampling(model, seed):
        for start in range(0, len(expanded), batch_size):
            rows = expanded[start : start + batch_size]
            completion, logits, valid = sample_completions(
                model, tokenizer, rows, temperature=temperature, max_new_tokens=max_new_tokens
            )  # (b, t), (b, t, V), (b, t)
            logp = (
                torch.log_softmax(logits.double() / temperature, dim=-1)
                .gather(-1, completion.unsqueeze(-1))
                .squeeze(-1)
            )  # (b, t)
            out.append(logp[valid].cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def regime_report(
    old_logp: torch.Tensor, methods: Sequence[tuple[str, Any]], edges: Sequence[float] = BIN_EDGES
) -> dict[str, Any]:
    """Per p_old bin: token count and share, median p, and per method the ratio range at the median p and the
    mean allowed probability rise. `methods` are (label, `bandpo.methods.BoundMethod`) pairs."""
    old_logp = old_logp.to(torch.float64).flatten()  # (N,)
    p = old_logp.exp()  # (N,)
    total = int(p.numel())
    bounds = {label: method(old_logp) for label, method in methods}  # each (N,), float64
    bins = []
    for index, label in enumerate(bin_labels(edges)):
        lo, hi = edges[index], edges[index + 1]
        inside = (p >= lo) & ((p < hi) if index < len(edges) - 2 else (p <= hi))  # (N,)
        count = int(inside.sum())
        entry: dict[str, Any] = {"bin": label, "low": lo, "high": hi, "count": count}
        entry["share"] = count / total if total else math.nan
        if count:
            p_bin = p[inside]
            median_logp = old_logp[inside].median().reshape(1)  # (1,)
            entry["median_p"] = float(p_bin.median())
            per_method = {}
            for name, method in methods:
                low_median, high_median = method(median_logp)
                high = torch.minimum(bounds[name].ratio_high[inside].double(), 1.0 / p_bin)
                per_method[name] = {
                    "ratio_low": float(low_median[0]),
                    "ratio_high": float(high_median[0]),
                    "mean_prob_rise": float((high * p_bin - p_bin).mean()),
                }
            entry["methods"] = per_method
        bins.append(entry)
    return {"tokens": total, "edges": list(edges), "bins": bins, "methods": [label for label, _ in methods]}


def regime_markdown(report: dict[str, Any], title: str, preamble: str = "") -> str:
    """report.md: the share table, then one table per method."""
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble, ""]
    lines += [
        f"{report['tokens']} sampled tokens.",
        "",
        "| p_old bin | tokens | share | median p |",
        "|---|---|---|---|",
    ]
    for entry in report["bins"]:
        median = f"{entry['median_p']:.3g}" if entry["count"] else "-"
        lines.append(f"| {entry['bin']} | {entry['count']} | {entry['share']:.3f} | {median} |")
    lines += [
        "",
        "What each method lets a token of the bin do: ratio range [low, high] at the bin's median p, and the mean "
        "probability rise allowed in one update, mean(min(high, 1/p)·p − p).",
        "",
        "| p_old bin | " + " | ".join(report["methods"]) + " |",
        "|---|" + "---|" * len(report["methods"]),
    ]
    for entry in report["bins"]:
        if not entry["count"]:
            continue
        cells = []
        for name in report["methods"]:
            values = entry["methods"][name]
            cells.append(
                f"[{values['ratio_low']:.3g}, {values['ratio_high']:.3g}], +{values['mean_prob_rise']:.3g}"
            )
        lines.append(f"| {entry['bin']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_regime(
    reports: dict[str, dict[str, Any]], path: Path, *, note: str = "", svg: bool = False
) -> list[Path]:
    """Left: the share of sampled tokens per p_old bin, one bar per source (`reports`: label -> report).
    Right: the mean allowed probability rise per bin and method, for the first source. `note` (the command
    and the CPU) is printed under the plots. PNG (and SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(reports.values()))
    labels = [entry["bin"] for entry in first["bins"]]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(reports)
    for index, (name, report) in enumerate(reports.items()):
        shares = [entry["share"] for entry in report["bins"]]
        left.bar(
            [x + index * width for x in range(len(labels))],
            shares,
            width,
            label=f"{name} ({report['tokens']})",
        )
    left.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels, rotation=20)
    left.set_xlabel("old probability p of the sampled token")
    left.set_ylabel("share of sampled tokens")
    left.legend(fontsize=8)
    left.set_title("where the sampled tokens sit")
    methods = first["methods"]
    width = 0.8 / len(methods)
    for index, method in enumerate(methods):
        rises = [
            entry["methods"][method]["mean_prob_rise"] if entry["count"] else 0.0 for entry in first["bins"]
        ]
        right.bar([x + index * width for x in range(len(labels))], rises, width, label=method)
    right.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels, rotation=20)
    right.set_yscale("log")
    right.set_xlabel("old probability p of the sampled token")
    right.set_ylabel("mean allowed rise of p in one update")
    right.set_title(f"what each method allows ({next(iter(reports))})")
    right.legend(fontsize=8)
    if note:
        figure.text(0.005, 0.005, note, fontsize=6, color="0.35")
    figure.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path]
    figure.savefig(path, dpi=120)
    if svg:
        figure.savefig(path.with_suffix(".svg"))
        written.append(path.with_suffix(".svg"))
    plt.close(figure)
    return written


def load_report(folder: Path) -> dict[str, Any]:
    """The report.json a `bandpo tokens` run wrote in `folder`."""
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))
