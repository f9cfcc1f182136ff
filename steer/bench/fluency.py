"""The judge of forced continuations: in the target language, fluent, not degenerate, not a copy.

A continuation is scored three ways: its mean NLL per token under the *unsteered* model read as a
text of its own (not after its prompt: a German continuation of an English prompt is improbable
after that prompt by design, yet may be perfectly good German), the share of distinct tokens among
its tokens, and its longest run of one repeated token. Both repetition measures are digit-aware: the
tokenizer splits numbers into single digits, so a run of digit tokens counts as one token (the
number) for the distinct share, and digits never count towards a run.

The judge (`judge`) passes a continuation when
- the language identifier's top-1 label over *all* its languages is the target (`steer.langid.top_language`);
- its NLL is at most the target's bar: the `NLL_QUANTILE` quantile of the NLLs of the unsteered model's
  own continuations in that language (at least `MIN_BASELINE` of them, from the tuning half, decoded
  as the steered run is);
- it is not degenerate, by absolute limits: a distinct-token share of at least `MIN_DISTINCT_SHARE`
  and no token repeated more than `MAX_RUN` times in a row;
- it is not identical to another prompt's continuation for the same target (a push that writes one
  sentence whatever the prompt is not continuing anything).

A language with fewer than `MIN_BASELINE` own-language continuations gets the bar of every
language's own text pooled (`Bar.source == "pooled"`), or, when even those are too few, the bar of
every unsteered continuation whatever its language (`"unsteered"`); reports name the bar's source.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from steer.scoring import token_nll

MIN_DISTINCT_SHARE = 0.5
MAX_RUN = 3
MIN_BASELINE = 30  # own-language continuations a language needs for a bar of its own
NLL_QUANTILE = 0.95
SCORING_VERSION = 2  # 2: digit-aware repetition measures
# Everything a verdict depends on besides the texts and the bars' samples (enters the benchmarks' cache keys).
JUDGE_CONSTANTS = {"min_distinct_share": MIN_DISTINCT_SHARE, "max_run": MAX_RUN, "min_baseline": MIN_BASELINE,
                   "nll_quantile": NLL_QUANTILE, "scoring_version": SCORING_VERSION, "language": "top1-all"}
BAR_SOURCES = {"own": "the language's own unsteered continuations",
               "pooled": "every language's own unsteered continuations, pooled (too few of its own)",
               "unsteered": "every unsteered continuation whatever its language (fallback: too little own text)"}
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
    n: int  # continuations it was set from
    source: str = "own"  # a key of BAR_SOURCES
    distinct_min: float = MIN_DISTINCT_SHARE
    max_run_max: int = MAX_RUN

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


def _bar(scores: list[Score], source: str) -> Bar:
    nll = torch.tensor([s.nll for s in scores], dtype=torch.float64)
    return Bar(nll_max=float(torch.quantile(nll, NLL_QUANTILE)), n=len(scores), source=source)


def bars(own_language: dict[str, list[Score]], unsteered: list[Score]) -> dict[str, Bar]:
    """Per language, the bar from its own-language unsteered continuations (at least `MIN_BASELINE`).

    A language with fewer gets the bar of all languages' own-language text pooled (source "pooled");
    when even that is fewer than `MIN_BASELINE` (a model that writes no language the identifier knows,
    e.g. a random one), the bar of every unsteered continuation (`unsteered`; source "unsteered").
    """
    usable = {lang: [s for s in scores if s.nll is not None] for lang, scores in own_language.items()}
    everything = [s for scores in usable.values() for s in scores]
    source = "pooled"
    if len(everything) < MIN_BASELINE:
        everything, source = [s for s in unsteered if s.nll is not None], "unsteered"
    if not everything:
        raise ValueError("no unsteered continuation to set a fluency bar from; use more baseline prompts (n_baseline)")
    fallback = _bar(everything, source)
    return {lang: _bar(scores, "own") if len(scores) >= MIN_BASELINE else fallback for lang, scores in usable.items()}


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
