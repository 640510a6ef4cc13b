"""The model card of a run's ``model/`` folder: ``README.md`` with the Hugging Face Hub's YAML front matter.

With it the folder is what ``hf upload USER/REPO RUN_DIR/model`` (``huggingface-cli upload`` in older
``huggingface_hub``) needs: weights, config, tokenizer and card. The card follows the Hub's conventions
(its metadata keys, as TRL's trainers write them): ``base_model`` (a Hub id, only when it is known:
a short name's source, a folder in the Hub's cache layout or whose config names one; never for the embedded
tiny model, which bandpo builds), ``base_model_relation: finetune``, ``library_name: transformers``,
``license`` (only where the base model states one), ``pipeline_tag``, ``tags`` (bandpo, the method, grpo,
trl, reinforcement-learning) and ``model_name``. The body gives the method and its parameters, the data,
the held-out evaluation before and after training, and the framework versions; ``bandpo_config.json``
beside it holds the run's settings (its config.json, a valid ``bandpo train --config``). Written offline
(nothing is looked up on the Hub) and atomically.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from bandpo.training._atomic import write_text_atomic
from bandpo.training.config import TrainConfig
from bandpo.training.evaluate import EvalResult
from bandpo.training.pretrained import PRETRAINED, SOURCE_FILE
from bandpo.training.run_dir import to_json

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "PAPER",
    "BaseModel",
    "base_model_of",
    "model_card",
    "write_model_card",
]

PAPER = "https://arxiv.org/abs/2603.04918"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_CACHE = re.compile(r"models--([\w.-]+)--([\w.-]+)$")
CARD_FILE = "README.md"
CONFIG_FILE = "bandpo_config.json"  # the run's config.json, beside the card (the model's config.json is HF's)


class BaseModel:
    """What the card says about the model a run started from.

    Attributes:
        hub_id: its Hub id (``HuggingFaceTB/SmolLM2-135M-Instruct``), None when unknown or none exists.
        license: its license as a Hub identifier (``apache-2.0``), None when it states none.
        description: one phrase for the card's text.
    """

    def __init__(self, hub_id: str | None, license: str | None, description: str) -> None:
        self.hub_id = hub_id
        self.license = license
        self.description = description


def _front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a model card ({} when there is none or it does not parse)."""
    import yaml

    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def base_model_of(config: TrainConfig) -> BaseModel:
    """The base model of `config`'s run, from what is on disk (no network): a short name's `PRETRAINED`
    source (also a prepared folder given by path, recognised by its ``source.json``), a folder in the Hub's
    cache layout (``models--ORG--NAME/snapshots/...``), or one whose config.json names a Hub id; its license
    from the source or the folder's own card."""
    if config.model is None:
        return BaseModel(None, None, "the embedded tiny model (built and warmed up by bandpo)")
    source = PRETRAINED.get(config.model)
    folder = Path(config.model).expanduser()
    if source is None and (folder / SOURCE_FILE).is_file():
        recorded = _read_json(folder / SOURCE_FILE).get("gguf_sha256")
        source = next((s for s in PRETRAINED.values() if s.gguf_sha256 == recorded), None)
    if source is not None:
        link = f"[{source.hub_id}](https://huggingface.co/{source.hub_id})"
        return BaseModel(source.hub_id, source.license.lower(), f"{link} ({source.description})")
    card = (
        _front_matter((folder / CARD_FILE).read_text(encoding="utf-8"))
        if (folder / CARD_FILE).is_file()
        else {}
    )
    license = card.get("license") if isinstance(card.get("license"), str) else None
    hub_id = None
    for part in (folder.resolve(), *folder.resolve().parents):
        match = _HUB_CACHE.search(part.name)
        if match:
            hub_id = f"{match.group(1)}/{match.group(2)}"
            break
    if hub_id is None:
        model_config = _read_json(folder / "config.json")
        for key in ("_name_or_path", "_model_name_or_path"):
            name = model_config.get(key)
            if isinstance(name, str) and _HUB_ID.match(name) and not Path(name).expanduser().exists():
                hub_id = name
                break
    description = (
        f"[{hub_id}](https://huggingface.co/{hub_id})" if hub_id else f"the local checkpoint {folder.name}"
    )
    return BaseModel(hub_id, license, description)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _evaluation_table(before: EvalResult | None, after: EvalResult | None) -> list[str]:
    if before is None and after is None:
        return ["No held-out prompts: the run was not evaluated."]
    keys = list(dict.fromkeys([*(before.metrics if before else {}), *(after.metrics if after else {})]))
    lines = ["| metric | before | after |", "| --- | --- | --- |"]
    for key in keys:
        first = before.metrics.get(key) if before else None
        last = after.metrics.get(key) if after else None
        lines.append(f"| `{key}` | {_number(first)} | {_number(last)} |")
    return lines


def model_card(
    config: TrainConfig,
    run_name: str,
    before: EvalResult | None,
    after: EvalResult | None,
    *,
    steps: int,
) -> str:
    """The text of the card (front matter and body) for a run named `run_name` that trained `steps` steps."""
    import yaml

    from bandpo import __version__

    base = base_model_of(config)
    front: dict[str, Any] = {}
    if base.hub_id:
        front["base_model"] = base.hub_id
        front["base_model_relation"] = "adapter" if config.lora else "finetune"
    # a LoRA run's folder holds a peft adapter (the Hub's convention: library_name peft, a lora tag)
    front["library_name"] = "peft" if config.lora else "transformers"
    if base.license:
        front["license"] = base.license
    front["model_name"] = run_name
    front["pipeline_tag"] = "text-generation"
    tags = [
        "bandpo",
        config.method,
        "grpo",
        "trl",
        "reinforcement-learning",
        *(["lora"] if config.lora else []),
    ]
    front["tags"] = list(dict.fromkeys(tags))
    data = (
        f"the embedded {config.task} task (generated by bandpo, seed {config.seed})"
        if config.dataset is None
        else f"the local file `{Path(config.dataset).name}` (columns `{config.prompt_column}` and "
        f"`{config.answer_column}`)"
    )
    k = (after or before).k if (after or before) else config.eval_samples
    method_rows = {"method": config.method, **config.method_params}
    training_rows = {
        "aggregation": config.agg,
        "dual_clip_c": "off" if config.dual_clip_c is None else config.dual_clip_c,
        "kl_coef": config.kl_coef,
        "entropy_coef": config.entropy_coef,
        "scale_rewards": config.scale_rewards,
        "RL steps": f"{steps} of {config.max_steps}",
        "prompts_per_step x num_generations": f"{config.prompts_per_step} x {config.num_generations}",
        "num_iterations x minibatches": f"{config.num_iterations} x {config.minibatches}",
        "learning_rate": config.learning_rate,
        "temperature": config.temperature,
        "max_completion_length": config.resolved_max_completion_length,
        "seed": config.seed,
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {run_name}",
        "",
        f"This model is {base.description}, trained with reinforcement learning by bandpo {__version__} "
        f"(BandPO: Band-constrained Policy Optimization, [arXiv:2603.04918]({PAPER})) through TRL's "
        f"GRPOTrainer, with the `{config.method}` bound method. Every setting of the run is in "
        f"`{CONFIG_FILE}` beside this card (the run's config.json: `bandpo train --config {CONFIG_FILE} "
        "--output-dir NEW_RUN` trains it again).",
        "",
        "## Method",
        "",
        "| parameter | value |",
        "| --- | --- |",
        *(f"| {name} | {_number(value)} |" for name, value in {**method_rows, **training_rows}.items()),
        "",
        "## Data",
        "",
        f"Training prompts: {data}; reward: the `{config.resolved_reward}` verifier"
        f"{', prompts wrapped in the chat template' if config.use_chat_template and config.model else ''}. "
        f"Held-out evaluation: {config.eval_prompts} prompts never trained on, {k} samples each.",
        "",
        "## Evaluation",
        "",
        f"Held-out prompts before and after training (k = {k}; the metric names are bandpo's, "
        "`bandpo.metric_names`):",
        "",
        *_evaluation_table(before, after),
        "",
        "## Use",
        "",
        *_use_lines(config),
        "",
        "To publish this folder: `hf auth login` (a token with write access), then "
        "`hf upload USER/REPO RUN_DIR/model` (`huggingface-cli upload` in older huggingface_hub).",
        "",
        "## Framework versions",
        "",
        f"- bandpo: {__version__}",
        *(f"- {name}: {_version(name)}" for name in ("trl", "transformers", "torch")),
        "",
    ]
    return "\n".join(lines)


def _use_lines(config: TrainConfig) -> list[str]:
    """How to load the folder: a full model with transformers, a LoRA adapter with peft on its base."""
    if config.lora:
        return [
            f"This folder holds a LoRA adapter (r = {config.lora_r}); load it on its base model with peft:",
            "",
            "```python",
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            'model = AutoPeftModelForCausalLM.from_pretrained("PATH_OR_REPO")  # .merge_and_unload() to merge',
            'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")',
            "```",
        ]
    return [
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO")',
        'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")',
        "```",
    ]


def write_model_card(
    model_dir: Path,
    config: TrainConfig,
    before: EvalResult | None,
    after: EvalResult | None,
    *,
    steps: int,
    run_config: Path | None = None,
) -> Path:
    """Write ``README.md`` and ``bandpo_config.json`` (the run's settings, as config.json holds them) into
    `model_dir`, each atomically; returns the card's path. The run name is the run directory's, the folder
    above `model_dir`.

    `run_config` is the run's config.json, copied as it is (its resolved block holds what only the run knew,
    such as the dtypes); without it the settings are written from `config`."""
    text = run_config.read_text() if run_config is not None else to_json(config.to_dict(), indent=2)
    write_text_atomic(model_dir / CONFIG_FILE, text)
    path = model_dir / CARD_FILE
    write_text_atomic(path, model_card(config, model_dir.resolve().parent.name, before, after, steps=steps))
    return path
