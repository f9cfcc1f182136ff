"""The forced-language protocol: prompts, per-pair paragraph sampling, intervals over paragraphs, the result type."""

from __future__ import annotations

import json

import pytest

from steer.bench.forced import (
    ForcedResult, Item, Rates, Setting, forced_language, own_paragraphs, pair_paragraphs, true_continuation,
)
from steer.prompts import first_sentence, make_prompt, prompt_prefix
from steer.bench.resample import bootstrap_rates, rate_ci


def test_first_sentence_stops_at_the_first_sentence_end_and_at_25_words():
    assert first_sentence("Choose Format - Cells. Then click OK to apply.") == "Choose Format - Cells."
    assert first_sentence("Version 2.5 is here! More text.") == "Version 2.5 is here!"  # not at the decimal point
    assert first_sentence("ファイルを開きます。次に保存します。") == "ファイルを開きます。"
    assert first_sentence("No end at all here") == "No end at all here"
    long = " ".join(f"w{i}" for i in range(40)) + ". Next."
    assert first_sentence(long) == " ".join(f"w{i}" for i in range(25))
    assert make_prompt("a b c d e f g h i j. k", "prefix") == "a b c d e f g h"
    assert make_prompt("a b c d e f g h i j. k", "sentence") == "a b c d e f g h i j."
    with pytest.raises(ValueError, match="unknown prompt kind 'word'"):
        make_prompt("a b", "word")


def test_the_true_continuation_is_the_text_after_the_prompt_cut_to_a_token_count():
    class Tok:  # one token per word
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": text.split()}

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(ids)

    text = "one two three four five six seven eight nine ten eleven"
    prompt = prompt_prefix(text, 8)
    assert true_continuation(Tok(), text, prompt, 2) == "nine ten"
    assert true_continuation(Tok(), text, prompt, 4) is None  # too short for 4 tokens


def _texts(languages, n):
    return {lang: [f"{lang} paragraph {i} " + " ".join(["word"] * 9) for i in range(n)] for lang in languages}


def test_every_pair_gets_its_own_paragraphs_drawn_without_replacement_with_a_seed():
    languages = ["en", "de", "fr", "es"]
    texts = _texts(languages, 30)
    drawn = pair_paragraphs(texts, languages, languages, 3, seed=7)
    for target, items in drawn.items():
        assert len(items) == 9 and {item.source for item in items} == set(languages) - {target}
        assert len({item.paragraph for item in items}) == 9  # one paragraph per continuation
        assert all(item.prompt == prompt_prefix(texts[item.source][item.paragraph]) for item in items)
    assert drawn == pair_paragraphs(texts, languages, languages, 3, seed=7)  # the seed fixes the draw
    assert drawn != pair_paragraphs(texts, languages, languages, 3, seed=8)
    assert [i.paragraph for i in drawn["de"]] != [i.paragraph for i in drawn["fr"]]  # each target its own draw
    with pytest.warns(UserWarning, match="some paragraphs serve several source languages"):
        small = pair_paragraphs(_texts(languages, 4), languages, ["en"], 2, seed=0)
    assert len(small["en"]) == 6
    own = own_paragraphs(texts, ["de"], 5, seed=0)
    assert len({item.paragraph for item in own["de"]}) == 5 and all(item.source == "de" for item in own["de"])


def test_the_cluster_bootstrap_resamples_paragraphs_not_continuations():
    flags = [True] * 10 + [False] * 10
    rate, (low, high) = rate_ci(flags, list(range(20)))
    assert rate == 0.5 and low < 0.5 < high
    # the same 20 verdicts, but made of 4 paragraphs with 5 identical continuations each: far less information
    _, (c_low, c_high) = rate_ci(flags, [i // 5 for i in range(20)])
    assert c_high - c_low > (high - low) * 1.5
    assert rate_ci([], []) == (None, None)
    assert bootstrap_rates(flags, list(range(20)), seed=3).equal(bootstrap_rates(flags, list(range(20)), seed=3))
    assert rate_ci([True] * 5, list(range(5)))[1] == (1.0, 1.0)
    with pytest.raises(ValueError, match="2 flags but 1 cluster"):
        bootstrap_rates([True, False], [0])


def test_a_paired_difference_cancels_what_both_share():
    """Two pushes on the same 40 prompts: a differs from b on 8 of them. Paired, the interval of the difference is
    narrower than the two rates' own intervals would make it, and it excludes 0 only when the gap is one-sided."""
    from steer.bench.resample import difference_ci

    clusters = list(range(40))
    easy = [i % 2 == 0 for i in clusters]  # half the paragraphs are easy for both
    better = [flag or i in (1, 3, 5, 7, 9, 11, 13, 15) for i, flag in enumerate(easy)]
    gap, (low, high) = difference_ci(better, easy, clusters)
    assert gap == 0.2 and 0 < low < 0.2 < high
    _, (a_low, a_high) = rate_ci(better, clusters)
    _, (b_low, b_high) = rate_ci(easy, clusters)
    assert high - low < ((a_high - a_low) + (b_high - b_low)) / 2  # the shared easy paragraphs cancel
    mixed = [flag != (i in (1, 2)) for i, flag in enumerate(easy)]  # one gained, one lost: no difference shown
    gap, (low, high) = difference_ci(mixed, easy, clusters)
    assert gap == 0 and low < 0 < high
    assert difference_ci([], [], []) == (None, None)
    with pytest.raises(ValueError, match="as many flags"):
        difference_ci([True], [True, False], [0, 1])


def test_a_setting_resolves_the_defaults_and_refuses_unknown_values():
    from steer.forcing import DEFAULT_STEPS, DEFAULT_STRENGTH

    setting = Setting()
    assert setting.strength == DEFAULT_STRENGTH[setting.mode] and setting.steps == DEFAULT_STEPS
    assert Setting(steps=None).to_dict()["steps"] is None and Setting(steps="all").steps is None  # every step
    assert Setting(steps=None).name.endswith("/all") and Setting(steps=8).to_dict()["steps"] == 8
    with pytest.raises(ValueError, match="0 no longer means every step"):
        Setting(steps=0)
    with pytest.raises(ValueError, match="unknown force mode 'loud'"):
        Setting(mode="loud")
    with pytest.raises(ValueError, match="unknown suppress"):
        Setting(suppress="all")


def test_forced_language_reports_every_rate_with_an_interval_and_every_control(tiny, tiny_stats, tmp_path):
    import steer

    neurons = steer.identify(tiny_stats, method="zhang2025", top_rate=0.2)
    words = "one two three four five six seven eight nine ten eleven twelve"
    texts = {lang: [f"{lang} tune {i} {words}" for i in range(6)] + [f"{lang} eval {i} {words}" for i in range(6)]
             for lang in neurons.languages}
    result = forced_language(tiny, neurons, tiny_stats, texts, n_prompts=2, n_baseline=3, n_random=2,
                             max_new_tokens=3, progress=False, checkpoint=tmp_path / "units.json")
    assert isinstance(result, ForcedResult)
    assert all(" eval " in row["prompt"] for row in result.continuations)
    assert result.n == len(neurons.languages) * (len(neurons.languages) - 1) * 2
    for target, row in result.per_target.items():
        paragraphs = [r["paragraph"] for r in result.continuations if r["target"] == target]
        assert len(set(paragraphs)) == len(paragraphs) == 2 * (len(neurons.languages) - 1)
        assert isinstance(row.random, Rates) and len(row.random_per_seed) == 2 and row.random.n == 2 * row.forced.n
        for rates in (row.forced, row.unsteered, row.own_text):
            assert rates.n and rates.raw_success_ci is not None and rates.fluent_success_ci is not None
    assert result.fluent_success is not None and result.fluent_success <= result.raw_success
    assert result.fluent_success_ci[0] <= result.fluent_success <= result.fluent_success_ci[1]
    assert set(result.per_source) == set(neurons.languages)
    assert all(bar["source"] in ("own", "pooled") for bar in result.bars.values())
    assert result.judge["language"] == "top1-all" and result.prompt == "prefix"
    back = ForcedResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.fluent_success == result.fluent_success and back.per_target.keys() == result.per_target.keys()
    # resumed from its units: nothing is generated again
    import steer.bench.forced as forced

    def refuse(*args, **kwargs):
        raise AssertionError("generated again")

    original = forced.generate
    forced.generate = refuse
    try:
        again = forced_language(tiny, neurons, tiny_stats, texts, n_prompts=2, n_baseline=3, n_random=2,
                                max_new_tokens=3, progress=False, checkpoint=tmp_path / "units.json")
    finally:
        forced.generate = original
    assert again.to_dict() == result.to_dict()
    with pytest.raises(ValueError, match="a sweep cell needs at least 20 paragraphs per target"):
        forced_language(tiny, neurons, tiny_stats, texts, n_prompts=1, n_baseline=3, n_random=0, sweep_modes=["additive"],
                        sweep_n_prompts=1, max_new_tokens=3, progress=False)
