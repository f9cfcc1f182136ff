"""Interventions: exactly the selected columns change, the KV cache and batching change nothing,
hooks never outlive their block, bad input fails before any forward pass."""

from __future__ import annotations

import json

import pytest
import torch

import steer
from steer.hooks import attached, hook_count
from steer.steering import Intervention, active_steerings
from steer.neurons import NeuronSet

PROMPTS = ["The cat sits on", "Die Katze sitzt auf der", "猫は"]


@pytest.fixture(scope="module")
def handmade(tiny, tiny_stats):
    membership = torch.zeros(3, 4, 128, dtype=torch.bool)
    membership[0, 1, [3, 7, 11]] = True  # en
    membership[1, 1, [7, 20]] = True  # de (7 shared with en)
    membership[1, 3, 5] = True
    membership[2, 2, :10] = True  # ja
    return NeuronSet(tiny_stats.languages, membership, meta={"model": tiny_stats.meta["model"]})


def _capture(model, layer=1, steering=None):
    seen = {}
    ids = model.tokenizer(PROMPTS[1], return_tensors="pt")["input_ids"]
    name = steer.model_info(model).site.down_input_hook(layer)
    with torch.no_grad():
        if steering is not None:
            steering.apply()
        try:
            with attached(model, [(name, lambda x: seen.update(x=x.clone()))]):
                model.original_model(ids)
        finally:
            if steering is not None:
                steering.remove()
    return seen["x"][0]


@pytest.mark.parametrize("op", ["suppress", "scale", "set", "add", "diffmean"])
def test_exactly_the_selected_columns_change(tiny, tiny_stats, handmade, op):
    base = _capture(tiny)
    spec = {
        "suppress": Intervention("suppress", languages=["de"]),
        "scale": Intervention("scale", languages=["de"], factor=3.0),
        "set": Intervention("set", languages=["de"], target="ja"),
        "add": Intervention("add", languages=["de"], target="ja", alpha=2.0),
        "diffmean": Intervention("add", languages=["de"], target="ja", alpha=2.0, mode="diffmean"),
    }[op]
    steered = _capture(tiny, steering=steer.intervene(tiny, spec, neurons=handmade, stats=tiny_stats))
    changed = (steered != base).any(0).nonzero().squeeze(1).tolist()
    assert changed == [7, 20]
    means = tiny_stats.means()
    ja, de = tiny_stats.index("ja"), tiny_stats.index("de")
    cols = torch.tensor([7, 20])
    expected = {
        "suppress": torch.zeros(base.shape[0], 2),
        "scale": base[:, cols] * 3.0,
        "set": means[ja, 1, cols].expand(base.shape[0], -1),
        "add": base[:, cols] + 2.0 * means[ja, 1, cols],
        "diffmean": base[:, cols] + 2.0 * (means[ja, 1, cols] - means[[0, de], 1][:, cols].mean(0)),
    }[op]
    torch.testing.assert_close(steered[:, cols], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["set", "additive", "diffmean"])
def test_forcing_a_language_leaves_the_neurons_it_shares_on(tiny, tiny_stats, handmade, mode):
    """Forcing de: en's own neurons (3, 11) are zeroed; 7 (en and de) and 20 (de alone) get the push."""
    from steer.forcing import force_language_interventions

    base = _capture(tiny)
    specs = force_language_interventions(handmade, "de", mode=mode, strength=2.0, steps=None)  # every position
    steered = _capture(tiny, steering=steer.intervene(tiny, *specs, neurons=handmade, stats=tiny_stats))
    means = tiny_stats.means()[:, 1]
    de = tiny_stats.index("de")
    push = {"set": 2.0 * means[de], "additive": 2.0 * means[de],
            "diffmean": 2.0 * (means[de] - means[[k for k in range(3) if k != de]].mean(0))}[mode]
    assert (steered[:, [3, 11]] == 0).all()  # the other language's neurons only: off
    for shared_or_own in (7, 20):  # pushed from the unsteered value, never zeroed first
        expected = push[shared_or_own].expand(base.shape[0]) if mode == "set" else base[:, shared_or_own] + push[shared_or_own]
        torch.testing.assert_close(steered[:, shared_or_own], expected, atol=1e-5, rtol=1e-5)
    untouched = [j for j in range(128) if j not in (3, 7, 11, 20)]
    assert torch.equal(steered[:, untouched], base[:, untouched])


def test_without_removes_positions_from_every_language(handmade):
    de_positions = handmade.select(["de"])
    rest = handmade.select(["en", "ja"]).without(de_positions)
    assert rest.to_masks()[0][1].tolist() == [3, 11]  # en loses 7, which de uses too
    assert rest.to_masks()[1][2].tolist() == list(range(10))
    # row-wise difference matches rows by language name: en is not in de's set, so nothing goes
    assert handmade.select(["en"]).difference(de_positions).to_masks()[0][1].tolist() == [3, 7, 11]


def test_an_interrupted_generate_leaves_no_stale_prompt_boundary(tiny, handmade):
    calls = {"n": 0}

    def interrupt(activation):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    outer = steer.deactivate(tiny, handmade["de"], phase="prompt")
    with outer:
        with pytest.raises(KeyboardInterrupt), attached(tiny, [("blocks.0.mlp.hook_pre", interrupt)]):
            steer.generate(tiny, ["Hello there, how"], max_new_tokens=6)
        assert outer.phase.prompt_width is None  # later forwards in this block: every position is prompt
        steered = _capture(tiny)
    assert (steered[:, [7, 20]] == 0).all()


def test_deactivate_one_language_with_the_context_manager(tiny, handmade):
    base = _capture(tiny)
    steered = _capture(tiny, steering=steer.deactivate(tiny, handmade["en"]))
    assert (steered != base).any(0).nonzero().squeeze(1).tolist() == [3, 7, 11]
    assert (steered[:, [3, 7, 11]] == 0).all()


SPECS = [
    Intervention("suppress", languages=["de", "ja"]),
    Intervention("scale", factor=4.0),
    Intervention("set", languages=["ja"], target="ja", alpha=3.0, phase="generated"),
    Intervention("add", languages=["en"], target="de", alpha=5.0, phase="prompt"),
    Intervention("add", languages=["de"], target="de", alpha=3.0, mode="diffmean", phase="output"),
    Intervention("add", languages=["de"], target="ja", alpha=3.0, mode="diffmean", steps=2),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.op}-{s.phase}-{s.steps}")
def test_kv_cache_and_batching_change_nothing(tiny, tiny_stats, handmade, spec):
    kwargs = dict(interventions=[spec], neurons=handmade, stats=tiny_stats, max_new_tokens=8, return_logits=True,
                  detect=False)
    cached = steer.generate(tiny, PROMPTS, **kwargs)
    uncached = steer.generate(tiny, PROMPTS, use_cache=False, **kwargs)
    single = steer.generate(tiny, PROMPTS, batch_size=1, **kwargs)
    plain = steer.generate(tiny, PROMPTS, max_new_tokens=8, return_logits=True, detect=False)
    assert cached.texts == uncached.texts == single.texts
    for a, b, c, d in zip(cached.logits, uncached.logits, single.logits, plain.logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(a, d, atol=1e-4)  # the intervention did something


def test_outside_generate_a_phase_that_needs_the_prompt_end_raises_instead_of_doing_nothing(tiny, handmade):
    """A plain forward is all prompt: phase 'prompt' acts on it; 'generated', 'output' and steps cannot be
    resolved there, and raise (they used to be silent no-ops), leaving no hook behind."""
    now = _capture(tiny, steering=steer.intervene(tiny, Intervention("suppress", languages=["de"], phase="prompt"),
                                                   neurons=handmade))
    assert (now[:, [7, 20]] == 0).all()
    hooks = hook_count(tiny)
    for spec in (Intervention("suppress", languages=["de"], phase="generated"),
                 Intervention("suppress", languages=["de"], phase="output"),
                 Intervention("suppress", languages=["de"], steps=2)):
        with pytest.raises(RuntimeError, match=r"needs to know where the prompt ends, which only steer.generate"):
            _capture(tiny, steering=steer.intervene(tiny, spec, neurons=handmade))
        assert hook_count(tiny) == hooks


def test_phase_bounds_per_forward():
    """A 5-token prompt: "output" covers its last position and every generated one, "generated" only the latter."""
    from steer.steering import _Phase

    phase = _Phase()
    phase.prompt_width = 5
    assert [phase.bounds(p, 5) for p in ("prompt", "generated", "output", "all")] == [(0, 5), (5, 5), (4, 5), (0, 5)]
    phase.start = 5  # a cached decoding step: one new token
    assert [phase.bounds(p, 1) for p in ("prompt", "generated", "output")] == [(0, 0), (0, 1), (0, 1)]
    phase.start, phase.prompt_width = 0, None  # outside generate every position is prompt ...
    assert [phase.bounds(p, 5) for p in ("prompt", "all")] == [(0, 5), (0, 5)]
    for p in ("generated", "output"):  # ... and what needs the prompt's end is an error, not a no-op
        with pytest.raises(RuntimeError, match=f"phase '{p}' needs to know where the prompt ends"):
            phase.bounds(p, 5)


def test_steps_cut_the_phase_after_the_position_predicting_the_last_steered_token():
    """A 5-token prompt, steps=2: positions 4 (predicting new token 1) and 5 (token 2) are the last steered."""
    from steer.steering import _Phase

    phase = _Phase()
    phase.prompt_width = 5
    assert [phase.bounds(p, 5, 2) for p in ("all", "prompt", "generated", "output")] == [(0, 5), (0, 5), (5, 5), (4, 5)]
    phase.start = 5  # cached step: the first new token, predicting the second
    assert [phase.bounds(p, 1, 2) for p in ("all", "generated", "output")] == [(0, 1), (0, 1), (0, 1)]
    phase.start = 6  # the second new token, predicting the third: past the steps
    assert [phase.bounds(p, 1, 2) for p in ("all", "generated", "output")] == [(0, 0), (0, 0), (0, 0)]
    phase.start = 0  # no cache: the whole sequence of 7 tokens in one forward
    assert phase.bounds("all", 7, 2) == (0, 6) and phase.bounds("output", 7, 1) == (4, 5)
    phase.prompt_width = None  # outside generate, steps cannot be resolved: an error, not a no-op
    with pytest.raises(RuntimeError, match="steps needs to know where the prompt ends"):
        phase.bounds("all", 7, 2)


def test_steps_force_the_first_tokens_then_let_the_model_go_on(tiny, tiny_stats, handmade):
    push = dict(languages=["de", "ja"], target="ja", alpha=8.0, mode="diffmean")
    kwargs = dict(neurons=handmade, stats=tiny_stats, max_new_tokens=4, return_logits=True, detect=False)
    always = steer.generate(tiny, PROMPTS, interventions=[Intervention("add", **push)], **kwargs)
    brief = steer.generate(tiny, PROMPTS, interventions=[Intervention("add", steps=2, **push)], **kwargs)
    assert [text[:1] for text in brief.texts] == [text[:1] for text in always.texts]
    for a, b, prompt in zip(always.logits, brief.logits, PROMPTS):
        torch.testing.assert_close(b[:2], a[:2])  # the first two new tokens: steered alike
        # the third comes from the unsteered model reading the steered prompt and first two tokens: recompute it
        ids = tiny.tokenizer(prompt)["input_ids"]
        first_two = b[:2].argmax(-1).tolist()
        unsteered_third = _next_logits_steering_prefix(tiny, ids, first_two, push, handmade, tiny_stats)
        torch.testing.assert_close(b[2], unsteered_third, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(a[2], b[2], atol=1e-4)
    with pytest.raises(ValueError, match="steps"):
        Intervention("add", steps=0, **push)


def _next_logits_steering_prefix(model, ids, new, push, neurons, stats):
    """Logits after prompt + `new` tokens, steering only the positions that predicted them (the prompt and new[:-1])."""
    from steer.steering import Steering

    steering = Steering(model, [Intervention("add", phase="prompt", **push)], neurons, stats)
    with torch.inference_mode(), steering:
        steering.phase.prompt_width = len(ids) + len(new) - 1  # "prompt" = every position but the last
        logits = model.original_model(torch.tensor([ids + new])).logits
    return logits[0, -1].float()


def test_output_phase_steers_the_first_new_token_and_generated_does_not(tiny, tiny_stats, handmade):
    push = dict(languages=["de", "ja"], target="ja", alpha=8.0, mode="diffmean")
    kwargs = dict(neurons=handmade, stats=tiny_stats, max_new_tokens=3, return_logits=True, detect=False)
    plain = steer.generate(tiny, PROMPTS, max_new_tokens=3, return_logits=True, detect=False)
    later = steer.generate(tiny, PROMPTS, interventions=[Intervention("add", phase="generated", **push)], **kwargs)
    output = steer.generate(tiny, PROMPTS, interventions=[Intervention("add", phase="output", **push)], **kwargs)
    for p, g, o in zip(plain.logits, later.logits, output.logits):
        torch.testing.assert_close(g[0], p[0])  # the first new token is predicted at the prompt's last position
        assert not torch.allclose(o[0], p[0], atol=1e-4)


def test_std_push_is_alpha_standard_deviations_towards_the_target(tiny, tiny_corpus, handmade):
    stats = steer.collect(tiny, tiny_corpus, batch_size=2, sq_sums=True, progress=False)
    base = _capture(tiny)
    spec = Intervention("add", languages=["de"], target="ja", alpha=2.0, mode="std")
    steered = _capture(tiny, steering=steer.intervene(tiny, spec, neurons=handmade, stats=stats))
    ja, de, cols = stats.index("ja"), stats.index("de"), torch.tensor([7, 20])
    means, stds = stats.means()[:, 1, cols], stats.stds()[ja, 1, cols]
    direction = (means[ja] - means[[k for k in range(3) if k != ja]].mean(0)).sign()
    assert (stds > 0).all()
    torch.testing.assert_close(steered[:, cols], base[:, cols] + 2.0 * direction * stds, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="sq_sums"):  # stats without squares: refused before any forward
        steer.intervene(tiny, spec, neurons=handmade, stats=steer.collect(tiny, tiny_corpus, batch_size=2,
                                                                          progress=False))


def test_interventions_compose_in_order(tiny, tiny_stats, handmade):
    both = steer.intervene(tiny, Intervention("suppress", languages=["de"]),
                           Intervention("add", languages=["de"], target="ja", alpha=1.0),
                           neurons=handmade, stats=tiny_stats)
    steered = _capture(tiny, steering=both)
    means = tiny_stats.means()[tiny_stats.index("ja"), 1, [7, 20]]
    torch.testing.assert_close(steered[:, [7, 20]], means.expand(steered.shape[0], -1))


def test_hooks_are_removed_after_an_exception(tiny, handmade):
    own = []
    with attached(tiny, [("blocks.0.mlp.hook_post", lambda x: own.append(1))]):
        before = hook_count(tiny)
        with pytest.raises(RuntimeError, match="boom"):
            with steer.deactivate(tiny, handmade):
                assert hook_count(tiny) == before + 3  # layers 1, 2, 3 only: layer 0 has no neuron
                raise RuntimeError("boom")
        assert hook_count(tiny) == before
        tiny.original_model(tiny.tokenizer("x", return_tensors="pt")["input_ids"])
        assert own  # the user's own hook survived
    assert not active_steerings(tiny)


def test_specs_are_plain_data():
    spec = Intervention("deactivate", languages=["fr"], phase="generated")
    assert spec.op == "suppress"
    assert Intervention.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_bad_inputs_fail_before_any_forward(tiny, tiny_llama, tiny_stats, handmade):
    calls = []
    with attached(tiny, [("blocks.0.mlp.hook_pre", lambda x: calls.append(1))]):
        with pytest.raises(ValueError, match="layers"):
            steer.generate(tiny_llama, PROMPTS, interventions=[Intervention("suppress")], neurons=handmade)
        with pytest.raises(ValueError, match="unknown language 'xx'"):
            steer.generate(tiny, PROMPTS, interventions=[Intervention("suppress", languages=["xx"])], neurons=handmade)
        with pytest.raises(ValueError, match="finite factor"):
            Intervention("scale", factor=float("inf"))
        with pytest.raises(ValueError, match="selects no neuron"):
            steer.generate(tiny, PROMPTS, interventions=[Intervention("suppress", languages=["en"], layers=[0])],
                           neurons=handmade)
        with pytest.raises(ValueError, match="needs ActivationStats"):
            steer.generate(tiny, PROMPTS, interventions=[Intervention("set", target="de")], neurons=handmade)
        with pytest.raises(ValueError, match="unknown op"):
            Intervention("explode")
    assert calls == []
