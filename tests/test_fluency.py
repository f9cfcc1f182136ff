"""The fluent-success measure and the tuning/evaluation split of the forced-language benchmark."""

from __future__ import annotations

import pytest

from steer.bench.fluency import MAX_RUN, MIN_DISTINCT_SHARE, Score, bars, degeneracy
from steer.bench.forced import forced_language, halves


def test_degeneracy_counts_distinct_tokens_and_the_longest_run():
    assert degeneracy([5, 5, 5, 5]) == (0.25, 4)
    assert degeneracy([1, 2, 3, 2]) == (0.75, 1)
    assert degeneracy([1, 2, 2, 2, 3]) == (0.6, 3)
    assert degeneracy([]) == (0.0, 0)


def _own(nlls, distinct=0.9, run=1):
    return [Score(n, 16, distinct, run) for n in nlls]


def test_bars_come_from_own_language_text_with_floors_against_loops():
    looping = [Score(1.0, 16, 0.2, 8)] * 5  # a baseline that loops cannot make loops fluent
    bar = bars({"de": _own([1.0, 1.2, 1.4, 1.6, 1.8]), "km": looping}, [])
    assert bar["de"].nll_max == pytest.approx(1.76) and not bar["de"].pooled
    assert bar["km"].distinct_min >= MIN_DISTINCT_SHARE and bar["km"].max_run_max <= MAX_RUN
    assert bar["de"].passes(Score(1.5, 16, 0.9, 1))
    assert not bar["de"].passes(Score(2.5, 16, 0.9, 1))  # less fluent than the model's own German
    assert not bar["de"].passes(Score(1.0, 16, 0.3, 1))  # one word over and over
    assert not bar["de"].passes(Score(None, 0, 0.0, 0))  # nothing generated


def test_a_language_with_too_few_samples_gets_the_pooled_bar():
    bar = bars({"de": _own([1.0, 1.1, 1.2, 1.3]), "eu": _own([3.0])}, [])
    assert bar["eu"].pooled and not bar["de"].pooled
    fallback = bars({"de": []}, _own([2.0, 2.1, 2.2]))  # no own-language text at all: every unsteered continuation
    assert fallback["de"].pooled and fallback["de"].n == 3


def test_the_split_halves_every_language_at_the_same_paragraph():
    texts = {"en": [f"e{i}" for i in range(10)], "de": [f"d{i}" for i in range(10)]}
    tune, evaluate = halves(texts)
    assert tune["en"] == [f"e{i}" for i in range(5)] and evaluate["de"] == [f"d{i}" for i in range(5, 10)]


def test_sweeps_read_the_tuning_half_and_figures_the_evaluation_half(tiny, tiny_stats):
    import steer

    tiny_neurons = steer.identify(tiny_stats, method="zhang2025", top_rate=0.2)  # every language has neurons
    words = "one two three four five six seven eight nine"
    texts = {lang: [f"{lang} tune {i} {words}" for i in range(3)] + [f"{lang} eval {i} {words}" for i in range(3)]
             for lang in tiny_neurons.languages}
    result = forced_language(tiny, tiny_neurons, tiny_stats, texts, n_prompts=1, n_baseline=2, sweep_modes=["add"],
                             sweep_strengths=[1.0], sweep_n_prompts=1, max_new_tokens=3, progress=False)
    assert all(" eval " in p for prompts in result["prompts"].values() for p in prompts)
    assert {row["mode"] for row in result["sweep"]["settings"]} == {"add"}
    assert result["sweep"]["half"] == "tune"
    assert 0.0 <= result["fluent_success_rate"] <= result["success_rate"] <= 1.0
    assert set(result["per_target"]) == set(tiny_neurons.languages)


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
