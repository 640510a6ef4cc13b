"""A user's own checkpoint (``--model DIR``), as a user would bring it: small random Llama/Qwen2 folders and a
BertModel saved by transformers here, with the character tokenizer (nothing downloaded).

What it gets (issue 25): float32 master weights whatever the checkpoint's dtype, and the dtypes recorded; no
code from the folder ever runs; missing, unexpected or newly initialised weights and non-causal-LM folders
refused before any write; a tokenizer without an end-of-sequence token refused; non-finite logits (weights that
overflow, a run that diverges) end the run with one line and the last good checkpoint named. The long runs use
real ``bandpo train`` processes (marked slow: about a minute each on a 2-core machine).
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bandpo.cli import main

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
safetensors_torch = pytest.importorskip("safetensors.torch")

SMALL = ["--prompts-per-step", "4", "--num-generations", "2", "--minibatches", "2", "--num-iterations", "1"]
SMALL += ["--eval-prompts", "2", "--eval-samples", "1", "--max-completion-length", "4", "--no-progress"]


def _tokenizer():
    from bandpo.training.model import build_char_tokenizer

    return build_char_tokenizer()


def _llama_folder(folder: Path, *, dtype=torch.float32, tie: bool = False, seed: int = 0) -> Path:
    """A random 2-layer Llama (untied unless `tie`) saved by transformers in `dtype`, with its tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _one_line_error(argv: list[str], capsys, command: str = "train") -> str:
    capsys.readouterr()  # what building the folder printed (transformers' save progress bar)
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"bandpo {command}: error:"), err
    return err


def _run_cli(argv: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bandpo", *argv], capture_output=True, text=True, timeout=timeout, **kwargs
    )


# --- 1. float32 master weights whatever the checkpoint's dtype ------------------------------------------


@pytest.mark.slow
def test_a_bf16_checkpoint_trains_float32_master_weights_and_records_both_dtypes(tmp_path):
    model_dir = _llama_folder(tmp_path / "bf16", dtype=torch.bfloat16)
    stored = safetensors_torch.load_file(model_dir / "model.safetensors")
    assert {tensor.dtype for tensor in stored.values()} == {torch.bfloat16}
    run_dir = tmp_path / "run"
    argv = ["train", "--model", str(model_dir), "--output-dir", str(run_dir), "--max-steps", "2"]
    argv += ["--learning-rate", "1e-6", "--entropy-coef", "0.01", "--kl-coef", "0.001", *SMALL]
    done = _run_cli(argv)
    assert done.returncode == 0, done.stderr[-2000:]
    trained = safetensors_torch.load_file(run_dir / "model" / "model.safetensors")
    assert {tensor.dtype for tensor in trained.values()} == {torch.float32}
    total = sum(tensor.numel() for tensor in stored.values())
    changed = sum(int((trained[name] != tensor.float()).sum()) for name, tensor in stored.items())
    # at lr 1e-6 a bf16 weight (resolution 2^-8 of its size) would keep its value: nearly all must move
    assert changed > 0.9 * total, f"{changed} of {total} weights changed"
    resolved = json.loads((run_dir / "config.json").read_text())["resolved"]
    assert resolved["weights_dtype"] == "float32" and resolved["checkpoint_dtype"] == "bfloat16"
    from bandpo.training.policy import autocast_dtype

    assert resolved["autocast_dtype"] == autocast_dtype()  # bf16 where the device has bf16 units, else null
    assert json.loads((run_dir / "model" / "config.json").read_text())["dtype"] == "float32"


def test_the_reference_model_is_float32_too_and_autocast_follows_the_device(tmp_path):
    from bandpo.training import TrainConfig
    from bandpo.training.policy import autocast_dtype, load_policy
    from bandpo.training.rewards import GuardedReward, get_verifier
    from bandpo.training.trl_args import build_trainer

    model_dir = _llama_folder(tmp_path / "fp16", dtype=torch.float16)
    config = TrainConfig(
        model=str(model_dir), kl_coef=0.001, max_steps=1, prompts_per_step=4, num_generations=2
    )
    policy = load_policy(config.policy_source, progress=False)
    assert policy.model.dtype == torch.float32 and policy.checkpoint_dtype == "float16"
    reward = GuardedReward(get_verifier("countdown").score, timeout_s=10, name="countdown")
    try:
        trainer = build_trainer(
            config, policy.model, policy.tokenizer, [], reward, tmp_path / "ckpt", lambda step, logs: None
        )
    finally:
        reward.close()
    assert trainer.ref_model is not None and trainer.ref_model.dtype == torch.float32
    # TRL's own default is bf16=True on every device
    assert trainer.args.bf16 == (autocast_dtype() == "bfloat16") and not trainer.args.fp16


@pytest.mark.parametrize(("mode", "bf16"), [("bf16", True), ("off", False)])
def test_the_autocast_setting_overrides_the_device(tmp_path, mode, bf16):
    """``autocast`` bf16 / off: TRL's mixed precision follows the setting on any CPU (a run's numbers depend
    on it: docs/results.md), and a run's config.json records the dtype it computed in."""
    run_dir = tmp_path / "run"
    argv = ["train", "--output-dir", str(run_dir), "--max-steps", "1", "--autocast", mode, *SMALL]
    done = _run_cli(argv)
    assert done.returncode == 0, done.stderr[-2000:]
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["autocast"] == mode
    assert stored["resolved"]["autocast_dtype"] == ("bfloat16" if bf16 else None)
    from bandpo.training import TrainConfig
    from bandpo.training.trl_args import trl_arguments

    assert trl_arguments(TrainConfig(autocast=mode), tmp_path / "ckpt").bf16 is bf16


def test_bandpo_tokens_samples_float32_weights_of_a_bf16_checkpoint(tmp_path):
    model_dir = _llama_folder(tmp_path / "bf16", dtype=torch.bfloat16)
    out = tmp_path / "tokens"
    argv = ["tokens", "--model", str(model_dir), "--prompts", "2", "--samples", "2", "--max-new-tokens", "4"]
    assert main([*argv, "--output-dir", str(out), "--methods", "clip"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["weights_dtype"] == "float32" and report["checkpoint_dtype"] == "bfloat16"


# --- 2. no code from a model folder, ever -------------------------------------------------------------


def _folder_with_code(folder: Path, marker: Path, *, model_type: str) -> Path:
    """A tiny Llama folder whose config.json maps the Auto classes to a .py file that writes `marker`."""
    _llama_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {
        "AutoConfig": "custom_model.CustomConfig",
        "AutoModelForCausalLM": "custom_model.CustomForCausalLM",
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom_model.py").write_text(f"open({str(marker)!r}, 'w').write('the folder ran its code')\n")
    return folder


@pytest.mark.slow
def test_a_folder_needing_its_own_code_is_refused_even_when_a_terminal_answers_yes(tmp_path):
    marker = tmp_path / "MARKER"
    model_dir = _folder_with_code(tmp_path / "custom", marker, model_type="bandpo_custom_arch")
    run_dir = tmp_path / "run"
    controller, terminal = pty.openpty()  # stdin is a terminal: transformers would ask "run the custom code?"
    try:
        os.write(controller, b"y\ny\ny\n")
        done = _run_cli(
            ["train", "--model", str(model_dir), "--output-dir", str(run_dir), "--max-steps", "1", *SMALL],
            stdin=terminal,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert not marker.exists(), "the model folder's Python code ran"
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert str(model_dir) in err and "never runs code from a model folder" in err and "auto_map" in err
    assert not run_dir.exists()


def test_an_auto_map_beside_a_known_architecture_loads_transformers_own_class(tmp_path):
    from bandpo.training import TrainConfig
    from bandpo.training.policy import load_policy

    marker = tmp_path / "MARKER"
    model_dir = _folder_with_code(tmp_path / "llama", marker, model_type="llama")
    policy = load_policy(TrainConfig(model=str(model_dir)).policy_source, progress=False)
    assert type(policy.model).__name__ == "LlamaForCausalLM"
    assert not marker.exists()


def test_an_unknown_architecture_without_code_is_one_line(tmp_path, capsys):
    model_dir = _llama_folder(tmp_path / "model")
    config = json.loads((model_dir / "config.json").read_text())
    config["model_type"] = "no_such_arch"
    (model_dir / "config.json").write_text(json.dumps(config))
    err = _one_line_error(["--model", str(model_dir), "--output-dir", str(tmp_path / "r"), *SMALL], capsys)
    assert "model_type 'no_such_arch' is not an architecture transformers" in err
    assert not (tmp_path / "r").exists()


# --- 4. no weight filled with random values -----------------------------------------------------------


def test_an_untied_model_without_its_lm_head_is_refused_before_any_write(tmp_path, capsys):
    model_dir = _llama_folder(tmp_path / "model")
    weights = safetensors_torch.load_file(model_dir / "model.safetensors")
    del weights["lm_head.weight"]
    safetensors_torch.save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    run_dir = tmp_path / "run"
    err = _one_line_error(["--model", str(model_dir), "--output-dir", str(run_dir), *SMALL], capsys)
    assert "1 weight(s) missing from the checkpoint" in err and "lm_head.weight" in err
    assert not run_dir.exists()


def test_a_bert_model_folder_is_refused_before_any_write(tmp_path, capsys):
    from transformers import BertConfig, BertModel

    tokenizer = _tokenizer()
    model_dir = tmp_path / "bert"
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    run_dir = tmp_path / "run"
    err = _one_line_error(["--model", str(model_dir), "--output-dir", str(run_dir), *SMALL], capsys)
    assert "holds a BertModel, not a causal language model" in err and "AutoModelForCausalLM" in err
    assert not run_dir.exists()


def test_weights_the_config_does_not_describe_are_refused(tmp_path, capsys):
    model_dir = _llama_folder(tmp_path / "model")
    config = json.loads((model_dir / "config.json").read_text())
    config["num_hidden_layers"] = 1  # the weights hold two layers
    (model_dir / "config.json").write_text(json.dumps(config))
    err = _one_line_error(["--model", str(model_dir), "--output-dir", str(tmp_path / "r"), *SMALL], capsys)
    assert "in the checkpoint but not in the model its config.json describes" in err and "layers.1" in err


# --- 6. one line where a traceback was ----------------------------------------------------------------


def test_a_tokenizer_without_eos_or_pad_is_refused_at_load(tmp_path, capsys):
    # a Llama folder: its tokenizer class adds no default tokens (Qwen2's would add <|endoftext|>)
    model_dir = _llama_folder(tmp_path / "model")
    path = model_dir / "tokenizer_config.json"
    values = json.loads(path.read_text())
    del values["eos_token"], values["pad_token"]
    path.write_text(json.dumps(values))
    run_dir = tmp_path / "run"
    err = _one_line_error(["--model", str(model_dir), "--output-dir", str(run_dir), *SMALL], capsys)
    assert "no end-of-sequence token (nor a padding token)" in err and "eos_token" in err
    assert not run_dir.exists()


def _overflowing_folder(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny model with its final norm weight at 3e38: every weight finite, the logits not."""
    shutil.copytree(tiny_model_dir, folder)
    weights = safetensors_torch.load_file(folder / "model.safetensors")
    weights["model.norm.weight"] = torch.full_like(weights["model.norm.weight"], 3e38)
    safetensors_torch.save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("command", ["train", "tokens"])
def test_finite_weights_that_overflow_are_one_line_before_any_write(
    tiny_model_dir, tmp_path, capsys, command
):
    model_dir = _overflowing_folder(tiny_model_dir, tmp_path / "model")
    out = tmp_path / "out"
    argv = ["--model", str(model_dir), "--output-dir", str(out)]
    argv += SMALL if command == "train" else ["--prompts", "2", "--samples", "2", "--max-new-tokens", "4"]
    err = _one_line_error(argv, capsys, command=command)
    assert "weights are finite but its logits are not" in err and "3e38" in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("learning_rate", "found", "good"),
    [("2e5", "grad norm", "checkpoint-1"), ("1e12", "logits", None)],
    ids=["gradient-norm-in-the-logs", "logits-while-sampling"],
)
def test_a_run_that_diverges_ends_in_one_line_naming_the_step_and_the_last_good_checkpoint(
    tmp_path, learning_rate, found, good
):
    # Adam moves every weight by about the learning rate per step: at 2e5 the step-1 weights still give finite
    # logits but an infinite gradient norm at step 2 (caught in the logs before checkpoint-2 is written); at
    # 1e12 the step-1 weights overflow while sampling step 2 (caught in the forward pass). The entropy bonus
    # gives a gradient while every reward of the random model is 0.
    model_dir = _llama_folder(tmp_path / "model")
    run_dir = tmp_path / "run"
    argv = ["train", "--model", str(model_dir), "--output-dir", str(run_dir), "--max-steps", "6"]
    argv += ["--save-every", "1", "--learning-rate", learning_rate, "--entropy-coef", "0.01"]
    # one optimiser step per RL step, so the step-1 checkpoint is the update that diverged (its config warning
    # that every method is then identical is silenced: this test is about the error line)
    quiet = {**os.environ, "PYTHONWARNINGS": "ignore::UserWarning"}
    done = _run_cli([*argv, *SMALL, "--minibatches", "1"], env=quiet)
    assert done.returncode == 2, done.stderr[-3000:]
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(
        f"bandpo train: error: training diverged at RL step 2: the policy's {found} became "
    )
    assert f"learning rate ({float(learning_rate):g}) is likely too high" in err
    checkpoints = run_dir / "checkpoints"
    from bandpo.training.run_dir import find_last_checkpoint

    if good is None:
        assert "no checkpoint precedes it" in err and "diverged-checkpoint-1" in err
        assert (checkpoints / "diverged-checkpoint-1" / "trainer_state.json").is_file()  # kept, set aside
        assert find_last_checkpoint(checkpoints) is None  # --resume does not start from diverged weights
        return
    named = Path(err.split("the last good checkpoint (finite weights and logits) is ")[1].split(":")[0])
    assert named == checkpoints / good and find_last_checkpoint(checkpoints) == named
    weights = safetensors_torch.load_file(named / "model.safetensors")
    assert all(bool(torch.isfinite(tensor).all()) for tensor in weights.values())
    assert not (checkpoints / "checkpoint-2").exists()  # the diverged step was never saved


def test_a_non_finite_loss_or_gradient_norm_in_the_logs_stops_the_run():
    from bandpo.training.finite import NonFiniteError, check_finite_logs

    check_finite_logs({"loss": 0.5, "grad_norm": 1.0, "reward": float("nan")}, 3)  # only loss and norm count
    for key in ("loss", "grad_norm"):
        with pytest.raises(NonFiniteError, match="non-finite") as caught:
            check_finite_logs({"loss": 0.5, "grad_norm": 1.0, key: float("inf")}, 3)
        assert caught.value.rl_step == 3
