"""The training objectives: log-probabilities of the answer tokens, the translation loss and the DPO loss.

``"translation"``: the mean cross-entropy on the answer tokens only (the prompt and the padding carry
no loss). ``"dpo"``: Direct Preference Optimisation (Rafailov et al. 2023) on the same prompts, the
translation preferred over an untranslated copy of the source (the answer in the wrong language),
with the base model (the LoRA adapter switched off) as the reference.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from jaxtyping import Float, Int
from torch import Tensor

from steer.align.data import IGNORE_INDEX, Encoder, Example
from steer.models import decoder
from steer.scoring import unembed


class Scorer:
    """Log-probabilities of the answer tokens of a HF causal LM (or a peft model around one).

    Runs the head only where there are labels (`steer.scoring.unembed`, with the final logit
    soft-capping) when that is exactly the model's own computation (checked once by `decide`), else
    falls back to the full forward.
    """

    def __init__(self, model):
        self.model = model
        self.fast = False
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._as_bridge = SimpleNamespace(original_model=base)  # what steer.models/steer.scoring read of a bridge

    def _full_logits(self, input_ids, attention, select):
        logits = self.model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
        return logits[:, :-1][select]

    def _fast_logits(self, input_ids, attention, select):
        output = decoder(self._as_bridge)(input_ids=input_ids, attention_mask=attention, use_cache=False)
        return unembed(self._as_bridge, output.last_hidden_state[:, :-1][select])

    def decide(self, input_ids, attention, labels) -> bool:
        """Use the fast path only if it gives the model's own logits on this batch (run in eval mode, so no
        random numbers are drawn and a resumed run stays exact)."""
        select = labels[:, 1:] != IGNORE_INDEX
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                fast = self._fast_logits(input_ids, attention, select)
                full = self._full_logits(input_ids, attention, select)
            self.fast = fast.shape == full.shape and bool(torch.allclose(fast, full, atol=1e-4, rtol=1e-4))
        except Exception:
            self.fast = False
        finally:
            self.model.train(was_training)
        return self.fast

    def token_logprobs(
        self, input_ids: Int[Tensor, "batch pos"], attention: Int[Tensor, "batch pos"], labels: Int[Tensor, "batch pos"]
    ) -> tuple[Float[Tensor, " answer"], Int[Tensor, " answer"]]:
        """(log p of each answer token, row of each token) for the shifted labels."""
        target = labels[:, 1:]
        select = target != IGNORE_INDEX
        get = self._fast_logits if self.fast else self._full_logits
        logits = get(input_ids, attention, select).float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target[select].unsqueeze(-1)).squeeze(-1)
        rows = torch.arange(labels.shape[0]).unsqueeze(1).expand_as(target)[select]
        return logp, rows


def sequence_logprobs(scorer: Scorer, batch, n_rows: int) -> Float[Tensor, " row"]:
    """Sum of the answer tokens' log-probabilities, per row of `batch` (input ids, attention, labels)."""
    logp, rows = scorer.token_logprobs(*batch)
    return torch.zeros(n_rows, dtype=logp.dtype).index_add(0, rows, logp)


def translation_loss(scorer: Scorer, encoder: Encoder, batch: list[Example], device) -> Float[Tensor, ""]:
    """Mean cross-entropy of the translations' tokens."""
    rows = [encoder.encode(e, e.tgt_text) for e in batch]
    tensors = tuple(t.to(device) for t in encoder.batch(rows))
    logp, _ = scorer.token_logprobs(*tensors)
    return -logp.mean()


def dpo_loss(scorer: Scorer, model, encoder: Encoder, batch: list[Example], beta: float, device) -> Float[Tensor, ""]:
    """DPO: the translation (chosen) against an untranslated copy of the source (rejected)."""
    rows = [encoder.encode(e, e.tgt_text) for e in batch] + [encoder.encode(e, e.src_text) for e in batch]
    tensors = tuple(t.to(device) for t in encoder.batch(rows))
    n = len(batch)
    policy = sequence_logprobs(scorer, tensors, 2 * n)
    with torch.no_grad(), model.disable_adapter():
        reference = sequence_logprobs(scorer, tensors, 2 * n)
    margin = (policy[:n] - reference[:n]) - (policy[n:] - reference[n:])
    return -torch.nn.functional.logsigmoid(beta * margin).mean()
