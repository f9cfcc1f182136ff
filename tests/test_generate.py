"""Generation: plain data out, forced language, errors; forced-language success on the embedded model."""

from __future__ import annotations

import json

import pytest
import torch

import steer
from steer.forcing import DEFAULT_FORCE_MODE, DEFAULT_STEPS, DEFAULT_STRENGTH, force_language_interventions


def test_generation_is_plain_data(tiny):
    result = steer.generate(tiny, ["Hello", "Hallo Welt"], max_new_tokens=4)
    assert len(result) == 2 and len(result.languages) == 2
    assert json.loads(json.dumps(result.to_dict()))["settings"]["max_new_tokens"] == 4
    assert result.logits is None


def test_sampling_is_seeded(tiny):
    a = steer.generate(tiny, ["Hello"], max_new_tokens=6, do_sample=True, seed=1, detect=False)
    b = steer.generate(tiny, ["Hello"], max_new_tokens=6, do_sample=True, seed=1, detect=False)
    assert a.texts == b.texts


def test_force_language_plan(tiny_neurons):
    specs = force_language_interventions(tiny_neurons, "de")
    assert [s.op for s in specs] == ["suppress", "add" if DEFAULT_FORCE_MODE != "set" else "set"]
    assert specs[0].languages == ["en", "ja"] and specs[0].exclude_languages == ["de"]
    assert specs[1].alpha == DEFAULT_STRENGTH[DEFAULT_FORCE_MODE]
    assert {s.steps for s in specs} == {DEFAULT_STEPS}
    assert {s.steps for s in force_language_interventions(tiny_neurons, "de", steps=None)} == {None}  # every step
    with pytest.raises(ValueError, match="unknown force mode"):
        force_language_interventions(tiny_neurons, "de", mode="shout")
    with pytest.raises(ValueError, match=r"0 no longer means every step: pass None"):  # one convention everywhere
        force_language_interventions(tiny_neurons, "de", steps=0)
    with pytest.raises(ValueError, match=r"force mode 'add' is now 'additive' \(Intervention's word for it"):
        force_language_interventions(tiny_neurons, "de", mode="add")
    additive = force_language_interventions(tiny_neurons, "de", mode="additive")[-1]
    assert additive.op == "add" and additive.mode == "additive"  # generate's mode is Intervention's mode


def test_a_rule_forcing_needs_stats_and_defaults_its_neurons(tiny, tiny_neurons, tiny_stats):
    with pytest.raises(ValueError, match="force_language needs stats"):
        steer.generate(tiny, ["Hello"], force_language="de", neurons=tiny_neurons, mode=DEFAULT_FORCE_MODE)
    with pytest.raises(ValueError, match="prompts must be"):
        steer.generate(tiny, [])
    from steer.forcing import forcing_neurons

    kwargs = dict(force_language="de", stats=tiny_stats, mode=DEFAULT_FORCE_MODE, max_new_tokens=4,
                  return_logits=True, detect=False)
    default = steer.generate(tiny, ["Hello", "猫は"], **kwargs)
    explicit = steer.generate(tiny, ["Hello", "猫は"], neurons=forcing_neurons(tiny_stats), **kwargs)
    assert default.texts == explicit.texts
    assert forcing_neurons(tiny_stats).method == "specificity"
    plain = steer.generate(tiny, ["Hello", "猫は"], max_new_tokens=4, return_logits=True, detect=False)
    assert not torch.allclose(default.logits[0], plain.logits[0], atol=1e-4)  # the default neurons do steer
    assert default.settings["steps"] == DEFAULT_STEPS  # forcing stops after the first DEFAULT_STEPS new tokens
    longer = dict(kwargs, max_new_tokens=DEFAULT_STEPS + 2)
    every = steer.generate(tiny, ["Hello", "猫は"], steps=None, **longer)  # None: force every step
    brief = steer.generate(tiny, ["Hello", "猫は"], **longer)
    assert every.settings["steps"] is None and {spec["steps"] for spec in every.settings["interventions"]} == {None}
    assert {spec["steps"] for spec in brief.settings["interventions"]} == {DEFAULT_STEPS}
    for always, short in zip(every.logits, brief.logits):
        torch.testing.assert_close(short[:DEFAULT_STEPS], always[:DEFAULT_STEPS])
        assert not torch.allclose(short[DEFAULT_STEPS:], always[DEFAULT_STEPS:], atol=1e-4)


@pytest.mark.integration
def test_forced_language_gives_fluent_text_on_gemma(gemma):
    """At the defaults, on the evaluation half: fluent text in the target, above the unsteered rate and the same push
    on random neurons by more than the intervals' overlap (direction and margin, not a copied number)."""
    from steer.bench.forced import forced_language
    from steer.forcing import forcing_neurons

    languages = ["en", "de", "fr"]
    corpus = steer.load_corpus().subset(languages=languages, max_stats=48)
    stats = steer.collect(gemma, corpus, max_length=128, progress=False)
    neurons = forcing_neurons(stats)  # what generate(force_language=...) uses without neurons
    result = forced_language(gemma, neurons, stats, {lang: list(corpus.eval[lang]) for lang in languages},
                             n_prompts=4, n_baseline=6, n_random=1, max_new_tokens=12, progress=False)
    print(f"forced language over {result.n} continuations: fluent {result.fluent_success:.2f} "
          f"{result.fluent_success_ci}, raw {result.raw_success:.2f}, random {result.random.fluent_success:.2f} "
          f"{result.random.fluent_success_ci}, unsteered {result.unsteered.fluent_success:.2f}")
    assert result.fluent_success_ci[0] > result.unsteered.fluent_success_ci[1]
    assert result.fluent_success_ci[0] > result.random.fluent_success


def test_suppressing_only_the_source_language_switches_off_that_language_per_prompt(tiny, tiny_neurons, tiny_stats):
    prompts = ["Die Katze sitzt auf der Matte und schaut", "The cat sits on the mat and looks out"]
    out = steer.generate(tiny, prompts, neurons=tiny_neurons, stats=tiny_stats, force_language="ja", suppress="source",
                         mode=DEFAULT_FORCE_MODE, max_new_tokens=4)
    groups = out.settings["interventions"]
    suppressed = {tuple(g["prompts"]): [s["languages"] for s in g["interventions"] if s["op"] == "suppress"] for g in groups} \
        if isinstance(groups[0], dict) else None
    detected = steer.detect_language(prompts, candidates=tiny_neurons.languages)
    if suppressed is None:  # both prompts detected as one language: one group
        assert len(set(detected)) == 1
    else:
        for rows, specs in suppressed.items():
            assert specs == [[detected[rows[0]]]] or (detected[rows[0]] == "ja" and specs == [])
    none = steer.generate(tiny, prompts, neurons=tiny_neurons, stats=tiny_stats, force_language="ja", suppress="none",
                          mode=DEFAULT_FORCE_MODE, max_new_tokens=4)
    from steer.forcing import DEFAULT_DECODING

    assert {k: none.settings[k] for k in DEFAULT_DECODING} == DEFAULT_DECODING  # forcing: the tuned decoding
    assert [s["op"] for s in none.settings["interventions"]] == ["add"]
    with pytest.raises(ValueError, match="unknown suppress 'all'"):
        steer.generate(tiny, prompts, neurons=tiny_neurons, stats=tiny_stats, force_language="ja", suppress="all",
                       mode=DEFAULT_FORCE_MODE)


def test_repetition_controls_reach_hf_generate(tiny, monkeypatch):
    seen = {}
    real = tiny.original_model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(tiny.original_model, "generate", spy)
    out = steer.generate(tiny, ["aaaa"], max_new_tokens=6, repetition_penalty=1.3, no_repeat_ngram_size=2, detect=False)
    assert (seen["repetition_penalty"], seen["no_repeat_ngram_size"]) == (1.3, 2)
    assert (out.settings["repetition_penalty"], out.settings["no_repeat_ngram_size"]) == (1.3, 2)
    with pytest.raises(ValueError, match="repetition_penalty must be positive"):
        steer.generate(tiny, ["aaaa"], repetition_penalty=0)
    plain = steer.generate(tiny, ["aaaa"], max_new_tokens=2, detect=False)
    assert (plain.settings["repetition_penalty"], plain.settings["no_repeat_ngram_size"]) == (None, None)
