"""Activation statistics per language, layer and neuron: the counters, merging, saving and loading.

For each language k, layer l and neuron j, `ActivationStats` holds:

- `tokens[k]`: tokens counted (pads never, BOS only when asked, prompts not in response-only mode);
- `active[k, l, j]`: tokens on which act_fn(gate) > 0 (int64, exact);
- `sums[k, l, j]`: the sum of the down_proj input act_fn(gate)·up (float64); `means()` is what
  `set`/`add` steering uses;
- optionally `sq_sums[k, l, j]`: the sum of its squares;
- for a mixture-of-experts model, `routed[k, l, e]`: tokens routed to expert column e (the shared
  expert's column counts every token), and `experts`, the layout (`steer.models.ExpertLayout`) that
  maps each neuron to its expert column. An expert neuron's probability and mean divide by its
  expert's routed tokens, not by every token (`counted()`); `routing()` is how often each expert is
  chosen per token of a language (the "language experts" view).

They are filled by `steer.collect` (`steer.collection`) or built from counts computed elsewhere.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from steer._io import atomic_file, prepare_out, read_safetensors, steer_version, write_json_atomic
from steer.languages import normalise_code, normalise_codes
from steer.models import check_model

STATS_FILE = "stats.safetensors"
META_FILE = "stats.json"
FORMAT = "steer.stats"
# 2: the safetensors file carries the metadata (languages first) and is complete on its own;
#    stats.json is a readable copy checked against it. 1: metadata in stats.json only.
FORMAT_VERSION = 2


@dataclass
class ActivationStats:
    languages: list[str]
    active: Int[Tensor, "lang layer neuron"]
    tokens: Int[Tensor, " lang"]
    sums: Float[Tensor, "lang layer neuron"] | None = None
    sq_sums: Float[Tensor, "lang layer neuron"] | None = None
    meta: dict = field(default_factory=dict)
    # The file these stats were read from, when it records no model: checks against a model then refuse them.
    unrecorded_file: str | None = field(default=None, repr=False, compare=False)
    routed: Int[Tensor, "lang layer expert"] | None = None  # mixture of experts: tokens routed to each expert column

    def __post_init__(self) -> None:
        self.languages = normalise_codes(self.languages, what="stats languages")
        self.active = torch.as_tensor(self.active).to(torch.int64)
        self.tokens = torch.as_tensor(self.tokens).to(torch.int64)
        if self.active.ndim != 3:
            raise ValueError(f"active must be [lang, layer, neuron], got shape {tuple(self.active.shape)}")
        if self.active.shape[0] != len(self.languages) or self.tokens.shape != (len(self.languages),):
            raise ValueError(
                f"{len(self.languages)} languages but active has {self.active.shape[0]} rows and tokens shape "
                f"{tuple(self.tokens.shape)}"
            )
        if (self.active < 0).any() or (self.tokens < 0).any():
            raise ValueError("counts must be non-negative")
        if self.routed is not None:
            self.routed = torch.as_tensor(self.routed).to(torch.int64)
            layout = self.experts
            if layout is None:
                raise ValueError("routed-token counts need the expert layout (meta['model']['experts'])")
            if self.routed.shape != (*self.active.shape[:2], layout.columns) or layout.d_mlp != self.active.shape[2]:
                raise ValueError(f"routed must be [lang, layer, {layout.columns} experts] beside active "
                                 f"{tuple(self.active.shape)} for experts {layout.to_dict()}, got "
                                 f"{tuple(self.routed.shape)}")
            if (self.routed < 0).any() or (self.routed > self.tokens[:, None, None]).any():
                raise ValueError("routed-token counts must lie between 0 and the tokens counted")
        elif self.experts is not None:
            raise ValueError("stats of a mixture-of-experts model need routed-token counts (routed)")
        if (self.active > self.counted()).any():
            raise ValueError("a neuron cannot be active on more tokens than were counted (active > tokens)")
        for name in ("sums", "sq_sums"):
            value = getattr(self, name)
            if value is not None:
                value = torch.as_tensor(value).to(torch.float64)
                if value.shape != self.active.shape:
                    raise ValueError(f"{name} must have the shape of active {tuple(self.active.shape)}")
                if not torch.isfinite(value).all():
                    bad = int((~torch.isfinite(value)).sum())
                    raise ValueError(f"{name} holds {bad} non-finite values (NaN or inf); recollect the stats")
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
        """Stats from counts computed elsewhere (e.g. by the reference implementations).

        Negative counts are refused. Counts a little above `tokens` happen legitimately: the
        reference code of Zhang et al. derives response-only counts as (full - prompt) passes.
        They are clipped to `tokens` with a warning that says how many neurons and by how much.
        """
        active = torch.as_tensor(active).to(torch.int64)
        tokens = torch.as_tensor(tokens).to(torch.int64)
        if (active < 0).any() or (tokens < 0).any():
            raise ValueError("counts must be non-negative (active and tokens)")
        if active.ndim == 3 and tokens.ndim == 1 and active.shape[0] == tokens.shape[0]:
            excess = active - tokens[:, None, None]
            over = excess > 0
            if over.any():
                warnings.warn(
                    f"{int(over.sum())} neuron counts exceed their language's token count (by up to "
                    f"{int(excess.max())} tokens); clipped to the token count",
                    stacklevel=2,
                )
                active = torch.minimum(active, tokens[:, None, None])
        return cls(list(languages), active, tokens, sums, None, dict(meta))

    @classmethod
    def zeros(cls, languages: Sequence[str], n_layers: int, d_mlp: int, *, sq_sums: bool = False, experts=None,
              **meta):
        """Empty counters; `experts` (an `ExpertLayout`) for a mixture-of-experts model adds routed-token counts
        (and records the layout in meta['model']['experts'])."""
        shape = (len(languages), n_layers, d_mlp)
        meta = dict(meta)
        routed = None
        if experts is not None:
            meta["model"] = {**(meta.get("model") or {}), "experts": experts.to_dict()}
            routed = torch.zeros(len(languages), n_layers, experts.columns, dtype=torch.int64)
        return cls(
            list(languages),
            torch.zeros(shape, dtype=torch.int64),
            torch.zeros(len(languages), dtype=torch.int64),
            torch.zeros(shape, dtype=torch.float64),
            torch.zeros(shape, dtype=torch.float64) if sq_sums else None,
            meta,
            routed=routed,
        )

    # ---------------------------------------------------------------- shape
    @property
    def n_layers(self) -> int:
        return self.active.shape[1]

    @property
    def d_mlp(self) -> int:
        return self.active.shape[2]

    def index(self, language: str) -> int:
        code = normalise_code(language, what="language")
        if code not in self.languages:
            raise ValueError(f"language '{language}' is not in these stats ({', '.join(self.languages)})")
        return self.languages.index(code)

    @property
    def experts(self):
        """The expert layout (`steer.models.ExpertLayout`) of a mixture-of-experts model's stats, else None."""
        from steer.models import ExpertLayout

        data = (self.meta.get("model") or {}).get("experts")
        return ExpertLayout.from_dict(data) if data is not None else None

    # ---------------------------------------------------------------- derived
    def counted(self) -> Int[Tensor, "lang layer neuron"]:
        """Tokens each neuron saw: every counted token, or for an expert neuron the tokens routed to its expert."""
        if self.routed is None:
            return self.tokens[:, None, None].expand(self.active.shape)
        return self.routed[:, :, self.experts.column_of()]

    def _denominator(self) -> Tensor:
        if self.routed is None:  # dense: one count per language, broadcast
            return self.tokens.clamp(min=1).to(torch.float64)[:, None, None]
        return self.counted().clamp(min=1).to(torch.float64)

    def probs(self) -> Float[Tensor, "lang layer neuron"]:
        """Activation probability P = active / tokens (0 for a language with no tokens); for an expert neuron,
        over the tokens routed to its expert."""
        return (self.active.to(torch.float64) / self._denominator()).to(torch.float32)

    def routing(self) -> Float[Tensor, "lang layer expert"]:
        """How often each expert is chosen per counted token of a language (mixture of experts only; the shared
        expert's column is 1): the "language experts" view."""
        if self.routed is None:
            raise ValueError("these stats have no routing counts: they come from a dense model, not a mixture of experts")
        return (self.routed.to(torch.float64) / self.tokens.clamp(min=1).to(torch.float64)[:, None, None]).to(
            torch.float32)

    def means(self) -> Float[Tensor, "lang layer neuron"]:
        """Mean of the down_proj input per language (what `set` and `add` steering use); for an expert neuron, over
        the tokens routed to its expert."""
        if self.sums is None:
            raise ValueError("these stats have no sums; collect them with steer.collect to steer with means")
        return (self.sums / self._denominator()).to(torch.float32)

    def stds(self) -> Float[Tensor, "lang layer neuron"]:
        """Standard deviation of the down_proj input per language (what the `std` push scales by)."""
        if self.sums is None or self.sq_sums is None:
            raise ValueError("these stats have no sq_sums; collect them with steer.collect(..., sq_sums=True) "
                             "(steer collect --sq-sums) to steer in standard deviations")
        n = self._denominator()
        mean = self.sums / n
        return (self.sq_sums / n - mean.square()).clamp(min=0).sqrt().to(torch.float32)

    # ---------------------------------------------------------------- merging
    def merge(self, other: "ActivationStats", *, unrecorded: bool = False) -> "ActivationStats":
        """Stats of the union of the two (disjoint) datasets; languages are matched by name.

        Both must record the same model; stats that record none are refused unless `unrecorded=True`
        (the merged stats then record no model, unless both record the same one).
        """
        if (self.n_layers, self.d_mlp) != (other.n_layers, other.d_mlp) or self.experts != other.experts:
            raise ValueError("cannot merge stats of different shapes (another model?)")
        mine, theirs = self.meta.get("model", {}).get("weights_hash"), other.meta.get("model", {}).get("weights_hash")
        if mine and theirs and mine != theirs:
            raise ValueError("cannot merge stats collected on different models (weights hashes differ)")
        if not (mine and theirs) and not unrecorded:
            raise ValueError("cannot merge stats that record no model (no weights hash): nothing shows they come "
                             "from one model; pass unrecorded=True to merge them anyway")
        languages = self.languages + [lang for lang in other.languages if lang not in self.languages]
        merged = ActivationStats.zeros(
            languages, self.n_layers, self.d_mlp, sq_sums=self.sq_sums is not None and other.sq_sums is not None,
            experts=self.experts,
        )
        has_sums = self.sums is not None and other.sums is not None
        for part in (self, other):
            rows = torch.tensor([languages.index(lang) for lang in part.languages], dtype=torch.long)
            merged.active.index_add_(0, rows, part.active)
            merged.tokens.index_add_(0, rows, part.tokens)
            if merged.routed is not None:
                merged.routed.index_add_(0, rows, part.routed)
            if has_sums:
                merged.sums.index_add_(0, rows, part.sums)
            if merged.sq_sums is not None:
                merged.sq_sums.index_add_(0, rows, part.sq_sums)
        if not has_sums:
            merged.sums = None
        merged.meta = {key: value for key, value in self.meta.items() if key not in ("corpus", "tokens")}
        if not (mine and theirs):
            merged.meta["model"] = {"experts": self.meta["model"]["experts"]} if self.experts is not None else {}
            if not merged.meta["model"]:
                merged.meta.pop("model")
        merged.unrecorded_file = self.unrecorded_file or other.unrecorded_file
        merged.meta["merged_from"] = [self.meta.get("corpus"), other.meta.get("corpus")]
        return merged

    __add__ = merge

    def to(self, device) -> "ActivationStats":
        """Move the counters to `device` in place (collection keeps them beside the activations)."""
        for name in ("active", "tokens", "sums", "sq_sums", "routed"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, tensor.to(device))
        return self

    def check_model(self, model) -> None:
        """A clear error when these stats were collected on another model (shape or weights)."""
        recorded = dict(self.meta.get("model", {}))
        recorded["n_layers"], recorded["d_mlp"] = self.n_layers, self.d_mlp
        what = "this set of activation stats" if self.unrecorded_file is None else f"the stats '{self.unrecorded_file}'"
        check_model(recorded, model, what, require_record=self.unrecorded_file is not None)

    def to_dict_meta(self) -> dict:
        return {
            **self.meta,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "languages": self.languages,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "tokens": dict(zip(self.languages, self.tokens.tolist())),
            "has_sums": self.sums is not None,
            "has_sq_sums": self.sq_sums is not None,
            "steer_version": steer_version(),
        }

    # ---------------------------------------------------------------- I/O
    def save_file(self, path: str | Path, **extra_meta) -> Path:
        """Write one self-contained safetensors file (the metadata in its header), atomically."""
        from safetensors.torch import save_file

        tensors = {"active": self.active.cpu().contiguous(), "tokens": self.tokens.cpu().contiguous()}
        if self.sums is not None:
            tensors["sums"] = self.sums.cpu().contiguous()
        if self.sq_sums is not None:
            tensors["sq_sums"] = self.sq_sums.cpu().contiguous()
        if self.routed is not None:
            tensors["routed"] = self.routed.cpu().contiguous()
        meta = {**self.to_dict_meta(), **extra_meta}
        header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "languages": json.dumps(self.languages),
                  "meta": json.dumps(meta, ensure_ascii=False)}
        with atomic_file(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)
        return Path(path)

    def save(self, path: str | Path) -> Path:
        """Write the folder `path`: stats.safetensors (complete on its own) and a readable stats.json.

        The folder follows the output rule (`steer._io.prepare_out`): new, empty, or one steer made for stats.
        """
        path = prepare_out(path, "collect", option="path")
        self.save_file(path / STATS_FILE)
        write_json_atomic(path / META_FILE, self.to_dict_meta())
        return path

    @classmethod
    def load_file(cls, path: str | Path) -> "ActivationStats":
        """Read one file written by `save_file`, with a clear error for a damaged or newer one."""
        path = Path(path)
        header, tensors = read_safetensors(path, "recollect the stats")
        if header.get("format") != FORMAT:
            raise ValueError(f"'{path}' is not a steer stats file (no '{FORMAT}' header); run `steer collect`")
        _check_format_version(header.get("format_version"), path)
        meta = _json(header.get("meta", "{}"), path)
        return cls._from_parts(_json(header["languages"], path), tensors, meta, path)

    @classmethod
    def load(cls, path: str | Path, model=None, *, unrecorded: bool = False) -> "ActivationStats":
        """Read stats written by `save`; with `model`, check they were collected on that model. Stats that
        record no model are refused by every check against a model unless `unrecorded=True`."""
        path = Path(path)
        if path.is_file():
            path = path.parent
        if not (path / STATS_FILE).exists() or not (path / META_FILE).exists():
            raise ValueError(f"'{path}' holds no activation stats ({STATS_FILE} + {META_FILE}); run `steer collect` first")
        meta = _json((path / META_FILE).read_text(encoding="utf-8"), path / META_FILE)
        _check_format_version(meta.get("format_version", 1), path / META_FILE)
        if int(meta.get("format_version", 1)) >= 2:
            stats = cls.load_file(path / STATS_FILE)
            if stats.languages != meta.get("languages"):
                raise ValueError(
                    f"'{path / META_FILE}' lists the languages {meta.get('languages')} but the tensors are for "
                    f"{stats.languages}; the folder was edited or mixed up: recollect the stats"
                )
        else:  # format 1: the languages live in stats.json only
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                tensors = load_file(str(path / STATS_FILE))
            except (SafetensorError, OSError) as error:
                raise ValueError(f"cannot read '{path / STATS_FILE}' ({error}); recollect the stats") from None
            stats = cls._from_parts(meta["languages"], tensors, meta, path)
        if not unrecorded and not (stats.meta.get("model") or {}).get("weights_hash"):
            stats.unrecorded_file = str(path)
        if model is not None:
            stats.check_model(model)
        return stats

    @classmethod
    def _from_parts(cls, languages, tensors: dict, meta: dict, path: Path) -> "ActivationStats":
        try:
            stats = cls(languages, tensors["active"], tensors["tokens"], tensors.get("sums"), tensors.get("sq_sums"), meta,
                        routed=tensors.get("routed"))
        except KeyError as missing:
            raise ValueError(f"'{path}' has no {missing} tensor; the file is damaged: recollect the stats") from None
        except ValueError as error:
            raise ValueError(f"'{path}': {error}") from None
        recorded = {key: meta[key] for key in ("n_layers", "d_mlp") if key in meta}
        if recorded and (stats.n_layers, stats.d_mlp) != (recorded.get("n_layers"), recorded.get("d_mlp")):
            raise ValueError(f"'{path}': tensor shapes disagree with their metadata; the file is damaged")
        tokens = meta.get("tokens")
        if isinstance(tokens, dict) and tokens != dict(zip(stats.languages, stats.tokens.tolist())):
            raise ValueError(f"'{path}': the token counts disagree with their metadata; the file is damaged")
        for key in ("format", "format_version", "languages", "n_layers", "d_mlp", "tokens", "has_sums", "has_sq_sums",
                    "steer_version"):
            stats.meta.pop(key, None)
        return stats


def _json(text: str, path: Path):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"'{path}' is not valid JSON ({error.msg} at line {error.lineno}); the file is damaged") from None


def _check_format_version(version, path: Path) -> None:
    try:
        version = int(version)
    except (TypeError, ValueError):
        raise ValueError(f"'{path}' has no valid format version; the file is damaged") from None
    if version > FORMAT_VERSION:
        raise ValueError(
            f"'{path}' was written by a newer steer (stats format {version}; this steer reads up to "
            f"{FORMAT_VERSION}); upgrade steer"
        )
