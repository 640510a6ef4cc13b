"""The process settings of a run: Hugging Face offline, few threads, and no library chatter.

Only the CLI prints: `quiet_and_threads` silences transformers/TRL warnings and progress bars for the block,
and `silence` drops the HF Trainer's printing callbacks (the run's own progress bar shows the steps). Used by
the RL run (`bandpo.training.runner`) and the warm-up (`bandpo.training.warmup`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["OFFLINE_VARIABLES", "offline_environment", "quiet_and_threads", "silence"]

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
