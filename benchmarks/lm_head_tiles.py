"""TRL's fused LM head with its own 32,768-wide vocabulary tiles vs tiles as wide as the vocabulary.

One training micro-batch of the default run (64 completions of 8 prompt + 8 completion tokens) through the
embedded model and TRL's fused LM head, forward and backward, as `GRPOTrainer` computes it: CPU milliseconds
and page faults per pass, with TRL's tile width and inside `narrow_logprob_tiles`, alternated in one process
(so both see the same machine load), and whether both give the same log-probs and gradients. The CPU model is
printed beside every figure.

    PYTHONPATH=src .venv/bin/python benchmarks/lm_head_tiles.py
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_train import cpu_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=40, help="forward+backward passes per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements of each setting, alternated")
    args = parser.parse_args()

    import torch
    from trl.trainer.utils import add_fused_lm_head

    from bandpo.training.model import build_char_tokenizer, build_tiny_model, narrow_logprob_tiles

    torch.set_num_threads(1)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer)
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(2, len(tokenizer), (64, 16), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[::3, -3:] = 0  # completions that ended early
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :8] = -100

    def one_pass() -> list[Any]:
        model.zero_grad()
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
        (out.log_probs.sum() + out.entropy.sum()).backward()
        return [out.log_probs.detach(), *(p.grad.clone() for p in model.parameters())]

    settings = {"TRL's tiles (32,768 wide)": contextlib.nullcontext, "narrow_logprob_tiles": None}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    outputs: dict[str, list[Any]] = {}
    for _ in range(args.repeats):
        for name, factory in settings.items():
            with factory() if factory is not None else narrow_logprob_tiles(model):
                outputs[name] = one_pass()
                before = resource.getrusage(resource.RUSAGE_SELF)
                start = time.process_time()
                for _ in range(args.passes):
                    one_pass()
                cpu_ms = 1000 * (time.process_time() - start) / args.passes
                faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before.ru_minflt) / args.passes
            results[name].append((cpu_ms, faults))
    cpu = cpu_model()
    print(
        f"CPU: {cpu}; torch {torch.__version__}, 1 thread; {args.repeats} x {args.passes} passes each, alternated"
    )
    for name, rows in results.items():
        median_ms = statistics.median(ms for ms, _ in rows)
        median_faults = statistics.median(f for _, f in rows)
        print(
            f"{name:28} {median_ms:6.1f} ms CPU, {median_faults:6.0f} page faults per pass (median)  [{cpu}]"
        )
    (wide_name, narrow_name) = tuple(results)
    ratio = statistics.median(
        n[0] / w[0] for n, w in zip(results[narrow_name], results[wide_name], strict=True)
    )
    print(f"narrow / TRL CPU time: {ratio:.2f} (median of the paired ratios)  [{cpu}]")
    same = all(torch.equal(a, b) for a, b in zip(outputs[wide_name], outputs[narrow_name], strict=True))
    print(f"log-probs and gradients bit-identical: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
