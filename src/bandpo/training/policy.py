"""The policy a run starts from: a local HF checkpoint (``--model``, a folder or a short name such as
``smollm2-135m-instruct`` that `bandpo.training.pretrained` prepared in the cache), or the embedded tiny
model warmed up once and cached (`bandpo.training.warmup`). Under a launcher the warm-up runs once, on the main
process, in a child Python that sees no launcher variables (`warm_up_in_child`: the warm-up's HF Trainer would
otherwise wait for the other processes).

A local checkpoint is checked before anything is loaded, so a bad folder fails with one line naming the file
and the fix: the folder exists and holds ``config.json`` (valid JSON) and weights, and every
``*.safetensors`` file is as long as its header says (a truncated copy is the usual culprit).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from bandpo.training.config import PolicySource
from bandpo.training.pretrained import PRETRAINED, repair_fix, resolve_model
from bandpo.training.processes import LAUNCHER_VARIABLES, progress_bar
from bandpo.training.run_dir import read_json
from bandpo.training.warmup import WarmupConfig, load_or_warm_up

__all__ = ["check_checkpoint_folder", "check_loaded_policy", "load_policy", "warm_up_in_child"]

WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# a tokenizer's vocabulary lives in one of these (fast, SentencePiece, BPE or WordPiece tokenizers)
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
)
SAVE_FIX = "pass a folder written by save_pretrained (config.json, weights and tokenizer files)"


def check_checkpoint_folder(path: Path) -> None:
    """One-line ValueError unless `path` looks like a complete local HF checkpoint (nothing is loaded)."""
    where = f"model={str(path)!r}"
    if not path.exists():
        raise ValueError(f"{where} does not exist; {SAVE_FIX}")
    if not path.is_dir():
        raise ValueError(f"{where} is a file, not a checkpoint folder; {SAVE_FIX}")
    if not any(path.iterdir()):
        raise ValueError(f"{where} is an empty folder; {SAVE_FIX}")
    if not (path / "config.json").is_file():
        raise ValueError(f"{where} has no config.json; {SAVE_FIX}")
    read_json(path / "config.json", fix=f"re-copy or re-save the checkpoint ({SAVE_FIX})")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ValueError(f"{where} has no weights (none of {', '.join(WEIGHT_FILES)}); {SAVE_FIX}")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"{where} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save the tokenizer beside the "
            "model (tokenizer.save_pretrained(folder)) or copy its files there"
        )
    for weights in sorted(path.glob("*.safetensors")):
        _check_safetensors(weights)


def _check_safetensors(path: Path) -> None:
    """The file holds its 8-byte header length, the JSON header, and every tensor the header lists."""
    fix = "re-copy or re-save the checkpoint"
    size = path.stat().st_size
    with path.open("rb") as stream:
        head = stream.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is truncated ({size} bytes, not a safetensors file); {fix}")
        (header_length,) = struct.unpack("<Q", head)
        if 8 + header_length > size:
            raise ValueError(f"{path} is truncated ({size} bytes, its header alone needs more); {fix}")
        try:
            header = json.loads(stream.read(header_length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{path} has a corrupt header (not JSON); {fix}") from None
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    expected = 8 + header_length + max(ends, default=0)
    if size < expected:
        raise ValueError(f"{path} is truncated ({size} of {expected} bytes); {fix}")


def load_policy(source: PolicySource, progress: bool) -> tuple[Any, Any, dict[str, Any] | None]:
    """(model, tokenizer, warm-up info) from ``source.model`` or from the cached warm-up of the embedded model.

    The tokenizer pads on the left (generation) with EOS when it has no pad token.
    """
    warmup_info = None
    if source.warmup is not None:
        path, warmup_info = _warmed_up_model(source.warmup, source.cache_dir, progress)
    else:
        # a short name (smollm2-135m-instruct) is its prepared checkpoint in the cache; a folder is itself
        path = resolve_model(source.model, source.cache_dir)
        check_checkpoint_folder(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except Exception as error:  # transformers raises many kinds; say which and where in one line
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise ValueError(
            f"model={str(path)!r} is not a loadable local HF checkpoint ({type(error).__name__}: {first_line}); "
            f"{SAVE_FIX}"
        ) from None
    if source.warmup is None:
        check_loaded_policy(model, tokenizer, path, repair=_repair_advice(source.model))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer, warmup_info


def _repair_advice(model: str | None) -> str:
    """How to get good weights back: convert a short name again; re-copy or re-save a folder."""
    if model in PRETRAINED:
        return repair_fix(model)
    return "re-copy or re-save the checkpoint, or start from an earlier one"


def check_loaded_policy(model: Any, tokenizer: Any, path: Path, *, repair: str | None = None) -> None:
    """One-line ValueError unless the loaded model and tokenizer can generate: a real vocabulary that fits the
    model's embedding, and finite weights (one pass over the parameters, before the run writes anything).

    `repair` is the advice for non-finite weights (default: re-copy or re-save the checkpoint).
    """
    import torch

    where = f"model={str(path)!r}"
    size = len(tokenizer)
    rows = model.get_input_embeddings().num_embeddings
    if size < 2:
        raise ValueError(
            f"{where}: its tokenizer has a vocabulary of {size} (its files are missing or empty); {SAVE_FIX}"
        )
    if size > rows:
        raise ValueError(
            f"{where}: its tokenizer has {size} tokens, more than the model's {rows} embedding rows; save the "
            "tokenizer the model was trained with beside it"
        )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not bool(torch.isfinite(parameter).all()):
                raise ValueError(
                    f"{where}: the weights hold NaN or inf (first in {name}); "
                    f"{repair or _repair_advice(None)}"
                )


def _warmed_up_model(
    warmup: WarmupConfig, cache_dir: str | None, progress: bool
) -> tuple[Path, dict[str, Any]]:
    bars: list[Any] = []  # created on the first report, so a cached warm-up shows no bar

    def report(step: int, accuracy: float) -> None:
        if progress and not bars:
            bars.append(progress_bar(True, total=warmup.max_steps, desc="warm-up", unit="step"))
        if bars:
            bars[0].update(step - bars[0].n)
            bars[0].set_postfix(pass_at_1=f"{accuracy:.3f}")

    try:
        result = load_or_warm_up(warmup, cache_dir=cache_dir, progress=report)
    finally:
        for bar in bars:
            bar.close()
    info = {
        "path": str(result.path),
        "steps": result.steps,
        "sampled_accuracy": result.accuracy,
        "seconds": result.seconds,
        "from_cache": result.from_cache,
    }
    return result.path, info


def warm_up_in_child(source: PolicySource, progress: bool) -> dict[str, Any] | None:
    """Warm up (or find cached) the embedded model of `source` in a one-process child Python; its warm-up info.

    The child runs `bandpo.training.policy.load_policy` without the launcher's variables, so the warm-up's
    HF Trainer trains alone; its progress bar goes to this process's stderr. The child's error (a ValueError
    naming the cache folder, say) is raised here again.
    """
    env = {name: value for name, value in os.environ.items() if name not in LAUNCHER_VARIABLES}
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding the bandpo package
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    code = (
        "import pickle, sys\n"
        "from bandpo._lifetime import die_with_parent\n"
        "die_with_parent()\n"  # a killed launcher process takes its warm-up with it
        "from bandpo.training.processes import offline_environment, quiet_and_threads\n"
        "from bandpo.training.policy import load_policy\n"
        "source, progress = pickle.loads(sys.stdin.buffer.read())\n"
        "try:\n"
        "    with offline_environment(), quiet_and_threads(source.num_threads):\n"
        "        info = load_policy(source, progress)[2]\n"
        "except Exception as error:\n"
        "    sys.stdout.buffer.write(pickle.dumps(error))\n"
        "    sys.exit(1)\n"
        "sys.stdout.buffer.write(pickle.dumps(info))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps((source, progress)), stdout=subprocess.PIPE, env=env
    )
    try:
        result = pickle.loads(done.stdout)
    except Exception:  # killed, or an error that does not unpickle: its traceback is on stderr above
        result = None
    if done.returncode == 0:
        return result
    if isinstance(result, Exception):
        raise result
    raise RuntimeError(
        f"the warm-up of the embedded model failed in its child process (exit status {done.returncode}; "
        "its error is printed above)"
    )
