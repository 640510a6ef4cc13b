"""mean@k, unbiased pass@k and maj@k on small hand-computed cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bandpo.estimators import distinct_correct, maj_at_k, mean_at_k, pass_at_k, pass_at_k_from_correct


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (2, 1, 1, 0.5),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 0, 5, 0.0),
        (10, 6, 5, 1.0),  # n - c < k: every 5-subset has a correct sample
        (4, 1, 4, 1.0),
        (16, 3, 1, 3 / 16),
    ],
)
def test_pass_at_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_binomial_formula_and_subset_enumeration() -> None:
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    # brute force: fraction of k-subsets of 6 samples (2 correct) holding a correct one
    samples = [1, 0, 1, 0, 0, 0]
    subsets = list(itertools.combinations(samples, 3))
    assert pass_at_k(6, 2, 3) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_large_n_is_stable() -> None:
    assert 0.0 < pass_at_k(1000, 1, 32) == pytest.approx(32 / 1000)
    assert pass_at_k(torch.tensor(4), torch.tensor(1), 2) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("n", "c", "k"), [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5), (4.5, 1, 1)]
)
def test_pass_at_k_rejects_bad_input(n, c, k) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_at_k() -> None:
    assert mean_at_k([1, 0, 1, 1]) == 0.75
    assert mean_at_k([True, False]) == 0.5
    assert mean_at_k(torch.tensor([1.0, 0.0, 0.0, 0.0])) == 0.25
    assert mean_at_k([[1, 0], [1, 1, 1, 1]]) == 0.75  # mean over prompts of per-prompt means
    assert mean_at_k(torch.tensor([[1, 0], [0, 0]])) == 0.25
    assert (
        mean_at_k([torch.tensor(True), torch.tensor(False)]) == 0.5
    )  # a list of 0-dim tensors is one prompt
    with pytest.raises(ValueError):
        mean_at_k([])
    with pytest.raises(ValueError):
        mean_at_k([[1], []])


def test_pass_at_k_from_correct() -> None:
    assert pass_at_k_from_correct([1, 0, 0, 0], 2) == pytest.approx(0.5)
    assert pass_at_k_from_correct([[1, 0, 0, 0], [0, 0, 0, 0]], 2) == pytest.approx(0.25)
    assert pass_at_k_from_correct(torch.tensor([[1, 1], [0, 1]]), 1) == pytest.approx(0.75)
    assert pass_at_k_from_correct([0, 1, 0], 1) == pytest.approx(mean_at_k([0, 1, 0]))  # pass@1 = mean@k


def test_maj_at_k_with_reference_answer() -> None:
    assert maj_at_k(["a", "b", "a", "c"], "a") == 1.0
    assert maj_at_k(["a", "b", "a", "c"], "b") == 0.0
    assert maj_at_k(["a", "b"], "a") == 0.5  # tie: expected value of a uniform tie-break
    assert maj_at_k(["a", "b", "c", "b", "c"], "c") == 0.5
    assert maj_at_k([None, None, "b"], "b") == 1.0  # no answer abstains
    assert maj_at_k([None, None], "b") == 0.0
    assert maj_at_k([3, 3, 4], 3) == 1.0


def test_maj_at_k_with_correctness_flags() -> None:
    assert maj_at_k(["x", "x", "y"], correctness=[True, True, False]) == 1.0
    assert maj_at_k(["x", "x", "y"], correctness=[False, False, True]) == 0.0
    assert maj_at_k(["x", "y"], correctness=torch.tensor([True, False])) == 0.5
    with pytest.raises(ValueError, match="one per sample"):
        maj_at_k(["x", "y"], correctness=[True])
    with pytest.raises(ValueError, match="exactly one"):
        maj_at_k(["x"])
    with pytest.raises(ValueError, match="exactly one"):
        maj_at_k(["x"], "x", correctness=[True])


def test_distinct_correct() -> None:
    assert distinct_correct(["1/2", "1/2", "0.5", "3", None], [True, True, True, False, True]) == 2
    assert distinct_correct(["a"], [False]) == 0
    with pytest.raises(ValueError):
        distinct_correct(["a", "b"], [True])
