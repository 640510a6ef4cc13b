"""Test fixture: the tiny Qwen2 model and byte-level tokenizer of the verl fixture, and SkyRL's prompt data.

The model and tokenizer are built by `verl_cpu/verl_cpu_assets.py` (one definition for both engines' CPU
tests: peaked next-token distributions, so that PPO's bounds bind within a few steps).
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

VERL_ASSETS = Path(__file__).resolve().parents[1] / "verl_cpu" / "verl_cpu_assets.py"


def _verl_assets():
    spec = importlib.util.spec_from_file_location("verl_cpu_assets", VERL_ASSETS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_data(path: Path, rows: int, env_class: str, seed: int = 0) -> None:
    """SkyRL's prompt schema (`PromptDataset`): chat messages and the skyrl-gym env that scores them."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(rows):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            row = {"prompt": [{"role": "user", "content": f"{a}+{b}="}], "env_class": env_class}
            handle.write(json.dumps(row) + "\n")


def build_all(root: Path, train_rows: int, env_class: str = "bandpo_byte_mean") -> dict[str, Path]:
    """Tokenizer, model and training data under `root`; returns their paths."""
    from transformers import AutoTokenizer

    verl_assets = _verl_assets()
    paths = {"tokenizer": root / "tokenizer", "model": root / "model", "train": root / "train.jsonl"}
    verl_assets.build_tokenizer(paths["tokenizer"])
    tokenizer = AutoTokenizer.from_pretrained(paths["tokenizer"])
    verl_assets.build_model(paths["model"], len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    tokenizer.save_pretrained(paths["model"])  # SkyRL loads the tokenizer from the model path
    build_data(paths["train"], train_rows, env_class)
    return paths
