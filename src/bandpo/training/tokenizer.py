"""A character-level tokenizer for the embedded task, built locally with the `tokenizers` library.

One token per character of `countdown.ALPHABET`, plus ``<pad>`` and ``<eos>``. It is wrapped in a
`transformers.PreTrainedTokenizerFast`, so TRL, `save_pretrained` and `from_pretrained` treat it like any
Hub tokenizer; nothing is downloaded. It has no chat template (the embedded prompts are plain text).
"""

from __future__ import annotations

from typing import Any

from bandpo.training.tasks.countdown import ALPHABET

__all__ = ["EOS_TOKEN", "PAD_TOKEN", "build_char_tokenizer"]

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
