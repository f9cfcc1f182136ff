"""NeuronSet: reference mask format, set algebra, counts, overlap, random controls, file checks."""

from __future__ import annotations

import json

import pytest
import torch

from steer.neurons import NeuronSet, layer_concentration


def make_set() -> NeuronSet:
    membership = torch.zeros(3, 2, 6, dtype=torch.bool)
    membership[0, 0, [0, 1]] = True  # en: 0,1 in layer 0
    membership[1, 0, [1, 2]] = True  # de: 1,2 in layer 0 (1 shared with en)
    membership[1, 1, 5] = True
    membership[2, 1, [4, 5]] = True  # fr: layer 1 (5 shared with de)
    general = torch.zeros(2, 6, dtype=torch.bool)
    general[1, 0] = True
    return NeuronSet(["en", "de", "fr"], membership, general, "test", {"lambda": 0.1})


def test_masks_roundtrip_in_the_reference_format():
    neurons = make_set()
    masks = neurons.to_masks()
    assert masks[1][0].tolist() == [1, 2] and masks[1][0].dtype == torch.long
    again = NeuronSet.from_masks(masks, neurons.languages, d_mlp=6)
    assert torch.equal(again.membership, neurons.membership)
    with pytest.raises(ValueError, match="out of range"):
        NeuronSet.from_masks([[torch.tensor([7])]], ["en"], d_mlp=6)


def test_classes_counts_and_sharing():
    neurons = make_set()
    assert neurons.counts_per_layer() == {"specific": [2, 1], "related": [1, 1], "general": [0, 1]}
    assert neurons.counts_by_sharing() == {1: 3, 2: 2, 3: 0}
    assert neurons.counts_per_language()["de"] == {"specific": 1, "related": 2}
    assert neurons.overlap().tolist() == [[2, 1, 0], [1, 3, 1], [0, 1, 2]]
    assert neurons["fr"].layer_indices().keys() == {1}
    assert neurons.select(classes="specific").to_masks()[1][0].tolist() == [2]
    assert neurons.select(layers=[1], classes=("specific", "related", "general")).layer_indices()[1].tolist() == [0, 4, 5]


def test_set_algebra_and_jaccard():
    a = make_set()
    b = NeuronSet(["de", "ja"], torch.zeros(2, 2, 6, dtype=torch.bool))
    b.membership[0, 0, 2] = True
    b.membership[1, 1, 3] = True
    assert (a & b).to_masks()[1][0].tolist() == [2]
    assert (a - b).to_masks()[1][0].tolist() == [1]
    union = a | b
    assert union.languages == ["en", "de", "fr", "ja"] and union.to_masks()[3][1].tolist() == [3]
    assert a.jaccard(a) == 1.0
    assert a.jaccard(b) == pytest.approx(1 / 7)


def test_random_like_keeps_per_layer_counts_and_is_seeded():
    neurons = make_set()
    control = neurons.random_like(seed=3)
    assert torch.equal(control.membership.sum(2), neurons.membership.sum(2))
    assert torch.equal(control.general.sum(1), neurons.general.sum(1))
    assert torch.equal(control.membership, neurons.random_like(seed=3).membership)
    assert not torch.equal(control.membership, neurons.random_like(seed=4).membership)


def test_save_load_roundtrip_and_checks(tmp_path, tiny, tiny_llama, tiny_neurons):
    path = tiny_neurons.save(tmp_path / "neurons.json")
    loaded = NeuronSet.load(path, model=tiny)
    assert torch.equal(loaded.membership, tiny_neurons.membership)
    assert torch.equal(loaded.general, tiny_neurons.general)
    assert loaded.params == tiny_neurons.params and loaded.languages == tiny_neurons.languages
    with pytest.raises(ValueError, match="4 layers × 128 neurons"):
        NeuronSet.load(path, model=tiny_llama)
    data = json.loads(path.read_text())
    data["meta"]["model"]["weights_hash"] = "0" * 16
    (tmp_path / "other.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="made on weights 0000"):
        NeuronSet.load(tmp_path / "other.json", model=tiny)
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ValueError, match="not a steer neuron set"):
        NeuronSet.load(tmp_path / "junk.json")


def test_unknown_language_and_layer():
    neurons = make_set()
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        neurons["xx"]
    with pytest.raises(ValueError, match="out of range"):
        neurons.select(layers=[5])


def test_layer_concentration_reports_the_edge_pattern():
    membership = torch.zeros(2, 10, 4, dtype=torch.bool)
    membership[0, 0] = True
    membership[1, 9] = True
    report = layer_concentration(NeuronSet(["aa", "bb"], membership))
    assert report["pattern_holds"] and report["edge_share"] == 1.0
    membership = torch.zeros(2, 10, 4, dtype=torch.bool)
    membership[0, 5] = True
    assert not layer_concentration(NeuronSet(["aa", "bb"], membership))["pattern_holds"]
