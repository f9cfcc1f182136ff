"""Known-answer tests for the selection rules, on small synthetic probability tensors."""

from __future__ import annotations

import math

import pytest
import torch

import steer
from steer.identification import kth, zhang_entropy
from steer.stats import ActivationStats

LANGS = ["en", "de", "fr"]


def stats_from_probs(probs: torch.Tensor, tokens: int = 1000, languages=LANGS) -> ActivationStats:
    """probs: [lang, layer, neuron] with values that are multiples of 1/tokens."""
    active = (probs * tokens).round().long()
    return ActivationStats.from_counts(languages, active, torch.full((len(languages),), tokens))


def test_kth_is_one_based_rank_of_round_ratio_numel():
    values = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0, 0.0, 9.0, 8.0, 7.0, 6.0])
    assert kth(values, 0.95) == 9.0  # round(9.5) = 10 (banker's rounding gives 10) -> largest
    assert kth(values, 0.5) == 4.0  # rank 5
    assert kth(values, 0.01) == 0.0  # rank clamps to 1


def test_zhang_entropy_formula():
    probs = torch.tensor([[[0.2, 0.0]], [[0.2, 0.0]], [[0.4, 0.0]]], dtype=torch.float64)
    e = zhang_entropy(probs)
    p = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    assert math.isclose(float(e[0, 0]), float(-(p * p.log()).sum() / math.log(3)), rel_tol=1e-9)
    assert math.isclose(float(e[0, 1]), 1.0, rel_tol=1e-9)  # no activity -> uniform -> entropy 1


def _probs_with_one_language_neuron(rest_varies: bool = False):
    """1 layer, 40 neurons: 0 fires for de only, 1 for de+fr, 2 for every language; the rest rarely.

    114 of the 120 values are small, so kth(0.95) (rank 114) is the largest small value and only
    neurons 0, 1 and 2 exceed it.
    """
    probs = torch.full((3, 1, 40), 0.01)
    probs[:, 0, 0] = torch.tensor([0.01, 0.9, 0.01])
    probs[:, 0, 1] = torch.tensor([0.01, 0.9, 0.9])
    probs[:, 0, 2] = torch.tensor([0.95, 0.95, 0.95])
    probs[:, 0, 3:] += torch.linspace(0, 0.03, 37)
    if rest_varies:  # the rest get a mild language preference (entropy < 1)
        probs[:, 0, 3:] += torch.tensor([0.0, 0.01, 0.02])[:, None]
    return probs


def test_lape_selects_low_entropy_neurons_and_assigns_languages():
    stats = stats_from_probs(_probs_with_one_language_neuron())
    neurons = steer.identify(stats, method="lape", top_rate=0.05)
    assert neurons.params["n_selected"] == 2
    masks = neurons.to_masks()
    assert masks[LANGS.index("de")][0].tolist() == [0, 1]
    assert masks[LANGS.index("fr")][0].tolist() == [1]
    assert masks[LANGS.index("en")][0].tolist() == []
    assert neurons.counts_per_layer()["specific"] == [1] and neurons.counts_per_layer()["related"] == [1]
    assert neurons.general[0].nonzero().squeeze(1).tolist() == [2]


def test_lape_neurons_never_above_tau_get_infinite_entropy():
    probs = torch.full((3, 1, 10), 0.1)
    probs[:, 0, 9] = torch.tensor([0.9, 0.1, 0.1])
    neurons = steer.identify(stats_from_probs(probs), method="lape", top_rate=0.1)
    assert neurons.to_masks()[0][0].tolist() == [9]


def test_zhang2025_auto_lambda_keeps_general_neurons_out():
    stats = stats_from_probs(_probs_with_one_language_neuron())
    neurons = steer.identify(stats, method="zhang2025", top_rate=0.05)
    # ok(0) and ok(0.2) both hold, so the reference's bisection ends just below 0.2
    assert neurons.params["lambda_search"] and 0.198 < neurons.params["lambda"] < 0.2
    assert not (neurons.general & neurons.membership.any(0)).any()
    assert neurons.to_masks()[LANGS.index("de")][0].tolist() == [0, 1]
    assert neurons.general[0].nonzero().squeeze(1).tolist() == [2]


def test_zhang2025_lambda_search_stops_where_general_neurons_would_enter():
    stats = stats_from_probs(_probs_with_one_language_neuron(rest_varies=True))
    params = dict(method="zhang2025", top_rate=3 / 40)
    found = steer.identify(stats, **params)
    lam = found.params["lambda"]
    assert 0 < lam < 0.2
    general_selected = lambda lam_: bool(  # noqa: E731
        (steer.identify(stats, **params, **{"lambda": lam_}).general
         & _selected(stats, lam_, params)).any())
    assert not general_selected(lam)
    assert general_selected(lam + 2e-3)
    explicit = steer.identify(stats, **params, **{"lambda": lam})
    assert torch.equal(explicit.membership, found.membership)


def _selected(stats, lam, params):
    from steer.identification import _lowest, zhang_entropy

    probs = stats.probs().double()
    c_k = sum(1 / i for i in range(1, 4)) / 3
    score = zhang_entropy(probs) - lam * probs.max(0).values / c_k
    return _lowest(score, round(params["top_rate"] * 40))


def test_zhang2025_without_a_valid_lambda_names_the_fix():
    probs = torch.tensor([[[0.5, 0.6, 0.9, 0.95]], [[0.5, 0.6, 0.9, 0.95]]])  # neurons 2, 3 are general
    stats = stats_from_probs(probs, languages=["en", "de"])
    with pytest.raises(ValueError, match="smaller top_rate or an explicit lambda"):
        steer.identify(stats, method="zhang2025", top_rate=1.0, threshold_ratio=0.5)


def test_zhang2025_selected_neurons_with_no_language_belong_to_none():
    probs = torch.full((3, 1, 20), 0.05)
    probs[:, 0, 0] = torch.tensor([0.9, 0.05, 0.05])
    probs[:, 0, 1] = torch.tensor([0.2, 0.0, 0.0])  # one-hot in shape, but not above tau = 0.2
    neurons = steer.identify(stats_from_probs(probs), method="zhang2025", top_rate=0.1, threshold_ratio=0.99)
    assert neurons.params["tau"] == pytest.approx(0.2)
    assert neurons.params["n_unassigned"] == 1
    assert neurons.to_masks()[0][0].tolist() == [0]


def test_a_language_with_no_tokens_has_zero_probability_and_is_refused_by_identify():
    active = torch.zeros(3, 1, 10, dtype=torch.long)
    active[0, 0, 0] = 50
    stats = ActivationStats.from_counts(LANGS, active, torch.tensor([100, 100, 0]))
    assert float(stats.probs()[2].sum()) == 0.0
    with pytest.raises(ValueError, match=f"no tokens for '{LANGS[2]}'"):
        steer.identify(stats, method="lape", top_rate=0.1)


def test_specificity_uses_the_margin_over_the_best_other_language():
    probs = torch.full((3, 2, 5), 0.1)
    probs[1, 1, 3] = 0.8  # de, margin 0.7
    probs[1, 0, 0] = 0.5  # de, margin 0.4
    probs[2, 0, 4] = 0.6  # fr
    probs[0, 0, 4] = 0.55  # en close to fr on neuron 4
    neurons = steer.identify(stats_from_probs(probs), method="specificity", n_per_language=2)
    de = neurons.to_masks()[1]
    assert de[0].tolist() == [0] and de[1].tolist() == [3]
    assert neurons.to_masks()[2][0].tolist() == [4]
    assert neurons.to_masks()[0][0].tolist() == []  # en's best margin on neuron 4 is negative


def test_identify_is_vectorised_on_a_large_tensor():
    torch.manual_seed(0)
    probs = torch.rand(10, 32, 14336) ** 4
    stats = stats_from_probs(probs, tokens=10_000, languages=[f"l{chr(97 + i)}" for i in range(10)])
    neurons = steer.identify(stats, method="zhang2025")
    assert neurons.params["n_selected"] == round(0.01 * 32 * 14336)


def test_bad_identify_inputs(tiny_stats):
    with pytest.raises(ValueError, match="unknown method"):
        steer.identify(tiny_stats, method="magic")
    with pytest.raises(ValueError, match="top_rate must be in"):
        steer.identify(tiny_stats, method="lape", top_rate=0)
    one = ActivationStats.from_counts(["en"], torch.zeros(1, 1, 4, dtype=torch.long), torch.tensor([3]))
    with pytest.raises(ValueError, match="at least two languages"):
        steer.identify(one)
