"""The run's loggers (``report_to``): TensorBoard, Trackio, Weights & Biases and MLflow, TRL's names for them.

Each logger is declared once here (`LOGGERS`: its package, the ``pip install`` that brings it, and the sink
that writes to it). `bandpo.training.metrics_log.MetricsLog` hands every record of ``metrics.jsonl`` to each
sink, so a logger shows what the file holds: the catalogued keys of `bandpo.metric_names` (TRL's others as
``trl/<name>``) against the RL step, the held-out evaluations included. That is why the sinks call each
library themselves instead of passing ``report_to`` to TRL: TRL's callbacks log its own names (``reward``,
prefixed ``train/`` by W&B) against the optimiser step, and never see the evaluations.

Names follow the run, as TRL's callbacks do: the run name is the run directory's name (TRL's ``run_name``);
the project is ``project`` when given, else the library's own variable (``WANDB_PROJECT``,
``MLFLOW_EXPERIMENT_NAME``), else ``bandpo``. Everything else is the library's own configuration:
``WANDB_MODE=offline``, ``TRACKIO_DIR``, ``TRACKIO_SPACE_ID``, ``MLFLOW_TRACKING_URI``. Resuming a run
continues the same logged run (W&B's id is derived from the run directory and its start; Trackio's and
MLflow's runs are found by name, and a fresh run starts a new one); only TensorBoard drops the points a killed run logged after its last
checkpoint (``purge_step``): the others keep them, and W&B ignores a step it has already logged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DEFAULT_PROJECT",
    "LOGGERS",
    "LOGGER_NAMES",
    "LoggerSpec",
    "RunIdentity",
    "Sink",
    "check_installed",
    "normalize_report_to",
    "open_sinks",
]

DEFAULT_PROJECT = "bandpo"


class Sink(Protocol):
    """Where `MetricsLog` mirrors each record (the numbers of one RL step or one evaluation)."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunIdentity:
    """What a logger is told about the run.

    Attributes:
        run_dir: the run directory (W&B's files go under it).
        project: the project (`resolve_project`).
        config: the run's settings as config.json holds them (logged as the run's config / parameters).
        resumed_step: the RL step a resumed run restarts after; None for a fresh run.
        started_ns: when the run started (its config.json's mtime, in ns; 0: unknown), part of `run_id`.
        tensorboard_dir: where TensorBoard's events go (the run directory's, `RunDir.tensorboard`).
    """

    run_dir: Path
    project: str | None
    config: dict[str, Any]
    resumed_step: int | None
    started_ns: int = 0
    tensorboard_dir: Path | None = None

    @property
    def run_name(self) -> str:
        """The run directory's name, TRL's ``run_name`` for the run."""
        return self.run_dir.resolve().name

    @property
    def resumed(self) -> bool:
        return self.resumed_step is not None

    def run_id(self) -> str:
        """This run's id (W&B's): its name plus a hash of the run directory's absolute path and of when the
        run started (config.json's time: written once, at the start), so a resume finds the run again and a
        new run in a reused directory is a new run."""
        digest = hashlib.sha256(f"{self.run_dir.resolve()}:{self.started_ns}".encode()).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9_-]', '-', self.run_name)[:54]}-{digest}"

    def resolve_project(self, variable: str | None) -> str:
        """``project``, else the library's environment variable `variable`, else ``bandpo``."""
        return self.project or (os.environ.get(variable) if variable else None) or DEFAULT_PROJECT


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


class TensorBoardSink:
    """TensorBoard events in the run's ``tensorboard/`` (torch's ``SummaryWriter``)."""

    def __init__(self, run: RunIdentity) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # on resume, purge_step drops the events a killed run wrote after its last checkpoint (all of its
        # training events when it died before the first one; the step-0 evaluation is kept, as in
        # metrics.jsonl)
        purge = run.resumed_step + 1 if run.resumed_step is not None else None
        if run.tensorboard_dir is None:
            raise ValueError("TensorBoard needs the run's tensorboard_dir (RunIdentity.tensorboard_dir)")
        self.writer = SummaryWriter(str(run.tensorboard_dir), purge_step=purge)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in _finite(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class TrackioSink:
    """A Trackio run (local store: ``TRACKIO_DIR``, default ``~/.cache/huggingface/trackio``; a Space with
    ``TRACKIO_SPACE_ID``), named after the run directory; a resumed run continues it."""

    def __init__(self, run: RunIdentity) -> None:
        import trackio

        self.run = trackio.init(
            project=run.resolve_project(None),
            name=run.run_name,
            config=run.config,
            resume="allow" if run.resumed else "never",  # by name: "never" starts a new run of that name
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(_finite(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


class WandbSink:
    """A Weights & Biases run (``WANDB_MODE=offline`` keeps it on disk: ``wandb sync`` uploads it later); its
    files go under the run directory unless ``WANDB_DIR`` says otherwise."""

    def __init__(self, run: RunIdentity) -> None:
        import wandb

        self.run = wandb.init(
            project=run.resolve_project("WANDB_PROJECT"),
            name=run.run_name,
            id=run.run_id(),
            resume="allow",
            dir=os.environ.get("WANDB_DIR") or str(run.run_dir),
            config=run.config,
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(_finite(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    """An MLflow run in the experiment named by the project (``MLFLOW_TRACKING_URI`` says where: MLflow's
    default is a local store); a resumed run continues the run of the same name."""

    def __init__(self, run: RunIdentity) -> None:
        import mlflow

        self.mlflow = mlflow
        experiment = mlflow.set_experiment(run.resolve_project("MLFLOW_EXPERIMENT_NAME"))
        found = []
        if run.resumed:
            name = run.run_name.replace("'", "\\'")
            found = mlflow.search_runs(
                experiment_ids=[experiment.experiment_id],
                filter_string=f"tags.mlflow.runName = '{name}'",
                order_by=["attributes.start_time DESC"],
                output_format="list",
            )
        if found:
            self.active = mlflow.start_run(run_id=found[0].info.run_id)
        else:
            self.active = mlflow.start_run(run_name=run.run_name)
            mlflow.log_params({key: str(value)[:500] for key, value in run.config.items()})

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(_finite(metrics), step=step)

    def close(self) -> None:
        self.mlflow.end_run()


@dataclass(frozen=True)
class LoggerSpec:
    """One ``report_to`` name: the module it imports, how to install it, its sink, and what to check when the
    library cannot start a run."""

    module: str
    install: str
    sink: Callable[[RunIdentity], Sink]
    fix: str


LOGGERS: dict[str, LoggerSpec] = {
    "tensorboard": LoggerSpec(
        "tensorboard", "pip install tensorboard", TensorBoardSink, "check that the run directory is writable"
    ),
    "trackio": LoggerSpec(
        "trackio", "pip install 'bandpo[trackio]'", TrackioSink, "check TRACKIO_DIR (or TRACKIO_SPACE_ID)"
    ),
    "wandb": LoggerSpec(
        "wandb",
        "pip install 'bandpo[wandb]'",
        WandbSink,
        "log in (wandb login) or set WANDB_MODE=offline to keep the run on disk",
    ),
    "mlflow": LoggerSpec(
        "mlflow",
        "pip install 'bandpo[mlflow]'",
        MlflowSink,
        "check MLFLOW_TRACKING_URI and the MLflow server",
    ),
}
LOGGER_NAMES: tuple[str, ...] = (*LOGGERS, "none")
"""The valid ``report_to`` names: TRL's for these integrations, and ``none`` (only metrics.jsonl)."""


def normalize_report_to(value: Any) -> Any:
    """``report_to`` as a tuple of logger names, TRL's way: a name, a comma-separated text or a list;
    ``none`` alone is the empty tuple. Anything else is returned as given, for the setting's check to refuse."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(name, str) for name in value):
        return value
    parts = [part.strip() for name in value for part in name.split(",")]
    names = tuple(dict.fromkeys(part for part in parts if part))  # in order, each once
    return () if names == ("none",) else names


def check_installed(report_to: tuple[str, ...]) -> None:
    """Refuse, in one line with the ``pip install``, a logger whose package is missing (before any write)."""
    for name in report_to:
        spec = LOGGERS[name]
        if importlib.util.find_spec(spec.module) is None:
            raise ImportError(
                f"report_to={name!r} needs the {spec.module} package, which is not installed; {spec.install} "
                f"(or leave {name} out of --report-to)"
            )


def open_sinks(report_to: tuple[str, ...], run: RunIdentity) -> list[Sink]:
    """One sink per logger in `report_to`, in order. A library that cannot start its run (no login, no
    server) is one ValueError naming the logger, the library's reason and the fix; the sinks already open
    are closed."""
    sinks: list[Sink] = []
    try:
        for name in report_to:
            spec = LOGGERS[name]
            try:
                sinks.append(spec.sink(run))
            except OSError:
                raise  # a file that cannot be written says which (and a full disk says so)
            except Exception as error:
                reason = (str(error).strip().splitlines() or [""])[0]
                raise ValueError(
                    f"report_to={name!r}: {spec.module} could not start the run ({type(error).__name__}: "
                    f"{reason}); {spec.fix}"
                ) from error
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks
