"""`bandpo bounds`: prints the interval and margins beside clip and Clip-Higher; bad input exits 2."""

from __future__ import annotations

import pytest

from bandpo.cli import main


def test_bounds_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bounds", "--divergence", "kl", "--delta", "0.05", "--p", "0.01", "0.08", "0.5", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "Band-kl" in out and "clip up" in out and "CH up" in out
    rows = {line.split("|")[0].strip(): line for line in out.splitlines() if line.count("|") == 4}
    assert set(rows) >= {"0.01", "0.08", "0.5", "0.9"}
    # p = 0.08: interval [0.2617, 2.4106]; band up margin 0.1128 vs clip 0.016 and Clip-Higher 0.0224
    cells = rows["0.08"].replace("|", " ").split()
    assert [float(x) for x in cells[1:]] == pytest.approx(
        [0.2617, 2.4106, 0.1128, 0.0591, 0.016, 0.016, 0.0224, 0.016], abs=1e-4
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bounds", "--divergence", "nope"], "valid names"),
        (["bounds", "--p", "1.5"], "probabilities in (0, 1]"),
        (["bounds", "--delta", "0"], "delta must be finite and > 0"),
    ],
)
def test_bounds_bad_input(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
