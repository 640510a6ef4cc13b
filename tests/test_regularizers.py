"""The KL penalty and the chunked entropy: each estimator and the naive entropy as references, clamps, dtypes."""

from __future__ import annotations

import math

import pytest
import torch

from bandpo.regularizers import entropy_from_logits, kl_penalty

# --- KL penalty -------------------------------------------------------------------------------------


def test_kl_penalty_estimators() -> None:
    logp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, -0.5]], dtype=torch.float64, requires_grad=True)
    d = (logp - ref).detach()
    assert torch.allclose(kl_penalty(logp, ref, "k1"), d)
    assert torch.allclose(kl_penalty(logp, ref, "k2"), 0.5 * d**2)
    k3 = kl_penalty(logp, ref, "k3")
    assert torch.allclose(k3, torch.exp(-d) + d - 1)
    assert torch.equal(k3, kl_penalty(logp, ref, "low_var_kl")) and torch.equal(k3, kl_penalty(logp, ref))
    assert (k3 >= 0).all() and k3[0, 2].item() == 0.0
    k3.sum().backward()
    assert logp.grad is not None and ref.grad is None


def test_kl_penalty_k3_is_clamped_and_checked() -> None:
    logp = torch.tensor([-40.0, 0.0, 0.0])
    ref = torch.tensor([0.0, -40.0, -5.0])
    k3 = kl_penalty(logp, ref, "k3")
    # d = -40: e^20 - 21 clamps to 10; d = 40: e^-20 + 19 clamps to 10; d = 5 is inside: e^-5 + 4
    assert k3.tolist() == pytest.approx([10.0, 10.0, math.exp(-5) + 4])
    with pytest.raises(ValueError, match="low_var_kl"):
        kl_penalty(logp, ref, "mse")
    with pytest.raises(ValueError, match="same shape"):
        kl_penalty(logp, ref[:1])
    assert kl_penalty(logp.bfloat16(), ref.bfloat16()).dtype == torch.float32


# --- entropy ----------------------------------------------------------------------------------------


def naive_entropy(logits: torch.Tensor) -> torch.Tensor:
    x = logits.double()
    return -(torch.softmax(x, -1) * torch.log_softmax(x, -1)).sum(-1)


@pytest.mark.parametrize("chunk_size", [1, 5, 256])
def test_chunked_entropy_equals_naive_with_gradients(chunk_size: int) -> None:
    logits = torch.randn(3, 7, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    ent = entropy_from_logits(a, chunk_size=chunk_size)
    ref = naive_entropy(b)
    assert ent.shape == (3, 7) and torch.allclose(ent, ref, rtol=1e-12, atol=1e-12)
    weights = torch.rand(3, 7, dtype=torch.float64)
    (ent * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        assert torch.equal(entropy_from_logits(logits, chunk_size=chunk_size), ent.detach())


def test_entropy_edge_cases() -> None:
    logits = torch.tensor([[0.0, 0.0, -math.inf, -math.inf], [5.0, -math.inf, -math.inf, -math.inf]])
    ent = entropy_from_logits(logits.requires_grad_(), chunk_size=1)
    assert ent.tolist() == pytest.approx([math.log(2), 0.0])
    ent.sum().backward()
    assert torch.isfinite(logits.grad).all()
    bf = entropy_from_logits(torch.zeros(2, 8, dtype=torch.bfloat16))
    assert bf.dtype == torch.float32 and bf.tolist() == pytest.approx([math.log(8)] * 2)
    assert entropy_from_logits(torch.zeros(0, 4, 10)).shape == (0, 4)
    assert entropy_from_logits(torch.zeros(10)).shape == ()
    with pytest.raises(ValueError, match="chunk_size"):
        entropy_from_logits(torch.zeros(2, 3), chunk_size=0)
