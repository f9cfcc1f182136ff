"""Perplexity of texts under a model (and under whatever interventions are active around the call).

Texts are tokenised with the model's tokenizer (BOS added as the tokenizer does), truncated to
`max_length`, sorted by length and batched with right padding; pads are masked out of attention
and never scored, and positions are the same as for an unpadded text, so a text gets the same
numbers batched or alone. Token t is scored from the logits at position t - 1: the first token
(BOS) is never a target.

The logits are the HF model's own: the decoder stack runs through the bridge (so every hook point,
and so every active `steer.intervene` / `deactivate` / `amplify`, applies) and the unembedding
(with the final logit soft-capping where the architecture has one) is applied only at scored
positions, in chunks: a [batch, pos, vocab] logit tensor of a 262k-vocabulary model would take
gigabytes for nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from steer.models import decoder, input_device
from steer.models.fast_path import fast_path
from steer.tokens import encode_with_mask, right_pad

# (prompt, continuation): only the continuation's tokens are scored.
Scored = str | tuple[str, str]

HEAD_CHUNK = 256  # scored positions per unembedding call


@dataclass(frozen=True)
class _Item:
    index: int
    ids: list[int]
    scored: list[int]  # 1 where ids[t] is a target (t >= 1)


def _encode(tokenizer, item: Scored, max_length: int, index: int) -> _Item:
    ids, scored = encode_with_mask(tokenizer, item, max_length)
    if scored:
        scored[0] = 0  # the first token has nothing to be predicted from
    return _Item(index, ids, scored)


def unembed(model, hidden: Float[Tensor, "n d_model"]) -> Float[Tensor, "n vocab"]:
    """Logits of the HF model's head (with final logit soft-capping where the architecture has it)."""
    hf_model = model.original_model
    logits = hf_model.lm_head(hidden[None])[0].float().contiguous()
    config = getattr(hf_model.config, "text_config", None) or hf_model.config
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def token_nll(
    model,
    texts: Sequence[Scored],
    *,
    batch_size: int = 8,
    max_length: int = 256,
    progress: bool = False,
    desc: str = "perplexity",
) -> list[Float[Tensor, " scored"]]:
    """Per text, the negative log-likelihood (nats) of each scored token, in order.

    A text is a string (every token after the first is scored) or a (prompt, continuation) pair
    (only the continuation's tokens are scored, conditioned on the prompt).
    """
    if batch_size < 1 or max_length < 2:
        raise ValueError("batch_size must be >= 1 and max_length >= 2")
    texts = list(texts)
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    items = [_encode(tokenizer, text, max_length, i) for i, text in enumerate(texts)]
    order = sorted(items, key=lambda item: len(item.ids))
    device = input_device(model)
    results: list[Tensor | None] = [None] * len(items)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(item.ids) for item in items), unit="tok", unit_scale=True, desc=desc, leave=False)
    try:
        with torch.inference_mode(), fast_path(model):
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                for item, nll in zip(chunk, _batch_nll(model, chunk, pad_id, device)):
                    results[item.index] = nll
                if bar is not None:
                    bar.update(sum(len(item.ids) for item in chunk))
    finally:
        if bar is not None:
            bar.close()
    return [r if r is not None else torch.zeros(0) for r in results]


def _batch_nll(model, chunk: list[_Item], pad_id: int, device) -> list[Tensor]:
    input_ids, attention, scored = right_pad([(item.ids, item.scored) for item in chunk], pad_id)
    scored = scored.bool()
    width = input_ids.shape[1]
    if width < 2 or not scored.any():
        return [torch.zeros(0) for _ in chunk]
    output = decoder(model)(input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False)
    hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
    device = hidden.device  # under a device map, the last layer's device
    targets_mask = scored[:, 1:].to(device)  # target t is predicted at position t - 1
    predicting = hidden[:, :-1][targets_mask]
    targets = input_ids[:, 1:].to(device)[targets_mask]
    nll = torch.empty(targets.shape[0], dtype=torch.float32, device=device)
    for lo in range(0, targets.shape[0], HEAD_CHUNK):
        logits = unembed(model, predicting[lo : lo + HEAD_CHUNK])
        picked = logits.gather(1, targets[lo : lo + HEAD_CHUNK, None]).squeeze(1)
        peak = logits.max(1).values
        log_z = logits.sub_(peak[:, None]).exp_().sum(1).log_().add_(peak)  # logsumexp, in place: no 2nd copy
        nll[lo : lo + HEAD_CHUNK] = log_z - picked
    counts = targets_mask.sum(1).tolist()
    return [part.cpu() for part in torch.split(nll, counts)]


def summarize(nlls: Sequence[Tensor]) -> dict:
    """Pooled (token-weighted) and per-text mean NLL (log-PPL) and PPL of per-text NLL arrays."""
    n_tokens = [int(n.numel()) for n in nlls]
    total = sum(n_tokens)
    per_text = [float(n.double().mean()) if n.numel() else None for n in nlls]
    log_ppl = float(sum(float(n.double().sum()) for n in nlls) / total) if total else None
    return {
        "n_texts": len(nlls),
        "n_tokens": total,
        "log_ppl": log_ppl,
        "ppl": math.exp(log_ppl) if log_ppl is not None else None,
        "per_text": {"log_ppl": per_text, "n_tokens": n_tokens},
    }


def perplexity(
    model,
    texts: Sequence[Scored],
    *,
    batch_size: int = 8,
    max_length: int = 256,
    progress: bool = False,
    desc: str = "perplexity",
) -> dict:
    """Mean token NLL of `texts`: pooled over tokens (`log_ppl`, `ppl`) and per text (`per_text`).

    Interventions active around the call (``with steer.deactivate(...): perplexity(...)``) apply.
    Texts with fewer than two tokens score nothing (their per-text value is None).
    """
    texts = list(texts)
    if not texts:
        raise ValueError("perplexity needs at least one text")
    result = summarize(token_nll(model, texts, batch_size=batch_size, max_length=max_length, progress=progress, desc=desc))
    if result["n_tokens"] == 0:
        raise ValueError("no token to score: every text is shorter than two tokens")
    result["max_length"] = max_length
    return result
