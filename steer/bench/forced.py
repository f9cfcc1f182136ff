"""Forced language: steer generation into a target language and check what comes out, honestly.

Prompts are the opening words of held-out paragraphs in each source language, from a fixed split:
sweeps read the first half of each language's held-out paragraphs, reported figures the second.
For every target language, all prompts of the other languages are continued in one batched
`generate` call with `force_language=target` (see `steer.generation.force_language_interventions`).
A continuation is a raw success when the language identifier says it is in the target language,
and a fluent success when it also reads like the model's own text in that language
(`steer.bench.fluency`: its NLL under the unsteered model as a text of its own, its share of
distinct tokens and its longest repeated run, against bars set from unsteered text in the target
language).
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from steer.bench._common import Partial, check_at_least, mean_or_none, neuron_fingerprint, stable_hash, texts_fingerprint
from steer.bench.plots import plot_forced
from steer.bench.registry import Benchmark, Context, Job, register
from steer.bench.report import forced_section
from steer.bench.fluency import Bar, Score, bars, score_continuations
from steer.generation import (
    DEFAULT_FORCE_MODE, DEFAULT_STEPS, DEFAULT_STRENGTH, DEFAULT_SUPPRESS, FORCE_MODES, SUPPRESS, forcing_decoding,
    forcing_steps, generate,
)
from steer.progress import progress_bar


@dataclass
class ForcedBench:
    """`[bench.forced]`: the arguments of `forced_language` (mode None: the default mode)."""

    neurons: str = ""
    n_prompts: int = 3
    prompt_words: int = 8
    mode: str | None = None
    strength: float | None = None
    suppress: str | None = None
    steps: int | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    n_baseline: int = 10
    sweep_modes: list = field(default_factory=lambda: ["set", "add", "diffmean"])
    sweep_strengths: list = field(default_factory=lambda: [1.0, 2.0, 4.0])
    sweep_suppress: list = field(default_factory=lambda: [DEFAULT_SUPPRESS])
    sweep_n_prompts: int = 1
    sweep_targets: list | None = None
    max_new_tokens: int = 24
    batch_size: int = 32

    def check(self, where: str) -> None:
        for mode in [self.mode, *self.sweep_modes]:
            if mode is not None and mode not in FORCE_MODES:
                raise ValueError(f"{where}: unknown mode '{mode}' (known: {', '.join(FORCE_MODES)})")
        for choice in [self.suppress, *self.sweep_suppress]:
            if choice is not None and choice not in SUPPRESS:
                raise ValueError(f"{where}: unknown suppress '{choice}' (known: {', '.join(SUPPRESS)})")
        try:
            forcing_steps(self.steps)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if self.n_prompts < 1 or self.max_new_tokens < 1 or self.n_baseline < 1:
            raise ValueError(f"{where}: n_prompts, n_baseline and max_new_tokens must be at least 1")
        check_at_least(where, prompt_words=(self.prompt_words, 1), sweep_n_prompts=(self.sweep_n_prompts, 1),
                       batch_size=(self.batch_size, 1))


def _is_cjk(ch: str) -> bool:
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))


def prompt_prefix(text: str, n_words: int = 8) -> str:
    """The first `n_words` words of `text`.

    For scripts written without spaces between words (Chinese, Japanese, Khmer, ...), where
    splitting on whitespace gives long runs, about two characters per word for CJK and four
    otherwise.
    """
    if n_words < 1:
        raise ValueError("n_words must be at least 1")
    text = " ".join(text.split())
    pieces = text.split(" ")
    head = pieces[:n_words]
    if head and sum(len(p) for p in head) / len(head) <= 15:
        return " ".join(head)
    letters = [ch for ch in text[: 4 * n_words] if not ch.isspace()]
    per_word = 2 if sum(_is_cjk(ch) for ch in letters) > len(letters) / 2 else 4
    return text[: per_word * n_words].strip()


def make_prompts(eval_texts: dict[str, list[str]], languages: Sequence[str], n_prompts: int, n_words: int) -> dict:
    """The opening words of the first `n_prompts` texts of each language (fewer where it has fewer)."""
    prompts = {}
    for lang in languages:
        chosen = [prompt_prefix(t, n_words) for t in eval_texts[lang][:n_prompts] if t.strip()]
        if not chosen:
            raise ValueError(f"no eval text to make a prompt from for '{lang}'")
        prompts[lang] = chosen
    return prompts


def halves(eval_texts: dict[str, list[str]]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The fixed split of the held-out paragraphs: (tuning half, evaluation half), the first and second half.

    Sweeps and the fluency bars read only the tuning half; reported figures come from the evaluation
    half. Paragraph i is the same text in every language of a parallel corpus, so the halves hold
    the same content across languages.
    """
    tune, evaluate = {}, {}
    for lang, texts in eval_texts.items():
        half = len(texts) // 2
        tune[lang], evaluate[lang] = list(texts[:half]), list(texts[half:])
    return tune, evaluate


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def continue_prompts(model, neurons, stats, prompts: dict[str, list[str]], target: str | None, forcing: dict | None,
                     decoding: dict, *, batch_size: int = 32) -> dict:
    """Continue every source language's prompts but the target's, forced to `target` (`forcing`: `generate`'s
    mode/strength/suppress/phase) or unsteered (`forcing` None); each continuation scored (`score_continuations`)."""
    sources = [s for s, chosen in prompts.items() if s != target for _ in chosen]
    chosen = [p for s, texts in prompts.items() if s != target for p in texts]
    languages = list(prompts)
    forced = dict(force_language=target, **forcing) if forcing else {}
    g = generate(model, chosen, neurons=neurons, stats=stats, candidates=languages,
                 batch_size=min(batch_size, len(chosen)), **forced, **decoding)
    scores = score_continuations(model, g.texts, batch_size=batch_size)
    return {"sources": sources, "prompts": chosen, "texts": g.texts, "detected": g.languages,
            "scores": [asdict(score) for score in scores]}


def own_language_scores(baseline: dict, languages: Sequence[str]) -> dict[str, list[Score]]:
    """Per language, the scores of an unsteered `continue_prompts` unit's continuations detected as their prompt's
    language: the model's own text in it."""
    own: dict[str, list[Score]] = {lang: [] for lang in languages}
    for source, detected, score in zip(baseline["sources"], baseline["detected"], baseline["scores"]):
        if detected == source:
            own[source].append(Score(**score))
    return own


def own_language_bars(baseline: dict, languages: Sequence[str]) -> dict[str, Bar]:
    """Each language's fluency bar from an unsteered `continue_prompts` unit (`own_language_scores`)."""
    return bars(own_language_scores(baseline, languages), [Score(**score) for score in baseline["scores"]])


def judge(unit: dict, target: str, bar: Bar, rows: Iterable[int]) -> tuple[list[bool], list[bool], list[float]]:
    """Per row of a `continue_prompts` unit: (detected as target, and also fluent), and the NLL of the fluent ones."""
    raw, fluent, nll = [], [], []
    for r in rows:
        hit = unit["detected"][r] == target
        passes = hit and bar.passes(Score(**unit["scores"][r]))
        raw.append(hit)
        fluent.append(passes)
        if passes:
            nll.append(unit["scores"][r]["nll"])
    return raw, fluent, nll


def forced_language(
    model,
    neurons,
    stats,
    eval_texts: dict[str, list[str]],
    *,
    languages: Sequence[str] | None = None,
    n_prompts: int = 3,
    prompt_words: int = 8,
    mode: str = DEFAULT_FORCE_MODE,
    strength: float | None = None,
    suppress: str = DEFAULT_SUPPRESS,
    steps: int | None = None,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    n_baseline: int = 10,
    sweep_modes: Sequence[str] = FORCE_MODES,
    sweep_strengths: Sequence[float] = (1.0, 2.0, 4.0),
    sweep_suppress: Sequence[str] = (DEFAULT_SUPPRESS,),
    sweep_n_prompts: int = 1,
    sweep_targets: Sequence[str] | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 32,
    n_examples: int = 1,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Raw and fluent success per source × target at (`mode`, `strength`, `suppress`, `steps`), and a sweep.

    `eval_texts`: every held-out paragraph per language; `halves` splits them. The main matrix
    continues the first `n_prompts` prompts of each source's *evaluation* half; the sweep (every
    mode × strength × suppress) the first `sweep_n_prompts` of the *tuning* half, towards
    `sweep_targets` (default: every language); the fluency bars (`steer.bench.fluency`) come from the
    unsteered model continuing the first `n_baseline` tuning-half prompts of each language. Every
    continuation uses the same decoding (greedy, with `repetition_penalty` / `no_repeat_ngram_size`;
    None: `steer.generation.DEFAULT_DECODING`), and every forced one the same `steps` (None:
    `steer.generation.DEFAULT_STEPS`; 0: every step).
    A continuation succeeds when it is detected as the target; it is a *fluent* success when it
    also passes the target's bar. Set `sweep_modes=()` to skip the sweep.
    """
    languages = [lang for lang in neurons.languages if lang in eval_texts] if languages is None else list(languages)
    for lang in languages:
        neurons.index(lang)
    if len(languages) < 2:
        raise ValueError("forcing a language needs at least two languages")
    if mode not in FORCE_MODES or any(m not in FORCE_MODES for m in sweep_modes):
        raise ValueError(f"modes must be among {', '.join(FORCE_MODES)}")
    for choice in (suppress, *sweep_suppress):
        if choice not in SUPPRESS:
            raise ValueError(f"suppress must be among {', '.join(SUPPRESS)}, got '{choice}'")
    strength = DEFAULT_STRENGTH[mode] if strength is None else float(strength)
    steps_forced = forcing_steps(steps)  # as Intervention.steps (None: every step), for the key and the result
    sweep_targets = languages if sweep_targets is None else [t for t in sweep_targets if t in languages]
    tune, evaluate = halves({lang: eval_texts[lang] for lang in languages})
    short = [lang for lang in languages if len(tune[lang]) < 1]
    if short:
        raise ValueError(f"forcing a language needs at least 2 held-out paragraphs per language (the first half tunes, "
                         f"the second reports); {', '.join(short)} has fewer: give the corpus more eval texts")
    prompts = {"eval": make_prompts(evaluate, languages, n_prompts, prompt_words),
               "tune": make_prompts(tune, languages, max(n_baseline, sweep_n_prompts), prompt_words)}
    decoding = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,  # one for every unit, steered or not
                    **forcing_decoding(repetition_penalty, no_repeat_ngram_size))
    key = stable_hash({
        "neurons": neuron_fingerprint(neurons), "prompts": texts_fingerprint(prompts["eval"]),
        "tune": texts_fingerprint(prompts["tune"]), "decoding": decoding, "stats": stats.meta.get("plan"),
        "steps": steps_forced,
    })
    partial = Partial(checkpoint, key)

    def run_unit(half: str, k: int, target: str | None, forcing: dict | None) -> dict:
        return continue_prompts(model, neurons, stats, {s: prompts[half][s][:k] for s in languages}, target, forcing,
                                decoding, batch_size=batch_size)

    setting = dict(mode=mode, strength=strength, suppress=suppress, steps=steps)
    units = [("baseline", lambda: run_unit("tune", n_baseline, None, None)),
             ("unsteered", lambda: run_unit("eval", n_prompts, None, None))]
    main = f"{mode}/{strength}/{suppress}"
    units += [(f"main/{main}/{t}", lambda t=t: run_unit("eval", n_prompts, t, setting)) for t in languages]
    sweep_settings = [(m, float(s), sup) for m in sweep_modes for s in sweep_strengths for sup in sweep_suppress]
    for m, s, sup in sweep_settings:
        units += [(f"sweep/{m}/{s}/{sup}/{t}", lambda t=t, m=m, s=s, sup=sup: run_unit(
            "tune", sweep_n_prompts, t, dict(mode=m, strength=s, suppress=sup, steps=steps))) for t in sweep_targets]
    bar = progress_bar(progress, len(units), "forced language", unit="call")
    done: dict[str, dict] = {}
    try:
        for name, compute in units:
            bar.set_postfix_str(name)
            done[name] = partial.get(name, compute)
            bar.update(1)
    finally:
        bar.close()

    # ---- the bars: the unsteered model's own text in each language
    own = own_language_scores(done["baseline"], languages)
    bar_of = own_language_bars(done["baseline"], languages)

    def judged(unit: dict, target: str, rows) -> tuple[list[bool], list[bool], list[float]]:
        return judge(unit, target, bar_of[target], rows)

    # ---- the evaluation-half matrix at the chosen setting
    n = len(languages)
    success = [[None] * n for _ in languages]
    fluent_success = [[None] * n for _ in languages]
    unsteered_rate = [[None] * n for _ in languages]
    per_target, examples = {}, []
    all_raw, all_fluent, plain_all, own_all = [], [], [], []
    unsteered = done["unsteered"]
    for j, target in enumerate(languages):
        unit = done[f"main/{main}/{target}"]
        t_raw, t_fluent, t_nll = [], [], []
        for i, source in enumerate(languages):
            if source == target:
                continue
            rows = [r for r, s in enumerate(unit["sources"]) if s == source]
            raw, fluent, nll = judged(unit, target, rows)
            success[i][j], fluent_success[i][j] = _rate(raw), _rate(fluent)
            plain_rows = [r for r, s in enumerate(unsteered["sources"]) if s == source]
            plain = judged(unsteered, target, plain_rows)[1]
            unsteered_rate[i][j] = _rate(plain)
            t_raw, t_fluent, t_nll, plain_all = t_raw + raw, t_fluent + fluent, t_nll + nll, plain_all + plain
            for r in rows[:n_examples]:
                examples.append({"source": source, "target": target, "prompt": unit["prompts"][r],
                                 "continuation": unit["texts"][r], "detected": unit["detected"][r],
                                 "success": raw[rows.index(r)], "fluent": fluent[rows.index(r)]})
        own_nll = [score.nll for score in own[target]]
        # the ceiling: the model's own continuations of evaluation prompts written in the target, judged the same way
        own_text = judged(unsteered, target, [r for r, s in enumerate(unsteered["sources"]) if s == target])[1]
        per_target[target] = {
            "raw": _rate(t_raw), "fluent": _rate(t_fluent), "n": len(t_raw),
            "fluency_nll": mean_or_none(t_nll), "own_language_nll": mean_or_none(own_nll),
            "own_text_fluent": _rate(own_text), "bar": bar_of[target].to_dict(),
        }
        all_raw, all_fluent, own_all = all_raw + t_raw, all_fluent + t_fluent, own_all + own_text
    in_source = [d == s for d, s in zip(unsteered["detected"], unsteered["sources"])]

    # ---- the sweep (tuning half): raw and fluent success per setting
    sweep = None
    if sweep_settings:
        sweep = {"modes": list(sweep_modes), "strengths": [float(s) for s in sweep_strengths],
                 "suppress": list(sweep_suppress), "targets": list(sweep_targets), "n_prompts": sweep_n_prompts,
                 "half": "tune", "settings": []}
        for m, s, sup in sweep_settings:
            raw_all, fluent_all, by_target = [], [], {}
            for t in sweep_targets:
                unit = done[f"sweep/{m}/{s}/{sup}/{t}"]
                raw, fluent, _ = judged(unit, t, range(len(unit["sources"])))
                raw_all, fluent_all = raw_all + raw, fluent_all + fluent
                by_target[t] = _rate(fluent)
            sweep["settings"].append({"mode": m, "strength": s, "suppress": sup, "raw": _rate(raw_all),
                                      "fluent": _rate(fluent_all), "fluent_per_target": by_target})
        # success vs strength per mode at the first suppress choice (the plot)
        first = sweep_suppress[0]
        sweep["success"] = {m: [next(x["fluent"] for x in sweep["settings"] if (x["mode"], x["strength"], x["suppress"])
                                     == (m, float(s), first)) for s in sweep_strengths] for m in sweep_modes}
    return {
        "benchmark": "forced",
        "method": neurons.method,
        "languages": languages,
        "mode": mode,
        "strength": strength,
        "suppress": suppress,
        "steps": steps_forced,
        "decoding": decoding,
        "split": {"tune": "first half of each language's held-out paragraphs (sweeps, fluency bars)",
                  "eval": "second half (every reported figure)",
                  "sizes": {lang: [len(tune[lang]), len(evaluate[lang])] for lang in languages}},
        "prompts": prompts["eval"],
        "success": success,
        "fluent_success": fluent_success,
        "unsteered_success": unsteered_rate,
        "success_rate": _rate(all_raw),
        "fluent_success_rate": _rate(all_fluent),
        "unsteered_fluent_rate": _rate(plain_all),
        "own_text_fluent_rate": _rate(own_all),
        "per_target": per_target,
        "bars": {lang: b.to_dict() for lang, b in bar_of.items()},
        "unsteered": {
            "in_source_language": _rate(in_source),
            "examples": [{"source": s, "prompt": p, "continuation": t, "detected": d} for s, p, t, d in
                         zip(unsteered["sources"], unsteered["prompts"], unsteered["texts"], unsteered["detected"])][
                         :: max(1, n_prompts)],
        },
        "examples": examples,
        "sweep": sweep,
    }


def _run(ctx: Context, spec: ForcedBench, job: Job) -> dict:
    result = forced_language(
        ctx.model, ctx.neurons[spec.neurons], ctx.stats, {lang: list(ctx.corpus.eval[lang]) for lang in ctx.corpus.languages},
        n_prompts=spec.n_prompts, prompt_words=spec.prompt_words, mode=spec.mode or DEFAULT_FORCE_MODE,
        strength=spec.strength, suppress=spec.suppress or DEFAULT_SUPPRESS, steps=spec.steps,
        repetition_penalty=spec.repetition_penalty,
        no_repeat_ngram_size=spec.no_repeat_ngram_size, n_baseline=spec.n_baseline, sweep_modes=spec.sweep_modes,
        sweep_strengths=spec.sweep_strengths, sweep_suppress=spec.sweep_suppress, sweep_n_prompts=spec.sweep_n_prompts,
        sweep_targets=spec.sweep_targets, max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size,
        checkpoint=job.checkpoint, progress=ctx.progress,
    )
    plot_forced(result, job.figures[0])
    result["neurons"] = spec.neurons
    return result


def _key(ctx: Context) -> dict:
    # the steering strengths come from the stats; a spec without mode/strength uses the defaults
    return {"stats": ctx.keys["stats"], "defaults": [DEFAULT_FORCE_MODE, DEFAULT_STRENGTH, DEFAULT_SUPPRESS, DEFAULT_STEPS]}


register(Benchmark(
    kind="forced", spec=ForcedBench, run=_run, figures=("{name}.png",), key=_key,
    section=lambda result, figures: forced_section(result, figures[0]),
))
