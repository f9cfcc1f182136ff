"""Model loading, where neurons live per architecture, bridge-vs-HF parity, bad model inputs."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import steer
from steer.models import SITES, model_info, weights_hash
from steer.models.fast_path import fast_path
from steer.testing import tiny_model_dir


@pytest.mark.parametrize("arch", ["gemma3", "llama", "gpt2"])
def test_each_family_resolves_its_neuron_hooks(arch, tiny_root):
    model = steer.load_model(tiny_model_dir(arch, root=tiny_root))
    info = model_info(model)
    assert info.n_layers == model.cfg.n_layers and info.d_mlp == 128
    for layer in range(info.n_layers):
        pre = model.hook_dict[info.site.activation_hook(layer)]
        post = model.hook_dict[info.site.down_input_hook(layer)]
        assert pre is not post
    ids = model.tokenizer(["Hallo Welt, wie geht es?"], return_tensors="pt")
    with torch.no_grad():
        bridged = model.original_model(**ids).logits
        with fast_path(model):
            fast = model.original_model(**ids).logits
    torch.testing.assert_close(fast, bridged, atol=1e-4, rtol=1e-4)


def _hf_reference(folder):
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def test_bridge_logits_equal_hf_and_fast_path_restores(tiny, tiny_dir):
    reference = _hf_reference(tiny_dir)
    ids = tiny.tokenizer(["Hallo Welt, wie geht es?", "日本語のテキスト"], return_tensors="pt", padding=True)
    mask = ids["attention_mask"].bool()
    layers = tiny.original_model.model.layers
    before = [type(layer) for layer in layers]
    fired = []
    with torch.no_grad():
        expected = reference(**ids).logits
        bridged = tiny.original_model(**ids).logits
        with steer.hooks.attached(tiny, [("blocks.2.mlp.hook_post", lambda x: fired.append(x.shape))]):
            with fast_path(tiny):
                assert type(tiny.original_model.model.layers[0]).__name__ == "Gemma3DecoderLayer"
                fast = tiny.original_model(**ids).logits
    assert len(fired) == 1  # the hooked point still fires inside the fast path
    torch.testing.assert_close(bridged[mask], expected[mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast[mask], expected[mask], atol=1e-4, rtol=1e-4)
    assert [type(layer) for layer in tiny.original_model.model.layers] == before
    assert tiny.original_model.config._attn_implementation == "eager"
    with pytest.raises(RuntimeError), fast_path(tiny):
        raise RuntimeError("inside")
    assert [type(layer) for layer in tiny.original_model.model.layers] == before
    assert len(tiny.hook_dict) and all(name in tiny.hook_dict for name in ("blocks.0.mlp.hook_pre", "hook_embed"))


def test_the_neuron_hook_carries_the_gate_preactivation(tiny, tiny_dir):
    """hook_pre is gate_proj's output: its sign is the sign of act_fn(gate) counted by the papers."""
    reference = _hf_reference(tiny_dir)
    seen, expected = {}, {}
    handle = reference.model.layers[1].mlp.gate_proj.register_forward_hook(lambda m, i, o: expected.update(x=o))
    ids = tiny.tokenizer(["Der Hund läuft."], return_tensors="pt")
    with torch.no_grad(), steer.hooks.attached(tiny, [("blocks.1.mlp.hook_pre", lambda x: seen.update(x=x.clone()))]):
        tiny.original_model(**ids)
        reference(**ids)
    handle.remove()
    torch.testing.assert_close(seen["x"], expected["x"], atol=1e-5, rtol=1e-5)


def test_weights_hash_changes_with_the_weights(tiny, tiny_dir):
    model = _hf_reference(tiny_dir)
    before = weights_hash(model)
    assert model_info(tiny).weights_hash == before  # the bridge's renaming does not change the hash
    assert weights_hash(model) == before
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0
    assert weights_hash(model) != before


def test_unknown_model_name_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown model 'gemma-9'"):
        steer.load_model("gemma-9")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="not a model folder"):
        steer.load_model(tmp_path)


def test_unsupported_architecture_names_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}))
    with pytest.raises(ValueError, match="architecture 't5' is not supported.*NeuronSite"):
        steer.load_model(tmp_path)


def test_a_bridge_without_an_mlp_is_refused_by_name(tmp_path):
    """Mamba: TransformerLens bridges it, but its blocks have no MLP whose hook points are neurons."""
    from transformers import AutoConfig

    from steer.testing import byte_tokenizer

    tokenizer = byte_tokenizer()
    config = AutoConfig.for_model("mamba", hidden_size=32, num_hidden_layers=2, state_size=4, vocab_size=len(tokenizer),
                                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="architecture 'mamba' is not supported by steer: the bridge has no MLP "
                                         "component in some layer"):
        steer.load_model(tmp_path, device="cpu")


def test_explicit_sites_are_only_where_the_bridge_cannot_tell():
    """Sites are read from the bridge; SITES keeps BLOOM and MPT (their activations are hard-coded, not in their configs)."""
    assert set(SITES) == {"bloom", "mpt"} and SITES["bloom"].act_fn == "bloom_gelu" and SITES["mpt"].act_fn == "gelu"


def test_a_gated_mlp_whose_activation_is_not_sign_preserving_is_refused(tiny_root):
    """act_fn(gate) > 0 cannot be read off the gate when act_fn is not sign-preserving, and a gated MLP has no
    hook point after act_fn: refused by name, with the reason, not loaded half-working."""
    folder = tiny_model_dir("arch:llama", root=tiny_root, hidden_act="sigmoid")
    with pytest.raises(ValueError, match="architecture 'llama' is not supported by steer: activation 'sigmoid' is not "
                                         "sign-preserving and the MLP is gated"):
        steer.load_model(folder)


def test_a_plain_mlp_whose_activation_is_not_sign_preserving_counts_after_act_fn(tiny_root, tiny_corpus):
    """In a plain MLP the down-projection input is act_fn(pre): there "active" is read after act_fn. A sigmoid
    is positive everywhere, so every neuron counts every token (the gate's sign would count about half)."""
    model = steer.load_model(tiny_model_dir("arch:gpt2", root=tiny_root, activation_function="sigmoid"))
    site = model_info(model).site
    assert site.activation == site.down_input == "blocks.{layer}.mlp.hook_post" and not site.gated
    stats = steer.collect(model, tiny_corpus, batch_size=2, progress=False)
    assert torch.equal(stats.active, stats.tokens[:, None, None].expand_as(stats.active))
    plain = steer.collect(steer.load_model(tiny_model_dir("arch:gpt2", root=tiny_root)), tiny_corpus, batch_size=2,
                          progress=False)
    assert (plain.active < plain.tokens[:, None, None]).float().mean() > 0.5


@pytest.mark.integration
def test_embedded_gemma_matches_hf_and_kv_cache(gemma):
    info = model_info(gemma)
    assert (info.name, info.n_layers, info.d_mlp) == ("gemma-3-270m", 18, 2048)
    reference = _hf_reference(steer.models.embedded_model_dir())
    ids = gemma.tokenizer(["Le chat est assis sur le tapis."], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(gemma(ids["input_ids"]), reference(**ids).logits, atol=2e-4, rtol=1e-4)
    prompts = ["Die Hauptstadt von Frankreich ist", "The capital of Japan is", "東京は"]
    cached = steer.generate(gemma, prompts, max_new_tokens=12, return_logits=True)
    uncached = steer.generate(gemma, prompts, max_new_tokens=12, use_cache=False, return_logits=True)
    single = steer.generate(gemma, prompts, max_new_tokens=12, batch_size=1)
    assert cached.texts == uncached.texts == single.texts
    for a, b in zip(cached.logits, uncached.logits):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
