"""The forcing policy: how `steer.generate(force_language=...)` forces an output language.

Which neurons (`forcing_neurons`: the specificity baseline from the stats), which push (`FORCE_MODES`, each
with its `DEFAULT_STRENGTH`, or a learned `steer.push.LanguagePush`), whose neurons to switch off
(`SUPPRESS`), for how many new tokens (`DEFAULT_STEPS`), and with which decoding (`DEFAULT_DECODING`).
`forcing_steerings` turns a request into the steerings `steer.generation.generate` runs; generation
itself knows nothing of languages.

`steps` has one convention everywhere (`generate`, `Intervention`, `LanguagePush.applied`, the forced
benchmark): a whole number N ≥ 1 stops the push once the first N new tokens are predicted, and None pushes
at every step. Text interfaces (the command line, a bench TOML, the sweep script) write None as "all".
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from typing import Sequence

from steer._io import cache_root
from steer.langid import detect_language
from steer.languages import normalise_code
from steer.neurons import NeuronSet
from steer.steering import Intervention, Steering, check_steps

# Generate's names for the pushes: "set" (to strength × the target's mean), and Intervention's add modes,
# "additive" (strength × the target's mean), "diffmean" (strength × (target − others) means) and "std".
FORCE_MODES = ("set", "additive", "diffmean", "std")
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
# The neurons a learned push is fitted on when given stats but no neurons: the specificity baseline with 1,000
# per language, the highest fluent success on the tuning half of the language-neuron sets measured there
# (specificity with 500, 1,000 and 4,000 per language, LAPE; benchmarks/push_compare.py --tune-neurons,
# "neurons_tuning" in docs/results/push-compare.json). The rule, take the highest, was fixed before the 1,000 and
# LAPE cells were read, but after the evaluation-half figures of 500 and 4,000 had been (README says so).
PUSH_NEURONS = {"method": "specificity", "n_per_language": 1000}
# diffmean: tuned as above; set: the better of 1 and 1.5 on 1000 specificity neurons per language (old
# measure); additive and std: the strengths of the first sweeps (README), not retuned for them.
DEFAULT_STRENGTH = {"set": 1.5, "additive": 4.0, "diffmean": 3.0, "std": 1.0}
# Forcing stops once the first DEFAULT_STEPS new tokens are predicted: once switched, the model goes on in
# the target by itself, more fluently than under a push at every step. Chosen under the old measure (README:
# specificity-1000 diffmean 2, tuning half: 4 steps 0.28 fluent, every step 0.23); not re-chosen under the new.
DEFAULT_STEPS = 4
# A learned push (`steer.push.LanguagePush`; trained with its offsets on every position) forces every new token
# unless told otherwise: chosen on the tuning half before the evaluation half was read (benchmarks/push_compare.py
# --push-steps 4,all; the cells are in docs/results/push-compare.json, "push_steps_tuning").
DEFAULT_PUSH_STEPS = None
# `steps` when a caller gives none: DEFAULT_STEPS for a rule's push, DEFAULT_PUSH_STEPS for a learned one
STEPS_DEFAULT = "default"
SUPPRESS = ("others", "source", "none")
DEFAULT_SUPPRESS = "none"
# The decoding the forcing defaults were tuned with (and that steer.generate uses when forcing a
# language unless told otherwise): greedy with a light repetition penalty and no repeated 3-grams,
# so that a steered continuation is not judged against loops (benchmarks/forced_sweep.py).
DEFAULT_DECODING = {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3}
# generate(push=LEARNED): a LanguagePush fitted on the target's forcing neurons (`learned_push`), cached
LEARNED = "learned"
# What force_language pushes with when given neither a push nor a mode: the learned push on PUSH_NEURONS, fitted
# once per (model, the target's neurons, corpus) and cached. Measured on the evaluation half of the embedded corpus
# (ten languages, 180 continuations; README "A learned language push"; docs/results/push-compare.json): fluent
# success 0.84 [0.78, 0.89] against 0.48 [0.40, 0.55] for the diffmean rule (a paired difference of +0.36
# [+0.28, +0.45]). A mode chooses the rule instead (nothing to fit): generate(..., mode="diffmean"), steer
# generate --mode diffmean.
DEFAULT_PUSH = LEARNED


def forcing_push(push, mode: str | None):
    """The push a forcing request uses: `push` when given, none (`mode`'s rule) when a mode is given, else
    `DEFAULT_PUSH`."""
    return push if push is not None or mode is not None else DEFAULT_PUSH


def forcing_neurons(stats, *, learned: bool = False) -> NeuronSet:
    """The neuron set forcing uses when given stats but no neurons: `PUSH_NEURONS` for a learned push (`learned`),
    `FORCING_NEURONS` for a rule's push and for the languages switched off."""
    from steer.identification import identify

    return identify(stats, **(PUSH_NEURONS if learned else FORCING_NEURONS))


def learned_push(model, target: str, neurons: NeuronSet, *, corpus=None, training=None, progress: bool = True):
    """The learned push for `target` on its neurons of `neurons` (`generate(..., push="learned")`): a
    `LanguagePush` fitted by `steer.fit_push` on `corpus` (a parallel corpus; default the embedded one) the
    first time, then read back from steer's cache (`$STEER_HOME/pushes`): once per (model, the target's
    neurons, corpus, training), like the converted model."""
    from steer.corpus import load_corpus
    from steer.models import model_info
    from steer.push import LanguagePush
    from steer.push_training import PushTraining, fit_push

    training = training or PushTraining()
    training.check()
    target = normalise_code(target, what="target")
    units = {int(layer): index.tolist() for layer, index in neurons.select([target]).layer_indices().items()}
    if not units:
        raise ValueError(f"the neuron set has no neuron for '{target}': nothing to push")
    info = model_info(model)
    if info.experts is not None:
        raise ValueError("a learned push (force_language's default) cannot be fitted on a mixture-of-experts model "
                         "yet; force with a rule instead: mode='diffmean' (--mode diffmean)")
    corpus = load_corpus(progress=progress) if corpus is None else corpus
    check_push_corpus(corpus, target)
    key = hashlib.sha256(json.dumps({"model": info.weights_hash, "target": target, "units": units,
                                     "corpus": corpus.fingerprint(), "training": asdict(training)},
                                    sort_keys=True).encode()).hexdigest()[:16]
    where = cache_root() / "pushes" / f"{info.name.replace('/', '--')}-{target}-{key}"
    if (where / "push.safetensors").is_file():
        return LanguagePush.load(where, model=model)
    push = fit_push(model, corpus, target, neurons=neurons, training=training, progress=progress)
    push.save(where)
    return push


def check_push_corpus(corpus, target: str) -> None:
    """A learned push for `target` trains on parallel text in it: refuse a corpus without it."""
    if target not in corpus.languages:
        raise ValueError(f"a learned push for '{target}' trains on parallel text in it; the corpus has only "
                         f"{', '.join(corpus.languages)}: pass a corpus with '{target}' (corpus=, --corpus), or "
                         f"force with a rule, nothing to fit (mode='diffmean', --mode diffmean)")


def default_steps(steps, push=None) -> int | None:
    """`steps` as given, or, for `STEPS_DEFAULT`, the default of the push: `DEFAULT_PUSH_STEPS` for a learned
    push (a `LanguagePush` or "learned"), else `DEFAULT_STEPS`."""
    if isinstance(steps, str) and steps == STEPS_DEFAULT:
        return DEFAULT_PUSH_STEPS if push is not None else DEFAULT_STEPS
    return steps


def parse_steps(text: str | int | None) -> int | None:
    """`steps` from a text interface: "all" (or None) is every step, else a whole number of at least 1."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "all"):
        return None
    try:
        steps = int(text) if not isinstance(text, bool) else None
    except (TypeError, ValueError):
        steps = None
    if steps is None or str(text).strip() != str(steps):
        raise ValueError(f"steps must be a whole number of new tokens to force, or 'all', got {text!r}")
    return check_steps(steps)


def check_mode(mode: str | None) -> str:
    """The mode (None: `DEFAULT_FORCE_MODE`); "add" was generate's old word for "additive"."""
    if mode is None:
        return DEFAULT_FORCE_MODE
    if mode == "add":
        raise ValueError("force mode 'add' is now 'additive' (Intervention's word for it: the target's mean × strength)")
    if mode not in FORCE_MODES:
        raise ValueError(f"unknown force mode '{mode}'; use one of {', '.join(FORCE_MODES)}")
    return mode


def _check_strength(strength, note: str = "") -> None:
    if strength is not None and (isinstance(strength, bool) or not isinstance(strength, (int, float))
                                 or not math.isfinite(strength)):
        raise ValueError(f"strength must be a finite number{note}, got {strength!r}")


def check_forcing(*, neurons: NeuronSet | None, stats, force_language: str, mode: str | None, strength: float | None,
                  suppress, steps: int | None, push=None) -> None:
    """Everything a forcing request can be checked for before any model work (the command line calls this
    once it has read the files, before it loads one)."""
    check_steps(steps)
    if isinstance(push, str):
        if push != LEARNED:
            raise ValueError(f"push must be a LanguagePush or \"{LEARNED}\" (fitted once and cached), got {push!r}")
        if mode is not None:
            raise ValueError("mode does not apply with a learned push (its offsets are the push); leave it out")
        _check_strength(strength, " (it scales the push)")
        if neurons is None and stats is None:
            raise ValueError("force_language needs stats (steer.collect; --stats) or neurons (--neurons): the "
                             "target's neurons its learned push is fitted on")
        (neurons if neurons is not None else stats).index(force_language)
    elif push is not None:
        if force_language != push.target:
            raise ValueError(f"the push was fitted for '{push.target}', not '{force_language}'; fit one for "
                             f"'{force_language}' or leave force_language out")
        if mode is not None:
            raise ValueError("mode does not apply with a learned push (its offsets are the push); leave it out")
        _check_strength(strength, " (it scales the push)")
        if suppress != "none" and neurons is None and stats is None:
            raise ValueError(f"suppress {suppress!r} needs neurons or stats (whose languages to switch off)")
    else:
        if stats is None:
            raise ValueError("force_language needs stats (steer.collect; --stats) and, optionally, neurons "
                             "(default: steer.forcing.forcing_neurons(stats))")
        mode = check_mode(mode)
        _check_strength(strength)
    if isinstance(suppress, str) and suppress not in SUPPRESS:
        raise ValueError(f"unknown suppress '{suppress}'; use one of {', '.join(SUPPRESS)} or a list of languages")
    if suppress != "none" or push is None:
        named = [] if isinstance(suppress, str) else list(suppress)  # the languages to switch off, when listed
        for lang in [force_language, *named]:  # the default neurons come from the stats: they have its languages
            (neurons if neurons is not None else stats).index(lang)
    if push is None:
        stats.index(force_language)
        if mode == "std":
            stats.stds()  # stats without sq_sums are refused here, not at the first forward


def suppression_interventions(neurons: NeuronSet | None, target: str, suppress: Sequence[str] | None, *,
                              phase: str = "all", steps: int | None = DEFAULT_STEPS) -> list[Intervention]:
    """Deactivate the neurons of `suppress` (None: every other language of `neurons`; []: none), except those
    the target shares."""
    if neurons is not None:
        neurons.index(target)
    others = [lang for lang in (neurons.languages if suppress is None else suppress) if lang != target]
    if not others:
        return []
    return [Intervention("suppress", languages=others, exclude_languages=[target], phase=phase, steps=steps,
                         allow_empty=True)]  # all of them shared with the target: nothing to switch off


def force_language_interventions(
    neurons: NeuronSet, target: str, *, mode: str = DEFAULT_FORCE_MODE, strength: float | None = None,
    suppress: Sequence[str] | None = None, phase: str = "all", steps: int | None = DEFAULT_STEPS,
) -> list[Intervention]:
    """Deactivate the other languages' neurons (or only those of `suppress`; [] for none) and push the target's up.

    Neurons shared with the target are left on. `mode`: one of `FORCE_MODES` ("std": strength standard
    deviations of each neuron on the target, towards the target; stats with sq_sums). `phase`: "all"
    positions, or "output": only those that predict a generated token (the prompt's last position and every
    generated one). `steps`: stop once the first `steps` new tokens are predicted (None: every step).
    """
    mode = check_mode(mode)
    check_steps(steps)
    specs = suppression_interventions(neurons, target, suppress, phase=phase, steps=steps)
    strength = DEFAULT_STRENGTH[mode] if strength is None else float(strength)
    if mode == "set":
        specs.append(Intervention("set", languages=[target], target=target, alpha=strength, phase=phase, steps=steps))
    else:
        specs.append(Intervention("add", languages=[target], target=target, alpha=strength, mode=mode, phase=phase,
                                  steps=steps))
    return specs


def forcing_decoding(repetition_penalty: float | None, no_repeat_ngram_size: int | None) -> dict:
    """The repetition controls for a forced run: each one not given is `DEFAULT_DECODING`'s."""
    given = {"repetition_penalty": repetition_penalty, "no_repeat_ngram_size": no_repeat_ngram_size}
    return {key: DEFAULT_DECODING[key] if value is None else value for key, value in given.items()}


def suppression_groups(prompts, neurons: NeuronSet | None, target: str,
                       suppress) -> list[tuple[list[int], list[str] | None]]:
    """(prompt indices, languages to switch off) groups: one for "others"/"none"/a list, one per source for "source"."""
    everyone = list(range(len(prompts)))
    if isinstance(suppress, str):
        if suppress == "others":
            return [(everyone, None)]
        if suppress == "none":
            return [(everyone, [])]
        sources = detect_language(prompts, candidates=neurons.languages)  # the prompt's language, per prompt
        groups: dict[str, list[int]] = {}
        for i, source in enumerate(sources):
            groups.setdefault(source, []).append(i)
        return [(rows, [] if source in ("und", target) else [source]) for source, rows in groups.items()]
    return [(everyone, list(suppress))]  # its languages were checked by check_forcing


def forcing_steerings(model, prompts: list[str], target: str, *, interventions: Sequence[Intervention] = (),
                      neurons: NeuronSet | None, stats, mode: str | None, strength: float | None, suppress,
                      phase: str, steps: int | None, push=None) -> list[tuple[list[int], Steering]]:
    """The steerings that force `target`: (prompt indices, steering) per suppression group, each validated
    before any forward. A learned `push` replaces the mode's push; a suppression still switches others off."""
    mode = check_mode(mode) if push is None else None
    groups = []
    for rows, suppressed in suppression_groups(prompts, neurons, target, suppress):
        if push is None:
            specs = list(interventions) + force_language_interventions(
                neurons, target, mode=mode, strength=strength, suppress=suppressed, phase=phase, steps=steps)
            pushes = []
        else:
            specs = list(interventions) + suppression_interventions(neurons, target, suppressed, phase=phase,
                                                                    steps=steps)
            pushes = [push.applied(scale=1.0 if strength is None else float(strength), phase=phase, steps=steps)]
        groups.append((rows, Steering(model, specs, neurons, stats, pushes)))
    return groups


def forcing_settings(*, mode: str | None, strength: float | None, suppress, phase: str, steps: int | None,
                     push=None) -> dict:
    """What a forced run records of its policy (`Generation.settings`)."""
    return {
        "mode": "learned push" if push is not None else check_mode(mode),
        "strength": (1.0 if push is not None else DEFAULT_STRENGTH[check_mode(mode)]) if strength is None else strength,
        "push": None if push is None else {"target": push.target, "site": push.site, "units": len(push), **{
            key: push.meta.get(key) for key in ("neurons", "corpus", "training", "val_loss")}},
        "suppress": suppress if isinstance(suppress, str) else list(suppress),
        "phase": phase,
        "steps": steps,  # None: every step
    }
