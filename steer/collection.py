"""Collecting activation statistics: a batch plan, counting hooks, checkpoints, torch.distributed.

`collect` streams a corpus through the model once. Per layer, hooks on the gate pre-activation
count the tokens where each neuron is active and hooks on the down_proj input sum its value; the
activations themselves are never kept, and each forward pass stops right after the last MLP, so
memory is O(languages × layers × d_mlp) whatever the corpus size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from steer._io import sha256_text
from steer.hooks import StopForward, attached
from steer.models import decoder, model_info
from steer.models.fast_path import fast_path
from steer.progress import progress_bar
from steer.stats import META_FILE, ActivationStats
from steer.tokens import encode_with_mask, right_pad


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
    Launched by torchrun (WORLD_SIZE > 1 in the environment), the process group is started here
    (nccl on GPU, gloo on CPU) unless the caller already did. With `checkpoint`, progress is saved
    every `checkpoint_every` batches and a rerun resumes.
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
    if max_tokens_per_language is not None and max_tokens_per_language < 1:
        raise ValueError(
            f"max_tokens_per_language must be a positive number of tokens (or None for no limit), "
            f"got {max_tokens_per_language}"
        )
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1 batch, got {checkpoint_every}")
    batches = plan_batches(
        model.tokenizer, texts, languages, batch_size=batch_size, max_length=max_length,
        include_bos=include_bos, max_tokens_per_language=max_tokens_per_language,
    )
    planned = {k for k in (batch.language for batch in batches)}
    empty = [lang for k, lang in enumerate(languages) if k not in planned]
    if empty:
        raise ValueError(
            f"the corpus gives no tokens to count for {', '.join(map(repr, empty))} (split '{split}'); "
            "add texts for it or leave it out (languages=...)"
        )
    device = next(model.original_model.parameters()).device
    rank, world = _distributed_rank(device)
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
    stats.to(device)  # counters live beside the activations: no host sync in the hot loop
    counter = _Counter(model, stats, range(info.n_layers))
    todo = mine[done:]
    started = time.perf_counter()
    bar = progress_bar(progress and rank == 0, total=int(sum(batches[i].count_mask.sum() for i in mine)), desc="collect",
                       unit="tok", initial=int(sum(batches[i].count_mask.sum() for i in mine[:done])), unit_scale=True)
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


def _distributed_rank(device: torch.device) -> tuple[int, int]:
    """(rank, world size); under torchrun (WORLD_SIZE > 1) the process group is started here if needed."""
    import atexit
    import os

    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(stats: ActivationStats) -> None:
    import torch.distributed as dist

    for name in ("active", "tokens", "sums", "sq_sums"):
        tensor = getattr(stats, name)
        if tensor is not None:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    stats.meta["world_size"] = dist.get_world_size()


def checkpoint_file(checkpoint: str | Path, rank: int = 0) -> Path:
    """The one file that holds a rank's progress: tensors and metadata, replaced in one rename."""
    return Path(checkpoint) / f"rank{rank}.safetensors"


def clear_checkpoint(checkpoint: str | Path) -> None:
    """Remove a finished run's checkpoint files (and the folder, when nothing else is in it)."""
    folder = Path(checkpoint)
    for file in folder.glob("rank*.safetensors"):
        file.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _save_checkpoint(checkpoint, stats: ActivationStats, done: int, rank: int) -> None:
    Path(checkpoint).mkdir(parents=True, exist_ok=True)
    stats.save_file(checkpoint_file(checkpoint, rank), done_batches=done)


def _resume(checkpoint, meta, languages, info, sq_sums: bool, rank: int) -> tuple[ActivationStats, int]:
    fresh = ActivationStats.zeros(languages, info.n_layers, info.d_mlp, sq_sums=sq_sums, **meta)
    if checkpoint is None or not checkpoint_file(checkpoint, rank).exists():
        return fresh, 0
    where = checkpoint_file(checkpoint, rank)
    saved = ActivationStats.load_file(where)
    if saved.meta.get("plan") != meta["plan"] or saved.meta.get("model", {}).get("weights_hash") != info.weights_hash:
        raise ValueError(
            f"the checkpoint '{where}' is for another model, corpus or batch plan; "
            "delete it or pass another checkpoint folder"
        )
    if saved.languages != list(languages):
        raise ValueError(f"the checkpoint '{where}' is for the languages {saved.languages}; delete it to start over")
    if sq_sums and saved.sq_sums is None:
        raise ValueError(
            f"the checkpoint '{where}' was collected without sq_sums, so its squares would miss the first "
            "batches; rerun without sq_sums to resume it, or delete it to start over with sq_sums"
        )
    if not sq_sums:
        saved.sq_sums = None
    done = int(saved.meta.pop("done_batches", 0))
    return saved, done
