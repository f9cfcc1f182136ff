"""Fluent success: a forced continuation counts only when it reads like the model's own text in that language.

A continuation is scored three ways: its mean NLL per token under the *unsteered* model read as a
text of its own (not after its prompt: a German continuation of an English prompt is improbable
after that prompt by design, yet may be perfectly good German), the share of distinct tokens among
its tokens, and its longest run of one repeated token.
The bar for language T comes from the unsteered model continuing prompts written in T (kept when
the identifier says T, with the same decoding as the steered run): NLL at most that text's 95th
percentile, distinct share at least its 5th percentile, longest run at most its 95th percentile.
Absolute floors (a distinct share of at least 0.5, no run longer than 3) keep a looping baseline
from accepting loops: a 270M model's own greedy text in a low-resource language often repeats one
word.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from steer.scoring import token_nll

MIN_DISTINCT_SHARE = 0.5
MAX_RUN = 3
MIN_BASELINE = 3  # own-language samples a language needs for a bar of its own; else the pooled bar


@dataclass(frozen=True)
class Score:
    nll: float | None  # mean NLL per token under the unsteered model (None: no token)
    tokens: int
    distinct_share: float
    max_run: int


@dataclass(frozen=True)
class Bar:
    nll_max: float
    distinct_min: float
    max_run_max: int
    n: int  # own-language unsteered continuations it was set from
    pooled: bool = False  # too few of them: the bar of all languages together

    def passes(self, score: Score) -> bool:
        return (score.nll is not None and score.nll <= self.nll_max and score.distinct_share >= self.distinct_min
                and score.max_run <= self.max_run_max)

    def to_dict(self) -> dict:
        return asdict(self)


def degeneracy(ids: Sequence[int]) -> tuple[float, int]:
    """(distinct tokens / tokens, longest run of one token) of a token sequence ((0, 0) when empty)."""
    if not ids:
        return 0.0, 0
    longest = run = 1
    for previous, current in zip(ids, ids[1:]):
        run = run + 1 if current == previous else 1
        longest = max(longest, run)
    return len(set(ids)) / len(ids), longest


def score_continuations(model, texts: Sequence[str], *, batch_size: int = 32) -> list[Score]:
    """Score each continuation, as a text of its own, under the model as it is now (call it outside any steering)."""
    nlls = token_nll(model, [text if text else " " for text in texts], batch_size=batch_size, max_length=512)
    scores = []
    for text, nll in zip(texts, nlls):
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        distinct, longest = degeneracy(ids)
        scores.append(Score(float(nll.mean()) if nll.numel() else None, int(nll.numel()), distinct, longest))
    return scores


def _bar(scores: list[Score], pooled: bool = False) -> Bar:
    nll = torch.tensor([s.nll for s in scores], dtype=torch.float64)
    distinct = torch.tensor([s.distinct_share for s in scores], dtype=torch.float64)
    runs = torch.tensor([s.max_run for s in scores], dtype=torch.float64)
    return Bar(
        nll_max=float(torch.quantile(nll, 0.95)),
        distinct_min=max(MIN_DISTINCT_SHARE, float(torch.quantile(distinct, 0.05))),
        max_run_max=min(MAX_RUN, max(1, int(torch.quantile(runs, 0.95).floor()))),
        n=len(scores), pooled=pooled,
    )


def bars(own_language: dict[str, list[Score]], unsteered: list[Score]) -> dict[str, Bar]:
    """Per language, the bar from its own-language unsteered continuations.

    A language with fewer than `MIN_BASELINE` of them gets the bar of all languages' own-language
    text pooled; when even that is too little (a model that writes no language the identifier
    knows, e.g. a random one), the bar of every unsteered continuation (`unsteered`).
    """
    usable = {lang: [s for s in scores if s.nll is not None] for lang, scores in own_language.items()}
    everything = [s for scores in usable.values() for s in scores]
    if len(everything) < MIN_BASELINE:
        everything = [s for s in unsteered if s.nll is not None]
    if not everything:
        raise ValueError("no unsteered continuation to set a fluency bar from; use more baseline prompts (n_baseline)")
    pooled = _bar(everything, pooled=True)
    return {lang: _bar(scores) if len(scores) >= MIN_BASELINE else pooled for lang, scores in usable.items()}
