"""Forced language: steer generation into a target language and check what comes out.

Prompts are the opening words of held-out eval paragraphs in each source language. For every
target language, all prompts of the other languages are continued in one batched `generate`
call with `force_language=target` (deactivate the other languages' neurons, push the target's
up: see `steer.generation.force_language_interventions`). A continuation succeeds when the
language identifier says it is in the target language. Fluency proxy: the log-PPL of the
continuation (after its prompt) under the *unsteered* model; lower is more fluent.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from steer.bench._common import Partial, mean_or_none, neuron_fingerprint, stable_hash, texts_fingerprint
from steer.bench.plots import plot_forced
from steer.bench.registry import Benchmark, Context, Job, register
from steer.bench.report import forced_section
from steer.generation import DEFAULT_FORCE_MODE, DEFAULT_STRENGTH, FORCE_MODES, generate
from steer.progress import progress_bar
from steer.scoring import token_nll


@dataclass
class ForcedBench:
    """`[bench.forced]`: the arguments of `forced_language` (mode None: the default mode)."""

    neurons: str = ""
    n_prompts: int = 3
    prompt_words: int = 8
    mode: str | None = None
    strength: float | None = None
    sweep_modes: list = field(default_factory=lambda: ["set", "add", "diffmean"])
    sweep_strengths: list = field(default_factory=lambda: [1.0, 2.0, 4.0])
    sweep_n_prompts: int = 1
    sweep_targets: list | None = None
    max_new_tokens: int = 24
    batch_size: int = 32
    fluency: bool = True

    def check(self, where: str) -> None:
        for mode in [self.mode, *self.sweep_modes]:
            if mode is not None and mode not in FORCE_MODES:
                raise ValueError(f"{where}: unknown mode '{mode}' (known: {', '.join(FORCE_MODES)})")
        if self.n_prompts < 1 or self.max_new_tokens < 1:
            raise ValueError(f"{where}: n_prompts and max_new_tokens must be at least 1")


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
    prompts = {}
    for lang in languages:
        chosen = [prompt_prefix(t, n_words) for t in eval_texts[lang][:n_prompts] if t.strip()]
        if not chosen:
            raise ValueError(f"no eval text to make a prompt from for '{lang}'")
        prompts[lang] = chosen
    return prompts


def _joined(prompt: str, continuation: str) -> tuple[str, str]:
    return (prompt, (" " + continuation) if " " in prompt and continuation else continuation)


def _fluency(model, prompts, texts, batch_size: int) -> list[float | None]:
    """Per continuation: mean NLL of its tokens given its prompt, under the current (unsteered) model."""
    nlls = token_nll(model, [_joined(p, t) for p, t in zip(prompts, texts)], batch_size=batch_size, max_length=512)
    return [[float(n.sum()), int(n.numel())] for n in nlls]


def _pooled(pairs) -> float | None:
    tokens = sum(n for _, n in pairs)
    return sum(s for s, _ in pairs) / tokens if tokens else None


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
    sweep_modes: Sequence[str] = FORCE_MODES,
    sweep_strengths: Sequence[float] = (1.0, 2.0, 4.0),
    sweep_n_prompts: int = 1,
    sweep_targets: Sequence[str] | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 32,
    fluency: bool = True,
    n_examples: int = 1,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Success (detected == target) per source × target at (`mode`, `strength`), and a sweep.

    The sweep measures the overall success rate per mode and strength on the first
    `sweep_n_prompts` prompts of each source, towards `sweep_targets` (default: every language).
    Set `sweep_modes=()` to skip it.
    """
    languages = [lang for lang in neurons.languages if lang in eval_texts] if languages is None else list(languages)
    for lang in languages:
        neurons.index(lang)
    if len(languages) < 2:
        raise ValueError("forcing a language needs at least two languages")
    if mode not in FORCE_MODES or any(m not in FORCE_MODES for m in sweep_modes):
        raise ValueError(f"modes must be among {', '.join(FORCE_MODES)}")
    strength = DEFAULT_STRENGTH[mode] if strength is None else float(strength)
    sweep_targets = languages if sweep_targets is None else [t for t in sweep_targets if t in languages]
    n_prompt_max = max(n_prompts, sweep_n_prompts if sweep_modes else 0)
    prompts = make_prompts(eval_texts, languages, n_prompt_max, prompt_words)
    key = stable_hash({
        "neurons": neuron_fingerprint(neurons), "prompts": texts_fingerprint(prompts), "max_new_tokens": max_new_tokens,
        "stats": stats.meta.get("plan"), "fluency": fluency,
    })
    partial = Partial(checkpoint, key)

    def unit_prompts(target: str, k: int) -> tuple[list[str], list[str]]:
        sources, chosen = [], []
        for source in languages:
            if source != target:
                chosen += prompts[source][:k]
                sources += [source] * len(prompts[source][:k])
        return sources, chosen

    def run_unit(target: str, unit_mode: str | None, unit_strength: float | None, k: int) -> dict:
        sources, chosen = unit_prompts(target, k) if unit_mode else ([s for s in languages for _ in prompts[s][:k]],
                                                                     [p for s in languages for p in prompts[s][:k]])
        g = generate(
            model, chosen, neurons=neurons, stats=stats, force_language=target if unit_mode else None,
            mode=unit_mode or DEFAULT_FORCE_MODE, strength=unit_strength, max_new_tokens=max_new_tokens,
            batch_size=min(batch_size, len(chosen)), candidates=languages,
        )
        return {
            "sources": sources, "prompts": chosen, "texts": g.texts, "detected": g.languages,
            "fluency": _fluency(model, chosen, g.texts, batch_size) if fluency else None,
        }

    units = [("unsteered", None)] + [(f"main/{t}", t) for t in languages]
    for m in sweep_modes:
        for s in sweep_strengths:
            if m == mode and float(s) == strength and sweep_n_prompts <= n_prompts:
                continue  # read from the main matrix
            units += [(f"sweep/{m}/{float(s)}/{t}", t) for t in sweep_targets]
    bar = progress_bar(progress, len(units), "forced language", unit="call")
    done: dict[str, dict] = {}
    try:
        for name, target in units:
            bar.set_postfix_str(name)
            if name == "unsteered":
                done[name] = partial.get(name, lambda: run_unit("", None, None, n_prompts))
            elif name.startswith("main/"):
                done[name] = partial.get(name, lambda t=target: run_unit(t, mode, strength, n_prompts))
            else:
                _, m, s, t = name.split("/")
                done[name] = partial.get(name, lambda t=t, m=m, s=s: run_unit(t, m, float(s), sweep_n_prompts))
            bar.update(1)
    finally:
        bar.close()

    # ---- the success matrix at the default mode and strength
    success = [[None] * len(languages) for _ in languages]
    fluency_cells = [[None] * len(languages) for _ in languages]
    hits = total = 0
    examples = []
    for j, target in enumerate(languages):
        unit = done[f"main/{target}"]
        for i, source in enumerate(languages):
            if source == target:
                continue
            rows = [r for r, s in enumerate(unit["sources"]) if s == source]
            ok = [unit["detected"][r] == target for r in rows]
            success[i][j] = sum(ok) / len(ok)
            hits, total = hits + sum(ok), total + len(ok)
            if unit["fluency"] is not None:
                fluency_cells[i][j] = _pooled([unit["fluency"][r] for r in rows])
            for r in rows[:n_examples]:
                examples.append({"source": source, "target": target, "prompt": unit["prompts"][r],
                                 "continuation": unit["texts"][r], "detected": unit["detected"][r],
                                 "success": unit["detected"][r] == target})
    unsteered = done["unsteered"]
    unsteered_in_source = [d == s for d, s in zip(unsteered["detected"], unsteered["sources"])]
    per_target = {t: mean_or_none([success[i][j] for i in range(len(languages))]) for j, t in enumerate(languages)}
    per_source = {s: mean_or_none(success[i]) for i, s in enumerate(languages)}
    steered_fluency = _pooled([pair for t in languages for pair in (done[f"main/{t}"]["fluency"] or [])])

    # ---- the sweep: overall success per mode and strength
    sweep = None
    if sweep_modes:
        sweep = {"modes": list(sweep_modes), "strengths": [float(s) for s in sweep_strengths],
                 "targets": list(sweep_targets), "n_prompts": sweep_n_prompts, "success": {}, "fluency_log_ppl": {},
                 "n": {}}
        for m in sweep_modes:
            rates, flu, counts = [], [], []
            for s in sweep_strengths:
                ok, pairs = [], []
                for t in sweep_targets:
                    name = f"sweep/{m}/{float(s)}/{t}"
                    if name in done:
                        unit = done[name]
                        rows = range(len(unit["sources"]))
                    else:  # the default setting: the first sweep_n_prompts prompts of the main units
                        unit = done[f"main/{t}"]
                        rows = [r for r, src in enumerate(unit["sources"])
                                if unit["prompts"][r] in prompts[src][:sweep_n_prompts]]
                    ok += [unit["detected"][r] == t for r in rows]
                    if unit["fluency"] is not None:
                        pairs += [unit["fluency"][r] for r in rows]
                rates.append(sum(ok) / len(ok) if ok else None)
                flu.append(_pooled(pairs) if pairs else None)
                counts.append(len(ok))
            sweep["success"][m], sweep["fluency_log_ppl"][m], sweep["n"][m] = rates, flu, counts
    return {
        "benchmark": "forced",
        "method": neurons.method,
        "languages": languages,
        "mode": mode,
        "strength": strength,
        "max_new_tokens": max_new_tokens,
        "prompts": {lang: prompts[lang][:n_prompts] for lang in languages},
        "success": success,
        "success_rate": hits / total if total else None,
        "per_target": per_target,
        "per_source": per_source,
        "fluency_log_ppl": fluency_cells,
        "steered_fluency_log_ppl": steered_fluency,
        "unsteered": {
            "in_source_language": sum(unsteered_in_source) / len(unsteered_in_source),
            "fluency_log_ppl": _pooled(unsteered["fluency"]) if unsteered["fluency"] is not None else None,
            "examples": [{"source": s, "prompt": p, "continuation": t, "detected": d} for s, p, t, d in
                         zip(unsteered["sources"], unsteered["prompts"], unsteered["texts"], unsteered["detected"])][
                         :: max(1, n_prompts)],
        },
        "examples": examples,
        "sweep": sweep,
    }


def _run(ctx: Context, spec: ForcedBench, job: Job) -> dict:
    result = forced_language(
        ctx.model, ctx.neurons[spec.neurons], ctx.stats, ctx.eval_texts(max(spec.n_prompts, spec.sweep_n_prompts)),
        n_prompts=spec.n_prompts, prompt_words=spec.prompt_words, mode=spec.mode or DEFAULT_FORCE_MODE,
        strength=spec.strength, sweep_modes=spec.sweep_modes, sweep_strengths=spec.sweep_strengths,
        sweep_n_prompts=spec.sweep_n_prompts, sweep_targets=spec.sweep_targets, max_new_tokens=spec.max_new_tokens,
        batch_size=spec.batch_size, fluency=spec.fluency, checkpoint=job.checkpoint, progress=ctx.progress,
    )
    plot_forced(result, job.figures[0])
    result["neurons"] = spec.neurons
    return result


def _key(ctx: Context) -> dict:
    # the steering strengths come from the stats; a spec without mode/strength uses the defaults
    return {"stats": ctx.keys["stats"], "defaults": [DEFAULT_FORCE_MODE, DEFAULT_STRENGTH]}


register(Benchmark(
    kind="forced", spec=ForcedBench, run=_run, figures=("{name}.png",), key=_key,
    section=lambda result, figures: forced_section(result, figures[0]),
))
