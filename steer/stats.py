"""Activation statistics per language, layer and neuron: the counters, merging, saving and loading.

For each language k, layer l and neuron j, `ActivationStats` holds:

- `tokens[k]`: tokens counted (pads never, BOS only when asked, prompts not in response-only mode);
- `active[k, l, j]`: tokens on which act_fn(gate) > 0 (int64, exact);
- `sums[k, l, j]`: the sum of the down_proj input act_fn(gate)·up (float64); `means()` is what
  `set`/`add` steering uses;
- optionally `sq_sums[k, l, j]`: the sum of its squares.

They are filled by `steer.collect` (`steer.collection`) or built from counts computed elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from steer._io import atomic_file, steer_version, write_json_atomic
from steer.models import check_model

STATS_FILE = "stats.safetensors"
META_FILE = "stats.json"


@dataclass
class ActivationStats:
    languages: list[str]
    active: Int[Tensor, "lang layer neuron"]
    tokens: Int[Tensor, " lang"]
    sums: Float[Tensor, "lang layer neuron"] | None = None
    sq_sums: Float[Tensor, "lang layer neuron"] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.languages = list(self.languages)
        self.active = torch.as_tensor(self.active).to(torch.int64)
        self.tokens = torch.as_tensor(self.tokens).to(torch.int64)
        if self.active.ndim != 3:
            raise ValueError(f"active must be [lang, layer, neuron], got shape {tuple(self.active.shape)}")
        if len(set(self.languages)) != len(self.languages):
            raise ValueError(f"languages must be unique, got {self.languages}")
        if self.active.shape[0] != len(self.languages) or self.tokens.shape != (len(self.languages),):
            raise ValueError(
                f"{len(self.languages)} languages but active has {self.active.shape[0]} rows and tokens shape "
                f"{tuple(self.tokens.shape)}"
            )
        if (self.active < 0).any() or (self.tokens < 0).any():
            raise ValueError("counts must be non-negative")
        if (self.active > self.tokens[:, None, None]).any():
            raise ValueError("a neuron cannot be active on more tokens than were counted (active > tokens)")
        for name in ("sums", "sq_sums"):
            value = getattr(self, name)
            if value is not None:
                value = torch.as_tensor(value).to(torch.float64)
                if value.shape != self.active.shape:
                    raise ValueError(f"{name} must have the shape of active {tuple(self.active.shape)}")
                setattr(self, name, value)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_counts(
        cls,
        languages: Sequence[str],
        active: Int[Tensor, "lang layer neuron"],
        tokens: Int[Tensor, " lang"],
        sums: Float[Tensor, "lang layer neuron"] | None = None,
        **meta,
    ) -> "ActivationStats":
        """Stats from counts computed elsewhere (e.g. by the reference implementations)."""
        return cls(list(languages), active, tokens, sums, None, dict(meta))

    @classmethod
    def zeros(cls, languages: Sequence[str], n_layers: int, d_mlp: int, *, sq_sums: bool = False, **meta):
        shape = (len(languages), n_layers, d_mlp)
        return cls(
            list(languages),
            torch.zeros(shape, dtype=torch.int64),
            torch.zeros(len(languages), dtype=torch.int64),
            torch.zeros(shape, dtype=torch.float64),
            torch.zeros(shape, dtype=torch.float64) if sq_sums else None,
            dict(meta),
        )

    # ---------------------------------------------------------------- shape
    @property
    def n_layers(self) -> int:
        return self.active.shape[1]

    @property
    def d_mlp(self) -> int:
        return self.active.shape[2]

    def index(self, language: str) -> int:
        try:
            return self.languages.index(language)
        except ValueError:
            raise ValueError(f"language '{language}' is not in these stats ({', '.join(self.languages)})") from None

    # ---------------------------------------------------------------- derived
    def probs(self) -> Float[Tensor, "lang layer neuron"]:
        """Activation probability P = active / tokens (0 for a language with no tokens)."""
        denominator = self.tokens.clamp(min=1).to(torch.float64)[:, None, None]
        return (self.active.to(torch.float64) / denominator).to(torch.float32)

    def means(self) -> Float[Tensor, "lang layer neuron"]:
        """Mean of the down_proj input per language (what `set` and `add` steering use)."""
        if self.sums is None:
            raise ValueError("these stats have no sums; collect them with steer.collect to steer with means")
        return (self.sums / self.tokens.clamp(min=1).to(torch.float64)[:, None, None]).to(torch.float32)

    # ---------------------------------------------------------------- merging
    def merge(self, other: "ActivationStats") -> "ActivationStats":
        """Stats of the union of the two (disjoint) datasets; languages are matched by name."""
        if (self.n_layers, self.d_mlp) != (other.n_layers, other.d_mlp):
            raise ValueError("cannot merge stats of different shapes (another model?)")
        mine, theirs = self.meta.get("model", {}), other.meta.get("model", {})
        if mine.get("weights_hash") and theirs.get("weights_hash") and mine["weights_hash"] != theirs["weights_hash"]:
            raise ValueError("cannot merge stats collected on different models (weights hashes differ)")
        languages = self.languages + [lang for lang in other.languages if lang not in self.languages]
        merged = ActivationStats.zeros(
            languages, self.n_layers, self.d_mlp, sq_sums=self.sq_sums is not None and other.sq_sums is not None
        )
        has_sums = self.sums is not None and other.sums is not None
        for part in (self, other):
            rows = torch.tensor([languages.index(lang) for lang in part.languages], dtype=torch.long)
            merged.active.index_add_(0, rows, part.active)
            merged.tokens.index_add_(0, rows, part.tokens)
            if has_sums:
                merged.sums.index_add_(0, rows, part.sums)
            if merged.sq_sums is not None:
                merged.sq_sums.index_add_(0, rows, part.sq_sums)
        if not has_sums:
            merged.sums = None
        merged.meta = {key: value for key, value in self.meta.items() if key not in ("corpus", "tokens")}
        merged.meta["merged_from"] = [self.meta.get("corpus"), other.meta.get("corpus")]
        return merged

    __add__ = merge

    def to(self, device) -> "ActivationStats":
        """Move the counters to `device` in place (collection keeps them beside the activations)."""
        for name in ("active", "tokens", "sums", "sq_sums"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, tensor.to(device))
        return self

    def check_model(self, model) -> None:
        """A clear error when these stats were collected on another model (shape or weights)."""
        recorded = dict(self.meta.get("model", {}))
        recorded["n_layers"], recorded["d_mlp"] = self.n_layers, self.d_mlp
        check_model(recorded, model, "these stats")

    def to_dict_meta(self) -> dict:
        return {
            **self.meta,
            "languages": self.languages,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "tokens": dict(zip(self.languages, self.tokens.tolist())),
            "has_sums": self.sums is not None,
            "has_sq_sums": self.sq_sums is not None,
            "steer_version": steer_version(),
        }

    # ---------------------------------------------------------------- I/O
    def save(self, path: str | Path) -> Path:
        """Write `path/stats.safetensors` and `path/stats.json` (each atomically)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"active": self.active.cpu().contiguous(), "tokens": self.tokens.cpu().contiguous()}
        if self.sums is not None:
            tensors["sums"] = self.sums.cpu().contiguous()
        if self.sq_sums is not None:
            tensors["sq_sums"] = self.sq_sums.cpu().contiguous()
        with atomic_file(path / STATS_FILE) as tmp:
            save_file(tensors, str(tmp))
        write_json_atomic(path / META_FILE, self.to_dict_meta())
        return path

    @classmethod
    def load(cls, path: str | Path, model=None) -> "ActivationStats":
        """Read stats written by `save`; with `model`, check they were collected on that model."""
        from safetensors.torch import load_file

        path = Path(path)
        if path.is_file():
            path = path.parent
        if not (path / STATS_FILE).exists() or not (path / META_FILE).exists():
            raise ValueError(f"'{path}' holds no activation stats ({STATS_FILE} + {META_FILE}); run `steer collect` first")
        meta = json.loads((path / META_FILE).read_text())
        tensors = load_file(str(path / STATS_FILE))
        stats = cls(
            meta["languages"], tensors["active"], tensors["tokens"], tensors.get("sums"), tensors.get("sq_sums"), meta
        )
        if (stats.n_layers, stats.d_mlp) != (meta["n_layers"], meta["d_mlp"]):
            raise ValueError(f"'{path}': tensor shapes disagree with their metadata; the file is damaged")
        if model is not None:
            stats.check_model(model)
        return stats
