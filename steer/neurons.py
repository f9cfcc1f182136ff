"""NeuronSet: which (layer, neuron) pairs belong to which language, with their class and provenance.

Held as one boolean membership tensor `[lang, layer, neuron]` plus the `general` neurons (active
for every language, kept apart from the per-language sets). A neuron shared by N languages is
*language-specific* when N = 1 and *language-related* when N > 1 (Zhang et al. 2025). Set algebra,
counts and overlaps are single tensor ops on the membership tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from steer._io import check_out_file, prepare_out, steer_version, write_json_atomic
from steer.languages import normalise_code, normalise_codes
from steer.models import check_model

CLASSES = ("specific", "related")
FORMAT = "steer.NeuronSet/1"


@dataclass
class NeuronSet:
    languages: list[str]
    membership: Bool[Tensor, "lang layer neuron"]
    general: Bool[Tensor, "layer neuron"] | None = None
    method: str = "custom"
    params: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    # The file this set was read from, when that file records no model: checks against a model then refuse it.
    unrecorded_file: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.languages = normalise_codes(self.languages, what="neuron set languages")
        self.membership = torch.as_tensor(self.membership).to(torch.bool)
        if self.membership.ndim != 3 or self.membership.shape[0] != len(self.languages):
            raise ValueError(
                f"membership must be [lang={len(self.languages)}, layer, neuron], got {tuple(self.membership.shape)}"
            )
        if self.general is None:
            self.general = torch.zeros(self.membership.shape[1:], dtype=torch.bool)
        self.general = torch.as_tensor(self.general).to(torch.bool)

    # ------------------------------------------------------------------ shape and lookup
    @property
    def n_layers(self) -> int:
        return self.membership.shape[1]

    @property
    def d_mlp(self) -> int:
        return self.membership.shape[2]

    def index(self, language: str) -> int:
        code = normalise_code(language, what="language")
        if code not in self.languages:
            raise ValueError(f"unknown language '{language}'; this set has {', '.join(self.languages)}")
        return self.languages.index(code)

    def sharing(self) -> Int[Tensor, "layer neuron"]:
        """N: how many of the languages each neuron belongs to."""
        return self.membership.sum(0)

    def class_mask(self, cls: str) -> Bool[Tensor, "layer neuron"]:
        n = self.sharing()
        if cls == "specific":
            return n == 1
        if cls == "related":
            return n > 1
        if cls == "general":
            return self.general
        raise ValueError(f"unknown class '{cls}'; use one of specific, related, general")

    def select(
        self,
        languages: Sequence[str] | str | None = None,
        classes: Sequence[str] | str = CLASSES,
        layers: Iterable[int] | None = None,
    ) -> "NeuronSet":
        """The subset for some languages, classes (specific / related, by N in *this* set) and layers."""
        classes = [classes] if isinstance(classes, str) else list(classes)
        keep = torch.zeros(self.membership.shape[1:], dtype=torch.bool)
        for cls in classes:
            if cls == "general":
                continue
            keep |= self.class_mask(cls)
        if layers is not None:
            layer_keep = torch.zeros(self.n_layers, dtype=torch.bool)
            layer_list = list(layers)
            bad = [layer for layer in layer_list if not 0 <= layer < self.n_layers]
            if bad:
                raise ValueError(f"layers {bad} out of range 0..{self.n_layers - 1}")
            layer_keep[layer_list] = True
            keep &= layer_keep[:, None]
        membership = self.membership & keep
        general = self.general.clone() if "general" in classes else torch.zeros_like(self.general)
        if layers is not None:
            general &= layer_keep[:, None]
        chosen = self.languages if languages is None else ([languages] if isinstance(languages, str) else list(languages))
        rows = [self.index(lang) for lang in chosen]
        chosen = [self.languages[row] for row in rows]
        subset = NeuronSet(chosen, membership[rows], general, self.method, dict(self.params), dict(self.meta),
                           self.unrecorded_file)
        subset.meta["selection"] = {"languages": chosen, "classes": classes,
                                    "layers": None if layers is None else layer_list}
        return subset

    def __getitem__(self, language: str) -> "NeuronSet":
        """The neurons of one language (specific and related), e.g. `neurons["fr"]`."""
        return self.select([language])

    def union_mask(self) -> Bool[Tensor, "layer neuron"]:
        """Every neuron in the set (any language, plus general ones)."""
        return self.membership.any(0) | self.general

    def layer_indices(self) -> dict[int, Int[Tensor, " n"]]:
        """layer -> sorted neuron indices of the union; layers without neurons are absent."""
        mask = self.union_mask()
        return {layer: mask[layer].nonzero().squeeze(1) for layer in range(self.n_layers) if mask[layer].any()}

    def __len__(self) -> int:
        return int(self.union_mask().sum())

    @property
    def experts(self):
        """The expert layout (`steer.models.ExpertLayout`) of a mixture-of-experts model's set, else None."""
        from steer.models import ExpertLayout

        data = (self.meta.get("model") or {}).get("experts")
        return ExpertLayout.from_dict(data) if data is not None else None

    def expert_positions(self, language: str | None = None) -> Int[Tensor, "n 3"]:
        """(layer, expert, index) of every neuron of `language` (all languages and general neurons when None), for a
        mixture-of-experts model's set; expert `n_experts` is the shared expert where there is one."""
        layout = self.experts
        if layout is None:
            raise ValueError("this neuron set is for a dense MLP: its positions are (layer, neuron), no experts")
        mask = self.union_mask() if language is None else self.membership[self.index(language)]
        layer, neuron = mask.nonzero().unbind(1)
        expert, index = layout.split(neuron)
        return torch.stack([layer, expert, index], dim=1)

    def is_empty(self) -> bool:
        return len(self) == 0

    # ------------------------------------------------------------------ reference mask format
    def to_masks(self) -> list[list[Tensor]]:
        """list[language][layer] -> sorted LongTensor of neuron indices (the reference repos' format)."""
        return [
            [self.membership[k, layer].nonzero().squeeze(1).long() for layer in range(self.n_layers)]
            for k in range(len(self.languages))
        ]

    @classmethod
    def from_masks(
        cls, masks: Sequence[Sequence], languages: Sequence[str], d_mlp: int | None = None, **meta
    ) -> "NeuronSet":
        """The reverse of `to_masks` (e.g. a file saved by the reference code with torch.save)."""
        if len(masks) != len(languages):
            raise ValueError(f"{len(masks)} masks for {len(languages)} languages")
        n_layers = len(masks[0]) if masks else 0
        if any(len(per_layer) != n_layers for per_layer in masks):
            raise ValueError("every language's mask must list the same number of layers")
        largest = max((int(torch.as_tensor(ix).max()) for m in masks for ix in m if len(ix)), default=-1)
        if d_mlp is None:
            d_mlp = largest + 1
        elif largest >= d_mlp:
            raise ValueError(f"neuron index {largest} is out of range for d_mlp={d_mlp}")
        membership = torch.zeros((len(languages), n_layers, d_mlp), dtype=torch.bool)
        for k, per_layer in enumerate(masks):
            for layer, ix in enumerate(per_layer):
                membership[k, layer, torch.as_tensor(ix, dtype=torch.long)] = True
        return cls(list(languages), membership, method=meta.pop("method", "masks"), meta=meta)

    # ------------------------------------------------------------------ set algebra
    # Two kinds of operation, never mixed:
    # - union / intersection / difference / jaccard work on (language, layer, neuron) memberships,
    #   row by row, matching rows by language name: a language missing from one side has no row
    #   there (the empty set), so `a - b` removes nothing from a language that `b` does not list;
    # - `without` works on (layer, neuron) positions, whatever the language: it removes the
    #   positions from every row (and from `general`). Use it to keep some languages' neurons on.
    def _aligned(self, other: "NeuronSet") -> Bool[Tensor, "lang layer neuron"]:
        if (self.n_layers, self.d_mlp) != (other.n_layers, other.d_mlp):
            raise ValueError("the two neuron sets are for models of different shapes")
        rows = torch.zeros_like(self.membership)
        for k, lang in enumerate(self.languages):
            if lang in other.languages:
                rows[k] = other.membership[other.index(lang)]
        return rows

    def _combine(self, other: "NeuronSet", op: str) -> "NeuronSet":
        theirs = self._aligned(other)
        membership = {"|": self.membership | theirs, "&": self.membership & theirs, "-": self.membership & ~theirs}[op]
        general = {"|": self.general | other.general, "&": self.general & other.general,
                   "-": self.general & ~other.general}[op]
        languages = list(self.languages)
        if op == "|":
            extra = [lang for lang in other.languages if lang not in languages]
            if extra:
                rows = torch.stack([other.membership[other.index(lang)] for lang in extra])
                membership = torch.cat([membership, rows])
                languages += extra
        return NeuronSet(languages, membership, general, f"({self.method}{op}{other.method})", {}, dict(self.meta),
                         self.unrecorded_file or other.unrecorded_file)

    def union(self, other: "NeuronSet") -> "NeuronSet":
        """Per language (rows matched by name): the memberships of either set; languages of both."""
        return self._combine(other, "|")

    def intersection(self, other: "NeuronSet") -> "NeuronSet":
        """Per language (rows matched by name): the memberships in both; a language `other` lacks becomes empty."""
        return self._combine(other, "&")

    def difference(self, other: "NeuronSet") -> "NeuronSet":
        """Per language (rows matched by name): memberships not in `other`'s row of the same language.

        Languages `other` does not list keep all their neurons. To drop neurons by position across
        languages (e.g. everything a target language uses), use `without`.
        """
        return self._combine(other, "-")

    def without(self, positions: "Bool[Tensor, 'layer neuron'] | NeuronSet") -> "NeuronSet":
        """The set with the given (layer, neuron) positions removed from every language and from general.

        `positions`: a [layer, neuron] mask, or a NeuronSet whose positions (all its languages and
        its general neurons: `union_mask()`) are removed.
        """
        mask = positions.union_mask() if isinstance(positions, NeuronSet) else torch.as_tensor(positions, dtype=torch.bool)
        if tuple(mask.shape) != (self.n_layers, self.d_mlp):
            raise ValueError(f"positions must be a [{self.n_layers}, {self.d_mlp}] mask, got {tuple(mask.shape)}")
        return NeuronSet(list(self.languages), self.membership & ~mask, self.general & ~mask, self.method,
                         dict(self.params), dict(self.meta), self.unrecorded_file)

    __or__, __and__, __sub__ = union, intersection, difference

    def jaccard(self, other: "NeuronSet") -> float:
        """Jaccard index of the two sets' (language, layer, neuron) memberships."""
        theirs = self._aligned(other)
        union = (self.membership | theirs).sum()
        return float((self.membership & theirs).sum() / union) if union else 1.0

    # ------------------------------------------------------------------ counts
    def counts_per_layer(self) -> dict[str, list[int]]:
        """Per layer: specific, related and general neuron counts (each neuron once)."""
        return {
            "specific": self.class_mask("specific").sum(1).tolist(),
            "related": self.class_mask("related").sum(1).tolist(),
            "general": self.general.sum(1).tolist(),
        }

    def counts_per_language(self) -> dict[str, dict[str, int]]:
        specific, related = self.class_mask("specific"), self.class_mask("related")
        return {
            lang: {"specific": int((self.membership[k] & specific).sum()), "related": int((self.membership[k] & related).sum())}
            for k, lang in enumerate(self.languages)
        }

    def counts_by_sharing(self) -> dict[int, int]:
        """N -> number of neurons shared by exactly N languages (N >= 1)."""
        n = self.sharing().flatten()
        counts = torch.bincount(n, minlength=len(self.languages) + 1)
        return {i: int(counts[i]) for i in range(1, len(counts))}

    def overlap(self) -> Int[Tensor, "lang lang"]:
        """Pairwise overlap: [a, b] = neurons that belong to both a and b (diagonal: a's size)."""
        flat = self.membership.reshape(len(self.languages), -1).to(torch.float32)
        return (flat @ flat.T).round().to(torch.int64)

    # ------------------------------------------------------------------ controls
    def random_like(self, seed: int = 0) -> "NeuronSet":
        """A random control: per language, the same number of neurons in each layer, drawn uniformly."""
        generator = torch.Generator().manual_seed(seed)

        def draw(counts: Tensor) -> Tensor:  # counts [..., layer] -> mask [..., layer, neuron]
            ranks = torch.rand(*counts.shape, self.d_mlp, generator=generator).argsort(-1).argsort(-1)
            return ranks < counts[..., None]

        membership = draw(self.membership.sum(2))
        general = draw(self.general.sum(1))
        return NeuronSet(list(self.languages), membership, general, f"random_like({self.method})",
                         {"seed": seed}, dict(self.meta), self.unrecorded_file)

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "steer_version": steer_version(),
            "method": self.method,
            "params": self.params,
            "languages": self.languages,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "meta": self.meta,
            "counts_per_layer": self.counts_per_layer(),
            "layer_concentration": layer_concentration(self),
            "neurons": {lang: [ix.tolist() for ix in per_layer] for lang, per_layer in zip(self.languages, self.to_masks())},
            "general": [self.general[layer].nonzero().squeeze(1).tolist() for layer in range(self.n_layers)],
            **({"experts": self.experts.to_dict()} if self.experts is not None else {}),
        }

    def save(self, path: str | Path) -> Path:
        """Write the set as JSON to `path` (a new file or a neuron set steer wrote), or to `path/neurons.json`
        when `path` names a folder (no .json suffix; the output rule of `steer._io.prepare_out`)."""
        return write_json_atomic(check_neurons_out(path, option="path"), self.to_dict())

    @classmethod
    def load(cls, path: str | Path, model=None, *, unrecorded: bool = False) -> "NeuronSet":
        """Read a file written by `save` (or `path/neurons.json` for a folder), validating every index; with
        `model`, check it was made for that model. A file that records no model is refused by every check
        against a model (here or when steering) unless `unrecorded=True` says the check is not wanted."""
        path = Path(path)
        if path.is_dir():
            if not (path / "neurons.json").is_file():
                raise ValueError(f"'{path}' is a folder that holds no neurons.json; give a neuron set file "
                                 "(made by `steer identify`)")
            path = path / "neurons.json"
        if not path.exists():
            raise ValueError(f"no neuron set at '{path}' (no such file); give a file made by `steer identify`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read neuron set '{path}': {error}") from None
        fmt = data.get("format") if isinstance(data, dict) else None
        if isinstance(fmt, str) and fmt.startswith("steer.NeuronSet/") and fmt != FORMAT:
            raise ValueError(f"'{path}' is a neuron set of a newer format ({fmt}; this steer reads {FORMAT}); upgrade steer")
        if fmt != FORMAT:
            raise ValueError(f"'{path}' is not a steer neuron set (run `steer identify` to make one)")
        membership, general = _parse_neurons(data, path)
        meta = data.get("meta", {})
        _check_experts(data, meta, path)
        recorded = isinstance(meta, dict) and isinstance(meta.get("model"), dict) and meta["model"].get("weights_hash")
        neurons = cls(data["languages"], membership, general, data.get("method", "custom"), data.get("params", {}),
                      meta if isinstance(meta, dict) else {}, None if recorded or unrecorded else str(path))
        if model is not None:
            neurons.check_model(model, what=f"neuron set '{path}'")
        return neurons

    def check_model(self, model, what: str = "this neuron set") -> None:
        """A clear error when these neurons were identified on another model (shape or weights)."""

        recorded = dict(self.meta.get("model", {}))
        recorded["n_layers"], recorded["d_mlp"] = self.n_layers, self.d_mlp
        check_model(recorded, model, what, require_record=self.unrecorded_file is not None)


def _check_experts(data: dict, meta, path: Path) -> None:
    """A mixture-of-experts set's layout: the same in the file and its model record, and covering d_mlp."""
    from steer.models import ExpertLayout

    recorded = meta.get("model", {}).get("experts") if isinstance(meta, dict) and isinstance(meta.get("model"), dict) \
        else None
    if data.get("experts") != recorded:
        raise ValueError(f"'{path}': its expert layout {data.get('experts')} disagrees with its model record "
                         f"{recorded}; the file is damaged")
    if recorded is not None:
        try:
            layout = ExpertLayout.from_dict(recorded)
        except ValueError as error:
            raise ValueError(f"'{path}': {error}; the file is damaged") from None
        if layout.d_mlp != data["d_mlp"]:
            raise ValueError(f"'{path}': experts {recorded} hold {layout.d_mlp} neurons per layer, not d_mlp "
                             f"{data['d_mlp']}; the file is damaged")


def is_neuron_file(path: str | Path) -> bool:
    """Whether `path` is a neuron set file steer wrote (a JSON object with its format)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and str(data.get("format", "")).startswith("steer.NeuronSet/")


def check_neurons_out(path, *, inputs=(), option: str = "--out") -> Path:
    """Where a neuron set goes, checked before any work: a `.json` path is a file (new, or a neuron set steer
    wrote); any other path is a folder under the output rule (`prepare_out`, verb identify) that gets
    `neurons.json`. Returns the file path."""
    given = str(path) if path is not None else ""
    if given.strip().lower().endswith(".json"):
        return check_out_file(path, is_neuron_file, what="neuron set", inputs=inputs, option=option)
    return prepare_out(path, "identify", inputs=inputs, option=option) / "neurons.json"


def layer_concentration(neurons: NeuronSet, edge_fraction: float = 0.2) -> dict:
    """How concentrated the language neurons are in the first and last layers (the papers' pattern).

    Compares the share of specific + related neurons in the first and last `edge_fraction` of the
    layers with the share those layers would hold if neurons were spread uniformly.
    """
    counts = neurons.class_mask("specific") | neurons.class_mask("related")
    per_layer = counts.sum(1).to(torch.float64)
    total = float(per_layer.sum())
    edge = max(1, round(edge_fraction * neurons.n_layers))
    first, last = float(per_layer[:edge].sum()), float(per_layer[-edge:].sum())
    expected = 2 * edge / neurons.n_layers
    share = (first + last) / total if total else 0.0
    holds = total > 0 and share > 1.5 * expected
    verdict = (
        f"{share:.0%} of specific+related neurons lie in the first and last {edge} of {neurons.n_layers} layers "
        f"(uniform: {expected:.0%}): "
        + ("concentrated at the edges, as the papers report." if holds else "NOT the papers' edge-concentrated pattern.")
    )
    return {"edge_layers": edge, "first_share": first / total if total else 0.0,
            "last_share": last / total if total else 0.0, "edge_share": share, "uniform_share": expected,
            "pattern_holds": holds, "verdict": verdict}


def _parse_neurons(data: dict, path: Path) -> tuple[Bool[Tensor, "lang layer neuron"], Bool[Tensor, "layer neuron"]]:
    """Membership and general masks from a neuron file's JSON, with a clear error for anything malformed."""

    def bad(what: str) -> ValueError:
        return ValueError(f"'{path}' is damaged: {what}; make it again with `steer identify`")

    for key in ("languages", "n_layers", "d_mlp", "neurons"):
        if key not in data:
            raise bad(f"it has no '{key}'")
    languages, n_layers, d_mlp = data["languages"], data["n_layers"], data["d_mlp"]
    if not isinstance(languages, list) or not all(isinstance(lang, str) for lang in languages):
        raise bad("'languages' must be a list of language codes")
    for key, value in (("n_layers", n_layers), ("d_mlp", d_mlp)):
        if type(value) is not int or value < 1:
            raise bad(f"'{key}' must be a positive integer, got {value!r}")
    missing = [lang for lang in languages if lang not in data["neurons"]]
    if missing:
        raise bad(f"no neuron entry for the language(s) {missing}")

    def mask(per_layer, where: str) -> Bool[Tensor, "layer neuron"]:
        if not isinstance(per_layer, list) or len(per_layer) != n_layers:
            raise bad(f"{where} must list {n_layers} layers")
        out = torch.zeros((n_layers, d_mlp), dtype=torch.bool)
        for layer, indices in enumerate(per_layer):
            if not isinstance(indices, list) or not all(type(i) is int for i in indices):
                raise bad(f"{where}, layer {layer}: neuron indices must be integers")
            if indices and not 0 <= min(indices) <= max(indices) < d_mlp:
                raise bad(f"{where}, layer {layer}: a neuron index is outside 0..{d_mlp - 1}")
            out[layer, indices] = True
        return out

    membership = torch.stack([mask(data["neurons"][lang], f"language '{lang}'") for lang in languages]) if languages \
        else torch.zeros((0, n_layers, d_mlp), dtype=torch.bool)
    general = mask(data["general"], "'general'") if "general" in data else None
    return membership, general
