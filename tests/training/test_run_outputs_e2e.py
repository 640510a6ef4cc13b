"""End-to-end through `bandpo train` (a subprocess, the embedded tiny model, 2 RL steps): what a run gives
the tools around it.

- ``--report-to tensorboard trackio wandb``: Trackio's local store (``TRACKIO_DIR``) and W&B's offline run
  (``WANDB_MODE=offline``) hold every record of metrics.jsonl, at its RL step, under its catalogued name,
  in the project and run named by the run.
- ``--config``: a YAML file sets the run; the run's own config.json, given back as ``--config`` (a flag
  overriding it), trains the same run again: same settings, same metrics.
- the model card: model/README.md's front matter parses (PyYAML and huggingface_hub's own parser) and
  matches the run's config and evaluation files.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from bandpo import metric_names as mn
from bandpo.training.metrics_log import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TIME_KEYS = (mn.TRAIN_STEP_TIME, "trl/step_time")
PROJECT = "bandpo-e2e"
SMALL_YAML = """\
# the smallest run that trains: 2 RL steps of 8 prompts x 4 samples, a short warm-up
max_steps: 2
prompts_per_step: 8
num_generations: 4
num_iterations: 2
minibatches: 2
learning_rate: 1e-3          # YAML 1.2: a number
save_every: 2
eval_prompts: 16
eval_samples: 4
warmup_max_steps: 30
report_to: [tensorboard, trackio, wandb]
project: {project}
cache_dir: {cache}
"""


def _train(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bandpo", "train", "--no-progress", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,  # no terminal: no library asks a question
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run with three loggers, and a second run from its config.json (no loggers: a flag)."""
    pytest.importorskip("trackio")
    pytest.importorskip("wandb")
    root = tmp_path_factory.mktemp("outputs")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WANDB_", "TRACKIO_"))}
    env.update(TRACKIO_DIR=str(root / "trackio"), WANDB_MODE="offline", WANDB_SILENT="true")
    config_file = root / "small.yaml"
    config_file.write_text(SMALL_YAML.format(project=PROJECT, cache=root / "cache"))
    first = _train(["--config", str(config_file), "--output-dir", "band-run"], env, root)
    assert first.returncode == 0, first.stderr[-3000:]
    again = _train(
        ["--config", "band-run/config.json", "--output-dir", "band-again", "--report-to", "none"], env, root
    )
    assert again.returncode == 0, again.stderr[-3000:]
    return root


def test_a_logger_that_cannot_start_is_one_line_and_leaves_no_run(run):
    """W&B online without a login (a fresh HOME, no WANDB_* variables, no terminal): wandb's own refusal,
    in one line with the fix; the fresh run removes what it wrote, so the retry is not blocked."""
    home = run / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WANDB_", "TRACKIO_"))}
    env["HOME"] = str(home)
    result = _train(["--config", "small.yaml", "--report-to", "wandb", "--output-dir", "no-login"], env, run)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("bandpo train:")]
    assert errors == [
        "bandpo train: error: report_to='wandb': wandb could not start the run (UsageError: No API key "
        "configured. Use `wandb login` to log in.); log in (wandb login) or set WANDB_MODE=offline to keep the "
        "run on disk"
    ], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (run / "no-login" / "config.json").exists()


def _records(run_dir: Path) -> list[dict]:
    return read_metrics(run_dir / "metrics.jsonl")


def _by_step(records: list[dict]) -> dict[int, dict]:
    """A step's records merged (a step's training record and its evaluation share the step)."""
    merged: dict[int, dict] = {}
    for record in records:
        step = int(record[mn.TRAIN_STEP])
        merged.setdefault(step, {}).update({k: v for k, v in record.items() if k != mn.TRAIN_STEP})
    return merged


def test_trackio_store_holds_the_metrics_under_catalogued_names(run):
    expected = _by_step(_records(run / "band-run"))
    database = run / "trackio" / f"{PROJECT}.db"
    with sqlite3.connect(database) as connection:
        rows = connection.execute("select run_name, step, metrics from metrics").fetchall()
        configs = connection.execute("select run_name, config from configs").fetchall()
    assert {name for name, _, _ in rows} == {"band-run"}
    logged: dict[int, dict] = {}
    for _, step, metrics in rows:
        logged.setdefault(step, {}).update(json.loads(metrics))
    assert sorted(logged) == sorted(expected) == [0, 1, 2]
    for step, record in expected.items():
        assert {k for k in logged[step] if not k.startswith("_")} == set(record), step
        assert logged[step] == pytest.approx({**logged[step], **record}, rel=1e-12)
    assert mn.TRAIN_REWARD in logged[1] and mn.EVAL_MEAN_AT_K in logged[0] and mn.CLIP_FRAC in logged[2]
    stored = json.loads(configs[0][1])
    assert stored["method"] == "band" and stored["max_steps"] == 2


def _wandb_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` file: W&B's header (7 bytes), then LevelDB-log blocks of 32 KiB
    whose chunks (4-byte checksum, 2-byte length, 1-byte type: full, first, middle, last) hold the records."""
    from wandb.proto import wandb_internal_pb2

    data, block, position = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    payloads, pending = [], b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            payloads.append(pending)
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def test_wandb_offline_run_holds_the_metrics_under_catalogued_names(run):
    run_dir = run / "band-run"
    expected = _by_step(_records(run_dir))
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = _wandb_records(path)
    (identity,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (identity.display_name, identity.project) == ("band-run", PROJECT)
    logged: dict[int, dict] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            logged.setdefault(items["_step"], {}).update(items)
    assert sorted(logged) == [0, 1, 2]
    for step, record in expected.items():
        assert {k for k in logged[step] if not k.startswith("_")} == set(record), step
        assert {k: logged[step][k] for k in record} == pytest.approx(record, rel=1e-12)


def test_tensorboard_still_writes_its_events(run):
    assert list((run / "band-run" / "tensorboard").glob("events.out.tfevents.*"))
    assert not (run / "band-again" / "tensorboard").exists()  # --report-to none overrode the file's list


def test_a_runs_config_json_trains_the_same_run_again(run):
    first = json.loads((run / "band-run" / "config.json").read_text())
    again = json.loads((run / "band-again" / "config.json").read_text())
    assert again["output_dir"] == "band-again" and again["report_to"] == []
    assert first["report_to"] == ["tensorboard", "trackio", "wandb"] and first["learning_rate"] == 1e-3
    differ = {k for k in first if first[k] != again[k]}
    assert differ == {"output_dir", "report_to"}
    for a, b in zip(_records(run / "band-run"), _records(run / "band-again"), strict=True):
        a, b = ({k: v for k, v in r.items() if k not in TIME_KEYS} for r in (a, b))
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9)  # same settings and seed: the same run on one CPU


def test_the_model_card_matches_the_run(run):
    import yaml
    from huggingface_hub import ModelCard

    run_dir = run / "band-run"
    card_path = run_dir / "model" / "README.md"
    text = card_path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    config = json.loads((run_dir / "config.json").read_text())
    assert front["library_name"] == "transformers" and front["model_name"] == "band-run"
    assert front["pipeline_tag"] == "text-generation"
    assert front["tags"] == ["bandpo", config["method"], "grpo", "trl", "reinforcement-learning"]
    assert "base_model" not in front and "license" not in front  # the embedded model: built by bandpo
    assert ModelCard.load(card_path).data.to_dict() == front  # the Hub's own parser reads the same metadata
    for name in config["resolved"]["method_params"]:
        assert f"| {name} | " in text, name
    for when in ("before", "after"):
        metrics = json.loads((run_dir / f"eval_{when}.json").read_text())["metrics"]
        for key in metrics:
            assert f"| `{key}` |" in text, key
    rows = {line.split("|")[1].strip(" `"): line for line in text.splitlines() if line.startswith("| `eval/")}
    before = json.loads((run_dir / "eval_before.json").read_text())["metrics"]
    after = json.loads((run_dir / "eval_after.json").read_text())["metrics"]
    for key, line in rows.items():
        cells = [cell.strip() for cell in line.split("|")[2:4]]
        assert [float(cell) for cell in cells] == pytest.approx([before[key], after[key]], rel=1e-3, abs=1e-4)
    # what `hf upload USER/REPO RUN_DIR/model` needs: the card beside the weights, config and tokenizer
    names = {path.name for path in (run_dir / "model").iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= names
    # the run's settings travel with it
    assert json.loads((run_dir / "model" / "bandpo_config.json").read_text()) == config
    assert not [name for name in names if name.startswith(".")]  # no temporary left
