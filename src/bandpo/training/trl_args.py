"""The TRL side of a run: `BandPOTrainer`'s arguments for a `TrainConfig`, and the callback that ties the
trainer to the run directory.

Everything here goes through the HF Trainer's public hooks: `RunCallback` forces a checkpoint at the last
step, prunes old checkpoints after each save (``on_save``), and hands each RL step's logs to the run
(``on_log``) once their loss and gradient norm are found finite (a NaN stops the run before that step's
checkpoint is written: the HF Trainer logs before it saves); `RunTrainer` only turns off TRL's Hub model
card (a public method). Importing this module imports TRL.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import TrainerCallback

from bandpo.integrations.trl import BandPOConfig, BandPOTrainer
from bandpo.integrations.trl_names import AGG_TO_LOSS_TYPE
from bandpo.training import data as data_module
from bandpo.training._atomic import use_umask
from bandpo.training.config import TrainConfig
from bandpo.training.finite import check_finite_logs
from bandpo.training.lora import lora_config
from bandpo.training.policy import autocast_dtype
from bandpo.training.processes import silence
from bandpo.training.rewards import GuardedReward
from bandpo.training.run_dir import prune_checkpoints

__all__ = ["RunCallback", "RunTrainer", "build_trainer", "grpo_arguments", "trl_arguments"]


def trl_arguments(config: TrainConfig, checkpoint_dir: Path, *, world_size: int = 1) -> BandPOConfig:
    """TRL's arguments for `config`, run by `world_size` processes (torchrun / accelerate launch).

    TRL's units: a micro-batch of ``resolved_micro_batch_size`` completions per forward/backward pass,
    ``gradient_accumulation_steps`` of them per optimiser step (one minibatch), ``minibatches × that`` per
    generation batch (``steps_per_generation``), each generation batch used ``num_iterations`` times: so
    ``minibatches × num_iterations`` optimiser steps per RL step, whatever the micro-batch size. TRL's
    ``global_step`` counts optimiser steps, hence ``max_steps``, ``logging_steps`` and ``save_steps`` in
    multiples of ``optimizer_steps_per_rl_step``. With several processes each micro-batch is split between
    them (TRL's batch sizes are per process), so the RL step and its optimiser steps stay those of one process.
    """
    with warnings.catch_warnings():
        # TrainConfig already warned about a one-optimiser-step schedule; BandPOConfig would repeat it
        warnings.filterwarnings("ignore", message="every method is identical", category=UserWarning)
        return BandPOConfig(
            method=config.method,
            method_params=config.method_params,
            built_method=config.bound_method(),  # built and checked once, by TrainConfig
            dual_clip_c=config.dual_clip_c,
            **grpo_arguments(config, checkpoint_dir, world_size=world_size),
        )


def grpo_arguments(config: TrainConfig, checkpoint_dir: Path, *, world_size: int = 1) -> dict[str, Any]:
    """The `GRPOConfig` fields of `trl_arguments` (everything but the bound method and the dual clip), so a
    stock `GRPOTrainer` can run with the same settings (benchmarks/trl_overhead.py)."""
    opt_steps = config.optimizer_steps_per_rl_step
    accumulation = config.gradient_accumulation_steps
    return dict(
        output_dir=str(checkpoint_dir),
        run_name=checkpoint_dir.resolve().parent.name,  # the run directory's name, as the loggers call it
        loss_type=AGG_TO_LOSS_TYPE[config.agg],
        beta=config.kl_coef,
        use_bias_correction_kl=False,  # the paper's plain k3 (TRL 1.16 defaults to True)
        entropy_coef=config.entropy_coef,
        scale_rewards=config.scale_rewards,
        temperature=config.temperature,
        top_p=1.0,
        top_k=0,
        max_completion_length=config.resolved_max_completion_length,
        num_generations=config.num_generations,
        per_device_train_batch_size=config.resolved_micro_batch_size // world_size,
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
        # dropout makes the sampling policy's log-probabilities differ from the update's (a ratio != 1 on the
        # tokens just sampled); it stays on only where the user asked for LoRA dropout (it disables that too)
        disable_dropout=not (config.lora and config.lora_dropout > 0),
        use_cpu=not torch.cuda.is_available(),
        # float32 master weights (the loaded policy's); bf16 autocast as the `autocast` setting says, by default
        # only where the device has bf16 units: TRL's own default is bf16=True everywhere
        # (`bandpo.training.policy.autocast_dtype` says why not)
        bf16=autocast_dtype(config.autocast) == "bfloat16",
        fp16=False,
        trust_remote_code=False,  # also for the reference model TRL loads from the policy's folder
        # TRL defaults to recomputing activations in the backward pass, which only saves memory; the
        # embedded model's activations are a few MB, so it only cost a forward pass per update (same numbers)
        gradient_checkpointing=(
            config.model is not None
            if config.gradient_checkpointing is None
            else config.gradient_checkpointing
        ),
        dataloader_num_workers=0,
        shuffle_dataset=True,
        remove_unused_columns=False,
    )


class RunTrainer(BandPOTrainer):
    """`BandPOTrainer` without the Hub model card TRL writes beside every checkpoint (runs are offline)."""

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        return None


class RunCallback(TrainerCallback):
    """Checkpoints on RL-step boundaries (the last step always), keeps the newest, reports each RL step.

    Args:
        opt_steps: optimiser steps per RL step (TRL's ``global_step`` counts optimiser steps).
        keep_checkpoints: complete checkpoints kept after each save.
        on_rl_step: called as ``on_rl_step(rl_step, logs)`` with TRL's logs of each finished RL step.
    """

    def __init__(
        self, opt_steps: int, keep_checkpoints: int, on_rl_step: Callable[[int, dict[str, Any]], None]
    ) -> None:
        self.opt_steps = opt_steps
        self.keep_checkpoints = keep_checkpoints
        self.on_rl_step = on_rl_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step >= state.max_steps:
            control.should_save = True  # always checkpoint the last step
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.is_world_process_zero:  # the process that writes checkpoints (one of several: the main one)
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():  # safetensors writes its files 0600: readable as the umask allows
                use_umask(checkpoint)
            prune_checkpoints(Path(args.output_dir), self.keep_checkpoints)
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs or "train_runtime" in logs or state.global_step % self.opt_steps:
            return
        rl_step = state.global_step // self.opt_steps
        check_finite_logs(logs, rl_step)  # raises before this step's checkpoint is saved
        self.on_rl_step(rl_step, logs)


def build_trainer(
    config: TrainConfig,
    model: Any,
    tokenizer: Any,
    train_rows: list[data_module.PromptRow],
    reward: GuardedReward,
    checkpoint_dir: Path,
    on_rl_step: Callable[[int, dict[str, Any]], None],
    *,
    world_size: int = 1,
) -> RunTrainer:
    """The trainer of one run: `train_rows` in order, `reward` as TRL's reward function, no printing.

    With ``lora_r`` TRL wraps `model` in a LoRA adapter (``peft_config``, `bandpo.training.lora`): the
    trainer's ``model`` is then the `peft.PeftModel`, whose ``save_pretrained`` writes the adapter only.
    """
    dataset = Dataset.from_list([{"prompt": r.prompt, "answer": r.answer} for r in train_rows])
    trainer = RunTrainer(
        model=model,
        reward_funcs=[reward],
        args=trl_arguments(config, checkpoint_dir, world_size=world_size),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=[RunCallback(config.optimizer_steps_per_rl_step, config.keep_checkpoints, on_rl_step)],
    )
    silence(trainer)
    return trainer
