"""The judge of forced continuations: in the target language, fluent, not degenerate, not a copy.

A continuation is scored three ways: its mean NLL per token under the *unsteered* model read as a
text of its own (not after its prompt: a German continuation of an English prompt is improbable
after that prompt by design, yet may be perfectly good German), the share of distinct tokens among
its tokens, and its longest run of one repeated token. Both repetition measures are digit-aware: the
tokenizer splits numbers into single digits, so a run of digit tokens counts as one token (the
number) for the distinct share, and digits never count towards a run.

The judge (`judge`) passes a continuation when
- the language identifier's top-1 label over *all* its languages is the target (`steer.langid.top_language`);
- its NLL is at most the target's bar, set between known-good and known-bad text in that language: the
  midpoint of the `NLL_GOOD_QUANTILE` quantile of the NLLs of human text (the true continuations of up
  to 100 tuning-half paragraphs after the prompt, cut to the continuations' token count; at least
  `MIN_BASELINE`) and the `NLL_BAD_QUANTILE` quantile of the same texts with their tokens shuffled.
  Measured on the embedded model while building this judge: a bar at the 95th percentile of the
  model's own greedy text passed only 4 of 60 human German and French continuations (greedy text reads
  at 4-5 nats per token, human text at 4-9); one at the 95th percentile of 40 human texts passed 0.63
  (de) and 0.87 (fr) of the evaluation half's human text, whose tail is longer than the tuning half's;
  one at the largest human NLL let shuffled Khmer and Basque through (their human and shuffled NLLs
  overlap). `tests/test_judge_validation.py` holds the judge to its purpose: human text passes at
  least 0.9, known-bad text at most 0.05;
- it is not degenerate, by absolute limits: a distinct-token share of at least `MIN_DISTINCT_SHARE`
  and no token repeated more than `MAX_RUN` times in a row;
- it is not identical to another prompt's continuation for the same target (a push that writes one
  sentence whatever the prompt is not continuing anything).

A language with fewer than `MIN_BASELINE` texts of its own gets the bar of every language's text
pooled (`Bar.source == "pooled"`); reports name each bar's source.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from steer.scoring import token_nll

MIN_DISTINCT_SHARE = 0.5
MAX_RUN = 3
MIN_BASELINE = 30  # own-language continuations a language needs for a bar of its own
NLL_GOOD_QUANTILE = 0.95  # of human text's NLLs
NLL_BAD_QUANTILE = 0.05  # of the same text with its tokens shuffled
SCORING_VERSION = 2  # 2: digit-aware repetition measures
# Everything a verdict depends on besides the texts and the bars' samples (enters the benchmarks' cache keys).
JUDGE_CONSTANTS = {"min_distinct_share": MIN_DISTINCT_SHARE, "max_run": MAX_RUN, "min_baseline": MIN_BASELINE,
                   "nll_good_quantile": NLL_GOOD_QUANTILE, "nll_bad_quantile": NLL_BAD_QUANTILE, "scoring_version": SCORING_VERSION, "language": "top1-all"}
BAR_SOURCES = {"own": "human text in the language: true continuations of its tuning-half paragraphs",
               "pooled": "fallback: every language's human text pooled (fewer than MIN_BASELINE of its own)"}
REASONS = ("language", "empty", "duplicate", "nll", "distinct", "run")


@dataclass(frozen=True)
class Score:
    nll: float | None  # mean NLL per token under the unsteered model (None: no token)
    tokens: int
    distinct_share: float  # digit-aware: a run of digits is one token
    max_run: int  # longest run of one repeated non-digit token


@dataclass(frozen=True)
class Bar:
    nll_max: float
    n: int  # texts it was set from
    source: str = "own"  # a key of BAR_SOURCES
    distinct_min: float = MIN_DISTINCT_SHARE
    max_run_max: int = MAX_RUN
    good: float | None = None  # the NLL_GOOD_QUANTILE quantile of human text
    bad: float | None = None  # the NLL_BAD_QUANTILE quantile of the same text shuffled (None: not measured)

    @property
    def pooled(self) -> bool:
        return self.source != "own"

    def failure(self, score: Score) -> str | None:
        """The first fluency test `score` fails ("empty", "nll", "distinct", "run"), or None."""
        if score.nll is None or score.tokens == 0:
            return "empty"
        if score.nll > self.nll_max:
            return "nll"
        if score.distinct_share < self.distinct_min:
            return "distinct"
        if score.max_run > self.max_run_max:
            return "run"
        return None

    def passes(self, score: Score) -> bool:
        return self.failure(score) is None

    def to_dict(self) -> dict:
        return {**asdict(self), "pooled": self.pooled}

    @classmethod
    def from_dict(cls, data: dict) -> "Bar":
        return cls(**{k: v for k, v in data.items() if k != "pooled"})


def is_digit_piece(piece: str) -> bool:
    """A token that is (apart from a word-boundary mark) only digits."""
    core = piece.replace("▁", "").replace("Ġ", "").strip()
    return core.isdigit()


def degeneracy(pieces: Sequence[str]) -> tuple[float, int]:
    """(distinct units / units, longest run of one repeated non-digit unit) of a token sequence, where a run of
    digit tokens is one unit (the number); (0, 0) when empty."""
    units: list[str] = []
    digits: list[bool] = []
    for piece in pieces:
        digit = is_digit_piece(piece)
        if digit and digits and digits[-1]:
            units[-1] += piece
            continue
        units.append(piece)
        digits.append(digit)
    if not units:
        return 0.0, 0
    longest = run = 0
    previous = None
    for unit, digit in zip(units, digits):
        run = 0 if digit else (run + 1 if unit == previous else 1)
        previous = None if digit else unit
        longest = max(longest, run)
    return len(set(units)) / len(units), longest


def score_continuations(model, texts: Sequence[str], *, batch_size: int = 32) -> list[Score]:
    """Score each continuation, as a text of its own, under the model as it is now (call it outside any steering)."""
    nlls = token_nll(model, [text if text else " " for text in texts], batch_size=batch_size, max_length=512)
    scores = []
    for text, nll in zip(texts, nlls):
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        distinct, longest = degeneracy(model.tokenizer.convert_ids_to_tokens(ids))
        scores.append(Score(float(nll.mean()) if nll.numel() and text else None, int(nll.numel()) if text else 0,
                            distinct, longest))
    return scores


def shuffle_tokens(tokenizer, text: str, seed: int = 0) -> str:
    """`text` with its tokens in a seeded random order (known-bad text: the words of human text, no order)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    random.Random(f"{seed}:{text}").shuffle(ids)
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def _quantile(scores: list[Score], q: float) -> float:
    return float(torch.quantile(torch.tensor([s.nll for s in scores], dtype=torch.float64), q))


def _bar(good: list[Score], bad: list[Score], source: str) -> Bar:
    high = _quantile(good, NLL_GOOD_QUANTILE)
    low = _quantile(bad, NLL_BAD_QUANTILE) if bad else None
    return Bar(nll_max=high if low is None else (high + low) / 2, n=len(good), source=source, good=high, bad=low)


def bars(own_language: dict[str, list[Score]], shuffled: dict[str, list[Score]] | None = None) -> dict[str, Bar]:
    """Per language, the bar from its human text's scores (at least `MIN_BASELINE` of them; source "own") and, when
    given, those of the same texts shuffled (`shuffle_tokens`): the midpoint of the two quantiles.

    A language with fewer gets the bar of every language's texts pooled (source "pooled"; its `n` says
    how many texts it rests on).
    """
    shuffled = shuffled or {}
    usable = {lang: [s for s in scores if s.nll is not None] for lang, scores in own_language.items()}
    bad = {lang: [s for s in shuffled.get(lang, []) if s.nll is not None] for lang in usable}
    everything = [s for scores in usable.values() for s in scores]
    if not everything:
        raise ValueError("no text to set a fluency bar from: the held-out paragraphs are too short for the "
                         "continuation length, or there are too few (n_baseline)")
    fallback = _bar(everything, [s for scores in bad.values() for s in scores], "pooled")
    return {lang: _bar(scores, bad[lang], "own") if len(scores) >= MIN_BASELINE else fallback
            for lang, scores in usable.items()}


@dataclass(frozen=True)
class Verdict:
    in_target: bool  # the identifier's top-1 over all its languages is the target (raw success)
    fluent: bool  # in the target and passes every other test (fluent success)
    reason: str | None  # the first test failed (REASONS), None when fluent


def judge(texts: Sequence[str], detected: Sequence[str], scores: Sequence[Score], target: str, bar: Bar) -> list[Verdict]:
    """The verdict on each continuation of one group forced to `target` (`detected`: top-1 labels over all the
    identifier's languages). A text that occurs more than once in the group fails as a "duplicate"."""
    counts = Counter(text.strip() for text in texts)
    verdicts = []
    for text, label, score in zip(texts, detected, scores):
        in_target = label == target
        reason = None if in_target else "language"
        if reason is None:
            reason = bar.failure(score)
        if reason is None and counts[text.strip()] > 1:
            reason = "duplicate"
        verdicts.append(Verdict(in_target, reason is None, reason))
    return verdicts
