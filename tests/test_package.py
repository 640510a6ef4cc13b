"""The package surface: lazy exports, no framework imported by `import bandpo`, and the CLI entry point."""

import subprocess
import sys

import pytest

import bandpo
from bandpo import cli


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
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'trl', 'transformers', 'verl', 'ray'}))"
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
