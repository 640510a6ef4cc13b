"""`bandpo doctor`: versions against bandpo's declared ranges, the verl plugin, the SkyRL loss, CUDA, the cache.

The tests marked `verl` need verl installed and run in `.venv-verl`, those marked `skyrl` need SkyRL and run in
`.venv-skyrl` (`scripts/test.sh`); the others run in any environment.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys

import pytest
from packaging.specifiers import SpecifierSet

from bandpo import cli
from bandpo.cli import doctor


def _by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {check.name: check for check in checks}


def test_healthy_environment_exits_zero(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BANDPO_CACHE", str(tmp_path))
    assert cli.main(["doctor", "--no-verl"]) == 0
    out = capsys.readouterr().out
    assert "ok    torch" in out and "bandpo doctor: no problems found" in out
    assert "FAIL" not in out


def test_ranges_come_from_bandpo_metadata():
    ranges = doctor._declared_ranges()
    assert set(ranges) == set(doctor.PACKAGES)
    assert ranges["torch"][1] is None and ranges["trl"][1] == "train" and ranges["verl"][1] == "verl"
    assert ranges["skyrl"][1] == "skyrl"
    assert SpecifierSet(ranges["torch"][0]).contains(importlib.metadata.version("torch"), prereleases=True)


def test_version_outside_the_range_fails_with_the_fix(capsys, tmp_path, monkeypatch):
    real = doctor._installed_version
    monkeypatch.setattr(doctor, "_installed_version", lambda name: "2.0.0" if name == "torch" else real(name))
    monkeypatch.setenv("BANDPO_CACHE", str(tmp_path))
    assert cli.main(["doctor", "--no-verl"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  torch" in out and "2.0.0 is outside the tested range" in out
    assert "fix   torch" in out and "pip install 'torch" in out
    assert "1 problem(s) found" in out


def test_missing_optional_package_is_a_note_missing_torch_a_failure(monkeypatch):
    monkeypatch.setattr(
        doctor, "_installed_version", lambda name: None if name in ("trl", "torch") else "0.9.1"
    )
    checks = _by_name(doctor.check_versions())
    assert checks["trl"].status == doctor.NOTE and "bandpo[train]" not in checks["trl"].fix
    assert checks["torch"].status == doctor.FAIL and checks["torch"].fix.startswith("pip install 'torch")


def test_cuda_check_reports_the_build():
    check = doctor.check_cuda()
    assert check.status in (doctor.OK, doctor.NOTE)
    assert "device" in check.detail


def test_warmup_cache_entries_and_broken_ones(tmp_path):
    warmup = tmp_path / "warmup"
    (warmup / "abc").mkdir(parents=True)
    (warmup / "abc" / "warmup.json").write_text(json.dumps({"accuracy": 0.4, "steps": 120, "seconds": 3.0}))
    (warmup / "abc.lock").write_text("")  # the warm-up's flock file: part of a healthy cache
    assert [check.status for check in doctor.check_warmup_cache(tmp_path)] == [doctor.OK]
    assert _by_name(doctor.check_warmup_cache(tmp_path))["warm-up cache"].status == doctor.OK

    (warmup / "broken").mkdir()  # a directory without warmup.json
    (warmup / ".abc-tmp").mkdir()  # leftover of an interrupted warm-up
    checks = doctor.check_warmup_cache(tmp_path)
    statuses = sorted(check.status for check in checks)
    assert statuses == [doctor.FAIL, doctor.NOTE, doctor.OK]
    failure = next(check for check in checks if check.status == doctor.FAIL)
    assert "broken" in failure.detail and failure.fix.startswith("delete ")


def test_empty_cache_is_a_note(tmp_path):
    (check,) = doctor.check_warmup_cache(tmp_path / "not-yet")
    assert check.status == doctor.NOTE and "empty" in check.detail


def test_without_verl_the_plugin_check_is_a_note(monkeypatch):
    real = doctor._installed_version
    monkeypatch.setattr(doctor, "_installed_version", lambda name: None if name == "verl" else real(name))
    assert doctor.check_verl_plugin().status == doctor.NOTE


def test_without_skyrl_the_loss_check_is_a_note(monkeypatch):
    real = doctor._installed_version
    monkeypatch.setattr(doctor, "_installed_version", lambda name: None if name == "skyrl" else real(name))
    assert doctor.check_skyrl_loss().status == doctor.NOTE


def test_a_skyrl_integration_that_does_not_import_is_a_failure_with_the_fix(monkeypatch):
    real = doctor._installed_version
    monkeypatch.setattr(doctor, "_installed_version", lambda name: "0.3.0" if name == "skyrl" else real(name))
    monkeypatch.setitem(sys.modules, "bandpo.integrations.skyrl", None)  # the import now fails
    check = doctor.check_skyrl_loss()
    assert check.status == doctor.FAIL and "bandpo.integrations.skyrl does not import" in check.detail
    assert "docs/skyrl.md" in check.fix


# --- with SkyRL installed -------------------------------------------------------------------------------------


@pytest.mark.skyrl
def test_skyrl_loss_registers(monkeypatch):
    check = doctor.check_skyrl_loss()
    assert check.status == doctor.OK, check
    assert "trainer.override_entrypoint=bandpo.integrations.skyrl" in check.detail


@pytest.mark.skyrl
def test_skyrl_doctor_run_reports_the_loss(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BANDPO_CACHE", str(tmp_path))
    cli.main(["doctor", "--no-verl"])
    out = capsys.readouterr().out
    assert "ok    skyrl loss" in out and "policy_loss_type=bandpo registers" in out


# --- with verl installed ---------------------------------------------------------------------------------------


@pytest.mark.verl
def test_verl_plugin_registered():
    check = doctor.check_verl_plugin()
    assert check.status == doctor.OK, check


@pytest.mark.verl
def test_broken_plugin_is_found_and_its_error_shown(monkeypatch, capsys, tmp_path):
    """verl swallows a plugin's ImportError (DEBUG log); doctor must surface it and exit 1."""
    from verl.trainer.ppo import core_algos

    monkeypatch.delitem(core_algos.POLICY_LOSS_REGISTRY, "bandpo")
    monkeypatch.setitem(sys.modules, "bandpo.integrations.verl", None)  # the import now fails
    check = doctor.check_verl_plugin()
    assert check.status == doctor.FAIL
    assert "fails to load" in check.detail and "bandpo.integrations.verl" in check.detail
    assert "python -c 'import bandpo.integrations.verl'" in check.fix

    monkeypatch.setenv("BANDPO_CACHE", str(tmp_path))
    assert cli.main(["doctor"]) == 1
    assert "fix   verl plugin" in capsys.readouterr().out


@pytest.mark.verl
def test_plugins_switched_off_is_named(monkeypatch):
    from verl.trainer.ppo import core_algos

    monkeypatch.delitem(core_algos.POLICY_LOSS_REGISTRY, "bandpo")
    monkeypatch.setenv("VERL_USE_EXTERNAL_PLUGINS", "none")
    monkeypatch.delenv("VERL_USE_EXTERNAL_MODULES", raising=False)
    check = doctor.check_verl_plugin()
    assert check.status == doctor.FAIL and "VERL_USE_EXTERNAL_PLUGINS=none" in check.detail
    assert "VERL_USE_EXTERNAL_MODULES=bandpo.integrations.verl" in check.fix


@pytest.mark.verl
def test_another_loss_under_the_name_is_named(monkeypatch):
    from verl.trainer.ppo import core_algos

    def foreign_loss(*args, **kwargs):  # pragma: no cover - never called
        raise AssertionError

    monkeypatch.setitem(core_algos.POLICY_LOSS_REGISTRY, "bandpo", foreign_loss)
    check = doctor.check_verl_plugin()
    assert check.status == doctor.FAIL and "foreign_loss" in check.detail
