"""`bandpo tokens` (`bandpo.experiments.token_regime`): the sampled tokens' old log-probs against a plain
forward pass, the per-bin report against the methods' own bounds, and the CLI's combined plot."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bandpo import cli, get_method
from bandpo.experiments import token_regime

pytest.importorskip("transformers")


def test_bin_labels_cover_the_issue_bins():
    assert token_regime.bin_labels() == ["<0.001", "0.001–0.01", "0.01–0.1", "0.1–0.5", "0.5–0.9", "≥0.9"]


def test_report_shares_and_bounds_match_the_methods():
    p = torch.tensor([1e-4, 5e-3, 0.05, 0.3, 0.3, 0.7, 0.95, 1.0], dtype=torch.float64)
    methods = [("clip", get_method("clip")), ("band", get_method("band"))]
    report = token_regime.regime_report(p.log(), methods)
    assert report["tokens"] == 8
    assert [entry["count"] for entry in report["bins"]] == [1, 1, 1, 2, 1, 2]
    assert math.isclose(sum(entry["share"] for entry in report["bins"]), 1.0)
    middle = report["bins"][3]
    assert middle["median_p"] == pytest.approx(0.3)
    assert middle["methods"]["clip"]["ratio_high"] == pytest.approx(1.2)
    band_low, band_high = get_method("band")(torch.tensor([math.log(0.3)], dtype=torch.float64))
    assert middle["methods"]["band"]["ratio_low"] == pytest.approx(float(band_low[0]))
    assert middle["methods"]["band"]["ratio_high"] == pytest.approx(float(band_high[0]))
    assert middle["methods"]["clip"]["mean_prob_rise"] == pytest.approx(0.2 * 0.3)
    top = report["bins"][-1]  # a probability cannot pass 1: the ratio is capped at 1/p (0.95 -> 1, 1 -> 1)
    assert top["methods"]["clip"]["mean_prob_rise"] == pytest.approx((0.05 + 0.0) / 2)


def test_sampled_old_logp_are_seeded_log_probs():
    from bandpo.training.model import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=3)
    prompts = [tokenizer("123|045:")["input_ids"], tokenizer("98|7:")["input_ids"]]
    temperature = 0.7
    old_logp = token_regime.sample_old_logp(
        model, tokenizer, prompts, samples=3, temperature=temperature, max_new_tokens=6, seed=5, batch_size=4
    )
    assert old_logp.dtype == torch.float64 and 0 < old_logp.numel() <= 2 * 3 * 6
    assert bool((old_logp <= 0).all())
    # seeded: the same samples again, whatever the global RNG did in between
    torch.rand(3)
    again = token_regime.sample_old_logp(
        model, tokenizer, prompts, samples=3, temperature=temperature, max_new_tokens=6, seed=5, batch_size=4
    )
    torch.testing.assert_close(old_logp, again)


def test_sampled_old_logp_match_forward_pass_of_each_sequence(monkeypatch):
    from bandpo.training.model import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=3)
    prompt = tokenizer("123|045:")["input_ids"]
    captured = {}
    generate = model.generate

    def recording_generate(**kwargs):
        output = generate(**kwargs)
        captured["sequences"] = output.sequences
        return output

    monkeypatch.setattr(model, "generate", recording_generate)
    old_logp = token_regime.sample_old_logp(
        model, tokenizer, [prompt], samples=1, temperature=0.5, max_new_tokens=5, seed=1
    )
    sequence = captured["sequences"][0]  # (len(prompt) + t,)
    completion = sequence[len(prompt) :]
    eos = (completion == tokenizer.eos_token_id).nonzero()
    length = int(eos[0]) + 1 if len(eos) else len(completion)
    with torch.no_grad():
        logits = model(sequence.unsqueeze(0)).logits[0].double() / 0.5  # (L, V)
    expected = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)  # (t, V): position i predicts i + 1
    expected = expected.gather(-1, completion.unsqueeze(-1)).squeeze(-1)[:length]
    torch.testing.assert_close(old_logp, expected, rtol=1e-5, atol=1e-5)


def test_cli_combines_earlier_reports(tmp_path, capsys):
    p = torch.tensor([0.05, 0.3, 0.95], dtype=torch.float64)
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        report = token_regime.regime_report(p.log(), [("clip", get_method("clip"))])
        (folder / "report.json").write_text(json.dumps(report))
    out = tmp_path / "out"
    assert (
        cli.main(["tokens", "--combine", str(tmp_path / "a"), str(tmp_path / "b"), "--output-dir", str(out)])
        == 0
    )
    assert (out / "tokens_combined.png").stat().st_size > 0
