"""`bandpo tokens`: where the sampled tokens of a model sit (share per old-probability bin), and what each
bound method lets them do there (ratio range, probability rise); writes report.json, report.md, tokens.png.

``bandpo tokens --task countdown`` samples the embedded tiny model after its warm-up (cached);
``bandpo tokens --model smollm2-135m-instruct --task sums --temperature 0.7`` a real one. ``--combine DIR ...``
draws the shares of several earlier reports side by side (`bandpo.experiments.token_regime`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

DEFAULT_METHODS = ("clip", "clip_higher", "band", "band_upper")


def _counts() -> dict[str, tuple[str, Any]]:
    """flag -> (its argparse dest, the `Setting` declaring its range): the counts are `TrainConfig`'s
    (``--prompts`` is the rollout batch, ``--samples`` one prompt's samples, as ``eval_samples``)."""
    from bandpo.training.config import SETTINGS

    return {
        "--prompts": ("prompts", SETTINGS["prompts_per_step"]),
        "--samples": ("samples", SETTINGS["eval_samples"]),
        "--max-new-tokens": ("max_new_tokens", SETTINGS["max_completion_length"]),
        "--seed": ("seed", SETTINGS["seed"]),
        "--num-threads": ("num_threads", SETTINGS["num_threads"]),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bandpo.training.config import SETTINGS  # `bandpo train`'s defaults, shown and used here

    parser.add_argument(
        "--model", help=f"short name or local checkpoint (default: {SETTINGS['model'].default_text})"
    )
    task = SETTINGS["task"]
    parser.add_argument(
        "--task", choices=task.valid_choices(), default=task.default, help="embedded task's prompts"
    )
    parser.add_argument("--dataset", help="a local .jsonl/.json/.parquet of prompts instead of --task")
    parser.add_argument(
        "--temperature",
        type=float,
        default=SETTINGS["temperature"].default,
        help="sampling temperature (default: %(default)s)",
    )
    parser.add_argument(
        "--prompts", type=int, default=16, help="training prompts sampled (default: %(default)s)"
    )
    parser.add_argument(
        "--samples", type=int, default=4, help="completions per prompt (default: %(default)s)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, help="tokens per completion (default: the task's, as `bandpo train`)"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        metavar="METHOD",
        help="NAME or NAME:key=value,... (default: " + " ".join(DEFAULT_METHODS) + ")",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=SETTINGS["seed"].default,
        help="seed of prompts and sampling (default: %(default)s)",
    )
    parser.add_argument("--cache-dir", help=f"cache (default: {SETTINGS['cache_dir'].default_text})")
    parser.add_argument(
        "--num-threads",
        type=int,
        default=SETTINGS["num_threads"].default,
        help="torch CPU threads (default: %(default)s)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("runs/tokens"), help="where to write")
    parser.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="no sampling: draw the shares of these earlier reports side by side into --output-dir",
    )
    parser.add_argument("--svg", action="store_true", help="also write an SVG plot")


def run(args: argparse.Namespace) -> int:
    from bandpo.training._atomic import check_writable, write_text_atomic

    for flag, (dest, spec) in _counts().items():  # before any work: a count out of range is one line
        spec.check(flag, getattr(args, dest))
    check_writable(args.output_dir, "output_dir", "--output-dir")
    from bandpo.experiments import token_regime

    if args.combine:
        reports = {folder.name: token_regime.load_report(folder) for folder in args.combine}
        cpus = sorted({report.get("cpu", "?") for report in reports.values()})
        note = (
            "bandpo tokens --combine "
            + " ".join(str(f) for f in args.combine)
            + "; sampled on "
            + ", ".join(cpus)
        )
        path_out = args.output_dir / "tokens_combined.png"
        for path in token_regime.plot_regime(reports, path_out, note=note, svg=args.svg):
            print(f"wrote {path}")
        return 0
    report = _sample(args)
    write_text_atomic(args.output_dir / "report.json", json.dumps(report, indent=2))
    title = f"Where the sampled tokens sit: {report['source']}"
    preamble = (
        f"`{report['command']}`, {report['cpu']}, {report['seconds']:.0f} s. {args.prompts} training prompts x "
        f"{args.samples} samples, temperature {args.temperature}, top-k 0, top-p 1, at most "
        f"{report['max_new_tokens']} new tokens; p = the sampled token's probability under softmax(logits / T)."
    )
    write_text_atomic(args.output_dir / "report.md", token_regime.regime_markdown(report, title, preamble))
    note = f"{report['command']}; {report['cpu']}"
    plots = token_regime.plot_regime(
        {report["source"]: report}, args.output_dir / "tokens.png", note=note, svg=args.svg
    )
    print(token_regime.regime_markdown(report, title))
    for path in [args.output_dir / "report.json", args.output_dir / "report.md", *plots]:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _sample(args: argparse.Namespace) -> dict:
    import time
    from dataclasses import replace

    from bandpo.experiments import token_regime
    from bandpo.experiments.arms import parse_method_specs
    from bandpo.experiments.report import cpu_name
    from bandpo.training.config import TrainConfig
    from bandpo.training.data import adapt_rows, prompt_token_ids, read_run_rows
    from bandpo.training.finite import NonFiniteError, watch_logits
    from bandpo.training.policy import load_policy
    from bandpo.training.processes import offline_environment, quiet_and_threads

    specs = parse_method_specs(args.methods)
    methods = [(spec.label, spec.build()) for spec in specs]
    # the `bandpo train` run of these flags (no other field set): its checks of the model, task and dataset,
    # its policy, its prompts in the order it reads them, and its completion length
    config = TrainConfig(
        model=args.model,
        task=args.task,
        dataset=args.dataset,
        temperature=args.temperature,
        max_completion_length=args.max_new_tokens,
        seed=args.seed,
        cache_dir=args.cache_dir,
        num_threads=args.num_threads,
    )
    prompts = replace(config.prompt_source, train_prompts=args.prompts)  # `--prompts`, drawn as the run draws
    start = time.perf_counter()
    with offline_environment(), quiet_and_threads(args.num_threads):
        policy = load_policy(config.policy_source, progress=True)  # float32 weights, as `bandpo train`
        model, tokenizer = policy.model, policy.tokenizer
        train_rows, _ = read_run_rows(prompts)
        rows = adapt_rows(train_rows, tokenizer, use_chat_template=config.use_chat_template)
        try:
            with watch_logits(model):
                old_logp = token_regime.sample_old_logp(
                    model,
                    tokenizer,
                    [prompt_token_ids(tokenizer, row.prompt) for row in rows],
                    samples=args.samples,
                    temperature=args.temperature,
                    max_new_tokens=config.resolved_max_completion_length,
                    seed=args.seed,
                    batch_size=256 if args.model is None else 32,
                )
        except NonFiniteError as error:
            raise ValueError(
                f"model={str(policy.path)!r}: {error} while sampling: its finite weights overflow (a weight too "
                "large for float32, such as a norm weight near 3e38); re-copy or re-save the checkpoint"
            ) from None
    report = token_regime.regime_report(old_logp, methods)
    source = args.model or "embedded tiny model (warmed up)"
    report.update(
        {
            "source": f"{source}, {args.dataset or args.task}, T = {args.temperature:g}",
            "command": "bandpo tokens "
            + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["tokens"] else sys.argv[1:]),
            "cpu": cpu_name(),
            "seconds": time.perf_counter() - start,
            "max_new_tokens": config.resolved_max_completion_length,
            "temperature": args.temperature,
            "prompts": args.prompts,
            "samples": args.samples,
            **policy.dtypes(),
        }
    )
    return report
