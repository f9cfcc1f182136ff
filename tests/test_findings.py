"""The README's headline findings on the embedded model, checked by direction and margin (never a copied number).

- Deactivating a language's neurons raises perplexity on that language (the ΔPPL diagonal) more than on the
  others (off-diagonal) and more than deactivating random neurons with the same per-layer counts.
- zhang2025 gives English, the model's dominant language, the fewest language neurons.

The forced-language finding (fluent success above the random-neuron control) is
`tests/test_generate.py::test_forced_language_gives_fluent_text_on_gemma`.
"""

from __future__ import annotations

import pytest
import torch

import steer
from steer.bench.delta_ppl import delta_ppl_matrix, headline

pytestmark = pytest.mark.integration

LANGUAGES = ["en", "de", "fr", "ru", "ja", "eu"]


@pytest.fixture(scope="module")
def measured(gemma):
    corpus = steer.load_corpus().subset(languages=LANGUAGES, max_eval=6)
    stats = steer.collect(gemma, corpus, max_tokens_per_language=4000, max_length=128, progress=False)
    return corpus, stats, steer.identify(stats, method="zhang2025")


def test_delta_ppl_diagonal_beats_off_diagonal_and_random_neurons(gemma, measured):
    corpus, _, neurons = measured
    rows = ["en", "de", "ja", "eu"]
    result = delta_ppl_matrix(gemma, neurons, {lang: corpus.eval[lang] for lang in LANGUAGES}, rows=rows, n_random=2,
                              random_columns="diagonal", max_length=96, progress=False)
    summary = headline(result)
    diagonal, off = summary["diagonal_mean_delta_logppl"], summary["offdiagonal_mean_delta_logppl"]
    random = summary["random_control_diagonal_mean_delta_logppl"]
    assert diagonal > 0.1, summary  # switching a language's neurons off hurts that language ...
    assert diagonal > 2 * max(off, 0.0) + 0.05, summary  # ... much more than it hurts the others ...
    assert diagonal > 5 * max(random, 0.0) + 0.05, summary  # ... and than as many random neurons do


def test_zhang2025_gives_english_the_fewest_neurons(measured):
    _, _, neurons = measured
    counts = dict(zip(neurons.languages, neurons.membership.sum((1, 2)).tolist()))
    others = sorted(count for lang, count in counts.items() if lang != "en")
    assert counts["en"] < others[0], counts
    assert counts["en"] <= 0.75 * float(torch.tensor(others, dtype=torch.float).median()), counts
