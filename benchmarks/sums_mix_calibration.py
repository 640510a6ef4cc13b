"""Held-out pass@8 of a model on the embedded sums_mix task before any RL, and what that evaluation costs.

The calibration behind the real-model study's task (`bandpo.training.tasks.sums_mix`): its held-out pass@8
before RL should lie in [0.3, 0.6] at the run's temperature, with room above for RL. This samples k
completions per held-out prompt exactly as a run's evaluation does (`bandpo.training.evaluate`, the chat
template, the Sums verifier, ``top_k`` 0, ``top_p`` 1, the run's evaluation seed, one torch thread as
`bandpo compare` trains) and prints, per temperature, mean@k and pass@k over all prompts and per operand
shape, with the wall and CPU seconds of the evaluation (a run evaluates twice: before and after RL), beside
the CPU model and the code's commit.

    PYTHONPATH=src .venv/bin/python benchmarks/sums_mix_calibration.py --prompts 256 --temperatures 1.0
    PYTHONPATH=src .venv/bin/python benchmarks/sums_mix_calibration.py --output docs/results/sums-mix-calibration
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_train import cpu_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="short name or checkpoint folder")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0])
    parser.add_argument(
        "--prompts", type=int, default=256, help="held-out prompts, in the task's shape shares"
    )
    parser.add_argument("--k", type=int, default=8, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="folder for calibration.json and .md")
    args = parser.parse_args()

    import torch

    from bandpo import metric_names as mn
    from bandpo.experiments.provenance import code_version
    from bandpo.training.data import adapt_rows, task_rows
    from bandpo.training.evaluate import EvalPrompt, evaluate
    from bandpo.training.pretrained import resolve_model
    from bandpo.training.processes import offline_environment, quiet_and_threads
    from bandpo.training.rewards import get_verifier
    from bandpo.training.tasks.sums_mix import COMPLETION_LENGTH, SHAPES, sample_eval_problems, shape_of

    command = "PYTHONPATH=src .venv/bin/python benchmarks/sums_mix_calibration.py " + shlex.join(sys.argv[1:])
    code = (
        code_version()
    )  # the code as this process imports it (read now: a commit made while it runs is not it)
    with offline_environment(), quiet_and_threads(1):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(args.model)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        problems = sample_eval_problems(args.prompts, seed=args.seed)
        rows = adapt_rows(task_rows(problems), tokenizer, use_chat_template=True)
        prompts = [EvalPrompt(row.prompt, row.answer) for row in rows]
        results = []
        for temperature in args.temperatures:
            wall, cpu = time.perf_counter(), time.process_time()
            result = evaluate(
                model,
                tokenizer,
                prompts,
                get_verifier("sums_mix"),
                k=args.k,
                seed=1_000_003 + args.seed,  # the seed a run's evaluation uses
                temperature=temperature,
                max_new_tokens=COMPLETION_LENGTH,
                batch_size=64,  # as a run with --model evaluates
            )
            entry = {
                "temperature": temperature,
                f"mean@{args.k}": result.metrics[mn.EVAL_MEAN_AT_K],
                f"pass@{args.k}": result.metrics[mn.EVAL_PASS_AT_K],
                "wall_s": round(time.perf_counter() - wall, 1),
                "cpu_s": round(time.process_time() - cpu, 1),
                "shapes": {},
            }
            for shape in SHAPES:
                chosen = [r for r, p in zip(result.prompts, problems, strict=True) if shape_of(p) == shape]
                entry["shapes"][shape.name] = {
                    "prompts": len(chosen),
                    f"mean@{args.k}": sum(sum(r.correct) / len(r.correct) for r in chosen) / len(chosen),
                    f"pass@{args.k}": sum(any(r.correct) for r in chosen) / len(chosen),
                }
            entry["examples"] = result.prompts[0].samples[:4]
            results.append(entry)
            print(json.dumps({key: value for key, value in entry.items() if key != "examples"}), flush=True)
    report = {
        "command": command,
        "cpu": cpu_model(),
        "load_average": list(os.getloadavg()),
        "code": code,
        "model": args.model,
        "prompts": args.prompts,
        "k": args.k,
        "max_new_tokens": COMPLETION_LENGTH,
        "torch_threads": 1,
        "results": results,
    }
    if args.output is not None:
        write_report(args.output, report)
    return 0


def write_report(folder: Path, report: dict) -> None:
    """calibration.json and calibration.md in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    k, code = report["k"], report["code"]
    commit = code.get("commit") or "no git checkout"
    dirty = " (with uncommitted changes)" if code.get("dirty") else ""
    names = list(report["results"][0]["shapes"])
    lines = [
        f"# sums_mix: held-out pass@{k} of {report['model']} before RL, and the cost of one evaluation",
        "",
        f"`{report['command']}`",
        "",
        f"{report['cpu']}, load average {', '.join(f'{x:.1f}' for x in report['load_average'])} at the end; "
        f"bandpo {code.get('version')} at commit {commit}{dirty}. {report['prompts']} held-out prompts x {k} "
        f"samples, at most {report['max_new_tokens']} new tokens, chat template, top-k 0, top-p 1, one torch "
        "thread, float32, the run's evaluation seed (a run of seed 0 with the same eval_prompts evaluates exactly these "
        "samples before RL).",
        "",
        f"| temperature | mean@{k} | pass@{k} | "
        + " | ".join(f"{name} pass@{k} (prompts)" for name in names)
        + " | wall s | CPU s |",
        "|---|---|---|" + "---|" * len(names) + "---|---|",
    ]
    for entry in report["results"]:
        shapes = " | ".join(
            f"{entry['shapes'][name][f'pass@{k}']:.3f} ({entry['shapes'][name]['prompts']})" for name in names
        )
        lines.append(
            f"| {entry['temperature']} | {entry[f'mean@{k}']:.3f} | {entry[f'pass@{k}']:.3f} | {shapes} | "
            f"{entry['wall_s']} | {entry['cpu_s']} |"
        )
    (folder / "calibration.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
