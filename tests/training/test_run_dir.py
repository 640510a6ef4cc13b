"""`RunDir` owns the run directory: every file name is declared there once, and `bandpo compare` (planning,
resuming, --report-only) and `bandpo train --resume` find a run's files by asking it. Renaming a file in
`RunDir` alone must keep them working, which a name written anywhere else would break."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import bandpo
from bandpo import metric_names as mn
from bandpo.training.run_dir import RunDir

SOURCE = Path(bandpo.__file__).parent
# the same name with another meaning: a model folder's own config.json (transformers'), read by the policy
# loader and the model card
OTHER_MEANINGS = {
    ("training/policy.py", "config.json"),
    ("training/model_card.py", "config.json"),
}


def _run_file_names() -> set[str]:
    run = RunDir(Path("run"))
    names = {Path(path).name for key, path in run.as_dict().items() if key != "run_dir"}
    return {name for name in names | {run.lock.name} if "." in name or name == "checkpoints"}


def test_each_run_file_is_named_only_by_the_run_object():
    names = _run_file_names()
    assert {"config.json", "summary.json", "metrics.jsonl", "eval_after.json", "checkpoints"} <= names
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        module = path.relative_to(SOURCE).as_posix()
        if module == "training/run_dir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name in names:
                    written = node.value == name or node.value.endswith(("/" + name, "/" + name + "/"))
                    if written and (module, name) not in OTHER_MEANINGS:
                        found.append(f"{module}:{node.lineno}: {node.value!r}")
    assert found == []


@pytest.fixture
def renamed(monkeypatch):
    """Every file of the run under another name, in `RunDir` only."""
    for name, new in (("config", "settings.json"), ("metrics", "steps.jsonl"), ("summary", "finished.json")):
        monkeypatch.setattr(RunDir, name, property(lambda self, new=new: self.path / new))


class FakeTrain:
    """Writes what `train` writes (config, metrics, summary), through `RunDir` as `train` does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool]] = []

    def __call__(self, config, *, progress: bool = True):
        self.calls.append((config.method, config.seed, config.resume))
        run = RunDir.for_config(config)
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(config, {})
        records = [{mn.TRAIN_STEP: 0, mn.EVAL_PASS_AT_K: 0.3}]
        records += [{mn.TRAIN_STEP: s, mn.TRAIN_REWARD: 0.1 * s} for s in range(1, config.max_steps + 1)]
        records.append({mn.TRAIN_STEP: config.max_steps, mn.EVAL_PASS_AT_K: 0.4 + 0.1 * config.seed})
        run.metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
        metrics = {mn.EVAL_PASS_AT_K: 0.4 + 0.1 * config.seed, mn.EVAL_MEAN_AT_K: 0.2}
        summary = {
            "config": config.to_dict(),
            "before": {"metrics": {key: 0.1 for key in metrics}, "k": 4},
            "after": {"metrics": metrics, "k": 4},
            "steps": config.max_steps,
            "wall_time_s": 30.0,
        }
        run.write_summary(summary)
        return type("Summary", (), {"wall_time_s": 30.0})()


def test_compare_plans_resumes_and_reports_through_the_run_object(tmp_path, renamed):
    from bandpo.experiments.arms import parse_method_specs
    from bandpo.experiments.lm_compare import report_only, run_lm_compare

    specs = parse_method_specs(["clip", "band_upper"])
    fake = FakeTrain()
    run_lm_compare(specs, [0, 1], tmp_path, steps=2, train_fn=fake)
    assert len(fake.calls) == 4
    run_dir = tmp_path / "runs" / "clip-seed1"
    assert {"settings.json", "steps.jsonl", "finished.json"} <= {p.name for p in run_dir.iterdir()}
    assert not {"config.json", "metrics.jsonl", "summary.json"} & {p.name for p in run_dir.iterdir()}
    per_seed = json.loads((tmp_path / "per_seed.json").read_text())
    assert per_seed["missing"] == [] and len(per_seed["runs"]) == 4  # every summary was found
    # finished runs are skipped; one without its summary resumes (its settings found and compared)
    (run_dir / "finished.json").unlink()
    again = FakeTrain()
    run_lm_compare(specs, [0, 1], tmp_path, steps=2, train_fn=again)
    assert again.calls == [("clip", 1, True)]
    # --report-only redraws the training curves from the runs' metrics, where the runs are there
    (tmp_path / "compare_training.png").unlink()
    report_only(tmp_path)
    assert (tmp_path / "compare_training.png").exists()


def test_train_resume_reads_the_settings_the_run_object_names(tmp_path, renamed):
    import argparse

    from bandpo.cli.train import add_arguments, build_config, starts_fresh
    from bandpo.training import TrainConfig

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    stored = TrainConfig(max_steps=7, output_dir=str(run.path))
    run.write_config(stored, {})
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--resume", "--output-dir", str(run.path)])
    config = build_config(args)
    assert config.max_steps == 7 and config.resume and not starts_fresh(args, config)
    assert run.config_differences(config) == []
    with pytest.raises(ValueError, match="already holds a run"):
        run.check(stored)
    with pytest.raises(ValueError, match="max_steps: run has 7, given 8"):
        run.check(config.replace(max_steps=8))


def test_the_settings_are_read_and_compared_in_one_place(tmp_path):
    """config.json's reader names the file and the fix; a field added since the run started takes its
    default (so the run is not refused for it); only the fields that change what the run computes count."""
    from bandpo.training import TrainConfig

    run = RunDir(tmp_path)
    assert run.read_config() is None and run.config_differences(TrainConfig()) == []
    config = TrainConfig(output_dir=str(tmp_path), resume=True)
    record = json.loads(json.dumps(config.to_dict()))
    del record["task"]
    run.config.write_text(json.dumps(record))
    assert run.config_differences(config) == []
    different = run.config_differences(config.replace(task="reach", num_threads=3))
    assert different == [("task", "countdown", "reach")]
    run.config.write_text("[1, 2]")
    with pytest.raises(
        ValueError, match=r"config.json does not hold a run's settings; delete the run directory"
    ):
        run.read_config()
    run.config.write_text('{"method": "cl')
    with pytest.raises(ValueError, match=r"config.json is not valid JSON .*delete the run directory"):
        run.read_config()
