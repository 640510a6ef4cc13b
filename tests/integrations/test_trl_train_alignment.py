"""In TRL's own `train()`, the bounds that reach every micro-batch are ``method(old_per_token_logps)`` of its rows.

TRL shuffles each generation batch, splits it into ``steps_per_generation`` micro-batches, accumulates
``gradient_accumulation_steps`` of them per optimiser step and replays the whole batch ``num_iterations``
times; the bounds must follow their tokens through all of it. The whole product of GA ∈ {1, 2, 4}, steps per
generation ∈ {2, 4} and iterations ∈ {1, 2, 3} runs (about 2 s each), covering both of TRL's regimes: with
old log-probs, and without them (GA a multiple of steps per generation × iterations), where the ratio is 1
and the bounds come from the micro-batch's own log-probs. A negative control rolls the bounds by one row
and must be caught.
"""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

import itertools
import warnings

import torch
from trl_recording import build, misaligned_rows

from bandpo.integrations.trl import every_method_identical

pytestmark = pytest.mark.integration

# (gradient_accumulation_steps, steps_per_generation, num_iterations)
SCHEDULES = list(itertools.product((1, 2, 4), (2, 4), (1, 2, 3)))


@pytest.mark.parametrize(("accumulation", "per_generation", "iterations"), SCHEDULES)
def test_bounds_reaching_every_micro_batch_belong_to_its_rows(
    tmp_path, accumulation, per_generation, iterations
):
    # two generation batches (and so two shuffles), whatever the schedule
    micro_batches = 2 * per_generation * iterations
    max_steps = -(-micro_batches // accumulation)
    trainer = build(
        str(tmp_path),
        gradient_accumulation_steps=accumulation,
        steps_per_generation=per_generation,
        num_iterations=iterations,
        max_steps=max_steps,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert len(trainer.records) == max_steps * accumulation  # every micro-batch was recorded
    bad, checked = misaligned_rows(trainer.records, trainer.bound_method)
    assert checked == len(trainer.records) * trainer.args.per_device_train_batch_size
    assert bad == 0
    # the check has teeth: bounds differ between the rows of a micro-batch, so a swap would show
    assert any(
        not torch.equal(record["ratio_high"][0], record["ratio_high"][1]) for record in trainer.records
    )
    if not every_method_identical(trainer.args):  # TRL's old log-probs were used, and the policy moved
        assert any(
            not torch.equal(record["logp"][i], record["generation"][key][0])
            for record in trainer.records
            for i, key in enumerate(record["rows"])
        )


def test_misaligned_bounds_are_detected(tmp_path):
    """Negative control: bounds rolled by one row within each generation batch."""
    trainer = build(str(tmp_path), misalign=True, steps_per_generation=2, num_iterations=2, max_steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    bad, checked = misaligned_rows(trainer.records, trainer.bound_method)
    assert checked > 0 and bad > checked // 2
