"""steer.langid: offline language identification (py3langid)."""

from __future__ import annotations

import pytest

from steer import langid
from steer.langid import detect_language, detect_with_confidence

SENTENCES = {
    "en": "The weather is nice today, so we are going for a walk in the park.",
    "de": "Das Wetter ist heute schön, deshalb gehen wir im Park spazieren.",
    "fr": "Il fait beau aujourd'hui, alors nous allons nous promener dans le parc.",
    "ja": "今日は天気が良いので、公園に散歩に行きます。",
    "ru": "Сегодня хорошая погода, поэтому мы идём гулять в парк.",
    "zh": "今天天气很好，所以我们去公园散步。",
}


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_clear_sentences(lang):
    assert detect_language(SENTENCES[lang]) == lang
    assert detect_language(SENTENCES[lang], candidates=list(SENTENCES)) == lang


def test_batch_returns_list_in_order():
    langs = sorted(SENTENCES)
    assert detect_language([SENTENCES[lang] for lang in langs]) == langs
    assert detect_language([]) == []


@pytest.mark.parametrize("text", ["", "   ", "12345 !!", "\n"])
def test_empty_or_letterless_is_und(text):
    assert detect_language(text) == "und"
    assert detect_with_confidence([text])[0] == ("und", 0.0)


def test_candidates_respected():
    assert detect_language(SENTENCES["de"], candidates=["en", "fr"]) in {"en", "fr", "und"}
    got = detect_language(list(SENTENCES.values()), candidates=["en", "de"], min_confidence=0.0)
    assert set(got) <= {"en", "de"}
    with pytest.raises(ValueError, match="none of the candidate"):
        detect_language("hello there my friend", candidates=["xx"])


def test_min_confidence():
    code, p = detect_with_confidence([SENTENCES["en"]])[0]
    assert code == "en" and 0.5 < p <= 1.0
    assert detect_language(SENTENCES["en"], min_confidence=1.01) == "und"


def test_supported_and_unsupported():
    assert {"en", "de", "fr", "ja", "ru", "zh", "eu", "km"} <= langid.SUPPORTED
    assert "und" not in langid.SUPPORTED
    assert isinstance(langid.UNSUPPORTED, set) and not (langid.UNSUPPORTED & langid.SUPPORTED)
    # an unsupported candidate is ignored, never returned
    fake = "zz"
    langid._STEER_CODES.append(fake)
    langid._unsupported.cache_clear()
    try:
        assert fake in langid.UNSUPPORTED
        assert detect_language(SENTENCES["de"], candidates=["de", fake]) == "de"
    finally:
        langid._STEER_CODES.remove(fake)
        langid._unsupported.cache_clear()


def test_identifier_shared_per_candidate_set():
    a = langid._identifier(langid._candidate_key(["en", "de"]))
    b = langid._identifier(langid._candidate_key(["de", "en", "de"]))
    assert a is b


# Text in a language outside the candidate set comes back as its closest member when restricted; the
# unrestricted top-1 (what the forced-language judge uses) names it.
OUTSIDE = {
    "pt": ("Eu gosto muito de comer pão com manteiga pela manhã, antes de ir trabalhar.", ["en", "de", "fr", "es"]),
    "hi": ("मुझे सुबह काम पर जाने से पहले मक्खन के साथ रोटी खाना बहुत पसंद है।", ["en", "zh", "km", "ja"]),
    "it": ("Mi piace molto mangiare pane e burro la mattina, prima di andare al lavoro.", ["es", "nl", "pl", "tr"]),
}


@pytest.mark.parametrize("lang", sorted(OUTSIDE))
def test_the_top_language_is_not_renormalised_over_candidates(lang):
    text, candidates = OUTSIDE[lang]
    restricted = detect_language(text, candidates=candidates, min_confidence=0.0)
    assert restricted in candidates  # the closest member: in-target by the restricted label, wrongly
    assert langid.top_language(text) == lang
    assert all(langid.top_language(text) != target for target in candidates)
    assert langid.top_language([text, ""]) == [lang, "und"]
