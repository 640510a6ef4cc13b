"""Counts have a range, declared once (`bandpo.training.config.Setting`), checked before any work and refused
in one line: `bandpo train`'s counts, `bandpo tokens --prompts/--samples`, `bandpo compare --seeds/--jobs/
--steps`; a comparison that plans more than `PLAN_LIMIT` runs says how many and how to ask for them."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from bandpo.cli import compare, main
from bandpo.training.config import SETTINGS, TrainConfig


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"bandpo {argv[0]}: error:"), err
    return err


def test_every_count_of_train_has_a_finite_upper_limit():
    counts = [name for name, spec in SETTINGS.items() if spec.kind is int]
    assert {"num_generations", "eval_samples", "prompts_per_step", "max_steps", "seed"} <= set(counts)
    for name in counts:
        assert math.isfinite(SETTINGS[name].high), name
        default = getattr(TrainConfig(), name)
        assert default is None or SETTINGS[name].low <= default <= SETTINGS[name].high, name


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        (
            "--num-generations",
            "5000",
            "num_generations=5000 is more than bandpo allows; use an integer in [2, 1,024]",
        ),
        ("--eval-samples", "100000", "eval_samples=100000 is more than bandpo allows"),
        ("--eval-samples", "0", "eval_samples=0 is not valid; use an integer in [1, 1,024]"),
        ("--prompts-per-step", "100000000", "prompts_per_step=100000000 is more than bandpo allows"),
        ("--max-steps", "10000000000", "max_steps=10000000000 is more than bandpo allows"),
        ("--seed", str(2**64), "seed=18446744073709551616 is more than bandpo allows"),
    ],
)
def test_train_refuses_a_count_out_of_range_before_any_write(tmp_path, capsys, flag, value, message):
    run_dir = tmp_path / "run"
    err = _one_line_error(["train", flag, value, "--output-dir", str(run_dir)], capsys)
    assert message in err and not run_dir.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--samples", "0"], "--samples=0 is not valid; use an integer in [1, 1,024]"),
        (["--prompts", "0"], "--prompts=0 is not valid; use an integer in [1, 16,384]"),
        (
            ["--samples", "1000000000"],
            "--samples=1000000000 is more than bandpo allows; use an integer in [1, 1,024]",
        ),
        (["--prompts", "100000000"], "--prompts=100000000 is more than bandpo allows"),
    ],
)
def test_tokens_refuses_a_count_out_of_range_before_any_work(tmp_path, capsys, argv, message):
    output_dir = tmp_path / "tokens"
    err = _one_line_error(["tokens", *argv, "--output-dir", str(output_dir)], capsys)
    assert message in err and not output_dir.exists()


def test_compare_refuses_a_seed_beyond_the_seed_range_in_one_line_in_a_real_process(tmp_path):
    """Was an OverflowError traceback: the seeds are a range, checked before any is made."""
    command = [sys.executable, "-m", "bandpo", "compare", "--seeds", "99999999999999999999"]
    done = subprocess.run(
        [*command, "--output-dir", str(tmp_path / "c")], capture_output=True, text=True, timeout=300
    )
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1, err
    assert "--seeds: seed 99999999999999999998 is out of range; use an integer in [0, 4,294,967,295]" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--methods", "clip", "band", "--seeds", "0-100000"],
            "this comparison plans 200,002 runs (2 arm(s) x 100,001 seed(s)), more than 1,000; check --seeds, or "
            "pass --large-plan to run it anyway",
        ),
        (
            ["--task", "bandit", "--methods", "clip", "--scenario", "trap", "--seeds", "2000"],
            "this comparison plans 2,000 runs (1 scenario(s) x 1 method(s) x 2,000 seed(s))",
        ),
        (["--seeds", "0"], "--seeds: need at least 1 seed"),
        (["--seeds", "5-3"], "--seeds: need at least 1 seed"),
        (["--jobs", "0"], "--jobs=0 is not valid; use an integer in [1, 256]"),
        (["--steps", "0"], "--steps=0 is not valid; use an integer in [1, 1,000,000]"),
    ],
)
def test_compare_refuses_a_bad_count_or_a_large_plan_before_any_work(tmp_path, capsys, argv, message):
    output_dir = tmp_path / "c"
    err = _one_line_error(["compare", *argv, "--output-dir", str(output_dir)], capsys)
    assert message in err and not output_dir.exists()


def test_large_plan_asks_for_a_plan_beyond_the_limit():
    compare.check_plan(compare.PLAN_LIMIT, "at the limit", large_plan=False)
    with pytest.raises(ValueError, match="pass --large-plan"):
        compare.check_plan(compare.PLAN_LIMIT + 1, "one more", large_plan=False)
    compare.check_plan(compare.PLAN_LIMIT + 1, "one more", large_plan=True)
