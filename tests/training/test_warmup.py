"""The warm-up's supervised examples (`warmup._examples_dataset`)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from bandpo.training.model import build_char_tokenizer
from bandpo.training.tasks import countdown
from bandpo.training.warmup import WarmupConfig, _examples_dataset


def test_examples_dataset_matches_one_tokenizer_call_per_string() -> None:
    """The batched tokenization gives the ids of tokenizing each prompt and answer on its own."""
    config = WarmupConfig(num_examples=64, seed=3, rare_fraction=0.25)
    tokenizer = build_char_tokenizer()
    expected = []
    for problem, answer in countdown.sample_warmup_examples(64, seed=3, rare_fraction=0.25):
        prompt_ids = tokenizer(problem.prompt)["input_ids"]
        answer_ids = [*tokenizer(answer)["input_ids"], tokenizer.eos_token_id]
        expected.append(
            {"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids}
        )
    assert _examples_dataset(config, tokenizer) == expected
