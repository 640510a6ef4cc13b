"""The embedded policy: a tiny Qwen2 causal LM and its character tokenizer, built locally (nothing downloaded).

Width 64 and 2 layers (about 0.1M parameters): in our first experiments this size learned the embedded task
in about a minute on one CPU core, where larger models were too slow or unstable. Any `transformers` causal LM works
with the trainer; Qwen2 is used because it is the architecture of the models the paper trains.

The tokenizer (`build_char_tokenizer`) has one token per character of `countdown.ALPHABET`, plus ``<pad>`` and
``<eos>``, built with the `tokenizers` library and wrapped in a `transformers.PreTrainedTokenizerFast`, so TRL,
`save_pretrained` and `from_pretrained` treat it like any Hub tokenizer. It has no chat template (the embedded
prompts are plain text).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from bandpo.training.tasks.countdown import ALPHABET

__all__ = [
    "EOS_TOKEN",
    "PAD_TOKEN",
    "build_char_tokenizer",
    "build_tiny_model",
    "count_parameters",
    "narrow_logprob_tiles",
]


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


@contextlib.contextmanager
def narrow_logprob_tiles(model: Any) -> Iterator[None]:
    """Within the block, TRL's fused LM head tiles the vocabulary at most `model`'s vocabulary wide.

    TRL 1.16 computes training log-probabilities with a fused LM head that projects the hidden states onto
    the vocabulary tile by tile, into a (tokens x tile) buffer allocated in every forward and backward pass,
    the tile 32,768 columns wide whatever the vocabulary. For the embedded model's 17-token vocabulary that is
    a 126 MB buffer per micro-batch of 64 completions, of which 17 columns are used; the C library maps it
    fresh each time, and writing one row per token costs about 2,000 page faults per pass (15-20% of an
    update's CPU time on a 2-core machine). A vocabulary no wider than the tile has one tile either way, so
    the same numbers are computed (only the buffer's row stride changes); a wider vocabulary keeps TRL's
    width. TRL's value is restored on exit; without TRL, or when TRL has no such setting, nothing changes.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:  # pragma: no cover - depends on the environment
        trl_utils = None
    previous = getattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", None)
    if weight is None or not isinstance(previous, int) or weight.shape[0] >= previous:
        yield
        return
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = max(1, int(weight.shape[0]))
    try:
        yield
    finally:
        trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = previous


PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"


def build_char_tokenizer() -> Any:
    """Return a `PreTrainedTokenizerFast` with one id per character of `ALPHABET` (pad = 0, eos = 1)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD_TOKEN: 0, EOS_TOKEN: 1}
    for character in ALPHABET:
        vocab[character] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD_TOKEN))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    core.decoder = decoders.Fuse()  # join characters back without spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, unk_token=PAD_TOKEN
    )
    tokenizer.padding_side = "left"
    return tokenizer
