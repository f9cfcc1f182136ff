"""`steer compare`'s verdicts on Zhang et al. 2025's claims: decided against resampling noise, not by a sign.

Small synthetic neuron sets and perplexities with known answers: a change within the noise is "not
shown" even where its sign agrees with the claim, a large one "holds" or "does not hold", and a
low-resource fall counts only beyond the untrained high-resource languages' fall.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

import steer
from steer.bench.alignment import (
    alignment_claims, alignment_markdown, text_bootstrap, write_alignment_report,
)
from steer.bench.compare import (
    combined, compare_markdown, compare_neuron_sets, neuron_bootstrap, shown, write_compare_report,
)
from steer.neurons import NeuronSet

LANGS = ["en", "de", "fr"]


# ------------------------------------------------------------------ the pieces


def test_neuron_bootstrap_agrees_with_resampling_the_rows():
    generator = torch.Generator().manual_seed(1)
    values = torch.randint(-1, 2, (300, 2), generator=generator)
    values[:, 1] = values[:, 1].abs() * 2  # a second statistic, drawn with the same neurons
    fast = neuron_bootstrap(values, n_boot=4000, seed=3)
    picks = torch.randint(300, (4000, 300), generator=generator)
    sums = values[picks].sum(1).to(torch.float64)  # [boot, stat], the plain bootstrap
    slow = torch.quantile(sums, torch.tensor([0.025, 0.975], dtype=torch.float64), dim=0).T.tolist()
    for (lo, hi), (slo, shi), total in zip(fast, slow, values.sum(0).tolist()):
        assert lo < total < hi
        assert lo == pytest.approx(slo, abs=4) and hi == pytest.approx(shi, abs=4)
    same = neuron_bootstrap(torch.full((50, 1), 2))  # no variation between neurons: no noise
    assert same == [[100.0, 100.0]]
    with pytest.raises(ValueError, match="at least one row"):
        neuron_bootstrap(torch.zeros(0, 2, dtype=torch.int64))


def test_shown_and_combined():
    assert shown([-5.0, -1.0], -1) == "holds" and shown([-5.0, -1.0], 1) == "does not hold"
    assert shown([-5.0, 2.0], -1) == "not shown" and shown([0.0, 0.0], 1) == "not shown"
    assert shown(None, 1) == "not shown"
    assert combined(["holds", "holds"]) == "holds"
    assert combined(["holds", "not shown"]) == "not shown"
    assert combined(["holds", "does not hold"]) == "does not hold"
    assert combined([]) == "not shown"


# ------------------------------------------------------------------ neuron counts


def _sets(n_neurons: int, lost: int, gained: int, untouched: int = 0):
    """A (base) and B (aligned) over en, de, fr in one layer of `n_neurons`:
    `lost` specific neurons (one language each, in turn) become shared with the next language in B;
    `gained` neurons that belonged to no language become specific in B; `untouched` stay specific."""
    a = torch.zeros(3, 1, n_neurons, dtype=torch.bool)
    b = torch.zeros(3, 1, n_neurons, dtype=torch.bool)
    i = 0
    for k in range(lost):
        a[k % 3, 0, i] = b[k % 3, 0, i] = b[(k + 1) % 3, 0, i] = True
        i += 1
    for k in range(gained):
        b[k % 3, 0, i] = True
        i += 1
    for k in range(untouched):
        a[k % 3, 0, i] = b[k % 3, 0, i] = True
        i += 1
    assert i <= n_neurons
    return NeuronSet(LANGS, a), NeuronSet(LANGS, b)


def test_a_large_specific_to_related_shift_holds_and_its_reverse_does_not():
    a, b = _sets(2000, lost=150, gained=0, untouched=150)
    claims = alignment_claims(compare_neuron_sets(a, b), None, [], [])
    claim = claims["specific_to_related"]
    assert claim["specific"] == [300, 150] and claim["related"] == [0, 150]
    assert claim["specific_ci"][1] < 0 < claim["related_ci"][0]
    assert claim["verdict"] == "holds"
    assert alignment_claims(compare_neuron_sets(b, a), None, [], [])["specific_to_related"]["verdict"] == "does not hold"


def test_a_change_within_the_noise_is_not_shown_though_its_sign_agrees():
    # 2 of 8 neurons move from specific to related: the sign says "holds", the resampling cannot tell.
    a, b = _sets(8, lost=2, gained=0, untouched=1)
    claim = alignment_claims(compare_neuron_sets(a, b), None, [], [])["specific_to_related"]
    assert claim["specific"] == [3, 1] and claim["related"] == [0, 2]
    assert claim["specific_ci"][0] < 0 <= claim["specific_ci"][1]
    assert claim["verdict"] == "not shown"
    # turnover: 40 specific neurons become related while 38 new ones become specific; net specific -2
    a, b = _sets(2000, lost=40, gained=38, untouched=100)
    claim = alignment_claims(compare_neuron_sets(a, b), None, [], [])["specific_to_related"]
    assert claim["specific"] == [140, 138] and claim["related"] == [0, 40]
    assert claim["related_ci"][0] > 0  # related rises beyond the noise, specific does not fall beyond it
    assert claim["verdict"] == "not shown"


def test_spontaneous_alignment_is_judged_on_the_untrained_languages_with_intervals(tmp_path):
    a, b = _sets(2000, lost=150, gained=0, untouched=150)
    result = compare_neuron_sets(a, b, trained=["de"])
    table = result["trained_vs_untrained"]
    for cls in ("specific", "related"):
        for group in ("trained", "untrained"):
            lo, hi = table[cls][group]["ci"]
            assert lo <= table[cls][group]["change"] <= hi
    assert table["untrained_follow_trained"] is True
    claim = alignment_claims(result, None, ["de"], [])["spontaneous_alignment"]
    assert claim["verdict"] == "holds" and claim["untrained_specific_ci"][1] < 0
    # few neurons: the same direction, but nothing beyond the noise
    a, b = _sets(8, lost=3, gained=0)
    small = compare_neuron_sets(a, b, trained=["de"])
    assert small["trained_vs_untrained"]["untrained_follow_trained"] is None
    assert alignment_claims(small, None, ["de"], [])["spontaneous_alignment"]["verdict"] == "not shown"
    text = compare_markdown(small)
    assert "is not shown" in text and "CI" in text
    every = compare_neuron_sets(a, b, trained=LANGS)  # no untrained language: nothing to follow
    assert every["trained_vs_untrained"]["specific"]["untrained"] is None
    assert every["trained_vs_untrained"]["untrained_follow_trained"] is None
    assert "spontaneous_alignment" not in alignment_claims(every, None, LANGS, [])


# ------------------------------------------------------------------ perplexity


def _ppl(changes: dict[str, list[float]], tokens: int = 20) -> dict:
    """Per language, per-text log-PPL before (3.0) and after (3.0 + change), `tokens` tokens per text."""
    ppl = {}
    for lang, deltas in changes.items():
        base = [3.0] * len(deltas)
        aligned = [3.0 + d for d in deltas]
        ppl[lang] = {"base": 3.0, "aligned": 3.0 + sum(deltas) / len(deltas), "change": sum(deltas) / len(deltas),
                     "per_text": {"base": base, "aligned": aligned, "n_tokens_base": [tokens] * len(deltas),
                                  "n_tokens_aligned": [tokens] * len(deltas)}}
    return ppl


NEURONS = compare_neuron_sets(*_sets(2000, lost=150, gained=0, untouched=150), trained=["de"])
STEADY = [-0.52, -0.48, -0.55, -0.45, -0.5, -0.5]


def _lifts(ppl, trained=("de",), low=("de", "fr")):
    return alignment_claims(NEURONS, ppl, list(trained), list(low))["lifts_low_resource"]


def test_a_low_resource_fall_beyond_the_untrained_high_resource_fall_holds():
    claim = _lifts(_ppl({"en": [-0.1, -0.12, -0.08, -0.1, -0.11, -0.09], "de": STEADY, "fr": STEADY}))
    assert claim["low_resource"] == ["de", "fr"] and claim["control"] == ["en"]
    assert claim["difference"] == pytest.approx(-0.4)
    assert claim["difference_ci"][1] < 0 and claim["verdict"] == "holds"
    assert claim["mean_log_ppl_change"]["low_resource_trained"] == pytest.approx(-0.5)
    assert claim["by_group"]["low_resource_trained"]["verdict"] == "holds"  # de alone
    assert claim["by_group"]["low_resource_untrained"]["languages"] == ["fr"]
    # a trained low-resource language falls far, an untrained one less than the control: told apart
    claim = _lifts(_ppl({"en": [-0.2, -0.22, -0.18, -0.2, -0.21, -0.19], "de": [-1.0] * 3 + [-1.1] * 3,
                         "fr": [-0.05, -0.04, -0.06, -0.05, -0.05, -0.05]}))
    assert claim["verdict"] == "holds"
    assert claim["by_group"]["low_resource_trained"]["verdict"] == "holds"
    assert claim["by_group"]["low_resource_untrained"]["verdict"] == "does not hold"
    assert claim["by_group"]["low_resource_untrained"]["difference"] == pytest.approx(0.15)
    # the reverse: low-resource languages gain less than the untrained high-resource one
    claim = _lifts(_ppl({"en": STEADY, "de": [-0.1] * 3 + [-0.12] * 3, "fr": [-0.1] * 6}))
    assert claim["verdict"] == "does not hold"


def test_a_fall_that_everyone_shares_or_that_the_texts_disagree_on_is_not_shown():
    # domain adaptation: every language falls by 0.5; the sign alone said "holds"
    claim = _lifts(_ppl({"en": [-0.4, -0.6, -0.5, -0.3, -0.7, -0.5], "de": STEADY, "fr": STEADY}))
    assert claim["low_resource_mean_change"] < 0 and claim["low_resource_ci"][1] < 0
    assert claim["difference_ci"][0] < 0 < claim["difference_ci"][1] and claim["verdict"] == "not shown"
    # a mean fall that the texts disagree on
    noisy = [-2.0, 1.5, -1.0, 1.0, -0.5, 0.2]
    claim = _lifts(_ppl({"en": [0.0] * 6, "de": noisy, "fr": noisy}))
    assert claim["difference"] < 0 and claim["verdict"] == "not shown"


def test_without_a_control_or_enough_texts_the_fall_is_not_shown():
    claim = _lifts(_ppl({"de": STEADY, "fr": STEADY}))  # every high-resource language trained or absent
    assert claim["verdict"] == "not shown" and "no untrained high-resource language" in claim["reason"]
    assert claim["low_resource_ci"][1] < 0  # the raw fall is still reported with its interval
    claim = _lifts(_ppl({"en": [-0.1], "de": [-0.5], "fr": [-0.5]}))
    assert claim["verdict"] == "not shown" and "at least 2" in claim["reason"]
    claim = _lifts(_ppl({"en": [-0.1] * 3}))
    assert claim["verdict"] == "not shown" and "no low-resource" in claim["reason"]


def test_text_bootstrap_pools_tokens_as_the_reported_change_does():
    ppl = _ppl({"de": [-1.0, 0.0]})
    ppl["de"]["per_text"]["n_tokens_base"] = ppl["de"]["per_text"]["n_tokens_aligned"] = [30, 10]
    draws = text_bootstrap(ppl, ["de"], n_boot=3000)["de"]
    # a resample holds text 1 twice, text 2 twice, or one of each: -1, 0 or the token-pooled -0.75
    assert set(torch.round(draws, decimals=6).tolist()) == {-1.0, 0.0, -0.75}
    with pytest.raises(ValueError, match="no per-text"):
        text_bootstrap({"de": {"change": -1.0}}, ["de"])


def test_markdown_states_the_verdicts_and_intervals():
    ppl = _ppl({"en": [-0.4, -0.6, -0.5, -0.3, -0.7, -0.5], "de": STEADY, "fr": STEADY})
    claims = alignment_claims(NEURONS, ppl, ["de"], ["de", "fr"])
    text = alignment_markdown(claims, ppl, ["de"])
    assert "**holds**" in text and "**not shown**" in text
    assert "untrained high-resource (en)" in text and re.search(r"difference [+-]0\.000", text)
    assert "low resource untrained (fr) alone: difference" in text
    assert "| fr | no | 3.000 | 2.500 | -0.500 | " in text


def test_write_alignment_report_with_the_same_model_twice_shows_nothing(tmp_path, tiny_dir):
    """The perplexity path end to end: an 'aligned' model identical to the base changes nothing."""
    model = steer.load_model(tiny_dir)
    shape = (model.cfg.n_layers, model.cfg.d_mlp)
    a = torch.zeros(3, *shape, dtype=torch.bool)
    a[0, 0, :4] = a[1, 0, 4:8] = a[2, 0, 8:12] = True
    langs = ["en", "de", "eu"]
    result = compare_neuron_sets(NeuronSet(langs, a), NeuronSet(langs, a.clone()), trained=["eu"])
    texts = {"en": ["The cat sits on the mat.", "Open the file menu.", "Select the cells."],
             "de": ["Die Katze sitzt.", "Öffnen Sie das Menü.", "Wählen Sie die Zellen."],
             "eu": ["Katua esterilla gainean dago.", "Ireki fitxategia menua.", "Hautatu gelaxkak."]}
    corpus = steer.Corpus(languages=langs, stats=texts, eval=texts, ids={}, source="test", parallel=False)
    out = tmp_path / "compare"
    write_compare_report(result, out)
    section = write_alignment_report(result, out, ["eu"], base=model, aligned=model, corpus=corpus, n_eval=3)
    saved = json.loads((out / "alignment.json").read_text())
    claims = saved["claims"]
    assert {claim["verdict"] for claim in claims.values()} == {"not shown"}
    assert claims["lifts_low_resource"]["difference_ci"] == [0.0, 0.0]
    assert claims["lifts_low_resource"]["control"] == ["en", "de"]
    assert len(saved["perplexity"]["en"]["per_text"]["base"]) == 3
    assert section in (out / "report.md").read_text() and "**not shown**" in section
