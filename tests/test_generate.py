"""Generation: plain data out, forced language, errors; forced-language success on the embedded model."""

from __future__ import annotations

import json

import pytest

import steer
from steer.generation import DEFAULT_FORCE_MODE, DEFAULT_STRENGTH, force_language_interventions


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
    with pytest.raises(ValueError, match="unknown force mode"):
        force_language_interventions(tiny_neurons, "de", mode="shout")


def test_force_language_needs_neurons_and_stats(tiny, tiny_neurons):
    with pytest.raises(ValueError, match="force_language needs neurons"):
        steer.generate(tiny, ["Hello"], force_language="de", neurons=tiny_neurons)
    with pytest.raises(ValueError, match="prompts must be"):
        steer.generate(tiny, [])


@pytest.mark.integration
def test_forced_language_flips_the_output_language_on_gemma(gemma):
    corpus = steer.load_corpus().subset(max_stats=32, max_eval=4)
    stats = steer.collect(gemma, corpus, batch_size=16, progress=False)
    neurons = steer.identify(stats, method="zhang2025")
    languages = corpus.languages
    prompts = {lang: " ".join(corpus.eval[lang][3].split()[:6]) if lang not in ("ja", "zh", "km")
               else corpus.eval[lang][3][:12] for lang in languages}
    steered_hits = plain_hits = pairs = 0
    plain = steer.generate(gemma, list(prompts.values()), max_new_tokens=10, candidates=languages)
    plain_language = dict(zip(languages, plain.languages))
    for target in languages:
        sources = [lang for lang in languages if lang != target]
        result = steer.generate(gemma, [prompts[s] for s in sources], neurons=neurons, stats=stats,
                                force_language=target, max_new_tokens=10, batch_size=len(sources))
        steered_hits += sum(lang == target for lang in result.languages)
        plain_hits += sum(plain_language[s] == target for s in sources)
        pairs += len(sources)
    steered, unsteered = steered_hits / pairs, plain_hits / pairs
    print(f"forced-language success over {pairs} pairs: {steered:.2f} (unsteered: {unsteered:.2f})")
    assert steered >= 0.35 and steered >= unsteered + 0.3


def test_suppressing_only_the_source_language_switches_off_that_language_per_prompt(tiny, tiny_neurons, tiny_stats):
    prompts = ["Die Katze sitzt auf der Matte und schaut", "The cat sits on the mat and looks out"]
    out = steer.generate(tiny, prompts, neurons=tiny_neurons, stats=tiny_stats, force_language="ja", suppress="source",
                         max_new_tokens=4)
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
                          max_new_tokens=4)
    assert [s["op"] for s in none.settings["interventions"]] == ["add"]
    with pytest.raises(ValueError, match="unknown suppress 'all'"):
        steer.generate(tiny, prompts, neurons=tiny_neurons, stats=tiny_stats, force_language="ja", suppress="all")


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
