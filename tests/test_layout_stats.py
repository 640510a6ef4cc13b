"""scripts/layout_stats.py: code lines, import edges, circles and floors, on small made-up sources."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "layout_stats.py"
spec = importlib.util.spec_from_file_location("layout_stats", SCRIPT)
layout_stats = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layout_stats)

SOURCE = '''"""A module docstring,
over two lines."""

import os  # a comment


# a comment line
def f(x):
    """A docstring."""
    text = """a string
    that is code"""
    return (x +
            1)
'''


def test_code_lines_leave_out_docstrings_comments_and_blank_lines():
    # import, def, text = (2 lines: a string that is not a docstring), return (2 lines)
    assert layout_stats.code_lines(SOURCE, ast.parse(SOURCE)) == 6


def test_imports_resolve_to_modules_relative_and_lazy_ones_included():
    modules = {"bandpo", "bandpo.training", "bandpo.training.config", "bandpo.metric_names", "bandpo.cli"}
    source = (
        "from bandpo import metric_names as mn\n"
        "from . import config\n"
        "from bandpo.training.config import TrainConfig\n"
        "def f():\n    import bandpo.cli\n"
        "import os\n"
    )
    found = layout_stats.imported_modules("bandpo.training", True, ast.parse(source), modules)
    assert found == {"bandpo.metric_names", "bandpo.training.config", "bandpo.cli"}


def test_circles_are_components_of_more_than_one_module_and_floors_order_the_layers():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    components = layout_stats.strongly_connected(graph)
    assert sorted(c for c in components if len(c) > 1) == [["a", "b", "c"]]
    assert sorted(m for c in components for m in c) == ["a", "b", "c", "d", "e"]
    floors = [
        layout_stats.floor_of(m) for m in ("bandpo.band.solver", "bandpo.integrations.trl", "bandpo.cli")
    ]
    assert floors == ["core", "adapters", "cli"]
    assert layout_stats.floor_of("bandpo.__main__") == "cli" and layout_stats.layer_of("bandpo.training") == (
        "application"
    )
