"""Collecting activation statistics: a batch plan, counting hooks, checkpoints, torch.distributed.

`collect` streams a corpus through the model once. Per layer, hooks on the gate pre-activation
count the tokens where each neuron is active and hooks on the down_proj input sum its value; the
activations themselves are never kept, and each forward pass stops right after the last MLP, so
memory is O(languages × layers × d_mlp) whatever the corpus size.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from steer._io import sha256_text
from steer.hooks import StopForward, attached
from steer.models import decoder, input_device, model_info
from steer.models.experts import Rows, tapped
from steer.models.fast_path import fast_path
from steer.progress import progress_bar
from steer.stats import ActivationStats
from steer.tokens import encode_with_mask, right_pad


@dataclass(frozen=True)
class Batch:
    """One forward pass: texts of a single language, tokenised and padded (right padding)."""

    language: int
    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    count_mask: Int[Tensor, "batch pos"]  # 1 where a token is counted


# Default batching per device type: (rows per batch, padded tokens per batch). A CPU gains nothing from
# large batches; a GPU needs tens of thousands of tokens per forward pass to be busy.
DEFAULT_BATCHING = {"cpu": (8, None), "cuda": (None, 32768)}
MAX_BATCH_ROWS = 2**24  # float32 counts per batch are exact below this many (batch × position) rows


def default_batching(device: torch.device | str, batch_size: int | None, tokens_per_batch: int | None):
    """(batch_size, tokens_per_batch) with the device's defaults where both are None; validated."""
    if batch_size is None and tokens_per_batch is None:
        batch_size, tokens_per_batch = DEFAULT_BATCHING.get(torch.device(device).type, DEFAULT_BATCHING["cuda"])
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (or None), got {batch_size}")
    if tokens_per_batch is not None and not 1 <= tokens_per_batch < MAX_BATCH_ROWS:
        raise ValueError(f"tokens_per_batch must be between 1 and {MAX_BATCH_ROWS - 1}, got {tokens_per_batch}")
    return batch_size, tokens_per_batch


def plan_batches(
    tokenizer,
    texts_by_language: dict[str, list],
    languages: Sequence[str],
    *,
    batch_size: int | None,
    max_length: int,
    include_bos: bool,
    max_tokens_per_language: int | None = None,
    tokens_per_batch: int | None = None,
) -> list[Batch]:
    """Tokenise and group each language's texts into length-sorted batches (little padding).

    A batch holds at most `batch_size` texts and at most `tokens_per_batch` padded tokens (texts ×
    the longest one); None means no limit of that kind (one of the two must be set). A text is
    either a string (every token counts) or a (prompt, response) pair (only the response's tokens
    count: the response-only mode of Zhang et al. 2025). The plan is a pure function of its
    inputs, which is what makes a checkpointed run resumable.
    """
    if batch_size is None and tokens_per_batch is None:
        raise ValueError("give batch_size or tokens_per_batch (or both)")
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
        group: list = []
        for item in items:  # ascending length: the newest item is the longest of its group
            rows = len(group) + 1
            if group and ((batch_size is not None and rows > batch_size)
                          or (tokens_per_batch is not None and rows * len(item[0]) > tokens_per_batch)):
                batches.append(Batch(k, *right_pad(group, pad_id)))
                group = []
            group.append(item)
        if group:
            batches.append(Batch(k, *right_pad(group, pad_id)))
    return batches


def _encode(tokenizer, item, max_length: int, include_bos: bool, bos_id: int | None):
    ids, counted = encode_with_mask(tokenizer, item, max_length)
    if not include_bos and bos_id is not None and ids and ids[0] == bos_id:
        counted[0] = 0
    return ids, counted


def _plan_fingerprint(batches: list[Batch]) -> str:
    """A hash of every token id, mask and language of the plan: any edit of what is counted changes it."""
    digest = hashlib.sha256()
    for batch in batches:
        digest.update(f"{batch.language}:{tuple(batch.input_ids.shape)}".encode())
        for tensor in (batch.input_ids, batch.attention_mask, batch.count_mask):
            digest.update(tensor.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _corpus_fingerprint(corpus, texts: dict[str, list]) -> str:
    """The corpus' own fingerprint, or for texts given as a dict a hash of every text."""
    if hasattr(corpus, "fingerprint"):
        return corpus.fingerprint()
    return sha256_text("steer.texts.v1", *(f"{lang}\0{item!r}" for lang, items in texts.items() for item in items))


def weighted_sum(weights: Float[Tensor, " rows"], x: Float[Tensor, "rows neuron"]) -> Float[Tensor, " neuron"]:
    """`weights @ x` accumulated in float32, whatever x's dtype (one matmul, no gather, no float64 cast).

    With 0/1 weights and 0/1 x the result is an exact integer count below 2**24 rows.
    """
    if x.dtype == torch.float32:
        return weights @ x
    if x.is_cuda:  # bf16/fp16 tensor-core matmul with a float32 result
        return torch.mm(weights[None], x, out_dtype=torch.float32)[0]
    return weights.float() @ x.float()


def grouped_sum(groups: Int[Tensor, " rows"], weights: Float[Tensor, " rows"], n_groups: int,
                x: Float[Tensor, "rows neuron"]) -> tuple[Float[Tensor, "group neuron"], Float[Tensor, " group"]]:
    """Per group g, the sum over its rows of `weights · x` (one matmul: a weighted one-hot [group, rows] @ x,
    accumulated in float32), and the group's total weight. Exact integer counts for 0/1 weights and x."""
    onehot = torch.zeros(n_groups, x.shape[0], device=x.device, dtype=x.dtype)
    onehot.scatter_(0, groups[None], weights.to(x.dtype)[None])
    if x.dtype == torch.float32:
        sums = onehot @ x
    elif x.is_cuda:
        sums = torch.mm(onehot, x, out_dtype=torch.float32)
    else:
        sums = onehot.float() @ x.float()
    return sums, onehot.float().sum(1)


class _Counter:
    """Hook functions that reduce one batch's activations into running totals: one matmul per layer and quantity.

    Per batch, `weights` is 1 over the flattened (batch × position) rows that count and 0 elsewhere
    (pads, prompts in response-only mode, BOS unless asked). `active` is `weights @ (act > 0)` and the
    sums are `weights @ act` (and `weights @ act²`), float32 per batch, folded into int64 / float64
    totals kept on each layer's own device (so a model split across devices needs no copies).
    """

    def __init__(self, model, stats: ActivationStats, layers: Sequence[int]):
        info = model_info(model)
        self.stats = stats
        self.language = 0
        self.mask: Tensor | None = None  # the current batch's count mask, flattened, on the host
        self._weights: dict[tuple, Tensor] = {}  # that mask per (device, dtype), made once per batch
        self._totals: dict[int, dict[str, Tensor]] = {}  # layer -> active / sums / sq_sums [lang, neuron]
        self.stop_layer = max(layers)
        self.hooks = []
        self.model = model
        self.experts = info.experts
        self.taps = {layer: self._tap(layer) for layer in layers} if self.experts is not None else {}
        for layer in layers if self.experts is None else ():
            self.hooks.append((info.site.activation_hook(layer), self._count_active(layer)))
            self.hooks.append((info.site.down_input_hook(layer), self._sum_down_input(layer)))

    def attached(self):
        """The counting hooks (a dense MLP) or taps on every expert (a mixture of experts), for a `with` block."""
        if self.experts is not None:
            return tapped(self.model, self.taps, stop_layer=self.stop_layer)
        return attached(self.model, self.hooks)

    def start_batch(self, language: int, count_mask: Int[Tensor, "batch pos"]) -> None:
        self.language = language
        self.mask = count_mask.reshape(-1)
        self._weights.clear()

    def _weights_for(self, x: Tensor) -> Tensor:
        key = (x.device, x.dtype)
        weights = self._weights.get(key)
        if weights is None:
            weights = self._weights[key] = self.mask.to(device=x.device, dtype=x.dtype, non_blocking=True)
        return weights

    def _layer_totals(self, layer: int, device: torch.device) -> dict[str, Tensor]:
        totals = self._totals.get(layer)
        if totals is None or totals["active"].device != device:
            stats = self.stats
            totals = {"active": stats.active[:, layer].to(device), "sums": stats.sums[:, layer].to(device)}
            if stats.sq_sums is not None:
                totals["sq_sums"] = stats.sq_sums[:, layer].to(device)
            if stats.routed is not None:
                totals["routed"] = stats.routed[:, layer].to(device)
            self._totals[layer] = totals
        return totals

    def _count_active(self, layer: int):
        def hook(activation: Tensor) -> None:
            x = activation.reshape(-1, activation.shape[-1])
            counts = weighted_sum(self._weights_for(x), (x > 0).to(x.dtype))
            self._layer_totals(layer, x.device)["active"][self.language] += counts.to(torch.int64)

        return hook

    def _sum_down_input(self, layer: int):
        stop = layer == self.stop_layer  # nothing after the last hooked MLP is needed

        def hook(activation: Tensor) -> None:
            x = activation.reshape(-1, activation.shape[-1])
            weights = self._weights_for(x)
            totals = self._layer_totals(layer, x.device)
            totals["sums"][self.language] += weighted_sum(weights, x)
            if "sq_sums" in totals:
                totals["sq_sums"][self.language] += weighted_sum(weights, x.square())
            if stop:
                raise StopForward

        return hook

    def _tap(self, layer: int):
        """Counts over one MoE segment's rows: the routed experts' (token, expert) rows reduce into [expert, width]
        with one matmul per quantity (a weighted one-hot); the shared expert's into its own neurons."""
        layout = self.experts
        routed_end = layout.n_experts * layout.width

        def tap(rows: Rows) -> None:
            gate, x = rows.gate, rows.down_input
            weights = self._weights_for(gate)
            totals = self._layer_totals(layer, gate.device)
            k = self.language
            if isinstance(rows.column, int):  # the shared expert: every token, one column
                totals["active"][k, routed_end:] += weighted_sum(weights, (gate > 0).to(gate.dtype)).to(torch.int64)
                totals["sums"][k, routed_end:] += weighted_sum(weights, x)
                if "sq_sums" in totals:
                    totals["sq_sums"][k, routed_end:] += weighted_sum(weights, x.square())
                totals["routed"][k, rows.column] += weights.float().sum().round().to(torch.int64)
                return
            row_weights = weights[rows.token]
            groups, n = rows.column, layout.n_experts
            active, routed = grouped_sum(groups, row_weights, n, (gate > 0).to(gate.dtype))
            totals["active"][k, :routed_end] += active.reshape(-1).round().to(torch.int64)
            totals["routed"][k, :n] += routed.round().to(torch.int64)
            totals["sums"][k, :routed_end] += grouped_sum(groups, row_weights, n, x)[0].reshape(-1)
            if "sq_sums" in totals:
                totals["sq_sums"][k, :routed_end] += grouped_sum(groups, row_weights, n, x.square())[0].reshape(-1)

        return tap

    def fold(self) -> None:
        """Write the per-layer totals back into the stats (on the host); a sync point, for checkpoints and the end."""
        for layer, totals in self._totals.items():
            for name, tensor in totals.items():
                getattr(self.stats, name)[:, layer] = tensor.cpu()


def collect(
    model,
    corpus,
    *,
    languages: Sequence[str] | None = None,
    split: str = "stats",
    batch_size: int | None = None,
    tokens_per_batch: int | None = None,
    max_length: int = 256,
    max_tokens_per_language: int | None = None,
    include_bos: bool = False,
    sq_sums: bool = False,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 20,
    progress: bool = True,
) -> ActivationStats:
    """Count, per language, how often each MLP neuron is active, streaming over the corpus.

    Batches hold at most `batch_size` texts and `tokens_per_batch` padded tokens; with neither
    given, the device's default (`DEFAULT_BATCHING`: 8 texts on a CPU, 32k tokens on a GPU).

    `corpus`: a `steer.Corpus` (its `split` is used), or a dict language -> list of texts, or of
    (prompt, response) pairs to count only the responses. Under `torch.distributed` each rank takes
    every world_size-th batch and the counts are all-reduced, so every rank returns the full stats.
    Launched by torchrun (WORLD_SIZE > 1 in the environment), the process group is started here
    (nccl on GPU, gloo on CPU) unless the caller already did. With `checkpoint`, progress is saved
    every `checkpoint_every` batches and a rerun resumes.
    """
    info = model_info(model)
    texts = _texts_by_language(corpus, split)
    languages = list(texts) if languages is None else [languages] if isinstance(languages, str) else list(languages)
    missing = [lang for lang in languages if lang not in texts]
    if missing:
        raise ValueError(f"the corpus has no language {missing}; it has {sorted(texts)}")
    if not languages:
        raise ValueError("no languages to collect; pass a corpus with text")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
    device = input_device(model)
    batch_size, tokens_per_batch = default_batching(device, batch_size, tokens_per_batch)
    if tokens_per_batch is None and batch_size * max_length >= MAX_BATCH_ROWS:
        raise ValueError(f"batch_size × max_length must stay below {MAX_BATCH_ROWS} tokens; pass tokens_per_batch")
    if max_tokens_per_language is not None and max_tokens_per_language < 1:
        raise ValueError(
            f"max_tokens_per_language must be a positive number of tokens (or None for no limit), "
            f"got {max_tokens_per_language}"
        )
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1 batch, got {checkpoint_every}")
    batches = plan_batches(
        model.tokenizer, texts, languages, batch_size=batch_size, max_length=max_length,
        include_bos=include_bos, max_tokens_per_language=max_tokens_per_language, tokens_per_batch=tokens_per_batch,
    )
    planned = {k for k in (batch.language for batch in batches)}
    empty = [lang for k, lang in enumerate(languages) if k not in planned]
    if empty:
        raise ValueError(
            f"the corpus gives no tokens to count for {', '.join(map(repr, empty))} (split '{split}'); "
            "add texts for it or leave it out (languages=...)"
        )
    rank, world = _distributed_rank(device)
    mine = [i for i in range(len(batches)) if i % world == rank]
    meta = {
        "model": {**info.to_dict()},
        "corpus": {"fingerprint": _corpus_fingerprint(corpus, texts), "split": split,
                   "source": getattr(corpus, "source", "in-memory")},
        "params": {"batch_size": batch_size, "tokens_per_batch": tokens_per_batch, "max_length": max_length, "include_bos": include_bos,
                   "max_tokens_per_language": max_tokens_per_language,
                   "response_only": any(not isinstance(t, str) for lang in languages for t in texts[lang][:1])},
        "plan": _plan_fingerprint(batches),
    }
    batch_tokens = [int(batch.count_mask.sum()) for batch in batches]  # from the plan: no device sync per batch
    stats, done = _resume(checkpoint, meta, languages, info, sq_sums, rank, world, batches, batch_tokens, mine)
    counter = _Counter(model, stats, range(info.n_layers))  # totals live beside each layer's activations
    todo = mine[done:]
    started = time.perf_counter()
    bar = progress_bar(progress and rank == 0, total=sum(batch_tokens[i] for i in mine), desc="collect", unit="tok",
                       initial=sum(batch_tokens[i] for i in mine[:done]), unit_scale=True)
    try:
        with torch.inference_mode(), counter.attached(), fast_path(model):
            for step, index in enumerate(todo, start=done + 1):
                batch = batches[index]
                counter.start_batch(batch.language, batch.count_mask)
                try:
                    decoder(model)(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))
                except StopForward:
                    pass
                stats.tokens[batch.language] += batch_tokens[index]
                bar.update(batch_tokens[index])
                if checkpoint is not None and step % checkpoint_every == 0:
                    counter.fold()
                    _save_checkpoint(checkpoint, stats, step, rank, world)
    finally:
        bar.close()
    counter.fold()
    stats.meta["seconds"] = round(time.perf_counter() - started, 3)
    if checkpoint is not None:  # this rank's own counts: a rerun resumes with nothing left to do
        _save_checkpoint(checkpoint, stats, len(mine), rank, world)
    if world > 1:
        _all_reduce(stats, device)
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


def _all_reduce(stats: ActivationStats, device: torch.device) -> None:
    """Sum every rank's counters (on `device`: nccl reduces GPU tensors only), in place."""
    import torch.distributed as dist

    for name in ("active", "tokens", "sums", "sq_sums", "routed"):
        tensor = getattr(stats, name)
        if tensor is not None:
            reduced = tensor.to(device)
            dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
            setattr(stats, name, reduced.cpu())
    stats.meta["world_size"] = dist.get_world_size()


def checkpoint_file(checkpoint: str | Path, rank: int = 0) -> Path:
    """The one file that holds a rank's progress: tensors and metadata, replaced in one rename."""
    return Path(checkpoint) / f"rank{rank}.safetensors"


def clear_checkpoint(checkpoint: str | Path, world_size: int = 1) -> None:
    """Remove the checkpoint files a finished run of `world_size` processes wrote, and nothing else (the
    folder goes too once nothing is left in it)."""
    folder = Path(checkpoint)
    for rank in range(world_size):
        checkpoint_file(folder, rank).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _save_checkpoint(checkpoint, stats: ActivationStats, done: int, rank: int, world: int = 1) -> None:
    Path(checkpoint).mkdir(parents=True, exist_ok=True)
    stats.save_file(checkpoint_file(checkpoint, rank), done_batches=done, world_size=world)


def _resume(checkpoint, meta, languages, info, sq_sums: bool, rank: int, world: int, batches: list[Batch],
            batch_tokens: list[int], mine: list[int]) -> tuple[ActivationStats, int]:
    """The stats to continue from and how many of this rank's batches they hold: a fresh start without a
    checkpoint; else the checkpoint, once everything the result depends on is the same (one line naming
    what changed otherwise)."""
    fresh = ActivationStats.zeros(languages, info.n_layers, info.d_mlp, sq_sums=sq_sums, experts=info.experts, **meta)
    if checkpoint is None or not checkpoint_file(checkpoint, rank).exists():
        return fresh, 0
    where = checkpoint_file(checkpoint, rank)
    saved = ActivationStats.load_file(where)
    stored = saved.meta
    changed = []
    if (stored.get("model") or {}).get("weights_hash") != info.weights_hash:
        changed.append("model weights")
    if (stored.get("corpus") or {}).get("fingerprint") != meta["corpus"]["fingerprint"]:
        changed.append("corpus texts")
    if (stored.get("corpus") or {}).get("split") != meta["corpus"]["split"]:
        changed.append("corpus split")
    if saved.languages != list(languages):
        changed.append(f"languages ({', '.join(saved.languages)} there)")
    if stored.get("params") != meta["params"]:
        changed.append("batching or token settings")
    if stored.get("plan") != meta["plan"]:
        changed.append("batch plan")
    if int(stored.get("world_size", 1)) != world:
        changed.append(f"number of processes ({stored.get('world_size', 1)} there, {world} now)")
    if changed:
        raise ValueError(f"the checkpoint '{where}' does not match this run (changed: {'; '.join(changed)}); rerun "
                         "as it was made to resume it, or delete it to start over")
    done = stored.pop("done_batches", None)
    stored.pop("world_size", None)
    if type(done) is not int or not 0 <= done <= len(mine):
        raise ValueError(f"the checkpoint '{where}' does not say how many batches it holds (done_batches); it is "
                         "damaged: delete it to start over")
    expected = torch.zeros(len(languages), dtype=torch.int64)
    for index in mine[:done]:
        expected[batches[index].language] += batch_tokens[index]
    if not torch.equal(saved.tokens, expected):
        raise ValueError(f"the checkpoint '{where}' counts {saved.tokens.tolist()} tokens per language, but its "
                         f"first {done} batches hold {expected.tolist()}; it is damaged: delete it to start over")
    if sq_sums and saved.sq_sums is None:
        raise ValueError(
            f"the checkpoint '{where}' was collected without sq_sums, so its squares would miss the first "
            "batches; rerun without sq_sums to resume it, or delete it to start over with sq_sums"
        )
    if not sq_sums:
        saved.sq_sums = None
    return saved, done
