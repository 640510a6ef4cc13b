"""`bandpo train --model smollm2-135m-instruct --task sums` end to end, with the real model, for two steps.

The real tokenizer (49,152 tokens), its chat template, the Sums verifier, TRL's loop and the run directory,
as a user runs them (the console script in a subprocess). Two RL steps of 2 prompts x 4 samples cannot show
learning (the reward-rises benchmark, benchmarks/sums_learning.py, does); this test checks that everything a
real model touches works: exit 0, catalogued metrics, rewards the verifier agrees with, a saved model with
its chat template. About 70 s on a busy 2-core CPU (loading the 538 MB checkpoint included).

It needs the checkpoint that ``bash scripts/setup.sh`` prepares (CI runs it first). When the checkpoint is
missing the test fails, naming the command that prepares it: it is never skipped silently.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bandpo import metric_names as mn
from bandpo.training import pretrained
from bandpo.training.tasks import sums

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NAME = "smollm2-135m-instruct"


def test_bandpo_train_runs_smollm2_on_sums(tmp_path):
    if pretrained.prepared_info(NAME) is None:
        pytest.fail(
            f"{NAME} is not prepared in {pretrained.model_dir(NAME)}; run `bash scripts/setup.sh` (or "
            f"`.venv/bin/bandpo prepare-model {NAME}`) once, then rerun"
        )
    try:  # a damaged cache, or one made by an older bandpo (no manifest), says how to convert it again
        pretrained.verify_prepared(NAME)
    except ValueError as error:
        pytest.fail(str(error))
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "bandpo",
        "train",
        "--model",
        NAME,
        "--task",
        "sums",
        "--max-steps",
        "2",
        "--prompts-per-step",
        "2",
        "--num-generations",
        "4",
        "--num-iterations",
        "1",
        "--minibatches",
        "2",
        "--eval-prompts",
        "2",
        "--eval-samples",
        "4",
        "--lr",
        "1e-6",
        "--output-dir",
        str(run_dir),
        "--no-tensorboard",
        "--no-progress",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bandpo train: band on the sums task, 2 steps" in result.stdout

    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == NAME and config["task"] == "sums" and config["use_chat_template"] is True
    assert config["resolved"]["max_completion_length"] == sums.COMPLETION_LENGTH

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if mn.TRAIN_REWARD in r]
    assert [r[mn.TRAIN_STEP] for r in steps] == [1, 2]
    for record in steps:
        assert 0.0 <= record[mn.TRAIN_REWARD] <= 1.0
        assert record[mn.TRAIN_ENTROPY] > 0.0  # a real vocabulary: sampling is not deterministic
        assert {mn.CLIP_FRAC_UP, mn.BOUNDS_LOW_MEAN, mn.BOUNDS_HIGH_MEAN} <= set(record)

    before = json.loads((run_dir / "eval_before.json").read_text())
    assert len(before["prompts"]) == 2
    for prompt in before["prompts"]:
        problem = sums.parse_prompt(prompt["prompt"])  # the Sums prompt, sent as the user message
        assert prompt["answer"] == str(problem.a + problem.b)
        assert len(prompt["samples"]) == 4
        # the verifier's verdicts are the run's
        assert prompt["correct"] == [
            sums.score(prompt["prompt"], s, prompt["answer"]) == 1.0 for s in prompt["samples"]
        ]
        assert not any("<|im_start|>" in s for s in prompt["samples"])  # special tokens decoded away

    saved = run_dir / "model"
    assert (saved / "model.safetensors").is_file() and (saved / "chat_template.jinja").is_file()
    assert (run_dir / "summary.json").is_file()
