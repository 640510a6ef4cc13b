"""The metric catalogue: one entry per key, entries checked, and `over_steps` aggregating as declared."""

from __future__ import annotations

import math

import pytest

from bandpo import metric_names as mn
from bandpo.metric_names import Metric


@pytest.fixture
def private_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mn, "_CATALOGUE", dict(mn._CATALOGUE))


def test_every_key_constant_has_one_entry() -> None:
    keys = {
        value
        for name, value in vars(mn).items()
        if name.isupper() and isinstance(value, str) and "/" in value
    }
    keys |= {*mn.CLIP_FRAC_UP_BINS, *mn.CLIP_FRAC_DOWN_BINS, *mn.CLIP_TOKENS_BINS}
    entries = [entry.key for entry in mn.catalogued()]
    assert len(entries) == len(set(entries))
    assert set(entries) == keys
    assert all(mn.metric(key).key == key for key in keys)


def test_every_view_shows_catalogued_metrics_once() -> None:
    views = (
        mn.COMPARISON_COLUMNS,
        mn.PAIRED_DIFFERENCES,
        mn.SWEEP_PANELS,
        mn.EVAL_CURVES,
        mn.RUN_SUMMARY_ROWS,
    )
    for view in views:
        assert len(view) == len(set(view))
        assert all(isinstance(mn.metric(key), Metric) for key in view)


def test_labels_fill_in_k_and_the_rare_strategy() -> None:
    rare_pass = mn.metric(mn.EVAL_RARE_PASS_AT_K)
    assert rare_pass.text(k=16) == "pass@16, prompts needing the rare strategy"
    assert rare_pass.text("short", k=16) == "rare pass@16"
    assert rare_pass.text("summary", k=8, rare="'*'") == "pass@8, prompts needing '*'"
    assert mn.metric(mn.EVAL_MEAN_AT_K).text() == "mean@k (= pass@1)"  # no k known: the letter
    assert mn.metric(mn.EVAL_PASS_AT_K).text("short", k=4) == "pass@4"  # no short form: the label
    assert mn.metric(mn.EVAL_DISTINCT_CORRECT).format(1.5) == "1.50"
    assert mn.metric(mn.EVAL_PASS_AT_K).format(0.5) == "0.500"


def test_the_fraction_metrics_are_the_rates_in_0_1() -> None:
    eval_fractions = {
        entry.key for entry in mn.catalogued() if entry.fraction and entry.key.startswith("eval/")
    }
    assert eval_fractions == {
        mn.EVAL_MEAN_AT_K,
        mn.EVAL_PASS_AT_1,
        mn.EVAL_PASS_AT_K,
        mn.EVAL_MAJ_AT_K,
        mn.EVAL_RARE_PASS_AT_K,
        mn.EVAL_RARE_MEAN_AT_K,
        mn.EVAL_RARE_USAGE,
    }


def test_an_unknown_key_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"not catalogued; declare it in bandpo\.metric_names"):
        mn.metric("eval/nope")


@pytest.mark.usefixtures("private_catalogue")
def test_register_returns_the_key_and_refuses_a_duplicate() -> None:
    assert mn.register_metric(Metric(key="eval/new_thing", label="new thing")) == "eval/new_thing"
    assert mn.metric("eval/new_thing").label == "new thing"
    with pytest.raises(ValueError, match="already catalogued"):
        mn.register_metric(Metric(key=mn.EVAL_PASS_AT_K, label="pass@{k} again"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"key": "pass_at_k", "label": "x"}, "'namespace/name' in snake case"),
        ({"key": "eval/Pass", "label": "x"}, "'namespace/name' in snake case"),
        ({"key": "eval/x", "label": ""}, "label is empty"),
        ({"key": "eval/x", "label": "x", "digits": -1}, "digits=-1 must be an integer >= 0"),
        ({"key": "eval/x", "label": "x", "digits": 2.5}, "digits=2.5 must be an integer >= 0"),
        ({"key": "eval/x", "label": "x", "over_steps": "median"}, "over_steps='median' must be one of"),
        ({"key": "eval/x", "label": "x", "weight": "clip/tokens_p0_001"}, "a weight needs over_steps='mean'"),
        ({"key": "eval/x", "label": "x@{n}"}, r"label 'x@\{n\}' may hold only \{k\} and \{rare\}"),
        ({"key": "eval/x", "label": "x", "short": "x {"}, "short 'x {' may hold only"),
    ],
)
def test_a_bad_entry_is_refused_with_the_field_named(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Metric(**fields)


def test_over_steps_takes_the_last_the_mean_or_the_sum_of_the_finite_values() -> None:
    records = [
        {mn.EVAL_PASS_AT_K: 0.2, mn.TRAIN_REWARD: 1.0, mn.REWARD_ERRORS: 1},
        {mn.EVAL_PASS_AT_K: 0.4, mn.TRAIN_REWARD: math.nan, mn.REWARD_ERRORS: 2},
        {mn.TRAIN_REWARD: 3.0},
        {mn.EVAL_PASS_AT_K: None, mn.TRAIN_REWARD: "n/a", mn.REWARD_ERRORS: 4},
    ]
    assert mn.over_steps(records, mn.EVAL_PASS_AT_K) == pytest.approx(0.4)  # last finite value
    assert mn.over_steps(records, mn.TRAIN_REWARD) == pytest.approx(2.0)  # nan and text left out
    assert mn.over_steps(records, mn.REWARD_ERRORS) == pytest.approx(7.0)
    assert math.isnan(mn.over_steps(records, mn.TRAIN_ENTROPY))  # never logged
    assert mn.over_steps([{mn.RATIO_MAX: 1.5}, {mn.RATIO_MAX: 3.0}, {mn.RATIO_MAX: 2.0}], mn.RATIO_MAX) == 3.0


def test_a_bins_fraction_is_weighted_by_its_token_count_where_every_step_has_one() -> None:
    up, tokens = mn.clip_frac_up_bin("p0_001"), mn.clip_tokens_bin("p0_001")
    weighted = [{up: 0.5, tokens: 1.0}, {up: 0.0, tokens: 3.0}]
    assert mn.over_steps(weighted, up) == pytest.approx(0.125)  # 0.5 of 1 token among 4
    unweighted = [{up: 0.5, tokens: 1.0}, {up: 0.0}]  # a log without counts: the plain mean
    assert mn.over_steps(unweighted, up) == pytest.approx(0.25)
    assert mn.over_steps([{up: 0.5, tokens: 0.0}], up) == pytest.approx(0.5)  # no token: the plain mean


def test_prob_bin_text_closes_the_last_bin() -> None:
    assert mn.prob_bin_text("p0_001") == "p_old in [0, 0.01)"
    assert mn.prob_bin_text("p09_1") == "p_old in [0.9, 1]"
