"""Test fixture: a tiny Qwen2 model, a byte-level tokenizer and GRPO parquet data, all built locally.

The model is built so that PPO's bounds bind: its output layer is scaled up so that next-token
distributions are peaked (the top token often has p > 0.5) instead of the near-uniform ones of a default
random init, and a few optimiser steps at a large learning rate move the ratio well past 1 ± 0.02.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DATA_SOURCE = "bandpo_tiny_digits"


def build_tokenizer(directory: Path) -> None:
    """Byte-level BPE with no merges: 256 byte tokens ("\\n" is one token, as verl's agent loop needs)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: index for index, char in enumerate(sorted(alphabet))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    fast.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)


def build_model(
    directory: Path, vocab_size: int, pad_token_id: int, eos_token_id: int, seed: int = 0
) -> None:
    """A 2-layer Qwen2 (hidden 32) whose logits have a standard deviation of about 4 (peaked)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.7)  # hidden states are RMS-normalised: logit std ≈ 0.7·√32 ≈ 4
    model.save_pretrained(directory)


def build_data(path: Path, rows: int, seed: int = 0) -> None:
    """verl's RL parquet schema: short arithmetic prompts (the reward does not read the answer)."""
    import random

    import pandas as pd

    rng = random.Random(seed)
    records = []
    for index in range(rows):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        records.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": f"{a}+{b}="}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(a + b)},
                "extra_info": {"index": index, "split": path.stem},
            }
        )
    pd.DataFrame.from_records(records).to_parquet(path)


def build_all(root: Path, train_rows: int = 16, val_rows: int = 4) -> dict[str, Path]:
    """Tokenizer, model and data under `root`; returns their paths."""
    from transformers import AutoTokenizer

    paths = {
        "tokenizer": root / "tokenizer",
        "model": root / "model",
        "train": root / "train.parquet",
        "val": root / "val.parquet",
    }
    build_tokenizer(paths["tokenizer"])
    tokenizer = AutoTokenizer.from_pretrained(paths["tokenizer"])
    build_model(paths["model"], len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    build_data(paths["train"], train_rows)
    build_data(paths["val"], val_rows, seed=1)
    return paths


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None
) -> float:
    """Reward for the test runs (verl's `reward.custom_reward_function`): the mean byte value of the response / 255.

    Any reward that differs between the samples of a group gives GRPO non-zero advantages, which is all the
    test needs; this one varies with every sampled token, so it never collapses to a constant.
    """
    data = solution_str.encode("utf-8", errors="replace")
    return sum(data) / (255 * len(data)) if data else 0.0
