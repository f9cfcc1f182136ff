"""Activation statistics per language, layer and neuron: streaming collection, merging, saving.

For each language k, layer l and neuron j, `ActivationStats` holds:

- `tokens[k]`: tokens counted (pads never, BOS only when asked, prompts not in response-only mode);
- `active[k, l, j]`: tokens on which act_fn(gate) > 0 (int64, exact);
- `sums[k, l, j]`: the sum of the down_proj input act_fn(gate)·up (float64); `means()` is what
  `set`/`add` steering uses;
- optionally `sq_sums[k, l, j]`: the sum of its squares.

Memory is O(languages × layers × d_mlp) whatever the corpus size: activations are reduced inside
the hooks and never kept, and each forward pass stops right after the last MLP.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from steer._io import atomic_file, sha256_text, write_json_atomic, steer_version
from steer.hooks import StopForward, attached
from steer.models import decoder, fast_path, model_info
from steer.tokens import encode_with_mask, right_pad

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


def check_model(recorded: dict, model, what: str) -> None:
    """A clear error when a file derived from one model is used with another."""
    info = model_info(model)
    if (recorded.get("n_layers"), recorded.get("d_mlp")) != (info.n_layers, info.d_mlp):
        raise ValueError(
            f"{what} is for a model with {recorded.get('n_layers')} layers × {recorded.get('d_mlp')} neurons, "
            f"but '{info.name}' has {info.n_layers} × {info.d_mlp}; use files made for this model"
        )
    if recorded.get("weights_hash") and recorded["weights_hash"] != info.weights_hash:
        raise ValueError(
            f"{what} was made on weights {recorded['weights_hash']} ({recorded.get('name')}), "
            f"not on '{info.name}' ({info.weights_hash}); use files made for this model"
        )


# ==================================================================================================
# Collection


@dataclass(frozen=True)
class Batch:
    """One forward pass: texts of a single language, tokenised and padded (right padding)."""

    language: int
    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    count_mask: Int[Tensor, "batch pos"]  # 1 where a token is counted


def plan_batches(
    tokenizer,
    texts_by_language: dict[str, list] ,
    languages: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    include_bos: bool,
    max_tokens_per_language: int | None = None,
) -> list[Batch]:
    """Tokenise and group each language's texts into length-sorted batches (little padding).

    A text is either a string (every token counts) or a (prompt, response) pair (only the
    response's tokens count: the response-only mode of Zhang et al. 2025). The plan is a pure
    function of its inputs, which is what makes a checkpointed run resumable.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bos_id = tokenizer.bos_token_id
    batches: list[Batch] = []
    for k, language in enumerate(languages):
        items = []
        budget = max_tokens_per_language
        for item in texts_by_language[language]:
            ids, counted = _encode(tokenizer, item, max_length, include_bos, bos_id)
            if sum(counted) == 0:
                continue
            if budget is not None:
                if budget <= 0:
                    break
                budget -= sum(counted)
            items.append((ids, counted))
        items.sort(key=lambda pair: len(pair[0]))
        for start in range(0, len(items), batch_size):
            batches.append(Batch(k, *right_pad(items[start : start + batch_size], pad_id)))
    return batches


def _encode(tokenizer, item, max_length: int, include_bos: bool, bos_id: int | None):
    ids, counted = encode_with_mask(tokenizer, item, max_length)
    if not include_bos and bos_id is not None and ids and ids[0] == bos_id:
        counted[0] = 0
    return ids, counted


def _plan_fingerprint(batches: list[Batch]) -> str:
    digest_parts = [f"{b.language}:{b.input_ids.shape}:{int(b.input_ids.sum())}:{int(b.count_mask.sum())}" for b in batches]
    return sha256_text(*digest_parts)[:16]


class _Counter:
    """Hook functions that add one batch's activations into the running counts, one op per layer."""

    def __init__(self, model, stats: ActivationStats, layers: Sequence[int]):
        info = model_info(model)
        self.stats = stats
        self.language = 0
        self.rows: Tensor | None = None  # flat indices of the counted tokens of the current batch
        self.stop_layer = max(layers)
        self.hooks = []
        for layer in layers:
            self.hooks.append((info.site.activation_hook(layer), self._count_active(layer)))
            self.hooks.append((info.site.down_input_hook(layer), self._sum_down_input(layer)))

    def _count_active(self, layer: int):
        def hook(activation: Tensor) -> None:
            counted = activation.reshape(-1, activation.shape[-1]).index_select(0, self.rows)
            self.stats.active[self.language, layer] += (counted > 0).sum(0)

        return hook

    def _sum_down_input(self, layer: int):
        stop = layer == self.stop_layer  # nothing after the last hooked MLP is needed

        def hook(activation: Tensor) -> None:
            counted = activation.reshape(-1, activation.shape[-1]).index_select(0, self.rows).to(torch.float64)
            self.stats.sums[self.language, layer] += counted.sum(0)
            if self.stats.sq_sums is not None:
                self.stats.sq_sums[self.language, layer] += counted.square().sum(0)
            if stop:
                raise StopForward

        return hook


def collect(
    model,
    corpus,
    *,
    languages: Sequence[str] | None = None,
    split: str = "stats",
    batch_size: int = 8,
    max_length: int = 256,
    max_tokens_per_language: int | None = None,
    include_bos: bool = False,
    sq_sums: bool = False,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 20,
    progress: bool = True,
) -> ActivationStats:
    """Count, per language, how often each MLP neuron is active, streaming over the corpus.

    `corpus`: a `steer.Corpus` (its `split` is used), or a dict language -> list of texts, or of
    (prompt, response) pairs to count only the responses. Under `torch.distributed` each rank takes
    every world_size-th batch and the counts are all-reduced, so every rank returns the full stats.
    With `checkpoint`, progress is saved every `checkpoint_every` batches and a rerun resumes.
    """
    info = model_info(model)
    texts = _texts_by_language(corpus, split)
    languages = list(languages) if languages is not None else list(texts)
    missing = [lang for lang in languages if lang not in texts]
    if missing:
        raise ValueError(f"the corpus has no language {missing}; it has {sorted(texts)}")
    if not languages:
        raise ValueError("no languages to collect; pass a corpus with text")
    if batch_size < 1 or max_length < 2:
        raise ValueError("batch_size must be >= 1 and max_length >= 2")
    batches = plan_batches(
        model.tokenizer, texts, languages, batch_size=batch_size, max_length=max_length,
        include_bos=include_bos, max_tokens_per_language=max_tokens_per_language,
    )
    if not batches:
        raise ValueError("the corpus gave no tokens to count; check that its texts are not empty")
    rank, world = _distributed_rank()
    mine = [i for i in range(len(batches)) if i % world == rank]
    meta = {
        "model": {**info.to_dict()},
        "corpus": {"fingerprint": getattr(corpus, "fingerprint", lambda: "in-memory")(), "split": split,
                   "source": getattr(corpus, "source", "in-memory")},
        "params": {"batch_size": batch_size, "max_length": max_length, "include_bos": include_bos,
                   "max_tokens_per_language": max_tokens_per_language,
                   "response_only": any(not isinstance(t, str) for lang in languages for t in texts[lang][:1])},
        "plan": _plan_fingerprint(batches),
    }
    stats, done = _resume(checkpoint, meta, languages, info, sq_sums, rank)
    device = next(model.original_model.parameters()).device
    stats.to(device)  # counters live beside the activations: no host sync in the hot loop
    counter = _Counter(model, stats, range(info.n_layers))
    todo = mine[done:]
    started = time.perf_counter()
    bar = _progress(progress and rank == 0, total=int(sum(batches[i].count_mask.sum() for i in mine)), initial=int(sum(batches[i].count_mask.sum() for i in mine[:done])))
    try:
        with torch.inference_mode(), attached(model, counter.hooks), fast_path(model):
            for step, index in enumerate(todo, start=done + 1):
                batch = batches[index]
                counter.language = batch.language
                counter.rows = batch.count_mask.reshape(-1).nonzero().squeeze(1).to(device)
                try:
                    decoder(model)(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))
                except StopForward:
                    pass
                stats.tokens[batch.language] += int(batch.count_mask.sum())
                bar.update(int(batch.count_mask.sum()))
                if checkpoint is not None and step % checkpoint_every == 0:
                    _save_checkpoint(checkpoint, stats, step, rank)
    finally:
        bar.close()
    stats.meta["seconds"] = round(time.perf_counter() - started, 3)
    if world > 1:
        _all_reduce(stats)
    stats.to("cpu")
    if checkpoint is not None:
        _save_checkpoint(checkpoint, stats, len(mine), rank)
    return stats


def _texts_by_language(corpus, split: str) -> dict[str, list]:
    if isinstance(corpus, dict):
        return {lang: list(items) for lang, items in corpus.items()}
    if split not in ("stats", "eval"):
        raise ValueError(f"split must be 'stats' or 'eval', got '{split}'")
    return {lang: list(items) for lang, items in getattr(corpus, split).items()}


def _distributed_rank() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(stats: ActivationStats) -> None:
    import torch.distributed as dist

    for name in ("active", "tokens", "sums", "sq_sums"):
        tensor = getattr(stats, name)
        if tensor is not None:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    stats.meta["world_size"] = dist.get_world_size()


def _checkpoint_dir(checkpoint: str | Path, rank: int) -> Path:
    return Path(checkpoint) / f"rank{rank}"


def _save_checkpoint(checkpoint, stats: ActivationStats, done: int, rank: int) -> None:
    stats.meta["done_batches"] = done
    stats.save(_checkpoint_dir(checkpoint, rank))


def _resume(checkpoint, meta, languages, info, sq_sums: bool, rank: int) -> tuple[ActivationStats, int]:
    fresh = ActivationStats.zeros(languages, info.n_layers, info.d_mlp, sq_sums=sq_sums, **meta)
    if checkpoint is None or not (_checkpoint_dir(checkpoint, rank) / META_FILE).exists():
        return fresh, 0
    saved = ActivationStats.load(_checkpoint_dir(checkpoint, rank))
    if saved.meta.get("plan") != meta["plan"] or saved.meta.get("model", {}).get("weights_hash") != info.weights_hash:
        raise ValueError(
            f"the checkpoint in '{checkpoint}' is for another model, corpus or batch plan; "
            "delete it or pass another checkpoint folder"
        )
    for key in ("n_layers", "d_mlp", "languages", "tokens", "has_sums", "has_sq_sums", "steer_version"):
        saved.meta.pop(key, None)
    if sq_sums and saved.sq_sums is None:
        saved.sq_sums = torch.zeros_like(saved.sums)
    return saved, int(saved.meta.get("done_batches", 0))


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="tok", unit_scale=True, desc="collect", smoothing=0.1)
