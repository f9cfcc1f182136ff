"""Every architecture steer supports, proven on a tiny random model against plain HF (issue #20).

For each architecture in `DENSE` (configs: `steer.testing.ARCH_CONFIGS`), against an untouched copy of
the HF model with torch hooks on its own modules:
- collect's counts and sums equal the reference's (active = act_fn(gate) > 0, read off the HF
  activation module's output; sums = the HF down projection's input);
- deactivating a neuron equals zeroing that coordinate of the HF down projection's input;
- steered generation is the same with the KV cache on and off, batched and one prompt at a time;
- the fast path gives the bridge's logits (with and without hooks attached).
For each mixture-of-experts architecture in `MOE` (a neuron is (layer, expert, index)), the same proof against
the HF modules: counts, sums and routed-token counts per expert equal a reference computed from the HF router's
choices and the HF experts' own weights (taken with torch hooks); deactivating an expert neuron equals zeroing
that column of that expert's HF down projection (the coordinate of its input); steered generation (neuron ops
and an expert mask on the routing) is the same with the KV cache on and off, batched and one by one; the fast
path gives the bridge's logits.
Architectures steer refuses are refused by name, with the reason, before anything half-works.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM

import steer
from steer.models import model_info
from steer.models.fast_path import fast_path
from steer.neurons import NeuronSet
from steer.steering import ExpertMask
from steer.testing import tiny_model_dir

# architecture -> (activation module, down projection), relative to one HF decoder layer
HF_MLP = {
    **dict.fromkeys(["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "olmo", "olmo2", "granite",
                     "cohere", "stablelm", "smollm3"], ("mlp.act_fn", "mlp.down_proj")),
    "phi3": ("mlp.activation_fn", "mlp.down_proj"),  # fused gate_up_proj: act_fn sees the gate half
    "xglm": ("activation_fn", "fc2"),  # fc1/fc2 sit on the decoder layer itself
    "opt": ("activation_fn", "fc2"),
    "gpt_neox": ("mlp.act", "mlp.dense_4h_to_h"),
    "falcon": ("mlp.act", "mlp.dense_4h_to_h"),
    "bloom": ("mlp.gelu_impl", "mlp.dense_4h_to_h"),
    "starcoder2": ("mlp.act", "mlp.c_proj"),
    "gpt2": ("mlp.act", "mlp.c_proj"),
    "gpt_bigcode": ("mlp.act", "mlp.c_proj"),
    "gptj": ("mlp.act", "mlp.fc_out"),
    "codegen": ("mlp.act", "mlp.fc_out"),
    "phi": ("mlp.activation_fn", "mlp.fc2"),
    "nemotron": ("mlp.act_fn", "mlp.down_proj"),  # plain up_proj -> ReLU² -> down_proj
    "arcee": ("mlp.act_fn", "mlp.down_proj"),
    "apertus": ("mlp.act_fn", "mlp.down_proj"),  # xIELU is not sign-preserving: counted after act_fn
    "mpt": ("ffn.act", "ffn.down_proj"),
    "glm": ("mlp.activation_fn", "mlp.down_proj"),  # fused gate_up_proj
    "exaone4": ("mlp.act_fn", "mlp.down_proj"),
    "seed_oss": ("mlp.act_fn", "mlp.down_proj"),
    "olmo3": ("mlp.act_fn", "mlp.down_proj"),
}
DENSE = list(HF_MLP)
PARALLEL = {"gpt_neox", "falcon", "cohere", "gptj", "codegen", "phi"}  # attention and MLP read the same residual
GATED = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "olmo", "olmo2", "granite", "cohere",
         "stablelm", "smollm3", "phi3", "glm", "exaone4", "seed_oss", "olmo3"}
EXPLICIT = {"bloom", "mpt"}  # activation hard-coded, not in the config
AFTER_ACT_FN = {"apertus"}  # not sign-preserving, plain MLP: "active" is read from act_fn's output
WIDTH = {"bloom": 128, "mpt": 128}  # BLOOM's and MPT's MLPs are 4 × hidden whatever the config says
MOE = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]
SHARED = {"qwen2_moe"}  # a shared expert beside the routed ones (expert column n_experts)
PROMPTS = ["Die Katze sitzt", "猫は", "The capital of France is"]
NEURON = (1, 5)  # (layer, index) deactivated in the intervention test


@pytest.fixture(scope="module")
def models(tiny_root):
    """arch -> (bridge, untouched HF reference), built once per module."""
    cache = {}

    def get(arch):
        if arch not in cache:
            folder = tiny_model_dir(f"arch:{arch}", root=tiny_root)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
            cache[arch] = steer.load_model(folder, device="cpu"), reference
        return cache[arch]

    return get


def _layers(hf) -> list[torch.nn.Module]:
    base = hf.base_model
    stack = getattr(base, "layers", None) or getattr(base, "h", None) or getattr(base, "blocks", None) or base.decoder.layers
    return list(stack)


def _modules(hf, arch: str) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    act, down = HF_MLP[arch]
    return [(layer.get_submodule(act), layer.get_submodule(down)) for layer in _layers(hf)]


def _ids(model, texts=PROMPTS):
    return model.tokenizer(texts, return_tensors="pt", padding=True)


@pytest.mark.parametrize("arch", DENSE)
def test_site_is_derived_from_the_bridge(arch, models):
    model, reference = models(arch)
    info = model_info(model)
    site = info.site
    assert (info.n_layers, info.d_mlp) == (2, WIDTH.get(arch, 64))
    assert site.gated == (arch in GATED) and site.parallel == (arch in PARALLEL)
    assert site.derived == (arch not in EXPLICIT)
    assert site.down_input_hook(1) == "blocks.1.mlp.hook_post"
    assert site.activation_hook(1) == f"blocks.1.mlp.{'hook_post' if arch in AFTER_ACT_FN else 'hook_pre'}"
    assert model.blocks[0].mlp.hook_post.name  # a real hook point of the bridge


@pytest.mark.parametrize("arch", DENSE)
def test_collect_equals_a_plain_hf_reference(arch, models, tiny_corpus, one_thread):
    model, reference = models(arch)
    stats = steer.collect(model, tiny_corpus, batch_size=2, progress=False)
    n_layers, width = model_info(model).n_layers, model_info(model).d_mlp
    active = torch.zeros(len(tiny_corpus.languages), n_layers, width, dtype=torch.int64)
    sums = torch.zeros(len(tiny_corpus.languages), n_layers, width, dtype=torch.float64)
    near_zero = torch.zeros_like(active)  # act_fn outputs this close to 0 may flip sign between batched and single runs
    tokens = torch.zeros(len(tiny_corpus.languages), dtype=torch.int64)
    seen = {}
    handles = []
    for layer, (act, down) in enumerate(_modules(reference, arch)):
        handles.append(act.register_forward_hook(lambda m, i, o, layer=layer: seen.__setitem__(("act", layer), o)))
        handles.append(down.register_forward_pre_hook(lambda m, a, layer=layer: seen.__setitem__(("down", layer), a[0])))
    try:
        with torch.no_grad():
            for k, language in enumerate(tiny_corpus.languages):
                for text in tiny_corpus.stats[language]:
                    ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
                    reference(input_ids=ids)
                    tokens[k] += ids.shape[1] - 1  # the BOS is not counted
                    for layer in range(n_layers):  # OPT's layer runs its MLP on [batch·seq, d]: reshape
                        a = seen["act", layer].reshape(ids.shape[1], -1)[1:]
                        d = seen["down", layer].reshape(ids.shape[1], -1)[1:]
                        active[k, layer] += (a > 0).sum(0)
                        near_zero[k, layer] += (a.abs() < 1e-6).sum(0)
                        sums[k, layer] += d.double().sum(0)
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(stats.tokens, tokens)
    assert active.sum() > 0 and (active < tokens[:, None, None]).any()  # neither all off nor all on
    assert ((stats.active - active).abs() <= near_zero).all(), f"{arch}: counts differ from HF"
    torch.testing.assert_close(stats.sums.double(), sums, atol=1e-3, rtol=1e-4, msg=f"{arch}: sums differ from HF")


@pytest.mark.parametrize("arch", DENSE)
def test_deactivating_a_neuron_zeroes_the_hf_down_projection_input(arch, models, one_thread):
    model, reference = models(arch)
    info = model_info(model)
    layer, index = NEURON
    membership = torch.zeros(1, info.n_layers, info.d_mlp, dtype=torch.bool)
    membership[0, layer, index] = True
    neurons = NeuronSet(["de"], membership, meta={"model": info.to_dict()})
    ids = _ids(model)
    mask = ids["attention_mask"].bool()

    def zero(module, args):
        x = args[0].clone()
        x[..., index] = 0
        return (x,)

    down = _modules(reference, arch)[layer][1]
    with torch.no_grad():
        plain = reference(**ids).logits
        handle = down.register_forward_pre_hook(zero)
        try:
            expected = reference(**ids).logits
        finally:
            handle.remove()
        with steer.deactivate(model, neurons):
            bridged = model.original_model(**ids).logits
            with fast_path(model):
                fast = model.original_model(**ids).logits
    assert (expected - plain)[mask].abs().max() > 1e-5  # the neuron matters: the test can fail
    torch.testing.assert_close(bridged[mask], expected[mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast[mask], expected[mask], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", DENSE + MOE)
def test_steered_generation_is_the_same_with_and_without_cache_and_batching(arch, models, one_thread):
    model, _ = models(arch)
    info = model_info(model)
    membership = torch.zeros(2, info.n_layers, info.d_mlp, dtype=torch.bool)
    membership[0, :, 0:info.d_mlp:5] = True
    membership[1, 1, 1:info.d_mlp:7] = True
    neurons = NeuronSet(["de", "en"], membership, meta={"model": info.to_dict()})
    interventions = [steer.Intervention("scale", languages=["de"], factor=3.0),
                     steer.Intervention("suppress", languages=["en"], phase="output")]
    kwargs = dict(interventions=interventions, neurons=neurons, max_new_tokens=6, detect=False, return_logits=True)
    masks = [ExpertMask({0: [0], 1: [1]}, phase="generated")] if arch in MOE else []
    with steer.intervene(model, expert_masks=masks) if masks else contextlib.nullcontext():
        cached = steer.generate(model, PROMPTS, **kwargs)
        uncached = steer.generate(model, PROMPTS, use_cache=False, **kwargs)
        single = steer.generate(model, PROMPTS, batch_size=1, **kwargs)
    plain = steer.generate(model, PROMPTS, max_new_tokens=6, detect=False, return_logits=True)
    assert cached.texts == uncached.texts == single.texts
    for a, b, c in zip(cached.logits, uncached.logits, single.logits):
        n = len(c)  # a prompt run alone stops at its EOS; in a batch its row goes on until every row stops
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(c, a[:n], atol=1e-4, rtol=1e-4)
    assert any(not torch.allclose(a[:1], p[:1], atol=1e-4) for a, p in zip(cached.logits, plain.logits))  # it steers


@pytest.mark.parametrize("arch", DENSE + MOE)
def test_the_fast_path_gives_the_bridges_logits(arch, models, one_thread):
    model, reference = models(arch)
    ids = _ids(model)
    mask = ids["attention_mask"].bool()
    fired = []
    with torch.no_grad():
        expected = reference(**ids).logits
        bridged = model.original_model(**ids).logits
        with fast_path(model):
            fast = model.original_model(**ids).logits
        with steer.hooks.attached(model, [("blocks.0.mlp.hook_post", lambda x: fired.append(x.shape))]):
            with fast_path(model):
                hooked = model.original_model(**ids).logits
    assert len(fired) == 1
    torch.testing.assert_close(bridged[mask], expected[mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast[mask], bridged[mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(hooked[mask], bridged[mask], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- mixture of experts
def _moe_parts(hf) -> list:
    """(router, experts, shared expert or None) of every HF decoder layer."""
    return [(layer.mlp.gate, layer.mlp.experts, getattr(layer.mlp, "shared_expert", None)) for layer in _layers(hf)]


@pytest.mark.parametrize("arch", MOE)
def test_moe_site_lays_the_experts_side_by_side(arch, models):
    model, reference = models(arch)
    info = model_info(model)
    layout = info.experts
    router, experts, shared = _moe_parts(reference)[0]
    assert info.site.experts and info.site.gated
    assert (layout.n_experts, layout.width, layout.top_k) == (experts.gate_up_proj.shape[0],
                                                              experts.down_proj.shape[2], router.top_k)
    assert layout.shared == (shared.down_proj.in_features if arch in SHARED else 0)
    assert info.d_mlp == layout.n_experts * layout.width + layout.shared == layout.d_mlp
    assert info.to_dict()["experts"] == layout.to_dict()
    assert layout.neuron(2, 7) == 2 * layout.width + 7
    assert [t.tolist() for t in layout.split(torch.tensor([2 * layout.width + 7]))] == [[2], [7]]


@pytest.mark.parametrize("arch", MOE)
def test_moe_collect_equals_a_plain_hf_reference(arch, models, tiny_corpus, one_thread):
    """Per expert, only the tokens routed to it count: active = act_fn(gate) > 0 and sums of act_fn(gate)·up,
    recomputed from the HF router's choice and the HF expert's own weights; routed = tokens routed to it."""
    model, reference = models(arch)
    stats = steer.collect(model, tiny_corpus, batch_size=2, progress=False)
    info = model_info(model)
    layout, n_layers = info.experts, info.n_layers
    n_lang = len(tiny_corpus.languages)
    active = torch.zeros(n_lang, n_layers, info.d_mlp, dtype=torch.int64)
    sums = torch.zeros(n_lang, n_layers, info.d_mlp, dtype=torch.float64)
    near_zero = torch.zeros_like(active)
    routed = torch.zeros(n_lang, n_layers, layout.columns, dtype=torch.int64)
    tokens = torch.zeros(n_lang, dtype=torch.int64)
    seen, handles = {}, []
    parts = _moe_parts(reference)
    for layer, (router, experts, shared) in enumerate(parts):
        handles.append(router.register_forward_hook(lambda m, a, o, layer=layer: seen.__setitem__(("route", layer), o[2])))
        handles.append(experts.register_forward_pre_hook(lambda m, a, layer=layer: seen.__setitem__(("x", layer), a[0])))
        if shared is not None:
            handles.append(shared.act_fn.register_forward_hook(
                lambda m, a, o, layer=layer: seen.__setitem__(("shared_act", layer), o)))
            handles.append(shared.down_proj.register_forward_pre_hook(
                lambda m, a, layer=layer: seen.__setitem__(("shared_down", layer), a[0])))
    width, end = layout.width, layout.n_experts * layout.width
    try:
        with torch.no_grad():
            for k, language in enumerate(tiny_corpus.languages):
                for text in tiny_corpus.stats[language]:
                    ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
                    reference(input_ids=ids)
                    tokens[k] += ids.shape[1] - 1  # the BOS is not counted
                    for layer, (router, experts, shared) in enumerate(parts):
                        chosen, x = seen["route", layer][1:], seen["x", layer][1:]
                        for e in range(layout.n_experts):  # the reference may loop: it is not steer
                            rows = (chosen == e).any(-1)
                            gate, up = torch.nn.functional.linear(x[rows], experts.gate_up_proj[e]).chunk(2, dim=-1)
                            a = experts.act_fn(gate)
                            span = slice(e * width, (e + 1) * width)
                            active[k, layer, span] += (a > 0).sum(0)
                            near_zero[k, layer, span] += (a.abs() < 1e-6).sum(0)
                            sums[k, layer, span] += (a * up).double().sum(0)
                            routed[k, layer, e] += int(rows.sum())
                        if shared is not None:
                            a, d = seen["shared_act", layer][1:], seen["shared_down", layer][1:]
                            active[k, layer, end:] += (a > 0).sum(0)
                            near_zero[k, layer, end:] += (a.abs() < 1e-6).sum(0)
                            sums[k, layer, end:] += d.double().sum(0)
                            routed[k, layer, layout.n_experts] += a.shape[0]
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(stats.tokens, tokens)
    assert torch.equal(stats.routed, routed), f"{arch}: routed-token counts differ from HF's router"
    assert (routed[:, :, :layout.n_experts].sum(-1) == layout.top_k * tokens[:, None]).all()
    assert (routed[:, :, :layout.n_experts] < tokens[:, None, None]).any()  # some expert misses some token
    assert active.sum() > 0 and (active < stats.counted()).any()
    assert ((stats.active - active).abs() <= near_zero).all(), f"{arch}: counts differ from HF"
    torch.testing.assert_close(stats.sums.double(), sums, atol=1e-3, rtol=1e-4, msg=f"{arch}: sums differ from HF")
    probs = stats.probs()  # over each expert's routed tokens, not every token
    column = layout.column_of()
    torch.testing.assert_close(probs, (active / routed[:, :, column].clamp(min=1)).float())


@pytest.mark.parametrize("arch", MOE)
def test_deactivating_an_expert_neuron_zeroes_that_experts_down_projection_input(arch, models, one_thread):
    """Zeroing coordinate j of expert e's down-projection input is zeroing column j of its down projection."""
    model, reference = models(arch)
    info = model_info(model)
    layout = info.experts
    ids = _ids(model)
    mask = ids["attention_mask"].bool()
    layer = 1
    cases = [(1, 5)] + ([(layout.n_experts, 3)] if arch in SHARED else [])
    for expert, index in cases:
        membership = torch.zeros(1, info.n_layers, info.d_mlp, dtype=torch.bool)
        membership[0, layer, layout.neuron(expert, index)] = True
        neurons = NeuronSet(["de"], membership, meta={"model": info.to_dict()})
        _, experts, shared = _moe_parts(reference)[layer]
        column = experts.down_proj[expert, :, index] if expert < layout.n_experts else shared.down_proj.weight[:, index]
        with torch.no_grad():
            plain = reference(**ids).logits
            saved = column.clone()
            column.zero_()
            try:
                expected = reference(**ids).logits
            finally:
                column.copy_(saved)
            with steer.deactivate(model, neurons):
                bridged = model.original_model(**ids).logits
                with fast_path(model):
                    fast = model.original_model(**ids).logits
            after = model.original_model(**ids).logits
        assert (expected - plain)[mask].abs().max() > 1e-5  # the neuron matters: the test can fail
        torch.testing.assert_close(bridged[mask], expected[mask], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fast[mask], expected[mask], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(after[mask], plain[mask], atol=1e-4, rtol=1e-4)  # nothing left behind


@pytest.mark.parametrize("arch", MOE)
def test_an_expert_mask_takes_the_expert_out_of_the_routing(arch, models, one_thread):
    model, reference = models(arch)
    ids = _ids(model)
    mask = ids["attention_mask"].bool()
    chosen = []
    experts = model_info(model).experts
    hf_experts = _moe_parts(model.original_model)[0][1]
    handle = hf_experts.register_forward_pre_hook(lambda m, a: chosen.append(a[1].clone()))
    try:
        with torch.no_grad():
            plain = model.original_model(**ids).logits
            with steer.intervene(model, expert_masks=[ExpertMask({0: [0, 2]})]):
                masked = model.original_model(**ids).logits
                with fast_path(model):
                    fast = model.original_model(**ids).logits
    finally:
        handle.remove()
    assert (chosen[0] == 0).any() and (chosen[0] == 2).any()  # unmasked, the router picks them
    for picked in chosen[1:]:
        assert not ((picked == 0) | (picked == 2)).any() and picked.shape[-1] == experts.top_k
    assert (masked - plain)[mask].abs().max() > 1e-4
    torch.testing.assert_close(fast[mask], masked[mask], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", MOE)
def test_moe_neurons_carry_their_expert_through_identify_and_files(arch, models, tiny_corpus, tmp_path, one_thread):
    model, _ = models(arch)
    stats = steer.collect(model, tiny_corpus, batch_size=4, progress=False)
    layout = model_info(model).experts
    for method, params in [("lape", dict(top_rate=0.05, activation_bar_ratio=0.5)), ("zhang2025", dict(top_rate=0.05, threshold_ratio=0.5)),
                           ("specificity", dict(top_rate=0.05))]:
        found = steer.identify(stats, method=method, **params)
        assert found.experts == layout and len(found) > 0, method
    neurons = found
    positions = neurons.expert_positions()
    assert positions.shape == (len(neurons), 3) and (positions[:, 1] < layout.columns).all()
    loaded = steer.NeuronSet.load(neurons.save(tmp_path / "neurons.json"), model)
    assert torch.equal(loaded.membership, neurons.membership) and loaded.experts == layout
    again = steer.ActivationStats.load(stats.save(tmp_path / "stats"), model)
    assert torch.equal(again.routed, stats.routed) and again.experts == layout


def test_unproven_moe_and_non_sign_preserving_experts_are_refused_by_name(tiny_root):
    from types import SimpleNamespace

    from steer.models import check_config

    with pytest.raises(ValueError, match="architecture 'dbrx' is not supported by steer: a mixture-of-experts MLP "
                                         "that steer has not proven"):
        check_config(SimpleNamespace(model_type="dbrx", num_experts=4))
    folder = tiny_model_dir("arch:mixtral", root=tiny_root, hidden_act="sigmoid")
    with pytest.raises(ValueError, match="architecture 'mixtral' is not supported by steer: its experts' activation "
                                         "'sigmoid' is not sign-preserving"):
        steer.load_model(folder, device="cpu")
