"""What checking a prepared checkpoint costs at load: `verify_prepared` on SmolLM2-135M-Instruct (538 MB),
beside loading the same folder with transformers, in one process.

The shared cache is not touched: the prepared files are hard-linked into a temporary cache (no copy), the
manifest is written there (the hashing a conversion does once), then each round clears the in-process record
of verified folders and verifies again (sizes, then SHA-256 of every file). Reported per round: wall and CPU
seconds (``time.perf_counter``, ``time.process_time``); the first round may read from disk, the others from
the page cache, as a load right after another does. Also: a second check in the same process (the stat
signature only, as `TrainConfig` then the loader do) and one ``AutoModelForCausalLM.from_pretrained`` of the
folder, for scale.

    PYTHONPATH=src .venv/bin/python benchmarks/verify_prepared.py             # 5 rounds
    PYTHONPATH=src .venv/bin/python benchmarks/verify_prepared.py --rounds 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_train import cpu_model


def _timed(action) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from bandpo.training import prepared_files, pretrained

    shared = pretrained.model_dir(args.name)
    if pretrained.prepared_info(args.name) is None:
        print(f"{args.name} is not prepared in {shared}; run `bandpo prepare-model {args.name}` first")
        return 1
    with tempfile.TemporaryDirectory(prefix="bandpo-verify-") as root:
        folder = pretrained.model_dir(args.name, root)
        folder.mkdir(parents=True)
        for path in shared.iterdir():
            if path.name != prepared_files.MANIFEST_FILE:
                os.link(path, folder / path.name)
        size = sum(path.stat().st_size for path in folder.iterdir())
        manifest_wall, manifest_cpu = _timed(lambda: pretrained.write_manifest(folder))
        rounds = []
        for _ in range(args.rounds):
            prepared_files._VERIFIED.clear()  # forget this process's record: hash again
            rounds.append(_timed(lambda: pretrained.verify_prepared(args.name, root)))
        again_wall, again_cpu = _timed(lambda: pretrained.verify_prepared(args.name, root))

        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(1)
        load_wall, load_cpu = _timed(
            lambda: AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        )

    walls = [wall for wall, _ in rounds]
    cpus = [cpu for _, cpu in rounds]
    print(f"CPU: {cpu_model()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{args.name}: {len(list(shared.iterdir()))} files, {size / 1e6:.0f} MB")
    print(f"write_manifest (once, at conversion): wall {manifest_wall:.2f} s, CPU {manifest_cpu:.2f} s")
    for index, (wall, cpu) in enumerate(rounds, 1):
        print(
            f"verify_prepared round {index}: wall {wall:.2f} s, CPU {cpu:.2f} s ({size / 1e6 / wall:.0f} MB/s)"
        )
    print(
        f"verify_prepared median of {args.rounds}: wall {statistics.median(walls):.2f} s, "
        f"CPU {statistics.median(cpus):.2f} s"
    )
    print(
        f"second check in the same process (stat only): wall {again_wall * 1e3:.2f} ms, CPU {again_cpu * 1e3:.2f} ms"
    )
    print(f"from_pretrained of the same folder, for scale: wall {load_wall:.2f} s, CPU {load_cpu:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
