"""The model card's base model and license, found offline from what is on disk, in the Hub's front matter.

The card of a real run (through `bandpo train`) is checked in test_run_outputs_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bandpo.training import TrainConfig
from bandpo.training.evaluate import EvalResult
from bandpo.training.model_card import base_model_of, model_card, write_model_card
from bandpo.training.pretrained import PRETRAINED, SOURCE_FILE

SMOLLM2 = PRETRAINED["smollm2-135m-instruct"]


def _folder(path: Path, config: dict | None = None, card: str | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    if card is not None:
        (path / "README.md").write_text(card)
    return path


def _front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_the_embedded_model_has_no_base_model_and_no_license():
    base = base_model_of(TrainConfig())
    assert (base.hub_id, base.license) == (None, None)


def test_a_prepared_short_names_folder_is_its_hub_model(tmp_path):
    """The folder `bandpo prepare-model` writes, given by path, is recognised by its source.json."""
    folder = _folder(tmp_path / "smollm2")
    (folder / SOURCE_FILE).write_text(json.dumps({"gguf_sha256": SMOLLM2.gguf_sha256}))
    base = base_model_of(TrainConfig(model=str(folder)))
    assert (base.hub_id, base.license) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")
    front = _front(model_card(TrainConfig(model=str(folder)), "run", None, None, steps=0))
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert front["base_model_relation"] == "finetune" and front["license"] == "apache-2.0"


def test_the_prepared_short_name_is_smollm2_on_the_hub():
    from bandpo.training.pretrained import prepared_info

    if prepared_info("smollm2-135m-instruct") is None:
        pytest.skip("smollm2-135m-instruct is not prepared here (bash scripts/setup.sh prepares it)")
    base = base_model_of(TrainConfig(model="smollm2-135m-instruct", task="sums"))
    assert (base.hub_id, base.license) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")
    assert "Q4_1 GGUF de-quantized" in base.description


def test_a_folder_in_the_hubs_cache_layout_names_its_repo_and_license(tmp_path):
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / "abc123"
    _folder(snapshot, card="---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# Qwen\n")
    base = base_model_of(TrainConfig(model=str(snapshot)))
    assert (base.hub_id, base.license) == ("Qwen/Qwen2.5-0.5B-Instruct", "apache-2.0")


def test_a_folder_whose_config_names_a_hub_id(tmp_path):
    folder = _folder(tmp_path / "mine", config={"_name_or_path": "meta-llama/Llama-3.2-1B"})
    assert base_model_of(TrainConfig(model=str(folder))).hub_id == "meta-llama/Llama-3.2-1B"


def test_an_unknown_local_folder_has_no_base_model(tmp_path):
    folder = _folder(tmp_path / "mine", config={"_name_or_path": str(tmp_path / "mine")})
    base = base_model_of(TrainConfig(model=str(folder)))
    assert (base.hub_id, base.license) == (None, None)
    front = _front(model_card(TrainConfig(model=str(folder)), "run", None, None, steps=0))
    assert "base_model" not in front and "license" not in front


def test_the_card_is_written_whole_with_its_evaluation(tmp_path):
    before = EvalResult(metrics={"eval/mean_at_k": 0.25, "eval/pass_at_k": 0.5}, k=4)
    after = EvalResult(metrics={"eval/mean_at_k": 0.375, "eval/pass_at_k": 0.75}, k=4)
    model_dir = tmp_path / "my-run" / "model"
    model_dir.mkdir(parents=True)
    path = write_model_card(model_dir, TrainConfig(method="clip", eps_high=0.28), before, after, steps=3)
    assert sorted(p.name for p in model_dir.iterdir()) == ["README.md", "bandpo_config.json"]
    assert TrainConfig.from_dict(json.loads((model_dir / "bandpo_config.json").read_text())).method == "clip"
    text = path.read_text(encoding="utf-8")
    front = _front(text)
    assert front["model_name"] == "my-run" and "clip" in front["tags"]
    assert "| `eval/mean_at_k` | 0.25 | 0.375 |" in text and "| eps_high | 0.28 |" in text
    assert "| RL steps | 3 of 250 |" in text
    assert "hf upload USER/REPO RUN_DIR/model" in text


def test_a_run_without_held_out_prompts_says_so():
    text = model_card(TrainConfig(), "run", None, None, steps=1)
    assert "No held-out prompts: the run was not evaluated." in text


def test_a_lora_runs_card_is_a_peft_adapter_of_its_base(tmp_path):
    folder = _folder(tmp_path / "base", {"model_type": "llama", "_name_or_path": "my-org/my-base"})
    lora = model_card(TrainConfig(model=str(folder), task="sums", lora_r=8), "run", None, None, steps=1)
    full = model_card(TrainConfig(model=str(folder), task="sums"), "run", None, None, steps=1)
    assert _front(lora)["base_model"] == _front(full)["base_model"] == "my-org/my-base"
    assert (_front(lora)["library_name"], _front(lora)["base_model_relation"]) == ("peft", "adapter")
    assert (_front(full)["library_name"], _front(full)["base_model_relation"]) == ("transformers", "finetune")
    assert "lora" in _front(lora)["tags"] and "lora" not in _front(full)["tags"]
    assert "AutoPeftModelForCausalLM" in lora and "AutoPeftModelForCausalLM" not in full
