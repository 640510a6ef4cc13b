"""The figures docs/theory.md gives for the KL table path, measured again, so that the docs cannot drift from
the code (the table's size and node count, and its error against float64 Newton)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from bandpo.band.kl import kl_bounds_newton, kl_bounds_table, kl_table

THEORY = Path(__file__).resolve().parents[2] / "docs" / "theory.md"


def test_table_size_in_the_docs_is_the_table_built() -> None:
    text = " ".join(THEORY.read_text().split())
    match = re.search(r"([\d,]+) nodes of four float64 values .*?, ([\d.]+) MB per", text)
    assert match, "docs/theory.md no longer states the KL table's node count and size"
    table = kl_table(0.05, torch.device("cpu"))
    assert table.shape == (4, int(match.group(1).replace(",", "")))
    assert table.numel() * table.element_size() / 1e6 == pytest.approx(float(match.group(2)), abs=0.005)


@pytest.mark.parametrize(("delta", "upper_relative"), [(1e-4, 1.3e-7), (0.05, 8e-8)])
def test_table_error_in_the_docs_holds(delta: float, upper_relative: float) -> None:
    text = " ".join(THEORY.read_text().split())
    assert "1.3·10⁻⁷ relative on the upper bound at δ = 10⁻⁴ (8·10⁻⁸ at δ = 0.05)" in text
    logp = -torch.logspace(-8, 2, 400_000, dtype=torch.float64).to(torch.float32)
    lower, upper = kl_bounds_table(logp, delta)
    lower64, upper64 = kl_bounds_newton(logp.double(), delta)
    finite = torch.isfinite(upper64) & torch.isfinite(upper)
    assert ((upper.double() - upper64).abs() / upper64)[finite].max() <= upper_relative
    assert (lower.double() - lower64).abs().max() <= 7e-8
