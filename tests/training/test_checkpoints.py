"""Checkpoints without private overrides: what the run relies on from the HF Trainer, pinned.

`bandpo.training.run_dir` counts a checkpoint as complete once it holds ``trainer_state.json``, and
`bandpo.training.trl_args.RunCallback` prunes old checkpoints in ``on_save``. Both rest on the HF Trainer
writing ``trainer_state.json`` after the weights, optimiser, scheduler and RNG state, and calling
``on_save`` after the whole checkpoint is written. If a transformers release changes that, these tests fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from bandpo.training.run_dir import (
    RunDir,
    checkpoint_step,
    find_last_checkpoint,
    prune_checkpoints,
)


def _tiny_trainer(tmp_path: Path, callbacks: list) -> object:
    import torch
    from transformers import Trainer, TrainingArguments

    from bandpo.training.model import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, seed=0)
    ids = tokenizer("347|019:3*4+7")["input_ids"]
    rows = [{"input_ids": ids, "labels": ids}] * 4

    def collate(batch: list[dict]) -> dict:
        return {key: torch.tensor([row[key] for row in batch]) for key in ("input_ids", "labels")}

    arguments = TrainingArguments(
        output_dir=str(tmp_path / "checkpoints"),
        per_device_train_batch_size=2,
        max_steps=2,
        save_strategy="steps",
        save_steps=1,
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    return Trainer(
        model=model, args=arguments, train_dataset=rows, data_collator=collate, callbacks=callbacks
    )


def test_hf_trainer_writes_trainer_state_last_and_calls_on_save_after(tmp_path, monkeypatch):
    from transformers import TrainerCallback, TrainerState

    seen_at_state: list[set[str]] = []
    original = TrainerState.save_to_json

    def recording_save_to_json(self, json_path: str) -> None:
        seen_at_state.append({p.name for p in Path(json_path).parent.iterdir()})
        original(self, json_path)

    monkeypatch.setattr(TrainerState, "save_to_json", recording_save_to_json)
    seen_at_on_save: list[bool] = []

    class Probe(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            seen_at_on_save.append((checkpoint / "trainer_state.json").is_file())

    _tiny_trainer(tmp_path, [Probe()]).train()
    assert len(seen_at_state) == 2 and seen_at_on_save == [True, True]
    for names in seen_at_state:  # everything else is on disk before the state is written
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= names
        assert "trainer_state.json" not in names


def _checkpoint(root: Path, step: int, *, state: str | None = '{"global_step": STEP}') -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"")
    if state is not None:
        (path / "trainer_state.json").write_text(state.replace("STEP", str(step)))
    return path


def test_torn_checkpoints_and_temporaries_are_skipped_and_removed(tmp_path):
    paths = RunDir(tmp_path / "run")
    _checkpoint(paths.checkpoints, 4)
    torn = _checkpoint(paths.checkpoints, 8, state=None)  # killed while saving
    (paths.checkpoints / ".staging-abc").mkdir()  # an older version's staging folder
    (paths.path / ".model-xyz").mkdir()  # a killed final save
    (paths.path / ".config.json-123").write_text("{")  # a killed atomic write
    keep = paths.path / ".keep-me"
    keep.write_text("")
    assert find_last_checkpoint(paths.checkpoints).name == "checkpoint-4"
    paths.remove_leftovers()
    assert not torn.exists() and not (paths.checkpoints / ".staging-abc").exists()
    assert not (paths.path / ".model-xyz").exists() and not (paths.path / ".config.json-123").exists()
    assert keep.exists()  # only what the run itself writes is removed


def test_a_corrupt_trainer_state_is_named(tmp_path):
    checkpoint = _checkpoint(tmp_path, 8, state='{"global_st')
    with pytest.raises(ValueError, match=r"checkpoint-8/trainer_state.json is not valid JSON.*delete"):
        checkpoint_step(checkpoint)
    assert checkpoint_step(_checkpoint(tmp_path, 12)) == 12


def test_pruning_keeps_the_newest_complete_checkpoints(tmp_path):
    for step in (4, 8, 12):
        _checkpoint(tmp_path, step)
    _checkpoint(tmp_path, 16, state=None)
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-12", "checkpoint-16", "checkpoint-8"]
    assert json.loads((tmp_path / "checkpoint-12" / "trainer_state.json").read_text())["global_step"] == 12
