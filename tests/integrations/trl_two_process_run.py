"""One rank of a 2-process `BandPOTrainer.train()` on CPU (gloo), launched by `test_trl_two_processes.py`.

Usage: ``python -m torch.distributed.run --nproc_per_node 2 trl_two_process_run.py OUTPUT_DIR``. Each rank
writes ``rank<k>.json``: its micro-batches' alignment check, its local clip counts per micro-batch (to pool
by hand in the test), and the metrics TRL logged (the same on every rank).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from transformers import TrainerCallback
from trl_recording import build, misaligned_rows

from bandpo import metric_names as mn


class KeepLogs(TrainerCallback):
    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.history.append(dict(logs or {}))


def main() -> None:
    output = Path(sys.argv[1])
    torch.set_num_threads(1)
    trainer = build(
        str(output / "run"),
        method_params={"delta": 0.02},  # a narrow band, so that bounds bind after a few steps
        gradient_accumulation_steps=2,
        steps_per_generation=4,
        num_iterations=2,
        max_steps=4,
        learning_rate=0.1,
        max_completion_length=8,
    )
    logs = KeepLogs()
    trainer.add_callback(logs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    bad, checked = misaligned_rows(trainer.records, trainer.bound_method)
    local = []  # per micro-batch on this rank: tokens, and tokens clipped down (A < 0, ratio < ratio_low)
    for record in trainer.records:
        inputs_old = [record["generation"][key][0] for key in record["rows"]]
        old = torch.stack([record["logp"][i] if o is None else o for i, o in enumerate(inputs_old)])
        ratio = (record["logp"] - old).exp()
        advantages = record["advantages"][:, None]
        down = record["mask"] & (advantages < 0) & (ratio < record["ratio_low"])
        local.append({"tokens": int(record["mask"].sum()), "down": int(down.sum())})
    rank = int(os.environ.get("RANK", "0"))
    result = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "misaligned": bad,
        "checked": checked,
        "micro_batches": local,
        "history": [h for h in logs.history if mn.CLIP_FRAC_DOWN in h],
        "steps": trainer.state.global_step,
    }
    (output / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
