"""One forward and backward pass of a model in float32 and under bf16 autocast on CPU, side by side.

Why `bandpo.training.policy.autocast_dtype` keeps CPU runs in float32 (TRL 1.16's default is bf16 autocast on
CPU too): a CPU without AVX512-BF16/AMX emulates bf16 matmuls. Each mode runs `--repeats` times, alternating,
on float32 master weights; prints the CPU model, and wall and CPU time of each pass.

    PYTHONPATH=src .venv/bin/python benchmarks/cpu_autocast.py                 # SmolLM2-135M, 4 x 128 tokens
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_train import cpu_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="short name or checkpoint folder")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num-threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from bandpo.training.pretrained import resolve_model

    torch.set_num_threads(args.num_threads)
    path = resolve_model(args.model)
    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, dtype=torch.float32, trust_remote_code=False
    )
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, model.config.vocab_size, (args.batch, args.tokens), generator=generator)

    def forward_backward(autocast: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=input_ids).logits  # (B, T, V)
        logits.float().logsumexp(-1).mean().backward()
        model.zero_grad(set_to_none=True)

    print(f"{cpu_model()}; {args.model}, {args.batch} x {args.tokens} tokens, {args.num_threads} thread(s)")
    for _ in range(args.repeats):
        for autocast in (False, True):
            wall, cpu = time.perf_counter(), time.process_time()
            forward_backward(autocast)
            label = "bf16 autocast" if autocast else "float32"
            print(
                f"{label:>14}: wall {time.perf_counter() - wall:7.2f} s, CPU {time.process_time() - cpu:7.2f} s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
