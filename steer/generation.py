"""Generation under interventions, and generation with a forced output language.

`generate` runs the HF model's own `generate` under the bridge's hook points (left padding, KV
cache, SDPA attention), so interventions cost one index op per hooked layer and step. Each
continuation comes back with its detected language.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from steer.steering import Intervention, Steering, active_steerings
from steer.langid import detect_language
from steer.models import input_device
from steer.models.fast_path import fast_path
from steer.tokens import left_pad
from steer.neurons import NeuronSet

FORCE_MODES = ("set", "add", "diffmean", "std")
# The forcing defaults, chosen on the tuning half of the embedded corpus under the measure of
# steer.bench.forced (benchmarks/forced_sweep.py; README, "Forced language"; docs/results/forced-sweep-prefix.json):
# prefix prompts, 3 per (source, target) pair from paragraphs of their own (270 continuations, 16 new tokens
# under DEFAULT_DECODING, the first 4 steps forced). Fluent success with 95% intervals over paragraphs:
# specificity-500 diffmean 3 0.46 [0.40, 0.52] (raw 0.49), specificity-1000 diffmean 2 (the earlier default)
# 0.44 [0.38, 0.49] (raw 0.45): within the noise of each other; the rule fixed before reading them was to
# take the higher. Earlier rounds, under the old measure (README): zhang2025's own neurons and LAPE did worse
# than the specificity baseline at every setting tried, and so did suppressing the source.
DEFAULT_FORCE_MODE = "diffmean"
# The neurons forcing uses when it is given stats but no neurons: the specificity baseline (each
# language's neurons most often active on it rather than on any other language), 500 per language.
# zhang2025's sets are far smaller on the embedded model (12-63 neurons per language).
FORCING_NEURONS = {"method": "specificity", "n_per_language": 500}
# diffmean: tuned as above; set: the better of 1 and 1.5 on 1000 specificity neurons per language (old
# measure); add and std: the strengths of the first sweeps (README), not retuned for them.
DEFAULT_STRENGTH = {"set": 1.5, "add": 4.0, "diffmean": 3.0, "std": 1.0}
# Forcing stops once the first DEFAULT_STEPS new tokens are predicted: once switched, the model goes on in
# the target by itself, more fluently than under a push at every step. Chosen under the old measure (README:
# specificity-1000 diffmean 2, tuning half: 4 steps 0.28 fluent, every step 0.23); not re-chosen under the new.
DEFAULT_STEPS = 4


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


def forcing_neurons(stats) -> NeuronSet:
    """The neuron set `generate(force_language=...)` uses when given stats but no neurons (`FORCING_NEURONS`)."""
    from steer.identification import identify

    return identify(stats, **FORCING_NEURONS)


def forcing_steps(steps: int | None) -> int | None:
    """The `Intervention.steps` of a forced run given generate's `steps`: None → DEFAULT_STEPS, 0 → None (every
    step), N → N."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ValueError(f"steps must be a whole number: how many new tokens to force (0: every one; default "
                         f"{DEFAULT_STEPS}), got {steps!r}")
    return DEFAULT_STEPS if steps is None else steps or None


def force_language_interventions(
    neurons: NeuronSet, target: str, *, mode: str = DEFAULT_FORCE_MODE, strength: float | None = None,
    suppress: Sequence[str] | None = None, phase: str = "all", steps: int | None = None,
) -> list[Intervention]:
    """Deactivate the other languages' neurons (or only those of `suppress`; [] for none) and push the target's up.

    Neurons shared with the target are left on. `mode`: "set" (to strength × the target's mean),
    "add" (strength × the target's mean), "diffmean" (strength × (target − others) means) or "std"
    (strength standard deviations of each neuron on the target, towards the target; stats with
    sq_sums). `phase`: "all" positions, or "output": only those that predict a generated token (the
    prompt's last position and every generated one; the rest of the prompt is read unsteered). `steps`:
    stop forcing once the first `steps` new tokens are predicted (None: DEFAULT_STEPS; 0: force every step).
    """
    if mode not in FORCE_MODES:
        raise ValueError(f"unknown force mode '{mode}'; use one of {', '.join(FORCE_MODES)}")
    specs = suppression_interventions(neurons, target, suppress, phase=phase, steps=steps)
    steps = forcing_steps(steps)
    strength = DEFAULT_STRENGTH[mode] if strength is None else float(strength)
    if mode == "set":
        specs.append(Intervention("set", languages=[target], target=target, alpha=strength, phase=phase, steps=steps))
    else:
        specs.append(Intervention("add", languages=[target], target=target, alpha=strength,
                                  mode={"add": "additive"}.get(mode, mode), phase=phase, steps=steps))
    return specs


def suppression_interventions(neurons: NeuronSet | None, target: str, suppress: Sequence[str] | None, *,
                              phase: str = "all", steps: int | None = None) -> list[Intervention]:
    """Deactivate the neurons of `suppress` (None: every other language of `neurons`; []: none), except those
    the target shares. `steps` as in `force_language_interventions`."""
    steps = forcing_steps(steps)
    if neurons is not None:
        neurons.index(target)
    others = [lang for lang in (neurons.languages if suppress is None else suppress) if lang != target]
    if not others:
        return []
    return [Intervention("suppress", languages=others, exclude_languages=[target], phase=phase, steps=steps,
                         allow_empty=True)]  # all of them shared with the target: nothing to switch off


SUPPRESS = ("others", "source", "none")
DEFAULT_SUPPRESS = "none"
# The decoding the forcing defaults were tuned with (and that steer.generate uses when forcing a
# language unless told otherwise): greedy with a light repetition penalty and no repeated 3-grams,
# so that a steered continuation is not judged against loops (benchmarks/forced_sweep.py).
DEFAULT_DECODING = {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3}


def forcing_decoding(repetition_penalty: float | None, no_repeat_ngram_size: int | None) -> dict:
    """The repetition controls for a forced run: each one not given is `DEFAULT_DECODING`'s."""
    given = {"repetition_penalty": repetition_penalty, "no_repeat_ngram_size": no_repeat_ngram_size}
    return {key: DEFAULT_DECODING[key] if value is None else value for key, value in given.items()}


def _suppression_groups(prompts, neurons: NeuronSet, target: str, suppress) -> list[tuple[list[int], list[str] | None]]:
    """(prompt indices, languages to switch off) groups: one for "others"/"none"/a list, one per source for "source"."""
    everyone = list(range(len(prompts)))
    if isinstance(suppress, str):
        if suppress not in SUPPRESS:
            raise ValueError(f"unknown suppress '{suppress}'; use one of {', '.join(SUPPRESS)} or a list of languages")
        if suppress == "others":
            return [(everyone, None)]
        if suppress == "none":
            return [(everyone, [])]
        sources = detect_language(prompts, candidates=neurons.languages)  # the prompt's language, per prompt
        groups: dict[str, list[int]] = {}
        for i, source in enumerate(sources):
            groups.setdefault(source, []).append(i)
        return [(rows, [] if source in ("und", target) else [source]) for source, rows in groups.items()]
    return [(everyone, list(suppress))]  # its languages were checked by check_generate_args


def check_generate_args(
    prompts: str | Sequence[str], *, neurons: NeuronSet | None = None, stats=None, force_language: str | None = None,
    mode: str | None = None, strength: float | None = None, suppress: str | Sequence[str] = DEFAULT_SUPPRESS,
    steps: int | None = None, max_new_tokens: int = 32, batch_size: int = 8, phase: str = "all", push=None,
) -> list[str]:
    """The checks `generate` makes before anything runs (they need no model, so the command line calls this
    once it has read the files, before it loads one); returns the prompts as a list."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty strings")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    if force_language is None:
        given = [name for name, value in (("mode", mode), ("strength", strength), ("steps", steps)) if value is not None]
        given += [name for name, value, default in (("phase", phase, "all"), ("suppress", suppress, DEFAULT_SUPPRESS))
                  if value != default]
        if given:
            raise ValueError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} only with "
                             f"force_language (--force-language); give a target language or leave "
                             f"{'them' if len(given) > 1 else 'it'} out")
        return prompts
    if push is not None:
        return _check_push_args(prompts, push, neurons=neurons, stats=stats, force_language=force_language, mode=mode,
                                strength=strength, suppress=suppress, steps=steps)
    if stats is None:
        raise ValueError("force_language needs stats (steer.collect; --stats) and, optionally, neurons "
                         "(default: steer.generation.forcing_neurons(stats))")
    if mode is not None and mode not in FORCE_MODES:
        raise ValueError(f"unknown force mode '{mode}'; use one of {', '.join(FORCE_MODES)}")
    forcing_steps(steps)
    if strength is not None and (isinstance(strength, bool) or not isinstance(strength, (int, float))
                                 or not math.isfinite(strength)):
        raise ValueError(f"strength must be a finite number, got {strength!r}")
    named = [] if isinstance(suppress, str) else list(suppress)  # the languages to switch off, when listed
    for lang in [force_language, *named]:  # the default neurons come from the stats: they have its languages
        (neurons if neurons is not None else stats).index(lang)
    stats.index(force_language)
    if mode == "std":
        stats.stds()  # stats without sq_sums are refused here, not at the first forward
    return prompts


def _check_push_args(prompts, push, *, neurons, stats, force_language, mode, strength, suppress, steps) -> list[str]:
    """What forcing with a learned push allows: its own target, no mode (the offsets are the push), strength
    as a scale of the offsets, and a suppression only with the neurons (or stats) it needs."""
    if force_language != push.target:
        raise ValueError(f"the push was fitted for '{push.target}', not '{force_language}'; fit one for "
                         f"'{force_language}' or leave force_language out")
    if mode is not None:
        raise ValueError("mode does not apply with a learned push (its offsets are the push); leave it out")
    forcing_steps(steps)
    if strength is not None and (isinstance(strength, bool) or not isinstance(strength, (int, float))
                                 or not math.isfinite(strength)):
        raise ValueError(f"strength must be a finite number (a push's scale), got {strength!r}")
    if suppress != "none":
        if neurons is None and stats is None:
            raise ValueError(f"suppress {suppress!r} needs neurons or stats (whose languages to switch off)")
        named = [] if isinstance(suppress, str) else list(suppress)
        for lang in [force_language, *named]:
            (neurons if neurons is not None else stats).index(lang)
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
    steps: int | None = None,
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
) -> Generation:
    """Generate continuations of `prompts`, optionally under interventions or a forced language.

    With `force_language`, `neurons` default to `forcing_neurons(stats)`, and `suppress` picks whose
    neurons are switched off: "none" (the default), "others" (every other language of `neurons`),
    "source" (the language each prompt is written in, as detected: Gurgurov et al.'s language
    arithmetic) or a list of languages. `phase` says where the forcing acts: "all" positions, or
    "output" (those that predict a generated token; the rest of the prompt is read unsteered), and
    `steps` stops it once that many new tokens are predicted (None: `DEFAULT_STEPS`; 0: force every
    step). `repetition_penalty` and `no_repeat_ngram_size` are HF generate's; when forcing a language
    they default to `DEFAULT_DECODING` (pass 1.0 and 0 for plain greedy). Returns the continuations
    (prompt excluded) and each one's detected language ("und" when the language identifier cannot
    tell). `mode` (default `DEFAULT_FORCE_MODE`), `strength` (default `DEFAULT_STRENGTH[mode]`) and
    `steps` apply to `force_language` only; giving them without it is an error.
    """
    if push is not None and force_language is None:
        force_language = push.target
    prompts = check_generate_args(prompts, neurons=neurons, stats=stats, force_language=force_language, mode=mode,
                                  strength=strength, suppress=suppress, steps=steps, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, phase=phase, push=push)
    mode = DEFAULT_FORCE_MODE if mode is None else mode
    if force_language is not None and neurons is None and (push is None or suppress != "none"):
        neurons = forcing_neurons(stats)
    if force_language is not None:  # unless told otherwise, the decoding the forcing defaults were tuned with
        controls = forcing_decoding(repetition_penalty, no_repeat_ngram_size)
        repetition_penalty, no_repeat_ngram_size = controls["repetition_penalty"], controls["no_repeat_ngram_size"]
    if repetition_penalty is not None and not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be positive (1.0 = none), got {repetition_penalty}")
    if no_repeat_ngram_size is not None and no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size must be 0 (none) or more, got {no_repeat_ngram_size}")
    groups: list[tuple[list[int], Steering | None]] = []
    if force_language is not None:
        for rows, suppressed in _suppression_groups(prompts, neurons, force_language, suppress):
            if push is None:
                specs = list(interventions) + force_language_interventions(
                    neurons, force_language, mode=mode, strength=strength, suppress=suppressed, phase=phase, steps=steps)
                pushes = []
            else:  # the learned offsets replace the mode's push; a suppression still switches others off
                specs = list(interventions) + suppression_interventions(neurons, force_language, suppressed, phase=phase,
                                                                        steps=steps)
                pushes = [push.applied(scale=1.0 if strength is None else float(strength), phase=phase,
                                       steps=forcing_steps(steps))]
            groups.append((rows, Steering(model, specs, neurons, stats, pushes)))  # all validated before any forward
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
    elif candidates is None and push is not None:
        candidates = [push.target, *push.meta.get("sources", [])]
    languages = detect_language(texts, candidates=candidates) if detect else ["und"] * len(texts)
    settings = {
        "max_new_tokens": max_new_tokens, "do_sample": do_sample, "temperature": temperature, "top_p": top_p,
        "repetition_penalty": repetition_penalty, "no_repeat_ngram_size": no_repeat_ngram_size,
        "seed": seed, "use_cache": use_cache, "force_language": force_language,
        "mode": ("learned push" if push is not None else mode) if force_language else None,
        "strength": ((1.0 if push is not None else DEFAULT_STRENGTH[mode]) if strength is None else strength)
        if force_language else None,
        "push": None if push is None else {"target": push.target, "neurons": len(push), **{
            key: push.meta.get(key) for key in ("neurons", "corpus", "training", "val_loss")}},
        "suppress": (suppress if isinstance(suppress, str) else list(suppress)) if force_language else None,
        "phase": phase if force_language else None,
        "steps": forcing_steps(steps) if force_language else None,  # None: every step
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
