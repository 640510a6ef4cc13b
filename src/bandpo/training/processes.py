"""The processes of a run: several of them (``torchrun`` / ``accelerate launch``), and each one's settings.

Every process trains (TRL and accelerate split each generation batch between them); only the main process
(accelerate's ``PartialState().is_main_process``) writes the run directory, evaluates and prints, while the
others wait at a barrier. The embedded model's warm-up runs once, on the main process, outside the process
group (`bandpo.training.policy.warm_up_in_child`), and the others load it from the cache.

In one process (no launcher) nothing here starts a process group: `Processes.single()` is what a plain
``bandpo train`` gets, and every method is then a no-op.

Each process runs with Hugging Face offline (`offline_environment`), a set number of torch threads and no
library chatter (`quiet_and_threads`; `silence` drops the HF Trainer's printing callbacks): only the CLI prints,
and the run's own progress bar (`progress_bar`) shows the steps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

__all__ = [
    "LAUNCHER_VARIABLES",
    "OFFLINE_VARIABLES",
    "WAIT_LIMIT",
    "Processes",
    "offline_environment",
    "quiet_and_threads",
    "silence",
]

# how long a process waits at a barrier (or any collective) for the others: the main process's warm-up or
# evaluation runs meanwhile (torch's own default, 10 minutes with NCCL, is too short for the paper preset)
WAIT_LIMIT = timedelta(hours=2)

# what torchrun / accelerate launch / MPI set to make a process one of several (accelerate reads these)
LAUNCHER_VARIABLES: tuple[str, ...] = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
    "MASTER_ADDR",
    "MASTER_PORT",
    "PMI_SIZE",
    "PMI_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MV2_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_RANK",
)


@dataclass(frozen=True)
class Processes:
    """The processes of a run: how many, which one this is, and a barrier between them.

    Attributes:
        world_size: number of processes.
        index: this process's rank (0 is the main process).
        state: accelerate's ``PartialState`` (None in one process).
    """

    world_size: int = 1
    index: int = 0
    state: Any = None

    @classmethod
    def single(cls) -> Processes:
        return cls()

    @classmethod
    def from_environment(cls) -> Processes:
        """Several processes when a launcher set ``WORLD_SIZE`` > 1 or a process group is already running;
        then accelerate's ``PartialState`` (gloo on CPU, its default on GPU) joins or starts the group (which the
        HF Trainer then uses; a group it starts waits `WAIT_LIMIT` at a barrier)."""
        import torch
        import torch.distributed as dist

        running = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not running and int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
            return cls.single()
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available(), timeout=WAIT_LIMIT)
        if state.num_processes <= 1:
            return cls.single()
        return cls(world_size=state.num_processes, index=state.process_index, state=state)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def share(self, value: Any) -> Any:
        """The main process's `value`, on every process (pickled; `value` itself in one process)."""
        if self.state is None:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wait(self) -> None:
        """Barrier: every process waits here until all of them arrive (nothing in one process)."""
        if self.state is not None:
            self.state.wait_for_everyone()


OFFLINE_VARIABLES: tuple[str, ...] = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
)


@contextlib.contextmanager
def offline_environment() -> Iterator[None]:
    """Hugging Face libraries offline (and tokenizers single-threaded) for the block; restored afterwards."""
    saved = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    for name in OFFLINE_VARIABLES[:3]:
        os.environ[name] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def quiet_and_threads(num_threads: int) -> Iterator[None]:
    """`num_threads` torch threads and no library chatter for the block; restored afterwards."""
    import torch
    import transformers

    previous_threads = torch.get_num_threads()
    previous_verbosity = transformers.logging.get_verbosity()
    torch.set_num_threads(num_threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    with warnings.catch_warnings():
        for module in ("transformers", "trl", "accelerate", "torch"):
            warnings.filterwarnings("ignore", category=FutureWarning, module=module)
            warnings.filterwarnings("ignore", category=UserWarning, module=module)
        warnings.filterwarnings("ignore", message=".*TRL currently only supports.*")
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        try:
            yield
        finally:
            torch.set_num_threads(previous_threads)
            transformers.logging.set_verbosity(previous_verbosity)
            transformers.logging.enable_progress_bar()


def silence(trainer: Any) -> None:
    """Drop the HF Trainer's printing callbacks: only the CLI prints."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def progress_bar(enabled: bool, **kwargs: Any) -> Any:
    """A tqdm bar on stderr, or None when progress is off."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(dynamic_ncols=True, leave=True, **kwargs)
