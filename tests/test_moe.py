"""Mixture-of-experts specifics beyond the per-architecture proof (tests/test_architectures.py): the expert
layout in stats and neuron files, routing frequencies, expert masks, nested taps and their clean-up."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import steer
from steer.models import model_info
from steer.models.experts import ExpertLayout, moe_blocks
from steer.neurons import NeuronSet
from steer.steering import ExpertMask
from steer.testing import tiny_model_dir


@pytest.fixture(scope="module")
def moe(tiny_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return steer.load_model(tiny_model_dir("arch:qwen2_moe", root=tiny_root), device="cpu")


@pytest.fixture(scope="module")
def moe_stats(moe, tiny_corpus):
    return steer.collect(moe, tiny_corpus, batch_size=2, progress=False)


def _ids(model):
    return model.tokenizer(["Die Katze sitzt", "The capital of France is"], return_tensors="pt", padding=True)


def _clean(model) -> bool:
    """No tapped forward and no hook left on any HF MoE block, router or experts module."""
    for block in moe_blocks(model):
        for module in block.modules():
            if "forward" in module.__dict__ or "_steer_taps" in module.__dict__:
                return False
            if module._forward_hooks or module._forward_pre_hooks:
                return False
    return True


def test_layout_arithmetic_and_validation():
    layout = ExpertLayout(n_experts=4, width=8, top_k=2, shared=16)
    assert (layout.columns, layout.d_mlp) == (5, 48)
    assert layout.column_of().tolist() == [0] * 8 + [1] * 8 + [2] * 8 + [3] * 8 + [4] * 16
    assert layout.neuron(4, 15) == 47 and layout.neuron(1, 0) == 8
    expert, index = layout.split(torch.tensor([0, 9, 47]))
    assert expert.tolist() == [0, 1, 4] and index.tolist() == [0, 1, 15]
    with pytest.raises(ValueError, match=r"no neuron \(1, 8\): the layer has 4 experts of 8 neurons"):
        layout.neuron(1, 8)
    assert ExpertLayout.from_dict(layout.to_dict()) == layout
    with pytest.raises(ValueError, match="an expert layout needs"):
        ExpertLayout.from_dict({"n_experts": 0, "width": 8, "top_k": 2})


def test_routing_is_the_language_experts_view(moe, moe_stats):
    layout = model_info(moe).experts
    routing = moe_stats.routing()
    assert routing.shape == (3, 2, layout.columns)
    torch.testing.assert_close(routing[..., :layout.n_experts].sum(-1), torch.full((3, 2), float(layout.top_k)))
    assert (routing[..., layout.n_experts] == 1).all()  # the shared expert sees every token
    counted = moe_stats.counted()
    assert torch.equal(counted[:, :, -1], moe_stats.tokens[:, None].expand(3, 2))
    assert (counted[:, :, 0] == moe_stats.routed[:, :, 0]).all()


def test_dense_stats_have_no_routing(tiny_stats):
    assert tiny_stats.routed is None and tiny_stats.experts is None
    with pytest.raises(ValueError, match="these stats have no routing counts: they come from a dense model"):
        tiny_stats.routing()


def test_stats_validate_routed_counts(moe_stats):
    meta = moe_stats.meta
    args = (moe_stats.languages, moe_stats.active, moe_stats.tokens, moe_stats.sums, None)
    with pytest.raises(ValueError, match="stats of a mixture-of-experts model need routed-token counts"):
        steer.ActivationStats(*args, meta)
    with pytest.raises(ValueError, match=r"routed must be \[lang, layer, 5 experts\]"):
        steer.ActivationStats(*args, meta, routed=moe_stats.routed[..., :4])
    with pytest.raises(ValueError, match="routed-token counts must lie between 0 and the tokens counted"):
        steer.ActivationStats(*args, meta, routed=moe_stats.routed + 1000)
    with pytest.raises(ValueError, match="routed-token counts need the expert layout"):
        steer.ActivationStats(*args, {}, routed=moe_stats.routed)
    fewer = moe_stats.routed.clone()
    fewer[:, :, 0] = 0  # an expert neuron active on more tokens than were routed to it
    if (moe_stats.active[:, :, :64] > 0).any():
        with pytest.raises(ValueError, match="a neuron cannot be active on more tokens than were counted"):
            steer.ActivationStats(*args, meta, routed=fewer)


def test_merged_stats_add_routed_counts(moe, tiny_corpus, moe_stats):
    part = steer.collect(moe, {"fr": tiny_corpus.stats["de"]}, progress=False)
    merged = moe_stats.merge(part)
    assert merged.languages[-1] == "fr" and merged.experts == moe_stats.experts
    assert torch.equal(merged.routed[:3], moe_stats.routed) and torch.equal(merged.routed[3], part.routed[0])
    with pytest.raises(ValueError, match="cannot merge stats of different shapes"):
        moe_stats.merge(steer.ActivationStats.zeros(["fr"], 2, moe_stats.d_mlp))


def test_a_resumed_collection_keeps_routed_counts(moe, tiny_corpus, moe_stats, tmp_path):
    kwargs = dict(batch_size=2, progress=False, checkpoint=tmp_path / "ckpt", checkpoint_every=1)
    first = steer.collect(moe, tiny_corpus, **kwargs)
    again = steer.collect(moe, tiny_corpus, **kwargs)  # resumes with nothing left to do
    assert torch.equal(first.routed, moe_stats.routed) and torch.equal(again.routed, moe_stats.routed)
    assert torch.equal(again.active, moe_stats.active)


def test_damaged_expert_layouts_are_refused(moe, moe_stats, tmp_path):
    neurons = steer.identify(moe_stats, method="specificity", top_rate=0.05)
    path = neurons.save(tmp_path / "n.json")
    data = json.loads(path.read_text())
    data["experts"]["width"] = 32
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="its expert layout .* disagrees with its model record"):
        NeuronSet.load(path)
    data["meta"]["model"]["experts"]["width"] = 32
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="hold 192 neurons per layer, not d_mlp 320; the file is damaged"):
        NeuronSet.load(path)


def test_a_neuron_set_for_other_experts_is_refused(moe, moe_stats):
    meta = {"model": {**model_info(moe).to_dict(), "weights_hash": None}}
    meta["model"]["experts"] = {**meta["model"]["experts"], "n_experts": 5, "width": 48, "shared": 80}
    neurons = NeuronSet(["de"], torch.ones(1, 2, 320, dtype=torch.bool), meta=meta)
    with pytest.raises(ValueError, match="is for experts laid out as"):
        steer.deactivate(moe, neurons)


def test_expert_positions(moe, moe_stats, tiny_neurons):
    layout = model_info(moe).experts
    membership = torch.zeros(1, 2, layout.d_mlp, dtype=torch.bool)
    membership[0, 1, layout.neuron(3, 7)] = True
    membership[0, 0, layout.neuron(4, 2)] = True  # the shared expert
    neurons = NeuronSet(["de"], membership, meta={"model": model_info(moe).to_dict()})
    assert neurons.expert_positions("de").tolist() == [[0, 4, 2], [1, 3, 7]]
    with pytest.raises(ValueError, match="this neuron set is for a dense MLP"):
        tiny_neurons.expert_positions()


def test_nested_steerings_on_experts_compose_and_leave_nothing_behind(moe, one_thread):
    info = model_info(moe)
    layout = info.experts
    ids = _ids(moe)
    mask = ids["attention_mask"].bool()

    def only(*pairs):
        membership = torch.zeros(1, 2, info.d_mlp, dtype=torch.bool)
        for layer, expert, index in pairs:
            membership[0, layer, layout.neuron(expert, index)] = True
        return NeuronSet(["de"], membership, meta={"model": info.to_dict()})

    a, b = only((1, 1, 5), (0, 4, 3)), only((1, 2, 9), (1, 0, 1))
    with torch.no_grad():
        plain = moe.original_model(**ids).logits
        with steer.deactivate(moe, a.union(b)):
            both = moe.original_model(**ids).logits
        with steer.deactivate(moe, a):
            with steer.amplify(moe, b, 0.0):
                nested = moe.original_model(**ids).logits
            with steer.deactivate(moe, a):  # the same neurons twice: still the same result
                twice = moe.original_model(**ids).logits
            once = moe.original_model(**ids).logits  # the inner block's end leaves the outer one acting
        with steer.deactivate(moe, a):
            alone = moe.original_model(**ids).logits
    assert (both - plain)[mask].abs().max() > 1e-5
    torch.testing.assert_close(nested[mask], both[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(twice[mask], alone[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(once[mask], alone[mask], atol=1e-5, rtol=1e-5)
    assert _clean(moe)
    with pytest.raises(RuntimeError, match="boom"):
        with steer.deactivate(moe, a), steer.intervene(moe, expert_masks=[ExpertMask({0: [1]})]):
            raise RuntimeError("boom")
    assert _clean(moe)


def test_expert_masks_are_checked_before_any_forward(moe, moe_stats, tiny):
    with pytest.raises(ValueError, match="experts must map layers to the experts to mask"):
        ExpertMask({})
    with pytest.raises(ValueError, match="experts must map whole layer numbers to lists of whole expert numbers"):
        ExpertMask({0: [1.5]})
    with pytest.raises(ValueError, match="unknown phase 'later'"):
        ExpertMask({0: [1]}, phase="later")
    with pytest.raises(ValueError, match="expert mask on layer 7, but the model has layers 0-1"):
        steer.intervene(moe, expert_masks=[ExpertMask({7: [1]})])
    with pytest.raises(ValueError, match="expert mask on experts \\[9\\], but the model has experts 0-3"):
        steer.intervene(moe, expert_masks=[ExpertMask({0: [9]})])
    with pytest.raises(ValueError, match="masking 3 of 4 experts leaves fewer than the 2 the router chooses"):
        steer.intervene(moe, expert_masks=[ExpertMask({0: [0, 1, 2]})])
    with pytest.raises(ValueError, match="expert masks need a mixture-of-experts model; this model's MLP is dense"):
        steer.intervene(tiny, expert_masks=[ExpertMask({0: [1]})])
    assert ExpertMask({"1": 2}).experts == {1: [2]}


def test_language_experts_mask_the_languages_own_experts(moe, moe_stats, one_thread):
    spec = ExpertMask.for_language(moe_stats, "ja", top=1, phase="all")
    routing = moe_stats.routing()
    for layer, (expert,) in spec.experts.items():
        others = routing[[0, 1], layer, expert].mean()
        excess = routing[2, layer, :4] - routing[[0, 1], layer, :4].mean(0)
        assert routing[2, layer, expert] - others == excess.max()
    with pytest.raises(ValueError, match="top must be between 1 and 2"):
        ExpertMask.for_language(moe_stats, "ja", top=3)
    ids = moe.tokenizer(["猫は"], return_tensors="pt")
    with torch.no_grad():
        plain = moe.original_model(**ids).logits
        with steer.intervene(moe, expert_masks=[spec]):
            masked = moe.original_model(**ids).logits
    assert (masked - plain).abs().max() > 1e-4


def test_uses_of_a_neuron_hook_point_are_refused_on_experts_in_one_line(moe):
    with pytest.raises(ValueError, match="'qwen2_moe' is a mixture-of-experts model: its expert neurons have no hook "
                                         "point"):
        model_info(moe).site.down_input_hook(0)


def test_the_cli_collects_identifies_ablates_and_forces_on_experts(tmp_path, tiny_root, capsys, one_thread):
    from conftest import TEXTS

    from steer.cli import main

    folder = tmp_path / "texts"
    folder.mkdir()
    for lang, texts in TEXTS.items():
        (folder / f"{lang}.txt").write_text("\n".join(texts * 3) + "\n", encoding="utf-8")
    model = str(tiny_model_dir("arch:olmoe", root=tiny_root))
    corpus, stats, neurons = tmp_path / "corpus", tmp_path / "stats", tmp_path / "neurons.json"
    assert main(["corpus", "build", "--from-dir", str(folder), "--out", str(corpus)]) == 0
    assert main(["collect", "--model", model, "--corpus", str(corpus), "--out", str(stats), "--batch-size", "4"]) == 0
    assert steer.ActivationStats.load(stats).routed is not None
    assert main(["identify", str(stats), "--method", "specificity", "--top-rate", "0.05", "--out", str(neurons)]) == 0
    data = json.loads(neurons.read_text())
    assert data["experts"] == {"n_experts": 4, "width": 64, "top_k": 2, "shared": 0} and data["d_mlp"] == 256
    assert main(["ablate", "--model", model, "--neurons", str(neurons), "--language", "de", "--corpus", str(corpus),
                 "--out", str(tmp_path / "ablate")]) == 0
    assert main(["generate", "--model", model, "--neurons", str(neurons), "--stats", str(stats), "--force-language",
                 "de", "--mode", "diffmean", "--max-new-tokens", "4", "--out", str(tmp_path / "gen"), "Hello"]) == 0
    assert "forced de" in capsys.readouterr().out
    # the default push is a learned one, which cannot be fitted on experts yet: refused, with the rule to use instead
    assert main(["generate", "--model", model, "--neurons", str(neurons), "--stats", str(stats), "--force-language",
                 "de", "--corpus", str(corpus), "--max-new-tokens", "4", "Hello"]) == 2
    assert "cannot be fitted on a mixture-of-experts model yet; force with a rule instead: mode='diffmean' " \
           "(--mode diffmean)" in capsys.readouterr().err
    assert main(["generate", "--model", model, "--stats", str(stats), "--mask-experts", "ja", "--mask-top", "1",
                 "--max-new-tokens", "4", "--out", str(tmp_path / "masked"), "Hello"]) == 0
    assert "ja's experts masked" in capsys.readouterr().out
    masked = json.loads((tmp_path / "masked" / "generations.json").read_text())
    assert masked["steered"]["prompts"] == ["Hello"]


def test_dense_models_record_no_experts(tiny, tiny_neurons):
    info = model_info(tiny)
    assert info.experts is None and not info.site.experts and "experts" not in info.to_dict()
    assert tiny_neurons.experts is None and "experts" not in tiny_neurons.to_dict()
