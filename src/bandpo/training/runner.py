"""`train(config)`: one run, from a `TrainConfig` to a run directory, through TRL (`BandPOTrainer`).

Steps: check the run directory, the dataset and the model (nothing is written before all three pass, so a
refused start never blocks the retry) → model and tokenizer (the embedded tiny model is warmed up once and
cached, see `bandpo.training.warmup`) → prompts (held-out evaluation prompts never in training) → evaluation
before training → `BandPOTrainer.train()` → final model → evaluation after → plots → ``summary.json``.

Run directory (`bandpo.training.run_dir.RunPaths`, ``TrainSummary.paths``)::

    config.json          the resolved TrainConfig (standard JSON: a disabled dual clip is null)
    metrics.jsonl        one record per RL step: catalogued keys (bandpo.metric_names), TRL's others as trl/*
    tensorboard/         the same scalars as TensorBoard events (report_to tensorboard, the default; the other
                         loggers, `bandpo.training.loggers`, write where their library does)
    checkpoints/         checkpoint-<optimiser step>/: safetensors weights, optimiser, RNG and trainer state
    model/               the final policy (save_pretrained, safetensors), tokenizer and README.md, its model
                         card for the Hub (`bandpo.training.model_card`): ready for `hf upload`; with ``lora_r``
                         (here and in checkpoints) the adapter only, as peft saves it (`bandpo.training.lora`)
    eval_before.json     held-out evaluation before training (metrics and per-prompt samples)
    eval_after.json      ... after training
    plots/               reward.png, entropy.png, clip_fractions.png
    summary.json         before/after metrics, final training metrics, wall time, reward failures, paths
    run.lock             flock-ed by the process writing the run, from its first write to its end (its pid)

Checkpoints fall on RL-step boundaries; one counts once the HF Trainer has written its trainer state (see
`bandpo.training.run_dir`). ``resume=True`` continues from the last one: TRL / the HF Trainer restore
weights, optimiser, scheduler and the Python/NumPy/torch RNG (which drives sampling), the data order is a
fixed schedule replayed from its start (`data.schedule_rows` + TRL's seeded sampler, fast-forwarded by the
Trainer), ``metrics.jsonl`` is cut back to the checkpoint, and the evaluation before training is read back
from ``eval_before.json``. On CPU the resumed run then ends with the same metrics as an uninterrupted one
(tested by killing a run with SIGKILL).

One writer, nothing left behind: the run directory is locked (`bandpo._lifetime.FolderLock`, released by the
kernel when the holder dies) before the first write, so a second process writing the same run is refused; the
reward worker dies with this process however it ends; a fresh run that fails before its first RL step (or on
failed rewards only) removes what it wrote (`run_dir.undo_failed_start`), so the retry starts clean. A reward that fails on every
prompt is refused before the first write (`rewards.check_rewards_work`), and one that fails on every sample of
the first `rewards.REWARD_CHECK_STEPS` RL steps stops the run (`rewards.RewardFailure`).

Several processes (``torchrun`` / ``accelerate launch``, `bandpo.training.processes`): every process trains
on its share of each batch (each micro-batch is split between them, so an RL step is the same as in one
process); only the main process writes the run directory, evaluates (the others wait for it) and warms up
the embedded model; `TrainSummary.world_size` records how many trained.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
from bandpo._atomic import write_text_atomic
from bandpo.training import data as data_module
from bandpo.training.config import TrainConfig
from bandpo.training.evaluate import EvalPrompt, EvalResult, evaluate
from bandpo.training.finite import NonFiniteError, watch_logits
from bandpo.training.loggers import RunIdentity, check_installed, open_sinks
from bandpo.training.lora import check_peft_installed
from bandpo.training.metrics_log import MetricsLog
from bandpo.training.model import narrow_logprob_tiles
from bandpo.training.model_card import write_model_card
from bandpo.training.policy import autocast_dtype, load_policy, warm_up_in_child
from bandpo.training.processes import (
    Processes,
    offline_environment,
    progress_bar,
    quiet_and_threads,
)
from bandpo.training.rewards import (
    REWARD_CHECK_STEPS,
    GuardedReward,
    RewardFailure,
    check_rewards_work,
    completion_text,
    get_verifier,
)
from bandpo.training.run_dir import (
    RunPaths,
    check_checkpoint_files,
    check_run_dir,
    checkpoint_step,
    find_last_checkpoint,
    read_json,
    remove_leftovers,
    resolve_run_dir,
    save_pretrained_atomic,
    set_aside_checkpoints,
    take_run_lock,
    to_json,
    undo_failed_start,
)
from bandpo.training.shared_eval import read_shared, write_shared
from bandpo.training.tasks import get_task, task_names

__all__ = [
    "TrainSummary",
    "clip_by_bin",
    "find_last_checkpoint",
    "mean_present",
    "offline_environment",
    "train",
]

_RERUN = "the main process wrote it at the end of this run; run again"
# what torch.save / safetensors say when a write fails mid-file (a full disk, usually)
_WRITE_FAILURE = re.compile(r"iostream error|file write failed|PytorchStreamWriter failed|No space left")


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
        world_size: processes that trained (torchrun / accelerate launch; 1 without a launcher).
        reward_failures: training samples whose reward failed (raised, non-finite or timed out) and scored
            0: ``errors``, ``timeouts`` among them, ``samples`` scored, ``last_error`` (this call's samples;
            in several processes, the main process's share).
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
    world_size: int = 1
    reward_failures: dict[str, Any] | None = None

    def to_dict(self, *, per_prompt: bool = False) -> dict[str, Any]:
        """JSON-ready dict; per-prompt evaluation results only when `per_prompt`."""

        def evaluation(result: EvalResult | None) -> dict[str, Any] | None:
            if result is None:
                return None
            return result.to_dict() if per_prompt else {"metrics": result.metrics, "k": result.k}

        return {
            "run_dir": str(self.run_dir),
            "config": json.loads(to_json(self.config.to_dict())),  # standard JSON: an "off" inf is null
            "before": evaluation(self.before),
            "after": evaluation(self.after),
            "final_metrics": self.final_metrics,
            "clip_by_bin": self.clip_by_bin,
            "steps": self.steps,
            "wall_time_s": self.wall_time_s,
            "warmup": self.warmup,
            "paths": self.paths,
            "world_size": self.world_size,
            "reward_failures": self.reward_failures,
        }


def mean_present(records: list[dict[str, Any]], key: str) -> float | None:
    """Mean of `key` over the records that have it; None when none has (an absent key is missing, not 0)."""
    values = [float(r[key]) for r in records if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def clip_by_bin(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """Upward/downward clip fraction per p_old bin over the last 10% of the training `records`."""
    tail = records[-max(1, len(records) // 10) :] if records else []
    return {key: mean_present(tail, key) for key in (*mn.CLIP_FRAC_UP_BINS, *mn.CLIP_FRAC_DOWN_BINS)}


def train(config: TrainConfig, *, progress: bool = True) -> TrainSummary:
    """Run one training run and write its run directory (see the module docstring).

    Args:
        config: the run's settings (`TrainConfig`; presets with `TrainConfig.from_preset`).
        progress: show tqdm progress bars (warm-up and RL steps) on stderr.

    Returns:
        The `TrainSummary` (before/after evaluation with per-prompt results, final metrics, paths).

    Raises:
        ValueError: bad settings, dataset rows, model folder or run directory (one line naming the field,
            file or row).
        OSError: a file could not be written (``ENOSPC``: the disk is full; the run resumes from its last
            checkpoint with ``resume=True``).
    """
    start = time.perf_counter()
    processes = Processes.from_environment()  # one process unless launched by torchrun / accelerate launch
    main = processes.is_main
    show = progress and main
    paths = RunPaths(processes.share(resolve_run_dir(config)))  # a timestamped default is the main one's
    existed_before = paths.run_dir.exists()
    with (
        offline_environment(),
        quiet_and_threads(config.num_threads),
        _explain_write_failures(paths.run_dir),
        contextlib.ExitStack() as exits,
    ):
        # everything is checked before the first write, by every process
        _check_world_size(config, processes.world_size)
        check_run_dir(paths, config)
        if main:
            check_installed(config.report_to)  # a missing logger is refused before the first write
        raw_train_rows, raw_eval_rows = data_module.read_run_rows(config.prompt_source)
        checkpoint = find_last_checkpoint(paths.checkpoints) if config.resume else None
        if checkpoint is not None:
            check_checkpoint_files(checkpoint, world_size=processes.world_size)
        resumed_step = checkpoint_step(checkpoint) // config.optimizer_steps_per_rl_step if checkpoint else 0
        if config.model is None and config.dataset is not None:  # the embedded model reads its alphabet only
            data_module.check_embedded_alphabet(raw_train_rows + raw_eval_rows, config.dataset)
        check_peft_installed(config)
        check_rewards_work(
            config.resolved_reward,
            raw_train_rows,
            timeout_s=config.reward_timeout_s,
            source=config.dataset or f"the embedded {config.task} task",
        )
        stored_before = None
        if config.resume and paths.eval_before.exists():
            fix = "delete it to evaluate again"
            stored_before = EvalResult.from_dict(read_json(paths.eval_before, fix=fix))
        processes.wait()  # every process has checked before the main one writes
        fresh_start = trained = False
        refused = None
        if main:
            # one writer per run directory, from its first write to the end; the lock dies with its holder
            try:
                exits.enter_context(take_run_lock(paths, config))  # and checks the directory again under it
            except ValueError as error:
                refused = error
            else:
                fresh_start = not paths.config.exists()

                def undo_on_failure(exc_type: Any, *_: Any) -> None:
                    # a failed start never blocks its own retry; once it trains, a run is kept for --resume
                    # (its evaluation before training is reused), unless it trained on failed rewards only
                    if exc_type is not None and (not trained or issubclass(exc_type, RewardFailure)):
                        undo_failed_start(paths, created=not existed_before, fresh=fresh_start)

                exits.push(undo_on_failure)
        refused_text = processes.share(None if refused is None else str(refused))  # all stop, or none
        if refused is not None:
            raise refused
        if refused_text is not None:
            raise ValueError(refused_text)
        warmup_info = None
        if config.model is None and processes.world_size > 1:
            # once, on the main process, outside the process group; the others load it from the cache
            warmup_info = warm_up_in_child(config.policy_source, show) if main else None
            processes.wait()
        policy = load_policy(config.policy_source, show)
        model, tokenizer = policy.model, policy.tokenizer
        warmup_info = warmup_info or policy.warmup
        trainer = None  # built below; the explanation of a NonFiniteError reads its step
        exits.enter_context(_explain_non_finite(config, paths, policy.path, lambda: trainer, rename=main))
        exits.enter_context(watch_logits(model))  # inf/NaN logits raise NonFiniteError (explained above)
        wrap = config.use_chat_template
        train_rows = data_module.adapt_rows(raw_train_rows, tokenizer, use_chat_template=wrap)
        eval_rows = data_module.adapt_rows(raw_eval_rows, tokenizer, use_chat_template=wrap)

        def evaluate_now() -> EvalResult | None:
            """The main process evaluates (None elsewhere); the others wait for it."""
            result = _evaluate_rows(config, model, tokenizer, eval_rows) if main else None
            processes.wait()
            return result

        if main:
            remove_leftovers(paths)
            if fresh_start:
                record = config.to_dict()
                record["resolved"].update(policy.dtypes())  # trained in float32, whatever it was stored in
                write_text_atomic(paths.config, to_json(record, indent=2))
        reward = GuardedReward(
            get_verifier(config.resolved_reward).score,
            timeout_s=config.reward_timeout_s,
            name=config.resolved_reward,
        )
        sink: Any = contextlib.nullcontext()
        if main:
            identity = RunIdentity(
                run_dir=paths.run_dir,
                project=config.project,
                config=json.loads(to_json(config.to_dict())),
                resumed_step=resumed_step if config.resume else None,
            )
            sink = MetricsLog(
                paths.metrics,
                open_sinks(config.report_to, identity),
                resumed_step=identity.resumed_step,
                max_steps=config.max_steps,
            )
        with sink as log:
            before = stored_before
            if before is None:
                before = _shared_before(config, eval_rows, processes.world_size) or evaluate_now()
                if before is not None:
                    if config.eval_before_file and processes.world_size == 1:
                        write_shared(Path(config.eval_before_file), config, before)
                    write_text_atomic(paths.eval_before, json.dumps(before.to_dict()))
                    log.append({mn.TRAIN_STEP: 0, **before.metrics})
            bar = progress_bar(
                show, total=config.max_steps, initial=resumed_step, desc=config.method, unit="step"
            )

            def on_rl_step(rl_step: int, logs: dict[str, Any]) -> None:  # from TRL's on_log, per RL step
                nonlocal trained
                reward.check_not_all_failed(rl_step, min(REWARD_CHECK_STEPS, config.max_steps))
                trained = True
                if log is not None:
                    record = log.record_step(rl_step, logs)
                if bar is not None:
                    bar.update(rl_step - bar.n)
                    bar.set_postfix(
                        reward=f"{record.get(mn.TRAIN_REWARD, math.nan):.3f}",
                        entropy=f"{record.get(mn.TRAIN_ENTROPY, math.nan):.3f}",
                    )
                every = config.eval_every
                if every and rl_step % every == 0 and rl_step < config.max_steps:
                    result = evaluate_now()
                    if result is not None:
                        log.append({mn.TRAIN_STEP: rl_step, **result.metrics})

            from bandpo.training.trl_args import build_trainer  # imports TRL

            trainer = build_trainer(
                config,
                model,
                tokenizer,
                train_rows,
                reward,
                paths.checkpoints,
                on_rl_step,
                world_size=processes.world_size,
            )
            if log is not None:
                log.restart_clock()
            try:
                with narrow_logprob_tiles(model):  # same numbers, no 126 MB buffer per pass (its docstring)
                    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
            finally:
                reward.close()
                if bar is not None:
                    bar.close()

            # the trained policy: `model` itself, or the PeftModel TRL wrapped it in (LoRA), whose folder holds
            # the adapter only and whose evaluation runs the base with its adapter
            model = trainer.model
            if main:
                save_pretrained_atomic(model, tokenizer, paths.model)
            after = evaluate_now()
            if after is not None:
                write_text_atomic(paths.eval_after, json.dumps(after.to_dict()))
                log.append({mn.TRAIN_STEP: config.max_steps, **after.metrics})

        if main:
            from bandpo.training.metrics_log import plot_run

            plot_run(paths.metrics, paths.plots, title=config.method)
            summary = _summarize(
                config, paths, before, after, start, warmup_info, processes.world_size, reward.failures()
            )
            write_model_card(paths.model, config, before, after, steps=summary.steps, run_config=paths.config)
            write_text_atomic(paths.summary, json.dumps(summary.to_dict(), indent=2))
        processes.wait()  # the others return the main process's results, once they are written
        if not main:
            after = EvalResult.from_dict(read_json(paths.eval_after, fix=_RERUN)) if eval_rows else None
            before = before or (
                EvalResult.from_dict(read_json(paths.eval_before, fix=_RERUN)) if eval_rows else None
            )
            summary = _summarize(
                config, paths, before, after, start, warmup_info, processes.world_size, reward.failures()
            )
    return summary


def _summarize(
    config: TrainConfig,
    paths: RunPaths,
    before: EvalResult | None,
    after: EvalResult | None,
    start: float,
    warmup_info: dict[str, Any] | None,
    world_size: int,
    reward_failures: dict[str, Any] | None = None,
) -> TrainSummary:
    """The run's `TrainSummary`, its training records read back from ``metrics.jsonl``."""
    from bandpo.training.metrics_log import read_metrics

    records = [r for r in read_metrics(paths.metrics) if mn.TRAIN_REWARD in r]
    return TrainSummary(
        run_dir=paths.run_dir,
        config=config,
        before=before,
        after=after,
        final_metrics=records[-1] if records else {},
        clip_by_bin=clip_by_bin(records),
        steps=int(records[-1][mn.TRAIN_STEP]) if records else 0,
        wall_time_s=time.perf_counter() - start,
        warmup=warmup_info,
        paths=paths.as_dict(),
        world_size=world_size,
        reward_failures=reward_failures,
    )


def _check_world_size(config: TrainConfig, world_size: int) -> None:
    """Each micro-batch is split between the processes: they must divide it."""
    micro = config.resolved_micro_batch_size
    if micro % world_size:
        raise ValueError(
            f"micro_batch_size={micro} (completions per forward/backward pass) must be divisible by the "
            f"{world_size} processes that share it; launch a divisor of it, or pass --micro-batch-size a "
            f"multiple of {world_size}"
        )


def _shared_before(
    config: TrainConfig, rows: list[data_module.PromptRow], world_size: int
) -> EvalResult | None:
    """The evaluation before RL from `config.eval_before_file` when it was made for this run's policy,
    settings and prompts (`shared_eval`); None otherwise, and always with several processes (each would need
    the same answer: they evaluate together instead)."""
    if not config.eval_before_file or not rows or world_size > 1:
        return None
    return read_shared(Path(config.eval_before_file), config, [completion_text(row.prompt) for row in rows])


def _evaluate_rows(
    config: TrainConfig, model: Any, tokenizer: Any, rows: list[data_module.PromptRow]
) -> EvalResult | None:
    """The held-out evaluation of `rows` (None without rows); one fixed seed, so before and after compare."""
    if not rows:
        return None
    embedded_reward = config.resolved_reward in task_names()
    return evaluate(
        model,
        tokenizer,
        [EvalPrompt(r.prompt, r.answer, r.needs_rare) for r in rows],
        get_verifier(config.resolved_reward),
        k=config.eval_samples,
        seed=1_000_003 + config.seed,
        temperature=config.temperature,
        max_new_tokens=config.resolved_max_completion_length,
        rare_marker=get_task(config.resolved_reward).rare_marker if embedded_reward else None,
        timeout_s=config.reward_timeout_s,
        batch_size=1024 if config.model is None else 64,  # a real vocabulary's logits are large
    )


@contextlib.contextmanager
def _explain_non_finite(
    config: TrainConfig, paths: RunPaths, model_path: Path, trainer: Any, *, rename: bool
) -> Iterator[None]:
    """`NonFiniteError` becomes one line: where (before training, or the RL step), the likely cause (the
    checkpoint's weights before any update; the learning rate or the compute dtype after), and the last good
    checkpoint. With `rename` (the main process, which writes the checkpoints) those written from the failing
    weights on are renamed ``diverged-checkpoint-<step>``, so ``--resume`` and ``--model`` find the last good
    one. `trainer` returns the trainer once built (None before)."""
    try:
        yield
    except NonFiniteError as error:
        built = trainer()
        done = built.state.global_step if built is not None else 0  # optimiser steps done
        if done == 0:
            raise ValueError(
                f"model={str(model_path)!r}: {error} "
                f"{'while sampling the evaluation before training' if built is None else 'in RL step 1'}, "
                "before any update: its "
                "finite weights overflow (a weight too large for float32, such as a norm weight near 3e38); "
                "re-copy or re-save the checkpoint, or start from an earlier one"
            ) from None
        opt_steps = config.optimizer_steps_per_rl_step
        rl_step = error.rl_step or done // opt_steps + 1
        when = f"at RL step {rl_step}" if rl_step <= config.max_steps else "by the end (evaluation after it)"
        good, moved = set_aside_checkpoints(paths.checkpoints, done, rename=rename)
        cause = f"the learning rate ({config.learning_rate:g}) is likely too high{_autocast_note()}"
        if good is None:
            where = "no checkpoint precedes it: start again with a lower --learning-rate"
        else:
            where = (
                f"the last good checkpoint (finite weights and logits) is {good}: start from it with --model "
                f"{good} and a lower --learning-rate"
            )
        aside = (
            f" (kept aside, from the diverged weights: {', '.join(p.name for p in moved)})" if moved else ""
        )
        raise ValueError(f"training diverged {when}: {error}; {cause}; {where}{aside}") from None


def _autocast_note() -> str:
    """The compute dtype as a second suspect when the run computes in bf16 autocast (`autocast_dtype`)."""
    dtype = autocast_dtype()
    return f", or {dtype} autocast overflowed" if dtype else ""


@contextlib.contextmanager
def _explain_write_failures(run_dir: Path) -> Iterator[None]:
    """A failed write says so: ``OSError(ENOSPC)`` for a full disk, also when torch or safetensors report it
    as their own error ("basic_ios::clear: iostream error", "No space left on device (os error 28)")."""
    try:
        yield
    except Exception as error:  # torch: RuntimeError; safetensors: SafetensorError
        if isinstance(error, OSError) or not _WRITE_FAILURE.search(str(error)):
            raise
        free = shutil.disk_usage(run_dir if run_dir.exists() else Path.cwd()).free
        raise OSError(
            errno.ENOSPC,
            f"writing the run failed ({str(error).splitlines()[0]}; {free / 2**20:.0f} MiB free): the disk is "
            "probably full",
            str(run_dir),
        ) from error
