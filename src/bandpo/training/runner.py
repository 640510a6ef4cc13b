"""`train(config)`: one run, from a `TrainConfig` to a run directory, through TRL (`BandPOTrainer`).

Steps: resolve the run directory → model and tokenizer (the embedded tiny model is warmed up once and
cached, see `bandpo.training.warmup`) → prompts (held-out evaluation prompts never in training) → evaluation
before training → `BandPOTrainer.train()` → final model → evaluation after → plots → ``summary.json``.

Run directory (``TrainSummary.paths``)::

    config.json          the resolved TrainConfig
    metrics.jsonl        one record per RL step: catalogued keys (bandpo.metric_names), TRL's others as trl/*
    tensorboard/         the same scalars as TensorBoard events
    checkpoints/         checkpoint-<optimiser step>/: safetensors weights, optimiser, RNG and trainer state
    model/               the final policy (save_pretrained, safetensors) and tokenizer
    eval_before.json     held-out evaluation before training (metrics and per-prompt samples)
    eval_after.json      ... after training
    plots/               reward.png, entropy.png, clip_fractions.png
    summary.json         before/after metrics, final training metrics, wall time, paths

Checkpoints are written to a staging directory and renamed into place (``os.replace``), so a killed run never
leaves a torn checkpoint; they fall on RL-step boundaries. ``resume=True`` continues from the last one: TRL /
the HF Trainer restore weights, optimiser, scheduler and the Python/NumPy/torch RNG (which drives sampling),
the data order is a fixed schedule replayed from its start (`data.schedule_rows` + TRL's seeded sampler,
fast-forwarded by the Trainer), ``metrics.jsonl`` is cut back to the checkpoint, and the evaluation before
training is read back from ``eval_before.json``. On CPU the resumed run then ends with the same metrics as
an uninterrupted one (tested by killing a run with SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo._atomic import write_text_atomic
from bandpo.training import data as data_module
from bandpo.training import task
from bandpo.training.config import RUN_INDEPENDENT_FIELDS, TrainConfig
from bandpo.training.evaluate import EvalPrompt, EvalResult, evaluate
from bandpo.training.rewards import GuardedReward, get_verifier

__all__ = ["TrainSummary", "find_last_checkpoint", "offline_environment", "train"]

# TRL's metric names -> catalogued keys; every other TRL key is kept as "trl/<name>"
TRL_TO_CATALOGUE: dict[str, str] = {
    "reward": mn.TRAIN_REWARD,
    "reward_std": mn.TRAIN_REWARD_STD,
    "entropy": mn.TRAIN_ENTROPY,
    "completions/mean_length": mn.TRAIN_COMPLETION_LENGTH,
    "learning_rate": mn.TRAIN_LEARNING_RATE,
    "grad_norm": mn.TRAIN_GRAD_NORM,
    "loss": mn.LOSS_TOTAL,
    "kl": mn.LOSS_KL,
    "policy_loss": mn.LOSS_POLICY,
}
CATALOGUED: frozenset[str] = (
    frozenset(
        value
        for name, value in vars(mn).items()
        if name.isupper() and isinstance(value, str) and "/" in value
    )
    | frozenset(mn.CLIP_FRAC_UP_BINS)
    | frozenset(mn.CLIP_FRAC_DOWN_BINS)
    | frozenset(mn.CLIP_TOKENS_BINS)
)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class TrainSummary:
    """What a run produced. `before` / `after` hold per-prompt samples and correctness (see `EvalResult`).

    Attributes:
        run_dir: the run directory.
        config: the resolved config.
        before, after: held-out evaluation before and after training (None when there are no eval prompts).
        final_metrics: the last training record of metrics.jsonl (catalogued keys).
        clip_by_bin: upward/downward clip fraction per p_old bin, averaged over those of the last 10% of RL
            steps that had tokens in the bin (None when none had: no such token is not "never clipped").
        steps: RL steps completed.
        wall_time_s: seconds of this call (a resumed run counts only its own part).
        warmup: warm-up statistics of the embedded model (None with --model).
        paths: config, metrics, tensorboard, checkpoints, model, plots, eval_before, eval_after, summary.
    """

    run_dir: Path
    config: TrainConfig
    before: EvalResult | None
    after: EvalResult | None
    final_metrics: dict[str, float]
    clip_by_bin: dict[str, float | None]
    steps: int
    wall_time_s: float
    warmup: dict[str, Any] | None = None
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self, *, per_prompt: bool = False) -> dict[str, Any]:
        """JSON-ready dict; per-prompt evaluation results only when `per_prompt`."""

        def evaluation(result: EvalResult | None) -> dict[str, Any] | None:
            if result is None:
                return None
            return result.to_dict() if per_prompt else {"metrics": result.metrics, "k": result.k}

        return {
            "run_dir": str(self.run_dir),
            "config": self.config.to_dict(),
            "before": evaluation(self.before),
            "after": evaluation(self.after),
            "final_metrics": self.final_metrics,
            "clip_by_bin": self.clip_by_bin,
            "steps": self.steps,
            "wall_time_s": self.wall_time_s,
            "warmup": self.warmup,
            "paths": self.paths,
        }


# --- small utilities -------------------------------------------------------------------------------


def _save_pretrained_atomic(model: Any, tokenizer: Any, destination: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def find_last_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in `checkpoint_dir`, or None."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    found = [
        (int(match.group(1)), path)
        for path in root.iterdir()
        if (match := CHECKPOINT_PATTERN.match(path.name)) and (path / "trainer_state.json").is_file()
    ]
    return max(found)[1] if found else None


OFFLINE_VARIABLES: tuple[str, ...] = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
)


@contextlib.contextmanager
def offline_environment() -> Iterator[None]:
    """Hugging Face libraries offline (and tokenizers single-threaded) for the block; restored afterwards."""
    saved = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    for name in OFFLINE_VARIABLES[:3]:
        os.environ[name] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _quiet_and_threads(num_threads: int) -> Iterator[None]:
    """Few threads and no library chatter (only the CLI prints)."""
    import torch
    import transformers

    previous_threads = torch.get_num_threads()
    previous_verbosity = transformers.logging.get_verbosity()
    torch.set_num_threads(num_threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    with warnings.catch_warnings():
        for module in ("transformers", "trl", "accelerate", "torch"):
            warnings.filterwarnings("ignore", category=FutureWarning, module=module)
            warnings.filterwarnings("ignore", category=UserWarning, module=module)
        warnings.filterwarnings("ignore", message=".*TRL currently only supports.*")
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        try:
            yield
        finally:
            torch.set_num_threads(previous_threads)
            transformers.logging.set_verbosity(previous_verbosity)
            transformers.logging.enable_progress_bar()


# --- the run ---------------------------------------------------------------------------------------


def _resolve_run_dir(config: TrainConfig) -> Path:
    if config.output_dir is not None:
        return Path(config.output_dir).expanduser()
    if config.resume:
        raise ValueError("resume needs output_dir: pass --output-dir RUN_DIR of the run to continue")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.method}-seed{config.seed}-{stamp}"


def _check_run_dir(run_dir: Path, config: TrainConfig) -> None:
    stored_path = run_dir / "config.json"
    if not config.resume:
        if stored_path.exists():
            raise ValueError(
                f"output_dir {str(run_dir)!r} already holds a run; pass --resume to continue it or choose "
                "another --output-dir"
            )
        return
    if not stored_path.exists():
        return  # nothing was written yet (killed at once, or never started): resuming means starting
    stored = json.loads(stored_path.read_text())
    given = config.to_dict()
    ignored = RUN_INDEPENDENT_FIELDS | {"resolved"}
    different = sorted(k for k in given if k not in ignored and stored.get(k) != given[k])
    if different:
        details = ", ".join(f"{k}: run has {stored.get(k)!r}, given {given[k]!r}" for k in different)
        raise ValueError(f"resume: config differs from the run's ({details}); resume with the run's settings")


def _load_policy(config: TrainConfig, progress: bool) -> tuple[Any, Any, dict[str, Any] | None]:
    """(model, tokenizer, warm-up info) from --model or from the cached warm-up of the embedded model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    warmup_info = None
    if config.model is None:
        from bandpo.training.warmup import WarmupConfig, load_or_warm_up

        bars: list[Any] = []  # created on the first report, so a cached warm-up shows no bar

        def report(step: int, accuracy: float) -> None:
            if progress and not bars:
                bars.append(_progress_bar(True, total=config.warmup_max_steps, desc="warm-up", unit="step"))
            if bars:
                bars[0].update(step - bars[0].n)
                bars[0].set_postfix(pass_at_1=f"{accuracy:.3f}")

        try:
            result = load_or_warm_up(
                WarmupConfig(
                    seed=config.seed,
                    target_accuracy=config.warmup_target_accuracy,
                    max_steps=config.warmup_max_steps,
                    rare_fraction=config.warmup_rare_fraction,
                ),
                cache_dir=config.cache_dir,
                progress=report,
            )
        finally:
            for bar in bars:
                bar.close()
        path = result.path
        warmup_info = {
            "path": str(result.path),
            "steps": result.steps,
            "sampled_accuracy": result.accuracy,
            "seconds": result.seconds,
            "from_cache": result.from_cache,
        }
    else:
        path = Path(config.model).expanduser()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"model={str(path)!r} is not a loadable local HF checkpoint: {error}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer, warmup_info


def _prompt_rows(
    config: TrainConfig, tokenizer: Any
) -> tuple[list[data_module.PromptRow], list[data_module.PromptRow]]:
    """(training rows in consumption order, held-out evaluation rows)."""
    count = config.max_steps * config.prompts_per_step
    if config.dataset is None:
        train_rows = data_module.countdown_rows(task.sample_train_problems(count, seed=config.seed))
        eval_rows = data_module.countdown_rows(
            task.sample_eval_problems(config.eval_prompts, seed=config.seed)
        )
    else:
        rows = data_module.load_prompt_rows(
            config.dataset, prompt_column=config.prompt_column, answer_column=config.answer_column
        )
        train_pool, eval_rows = data_module.split_rows(rows, eval_prompts=config.eval_prompts)
        train_rows = data_module.schedule_rows(train_pool, count, seed=config.seed)
    has_template = bool(getattr(tokenizer, "chat_template", None))

    def adapt(row: data_module.PromptRow) -> data_module.PromptRow:
        if isinstance(row.prompt, str):
            if has_template and config.use_chat_template:
                return data_module.PromptRow(
                    [{"role": "user", "content": row.prompt}], row.answer, row.needs_rare
                )
            return row
        if not has_template:
            raise ValueError(
                "the dataset has chat-message prompts but the tokenizer has no chat template; use plain-text "
                "prompts or a model whose tokenizer has a chat template"
            )
        return row

    return [adapt(r) for r in train_rows], [adapt(r) for r in eval_rows]


def _mean_present(records: list[dict[str, Any]], key: str) -> float | None:
    """Mean of `key` over the records that have it; None when none has (an absent key is missing, not 0)."""
    values = [float(r[key]) for r in records if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def _progress_bar(enabled: bool, **kwargs: Any) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(dynamic_ncols=True, leave=True, **kwargs)


def _run_evaluation(
    config: TrainConfig, model: Any, tokenizer: Any, rows: list[data_module.PromptRow], *, seed: int
) -> EvalResult | None:
    if not rows:
        return None
    return evaluate(
        model,
        tokenizer,
        [EvalPrompt(r.prompt, r.answer, r.needs_rare) for r in rows],
        get_verifier(config.resolved_reward),
        k=config.eval_samples,
        seed=seed,
        temperature=config.temperature,
        max_new_tokens=config.resolved_max_completion_length,
        rare_marker=task.RARE_OPERATOR if config.resolved_reward == "countdown" else None,
        timeout_s=config.reward_timeout_s,
        batch_size=1024 if config.resolved_reward == "countdown" else 64,
    )


def _trl_config(config: TrainConfig, checkpoint_dir: Path) -> Any:
    """TRL's arguments for `config`.

    TRL's units: a micro-batch of ``resolved_micro_batch_size`` completions per forward/backward pass,
    ``gradient_accumulation_steps`` of them per optimiser step (one minibatch), ``minibatches × that`` per
    generation batch (``steps_per_generation``), each generation batch used ``num_iterations`` times: so
    ``minibatches × num_iterations`` optimiser steps per RL step, whatever the micro-batch size. TRL's
    ``global_step`` counts optimiser steps, hence ``max_steps``, ``logging_steps`` and ``save_steps`` in
    multiples of ``optimizer_steps_per_rl_step``.
    """
    import torch

    from bandpo.integrations.trl import BandPOConfig
    from bandpo.training.config import AGG_TO_LOSS_TYPE

    opt_steps = config.optimizer_steps_per_rl_step
    accumulation = config.gradient_accumulation_steps
    with warnings.catch_warnings():
        # TrainConfig already warned about a one-optimiser-step schedule; BandPOConfig would repeat it
        warnings.filterwarnings("ignore", message="every method is identical", category=UserWarning)
        arguments = BandPOConfig(
            output_dir=str(checkpoint_dir),
            method=config.method,
            method_params=config.method_params,
            loss_type=AGG_TO_LOSS_TYPE[config.agg],
            delta=config.dual_clip_c,
            beta=config.kl_coef,
            use_bias_correction_kl=False,  # the paper's plain k3 (TRL 1.16 defaults to True)
            entropy_coef=config.entropy_coef,
            scale_rewards=config.scale_rewards,
            temperature=config.temperature,
            top_p=1.0,
            top_k=0,
            max_completion_length=config.resolved_max_completion_length,
            num_generations=config.num_generations,
            per_device_train_batch_size=config.resolved_micro_batch_size,
            gradient_accumulation_steps=accumulation,
            steps_per_generation=config.minibatches * accumulation,
            num_iterations=config.num_iterations,
            learning_rate=config.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            optim="adamw_torch",
            max_grad_norm=config.max_grad_norm,
            max_steps=config.trl_max_steps,
            logging_strategy="steps",
            logging_steps=opt_steps,
            save_strategy="steps",
            save_steps=config.save_every * opt_steps,
            save_total_limit=None,
            seed=config.seed,
            data_seed=config.seed,
            report_to=[],
            disable_tqdm=True,
            log_completions=False,
            disable_dropout=True,
            use_cpu=not torch.cuda.is_available(),
            # TRL defaults to recomputing activations in the backward pass, which only saves memory; the
            # embedded model's activations are a few MB, so it only cost a forward pass per update (same numbers)
            gradient_checkpointing=config.model is not None,
            dataloader_num_workers=0,
            shuffle_dataset=True,
            remove_unused_columns=False,
        )
    return arguments


def _silence(trainer: Any) -> None:
    """Drop the HF Trainer's printing callbacks: only the CLI prints (our progress bar shows the steps)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _trainer_class() -> type:
    """`BandPOTrainer` with atomic checkpoints that keep the last `keep_checkpoints`."""
    from bandpo.integrations.trl import BandPOTrainer

    class RunTrainer(BandPOTrainer):
        keep_checkpoints = 2
        _staging_root: str | None = None

        def _get_output_dir(self, trial: Any) -> str:
            if self._staging_root is not None:
                return self._staging_root
            return super()._get_output_dir(trial)

        def create_model_card(self, *args: Any, **kwargs: Any) -> None:
            return None  # offline runs: no Hub model card next to the checkpoints

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            root = Path(self.args.output_dir)
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
            name = f"checkpoint-{self.state.global_step}"
            self._staging_root = str(staging)
            try:
                super()._save_checkpoint(model, trial)
                target = root / name
                if target.exists():
                    shutil.rmtree(target)
                os.replace(staging / name, target)
            finally:
                self._staging_root = None
                shutil.rmtree(staging, ignore_errors=True)
            complete = sorted(
                (int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))
            )
            for _, old in complete[: max(len(complete) - self.keep_checkpoints, 0)]:
                shutil.rmtree(old, ignore_errors=True)

    return RunTrainer


def _make_callback(run: _Run) -> Any:
    from transformers import TrainerCallback

    class RunCallback(TrainerCallback):
        """Writes metrics.jsonl / TensorBoard per RL step, drives the progress bar and periodic evaluation."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.global_step >= state.max_steps:
                control.should_save = True  # always checkpoint the last step
            return control

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
        ) -> None:
            if not logs or "train_runtime" in logs or state.global_step % run.opt_steps:
                return
            run.record_step(state.global_step // run.opt_steps, logs)

    return RunCallback()


class _Run:
    """State of one `train` call (kept out of the public API)."""

    def __init__(self, config: TrainConfig, progress: bool) -> None:
        self.config = config
        self.progress = progress
        self.opt_steps = config.optimizer_steps_per_rl_step
        self.run_dir = _resolve_run_dir(config)
        self.paths = {
            "run_dir": self.run_dir,
            "config": self.run_dir / "config.json",
            "metrics": self.run_dir / "metrics.jsonl",
            "tensorboard": self.run_dir / "tensorboard",
            "checkpoints": self.run_dir / "checkpoints",
            "model": self.run_dir / "model",
            "plots": self.run_dir / "plots",
            "eval_before": self.run_dir / "eval_before.json",
            "eval_after": self.run_dir / "eval_after.json",
            "summary": self.run_dir / "summary.json",
        }
        self.writer: Any = None
        self.bar: Any = None
        self.last_time = time.perf_counter()
        self.model: Any = None
        self.tokenizer: Any = None
        self.eval_rows: list[data_module.PromptRow] = []

    # -- metrics ------------------------------------------------------------------------------------
    def record_step(self, rl_step: int, logs: dict[str, Any]) -> None:
        now = time.perf_counter()
        record: dict[str, Any] = {mn.TRAIN_STEP: rl_step}
        for key, value in logs.items():
            if value is None or isinstance(value, str):
                continue
            name = TRL_TO_CATALOGUE.get(key, key if key in CATALOGUED else f"trl/{key}")
            record[name] = float(value)
        record[mn.TRAIN_STEP_TIME] = now - self.last_time
        self.last_time = now
        self._append(record)
        if self.bar is not None:
            self.bar.update(rl_step - self.bar.n)
            self.bar.set_postfix(
                reward=f"{record.get(mn.TRAIN_REWARD, math.nan):.3f}",
                entropy=f"{record.get(mn.TRAIN_ENTROPY, math.nan):.3f}",
            )
        every = self.config.eval_every
        if every and rl_step % every == 0 and rl_step < self.config.max_steps and self.eval_rows:
            result = _run_evaluation(
                self.config, self.model, self.tokenizer, self.eval_rows, seed=self._eval_seed()
            )
            if result is not None:
                self._append({mn.TRAIN_STEP: rl_step, **result.metrics})

    def _append(self, record: dict[str, Any]) -> None:
        with self.paths["metrics"].open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = int(record[mn.TRAIN_STEP])
            for key, value in record.items():
                if key != mn.TRAIN_STEP and isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def _truncate_metrics(self, rl_step: int) -> None:
        path = self.paths["metrics"]
        if not path.exists():
            return
        from bandpo.training.plots import read_metrics

        def keep(record: dict[str, Any]) -> bool:
            step = record.get(mn.TRAIN_STEP, 0)
            if step == rl_step == self.config.max_steps and step > 0:
                return mn.TRAIN_REWARD in record  # the final evaluation is written again
            return step <= rl_step

        kept = [r for r in read_metrics(path) if keep(r)]
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))

    def _eval_seed(self) -> int:
        return 1_000_003 + self.config.seed

    # -- the run ------------------------------------------------------------------------------------
    def execute(self) -> TrainSummary:
        start = time.perf_counter()
        config = self.config
        _check_run_dir(self.run_dir, config)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not config.resume or not self.paths["config"].exists():
            write_text_atomic(self.paths["config"], config.to_json())
        model, tokenizer, warmup_info = _load_policy(config, self.progress)
        self.model, self.tokenizer = model, tokenizer
        train_rows, self.eval_rows = _prompt_rows(config, tokenizer)

        checkpoint = find_last_checkpoint(self.paths["checkpoints"]) if config.resume else None
        resumed_step = 0
        if checkpoint is not None:
            state = json.loads((checkpoint / "trainer_state.json").read_text())
            resumed_step = int(state["global_step"]) // self.opt_steps
        self._truncate_metrics(resumed_step)
        if not config.resume:
            self.paths["metrics"].unlink(missing_ok=True)
        if config.report_tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # on resume, purge_step drops the events a killed run wrote after its last checkpoint (all of its
            # training events when it died before the first one; the step-0 evaluation is kept, as in
            # metrics.jsonl)
            self.writer = SummaryWriter(
                str(self.paths["tensorboard"]), purge_step=resumed_step + 1 if config.resume else None
            )
        try:
            return self._execute(start, checkpoint, resumed_step, model, tokenizer, train_rows, warmup_info)
        finally:
            if self.writer is not None:
                self.writer.close()
            self.writer = None

    def _execute(
        self,
        start: float,
        checkpoint: Path | None,
        resumed_step: int,
        model: Any,
        tokenizer: Any,
        train_rows: list[data_module.PromptRow],
        warmup_info: dict[str, Any] | None,
    ) -> TrainSummary:
        config = self.config

        if self.paths["eval_before"].exists() and config.resume:
            before = EvalResult.from_dict(json.loads(self.paths["eval_before"].read_text()))
        else:
            before = _run_evaluation(config, model, tokenizer, self.eval_rows, seed=self._eval_seed())
            if before is not None:
                write_text_atomic(self.paths["eval_before"], json.dumps(before.to_dict()))
            self._append_eval(0, before)

        self._train(model, tokenizer, train_rows, checkpoint, resumed_step)

        _save_pretrained_atomic(model, tokenizer, self.paths["model"])
        after = _run_evaluation(config, model, tokenizer, self.eval_rows, seed=self._eval_seed())
        if after is not None:
            write_text_atomic(self.paths["eval_after"], json.dumps(after.to_dict()))
        self._append_eval(config.max_steps, after)

        from bandpo.training.plots import plot_run, read_metrics

        plot_run(self.paths["metrics"], self.paths["plots"], title=config.method)
        records = [r for r in read_metrics(self.paths["metrics"]) if mn.TRAIN_REWARD in r]
        tail = records[-max(1, len(records) // 10) :] if records else []
        clip_by_bin = {
            key: _mean_present(tail, key) for key in (*mn.CLIP_FRAC_UP_BINS, *mn.CLIP_FRAC_DOWN_BINS)
        }
        summary = TrainSummary(
            run_dir=self.run_dir,
            config=config,
            before=before,
            after=after,
            final_metrics=records[-1] if records else {},
            clip_by_bin=clip_by_bin,
            steps=int(records[-1][mn.TRAIN_STEP]) if records else 0,
            wall_time_s=time.perf_counter() - start,
            warmup=warmup_info,
            paths={name: str(path) for name, path in self.paths.items()},
        )
        write_text_atomic(self.paths["summary"], json.dumps(summary.to_dict(), indent=2))
        return summary

    def _append_eval(self, rl_step: int, result: EvalResult | None) -> None:
        if result is not None:
            self._append({mn.TRAIN_STEP: rl_step, **result.metrics})

    def _train(
        self,
        model: Any,
        tokenizer: Any,
        train_rows: list[data_module.PromptRow],
        checkpoint: Path | None,
        resumed: int,
    ) -> None:
        from datasets import Dataset

        config = self.config
        dataset = Dataset.from_list([{"prompt": r.prompt, "answer": r.answer} for r in train_rows])
        verifier = get_verifier(config.resolved_reward)
        reward = GuardedReward(verifier.score, timeout_s=config.reward_timeout_s, name=config.resolved_reward)
        trainer_class = _trainer_class()
        trainer_class.keep_checkpoints = config.keep_checkpoints
        trainer = trainer_class(
            model=model,
            reward_funcs=[reward],
            args=_trl_config(config, self.paths["checkpoints"]),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[_make_callback(self)],
        )
        _silence(trainer)
        self.bar = _progress_bar(
            self.progress, total=config.max_steps, initial=resumed, desc=config.method, unit="step"
        )
        self.last_time = time.perf_counter()
        from bandpo.training.model import narrow_logprob_tiles

        try:
            with narrow_logprob_tiles(model):  # same numbers, no 126 MB buffer per pass (see its docstring)
                trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        finally:
            if self.bar is not None:
                self.bar.close()
            self.bar = None


def train(config: TrainConfig, *, progress: bool = True) -> TrainSummary:
    """Run one training run and write its run directory (see the module docstring).

    Args:
        config: the run's settings (`TrainConfig`; presets with `TrainConfig.from_preset`).
        progress: show tqdm progress bars (warm-up and RL steps) on stderr.

    Returns:
        The `TrainSummary` (before/after evaluation with per-prompt results, final metrics, paths).

    Raises:
        ValueError: bad settings, dataset rows or run directory (one line naming the field or row).
    """
    with offline_environment(), _quiet_and_threads(config.num_threads):
        return _Run(config, progress).execute()
