"""The embedded policy: a tiny Qwen2 causal LM built locally from a config (no weights downloaded).

Width 64 and 2 layers (about 0.1M parameters), the size `exploration-notes.md` §3 found trainable in about
a minute on one CPU core; larger models were too slow or unstable there. Any `transformers` causal LM works
with the trainer; Qwen2 is used because it is the architecture of the models the paper trains.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_tiny_model", "count_parameters"]


def build_tiny_model(
    tokenizer: Any, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, seed: int = 0
) -> Any:
    """A freshly initialised `Qwen2ForCausalLM` sized for `tokenizer` (float32, SDPA attention, tied embeddings)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=3 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        use_cache=True,
        dtype="float32",
    )
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.eos_token_id
    return model


def count_parameters(model: Any) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
