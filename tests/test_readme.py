"""The README's Python snippets run exactly as printed (a fresh process in an empty folder, its own cache)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

pytestmark = [pytest.mark.slow, pytest.mark.integration]

README = Path(__file__).resolve().parents[1] / "README.md"


def snippet(marker: str) -> str:
    """The fenced python block right after `<!-- marker: ... -->` in the README."""
    match = re.search(rf"<!-- {marker}:[^>]*-->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match is not None, f"README.md has no python block after <!-- {marker}: ... -->"
    return match.group(1)


def run_snippet(code: str, cwd: Path) -> str:
    env = {**os.environ, "BANDPO_CACHE": str(cwd / "cache")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_python_api_snippet_trains_and_prints_the_held_out_pass_at_k(tmp_path):
    out = run_snippet(snippet("python-api"), tmp_path)
    pass_at_k, run_dir = out.split()
    assert 0.0 <= float(pass_at_k) <= 1.0
    assert Path(run_dir) == Path("runs/python-api")
    assert (tmp_path / run_dir / "eval_after.json").is_file()


def test_python_compare_snippet_writes_a_report_of_both_arms(tmp_path):
    out = run_snippet(snippet("python-compare"), tmp_path)
    report = tmp_path / out.strip()
    assert report.name == "report.md"
    text = report.read_text()
    assert "band_upper" in text and "clip" in text
    assert (report.parent / "per_seed.json").is_file()
