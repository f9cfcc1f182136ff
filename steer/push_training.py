"""Fitting a `LanguagePush`: per-neuron offsets on a target's language neurons, learned from parallel text.

Training pairs come from the stats split of a parallel corpus only: the opening of paragraph i in a source
language S (its first words, or its first sentence), followed by the rest of paragraph i in the target T.
The loss is the cross-entropy of the continuation under the push (teacher forcing), plus an L2 penalty on
the offsets and, optionally, a KL term that keeps the next-token distribution on T's own text where it
was (the push should not damage text already in T). Only the offsets train: the model is frozen and no
activation outlives its batch. Validation pairs come from paragraphs the training never sees; the best
offsets by validation loss are kept, and training stops once it no longer improves.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from steer.hooks import attached
from steer.languages import normalise_code
from steer.models import decoder, input_device, model_info
from steer.models.fast_path import fast_path
from steer.neurons import NeuronSet
from steer.progress import progress_bar
from steer.prompts import make_prompt
from steer.push import LanguagePush
from steer.scoring import unembed
from steer.tokens import right_pad

IGNORE = -100


@dataclass(frozen=True)
class PushTraining:
    """How a push is fitted. Defaults from the first prototype on the embedded model (Adam, lr 0.05,
    6 pairs a step); `max_steps` with early stopping on the validation pairs (`patience` evaluations
    every `eval_every` steps without a better validation loss)."""

    max_steps: int = 60
    batch_size: int = 6
    lr: float = 0.05
    l2: float = 1e-3  # × the mean squared offset
    kl: float = 0.0  # × KL(unpushed ‖ pushed) on the target's own text; 0: no KL term
    prompt: str = "prefix"  # "prefix" (the first words) or "sentence" (the first sentence) of the source paragraph
    prompt_words: int = 8
    max_length: int = 48  # tokens per pair, prompt included (forcing judges 16 new tokens; the unembedding of
    #                       Gemma's 262k vocabulary dominates a step, so each token counts)
    val_fraction: float = 0.15  # of the paragraphs, held out for early stopping ...
    val_pairs: int = 24  # ... of whose pairs this many (drawn once, with the seed) measure the validation loss
    eval_every: int = 10
    patience: int = 2
    seed: int = 0

    def check(self) -> None:
        for name in ("max_steps", "batch_size", "prompt_words", "eval_every", "patience", "val_pairs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {self.max_length}")
        for name, low in (("lr", 0.0), ("l2", -1e-12), ("kl", -1e-12)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not value > low:
                raise ValueError(f"{name} must be a finite number {'above 0' if low == 0 else 'of at least 0'}, "
                                 f"got {value!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.prompt not in ("prefix", "sentence"):
            raise ValueError(f"unknown prompt kind '{self.prompt}' (known: prefix, sentence)")


@dataclass(frozen=True)
class Pair:
    paragraph: int
    source: str
    prompt: str
    continuation: str


def training_pairs(corpus, target: str, sources: Sequence[str], *, kind: str = "prefix",
                   n_words: int = 8) -> list[Pair]:
    """Every (paragraph, source) pair of the corpus' stats split: the opening of paragraph i in the source,
    the rest of paragraph i in the target (after the target's own opening). Needs a parallel corpus."""
    if not getattr(corpus, "parallel", False):
        raise ValueError("fitting a push needs a parallel corpus (paragraph i the same text in every language)")
    pairs = []
    for i, text in enumerate(corpus.stats[target]):
        opening = make_prompt(text, kind, n_words)
        rest = " ".join(text.split())[len(opening):].strip()
        if not rest:
            continue
        for source in sources:
            prompt = make_prompt(corpus.stats[source][i], kind, n_words)
            if prompt:
                pairs.append(Pair(i, source, prompt, rest))
    return pairs


def _encode(tokenizer, pairs: Sequence[Pair], max_length: int, spaced: bool):
    """Right-padded (input ids, attention mask, labels): labels are the continuation's tokens, -100 elsewhere."""
    rows = []
    for pair in pairs:
        prompt = tokenizer(pair.prompt, add_special_tokens=True)["input_ids"]
        rest = tokenizer((" " if spaced else "") + pair.continuation, add_special_tokens=False)["input_ids"]
        ids = (prompt + rest)[:max_length]
        counted = ([0] * len(prompt) + [1] * len(rest))[:max_length]
        rows.append((ids, counted))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids, attention, counted = right_pad(rows, pad)
    labels = torch.where(counted.bool(), input_ids, torch.full_like(input_ids, IGNORE))
    return input_ids, attention, labels


def _continuation_loss(logits: Tensor, labels: Int[Tensor, "batch pos"]) -> Tensor:
    """Mean cross-entropy of the labelled tokens (each position predicts the next token)."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                             ignore_index=IGNORE)


def continuation_loss(model, input_ids: Int[Tensor, "batch pos"], attention: Int[Tensor, "batch pos"],
                      labels: Int[Tensor, "batch pos"]) -> Tensor:
    """`_continuation_loss` of the model's logits, with the head run only where a token is labelled: the
    unembedding of a large vocabulary (Gemma's 262k) dominates a step, and prompt and pad rows need none."""
    device = input_device(model)
    hidden = decoder(model)(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                            use_cache=False).last_hidden_state
    target = labels[:, 1:].to(hidden.device)
    select = target != IGNORE
    return torch.nn.functional.cross_entropy(unembed(model, hidden[:, :-1][select]), target[select])


def fit_push(
    model,
    corpus,
    target: str,
    *,
    neurons: NeuronSet | None = None,
    stats=None,
    sources: Sequence[str] | None = None,
    training: PushTraining | None = None,
    residual_layer: int | None = None,
    progress: bool = True,
    on_eval: Callable[[int, LanguagePush], None] | None = None,
) -> LanguagePush:
    """Fit per-neuron offsets on `target`'s neurons that make the model continue a source-language opening in
    `target` (see the module docstring). `neurons`: the set whose `target` neurons (specific and related)
    are pushed; default `steer.forcing.forcing_neurons(stats, learned=True)`. `sources`: the languages whose
    openings are continued (default: every other language of the corpus). With `residual_layer`, no neurons: one
    vector added to the residual stream after that layer is learned the same way (the steering-vector
    baseline). Returns the push with the offsets of the best validation loss; its `meta` records the model,
    neurons, corpus, settings and learning curve. `on_eval(step, push)`, if given, receives the push as it
    stands at each validation (a learning curve in success, not only in loss, needs those snapshots)."""
    training = training or PushTraining()
    training.check()
    target = normalise_code(target, what="target")
    if target not in corpus.languages:
        raise ValueError(f"the corpus has no language '{target}'; it has {', '.join(corpus.languages)}")
    sources = [lang for lang in corpus.languages if lang != target] if sources is None else \
        [normalise_code(lang, what="sources") for lang in sources]
    missing = [lang for lang in sources if lang not in corpus.languages]
    if missing or not sources:
        raise ValueError(f"sources must be languages of the corpus other than the target; got {list(sources)}")
    info = model_info(model)
    if info.experts is not None:
        raise ValueError("fitting a push on a mixture-of-experts model is not supported yet (its experts' neurons "
                         "are tapped, not hooked)")
    if residual_layer is not None:
        if isinstance(residual_layer, bool) or not isinstance(residual_layer, int) \
                or not 0 <= residual_layer < info.n_layers:
            raise ValueError(f"residual_layer must be a layer in 0..{info.n_layers - 1}, got {residual_layer!r}")
        per_layer = {residual_layer: torch.arange(int(model.cfg.d_model))}

        def hook_name(layer: int) -> str:
            return f"blocks.{layer}.hook_resid_post"

        described = {"site": "residual", "layer": residual_layer, "count": int(model.cfg.d_model)}
    else:
        if neurons is None:
            if stats is None:
                raise ValueError("fit_push needs neurons, or stats to take the default neurons from (PUSH_NEURONS)")
            from steer.forcing import forcing_neurons

            neurons = forcing_neurons(stats, learned=True)
        neurons.check_model(model)
        per_layer = neurons.select([target]).layer_indices()
        if not per_layer:
            raise ValueError(f"the neuron set has no neuron for '{target}': nothing to push")
        hook_name = info.site.down_input_hook
        described = {"method": neurons.method, "params": neurons.params, "selection": f"{target}: specific and related"}
    pairs = training_pairs(corpus, target, sources, kind=training.prompt, n_words=training.prompt_words)
    paragraphs = sorted({pair.paragraph for pair in pairs})
    if len(paragraphs) < 2:
        raise ValueError(f"the corpus' stats split gives {len(paragraphs)} paragraph(s) to train on; it needs at least 2")
    generator = torch.Generator().manual_seed(training.seed)
    order = torch.randperm(len(paragraphs), generator=generator).tolist()
    n_val = max(1, round(training.val_fraction * len(paragraphs)))
    held = {paragraphs[k] for k in order[:n_val]}
    train = [pair for pair in pairs if pair.paragraph not in held]
    val = [pair for pair in pairs if pair.paragraph in held]
    val = [val[k] for k in torch.randperm(len(val), generator=generator)[: training.val_pairs].tolist()]
    spaced = " " in " ".join(corpus.stats[target][:20]).strip()
    own_text = [text for i, text in enumerate(corpus.stats[target]) if i not in held][:64] if training.kl > 0 else []

    layers = torch.cat([torch.full((len(index),), layer) for layer, index in per_layer.items()])
    indices = torch.cat(list(per_layer.values()))
    offsets = torch.zeros(len(indices), requires_grad=True)
    spans = {}  # layer -> slice of `offsets`
    start = 0
    for layer, index in per_layer.items():
        spans[layer] = slice(start, start + len(index))
        start += len(index)
    state = {"on": True}
    device = input_device(model)

    def hook_for(layer: int):
        index_on = {}

        def hook(activation: Tensor) -> Tensor | None:
            if not state["on"]:
                return None
            index = index_on.setdefault(activation.device, per_layer[layer].to(activation.device))
            values = offsets[spans[layer]].to(device=activation.device, dtype=activation.dtype)
            return activation.index_add(-1, index, values.expand(*activation.shape[:-1], -1))

        return hook

    common = {  # what every push of this fit records
        "model": info.to_dict(),
        "neurons": {**described, "count": len(indices)},
        "corpus": {"source": getattr(corpus, "source", ""), "fingerprint": corpus.fingerprint(), "split": "stats",
                   "paragraphs": len(paragraphs), "validation_paragraphs": n_val},
        "sources": list(sources),
        "training": asdict(training),
    }

    def make_push(values: Tensor, meta: dict) -> LanguagePush:
        return LanguagePush(target, layers, indices, values, info.n_layers,
                            info.d_mlp if residual_layer is None else int(model.cfg.d_model), meta,
                            "mlp" if residual_layer is None else "residual")

    optimizer = torch.optim.Adam([offsets], lr=training.lr)
    hf = model.original_model
    frozen = [(p, p.requires_grad) for p in hf.parameters()]
    curve: list[dict] = []
    best = {"val_loss": math.inf, "offsets": offsets.detach().clone(), "step": 0}
    started = time.perf_counter()
    was_training = hf.training
    bar = progress_bar(progress, training.max_steps, f"fit push {target}", unit="step")

    def logits_of(input_ids, attention):
        return hf(input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False).logits

    def val_loss() -> float:
        losses, weights = [], []
        with torch.no_grad():
            for k in range(0, len(val), training.batch_size):
                ids, attention, labels = _encode(model.tokenizer, val[k:k + training.batch_size], training.max_length,
                                                 spaced)
                losses.append(float(continuation_loss(model, ids, attention, labels)))
                weights.append(int((labels[:, 1:] != IGNORE).sum()))
        return sum(l * w for l, w in zip(losses, weights)) / max(1, sum(weights))

    stale = 0
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        hf.eval()  # no dropout: a fit is a function of its seed
        with contextlib.ExitStack() as stack:
            stack.enter_context(attached(model, [(hook_name(layer), hook_for(layer)) for layer in per_layer]))
            stack.enter_context(fast_path(model))
            for step in range(1, training.max_steps + 1):
                pick = torch.randint(len(train), (training.batch_size,), generator=generator).tolist()
                ids, attention, labels = _encode(model.tokenizer, [train[k] for k in pick], training.max_length, spaced)
                loss = continuation_loss(model, ids, attention, labels)
                total = loss + training.l2 * offsets.square().mean()
                if own_text:
                    total = total + training.kl * _kl_on_own_text(model, own_text, generator, training, state, logits_of)
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
                bar.update()
                bar.set_postfix_str(f"loss {loss.item():.3f}")
                if step % training.eval_every == 0 or step == training.max_steps:
                    current = val_loss()
                    curve.append({"step": step, "train_loss": round(loss.item(), 5), "val_loss": round(current, 5)})
                    if on_eval is not None:
                        on_eval(step, make_push(offsets.detach().clone(), {**common, "step": step,
                                                                          "val_loss": round(current, 5)}))
                    if current < best["val_loss"]:
                        best = {"val_loss": current, "offsets": offsets.detach().clone(), "step": step}
                        stale = 0
                    else:
                        stale += 1
                        if stale >= training.patience:
                            break
            state["on"] = False
            baseline = val_loss()  # the validation loss without any push, for scale
    finally:
        bar.close()
        hf.train(was_training)
        for p, flag in frozen:
            p.requires_grad_(flag)
    meta = {**common, "curve": curve, "best_step": best["step"], "val_loss": round(best["val_loss"], 5),
            "val_loss_unpushed": round(baseline, 5), "seconds": round(time.perf_counter() - started, 2)}
    return make_push(best["offsets"], meta)


def _kl_on_own_text(model, texts: list[str], generator, training: PushTraining, state: dict, logits_of) -> Tensor:
    """KL(unpushed ‖ pushed) of the next-token distributions on a batch of the target's own text."""
    pick = torch.randint(len(texts), (training.batch_size,), generator=generator).tolist()
    rows = []
    for k in pick:
        ids = model.tokenizer(texts[k], add_special_tokens=True)["input_ids"][: training.max_length]
        rows.append((ids, [1] * len(ids)))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    input_ids, attention, counted = right_pad(rows, pad)
    with torch.no_grad():
        state["on"] = False
        try:
            base = torch.log_softmax(logits_of(input_ids, attention).float(), -1)
        finally:
            state["on"] = True
    pushed = torch.log_softmax(logits_of(input_ids, attention).float(), -1)
    mask = counted.to(pushed.device).bool()
    per_token = (base.exp() * (base - pushed)).sum(-1)
    return per_token[mask].mean()
