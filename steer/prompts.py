"""Prompts cut from a paragraph: its first words (`prefix`) or its first sentence (`sentence`).

The forced-language measurement prompts with them and a learned push trains on the same openings, so they
live here, below both.
"""

from __future__ import annotations

import re
import unicodedata

PROMPT_KINDS = ("prefix", "sentence")
PROMPT_WORDS = 8
MAX_SENTENCE_WORDS = 25


def _is_cjk(ch: str) -> bool:
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))


def prompt_prefix(text: str, n_words: int = PROMPT_WORDS) -> str:
    """The first `n_words` words of `text` (whitespace normalised).

    For scripts written without spaces between words (Chinese, Japanese, Khmer, ...), where
    splitting on whitespace gives long runs, about two characters per word for CJK and four
    otherwise.
    """
    if n_words < 1:
        raise ValueError("n_words must be at least 1")
    text = " ".join(text.split())
    pieces = text.split(" ")
    head = pieces[:n_words]
    if head and sum(len(p) for p in head) / len(head) <= 15:
        return " ".join(head)
    letters = [ch for ch in text[: 4 * n_words] if not ch.isspace()]
    per_word = 2 if sum(_is_cjk(ch) for ch in letters) > len(letters) / 2 else 4
    return text[: per_word * n_words].strip()


# A sentence ends at . ! ? (then a space or the end) or at a full stop of a script without spaces (。！？।။។።།).
_SENTENCE_END = re.compile(r"[.!?…](?=\s|$)|[。！？।॥။។።།]")


def first_sentence(text: str, max_words: int = MAX_SENTENCE_WORDS) -> str:
    """The first complete sentence of `text` (whitespace normalised), cut to its first `max_words` words
    (`prompt_prefix`) when longer or when the text has no sentence end."""
    text = " ".join(text.split())
    match = _SENTENCE_END.search(text)
    sentence = text[: match.end()] if match else text
    cut = prompt_prefix(sentence, max_words)
    return sentence if len(cut) >= len(sentence) else cut


def make_prompt(text: str, kind: str = "prefix", n_words: int = PROMPT_WORDS) -> str:
    """The prompt of kind `kind` ("prefix": the first `n_words` words; "sentence": the first sentence)."""
    if kind == "prefix":
        return prompt_prefix(text, n_words)
    if kind == "sentence":
        return first_sentence(text)
    raise ValueError(f"unknown prompt kind '{kind}' (known: {', '.join(PROMPT_KINDS)})")
