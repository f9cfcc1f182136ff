"""The judge of forced continuations (steer.bench.fluency) and the tuning/evaluation split."""

from __future__ import annotations

import pytest

from steer.bench.fluency import MAX_RUN, MIN_BASELINE, MIN_DISTINCT_SHARE, NLL_BAD_QUANTILE, NLL_GOOD_QUANTILE, Bar, Score, bars, degeneracy, judge
from steer.bench.forced import halves


def test_degeneracy_counts_distinct_tokens_and_the_longest_run():
    assert degeneracy(["a", "a", "a", "a"]) == (0.25, 4)
    assert degeneracy(["a", "b", "c", "b"]) == (0.75, 1)
    assert degeneracy(["a", "b", "b", "b", "c"]) == (0.6, 3)
    assert degeneracy([]) == (0.0, 0)


def test_degeneracy_is_digit_aware():
    # Gemma writes 100 as three tokens: one number, not a run of zeros, and not three low-diversity tokens
    assert degeneracy(["▁In", "▁", "1", "0", "0", "0", "▁steps"]) == (1.0, 1)
    assert degeneracy(["1", "1", "1", "1", "1"]) == (1.0, 0)
    assert degeneracy(["▁page", "1", "▁page", "2", "▁page", "3"]) == (4 / 6, 1)
    assert degeneracy(["▁x", "▁x", "▁x", "▁x", "7"])[1] == 4  # a word loop still counts


def _own(nlls):
    return [Score(n, 16, 0.9, 1) for n in nlls]


def test_the_bar_is_the_95th_percentile_of_own_text_and_the_repetition_limits_are_absolute():
    nlls = [1.0 + 0.1 * i for i in range(MIN_BASELINE)]
    bar = bars({"de": _own(nlls)})["de"]
    assert bar.source == "own" and not bar.pooled and bar.n == MIN_BASELINE
    assert bar.nll_max == pytest.approx(1.0 + 0.1 * NLL_GOOD_QUANTILE * (MIN_BASELINE - 1)) == bar.good
    shuffled = _own([6.0 + 0.1 * i for i in range(MIN_BASELINE)])
    between = bars({"de": _own(nlls)}, {"de": shuffled})["de"]  # midway between human and shuffled text
    assert between.bad == pytest.approx(6.0 + 0.1 * NLL_BAD_QUANTILE * (MIN_BASELINE - 1))
    assert between.nll_max == pytest.approx((between.good + between.bad) / 2)
    assert (bar.distinct_min, bar.max_run_max) == (MIN_DISTINCT_SHARE, MAX_RUN) == (0.5, 3)
    assert bar.passes(Score(1.5, 16, 0.9, 1))
    assert bar.failure(Score(9.0, 16, 0.9, 1)) == "nll"  # less fluent than the model's own German
    assert bar.failure(Score(1.0, 16, 0.3, 1)) == "distinct"  # one word over and over
    assert bar.failure(Score(1.0, 16, 0.9, 4)) == "run"
    assert bar.passes(Score(1.0, 16, 0.5, 3))  # exactly at the limits
    assert bar.failure(Score(None, 0, 0.0, 0)) == "empty"


def test_too_few_own_samples_fall_back_to_a_labelled_bar():
    many = _own([1.0 + 0.01 * i for i in range(MIN_BASELINE)])
    got = bars({"de": many, "eu": _own([3.0] * (MIN_BASELINE - 1))})
    assert got["de"].source == "own" and got["eu"].source == "pooled" and got["eu"].n == 2 * MIN_BASELINE - 1
    assert got["eu"].pooled and got["eu"].nll_max == pytest.approx(3.0)
    assert Bar.from_dict(got["eu"].to_dict()) == got["eu"]
    with pytest.raises(ValueError, match="no text to set a fluency bar from"):
        bars({"de": []})


def test_shuffled_tokens_keep_the_tokens_and_lose_the_order(tiny):
    from steer.bench.fluency import shuffle_tokens

    text = "Open the file menu and choose save as to store the document."
    shuffled = shuffle_tokens(tiny.tokenizer, text, seed=1)
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert sorted(tiny.tokenizer(shuffled, add_special_tokens=False)["input_ids"]) == sorted(ids)
    assert shuffled != text and shuffled == shuffle_tokens(tiny.tokenizer, text, seed=1)


def test_the_judge_wants_the_target_fluent_text_and_no_copy_of_another_prompts_continuation():
    bar = Bar(nll_max=3.0, n=30)
    ok = Score(2.0, 16, 0.9, 1)
    texts = ["Das ist gut.", "Das ist gut.", "Ganz anders hier.", "Un texte français.", "Schlecht.", ""]
    detected = ["de", "de", "de", "fr", "de", "und"]
    scores = [ok, ok, ok, ok, Score(5.0, 16, 0.9, 1), Score(None, 0, 0.0, 0)]
    verdicts = judge(texts, detected, scores, "de", bar)
    assert [v.reason for v in verdicts] == ["duplicate", "duplicate", None, "language", "nll", "language"]
    assert [v.in_target for v in verdicts] == [True, True, True, False, True, False]
    assert [v.fluent for v in verdicts] == [False, False, True, False, False, False]


def test_the_split_halves_every_language_at_the_same_paragraph():
    texts = {"en": [f"e{i}" for i in range(10)], "de": [f"d{i}" for i in range(10)]}
    tune, evaluate = halves(texts)
    assert tune["en"] == [f"e{i}" for i in range(5)] and evaluate["de"] == [f"d{i}" for i in range(5, 10)]


def test_the_sweep_grid_keeps_the_neuron_order_sorts_strengths_and_marks_missing_cells(tmp_path):
    from steer.bench.plots import forced_grid, plot_forced_grid

    def row(neurons, strength, fluent, de):
        return {"neurons": neurons, "strength": strength, "fluent": fluent, "per_target": {"de": {"fluent": de}}}

    rows = [row("specificity:1000", 2.0, 0.3, 0.5), row("specificity:250", 2.0, 0.1, 0.2),
            row("specificity:1000", 1.0, 0.2, 0.0)]
    assert forced_grid(rows) == (["specificity:1000", "specificity:250"], [1.0, 2.0], [[0.2, 0.3], [None, 0.1]])
    assert forced_grid(rows, "de")[2] == [[0.0, 0.5], [None, 0.2]]
    path = plot_forced_grid(rows, ["de"], tmp_path / "grid.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
