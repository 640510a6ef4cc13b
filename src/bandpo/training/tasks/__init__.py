"""The embedded tasks, registered by name: each module declares its ``TASK`` (prompts, held-out split,
verifier; `bandpo.training.tasks.registry.EmbeddedTask`), and this package registers it.

- ``countdown`` (`bandpo.training.tasks.countdown`, the default): three given digits, use each once.
- ``reach`` (`bandpo.training.tasks.reach`): four allowed digits, any two or three of them, repeats allowed.
- ``sums`` (`bandpo.training.tasks.sums`): small additions in plain English, for a real pretrained model
  (``--model smollm2-135m-instruct``); it has no warm-up, since the tiny model cannot read it.
- ``sums_mix`` (`bandpo.training.tasks.sums_mix`): the same prompts and verifier at four operand shapes, with a
  held-out pool of over a thousand prompts: the task of the real-model study.

Countdown and Reach use the same character alphabet (`countdown.ALPHABET`), so the same tokenizer and tiny model,
and make the multiplication operator the rare strategy that a known share of prompts needs. A new task is one
module with its ``TASK`` and one line below (docs/experiments.md, "Adding a task").
"""

from __future__ import annotations

from bandpo.training.tasks import countdown, reach, sums, sums_mix
from bandpo.training.tasks.registry import (
    EmbeddedTask,
    Verifier,
    get_task,
    register_task,
    task_names,
)

__all__ = ["DEFAULT_TASK", "EmbeddedTask", "Verifier", "get_task", "register_task", "task_names"]

for _module in (countdown, reach, sums, sums_mix):
    register_task(_module.TASK)

DEFAULT_TASK: str = countdown.TASK.name
"""The task of a run that names none (``bandpo train``, ``bandpo compare``, the warm-up)."""
