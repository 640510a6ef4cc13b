"""The package surface: lazy exports, no framework imported by `import bandpo`, and the CLI entry point."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import bandpo
from bandpo import _version, cli


def test_every_public_name_resolves_to_the_object_of_its_module():
    assert set(bandpo.__all__) - {"__version__"} == set(bandpo._EXPORTS)
    for name, module in bandpo._EXPORTS.items():
        assert getattr(bandpo, name) is getattr(sys.modules[module], name)


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = bandpo.nope


def test_import_bandpo_pulls_in_no_framework():
    code = (
        "import sys, bandpo; bandpo.policy_loss; bandpo.band_bounds; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'trl', 'transformers', 'verl', 'skyrl', 'ray'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_without_a_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "bounds" in capsys.readouterr().out


def test_every_registered_subcommand_has_help(capsys):
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: bandpo" in capsys.readouterr().out


def test_python_dash_m_runs_the_same_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "bandpo", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"bandpo {bandpo.__version__}"


def _repo_file(name: str) -> Path:
    return Path(__file__).resolve().parents[1] / name


def test_one_version_string_read_by_the_build_the_citation_and_the_changelog():
    pyproject = tomllib.loads(_repo_file("pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bandpo._version.__version__"}
    assert bandpo.__version__ is _version.__version__
    citation = _repo_file("CITATION.cff").read_text()
    assert f"\nversion: {bandpo.__version__}\n" in citation
    assert f"## [{bandpo.__version__}]" in _repo_file("CHANGELOG.md").read_text()


def test_version_module_imports_nothing():
    # The build and `bandpo --version` read it: an import there could pull in torch.
    tree = ast.parse(Path(_version.__file__).read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]


def test_license_file_matches_the_metadata_and_torch_is_not_capped():
    project = tomllib.loads(_repo_file("pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert (
        "Apache License\n                           Version 2.0, January 2004"
        in _repo_file("LICENSE").read_text()
    )
    (torch_requirement,) = [dep for dep in project["dependencies"] if dep.startswith("torch")]
    assert "<" not in torch_requirement and "==" not in torch_requirement
