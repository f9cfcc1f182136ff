"""The end-to-end demo: corpus → stats → neurons (zhang2025, lape) → ΔPPL matrix with random
control → forced-language generation → low-resource transfer → layer distribution → report.

The demo is one benchmark config, `demo.toml`, shipped beside this module. `run_demo(out)` runs
it on the embedded Gemma 3 270M and the LibreOffice-help corpus (10 languages), sized for a
2-core CPU (about a quarter of an hour); it writes `out/summary.json` (the headline numbers and
the seconds of each stage) and `out/report.md` with its figures, and resumes where it stopped when
run again on the same `out`. `demo_config()` is that config as a `BenchConfig`, with `quick`
sizes (`QUICK`) or other sizes (`KNOBS`) applied.
"""

from __future__ import annotations

import copy
import time
import warnings
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, Callable, Sequence

from steer._io import prepare_out, write_json_atomic
from steer.bench.report import forcing_steps_phrase, write_report
from steer.bench.runner import execute, preamble, result_meta, sections, torch_threads
from steer.bench.schema import BenchConfig, load_config, recheck
from steer.corpus import Corpus, load_corpus
from steer.languages import LOW_RESOURCE
from steer.models import model_info
from steer.provenance import provenance

QUICK_LANGUAGES = ("en", "de", "eu")


def _spec(config: BenchConfig, name: str):
    return next(entry.spec for entry in config.benchmarks if entry.name == name)


def _max_length(config: BenchConfig, value: int) -> None:
    config.stats.max_length = value
    for entry in config.benchmarks:
        if hasattr(entry.spec, "max_length"):
            entry.spec.max_length = value


def _top_rate(config: BenchConfig, value: float) -> None:
    for spec in config.neurons.values():
        if "n_per_language" not in spec.params:  # a set of a fixed size (the forcing one) keeps it
            spec.params["top_rate"] = value


# The demo's sizes, by name: where each one goes in demo.toml's config.
KNOBS: dict[str, Callable[[BenchConfig, Any], None]] = {
    "max_tokens_per_language": lambda c, v: setattr(c.stats, "max_tokens_per_language", v),
    "n_eval": lambda c, v: setattr(c.corpus, "n_eval", v),
    "max_length": _max_length,
    "n_random": lambda c, v: setattr(_spec(c, "delta_ppl"), "n_random", v),
    "n_prompts": lambda c, v: setattr(_spec(c, "forced"), "n_prompts", v),
    "max_new_tokens": lambda c, v: setattr(_spec(c, "forced"), "max_new_tokens", v),
    "sweep_targets": lambda c, v: setattr(_spec(c, "forced"), "sweep_targets", v),
    "sweep_modes": lambda c, v: setattr(_spec(c, "forced"), "sweep_modes", v),
    "sweep_strengths": lambda c, v: setattr(_spec(c, "forced"), "sweep_strengths", v),
    "transfer_texts": lambda c, v: setattr(_spec(c, "transfer"), "n_texts", v),
    "n_baseline": lambda c, v: setattr(_spec(c, "forced"), "n_baseline", v),
    "forced_random": lambda c, v: setattr(_spec(c, "forced"), "n_random", v),
    "prompt_words": lambda c, v: setattr(_spec(c, "forced"), "prompt_words", v),
    "top_rate": _top_rate,
}

# `quick`: a tiny run for tests and smoke checks (seconds on a tiny model, minutes on the embedded one).
QUICK = dict(max_tokens_per_language=300, n_eval=2, max_length=32, n_random=1, n_prompts=1, max_new_tokens=4,
             sweep_targets=None, sweep_modes=[], sweep_strengths=[2.0], transfer_texts=2, top_rate=0.05,
             n_baseline=2, forced_random=1, prompt_words=4)  # short texts: a 4-word prompt leaves a continuation


def demo_config(
    *,
    quick: bool = False,
    model: str | None = None,
    corpus_source: str | None = None,
    languages: Sequence[str] | None = None,
    **knobs,
) -> BenchConfig:
    """The demo (`demo.toml`) as a BenchConfig; `quick` applies `QUICK`, then `knobs` (see `KNOBS`;
    None leaves a size alone). `model`, `corpus_source`, `languages`: instead of the config's."""
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown demo knob '{unknown[0]}' (known: {', '.join(sorted(KNOBS))})")
    with as_file(files("steer.bench").joinpath("demo.toml")) as path:
        config = load_config(path)
    config.base_dir = Path.cwd()  # relative paths given to the demo are the caller's
    sizes = {**(QUICK if quick else {}), **{k: v for k, v in knobs.items() if v is not None}}
    for knob, value in sizes.items():
        KNOBS[knob](config, copy.deepcopy(value))
    if model:
        config.model.name = model
    if corpus_source:
        config.corpus.source = corpus_source
    if languages:
        config.corpus.languages = list(languages)
    return recheck(config)  # the knobs and languages pass the TOML's own checks: types, ranges, codes


def summarize(results: dict[str, dict], ctx, seconds: dict[str, float]) -> dict:
    """The headline numbers of a demo run (the keys `steer demo` promises in summary.json)."""
    delta = results["delta_ppl"]["variants"]["specific+related"]["summary"]
    diag = delta["diagonal_mean_delta_logppl"]
    off = delta["offdiagonal_mean_delta_logppl"]
    rand = delta.get("random_control_mean_delta_logppl")
    forced = results["forced"]
    zhang = ctx.neurons["zhang2025"]
    summary = {
        "languages": list(ctx.corpus.languages),
        "model": model_info(ctx.model).name,
        "diagonal_mean_delta_logppl": diag,
        "offdiagonal_mean_delta_logppl": off,
        "random_control_mean_delta_logppl": rand,
        "random_control_cells": results["delta_ppl"]["variants"]["specific+related"]["random"]["columns"]
        if results["delta_ppl"]["variants"]["specific+related"].get("random") else None,
        "diagonal_exceeds_offdiagonal": None if diag is None or off is None else diag > off,
        "diagonal_exceeds_random_control": None if diag is None or rand is None else diag > rand,
        "diagonal_is_row_max_fraction": delta.get("diagonal_is_row_max"),
        "diagonal_is_column_max_fraction": delta.get("diagonal_is_column_max"),
        "forced_language_success": forced["fluent_success"],
        "forced_language_success_ci": forced["fluent_success_ci"],
        "forced_language_success_raw": forced["raw_success"],
        "forced_language_success_raw_ci": forced["raw_success_ci"],
        "forced_language_random_control": (forced["random"] or {}).get("fluent_success"),
        "forced_language_random_control_ci": (forced["random"] or {}).get("fluent_success_ci"),
        "forced_language_random_control_seeds": forced["split"]["n_random"],
        "forced_language_unsteered_rate": forced["unsteered"]["fluent_success"],
        "forced_language_own_text_rate": forced["own_text"]["fluent_success"],
        "forced_language_human_text_rate": forced["human_text"]["fluent_success"],
        "forced_language_n": forced["n"],
        "forced_language_prompt": forced["prompt"],
        "forced_language_per_target": {
            t: {"fluent": row["forced"]["fluent_success"], "fluent_ci": row["forced"]["fluent_success_ci"],
                "raw": row["forced"]["raw_success"], "random_fluent": (row["random"] or {}).get("fluent_success"),
                "own_text_fluent": row["own_text"]["fluent_success"],
                "human_text_fluent": row["human_text"]["fluent_success"], "fluency_nll": row["fluency_nll"],
                "own_language_nll": row["own_language_nll"], "bar": row["bar"]["source"]}
            for t, row in forced["per_target"].items()},
        "forced_language_mode": forced["setting"]["mode"],
        "forced_language_strength": forced["setting"]["strength"],
        "forced_language_suppress": forced["setting"]["suppress"],
        "forced_language_steps": forced["setting"]["steps"],
        "neurons_per_layer": zhang.counts_per_layer(),
        "neurons_total": {name: {"specific": int(n.class_mask("specific").sum()),
                                 "related": int(n.class_mask("related").sum()), "general": int(n.general.sum())}
                          for name, n in ctx.neurons.items()},
        "stages": [{"name": st["name"], "layers": st["layers"]} for st in results["layers"]["stages"]],
    }
    if "delta_ppl_variants" in results:
        summary["variants_diagonal_mean_delta_logppl"] = {
            v: block["summary"]["diagonal_mean_delta_logppl"] for v, block in results["delta_ppl_variants"]["variants"].items()
        }
        summary["variants_diagonal_mean_delta_logppl"]["specific+related"] = diag
    if "delta_ppl_lape" in results:
        lape = results["delta_ppl_lape"]["variants"]["specific+related"]["summary"]
        summary["lape_diagonal_mean_delta_logppl"] = lape["diagonal_mean_delta_logppl"]
        summary["lape_random_control_mean_delta_logppl"] = lape.get("random_control_mean_delta_logppl")
    if forced.get("sweep"):
        summary["forced_language_sweep"] = forced["sweep"]
    if "transfer" in results:
        summary["transfer"] = results["transfer"]["summary"]
    english = results["layers"].get("english")
    if english:
        summary["english_language_neurons_ratio"] = english["ratio"]
    summary["seconds"] = seconds
    return summary


def _rate_ci(rate, ci=None) -> str:
    if rate is None:
        return "–"
    return f"{rate:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def summary_section(summary: dict) -> str:
    def f(v):
        return "–" if v is None else f"{v:+.3f}"

    yes = {True: "yes", False: "no", None: "–"}
    lines = [
        "## Summary", "",
        f"- Deactivating a language's neurons (zhang2025, specific+related) raises its own loss by {f(summary['diagonal_mean_delta_logppl'])} "
        f"nats/token on average (diagonal), other languages' by {f(summary['offdiagonal_mean_delta_logppl'])} (off-diagonal), and "
        f"random neurons of the same per-layer counts raise it by {f(summary['random_control_mean_delta_logppl'])}: "
        f"diagonal > off-diagonal: {yes[summary['diagonal_exceeds_offdiagonal']]}; diagonal > random: "
        f"{yes[summary['diagonal_exceeds_random_control']]}.",
        f"- Forcing the output language ({summary['forced_language_mode']}, strength {summary['forced_language_strength']:g}, "
        f"suppress {summary['forced_language_suppress']}, "
        f"{forcing_steps_phrase(summary.get('forced_language_steps'))}; {summary['forced_language_prompt']} prompts) gives "
        f"fluent text in the target for {_rate_ci(summary['forced_language_success'], summary['forced_language_success_ci'])} "
        f"of {summary['forced_language_n']} (source, target) continuations of the evaluation half "
        f"({_rate_ci(summary['forced_language_success_raw'], summary['forced_language_success_raw_ci'])} in the target, fluent "
        f"or not; 95% intervals over paragraphs). The same push on random neurons with the same per-layer counts gives "
        f"{_rate_ci(summary['forced_language_random_control'], summary['forced_language_random_control_ci'])}, the "
        f"unsteered model {_rate_ci(summary['forced_language_unsteered_rate'])}; the model's own text in the target "
        f"passes the same test {_rate_ci(summary['forced_language_own_text_rate'])} of the time, human text "
        f"{_rate_ci(summary['forced_language_human_text_rate'])}.",
        "- Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def run_demo(
    out: str | Path,
    *,
    quick: bool = False,
    model=None,
    corpus=None,
    languages: Sequence[str] | None = None,
    progress: bool = True,
    threads: int | None = None,
    command: str | None = None,
    **knobs,
) -> dict:
    """Run the demo into `out`; returns the summary (also written to `out/summary.json`).

    `quick`: a tiny size for tests (3 languages, a few texts, few tokens: `QUICK`). `model`: a
    model name, folder or loaded model (default: the embedded Gemma 3 270M). `corpus`: a Corpus or
    a corpus name / path (default: the LibreOffice help). `languages`: which languages (default:
    the corpus's; with `quick`, en, de, eu where present). `knobs`: sizes, see `KNOBS`
    (max_tokens_per_language, n_eval, max_length, n_random, n_prompts, max_new_tokens,
    sweep_targets, sweep_modes, sweep_strengths, transfer_texts, top_rate, prompt_words). `threads`: torch CPU
    threads for the run (restored after); on a CPU shared with other work, 1 can be several times
    faster than the default. `command`: how the run was asked for, recorded in the summary with the commit
    of the checkout steer runs from (`steer.provenance`); default: this call, written as Python.
    """
    started = time.perf_counter()
    command = command or _call_text(out, quick=quick, model=model, corpus=corpus, languages=languages,
                                    threads=threads, **knobs)
    sources = [src for src in (corpus, model) if isinstance(src, (str, Path))]
    out = prepare_out(out, "demo", inputs=sources, option="out")  # before loading anything
    if corpus is not None and not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus, progress=progress)
    if languages is None and quick:
        available = corpus.languages if corpus is not None else list(QUICK_LANGUAGES)
        languages = [lang for lang in QUICK_LANGUAGES if lang in available] or list(available[:3])
        if len(languages) < 2:
            languages = list(available[:3])
    model_name = model if isinstance(model, (str, Path)) else None
    config = demo_config(quick=quick, model=str(model_name) if model_name else None, languages=languages, **knobs)
    if corpus is not None:
        config.corpus.source = corpus.source or "in-memory"
    if config.corpus.languages is not None and len(config.corpus.languages) > 1 and knobs.get("sweep_targets") is None:
        _check_sweep_targets(config)  # the demo's own targets follow the languages; targets the caller gives are checked
    skipped = _skip_transfer_without_low_resource(config, corpus)
    with torch_threads(threads):
        ctx, results, stages = execute(config, out, model=model, corpus=corpus, progress=progress, verb="demo")
    seconds = dict(stages.seconds())
    seconds.pop("report", None)
    seconds["this_run"] = round(time.perf_counter() - started, 2)
    summary = summarize(results, ctx, seconds)
    summary["resumed"] = list(stages.resumed)
    summary["skipped"] = skipped
    summary["meta"] = result_meta(ctx)
    summary.update(provenance(command))
    write_json_atomic(out / "summary.json", summary)
    write_report(out, [summary_section(summary)] + sections(config, results), title=config.title, preamble=preamble(ctx))
    return summary


def _call_text(out, **given) -> str:
    """A run_demo call as Python text: `out` and the arguments given (objects other than paths by their type)."""
    def shown(value) -> str:
        value = str(value) if isinstance(value, Path) else value
        return repr(value) if isinstance(value, (str, int, float, list, tuple)) else type(value).__name__

    args = [shown(out)] + [f"{key}={shown(value)}" for key, value in given.items() if value is not None and value is not False]
    return f"steer.bench.run_demo({', '.join(args)})"


def _skip_transfer_without_low_resource(config: BenchConfig, corpus) -> list[str]:
    """The low-resource transfer benchmark needs a low-resource language: without one among the demo's
    languages it is left out, with a warning (and listed in the summary's "skipped")."""
    languages = config.corpus.languages or (corpus.languages if corpus is not None else None)
    if languages is None or any(lang in LOW_RESOURCE for lang in languages):
        return []
    skipped = [entry.name for entry in config.benchmarks if entry.kind == "transfer"]
    if skipped:
        config.benchmarks = [entry for entry in config.benchmarks if entry.kind != "transfer"]
        warnings.warn(f"no low-resource language ({', '.join(LOW_RESOURCE)}) among {', '.join(languages)}: the demo "
                      "skips the low-resource transfer benchmark", stacklevel=3)
    return skipped


def _check_sweep_targets(config: BenchConfig) -> None:
    for entry in config.benchmarks:
        if getattr(entry.spec, "sweep_targets", None):
            kept = [t for t in entry.spec.sweep_targets if t in config.corpus.languages]
            entry.spec.sweep_targets = kept or None
