"""Speed and accuracy of the Band-KL bounds against a fixed clip and an official-style bisection.

Run: `.venv/bin/python benchmarks/band_speed.py [--tokens 524288] [--delta 0.05] [--threads 2]
[--device cpu|cuda] [--repeats 15] [--compile]`.

Input: float32 log-probs with a realistic mix (70% near 0: −Exp(mean 0.05); 30% uniform on [−20, 0]), seed 0.
Paths timed (median of `--repeats` after warm-up, synchronised on CUDA):
  (a) `torch.clamp(ratio, 0.8, 1.28)`, the fixed clip;
  (b) official-style bisection, written here from the algorithm's description: brackets [1, 1/p] and [0, 1],
      up to 50 halvings per side, stop when the widest bracket ≤ 1e−6, checked on the host (`.item()`) every
      iteration, in the input dtype, with the p > 1 − 1e−6 and p < 1e−6 overrides;
  (c) `band_bounds(old_logp, delta=δ)`, our default (float32 KL: four 1-D gathers from a float64 table,
      interpolation in float64, one rounding to float32; one validation sync);
  (c') the same with `validate=False` (no host sync at all);
  (c'') monotone Newton in float32 (`kl_bounds_newton`, 4 steps), the table-free alternative;
  (d) with `--compile`: `torch.compile` of the table lookup (`kl_interpolate`; off by default, slow to
      compile on a loaded 2-core box).
Errors are against the float64 Newton solver (itself checked against mpmath in tests/band): max relative
error of the upper bound and max absolute error of the lower bound, over all tokens. The first line printed
names the CPU (or GPU): ratios are comparable only between runs on the same processor.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable

import torch

from bandpo.band import band_bounds
from bandpo.band.kl import kl_bounds_newton, kl_interpolate, kl_table


def make_logp(n: int, device: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    n_head = int(0.7 * n)
    head = -torch.empty(n_head, dtype=torch.float64).exponential_(1.0 / 0.05, generator=gen)
    tail = -20.0 * torch.rand(n - n_head, dtype=torch.float64, generator=gen)
    logp = torch.cat([head, tail])[torch.randperm(n, generator=gen)]
    return logp.to(torch.float32).to(device)


def official_style_bisection(logp: torch.Tensor, delta: float, max_iter: int = 50, tol: float = 1e-6):
    """Bisection as the official code does it (our own implementation of the described algorithm)."""

    def f(u: torch.Tensor) -> torch.Tensor:
        u = torch.clamp(u, min=1e-12)
        return -torch.log(u) + u - 1

    p = torch.exp(logp)
    p_safe = torch.clamp(p, 1e-12, 1 - 1e-7)

    def g(r: torch.Tensor) -> torch.Tensor:
        comp = (1 - r * p_safe) / (1 - p_safe)
        return p_safe * f(r) + (1 - p_safe) * f(comp)

    low, high = torch.ones_like(p), 1.0 / p_safe  # upper root on [1, 1/p]
    for _ in range(max_iter):
        mid = 0.5 * (low + high)
        ok = g(mid) <= delta
        low, high = torch.where(ok, mid, low), torch.where(ok, high, mid)
        if torch.max(high - low).item() <= tol:
            break
    upper = 0.5 * (low + high)
    low, high = torch.zeros_like(p), torch.ones_like(p)  # lower root on [0, 1]
    for _ in range(max_iter):
        mid = 0.5 * (low + high)
        ok = g(mid) <= delta
        low, high = torch.where(ok, low, mid), torch.where(ok, mid, high)
        if torch.max(high - low).item() <= tol:
            break
    lower = 0.5 * (low + high)
    near_one, near_zero = p > 1 - 1e-6, p < 1e-6
    lower = torch.where(near_one, math.exp(-delta), torch.where(near_zero, 0.0, lower))
    upper = torch.where(near_one, 1.0, torch.where(near_zero, 1.0 / p_safe, upper))
    return lower, upper


def processor_name(device: str) -> str:
    """The CPU model (from /proc/cpuinfo on Linux, else `platform.processor()`), or the GPU's name on CUDA."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def median_ms(fn: Callable[[], object], repeats: int, device: str) -> float:
    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=524_288)
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of (c') as path (d)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("band_speed: --device cuda asked for, but CUDA is not available")
    torch.set_num_threads(args.threads)
    delta, device = args.delta, args.device

    logp = make_logp(args.tokens, device)
    ratio = torch.exp(0.1 * torch.randn(args.tokens, generator=torch.Generator().manual_seed(1))).to(device)
    ref_lower, ref_upper = kl_bounds_newton(logp.double(), delta)

    paths: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor] | torch.Tensor]] = {
        "(a) torch.clamp(ratio, 0.8, 1.28)": lambda: torch.clamp(ratio, 0.8, 1.28),
        "(b) official-style bisection": lambda: official_style_bisection(logp, delta),
        "(c) band_bounds (default)": lambda: band_bounds(logp, delta=delta),
        "(c') band_bounds(validate=False)": lambda: band_bounds(logp, delta=delta, validate=False),
        "(c'') Newton float32, 4 steps": lambda: kl_bounds_newton(logp, delta),
    }
    if args.compile:
        try:
            table = kl_table(delta, logp.device)
            compiled = torch.compile(kl_interpolate, dynamic=False)
            start = time.perf_counter()
            compiled(logp, table)
            compile_s = time.perf_counter() - start
            paths[f"(d) torch.compile, table lookup [compile {compile_s:.0f} s]"] = lambda: compiled(
                logp, table
            )
        except Exception as error:  # compile is optional: report why it is missing
            print(f"(d) torch.compile unavailable here: {type(error).__name__}: {str(error)[:120]}")

    rows = []
    for name, fn in paths.items():
        ms = median_ms(fn, args.repeats if "(b)" not in name else max(3, args.repeats // 3), device)
        out = fn()
        if not isinstance(out, torch.Tensor):
            lower, upper = _pair(out)
            err_up = ((upper - ref_upper).abs() / ref_upper).max().item()
            err_low = (lower - ref_lower).abs().max().item()
            errs = f"{err_up:10.2e} {err_low:10.2e}"
        else:
            errs = f"{'-':>10} {'-':>10}"
        rows.append((name, ms, errs))

    clamp_ms = rows[0][1]
    bisect_ms = rows[1][1]
    default_ms = rows[2][1]
    print(f"processor: {processor_name(device)}")
    print(
        f"Band-KL bounds, {args.tokens:,} float32 tokens, delta={delta}, device={device}, "
        f"threads={torch.get_num_threads()}, torch {torch.__version__}"
    )
    header = (
        f"{'path':58s} {'median ms':>10} {'x clamp':>9} {'(b)/path':>9} {'upper rel':>10} {'lower abs':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, ms, errs in rows:
        print(f"{name:58s} {ms:10.3f} {ms / clamp_ms:9.1f} {bisect_ms / ms:9.1f} {errs}")
    print(
        f"speed-up of the default path over the official-style bisection, (b)/(c): {bisect_ms / default_ms:.1f}x"
    )


def _pair(out) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(out, "lower"):
        return out.lower.double(), out.upper.double()
    lower, upper = out
    return lower.double(), upper.double()


if __name__ == "__main__":
    main()
