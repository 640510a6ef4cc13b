"""Contract tests of `bandpo.integrations.trl` against the installed TRL (supported: >=1.16,<1.17).

The central test runs TRL's own `_compute_loss` with our per-token bounds on a tiny model and checks that the
loss and its gradients equal `bandpo.policy_loss` on the same tensors: a TRL release that changes its clamp,
its dual-clip or its aggregation fails here.
"""

from __future__ import annotations

import math
import warnings

import pytest

pytest.importorskip("trl")

import torch
from datasets import Dataset

from bandpo import metric_names as mn
from bandpo.integrations.trl import (
    AGG_TO_LOSS_TYPE,
    BandPOConfig,
    BandPOTrainer,
    every_method_identical,
)
from bandpo.losses import aggregate_loss, band_metrics, policy_loss
from bandpo.methods import get_method
from bandpo.regularizers import kl_penalty
from bandpo.training.model import build_char_tokenizer, build_tiny_model

pytestmark = pytest.mark.integration

MAX_COMPLETION = 6


def _reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def _dataset(rows: int = 64) -> Dataset:
    return Dataset.from_list(
        [{"prompt": f"{i % 9 + 1}{i * 7 % 9 + 1}{i * 5 % 9 + 1}|0{i % 90 + 10}:"} for i in range(rows)]
    )


def _config(tmp_path, **overrides) -> BandPOConfig:
    values = dict(
        output_dir=str(tmp_path / "out"),
        method="band",
        beta=0.0,
        num_generations=4,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        steps_per_generation=2,
        num_iterations=2,
        max_completion_length=MAX_COMPLETION,
        max_steps=4,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    return BandPOConfig(**values)


def _trainer(tmp_path, **overrides) -> BandPOTrainer:
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = BandPOTrainer(
            model=model,
            reward_funcs=_reward,
            args=_config(tmp_path, **overrides),
            train_dataset=_dataset(),
            processing_class=tokenizer,
        )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


@pytest.fixture(scope="module")
def trained_batch(tmp_path_factory):
    """A trainer, one generation batch from it (with bounds), and the policy moved away from the sampler."""
    torch.manual_seed(0)
    trainer = _trainer(tmp_path_factory.mktemp("trl"))
    rows = [trainer.train_dataset[i] for i in range(4) for _ in range(4)]
    batch = trainer._generate_and_score_completions(rows)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.add_(0.4 * torch.randn(parameter.shape, generator=generator))
    # strong, mixed-sign advantages so that every clip region (up, down, dual) is exercised
    batch["advantages"] = torch.tensor([2.0, -2.0, 1.0, -1.5] * 4)
    return trainer, batch


def test_bounds_of_a_generation_batch_come_from_its_old_logps(trained_batch):
    _, batch = trained_batch
    expected = get_method("band")(batch["old_per_token_logps"])
    assert torch.equal(batch["ratio_low"], expected.ratio_low)
    assert torch.equal(batch["ratio_high"], expected.ratio_high)
    assert batch["ratio_low"].shape == batch["completion_ids"].shape


def test_bounds_are_computed_once_per_generation_batch_in_train(tmp_path):
    """In `trainer.train()`: one bound computation per generation batch, reused by its 2 x 2 optimizer steps."""
    torch.manual_seed(0)
    trainer = _trainer(tmp_path, max_steps=8)  # steps_per_generation 2 x num_iterations 2: 4 steps a batch
    calls = {"generate": 0, "bounds": 0, "loss": 0}
    method = trainer.bound_method

    def counted_method(old_logp):
        calls["bounds"] += 1
        return method(old_logp)

    generate, compute_loss = trainer._generate_and_score_completions, trainer._compute_loss

    def counted_generate(inputs):
        calls["generate"] += 1
        return generate(inputs)

    def counted_loss(model, inputs):
        calls["loss"] += 1
        return compute_loss(model, inputs)

    trainer.bound_method = counted_method
    trainer._generate_and_score_completions = counted_generate
    trainer._compute_loss = counted_loss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert calls["generate"] == 2 and calls["loss"] == 8
    assert calls["bounds"] == calls["generate"]


@pytest.mark.parametrize("agg", sorted(AGG_TO_LOSS_TYPE))
@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("clip", {}),
        ("clip_higher", {}),
        ("dcpo", {}),
        ("band", {}),
        ("band_upper", {}),
        ("band", {"divergence": "tv", "delta": 0.1}),
    ],
)
def test_trl_loss_equals_policy_loss(trained_batch, method, params, agg):
    trainer, batch = trained_batch
    bound_method = get_method(method, **params)
    bounds = bound_method(batch["old_per_token_logps"])
    inputs = {**batch, "ratio_low": bounds.ratio_low, "ratio_high": bounds.ratio_high}
    trainer.loss_type = AGG_TO_LOSS_TYPE[agg]
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, inputs)
    logp = trainer._captured_logps
    ours = policy_loss(
        logp,
        batch["old_per_token_logps"],
        batch["advantages"],
        batch["completion_mask"],
        bounds=bounds,
        agg=agg,
        dual_clip_c=10.0,
        max_len=MAX_COMPLETION,
    )
    # the tensors must exercise the clip, or equality would prove nothing
    assert ours.metrics[mn.CLIP_FRAC_UP] > 0 and ours.metrics[mn.CLIP_FRAC_DOWN] > 0
    torch.testing.assert_close(loss, ours.loss, rtol=1e-5, atol=1e-6)
    parameters = [p for p in trainer.model.parameters() if p.requires_grad]
    grads_trl = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    grads_ours = torch.autograd.grad(ours.loss, parameters, allow_unused=True)
    for g_trl, g_ours in zip(grads_trl, grads_ours, strict=True):
        if g_trl is None or g_ours is None:
            assert g_trl is None and g_ours is None
        else:
            torch.testing.assert_close(g_trl, g_ours, rtol=1e-4, atol=1e-6)
    # TRL's own clip counters see the per-token bounds too
    trl_low = trainer._metrics["train"]["clip_ratio/low_mean"][-1]
    assert trl_low == pytest.approx(trainer._metrics["train"][mn.CLIP_FRAC_DOWN][-1], abs=1e-6)
    # epsilons are restored after the call
    assert isinstance(trainer.epsilon_low, float) and isinstance(trainer.epsilon_high, float)


def test_dual_clip_is_trl_delta(trained_batch):
    """TRL's delta caps the ratio of A < 0 tokens: the dual-clip cap binds somewhere and both losses agree."""
    trainer, batch = trained_batch
    trainer.loss_type = "grpo"
    bounds = get_method("clip")(batch["old_per_token_logps"])
    inputs = {**batch, "ratio_low": bounds.ratio_low, "ratio_high": bounds.ratio_high}
    original = trainer.args.delta
    try:
        trainer.args.delta = 1.5  # small c so that the cap binds on this batch
        loss = trainer._compute_loss(trainer.model, inputs)
    finally:
        trainer.args.delta = original
    ours = policy_loss(
        trainer._captured_logps,
        batch["old_per_token_logps"],
        batch["advantages"],
        batch["completion_mask"],
        bounds=bounds,
        dual_clip_c=1.5,
    )
    assert ours.metrics[mn.CLIP_FRAC_DUAL] > 0
    torch.testing.assert_close(loss, ours.loss, rtol=1e-5, atol=1e-6)
    without = policy_loss(
        trainer._captured_logps,
        batch["old_per_token_logps"],
        batch["advantages"],
        batch["completion_mask"],
        bounds=bounds,
        dual_clip_c=None,
    )
    assert not torch.allclose(without.loss, ours.loss)


def test_band_metrics_are_logged_with_catalogued_keys(trained_batch):
    trainer, batch = trained_batch
    trainer._metrics["train"].clear()
    trainer.loss_type = "grpo"
    trainer._compute_loss(trainer.model, batch)
    logged = trainer._metrics["train"]
    for key in (mn.CLIP_FRAC_UP, mn.CLIP_FRAC_DOWN, mn.BOUNDS_LOW_MEAN, *mn.CLIP_TOKENS_BINS):
        assert key in logged and math.isfinite(logged[key][-1])
    assert logged[mn.BOUNDS_HIGH_MEAN][-1] > 1.0
    expected = band_metrics(
        trainer._captured_logps,
        batch["old_per_token_logps"],
        batch["advantages"],
        batch["completion_mask"],
        (batch["ratio_low"], batch["ratio_high"]),
    )
    populated = [label for label in mn.PROB_BIN_LABELS if expected[mn.clip_tokens_bin(label)] > 0]
    assert populated and len(populated) < len(mn.PROB_BIN_LABELS)  # the batch has empty bins too
    for label in mn.PROB_BIN_LABELS:
        for key in (mn.clip_frac_up_bin(label), mn.clip_frac_down_bin(label)):
            if label in populated:
                assert logged[key] == [pytest.approx(expected[key].item(), abs=1e-6)]
            else:  # an empty bin gives no value (TRL would average a 0 in), not 0.0
                assert key not in logged


def test_an_empty_bin_does_not_drag_the_logged_mean_to_zero(trained_batch):
    """Over two micro-batches, a bin's fraction is the mean over those that had tokens in the bin."""
    trainer, batch = trained_batch
    trainer.loss_type = "grpo"
    old_logp = batch["old_per_token_logps"]
    p_old = old_logp.exp()
    label = next(
        label
        for i, label in enumerate(mn.PROB_BIN_LABELS)
        if (
            (p_old >= mn.PROB_BIN_EDGES[i])
            & (p_old < mn.PROB_BIN_EDGES[i + 1])
            & (batch["completion_mask"] > 0)
        )
        .any()
        .item()
    )
    index = mn.PROB_BIN_LABELS.index(label)
    # second micro-batch: the same rows with p_old moved out of the bin (to p = 0.999, the last bin)
    in_bin = (p_old >= mn.PROB_BIN_EDGES[index]) & (p_old < mn.PROB_BIN_EDGES[index + 1])
    moved = {**batch, "old_per_token_logps": torch.where(in_bin, math.log(0.999), old_logp)}
    trainer._metrics["train"].clear()
    for inputs in (batch, moved):
        trainer._compute_loss(trainer.model, inputs)
    logged = trainer._metrics["train"]
    assert logged[mn.clip_tokens_bin(label)][1] == 0.0
    assert len(logged[mn.clip_frac_up_bin(label)]) == 1  # only the micro-batch with tokens in the bin


def test_trl_kl_term_is_plain_k3(trained_batch):
    """beta > 0: TRL's loss is policy_loss + beta * aggregate_loss(k3), not k3 times the ratio."""
    trainer, batch = trained_batch
    assert trainer.args.use_bias_correction_kl is False  # BandPOConfig's default (TRL's is True)
    generator = torch.Generator().manual_seed(2)
    old_logp = batch["old_per_token_logps"]
    bounds = get_method("band")(old_logp)
    inputs = {**batch, "ratio_low": bounds.ratio_low, "ratio_high": bounds.ratio_high}
    trainer.loss_type = "grpo"
    trainer._compute_loss(trainer.model, inputs)  # the current logps, to put the reference near them
    current = trainer._captured_logps.detach()
    # a reference within ~0.3 nats of the policy: k3 stays far below the clamp of kl_penalty (10)
    ref_logp = current + 0.3 * torch.randn(current.shape, generator=generator, dtype=current.dtype)
    inputs["ref_per_token_logps"] = ref_logp
    beta = 0.05
    trainer.loss_type = "grpo"
    trainer.beta = beta
    try:
        loss = trainer._compute_loss(trainer.model, inputs)
    finally:
        trainer.beta = 0.0
    logp, mask = trainer._captured_logps, batch["completion_mask"]
    ours = policy_loss(logp, old_logp, batch["advantages"], mask, bounds=bounds, dual_clip_c=10.0)
    kl = aggregate_loss(kl_penalty(logp, ref_logp, "k3"), mask, "seq_mean_token_mean")
    expected = ours.loss + beta * kl
    assert kl.item() > 1e-3 and ours.metrics[mn.RATIO_MAX] > 1.1  # k3 x ratio would differ visibly
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    parameters = [p for p in trainer.model.parameters() if p.requires_grad]
    grads_trl = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    grads_ours = torch.autograd.grad(expected, parameters, allow_unused=True)
    for g_trl, g_ours in zip(grads_trl, grads_ours, strict=True):
        if g_trl is not None and g_ours is not None:
            torch.testing.assert_close(g_trl, g_ours, rtol=1e-4, atol=1e-6)


# --- bounds from old log-probs whenever TRL has them ---------------------------------------------------


def test_a_batch_with_old_logps_but_no_bounds_gets_bounds_from_the_old_logps(trained_batch):
    trainer, batch = trained_batch
    trainer.loss_type = "grpo"
    inputs = {key: value for key, value in batch.items() if key not in ("ratio_low", "ratio_high")}
    trainer._compute_loss(trainer.model, inputs)
    low, high = trainer._captured_bounds
    expected = get_method("band")(batch["old_per_token_logps"])
    assert torch.equal(low, expected.ratio_low) and torch.equal(high, expected.ratio_high)
    # the policy moved (see the fixture): bounds from the current log-probs would differ
    current = get_method("band")(trainer._captured_logps.detach())
    assert not torch.allclose(current.ratio_high, expected.ratio_high)


def test_malformed_bounds_in_the_batch_are_refused(trained_batch):
    trainer, batch = trained_batch
    half = {key: value for key, value in batch.items() if key != "ratio_high"}
    with pytest.raises(ValueError, match="only one of ratio_low"):
        trainer._compute_loss(trainer.model, half)
    short = {**batch, "ratio_low": batch["ratio_low"][:, :-1], "ratio_high": batch["ratio_high"][:, :-1]}
    with pytest.raises(ValueError, match="per token of the same rows"):
        trainer._compute_loss(trainer.model, short)


# --- TRL's clip counters under per-token bounds ---------------------------------------------------------


def test_trl_clip_ratio_high_counts_tokens_above_the_dual_clip_cap(trained_batch):
    """Upper bound 10 = delta and ratio 20: TRL caps the ratio at 10 before testing > 10 and logs 0."""
    from trl import GRPOTrainer

    trainer, batch = trained_batch
    trainer.loss_type = "grpo"
    trainer._compute_loss(trainer.model, batch)
    current = trainer._captured_logps.detach()
    mask = batch["completion_mask"].bool()
    above = mask & (torch.arange(current.shape[1]) % 2 == 0)  # (B, T): every other token jumps to ratio 20
    old_logp = torch.where(above, current - math.log(20.0), current - 0.01)
    inputs = {
        **batch,
        "old_per_token_logps": old_logp,
        "ratio_low": torch.full_like(current, 0.8),
        "ratio_high": torch.full_like(current, 10.0),
        "advantages": torch.ones(current.shape[0]),
    }
    true_fraction = (above.sum() / mask.sum()).item()
    assert 0 < true_fraction < 1
    logged = trainer._metrics["train"]
    logged.clear()
    # TRL alone (its _compute_loss with the same per-token epsilons, no bandpo correction) logs 0
    trainer.epsilon_low, trainer.epsilon_high = 1 - inputs["ratio_low"], inputs["ratio_high"] - 1
    try:
        GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    finally:
        trainer.epsilon_low, trainer.epsilon_high = 0.2, 0.2
    assert logged["clip_ratio/high_mean"] == [0.0] and logged["clip_ratio/high_max"] == [0.0]
    logged.clear()
    trainer._compute_loss(trainer.model, inputs)
    assert logged["clip_ratio/high_mean"] == [pytest.approx(true_fraction, abs=1e-6)]
    assert logged["clip_ratio/region_mean"] == [pytest.approx(true_fraction, abs=1e-6)]
    assert logged[mn.CLIP_FRAC_UP] == logged["clip_ratio/high_mean"]
    per_row = (above.sum(-1) / mask.sum(-1)).max().item()
    assert logged["clip_ratio/high_max"] == [pytest.approx(per_row, abs=1e-6)]


def test_every_method_identical_uses_trls_criterion(tmp_path):
    """steps_per_generation=3 within GA=4: not a multiple, so TRL computes old logps and the ratio moves."""
    config = _config(
        tmp_path,
        num_iterations=1,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        steps_per_generation=3,
    )
    assert not every_method_identical(config)
    trainer = _trainer(
        tmp_path,
        num_iterations=1,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        steps_per_generation=3,
    )
    batch = trainer._generate_and_score_completions(
        [trainer.train_dataset[i] for i in range(3) for _ in range(4)]
    )
    assert "old_per_token_logps" in batch and "ratio_low" in batch
    with pytest.warns(UserWarning, match="every method is identical"):
        assert every_method_identical(
            _config(tmp_path, num_iterations=1, gradient_accumulation_steps=4, steps_per_generation=2)
        )


def test_without_old_logps_bounds_come_from_the_sampling_policy(tmp_path):
    """num_iterations=1 and one micro-batch per generation: TRL skips old logps; bounds use the current ones."""
    with pytest.warns(UserWarning, match="every method is identical"):
        _config(tmp_path, num_iterations=1, steps_per_generation=1)
    trainer = _trainer(tmp_path, num_iterations=1, steps_per_generation=1)
    assert every_method_identical(trainer.args)
    rows = [trainer.train_dataset[i] for i in range(2) for _ in range(4)]
    batch = trainer._generate_and_score_completions(rows)
    assert "old_per_token_logps" not in batch and "ratio_low" not in batch
    batch["advantages"] = torch.tensor([1.0, -1.0] * 4)
    loss = trainer._compute_loss(trainer.model, batch)
    logp = trainer._captured_logps
    low, high = trainer._captured_bounds
    expected = get_method("band")(logp.detach())
    torch.testing.assert_close(low, expected.ratio_low)
    torch.testing.assert_close(high, expected.ratio_high)
    ours = policy_loss(logp, logp.detach(), batch["advantages"], batch["completion_mask"], bounds=expected)
    torch.testing.assert_close(loss, ours.loss, rtol=1e-5, atol=1e-6)
    assert trainer._metrics["train"][mn.CLIP_FRAC][-1] == 0.0  # ratio 1: nothing clips


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"importance_sampling_level": "sequence"}, "importance_sampling_level"),
        ({"loss_type": "cispo"}, "loss_type"),
        ({"loss_type": "sapo"}, "loss_type"),
        ({"loss_type": "vespo"}, "loss_type"),
        (
            {"loss_type": "luspo", "importance_sampling_level": "sequence"},
            "importance_sampling_level|loss_type",
        ),
        ({"method": "nope"}, "nope"),
        ({"method_params": {"delta": -1.0}}, "delta"),
        ({"method_params": "{not json"}, "method_params"),
        ({"dual_clip_c": 0.5}, "dual_clip_c"),
        ({"delta": 5.0}, "dual_clip_c"),
        ({"delta": None}, "dual_clip_c"),
        ({"epsilon": 0.3}, "epsilon"),
        ({"epsilon_high": 0.28}, "epsilon"),
        ({"use_liger_kernel": True}, "use_liger_kernel"),
    ],
)
def test_incompatible_settings_are_refused(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        _config(tmp_path, **overrides)


def test_ratio_max_above_delta_warns(tmp_path):
    with pytest.warns(UserWarning, match="ratio_max"):
        _config(tmp_path, method_params={"ratio_max": 100.0})


def test_trainer_requires_bandpo_config(tmp_path):
    from trl import GRPOConfig

    args = GRPOConfig(
        output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2, report_to=[], use_cpu=True
    )
    with pytest.raises(TypeError, match="BandPOConfig"):
        BandPOTrainer(model=build_tiny_model(build_char_tokenizer()), reward_funcs=_reward, args=args)


def test_method_params_json_string_and_paper_defaults(tmp_path):
    config = _config(tmp_path, method_params='{"delta": 0.1, "divergence": "tv"}')
    assert config.bound_method.params["delta"] == 0.1
    defaults = BandPOConfig(output_dir=str(tmp_path / "d"), report_to=[], use_cpu=True)
    assert defaults.loss_type == "grpo" and defaults.delta == 10.0 and defaults.beta == 0.001
    assert defaults.use_bias_correction_kl is False  # the paper's plain k3
    assert defaults.generation_batch_size == 256 * 16
    # 4 optimiser steps per generation batch (minibatches of 64 prompts)
    assert defaults.steps_per_generation // defaults.gradient_accumulation_steps == 4
    assert not every_method_identical(defaults)
    sized = BandPOConfig(
        output_dir=str(tmp_path / "g"),
        report_to=[],
        use_cpu=True,
        generation_batch_size=64,
        num_generations=4,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=1,
    )
    assert sized.steps_per_generation == 4


def test_short_training_logs_band_metrics_and_moves_the_policy(tmp_path):
    trainer = _trainer(tmp_path, max_steps=4, method="band")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    history = []

    from transformers import TrainerCallback

    class Keep(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            history.append(dict(logs or {}))

    trainer.add_callback(Keep())
    trainer.train()
    records = [h for h in history if mn.CLIP_FRAC_UP in h]
    assert len(records) == 4
    assert all(math.isfinite(r["loss"]) for r in records)
    assert any(r[mn.RATIO_MAX] != 1.0 for r in records[1:])  # later minibatches are off-policy
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


# --- the adapter's boundaries and the dual-clip name ---------------------------------------------------


def test_adapter_imports_neither_the_app_nor_a_second_aggregation_list():
    import ast
    import inspect

    import bandpo.integrations.trl as adapter
    from bandpo.losses import AGG_MODES

    tree = ast.parse(inspect.getsource(adapter))
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    ]
    assert not [name for name in imported if name and name.startswith("bandpo.training")]
    assert set(AGG_TO_LOSS_TYPE) < set(AGG_MODES)  # seq_mean_token_sum has no TRL loss type


@pytest.mark.parametrize(("dual_clip_c", "delta"), [(10.0, 10.0), (5.0, 5.0), (None, None), (math.inf, None)])
def test_dual_clip_c_sets_trls_delta(tmp_path, dual_clip_c, delta):
    config = _config(tmp_path, dual_clip_c=dual_clip_c)
    assert config.delta == delta
    assert _config(tmp_path, dual_clip_c=dual_clip_c, delta=dual_clip_c).delta == delta  # agreeing: accepted
    config.validate()  # the trainer's second check accepts what __post_init__ derived


# --- validation again at trainer start, and settings that would be silently ignored --------------------


@pytest.mark.parametrize(
    ("field_name", "value", "match"),
    [
        ("loss_type", "sapo", "loss_type"),
        ("importance_sampling_level", "sequence", "importance_sampling_level"),
        ("epsilon", 0.3, "epsilon"),
        ("epsilon_high", 0.28, "epsilon"),
        ("use_liger_kernel", True, "use_liger_kernel"),
        ("delta", 2.0, "dual_clip_c"),
        ("dual_clip_c", 2.0, "dual_clip_c"),  # delta (10) no longer follows it
        ("method", "nope", "nope"),
        ("method_params", {"delta": -1.0}, "delta"),  # the method built at first is not reused
    ],
)
def test_trainer_refuses_a_field_changed_after_the_config(tmp_path, field_name, value, match):
    args = _config(tmp_path)
    setattr(args, field_name, value)
    with pytest.raises(ValueError, match=match):
        BandPOTrainer(
            model=build_tiny_model(build_char_tokenizer(), seed=0),
            reward_funcs=_reward,
            args=args,
            train_dataset=_dataset(),
            processing_class=build_char_tokenizer(),
        )


def test_a_built_method_is_used_as_it_is_from_config_to_trainer(tmp_path, monkeypatch):
    """`built_method` (TrainConfig's) is the trainer's method: its checks (delta's range...) run once."""
    from bandpo.methods import DeclaredMethod

    built = get_method("band", delta=0.1)
    builds = []
    real = DeclaredMethod.__post_init__
    monkeypatch.setattr(DeclaredMethod, "__post_init__", lambda self: builds.append(self) or real(self))
    args = _config(tmp_path, method_params={"delta": 0.1}, built_method=built)
    trainer = BandPOTrainer(
        model=build_tiny_model(build_char_tokenizer(), seed=0),
        reward_funcs=_reward,
        args=args,
        train_dataset=_dataset(),
        processing_class=build_char_tokenizer(),
    )
    assert trainer.bound_method is built and args.bound_method is built and builds == []
    args.method_params = {"delta": 0.2}  # changed: built again, once
    assert args.bound_method.params["delta"] == 0.2 and args.bound_method is args.bound_method
    assert len(builds) == 1
    other = _config(tmp_path, method="clip", built_method=built)  # not clip's: clip's own is built
    assert other.bound_method.name == "clip" and other.bound_method is not built


def test_steps_per_generation_follows_gradient_accumulation_and_dozens_of_steps_warn(tmp_path):
    base = dict(output_dir=str(tmp_path), report_to=[], use_cpu=True, num_generations=4)
    config = BandPOConfig(**base, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    assert config.steps_per_generation == 8 and config.optimizer_steps_per_generation == 4
    with pytest.warns(UserWarning, match="feeds 64 optimiser steps"):
        BandPOConfig(
            **base,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=1,
            steps_per_generation=32,
            num_iterations=2,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # 16 steps: no warning
        BandPOConfig(
            **base, per_device_train_batch_size=4, gradient_accumulation_steps=1, steps_per_generation=16
        )


# --- start-up self-check: a TRL where the mechanism no longer holds fails loudly -----------------------


def _scalar_epsilons(original):
    def compute_loss(self, model, inputs):
        self.epsilon_low, self.epsilon_high = 0.2, 0.2  # a TRL that reads its own fixed range
        return original(self, model, inputs)

    return compute_loss


def _renamed_old_logps(original):
    def compute_loss(self, model, inputs):
        inputs = {("sampler_logps" if k == "old_per_token_logps" else k): v for k, v in inputs.items()}
        return original(self, model, inputs)

    return compute_loss


@pytest.mark.parametrize("break_it", [_scalar_epsilons, _renamed_old_logps])
def test_self_check_refuses_a_trl_whose_loss_ignores_the_bounds(tmp_path, monkeypatch, break_it):
    from trl import GRPOTrainer

    from bandpo.integrations.trl import SUPPORTED_TRL, TRLMechanismError

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", break_it(GRPOTrainer._compute_loss))
    with pytest.raises(TRLMechanismError, match=r"trl 1\.16") as raised:
        _trainer(tmp_path)
    assert SUPPORTED_TRL in str(raised.value) and "bandpo.policy_loss" in str(raised.value)


def test_self_check_refuses_a_split_that_drops_extra_keys(tmp_path, monkeypatch):
    from trl.trainer import grpo_trainer

    from bandpo.integrations.trl import TRLMechanismError

    original = grpo_trainer.split_tensor_dict

    def split(batch, n):
        return original({k: v for k, v in batch.items() if not k.startswith("ratio_")}, n)

    monkeypatch.setattr(grpo_trainer, "split_tensor_dict", split)
    with pytest.raises(TRLMechanismError, match="carry extra per-token keys"):
        _trainer(tmp_path)


def test_a_generation_batch_without_old_logps_is_refused_when_the_policy_moves(tmp_path, monkeypatch):
    from trl import GRPOTrainer

    from bandpo.integrations.trl import TRLMechanismError

    trainer = _trainer(tmp_path)
    assert not every_method_identical(trainer.args)
    original = GRPOTrainer._generate_and_score_completions

    def without_old(self, inputs):
        output = original(self, inputs)
        output.pop("old_per_token_logps")
        return output

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", without_old)
    with pytest.raises(TRLMechanismError, match="old_per_token_logps"):
        trainer._generate_and_score_completions(
            [trainer.train_dataset[i] for i in range(2) for _ in range(4)]
        )


def test_pooling_over_processes_equals_the_metrics_of_the_union_of_their_tokens():
    """Two 'processes' with different token counts: pooled = band_metrics of all their tokens together."""
    from bandpo.integrations.trl import _pool_over_processes

    generator = torch.Generator().manual_seed(3)
    old_logp = -3 * torch.rand((5, 6), generator=generator)  # (B, T)
    logp = old_logp + 0.8 * torch.randn((5, 6), generator=generator)
    advantages = torch.tensor([1.0, -1.0, 2.0, -0.5, 1.0])
    mask = torch.ones(5, 6)
    mask[0, 2:] = 0  # rank 0 gets 2 short rows, rank 1 three longer ones
    mask[1, 1:] = 0
    bounds = get_method("band", delta=0.02)(old_logp)
    parts = [slice(0, 2), slice(2, 5)]
    local = []
    for part in parts:
        metrics = band_metrics(
            logp[part], old_logp[part], advantages[part], mask[part], (bounds[0][part], bounds[1][part])
        )
        ratio = (logp[part] - old_logp[part]).exp()
        up = (mask[part] > 0) & (advantages[part, None] > 0) & (ratio > bounds[1][part])
        per_row = up.sum(-1) / mask[part].sum(-1)
        local.append((metrics, mask[part].sum(), torch.where(per_row.isnan(), -math.inf, per_row).amax()))
    vectors = []
    for metrics, tokens, high_max in local:  # what each process contributes to the gather
        _pool_over_processes(lambda t: vectors.append(t) or t, metrics, tokens, high_max)
    pooled = _pool_over_processes(lambda t: torch.cat(vectors), *local[0])
    union = band_metrics(logp, old_logp, advantages, mask, bounds)
    for key in (
        mn.CLIP_FRAC_UP,
        mn.CLIP_FRAC_DOWN,
        mn.CLIP_FRAC,
        mn.BOUNDS_HIGH_MEAN,
        mn.RATIO_MEAN,
        mn.RATIO_MAX,
    ):
        assert pooled[key] == pytest.approx(union[key].item(), rel=1e-6, abs=1e-7)
    for label in mn.PROB_BIN_LABELS:
        assert pooled[mn.clip_tokens_bin(label)] == union[mn.clip_tokens_bin(label)].item()
        if union[mn.clip_tokens_bin(label)] > 0:
            assert pooled[mn.clip_frac_up_bin(label)] == pytest.approx(
                union[mn.clip_frac_up_bin(label)].item()
            )
        else:
            assert mn.clip_frac_up_bin(label) not in pooled
    per_process_mean = sum(m[mn.CLIP_FRAC_DOWN].item() for m, _, _ in local) / 2
    assert per_process_mean != pytest.approx(pooled[mn.CLIP_FRAC_DOWN], abs=1e-3)  # the old pooling differs
    assert pooled["clip_ratio/high_mean"] == pooled[mn.CLIP_FRAC_UP]
    assert pooled["clip_ratio/high_max"] == pytest.approx(max(h.item() for _, _, h in local))
