"""The preregistered confirmatory analysis: its cells, the stopping rule and the both-tests decision."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from bandpo import metric_names as mn
from bandpo.cli import main
from bandpo.experiments.confirmatory import PRIMARY, SECONDARY, complete_seeds, confirmatory_report
from bandpo.experiments.lm_results import SeedResult, write_per_seed
from bandpo.experiments.studies import EMBEDDED_STUDY, REAL_MODEL_PLAN, Cell, Study


def _study(folder: Path, task: str, seeds: range, entropy_gain: float, study: Study = EMBEDDED_STUDY) -> Path:
    """band_upper ends with `entropy_gain` more entropy than clip (plus noise); band like clip."""
    rng = random.Random(task)
    results = []
    for seed in seeds:
        for arm in ("clip", "band", "band_upper"):
            gain = entropy_gain if arm == "band_upper" else 0.0
            after = {
                mn.EVAL_ENTROPY: 0.12 + gain + rng.gauss(0, 0.01),
                mn.EVAL_PASS_AT_K: 0.6 + rng.gauss(0, 0.05),
                mn.EVAL_DISTINCT_CORRECT: 1.0 + rng.gauss(0, 0.1),
            }
            k = study.settings[task]["eval_samples"]
            results.append(SeedResult(arm, arm, {}, seed, k, {}, after, 60.0))
    folder.mkdir(parents=True)
    write_per_seed(folder / "per_seed.json", results, _study_header(task, study))
    return folder


def _study_header(task: str, study: Study = EMBEDDED_STUDY) -> dict:
    """per_seed.json's header as a compare with the study's settings writes it."""
    arms = [
        {
            "label": a.label,
            "method": a.method,
            "given": dict(a.given),
            "params": dict(a.params),
            "loss": dict(a.loss),
        }
        for a in study.arms
    ]
    config = {**study.settings[task], "method": "clip", "seed": 0, "resolved": {}}
    return {"task": task, "arms": arms, "config": config, "quick": False}


def test_the_cells_are_the_preregistered_ones() -> None:
    assert [c.name for c in PRIMARY] == ["P1", "P2", "P3", "P4", "P5", "P6"]
    assert {(c.task, c.arm, c.reference) for c in SECONDARY} >= {("countdown", "band_upper", "band")}


def test_a_clear_effect_is_confirmed_and_a_null_is_not(tmp_path: Path) -> None:
    countdown = _study(tmp_path / "c", "countdown", range(24), 0.03)
    reach = _study(tmp_path / "r", "reach", range(24), 0.03)
    text = confirmatory_report({"countdown": countdown, "reach": reach})
    primary = text.split("## Secondary")[0].splitlines()
    rows = {line.split(" | ")[0].strip("| "): line for line in primary if line.startswith("| P")}
    assert "**confirmed** (arm higher)" in rows["P1"] and "24+/0−" in rows["P1"]
    assert "confirmed" not in rows["P3"].replace("not confirmed", "")  # band = clip: no effect to find
    sensitivity = text.split("## Sensitivity analysis")[1]
    assert "| P1 | countdown: band_upper − clip, entropy | 16 |" in sensitivity  # seeds 8-23 only
    assert "| P4 | reach: band_upper − clip, entropy | 20 |" in sensitivity


def test_a_study_of_new_seeds_only_has_no_new_seeds_sensitivity_table(tmp_path: Path) -> None:
    """A study whose every seed is new (no fresh_seeds declared) reports its two families and no
    'new seeds only' table, which would repeat the primary one."""
    study = dataclasses.replace(
        REAL_MODEL_PLAN,
        seeds={"sums_mix": range(200, 210)},
        primary=(Cell("P1", "sums_mix", "band_upper", "clip", mn.EVAL_ENTROPY),),
        secondary=(Cell("S1", "sums_mix", "band_upper", "band", mn.EVAL_ENTROPY),),
        preregistered="a test",
    )
    folder = _study(tmp_path / "s", "sums_mix", range(200, 210), 0.03, study)
    text = confirmatory_report({"sums_mix": folder}, study=study)
    assert "| P1 | sums_mix: band_upper − clip, entropy | 10 |" in text and "**confirmed**" in text
    assert "| S1 |" in text and "Sensitivity" not in text


def test_the_stopping_rule_refuses_an_incomplete_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    countdown = _study(tmp_path / "c", "countdown", range(23), 0.03)
    reach = _study(tmp_path / "r", "reach", range(24), 0.03)
    with pytest.raises(ValueError, match="23 of 24 seeds"):
        confirmatory_report({"countdown": countdown, "reach": reach})
    argv = ["compare", "--confirmatory", str(countdown), str(reach), "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "stopping rule" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_complete_seeds_need_every_arm(tmp_path: Path) -> None:
    results = [SeedResult(arm, arm, {}, 0, 16, {}, {}, 1.0) for arm in ("clip", "band", "band_upper")]
    results.append(SeedResult("clip", "clip", {}, 1, 16, {}, {}, 1.0))
    assert list(complete_seeds(results)) == [0]


def test_a_folder_of_the_wrong_task_is_refused(tmp_path: Path) -> None:
    countdown = _study(tmp_path / "c", "countdown", range(24), 0.03)
    with pytest.raises(ValueError, match="not 'reach'"):
        confirmatory_report({"countdown": countdown, "reach": countdown})


def test_a_seed_split_across_cpu_models_is_refused(tmp_path: Path) -> None:
    countdown = _study(tmp_path / "c", "countdown", range(24), 0.03)
    reach = _study(tmp_path / "r", "reach", range(24), 0.03)
    path = countdown / "per_seed.json"
    data = json.loads(path.read_text())
    for run in data["runs"]:
        if run["seed"] == 3:  # clip on one CPU model, band and band_upper on another
            run["machine"] = "AMD EPYC" if run["label"] == "clip" else "Intel Xeon"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"seeds \[3\] have arms trained on different CPU models"):
        confirmatory_report({"countdown": countdown, "reach": reach})


RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def _edited(tmp_path: Path, edit) -> dict[str, Path]:
    """The committed confirmatory records, copied, with `edit(data)` applied to the Countdown file."""
    folders = {}
    for task in ("countdown", "reach"):
        folder = tmp_path / task
        folder.mkdir()
        data = json.loads((RESULTS / f"confirm-{task}-24" / "per_seed.json").read_text())
        if task == "countdown":
            edit(data)
        (folder / "per_seed.json").write_text(json.dumps(data))
        folders[task] = folder
    return folders


def _set_config(key, value):
    def edit(data):
        data["config"][key] = value

    return edit


def _band_with_clip_parameters(data):
    clip = next(arm for arm in data["arms"] if arm["label"] == "clip")
    for arm in data["arms"]:
        if arm["label"] == "band":
            arm["params"] = dict(clip["params"])


def _k(data):
    for run in data["runs"]:
        run["k"] = 2


@pytest.mark.parametrize(
    ("edit", "difference"),
    [
        (lambda data: data.update(quick=True), "made with --quick"),
        (_set_config("max_steps", 1), "max_steps 1, the study's is 250"),
        (_set_config("model", "smollm2-135m-instruct"), "model 'smollm2-135m-instruct', the study's is None"),
        (_set_config("eval_samples", 2), "eval_samples 2, the study's is 16"),
        (_band_with_clip_parameters, "arm 'band' params {'eps_low': 0.2, 'eps_high': 0.2}, the study's are"),
        (_k, "run 'clip' seed 0: k 2, the study's eval_samples is 16"),
        (lambda data: data.pop("config"), "no settings block ('config')"),
    ],
    ids=["quick", "max_steps", "model", "eval_samples", "band_arms", "k", "no_config"],
)
def test_a_record_made_with_other_settings_is_refused(tmp_path: Path, edit, difference: str, capsys) -> None:
    folders = _edited(tmp_path, edit)
    with pytest.raises(ValueError, match="was not made with the settings of the study") as error:
        confirmatory_report(folders)
    assert difference in str(error.value)
    argv = ["compare", "--confirmatory", str(folders["countdown"]), str(folders["reach"])]
    assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 2
    assert difference in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_committed_records_match_the_declared_study(tmp_path: Path) -> None:
    folders = _edited(tmp_path, lambda data: None)
    assert "| P1 | countdown: band_upper − clip, entropy | 24 |" in confirmatory_report(folders)


def test_a_plan_gives_no_verdict(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="is a plan, not a preregistration"):
        confirmatory_report({"sums_mix": tmp_path}, study=REAL_MODEL_PLAN)
    argv = ["compare", "--confirmatory", str(tmp_path), "--study", REAL_MODEL_PLAN.name]
    assert main(argv) == 2
    assert "is a plan" in capsys.readouterr().err
    assert main(["compare", "--confirmatory", str(tmp_path)]) == 2  # the embedded study needs two folders
    assert "needs 2 folder(s)" in capsys.readouterr().err


def test_the_pilot_command_in_the_docs_trains_the_declared_settings(tmp_path: Path) -> None:
    """docs/experiments.md's pilot command, parsed as the CLI parses it, gives every run the settings that
    `REAL_MODEL_PLAN` declares (the model folder aside: a stand-in, since the test needs no checkpoint)."""
    import argparse
    import shlex

    from bandpo.cli.compare import _parse_settings, add_arguments
    from bandpo.experiments.arms import parse_method_specs
    from bandpo.experiments.lm_compare import build_config
    from bandpo.experiments.lm_results import comparable, effective

    text = (Path(__file__).resolve().parents[2] / "docs" / "experiments.md").read_text()
    command = next(block for block in text.split("```bash")[1:] if "--task sums_mix" in block).split("```")[0]
    line = command.split("\n#")[0].replace("\\\n", " ")
    argv = shlex.split(line)[2:]  # after "bandpo compare"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(argv)
    assert args.task == "sums_mix" and list(args.seeds) == [100, 101, 102]  # the pilot as run (3 seeds)
    settings = {
        **_parse_settings(args.settings),
        "max_steps": args.steps,
        "task": args.task,
        "model": str(tmp_path),
    }
    for spec in parse_method_specs(args.methods):
        config = effective(comparable(build_config(spec, 100, tmp_path / "r", settings).to_dict()))
        for key, wanted in REAL_MODEL_PLAN.settings["sums_mix"].items():
            if key != "model":
                assert config[key] == wanted, key
    assert args.model == REAL_MODEL_PLAN.settings["sums_mix"]["model"]
    assert [spec.label for spec in parse_method_specs(args.methods)] == list(REAL_MODEL_PLAN.arm_labels)


@pytest.mark.parametrize("collect", [False, True])
def test_the_preregistered_commands_train_the_declared_study(tmp_path: Path, collect: bool) -> None:
    """The preregistration's run and --collect commands, parsed as the CLI parses them, plan exactly the
    study's seeds and arms with every setting `REAL_MODEL_STUDY` declares (autocast off included), and its
    analysis command names the study."""
    import argparse
    import shlex

    from bandpo.cli.compare import _parse_settings, add_arguments
    from bandpo.experiments.arms import parse_method_specs
    from bandpo.experiments.lm_compare import build_config
    from bandpo.experiments.lm_results import comparable, effective
    from bandpo.experiments.studies import REAL_MODEL_STUDY

    text = (Path(__file__).resolve().parents[2] / "docs" / "experiments.md").read_text()
    block = next(b for b in text.split("```bash")[1:] if "--seeds 200-209" in b).split("```")[0]
    commands = [c for c in block.replace("\\\n", " ").splitlines() if c.startswith("bandpo compare")]

    argv = shlex.split(commands[1 if collect else 0])[2:]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(argv)
    assert args.collect is collect
    assert list(args.seeds) == list(REAL_MODEL_STUDY.seeds["sums_mix"])
    settings = {
        **_parse_settings(args.settings),
        "max_steps": args.steps,
        "task": args.task,
        "model": str(tmp_path),
    }
    specs = parse_method_specs(args.methods)
    assert [spec.label for spec in specs] == list(REAL_MODEL_STUDY.arm_labels)
    for spec in specs:
        config = effective(comparable(build_config(spec, 200, tmp_path / "r", settings).to_dict()))
        for key, wanted in REAL_MODEL_STUDY.settings["sums_mix"].items():
            if key != "model":
                assert config[key] == wanted, key
    assert args.model == REAL_MODEL_STUDY.settings["sums_mix"]["model"]
    analysis = shlex.split(commands[2])
    assert analysis[analysis.index("--study") + 1] == REAL_MODEL_STUDY.name


def test_the_real_model_study_is_preregistered_with_new_seeds_only() -> None:
    from bandpo.experiments.studies import REAL_MODEL_STUDY, get_study

    assert get_study("smollm2-sums-mix") is REAL_MODEL_STUDY and REAL_MODEL_STUDY.preregistered
    pilot, earlier = range(100, 104), range(0, 2)
    assert not set(REAL_MODEL_STUDY.seeds["sums_mix"]) & (set(pilot) | set(earlier))
    assert len(REAL_MODEL_STUDY.seeds["sums_mix"]) == 10
    assert [c.name for c in REAL_MODEL_STUDY.primary] == ["P1", "P2"]
    assert REAL_MODEL_STUDY.settings["sums_mix"]["autocast"] == "off"


def test_the_real_model_analysis_runs_on_records_shaped_like_the_study(tmp_path: Path, capsys) -> None:
    """A dry run of the analysis that decides the real-model study, made before its last seed is in: the
    committed records' header and shape, with every outcome replaced by a synthetic one (none of the study's
    outcomes is read), for all ten seeds; the CLI writes the report with each preregistered cell at n = 10."""
    from bandpo.experiments.studies import REAL_MODEL_STUDY

    data = json.loads((RESULTS / "confirm-smollm2" / "per_seed.json").read_text())
    template = {run["label"]: run for run in data["runs"] if run["seed"] == data["runs"][0]["seed"]}
    rng = random.Random(26)
    runs = []
    for seed in REAL_MODEL_STUDY.seeds["sums_mix"]:
        for label, run in template.items():
            gain = 0.1 if label == "band_upper" else 0.0
            synthetic = {key: rng.uniform(0.1, 0.3) + gain for key in run["after"]}
            before = dict.fromkeys(run["before"], 0.5)
            runs.append({**run, "seed": seed, "before": before, "after": synthetic})
    data["runs"] = runs
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "per_seed.json").write_text(json.dumps(data))
    out = tmp_path / "report"
    argv = ["compare", "--confirmatory", str(folder), "--study", REAL_MODEL_STUDY.name]
    assert main([*argv, "--output-dir", str(out)]) == 0, capsys.readouterr().err
    text = (out / "confirmatory.md").read_text()
    for cell in (*REAL_MODEL_STUDY.primary, *REAL_MODEL_STUDY.secondary):
        row = next(line for line in text.splitlines() if line.startswith(f"| {cell.name} |"))
        assert f"{cell.arm} − {cell.reference}" in row and " | 10 | " in row
    assert "Sensitivity" not in text
