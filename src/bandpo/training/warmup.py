"""Supervised warm-up of the embedded policy (HF `Trainer`), cached on disk.

RL needs a policy that is right part of the time: a random model never earns a reward. The warm-up trains the
tiny model (`bandpo.training.model`) on examples of the embedded task with a biased prior (e.g. `countdown.sample_warmup_examples`:
about 1% of them use ``*``), and stops as soon as the sampled accuracy (pass@1 at temperature 1) on prompts
from the RL distribution reaches `target_accuracy`, or after `max_steps` (`WarmupConfig` declares both).

The result is saved (model, tokenizer, ``warmup.json`` with its statistics) under
``$BANDPO_CACHE/warmup/<key>`` (default ``~/.cache/bandpo``), where ``<key>`` hashes the warm-up settings and
the library versions, so later runs start from it in a second. The directory is written to a temporary name
and renamed into place, so a killed warm-up never leaves a half-written cache entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bandpo.declarations import declarations, declare
from bandpo.training._atomic import check_writable, make_temporary_dir, use_umask
from bandpo.training.processes import silence
from bandpo.training.tasks import DEFAULT_TASK, countdown, get_task, task_names

__all__ = [
    "WARMUP_DECLARATIONS",
    "WarmupConfig",
    "WarmupResult",
    "cache_root",
    "load_or_warm_up",
    "sampled_accuracy",
]

WARMUP_FORMAT = 1  # bump when the task, tokenizer, model or procedure changes what a cached model means


@dataclass(frozen=True, kw_only=True)
class WarmupConfig:
    """Settings of the supervised warm-up; all of them enter the cache key.

    Each is declared once (`bandpo.declarations.declare`): ``bandpo train``'s ``warmup_*`` settings take
    their defaults, help and ranges from these declarations.
    """

    seed: int = declare(0, "seed of the examples, the model's initialisation and the accuracy checks", low=0)
    task: str = declare(DEFAULT_TASK, "the embedded task", choices=task_names)
    hidden_size: int = declare(64, "hidden size of the tiny model", low=1)
    num_layers: int = declare(2, "layers of the tiny model", low=1)
    num_heads: int = declare(4, "attention heads of the tiny model", low=1)
    rare_fraction: float = declare(
        0.01, "share of warm-up problems needing the rare operator", low=0.0, high=1.0
    )
    num_examples: int = declare(40_000, "supervised examples", low=1)
    learning_rate: float = declare(3e-3, "learning rate", low=0.0, low_open=True)
    batch_size: int = declare(256, "examples per step", low=1)
    max_steps: int = declare(1500, "warm-up steps at most", low=1)
    check_every: int = declare(25, "steps between accuracy checks", low=1)
    target_accuracy: float = declare(
        0.35, "held-out accuracy the warm-up stops at", low=0.0, low_open=True, high=1.0
    )
    check_prompts: int = declare(512, "prompts of each accuracy check", low=1)

    def __post_init__(self) -> None:
        for name, spec in WARMUP_DECLARATIONS.items():
            spec.check("warmup", getattr(self, name))
        if get_task(self.task).needs_pretrained:
            raise ValueError(
                f"warmup task={self.task!r} has no warm-up: it needs a pretrained model (--model)"
            )

    def cache_key(self) -> str:
        import torch
        import transformers

        config = asdict(self)
        if self.task == countdown.TASK.name:  # the first task: its keys stay those from before tasks existed
            del config["task"]
        else:
            config["task_version"] = get_task(self.task).version
        payload = {
            "format": WARMUP_FORMAT,
            "config": config,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


WARMUP_DECLARATIONS = declarations(WarmupConfig)
"""{field: its declaration} of every `WarmupConfig` field."""


@dataclass(frozen=True)
class WarmupResult:
    """Where the warmed-up model is and how good it is."""

    path: Path
    steps: int
    accuracy: float
    seconds: float
    from_cache: bool


def cache_root() -> Path:
    """``$BANDPO_CACHE`` or ``~/.cache/bandpo``."""
    return Path(os.environ.get("BANDPO_CACHE") or Path.home() / ".cache" / "bandpo")


def sampled_accuracy(
    model: Any,
    tokenizer: Any,
    problems: list[Any],
    *,
    seed: int,
    task: str = WARMUP_DECLARATIONS["task"].default,
) -> float:
    """Fraction of `problems` of the embedded `task` solved by one sample each at temperature 1 (global RNG
    left untouched)."""
    import torch

    embedded = get_task(task)
    prompts = [p.prompt for p in problems]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        output = model.generate(
            **encoded,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=embedded.answer_length + 1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    model.train(was_training)
    completions = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    return sum(embedded.is_correct(c, p) for c, p in zip(completions, problems, strict=True)) / len(problems)


def _examples_dataset(config: WarmupConfig, tokenizer: Any) -> list[dict[str, list[int]]]:
    """Prompt + answer + EOS token ids per example, with the prompt masked out of the labels.

    The prompts and answers are tokenized in two batched calls (the same ids as one call per string, which
    took about 2 s of the warm-up for 40,000 examples).
    """
    examples = list(
        get_task(config.task).sample_warmup_examples(
            config.num_examples, seed=config.seed, rare_fraction=config.rare_fraction
        )
    )
    prompts = tokenizer([problem.prompt for problem, _ in examples])["input_ids"]
    answers = tokenizer([answer for _, answer in examples])["input_ids"]
    rows = []
    for prompt_ids, answer in zip(prompts, answers, strict=True):
        answer_ids = [*answer, tokenizer.eos_token_id]
        rows.append({"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids})
    return rows


def _collate(rows: list[dict[str, list[int]]]) -> dict[str, Any]:
    """Stack the rows, right-padding shorter ones (answers of different lengths): a causal model's labelled
    positions never attend to later (padding) tokens, and padding labels are -100, so no mask is needed."""
    import torch

    width = max(len(row["input_ids"]) for row in rows)
    pad = {"input_ids": 0, "labels": -100}
    return {
        key: torch.tensor([row[key] + [pad[key]] * (width - len(row[key])) for row in rows]) for key in pad
    }


def _warm_up(config: WarmupConfig, destination: Path, progress: Callable[[int, float], None] | None) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from bandpo.training.model import build_char_tokenizer, build_tiny_model, count_parameters

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(
        tokenizer,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        seed=config.seed,
    )
    check_problems = get_task(config.task).sample_check_problems(config.check_prompts, seed=config.seed)
    history: list[tuple[int, float]] = []

    class StopAtTarget(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.global_step % config.check_every == 0 or state.global_step >= config.max_steps:
                accuracy = sampled_accuracy(
                    model, tokenizer, check_problems, seed=config.seed + state.global_step, task=config.task
                )
                history.append((state.global_step, accuracy))
                if progress is not None:
                    progress(state.global_step, accuracy)
                if accuracy >= config.target_accuracy:
                    control.should_training_stop = True
            return control

    scratch = destination / "trainer"  # HF Trainer's output_dir (nothing is saved); inside the staging folder
    try:
        arguments = TrainingArguments(
            output_dir=str(scratch),
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            weight_decay=0.0,
            lr_scheduler_type="constant",
            max_steps=config.max_steps,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            seed=config.seed,
            data_seed=config.seed,
            use_cpu=True,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=_examples_dataset(config, tokenizer),
            data_collator=_collate,
            callbacks=[StopAtTarget()],
        )
        silence(trainer)
        trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model.eval()
    steps, accuracy = history[-1] if history else (0, 0.0)
    model.save_pretrained(destination, safe_serialization=True)
    tokenizer.save_pretrained(destination)
    return {
        "steps": steps,
        "accuracy": accuracy,
        "history": history,
        "parameters": count_parameters(model),
        "torch_threads": torch.get_num_threads(),
    }


def load_or_warm_up(
    config: WarmupConfig,
    *,
    cache_dir: Path | str | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> WarmupResult:
    """Return the cached warmed-up model for `config`, training it first when the cache has none.

    Args:
        config: the warm-up settings (they define the cache key).
        cache_dir: root of the cache (default `cache_root()`).
        progress: called as ``progress(step, sampled_accuracy)`` at each accuracy check.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    final = root / "warmup" / config.cache_key()
    cached = _read_cached(final)
    if cached is not None:
        return cached
    # the warm-up will be saved there: refuse a read-only cache now, not after training
    check_writable(root, "cache_dir", "--cache-dir (or BANDPO_CACHE); it holds no warm-up for these settings")
    final.parent.mkdir(parents=True, exist_ok=True)
    # one warm-up per key at a time: a second cold run waits here, then loads the first one's result
    with _locked(final.parent / f"{final.name}.lock"):
        cached = _read_cached(final)
        if cached is not None:
            return cached
        _remove_leftovers(final)
        staging = make_temporary_dir(final.parent, f".{final.name}-")
        try:
            start = time.perf_counter()
            info = _warm_up(config, staging, progress)
            info["seconds"] = time.perf_counter() - start
            info["config"] = asdict(config)
            (staging / "warmup.json").write_text(json.dumps(info, indent=2))
            use_umask(staging)  # safetensors writes its files 0600: a shared cache must be readable
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return WarmupResult(final, info["steps"], info["accuracy"], info["seconds"], from_cache=False)


def _read_cached(final: Path) -> WarmupResult | None:
    """The cache entry in `final`, or None when there is none (or only a torn one, which is redone)."""
    try:
        info = json.loads((final / "warmup.json").read_text())
        return WarmupResult(final, info["steps"], info["accuracy"], info["seconds"], from_cache=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on `path` for the block (released by the OS if the process dies)."""
    with path.open("a") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(final: Path) -> None:
    """Under the lock: staging folders of killed warm-ups of this key, and an entry without warmup.json."""
    for path in final.parent.glob(f".{final.name}-*"):
        shutil.rmtree(path, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
