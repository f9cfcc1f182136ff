"""Offline language identification of generated text, on py3langid (its model ships in the wheel).

``detect_language(text)`` returns a steer language code (ISO 639-1, as in :mod:`steer.corpus`)
or ``"und"`` when it cannot tell: empty text or text without letters, a language outside the
identifier's inventory, or a normalised probability below ``min_confidence``.

Restricting the answer to ``candidates`` renormalises over them, so text in a language outside the
set comes back as its closest member (Portuguese as ``es`` among steer's default ten, Hindi as
``zh``): good for a confusion table among known languages, wrong for deciding whether a text *is*
in a language. ``top_language(texts)`` answers that: the top-1 label over every language the
identifier knows, whatever its probability.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache

from steer.languages import LANGUAGES

__all__ = ["SUPPORTED", "UNSUPPORTED", "UND", "DEFAULT_MIN_CONFIDENCE", "detect_language", "detect_with_confidence",
           "top_language"]

UND = "und"
DEFAULT_MIN_CONFIDENCE = 0.5

# py3langid labels that are not steer codes -> the steer code (ISO 639-1 macrolanguage) they belong to.
_FROM_LANGID = {"arz": "ar", "ary": "ar", "wuu": "zh", "yue": "zh", "uzs": "uz", "zxx": UND}
# steer code -> py3langid labels that stand for it (restricting to "zh" keeps Wu/Cantonese too).
_TO_LANGID: dict[str, list[str]] = {}
for _label, _code in _FROM_LANGID.items():
    if _code != UND:
        _TO_LANGID.setdefault(_code, []).append(_label)

# Codes steer uses elsewhere (steer.languages); those py3langid cannot recognise are UNSUPPORTED.
_STEER_CODES = sorted({code.split("-")[0] for code in LANGUAGES})

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _base():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _labels() -> list[str]:
    return _base().labels


def _steer_code(label: str) -> str:
    return _FROM_LANGID.get(label, label)


def _supported() -> set[str]:
    return {_steer_code(label) for label in _labels()} - {UND}


# SUPPORTED / UNSUPPORTED are computed from the model on first access (loading it takes ~1 s,
# so `import steer` stays fast):
#   SUPPORTED: set[str]   every code detect_language can return (besides "und")
#   UNSUPPORTED: set[str] steer codes the identifier does not know: never returned; text in such a
#                         language comes out as another language or "und".
@lru_cache(maxsize=1)
def _unsupported() -> frozenset[str]:
    return frozenset(code for code in _STEER_CODES if code not in _supported_cached())


@lru_cache(maxsize=1)
def _supported_cached() -> frozenset[str]:
    return frozenset(_supported())


def __getattr__(name: str):
    if name == "SUPPORTED":
        return set(_supported_cached())
    if name == "UNSUPPORTED":
        return set(_unsupported())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@lru_cache(maxsize=64)
def _identifier(candidates: tuple[str, ...] | None):
    """One identifier per candidate set, sharing the model arrays of the base one."""
    base = _base()
    if candidates is None:
        return base
    from py3langid.langid import LanguageIdentifier

    ident = LanguageIdentifier(
        *base._full_model[:2], base._full_model[2], base.tk_nextmove, base.tk_output,
        norm_probs=True, tk_row=base.tk_row,
    )  # fmt: skip
    labels = [label for code in candidates for label in (code, *_TO_LANGID.get(code, [])) if label in base.labels]
    ident.set_languages(labels)
    return ident


def _candidate_key(candidates: Iterable[str] | None) -> tuple[str, ...] | None:
    if candidates is None:
        return None
    if isinstance(candidates, str):
        candidates = [candidates]
    usable = tuple(sorted({c for c in candidates if c in _supported_cached()}))
    if not usable:
        raise ValueError(
            f"none of the candidate languages {sorted(set(candidates))} is supported by the language identifier "
            f"(unsupported: {sorted(_unsupported())})"
        )
    return usable


def _has_letters(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def detect_with_confidence(
    texts: Sequence[str], candidates: Iterable[str] | None = None, min_confidence: float = DEFAULT_MIN_CONFIDENCE
) -> list[tuple[str, float]]:
    """``(code, probability)`` per text; code is "und" below ``min_confidence`` (probability still reported)."""
    key = _candidate_key(candidates)
    ident = _identifier(key)
    out: list[tuple[str, float]] = []
    with _lock:  # identifiers are cheap to share but not documented as thread-safe
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"detect_language expects str, got {type(text).__name__}")
            if not _has_letters(text):
                out.append((UND, 0.0))
                continue
            label, prob = ident.classify(text)
            code = _steer_code(label)
            out.append((code if prob >= min_confidence else UND, prob))
    return out


def detect_language(
    text_or_texts: str | Sequence[str],
    candidates: Iterable[str] | None = None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> str | list[str]:
    """The language of a text (a code) or of each text of a list (a list of codes).

    ``candidates`` restricts the answer to those codes (those in :data:`UNSUPPORTED` are ignored,
    never returned); the probability is then normalised over the candidates only.  "und" for
    empty text or text without letters, and when the best probability is below ``min_confidence``.
    """
    if isinstance(text_or_texts, str):
        return detect_with_confidence([text_or_texts], candidates, min_confidence)[0][0]
    return [code for code, _ in detect_with_confidence(list(text_or_texts), candidates, min_confidence)]


def top_language(text_or_texts: str | Sequence[str]) -> str | list[str]:
    """The identifier's top-1 language over *all* its languages (no candidate set, no confidence threshold): a
    text is in language T only when this is T. "und" for empty text or text without letters."""
    if isinstance(text_or_texts, str):
        return detect_with_confidence([text_or_texts], None, 0.0)[0][0]
    return [code for code, _ in detect_with_confidence(list(text_or_texts), None, 0.0)]
