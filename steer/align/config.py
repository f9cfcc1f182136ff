"""The settings of one alignment run (`AlignConfig`) and the checks made on them before any work."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

OBJECTIVES = ("translation", "dpo")
DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IGNORE_ON_RESUME = ("checkpoint_every",)  # settings that do not change the result


@dataclass
class AlignConfig:
    """Settings of one alignment run; saved in the checkpoint and in ``align.json``.

    The defaults are sized for Gemma 3 270M on a 2-core CPU: about 3.5 s a step (batch 4, 128 tokens,
    float32), so 200 steps take about 13 minutes with loading and saving when the CPU is not shared.
    ``beta`` is used by the "dpo" objective only. ``checkpoint_every`` does not change the result, so a
    run may be resumed with another value.
    """

    train_languages: list[str]
    pivot: str = "en"
    objective: str = "translation"
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))
    steps: int = 200
    batch_size: int = 4
    lr: float = 2e-4
    max_length: int = 128
    seed: int = 0
    max_pairs: int | None = None
    checkpoint_every: int = 50
    beta: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.train_languages, str):
            self.train_languages = [s.strip() for s in self.train_languages.split(",") if s.strip()]
        self.train_languages = list(self.train_languages)
        self.target_modules = list(self.target_modules)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlignConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown AlignConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def validate(self) -> None:
        """Raise a one-line ValueError for settings that cannot work (checked before any work)."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective '{self.objective}': use one of {', '.join(OBJECTIVES)}")
        if not self.train_languages:
            raise ValueError("no languages to train: give at least one, e.g. train_languages=['eu', 'om']")
        if len(set(self.train_languages)) != len(self.train_languages):
            raise ValueError(f"duplicate train languages {self.train_languages}: list each language once")
        if self.pivot in self.train_languages:
            raise ValueError(
                f"the pivot '{self.pivot}' is also a train language: drop it from the train languages "
                "(every example translates between a train language and the pivot)"
            )
        checks = [
            ("steps", self.steps >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("rank", self.rank >= 1, "at least 1"),
            ("alpha", self.alpha > 0, "positive"),
            ("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "positive"),
            ("max_length", self.max_length >= 16, "at least 16 tokens"),
            ("checkpoint_every", self.checkpoint_every >= 1, "at least 1"),
            ("max_pairs", self.max_pairs is None or self.max_pairs >= 1, "at least 1 (or None for all)"),
            ("beta", self.beta > 0, "positive"),
        ]
        for name, ok, need in checks:
            if not ok:
                raise ValueError(f"{name} must be {need} (got {getattr(self, name)!r})")
        if not self.target_modules:
            raise ValueError("target_modules is empty: name the linear layers to adapt, e.g. q_proj, v_proj")

    def check_corpus(self, corpus) -> None:
        """Raise a one-line ValueError when the corpus cannot serve these settings."""
        missing = [lang for lang in self.train_languages if lang not in corpus.languages]
        if missing:
            raise ValueError(
                f"train language(s) {missing} not in the corpus (it has {corpus.languages}): "
                "pick train languages from those or build a corpus that includes them"
            )
        if self.pivot not in corpus.languages:
            raise ValueError(
                f"pivot language '{self.pivot}' is not in the corpus (it has {corpus.languages}): "
                "build the corpus with it or choose another pivot"
            )
        if not corpus.parallel:
            raise ValueError(
                "alignment needs a parallel corpus (the same paragraph at the same index in every language); "
                "build one with `steer corpus build`"
            )

    def resume_key(self) -> dict[str, Any]:
        """The settings that decide the result (a checkpoint resumes only under the same key)."""
        return resume_key(self.to_dict())


def resume_key(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config dict as JSON would give it back, without the settings that do not change the result."""
    data = json.loads(json.dumps(config))
    for key in IGNORE_ON_RESUME:
        data.pop(key, None)
    return data
