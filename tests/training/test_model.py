"""The embedded model's helpers (`bandpo.training.model`)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
trl_utils = pytest.importorskip("trl.trainer.utils")

from bandpo.training.model import (  # noqa: E402
    build_char_tokenizer,
    build_tiny_model,
    narrow_logprob_tiles,
)

FLOAT32_ULP = torch.finfo(torch.float32).eps


def _trl_tile_width() -> int:
    return trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE


def _fused_logps_and_grads(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Log-probs, entropies and parameter gradients through TRL's fused LM head, as GRPOTrainer computes them."""
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed)
    trl_utils.add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, len(tokenizer), (6, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[:2, -3:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :-5] = -100
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
    (out.log_probs.sum() + out.entropy.sum()).backward()
    return out.log_probs.detach(), out.entropy.detach(), [p.grad.clone() for p in model.parameters()]


def test_narrow_logprob_tiles_sets_the_vocabulary_width_and_restores_trl() -> None:
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer)
    before = _trl_tile_width()
    with narrow_logprob_tiles(model):
        assert _trl_tile_width() == len(tokenizer)
    assert _trl_tile_width() == before


def test_narrow_logprob_tiles_keeps_trl_width_for_a_wide_vocabulary() -> None:
    class Wide:
        def get_output_embeddings(self) -> torch.nn.Module:
            return torch.nn.Linear(2, 2 * _trl_tile_width(), bias=False, device="meta")

    before = _trl_tile_width()
    with narrow_logprob_tiles(Wide()):
        assert _trl_tile_width() == before


def test_narrow_logprob_tiles_computes_the_same_log_probs_and_gradients() -> None:
    """One tile either way; within 2 ulps (identical on the CPUs tried: same kernels, another row stride)."""
    logps, entropy, grads = _fused_logps_and_grads()
    tokenizer = build_char_tokenizer()
    with narrow_logprob_tiles(build_tiny_model(tokenizer)):
        narrow_logps, narrow_entropy, narrow_grads = _fused_logps_and_grads()
    tolerance = {"rtol": 2 * FLOAT32_ULP, "atol": 2 * FLOAT32_ULP}
    torch.testing.assert_close(narrow_logps, logps, **tolerance)
    torch.testing.assert_close(narrow_entropy, entropy, **tolerance)
    for narrow, wide in zip(narrow_grads, grads, strict=True):
        torch.testing.assert_close(narrow, wide, **tolerance)
