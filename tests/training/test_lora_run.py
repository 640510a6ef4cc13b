"""A LoRA run of `bandpo.training.train` on SmolLM2-135M-Instruct (``lora_r``): TRL's loop with a peft adapter.

Two RL steps of 2 prompts x 4 samples, then the last checkpoint is dropped and the run resumed from the
first. Checked: only the adapter trained (the base weights are bit-identical to the checkpoint's, every
``lora_B`` moved from its zero start), checkpoints and ``model/`` hold the adapter only, the saved adapter loads
with ``PeftModel.from_pretrained`` on the base, and the resumed run ends with the uninterrupted run's adapter.
Gradient checkpointing is on (the default with ``model``), so TRL's peft + checkpointing path runs too. Slow:
its first run alone took 249 s of CPU here, and the whole test 43 min of wall time on a 2-core Xeon shared with
other jobs (load average 10-25).

It needs the checkpoint that ``bash scripts/setup.sh`` prepares (CI runs it first); when it is missing the test
fails, naming the command that prepares it.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

pytest.importorskip("peft")

import peft
import torch
from safetensors.torch import load_file

from bandpo import metric_names as mn
from bandpo.training import pretrained, train, trl_args
from bandpo.training.config import TrainConfig
from bandpo.training.policy import load_policy

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NAME = "smollm2-135m-instruct"
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors"}
RESUME_TOLERANCE = dict(rtol=1e-5, atol=1e-7)
"""The resumed run replays the same batches from the same state; float32 kernels on the same CPU give the same
numbers, and the tolerance only allows for a reduction order that another thread count might change."""


def _config(run_dir: Any, **changes: Any) -> TrainConfig:
    return TrainConfig(
        model=NAME,
        task="sums",
        lora_r=8,
        max_steps=2,
        prompts_per_step=2,
        num_generations=4,
        num_iterations=1,
        minibatches=2,
        max_completion_length=8,
        # the entropy bonus has a gradient whatever the rewards, so the adapter moves even if every group of
        # these few samples scores alike (zero advantages)
        entropy_coef=0.01,
        learning_rate=1e-3,
        eval_prompts=1,
        eval_samples=2,
        save_every=1,
        keep_checkpoints=2,
        output_dir=str(run_dir),
        report_to=(),
        **changes,
    )


def _adapter(model: Any) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def test_a_smollm2_lora_run_trains_the_adapter_only_resumes_and_saves_it(tmp_path, monkeypatch):
    if pretrained.prepared_info(NAME) is None:
        pytest.fail(
            f"{NAME} is not prepared in {pretrained.model_dir(NAME)}; run `bash scripts/setup.sh` (or "
            f"`.venv/bin/bandpo prepare-model {NAME}`) once, then rerun"
        )
    trainers: list[Any] = []
    build_trainer = trl_args.build_trainer

    def keep_trainer(*args: Any, **kwargs: Any) -> Any:  # the real one; the test keeps what it built
        trainers.append(build_trainer(*args, **kwargs))
        return trainers[-1]

    monkeypatch.setattr(trl_args, "build_trainer", keep_trainer)
    run_dir = tmp_path / "run"
    config = _config(run_dir)
    summary = train(config, progress=False)
    assert summary.steps == 2

    # only the adapter trained: the base weights are the checkpoint's, bit for bit; every lora_B moved from 0
    policy = trainers[0].model
    assert isinstance(policy, peft.PeftModel) and trainers[0].args.gradient_checkpointing
    base = load_policy(config.policy_source, False).model
    trained = dict(policy.get_base_model().named_parameters())
    for name, weight in base.named_parameters():
        module, kind = name.rsplit(".", 1)  # peft moves a wrapped layer's weight under base_layer
        assert torch.equal(trained.get(name, trained.get(f"{module}.base_layer.{kind}")), weight), name
    adapter = _adapter(policy)
    lora_b = [name for name in adapter if "lora_B" in name]
    assert lora_b and all(adapter[name].abs().max() > 0 for name in lora_b)

    # checkpoints and model/ hold the adapter only (TRL's and peft's convention), beside the tokenizer
    saved = run_dir / "model"
    for folder in (saved, *sorted((run_dir / "checkpoints").glob("checkpoint-*"))):
        names = {path.name for path in folder.iterdir()}
        assert names >= ADAPTER_FILES and "model.safetensors" not in names, folder
        assert all("lora_" in key for key in load_file(folder / "adapter_model.safetensors")), folder
    assert (saved / "chat_template.jinja").is_file()
    # ... and it loads with peft on the base, as the policy that trained
    loaded = peft.PeftModel.from_pretrained(base, saved)
    for name, weight in _adapter(loaded).items():
        assert torch.equal(weight, adapter[name]), name
    # eval_after ran the adapted policy (its samples are saved beside eval_before's)
    after = json.loads((run_dir / "eval_after.json").read_text())
    assert len(after["prompts"]) == 1 and len(after["prompts"][0]["samples"]) == 2

    # resume from the first checkpoint: the second step again, from the adapter and optimiser stored there
    checkpoints = sorted(
        (run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])
    )
    assert [p.name for p in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    shutil.rmtree(checkpoints[-1])
    resumed = train(config.replace(resume=True), progress=False)
    assert resumed.steps == 2
    for name, weight in _adapter(trainers[1].model).items():
        torch.testing.assert_close(weight, adapter[name], **RESUME_TOLERANCE, msg=name)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r[mn.TRAIN_STEP] for r in records if mn.TRAIN_REWARD in r] == [1, 2]
