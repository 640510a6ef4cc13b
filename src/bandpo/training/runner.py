"""`train(config)`: one run, from a `TrainConfig` to a run directory, through TRL (`BandPOTrainer`).

Phases (`train` reads as their list): check the run directory, the dataset and the model (nothing is written
before all three pass, so a refused start never blocks the retry) → claim the run directory (its lock) → model
and tokenizer (the embedded tiny model is warmed up once and cached, see `bandpo.training.warmup`) and prompts
(held-out evaluation prompts never in training) → config.json → evaluation before training →
`BandPOTrainer.train()` → final model and evaluation after → plots, model card, ``summary.json``. The files and
folders of the run directory are `bandpo.training.run_dir.RunDir`'s (its module docstring lists them).

Checkpoints fall on RL-step boundaries; one counts once the HF Trainer has written its trainer state (see
`bandpo.training.run_dir`). ``resume=True`` continues from the last one: TRL / the HF Trainer restore
weights, optimiser, scheduler and the Python/NumPy/torch RNG (which drives sampling), the data order is a
fixed schedule replayed from its start (`data.schedule_rows` + TRL's seeded sampler, fast-forwarded by the
Trainer), ``metrics.jsonl`` is cut back to the checkpoint, and the evaluation before training is read back
from ``eval_before.json``. On CPU the resumed run then ends with the same metrics as an uninterrupted one
(tested by killing a run with SIGKILL).

One writer, nothing left behind: the run directory is locked (`bandpo.training._lifetime.FolderLock`, released by the
kernel when the holder dies) before the first write, so a second process writing the same run is refused; the
reward worker dies with this process however it ends; a fresh run that fails before its first RL step (or on
failed rewards only) removes what it wrote (`RunDir.undo_failed_start`), so the retry starts clean. A reward that fails on every
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
from pathlib import Path
from typing import Any

from bandpo import metric_names as mn
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
    RunDir,
    check_checkpoint_files,
    checkpoint_step,
    find_last_checkpoint,
    save_pretrained_atomic,
    set_aside_checkpoints,
    to_json,
)
from bandpo.training.shared_eval import read_shared, write_shared
from bandpo.training.summary import TrainSummary, clip_by_bin
from bandpo.training.tasks import get_task, task_names

__all__ = ["TrainSummary", "find_last_checkpoint", "offline_environment", "train"]

_RERUN = "the main process wrote it at the end of this run; run again"
# what torch.save / safetensors say when a write fails mid-file (a full disk, usually)
_WRITE_FAILURE = re.compile(r"iostream error|file write failed|PytorchStreamWriter failed|No space left")


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
    run = processes.share(RunDir.for_config(config))  # a timestamped default is the main one's
    training = _Training(config, run, processes, progress=progress, start=start)
    with (
        offline_environment(),
        quiet_and_threads(config.num_threads),
        _explain_write_failures(run.path),
        contextlib.ExitStack() as exits,
    ):
        training.check()  # every check, by every process, before the first write
        training.claim(exits)  # one writer: the main process locks the run directory
        training.load_policy(exits)  # model, tokenizer and prompts; inf/NaN logits stop the run, explained
        training.write_config()  # config.json (a fresh run), after the leftovers of a killed one are gone
        with training.logging():  # metrics.jsonl and the loggers, open from here to the evaluation after
            training.evaluate_before()
            training.reinforce()
            training.save_and_evaluate_after()
        return training.summarize()


class _Training:
    """One call of `train`, on one process: what its phases share. Every process runs every phase; only the
    main process writes the run directory and evaluates (the others wait for it, `evaluate`)."""

    def __init__(
        self, config: TrainConfig, run: RunDir, processes: Processes, *, progress: bool, start: float
    ) -> None:
        self.config, self.run, self.processes, self.start = config, run, processes, start
        self.main = processes.is_main
        self.show = progress and self.main
        self.created = not run.path.exists()  # this call creates the run directory
        self.fresh = False  # this call starts the run (no config.json when it took the lock)
        self.trained = False  # an RL step finished: a failure keeps the run for --resume
        self.trainer: Any = None  # once built (the explanation of a NonFiniteError reads its step)
        self.log: MetricsLog | None = None  # the main process's metrics.jsonl and loggers
        self.bar: Any = None  # the main process's progress bar (with progress)
        self.before: EvalResult | None = None
        self.after: EvalResult | None = None
        # set by the phases, in order: `check`, `load_policy`, `reinforce`
        self.raw_train_rows: list[Any] = []
        self.raw_eval_rows: list[Any] = []
        self.checkpoint: Path | None = None  # the one a resume continues from
        self.resumed_step = 0
        self.policy: Any = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.warmup_info: dict[str, Any] | None = None
        self.train_rows: list[data_module.PromptRow] = []
        self.eval_rows: list[data_module.PromptRow] = []
        self.reward: Any = None  # GuardedReward

    def check(self) -> None:
        """Everything that can refuse the run, on every process, before the main process writes anything."""
        config, run = self.config, self.run
        _check_world_size(config, self.processes.world_size)
        run.check(config)
        if self.main:
            check_installed(config.report_to)  # a missing logger is refused before the first write
        self.raw_train_rows, self.raw_eval_rows = data_module.read_run_rows(config.prompt_source)
        self.checkpoint = run.last_checkpoint() if config.resume else None
        if self.checkpoint is not None:
            check_checkpoint_files(self.checkpoint, world_size=self.processes.world_size)
        steps = checkpoint_step(self.checkpoint) if self.checkpoint else 0
        self.resumed_step = steps // config.optimizer_steps_per_rl_step
        if config.model is None and config.dataset is not None:  # the embedded model reads its alphabet only
            data_module.check_embedded_alphabet(self.raw_train_rows + self.raw_eval_rows, config.dataset)
        check_peft_installed(config)
        check_rewards_work(
            config.resolved_reward,
            self.raw_train_rows,
            timeout_s=config.reward_timeout_s,
            source=config.dataset or f"the embedded {config.task} task",
        )
        if config.resume:  # a resumed run reuses its evaluation before training
            self.before = run.read_evaluation("before", fix="delete it to evaluate again")
        self.processes.wait()  # every process has checked before the main one writes

    def claim(self, exits: contextlib.ExitStack) -> None:
        """The main process locks the run directory (and checks it again under the lock) until the end; a
        refusal stops every process."""
        refused = None
        if self.main:
            try:
                exits.enter_context(self.run.take_lock(self.config))
            except ValueError as error:
                refused = error
            else:
                self.fresh = not self.run.started
                exits.push(self._undo_failed_start)
        refused_text = self.processes.share(None if refused is None else str(refused))  # all stop, or none
        if refused is not None:
            raise refused
        if refused_text is not None:
            raise ValueError(refused_text)

    def _undo_failed_start(self, exc_type: Any, *_: Any) -> None:
        # a failed start never blocks its own retry; once it trains, a run is kept for --resume (its
        # evaluation before training is reused), unless it trained on failed rewards only
        if exc_type is not None and (not self.trained or issubclass(exc_type, RewardFailure)):
            self.run.undo_failed_start(created=self.created, fresh=self.fresh)

    def load_policy(self, exits: contextlib.ExitStack) -> None:
        """The policy (the embedded model warmed up once, on the main process) and the prompts it reads."""
        config, world_size = self.config, self.processes.world_size
        warmup_info = None
        if config.model is None and world_size > 1:
            # once, on the main process, outside the process group; the others load it from the cache
            warmup_info = warm_up_in_child(config.policy_source, self.show) if self.main else None
            self.processes.wait()
        self.policy = load_policy(config.policy_source, self.show)
        self.model, self.tokenizer = self.policy.model, self.policy.tokenizer
        self.warmup_info = warmup_info or self.policy.warmup
        exits.enter_context(
            _explain_non_finite(config, self.run, self.policy.path, lambda: self.trainer, rename=self.main)
        )
        exits.enter_context(watch_logits(self.model))  # inf/NaN logits raise NonFiniteError (explained above)
        wrap = config.use_chat_template
        self.train_rows = data_module.adapt_rows(self.raw_train_rows, self.tokenizer, use_chat_template=wrap)
        self.eval_rows = data_module.adapt_rows(self.raw_eval_rows, self.tokenizer, use_chat_template=wrap)

    def write_config(self) -> None:
        """The main process's first writes: the leftovers of a killed run removed, a fresh run's config.json."""
        if self.main:
            self.run.remove_leftovers()
            if self.fresh:  # trained in float32, whatever it was stored in
                self.run.write_config(self.config, self.policy.dtypes(self.config.autocast))

    @contextlib.contextmanager
    def logging(self) -> Iterator[None]:
        """metrics.jsonl and the loggers of ``report_to``, on the main process."""
        if not self.main:
            yield
            return
        config = self.config
        identity = RunIdentity(
            run_dir=self.run.path,
            project=config.project,
            config=json.loads(to_json(config.to_dict())),
            resumed_step=self.resumed_step if config.resume else None,
            started_ns=self.run.config.stat().st_mtime_ns if self.run.config.exists() else 0,
            tensorboard_dir=self.run.tensorboard,
        )
        sinks = open_sinks(config.report_to, identity)
        with MetricsLog(
            self.run.metrics, sinks, resumed_step=identity.resumed_step, max_steps=config.max_steps
        ) as self.log:
            yield

    def evaluate(self) -> EvalResult | None:
        """The main process evaluates (None elsewhere); the others wait for it."""
        rows = self.eval_rows
        result = _evaluate_rows(self.config, self.model, self.tokenizer, rows) if self.main else None
        self.processes.wait()
        return result

    def evaluate_before(self) -> None:
        """Read back on resume, read from `config.eval_before_file` when it was made for this run, or made."""
        if self.before is not None:
            return
        world_size = self.processes.world_size
        self.before = _shared_before(self.config, self.eval_rows, world_size) or self.evaluate()
        if self.before is not None:
            if self.config.eval_before_file and world_size == 1:
                write_shared(Path(self.config.eval_before_file), self.config, self.before)
            self.run.write_evaluation("before", self.before)
            self.log.append({mn.TRAIN_STEP: 0, **self.before.metrics})

    def reinforce(self) -> None:
        """RL: TRL's loop (`BandPOTrainer`), from the last checkpoint on resume."""
        from bandpo.training.trl_args import build_trainer  # imports TRL

        config = self.config
        reward_name = config.resolved_reward  # its worker process starts with the first reward
        self.reward = GuardedReward(
            get_verifier(reward_name).score, timeout_s=config.reward_timeout_s, name=reward_name
        )
        self.bar = progress_bar(
            self.show, total=config.max_steps, initial=self.resumed_step, desc=config.method, unit="step"
        )
        self.trainer = build_trainer(
            config,
            self.model,
            self.tokenizer,
            self.train_rows,
            self.reward,
            self.run.checkpoints,
            self.on_rl_step,
            world_size=self.processes.world_size,
        )
        if self.log is not None:
            self.log.restart_clock()
        checkpoint = str(self.checkpoint) if self.checkpoint is not None else None
        try:
            with narrow_logprob_tiles(self.model):  # same numbers, no 126 MB buffer per pass (its docstring)
                self.trainer.train(resume_from_checkpoint=checkpoint)
        finally:
            self.reward.close()
            if self.bar is not None:
                self.bar.close()

    def on_rl_step(self, rl_step: int, logs: dict[str, Any]) -> None:
        """From TRL's on_log, on every process, once per RL step."""
        config = self.config
        self.reward.check_not_all_failed(rl_step, min(REWARD_CHECK_STEPS, config.max_steps))
        self.trained = True
        if self.log is not None:
            record = self.log.record_step(rl_step, logs)
        if self.bar is not None:
            self.bar.update(rl_step - self.bar.n)
            self.bar.set_postfix(
                reward=f"{record.get(mn.TRAIN_REWARD, math.nan):.3f}",
                entropy=f"{record.get(mn.TRAIN_ENTROPY, math.nan):.3f}",
            )
        every = config.eval_every
        if every and rl_step % every == 0 and rl_step < config.max_steps:
            result = self.evaluate()
            if result is not None:
                self.log.append({mn.TRAIN_STEP: rl_step, **result.metrics})

    def save_and_evaluate_after(self) -> None:
        # the trained policy: `model` itself, or the PeftModel TRL wrapped it in (LoRA), whose folder holds
        # the adapter only and whose evaluation runs the base with its adapter
        self.model = self.trainer.model
        if self.main:
            save_pretrained_atomic(self.model, self.tokenizer, self.run.model)
        self.after = self.evaluate()
        if self.after is not None:
            self.run.write_evaluation("after", self.after)
            self.log.append({mn.TRAIN_STEP: self.config.max_steps, **self.after.metrics})

    def summarize(self) -> TrainSummary:
        """Plots, model card and summary.json from the main process; the others return what it wrote."""
        run = self.run
        if self.main:
            from bandpo.training.metrics_log import plot_run

            plot_run(run.metrics, run.plots, title=self.config.method)
            summary = self._summary()
            steps = summary.steps
            write_model_card(
                run.model, self.config, self.before, self.after, steps=steps, run_config=run.config
            )
            run.write_summary(summary.to_dict())
        self.processes.wait()  # the others return the main process's results, once they are written
        if not self.main:
            if self.eval_rows:
                self.after = run.read_evaluation("after", fix=_RERUN)
                self.before = self.before or run.read_evaluation("before", fix=_RERUN)
            summary = self._summary()
        return summary

    def _summary(self) -> TrainSummary:
        """The run's `TrainSummary`, its training records read back from metrics.jsonl."""
        records = [r for r in self.run.metrics_records() if mn.TRAIN_REWARD in r]
        return TrainSummary(
            run_dir=self.run.path,
            config=self.config,
            before=self.before,
            after=self.after,
            final_metrics=records[-1] if records else {},
            clip_by_bin=clip_by_bin(records),
            steps=int(records[-1][mn.TRAIN_STEP]) if records else 0,
            wall_time_s=time.perf_counter() - self.start,
            warmup=self.warmup_info,
            paths=self.run.as_dict(),
            world_size=self.processes.world_size,
            reward_failures=self.reward.failures(),
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
    config: TrainConfig, run: RunDir, model_path: Path, trainer: Any, *, rename: bool
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
        good, moved = set_aside_checkpoints(run.checkpoints, done, rename=rename)
        cause = f"the learning rate ({config.learning_rate:g}) is likely too high{_autocast_note(config.autocast)}"
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


def _autocast_note(mode: str) -> str:
    """The compute dtype as a second suspect when the run computes in bf16 autocast (`autocast_dtype`)."""
    dtype = autocast_dtype(mode)
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
