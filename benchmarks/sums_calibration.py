"""Held-out pass@8 of a model on the embedded Sums task before any RL, at one or more temperatures.

The calibration behind the Sums task (`bandpo.training.tasks.sums`): RL needs a task the model sometimes, not
always, solves, so its held-out pass@8 should lie between 0.2 and 0.8. This samples k completions per
held-out prompt exactly as a run's evaluation does (`bandpo.training.evaluate`, the chat template, the Sums
verifier, ``top_k`` 0, ``top_p`` 1) and prints, per temperature, mean@k (= sampled pass@1) and pass@k over
all prompts and per difficulty (one-digit and two-digit first operand), beside the CPU model and the command.

    PYTHONPATH=src .venv/bin/python benchmarks/sums_calibration.py                      # SmolLM2, T = 1.0 and 0.7
    PYTHONPATH=src .venv/bin/python benchmarks/sums_calibration.py --output docs/results/sums-calibration
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_train import cpu_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="short name or checkpoint folder")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.7])
    parser.add_argument("--prompts", type=int, default=32, help="held-out prompts (half of them two-digit)")
    parser.add_argument("--k", type=int, default=8, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="folder for calibration.json and .md")
    args = parser.parse_args()

    import torch

    from bandpo import metric_names as mn
    from bandpo.training.data import adapt_rows, task_rows
    from bandpo.training.evaluate import EvalPrompt, evaluate
    from bandpo.training.pretrained import resolve_model
    from bandpo.training.processes import offline_environment, quiet_and_threads
    from bandpo.training.rewards import get_verifier
    from bandpo.training.tasks.sums import sample_eval_problems

    command = "PYTHONPATH=src .venv/bin/python benchmarks/sums_calibration.py " + shlex.join(sys.argv[1:])
    with offline_environment(), quiet_and_threads(1):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(args.model)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=torch.float32, trust_remote_code=False
        )
        problems = sample_eval_problems(args.prompts, seed=args.seed)
        rows = adapt_rows(task_rows(problems), tokenizer, use_chat_template=True)
        prompts = [EvalPrompt(row.prompt, row.answer) for row in rows]
        results = []
        for temperature in args.temperatures:
            start = time.perf_counter()
            result = evaluate(
                model,
                tokenizer,
                prompts,
                get_verifier("sums"),
                k=args.k,
                seed=1_000_003 + args.seed,  # the seed a run's evaluation uses
                temperature=temperature,
                max_new_tokens=16,
                batch_size=64,
            )
            seconds = time.perf_counter() - start
            entry = {
                "temperature": temperature,
                f"mean@{args.k}": result.metrics[mn.EVAL_MEAN_AT_K],
                f"pass@{args.k}": result.metrics[mn.EVAL_PASS_AT_K],
                "seconds": round(seconds, 1),
            }
            for label, hard in (("one_digit", False), ("two_digit", True)):
                chosen = [r for r, p in zip(result.prompts, problems, strict=True) if p.hard == hard]
                entry[f"{label}_mean@{args.k}"] = sum(sum(r.correct) / len(r.correct) for r in chosen) / len(
                    chosen
                )
                entry[f"{label}_pass@{args.k}"] = sum(any(r.correct) for r in chosen) / len(chosen)
            entry["examples"] = result.prompts[0].samples[:4]
            results.append(entry)
            print(json.dumps({key: value for key, value in entry.items() if key != "examples"}), flush=True)
    report = {
        "command": command,
        "cpu": cpu_model(),
        "model": args.model,
        "prompts": args.prompts,
        "k": args.k,
        "max_new_tokens": 16,
        "results": results,
    }
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
        lines = [
            f"# Sums: held-out pass@{args.k} of {args.model} before RL",
            "",
            f"`{command}`, {report['cpu']}; {args.prompts} held-out prompts (half two-digit) x {args.k} "
            "samples, at most 16 new tokens, chat template, top-k 0, top-p 1.",
            "",
            f"| temperature | mean@{args.k} | pass@{args.k} | one-digit pass@{args.k} | two-digit pass@{args.k} "
            "| seconds |",
            "|---|---|---|---|---|---|",
        ]
        for entry in results:
            k = args.k
            lines.append(
                f"| {entry['temperature']} | {entry[f'mean@{k}']:.3f} | {entry[f'pass@{k}']:.3f} | "
                f"{entry[f'one_digit_pass@{k}']:.3f} | {entry[f'two_digit_pass@{k}']:.3f} | {entry['seconds']} |"
            )
        (args.output / "calibration.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
