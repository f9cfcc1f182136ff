"""The alignment run: LoRA on a HF causal LM, a deterministic loop that resumes exactly, the merged model.

Training is LoRA (``peft``) on the linear projections, AdamW with a short linear warm-up and a linear
decay, gradient clipping at 1.0, and is deterministic on CPU: the example order is a seeded function
of the step, so an interrupted run resumes from ``out/checkpoint/`` and ends with exactly the weights
an uninterrupted run would have. What is written where: `steer.align.folder`.
"""

from __future__ import annotations

import contextlib
import random
import time
import warnings
from pathlib import Path
from typing import Iterator

import torch

from steer.align.config import AlignConfig
from steer.align.data import PROMPT_TEMPLATE, Encoder, build_examples
from steer.align.folder import check_out, check_out_folder, load_checkpoint, run_identity, save_checkpoint, write_output
from steer.align.objectives import Scorer, dpo_loss, translation_loss
from steer.languages import language_name
from steer.models import load_hf_model, resolve_device, resolve_dtype, resolve_model, weights_hash

_MAX_WARMUP = 10


class _Order:
    """Which examples make up step `s`: consecutive slices of seeded per-epoch permutations (stateless)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=generator).tolist()}
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        start = step * self.batch_size
        return [self._perm(p // self.n)[p % self.n] for p in range(start, start + self.batch_size)]


def _lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first min(10, steps // 10) steps, then linear decay (never to zero)."""
    warmup = max(1, min(_MAX_WARMUP, steps // 10))
    if step < warmup:
        return (step + 1) / warmup
    return (steps - step) / max(1, steps - warmup)


def _trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _present_targets(hf_model, wanted: list[str]) -> list[str]:
    from transformers.pytorch_utils import Conv1D

    output = hf_model.get_output_embeddings()
    leaves = {
        name.rsplit(".", 1)[-1]
        for name, m in hf_model.named_modules()
        if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not output
    }
    present = [t for t in wanted if t in leaves]
    if not present:
        raise ValueError(
            f"none of the target modules {wanted} is a linear layer of this model; it has {sorted(leaves)}"
        )
    return present


def _uses_conv1d(hf_model, targets: list[str]) -> bool:
    """GPT-2 style models store their projections transposed (`Conv1D`); LoRA must be told."""
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) and name.rsplit(".", 1)[-1] in targets for name, m in hf_model.named_modules())


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed torch and random and turn on deterministic algorithms; restore all of it on exit."""
    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    py_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.manual_seed(seed)
            random.seed(seed)
            yield
        finally:
            torch.use_deterministic_algorithms(was_on, warn_only=was_warn)
            random.setstate(py_state)


def _after_step(step: int) -> None:
    """Called after each step (and its checkpoint, if one is due) with the number of steps done.

    Does nothing; tests replace it with a function that raises, to interrupt a run as if killed.
    """


def align(
    model: str | Path,
    corpus,
    out: str | Path,
    config: AlignConfig,
    *,
    progress: bool = True,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
) -> Path:
    """Fine-tune `model` towards `config.pivot` for `config.train_languages` and write the merged model to `out`.

    `model`: "gemma-3-270m", a local model folder or an HF id. `corpus`: a `Corpus` or anything
    `steer.corpus.load_corpus` accepts. Rerunning with the same arguments resumes from
    ``out/checkpoint/`` (saved every `config.checkpoint_every` steps) and gives the same final weights;
    rerunning after completion returns at once. Returns `out`, a model folder for `steer.load_model`.
    `device`: "auto" (a GPU when there is one) or a device; `dtype`: float32 unless asked ("auto" is
    bfloat16 on a GPU), since LoRA weights trained in bfloat16 lose precision.
    """
    from steer.corpus import Corpus, load_corpus

    config.validate()
    local_model = model if model is not None and Path(str(model)).expanduser().exists() else None
    out = check_out_folder(out, inputs=[local_model, corpus if isinstance(corpus, (str, Path)) else None])
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus, progress=progress)
    config.check_corpus(corpus)
    base_name, source = resolve_model(model)
    examples = build_examples(corpus, config)

    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm

    device = resolve_device(device)
    tokenizer, hf_model = load_hf_model(source, device=device, dtype=resolve_dtype(dtype, device))
    base_hash = weights_hash(hf_model)
    identity = run_identity(config, base_hash, corpus)
    where = check_out(out, identity)
    if where == "done":
        if progress:
            print(f"{out} already holds this alignment; nothing to do")
        return out
    targets = _present_targets(hf_model, config.target_modules)
    encoder = Encoder(tokenizer, config.max_length)
    order = _Order(len(examples), config.batch_size, config.seed)

    with _deterministic(config.seed):
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets,
                          bias="none", task_type="CAUSAL_LM", fan_in_fan_out=_uses_conv1d(hf_model, targets))  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(hf_model, lora)
        named = _trainable(peft_model)
        params = [p for _, p in named]
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        scorer = Scorer(peft_model)
        probe = encoder.batch([encoder.encode(examples[0], examples[0].tgt_text)])
        scorer.decide(*(t.to(device) for t in probe))
        step, losses, seconds = 0, [], 0.0
        if where == "resume":
            state = load_checkpoint(out / "checkpoint", named, optimizer)
            step, losses, seconds = int(state["step"]), list(state["losses"]), float(state["seconds"])
        peft_model.train()
        started = time.perf_counter()
        bar = tqdm(total=config.steps, initial=step, desc=f"align {'+'.join(config.train_languages)}",
                   disable=not progress, dynamic_ncols=True)  # fmt: skip
        try:
            while step < config.steps:
                batch = [examples[k] for k in order.batch(step)]
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * _lr_factor(step, config.steps)
                if config.objective == "translation":
                    loss = translation_loss(scorer, encoder, batch, device)
                else:
                    loss = dpo_loss(scorer, peft_model, encoder, batch, config.beta, device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                step += 1
                losses.append(round(float(loss.detach()), 6))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if step % config.checkpoint_every == 0 and step < config.steps:
                    extra = {"losses": losses, "seconds": seconds + time.perf_counter() - started,
                             "base_model": base_name}  # fmt: skip
                    save_checkpoint(out / "checkpoint", named, optimizer, step, identity, extra)
                _after_step(step)
        finally:
            bar.close()
        seconds += time.perf_counter() - started

        peft_model.eval()
        info = {
            "model": {"name": base_name, "weights_hash": base_hash},  # the model this folder derives from
            "base_model": base_name,
            "base_source": source,
            "base_weights_hash": base_hash,
            "corpus_fingerprint": identity["corpus_fingerprint"],
            "corpus_source": corpus.source,
            "config": config.to_dict(),
            "target_modules_used": targets,
            "prompt_template": PROMPT_TEMPLATE,
            "language_names": {lang: language_name(lang) for lang in [*config.train_languages, config.pivot]},
            "n_examples": len(examples),
            "n_pairs": len({e.index for e in examples}),
            "steps": step,
            "losses": losses,
            "seconds": round(seconds, 3),
        }
        write_output(out, peft_model, tokenizer, source, info)
    return out
