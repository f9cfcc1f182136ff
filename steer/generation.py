"""Generation under a given steering: left padding, the KV cache, batches, each continuation's language.

`generate` runs the HF model's own `generate` under the bridge's hook points (left padding, KV
cache, SDPA attention), so interventions cost one index op per hooked layer and step. With
`force_language` it asks the forcing policy (`steer.forcing`) for the steerings to run; it knows nothing
of languages itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from steer.forcing import (DEFAULT_SUPPRESS, LEARNED, STEPS_DEFAULT, check_forcing, default_steps, forcing_decoding,
                           forcing_neurons, forcing_push, forcing_settings, forcing_steerings, learned_push)
from steer.langid import detect_language
from steer.models import input_device
from steer.models.fast_path import fast_path
from steer.neurons import NeuronSet
from steer.steering import Intervention, Steering, active_steerings
from steer.tokens import left_pad


@dataclass
class Generation:
    prompts: list[str]
    texts: list[str]
    languages: list[str]
    settings: dict
    logits: list[Float[Tensor, "new vocab"]] | None = None  # per prompt, with return_logits=True

    def to_dict(self) -> dict:
        return {"prompts": self.prompts, "texts": self.texts, "languages": self.languages, "settings": self.settings}

    def __len__(self) -> int:
        return len(self.texts)


def check_generate_args(
    prompts: str | Sequence[str], *, neurons: NeuronSet | None = None, stats=None, force_language: str | None = None,
    mode: str | None = None, strength: float | None = None, suppress: str | Sequence[str] = DEFAULT_SUPPRESS,
    steps: int | None | str = STEPS_DEFAULT, max_new_tokens: int = 32, batch_size: int = 8, phase: str = "all",
    push=None, corpus=None,
) -> list[str]:
    """The checks `generate` makes before anything runs (they need no model, so the command line calls this
    once it has read the files, before it loads one); returns the prompts as a list. `push` is the one
    forcing uses (`steer.forcing.forcing_push`)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty strings")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    if corpus is not None and not (isinstance(push, str) and push == LEARNED):
        raise ValueError("corpus (--corpus) is what a learned push is fitted on: it applies only with "
                         "force_language and neither a mode nor a push of your own; leave it out")
    if force_language is None:
        given = [name for name, value in (("mode", mode), ("strength", strength)) if value is not None]
        given += [name for name, value, default in (("steps", steps, STEPS_DEFAULT), ("phase", phase, "all"),
                                                    ("suppress", suppress, DEFAULT_SUPPRESS)) if value != default]
        if given:
            raise ValueError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} only with "
                             f"force_language (--force-language); give a target language or leave "
                             f"{'them' if len(given) > 1 else 'it'} out")
        return prompts
    steps = default_steps(steps, push)
    check_forcing(neurons=neurons, stats=stats, force_language=force_language, mode=mode, strength=strength,
                  suppress=suppress, steps=steps, push=push)
    return prompts


def generate(
    model,
    prompts: str | Sequence[str],
    *,
    interventions: Sequence[Intervention] = (),
    neurons: NeuronSet | None = None,
    stats=None,
    force_language: str | None = None,
    mode: str | None = None,
    strength: float | None = None,
    suppress: str | Sequence[str] = DEFAULT_SUPPRESS,
    phase: str = "all",
    steps: int | None | str = STEPS_DEFAULT,
    max_new_tokens: int = 32,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    use_cache: bool = True,
    detect: bool = True,
    candidates: Sequence[str] | None = None,
    return_logits: bool = False,
    push=None,
    corpus=None,
) -> Generation:
    """Generate continuations of `prompts`, optionally under interventions or a forced language.

    With `force_language` (the policy is `steer.forcing`'s), `neurons` default to `forcing_neurons(stats)`
    (`PUSH_NEURONS` for the learned push, `FORCING_NEURONS` otherwise), and `suppress` picks whose neurons
    are switched off: "none" (the default), "others" (every other
    language of `neurons`), "source" (the language each prompt is written in, as detected: Gurgurov et
    al.'s language arithmetic) or a list of languages. What pushes towards the target: with neither `push` nor
    `mode`, `steer.forcing.DEFAULT_PUSH`, "learned": a push fitted on the target's neurons
    (`steer.forcing.learned_push`, on `corpus`, default the embedded one) the first time (minutes on a CPU, with
    a progress bar) and read from steer's cache after; `push`: a `LanguagePush` of your own (`strength` then
    scales its offsets; its target is the default `force_language`); `mode`: a rule's push instead, nothing
    learned ("diffmean", "set", "additive", "std"). `phase` says
    where the forcing acts: "all" positions, or "output" (those that predict a generated token; the rest of
    the prompt is read unsteered), and `steps` stops it once that many new tokens are predicted (None: every
    step; default `DEFAULT_STEPS` for a rule's push, `DEFAULT_PUSH_STEPS`, every step, for a learned one).
    `repetition_penalty` and `no_repeat_ngram_size` are HF generate's;
    when forcing a language they default to `DEFAULT_DECODING` (pass 1.0 and 0 for plain greedy). Returns
    the continuations (prompt excluded) and each one's detected language ("und" when the language
    identifier cannot tell). `mode`, `strength` (default 1 for a learned push, `DEFAULT_STRENGTH[mode]` for a
    rule's), `steps`, `phase` and `suppress` apply to `force_language` only; giving them without it is an
    error.
    """
    if push is not None and not isinstance(push, str) and force_language is None:
        force_language = push.target
    if force_language is not None:  # no push and no mode: the default push (a learned one, fitted once and cached)
        push = forcing_push(push, mode)
    prompts = check_generate_args(prompts, neurons=neurons, stats=stats, force_language=force_language, mode=mode,
                                  strength=strength, suppress=suppress, steps=steps, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, phase=phase, push=push, corpus=corpus)
    steps = default_steps(steps, push)
    if push == LEARNED:  # fitted once per (model, neurons, corpus), then read from the cache
        push = learned_push(model, force_language, neurons if neurons is not None else
                            forcing_neurons(stats, learned=True), corpus=corpus)
    if force_language is not None and neurons is None and (push is None or suppress != "none"):
        neurons = forcing_neurons(stats)  # the rule's push, or whose neurons are switched off
    if force_language is not None:  # unless told otherwise, the decoding the forcing defaults were tuned with
        controls = forcing_decoding(repetition_penalty, no_repeat_ngram_size)
        repetition_penalty, no_repeat_ngram_size = controls["repetition_penalty"], controls["no_repeat_ngram_size"]
    if repetition_penalty is not None and not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be positive (1.0 = none), got {repetition_penalty}")
    if no_repeat_ngram_size is not None and no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size must be 0 (none) or more, got {no_repeat_ngram_size}")
    groups: list[tuple[list[int], Steering | None]] = []
    if force_language is not None:
        groups = forcing_steerings(model, prompts, force_language, interventions=interventions, neurons=neurons,
                                   stats=stats, mode=mode, strength=strength, suppress=suppress, phase=phase,
                                   steps=steps, push=push)
    else:
        groups.append((list(range(len(prompts))), Steering(model, interventions, neurons, stats) if interventions else None))
    decoding = dict(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None, do_sample=do_sample,
                    temperature=temperature if do_sample else None, top_p=top_p if do_sample else None, top_k=None,
                    use_cache=use_cache, repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    texts: list[str] = [""] * len(prompts)
    logits: list[Tensor | None] = [None] * len(prompts)
    for rows, steering in groups:
        chunk_texts, chunk_logits = _generate(model, [prompts[i] for i in rows], steering, decoding, seed=seed,
                                              batch_size=batch_size, return_logits=return_logits)
        for i, text, row_logits in zip(rows, chunk_texts, chunk_logits):
            texts[i], logits[i] = text, row_logits
    if candidates is None and neurons is not None:
        candidates = neurons.languages
    elif candidates is None and stats is not None and force_language is not None:
        candidates = stats.languages
    elif candidates is None and push is not None:
        candidates = [push.target, *push.meta.get("sources", [])]
    languages = detect_language(texts, candidates=candidates) if detect else ["und"] * len(texts)
    settings = {
        "max_new_tokens": max_new_tokens, "do_sample": do_sample, "temperature": temperature, "top_p": top_p,
        "repetition_penalty": repetition_penalty, "no_repeat_ngram_size": no_repeat_ngram_size,
        "seed": seed, "use_cache": use_cache, "force_language": force_language,
        **(forcing_settings(mode=mode, strength=strength, suppress=suppress, phase=phase, steps=steps, push=push)
           if force_language else dict.fromkeys(("mode", "strength", "push", "suppress", "phase", "steps"))),
        "interventions": _specs(groups[0][1]) if len(groups) == 1 else
        [{"prompts": rows, "interventions": _specs(steering)} for rows, steering in groups],
    }
    return Generation(prompts, [t.strip() for t in texts], list(languages), settings,
                      logits if return_logits else None)


def _specs(steering: Steering | None) -> list[dict]:
    return [spec.to_dict() for spec in steering.interventions] if steering is not None else []


def _generate(model, prompts: list[str], steering: Steering | None, decoding: dict, *, seed: int, batch_size: int,
              return_logits: bool) -> tuple[list[str], list[Tensor | None]]:
    """HF generate over `prompts` in left-padded batches, under `steering` (if any), through the fast path."""
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = input_device(model)
    texts: list[str] = []
    logits: list[Tensor | None] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        if steering is not None:
            stack.enter_context(steering)
        stack.enter_context(fast_path(model))  # after the hooks are attached
        try:
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                input_ids, attention_mask = left_pad([tokenizer(p, add_special_tokens=True)["input_ids"] for p in chunk],
                                                     pad_id)
                width = input_ids.shape[1]
                for active in active_steerings(model):
                    active.phase.prompt_width = width
                torch.manual_seed(seed + start)
                output = model.original_model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), pad_token_id=pad_id,
                    return_dict_in_generate=True, output_logits=return_logits, **decoding,
                )
                texts += tokenizer.batch_decode(output.sequences[:, width:], skip_special_tokens=True)
                logits += (list(torch.stack(output.logits, dim=1).float().cpu()) if return_logits
                           else [None] * len(chunk))
        finally:  # also after an exception or Ctrl-C: an outer steering must not keep this prompt's boundary
            for active in active_steerings(model):
                active.phase.prompt_width = None
    return texts, logits
