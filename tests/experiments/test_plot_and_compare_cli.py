"""`bandpo plot bounds` and `bandpo compare` argument handling through the real CLI entry point."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bandpo.cli import main


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_plot_bounds_writes_both_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "plot",
            "bounds",
            "--divergence",
            "kl",
            "tv",
            "--delta",
            "0.05",
            "0.1",
            "--output-dir",
            str(tmp_path),
            "--svg",
        ]
    )
    assert code == 0
    fig1, fig2 = tmp_path / "bounds_fig1.png", tmp_path / "bounds_fig2.png"
    width1, height1 = png_size(fig1)
    width2, height2 = png_size(fig2)
    assert width1 > 1000 and height1 > 800  # 2 x 2 panels
    assert width2 > 1000 and height2 > 800  # 4 Band panels + 3 baselines: 3 rows of 3
    assert (tmp_path / "bounds_fig1.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "bounds_fig2.svg").stat().st_size > 0
    out = capsys.readouterr().out
    assert str(fig1) in out and str(fig2) in out


def test_plot_bounds_without_svg_writes_png_only(tmp_path: Path) -> None:
    assert main(["plot", "bounds", "--output-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bounds_fig1.png", "bounds_fig2.png"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plot", "bounds", "--divergence", "nope"], "nope"),
        (["plot", "bounds", "--delta", "-0.1"], "delta"),
        (["compare", "--task", "bandit", "--methods", "nope"], "unknown method"),
        (["compare", "--task", "bandit", "--methods", "band:delta"], "key=value"),
        (["compare", "--task", "bandit", "--seeds", "0"], "--seeds"),
        (["compare", "--task", "bandit", "--steps", "0"], "--steps"),
        (["compare", "--task", "bandit", "--model", "m"], "--task lm"),
        (["compare", "--jobs", "0"], "--jobs"),
        (["compare", "--scenario", "trap"], "--task bandit"),
        (["compare", "--methods", "band:nope=1"], "no parameter"),
        (["compare", "--sweep", "delta"], "--sweep"),
        (["compare", "--methods", "clip", "--sweep", "delta=0.1,0.2"], "none of --methods"),
        (["compare", "--task", "bandit", "--sweep", "delta=0.1"], "--sweep"),
        (["compare", "--task", "reach", "--dataset", "d.jsonl"], "--task lm"),
        (["compare", "--report-only", "no-such-dir"], "per_seed.json does not exist"),
    ],
)
def test_bad_input_is_a_one_line_error(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir()), "nothing may be written before the input is validated"


@pytest.mark.parametrize(
    "argv",
    [
        ["plot"],
        ["plot", "curves"],
        ["compare", "--task", "atari"],
        ["compare", "--scenario", "nope"],
        ["compare", "--seeds", "two"],
    ],
)
def test_argparse_rejects_malformed_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_compare_bandit_cli_runs_and_prints_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "compare", "--task", "bandit", "--methods", "clip", "band_upper", "--seeds", "2",
            "--scenario", "on_policy", "--steps", "3", "--output-dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "| scenario | clip | band_upper |" in captured.out
    assert "bandit on_policy: band_upper" in captured.err  # progress goes to stderr
    assert (tmp_path / "report.md").exists() and png_size(tmp_path / "bandit_on_policy.png")[0] > 0
