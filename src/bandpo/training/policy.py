"""The policy a run starts from: a local HF checkpoint (``--model``, a folder or a short name such as
``smollm2-135m-instruct`` that `bandpo.training.pretrained` prepared in the cache), or the embedded tiny
model warmed up once and cached (`bandpo.training.warmup`). Under a launcher the warm-up runs once, on the main
process, in a child Python that sees no launcher variables (`warm_up_in_child`: the warm-up's HF Trainer would
otherwise wait for the other processes).

A local checkpoint is checked before anything is loaded, so a bad folder fails with one line naming the file
and the fix: the folder exists and holds ``config.json`` (valid JSON) and weights, and every
``*.safetensors`` file is as long as its header says (a truncated copy is the usual culprit); its
``model_type`` is an architecture transformers ships (code in the folder is never run: ``auto_map`` is refused,
``trust_remote_code=False`` everywhere), with a causal-LM head. After loading, every weight of the policy came
from the checkpoint (none missing, left over or newly initialised), the weights and one forward pass are finite,
and the tokenizer has an end-of-sequence token.

The policy trains float32 master weights whatever the checkpoint's dtype (a bf16 checkpoint is upcast), as the
HF Trainer's mixed precision and verl do: Adam's updates at RL learning rates (1e-6) are far below a bf16
weight's resolution (2^-8 of its size) and would round away. Compute runs in bf16 autocast where the device has
bf16 units (a GPU with bf16, a CPU with AMX or AVX512-BF16), elsewhere in float32 (`autocast_dtype` says why).
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bandpo.training.config import PolicySource
from bandpo.training.pretrained import PRETRAINED, repair_fix, resolve_model
from bandpo.training.processes import LAUNCHER_VARIABLES, progress_bar
from bandpo.training.run_dir import read_json
from bandpo.training.settings import AUTOCAST_MODES
from bandpo.training.warmup import WarmupConfig, load_or_warm_up

__all__ = [
    "MASTER_DTYPE",
    "LoadedPolicy",
    "autocast_dtype",
    "check_architecture",
    "check_checkpoint_folder",
    "check_loaded_policy",
    "checkpoint_dtype",
    "load_policy",
    "warm_up_in_child",
]

MASTER_DTYPE = "float32"  # the dtype of the weights a run trains and saves, whatever the checkpoint's

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
    config = read_json(path / "config.json", fix=f"re-copy or re-save the checkpoint ({SAVE_FIX})")
    check_architecture(path, config)
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ValueError(f"{where} has no weights (none of {', '.join(WEIGHT_FILES)}); {SAVE_FIX}")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"{where} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save the tokenizer beside the "
            "model (tokenizer.save_pretrained(folder)) or copy its files there"
        )
    for weights in sorted(path.glob("*.safetensors")):
        _check_safetensors(weights)


def check_architecture(path: Path, config: Any) -> None:
    """One-line ValueError unless config.json names an architecture transformers ships with a causal-LM head.

    A checkpoint whose ``model_type`` transformers does not know can only load with its own Python code
    (``auto_map``), which bandpo never runs: transformers would ask "Do you wish to run the custom code?" in a
    terminal and import the folder's .py files on "y". A known ``model_type`` with an ``auto_map`` loads
    transformers' own class (``trust_remote_code=False`` ignores the map). ``architectures`` naming no causal LM
    (a ``BertModel``, a classifier) is refused too: loading it as a causal LM would add a random head.
    """
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    where = f"model={str(path)!r}"
    if not isinstance(config, dict):
        raise ValueError(f"{where}: config.json holds no JSON object; {SAVE_FIX}")
    model_type = config.get("model_type")
    auto_map = config.get("auto_map")
    if model_type not in CONFIG_MAPPING_NAMES:
        if auto_map:
            code = (
                sorted({str(v) for v in auto_map.values()}) if isinstance(auto_map, dict) else [str(auto_map)]
            )
            raise ValueError(
                f"{where} needs its own Python code to load (config.json's model_type {model_type!r} is unknown to "
                f"transformers {transformers.__version__} and its auto_map points at {', '.join(code)[:120]}); "
                "bandpo never runs code from a model folder: use a checkpoint of an architecture transformers "
                "ships (llama, qwen2, ...) or one converted to it"
            )
        raise ValueError(
            f"{where}: config.json's model_type {model_type!r} is not an architecture transformers "
            f"{transformers.__version__} ships; use a checkpoint of one it ships (llama, qwen2, ...) or a newer "
            "transformers"
        )
    causal = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if causal is None:
        raise ValueError(
            f"{where} is a {model_type} checkpoint, and transformers has no causal language model of that "
            "architecture; bandpo trains causal LMs: pass a checkpoint saved from AutoModelForCausalLM"
        )
    architectures = config.get("architectures") or []
    architectures = [architectures] if isinstance(architectures, str) else [str(a) for a in architectures]
    if architectures and not set(architectures) & set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()):
        raise ValueError(
            f"{where} holds a {architectures[0]}, not a causal language model (config.json's architectures); "
            f"loading it as one would add a randomly initialised head: pass a checkpoint saved from "
            f"AutoModelForCausalLM (for {model_type}: {causal})"
        )


# safetensors' dtype names of floating-point tensors, as torch names them
_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


def checkpoint_dtype(path: Path) -> str | None:
    """The dtype the checkpoint stores its floating-point weights in (``"bfloat16"``, ``"float32"``, or
    ``"bfloat16+float32"`` when mixed), read from the safetensors headers; for ``.bin`` weights, what
    config.json says (None when it says nothing)."""
    found: set[str] = set()
    for weights in sorted(path.glob("*.safetensors")):
        for entry in _safetensors_header(weights).values():
            if isinstance(entry, dict) and entry.get("dtype") in _SAFETENSORS_DTYPES:
                found.add(_SAFETENSORS_DTYPES[entry["dtype"]])
    if found:
        return "+".join(sorted(found))
    config = read_json(path / "config.json", fix=SAVE_FIX)
    declared = config.get("dtype") or config.get("torch_dtype")
    return str(declared) if declared else None


def autocast_dtype(mode: str = "auto") -> str | None:
    """The dtype a run computes in under autocast ("bfloat16"), or None for plain float32.

    `mode` is the ``autocast`` setting: "off" is float32, "bf16" is bf16 autocast on any device (a GPU without
    bf16 is refused; a CPU without bf16 units emulates it, several times slower), "auto" (the default) is bf16
    autocast where the device has bf16 arithmetic: a GPU with bf16, or a CPU with AMX or AVX512-BF16 units
    (as verl and the HF Trainer's ``bf16=True``; the master weights stay float32). Elsewhere float32: TRL 1.16
    turns bf16 autocast on by default also on CPU, where a CPU without bf16 units emulates the matmuls (one
    forward and backward pass of SmolLM2-135M cost 177-232 s of CPU under bf16 autocast against 10-12 s in
    float32 on an AMD EPYC without AVX512: benchmarks/cpu_autocast.py, docs/models.md), and a GPU without bf16
    would need fp16's loss scaling.
    """
    import torch

    if mode == "off":
        return None
    if mode == "bf16":
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            raise ValueError("autocast='bf16': this GPU has no bf16 arithmetic; use autocast 'off' or 'auto'")
        return "bfloat16"
    if mode != "auto":
        raise ValueError(f"autocast={mode!r} is not valid; use one of {list(AUTOCAST_MODES)}")
    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else None
    return "bfloat16" if _cpu_has_bf16() else None


@functools.cache
def _cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 units (``amx_bf16`` or ``avx512_bf16`` among /proc/cpuinfo's flags; False
    where that file is not there)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))


def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as stream:
        (header_length,) = struct.unpack("<Q", stream.read(8))
        return json.loads(stream.read(header_length))


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


@dataclass(frozen=True)
class LoadedPolicy:
    """A run's policy: model (float32 master weights) and tokenizer (pads on the left), where they came from.

    Attributes:
        warmup: warm-up statistics of the embedded model (None with a checkpoint).
        checkpoint_dtype: the dtype the checkpoint stored its weights in (None when it does not say).
    """

    model: Any
    tokenizer: Any
    path: Path
    warmup: dict[str, Any] | None
    checkpoint_dtype: str | None

    def dtypes(self, autocast: str = "auto") -> dict[str, str | None]:
        """What config.json's ``resolved`` block records: the dtypes trained, stored and computed in (under the
        ``autocast`` setting `autocast`)."""
        return {
            "weights_dtype": str(self.model.dtype).removeprefix("torch."),
            "checkpoint_dtype": self.checkpoint_dtype,
            "autocast_dtype": autocast_dtype(autocast),
        }


def load_policy(source: PolicySource, progress: bool) -> LoadedPolicy:
    """The policy of ``source.model`` or of the cached warm-up of the embedded model, checked (module docstring).

    Weights are loaded in float32 (`MASTER_DTYPE`) whatever the checkpoint's dtype, with
    ``trust_remote_code=False``. The tokenizer pads on the left (generation) with EOS when it has no pad token.
    """
    import torch

    warmup_info = None
    if source.warmup is not None:
        path, warmup_info = _warmed_up_model(source.warmup, source.cache_dir, progress)
    else:
        # a short name (smollm2-135m-instruct) is its prepared checkpoint in the cache; a folder is itself
        path = resolve_model(source.model, source.cache_dir)
        check_checkpoint_folder(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        model, loading = AutoModelForCausalLM.from_pretrained(
            path,
            local_files_only=True,
            trust_remote_code=False,
            dtype=getattr(torch, MASTER_DTYPE),
            output_loading_info=True,
        )
    except Exception as error:  # transformers raises many kinds; say which and where in one line
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise ValueError(
            f"model={str(path)!r} is not a loadable local HF checkpoint ({type(error).__name__}: {first_line}); "
            f"{SAVE_FIX}"
        ) from None
    if source.warmup is None:
        check_loading_info(loading, path)
        check_loaded_policy(model, tokenizer, path, repair=_repair_advice(source.model))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return LoadedPolicy(
        model=model,
        tokenizer=tokenizer,
        path=path,
        warmup=warmup_info,
        checkpoint_dtype=checkpoint_dtype(path),
    )


def check_loading_info(loading: dict[str, Any], path: Path) -> None:
    """One-line ValueError when transformers' loading info (``output_loading_info=True``) lists a weight the
    checkpoint lacks (transformers fills it with random values), one of another shape, or one the model has no
    place for (the config does not describe these weights)."""
    problems = [
        ("missing from the checkpoint (transformers would initialise them at random)", "missing_keys"),
        ("of another shape than the config says", "mismatched_keys"),
        ("in the checkpoint but not in the model its config.json describes", "unexpected_keys"),
    ]
    for what, key in problems:
        names = sorted(str(name) for name in loading.get(key) or ())
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise ValueError(
                f"model={str(path)!r}: {len(names)} weight(s) {what}: {shown}; the checkpoint is incomplete "
                f"or its config.json is not the one it was saved with: {SAVE_FIX}"
            )
    errors = loading.get("error_msgs") or []
    if errors:
        raise ValueError(
            f"model={str(path)!r}: loading its weights failed ({str(errors[0])[:200]}); {SAVE_FIX}"
        )


def _repair_advice(model: str | None) -> str:
    """How to get good weights back: convert a short name again; re-copy or re-save a folder."""
    if model in PRETRAINED:
        return repair_fix(model)
    return "re-copy or re-save the checkpoint, or start from an earlier one"


def check_loaded_policy(model: Any, tokenizer: Any, path: Path, *, repair: str | None = None) -> None:
    """One-line ValueError unless the loaded model and tokenizer can generate: a real vocabulary that fits the
    model's embedding, an end-of-sequence token, finite weights (one pass over the parameters), and finite
    logits of one short forward pass (finite weights can still overflow), all before the run writes anything.

    `repair` is the advice for non-finite weights or logits (default: re-copy or re-save the checkpoint).
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
    if tokenizer.eos_token_id is None:
        also = "" if tokenizer.pad_token_id is not None else " (nor a padding token)"
        raise ValueError(
            f"{where}: its tokenizer has no end-of-sequence token{also}, so a completion could never end; set "
            '"eos_token" in its tokenizer_config.json to the token the model ends its answers with'
        )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not bool(torch.isfinite(parameter).all()):
                raise ValueError(
                    f"{where}: the weights hold NaN or inf (first in {name}); "
                    f"{repair or _repair_advice(None)}"
                )
        probe = torch.arange(min(8, size), device=model.device).unsqueeze(0)  # (1, 8): any valid token ids
        was_training = model.training
        model.eval()
        try:
            logits = model(input_ids=probe).logits
        finally:
            model.train(was_training)
        if not bool(torch.isfinite(logits).all()):
            raise ValueError(
                f"{where}: its weights are finite but its logits are not (inf or NaN on an 8-token input: a "
                "weight too large for float32, such as a norm weight near 3e38, overflows); "
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
        "from bandpo.training._lifetime import die_with_parent\n"
        "die_with_parent()\n"  # a killed launcher process takes its warm-up with it
        "from bandpo.training.processes import offline_environment, quiet_and_threads\n"
        "from bandpo.training.policy import load_policy\n"
        "source, progress = pickle.loads(sys.stdin.buffer.read())\n"
        "try:\n"
        "    with offline_environment(), quiet_and_threads(source.num_threads):\n"
        "        info = load_policy(source, progress).warmup\n"
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
