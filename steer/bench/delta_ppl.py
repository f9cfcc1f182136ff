"""The ΔPPL matrix: deactivate one language's neurons, measure every language's perplexity.

Row = the language whose neurons are set to 0, column = the language whose held-out eval texts
are scored; each cell is the change in log-PPL (mean token NLL, nats) against the unsteered
model, Δ = log-PPL(deactivated) − log-PPL(baseline). Language neurons that matter show up as a
large diagonal (a language's own PPL rises most) over a small off-diagonal.

Variants choose which of a row language's neurons are deactivated ("specific": only those of
that language alone, N = 1; "specific+related": all of its neurons; "+general": plus the neurons
active in every language, the same in each row). The random control replaces each row's set by
random neurons with the same count in every layer (`NeuronSet.random_like`), over several seeds:
mean ± sd per cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from steer.bench._common import (
    Partial, check_at_least, mean_or_none, mean_sd, neuron_fingerprint, stable_hash, texts_fingerprint,
)
from steer.bench.plots import plot_delta_ppl
from steer.bench.registry import Benchmark, Context, Job, register
from steer.bench.report import delta_ppl_section
from steer.neurons import NeuronSet
from steer.progress import progress_bar
from steer.scoring import summarize, token_nll
from steer.steering import deactivate

VARIANTS: dict[str, tuple[str, ...]] = {
    "specific": ("specific",),
    "specific+related": ("specific", "related"),
    "specific+related+general": ("specific", "related", "general"),
}
DEFAULT_VARIANT = "specific+related"
RANDOM_COLUMNS = ("all", "diagonal", "none")


@dataclass
class DeltaPPLBench:
    """`[bench.delta_ppl]`: the arguments of `delta_ppl_matrix` (texts: the first `n_texts` eval texts)."""

    neurons: str = ""
    variants: list[str] = field(default_factory=lambda: ["specific+related"])
    n_texts: int | None = 24  # None: every held-out text of the run
    max_length: int = 128
    batch_size: int = 8
    n_random: int = 3
    random_seed: int = 0
    random_columns: str = "all"
    random_variants: list[str] | None = None
    cells: str = "all"

    def check(self, where: str) -> None:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(f"{where}: variants must be among {', '.join(VARIANTS)}, got {self.variants}")
        if self.random_columns not in RANDOM_COLUMNS:
            raise ValueError(f"{where}: random_columns must be one of {', '.join(RANDOM_COLUMNS)}")
        if self.cells not in ("all", "diagonal"):
            raise ValueError(f"{where}: cells must be 'all' or 'diagonal'")
        check_at_least(where, n_texts=(self.n_texts, 1), max_length=(self.max_length, 2),
                       batch_size=(self.batch_size, 1), n_random=(self.n_random, 0))


def variant_classes(variant: str) -> tuple[str, ...]:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown ΔPPL variant '{variant}'; use one of {', '.join(VARIANTS)}") from None


def row_set(neurons: NeuronSet, language: str, variant: str = DEFAULT_VARIANT) -> NeuronSet:
    """The neurons deactivated for one row: `language`'s neurons of the variant's classes.

    Classes are those of the full set (a neuron is "specific" when only `language` has it).
    """
    return neurons.select([language], classes=variant_classes(variant))


def eval_columns(
    model, eval_texts: dict[str, list[str]], columns: Sequence[str], *, batch_size: int, max_length: int,
    progress: bool = False, desc: str = "ppl",
) -> dict[str, dict]:
    """log-PPL of each column language's texts, in one batched pass over all of them."""
    flat, owners = [], []
    for lang in columns:
        flat += eval_texts[lang]
        owners += [lang] * len(eval_texts[lang])
    nlls = token_nll(model, flat, batch_size=batch_size, max_length=max_length, progress=progress, desc=desc)
    out = {}
    for lang in columns:
        mine = [nll for nll, owner in zip(nlls, owners) if owner == lang]
        summary = summarize(mine)
        out[lang] = {"log_ppl": summary["log_ppl"], "ppl": summary["ppl"], "n_tokens": summary["n_tokens"],
                     "n_texts": summary["n_texts"]}
    return out


def ablated_log_ppl(
    model, neurons: NeuronSet, eval_texts: dict[str, list[str]], columns: Sequence[str] | None = None, *,
    classes: Sequence[str] = ("specific", "related", "general"), batch_size: int = 8, max_length: int = 128,
    progress: bool = False,
) -> dict[str, dict]:
    """log-PPL of each column's texts with every neuron of `neurons` (of `classes`) set to 0.

    An empty set is rejected (ValueError): deactivating nothing measures nothing.
    """
    if neurons.select(None, classes=classes).is_empty():
        raise ValueError(f"the neuron set {neurons.languages} has no neuron of classes {list(classes)} to deactivate")
    columns = list(eval_texts) if columns is None else list(columns)
    with deactivate(model, neurons, classes=classes):
        return eval_columns(model, eval_texts, columns, batch_size=batch_size, max_length=max_length,
                            progress=progress, desc="ppl (deactivated)")


def delta_ppl_matrix(
    model,
    neurons: NeuronSet,
    eval_texts: dict[str, list[str]],
    *,
    rows: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    variants: Sequence[str] = (DEFAULT_VARIANT,),
    n_random: int = 3,
    random_seed: int = 0,
    random_columns: str = "all",
    random_variants: Sequence[str] | None = None,
    cells: str = "all",
    batch_size: int = 8,
    max_length: int = 128,
    baseline: dict[str, dict] | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """The ΔPPL matrix (rows: deactivated language, columns: evaluated language) per variant.

    `rows` default to the languages of `neurons` that have eval texts; `columns` to every language
    of `eval_texts`. A row whose set is empty in a variant is not computed (its cells are None and
    it is listed in `empty_rows`); a matrix with no non-empty row at all is a ValueError.
    `random_columns`: "all" (a control for every cell), "diagonal" (only the row's own language,
    cheaper) or "none". `random_variants`: the variants that get a random control (default:
    "specific+related" when computed, else the first). `cells`: "all", or "diagonal" to measure each row only on its own language (a cheap
    ΔPPL for secondary sets: off-diagonal cells are None; the random control follows).
    `baseline`: the unsteered `eval_columns` result for these texts and max_length, if already
    computed (it must cover every column). With `checkpoint` (a JSON path) each finished pass is
    saved and a rerun resumes.
    """
    rows = [lang for lang in neurons.languages if lang in eval_texts] if rows is None else list(rows)
    columns = list(eval_texts) if columns is None else list(columns)
    for lang in rows:
        neurons.index(lang)
    missing = [lang for lang in columns if lang not in eval_texts or not eval_texts[lang]]
    if missing:
        raise ValueError(f"no eval texts for column language(s) {missing}")
    if not rows or not columns:
        raise ValueError("the ΔPPL matrix needs at least one row and one column language")
    variants = list(variants)
    for variant in variants:
        variant_classes(variant)
    if random_columns not in RANDOM_COLUMNS:
        raise ValueError(f"random_columns must be one of {', '.join(RANDOM_COLUMNS)}, got '{random_columns}'")
    if cells not in ("all", "diagonal"):
        raise ValueError(f"cells must be 'all' or 'diagonal', got '{cells}'")
    if cells == "diagonal" and random_columns == "all":
        random_columns = "diagonal"
    if n_random < 0:
        raise ValueError("n_random must be >= 0")
    if random_variants is None:
        random_variants = [DEFAULT_VARIANT] if DEFAULT_VARIANT in variants else variants[:1]
    random_variants = list(random_variants)
    if random_columns == "none":
        n_random = 0

    row_sets = {(variant, lang): row_set(neurons, lang, variant) for variant in variants for lang in rows}
    empty = {variant: [lang for lang in rows if row_sets[variant, lang].is_empty()] for variant in variants}
    if all(len(empty[v]) == len(rows) for v in variants):
        raise ValueError(
            f"every row of the ΔPPL matrix is empty: no language in {rows} has neurons of variants {variants}"
        )
    if baseline is not None:
        missing = [c for c in columns if c not in baseline]
        if missing:
            raise ValueError(f"the given baseline lacks column(s) {missing}")
    todo = [] if baseline is not None else ["baseline"]
    for variant in variants:
        todo += [f"{variant}/{lang}" for lang in rows if lang not in empty[variant]]
        if variant in random_variants:
            todo += [f"{variant}/{lang}/random{k}" for lang in rows if lang not in empty[variant] for k in range(n_random)]
    key = stable_hash({
        "neurons": neuron_fingerprint(neurons), "texts": texts_fingerprint({c: eval_texts[c] for c in columns}),
        "rows": rows, "columns": columns, "random_seed": random_seed, "random_columns": random_columns,
        "max_length": max_length, "cells": cells,
    })
    partial = Partial(checkpoint, key)
    bar = progress_bar(progress, len(todo), "ΔPPL", unit="pass")

    def run(unit: str, compute):
        bar.set_postfix_str(unit)
        value = partial.get(unit, compute)
        bar.update(1)
        return value

    def sweep(cols):
        return lambda: eval_columns(model, eval_texts, cols, batch_size=batch_size, max_length=max_length)

    try:
        if baseline is None:
            baseline = run("baseline", sweep(columns))
        baseline = {c: baseline[c] for c in columns}
        result_variants = {}
        for variant in variants:
            classes = variant_classes(variant)
            log_ppl, delta, ppl = [], [], []
            for i, lang in enumerate(rows):
                row_columns = columns if cells == "all" else [lang] if lang in columns else []
                if lang in empty[variant] or not row_columns:
                    log_ppl.append([None] * len(columns))
                    delta.append([None] * len(columns))
                    ppl.append([None] * len(columns))
                    continue
                subset = row_sets[variant, lang]

                def ablate(subset=subset, classes=classes, row_columns=row_columns):
                    with deactivate(model, subset, classes=classes):
                        return sweep(row_columns)()

                done = run(f"{variant}/{lang}", ablate)
                log_ppl.append([done[c]["log_ppl"] if c in done else None for c in columns])
                ppl.append([done[c]["ppl"] if c in done else None for c in columns])
                delta.append([done[c]["log_ppl"] - baseline[c]["log_ppl"] if c in done else None for c in columns])
            entry = {
                "classes": list(classes),
                "n_neurons": {lang: len(row_sets[variant, lang]) for lang in rows},
                "empty_rows": empty[variant],
                "log_ppl": log_ppl,
                "ppl": ppl,
                "delta_log_ppl": delta,
                "random": None,
            }
            if variant in random_variants and n_random > 0:
                entry["random"] = _random_control(
                    model, run, row_sets, variant, classes, rows, columns, empty[variant], baseline, eval_texts,
                    n_random=n_random, random_seed=random_seed, random_columns=random_columns,
                    batch_size=batch_size, max_length=max_length,
                )
            entry["summary"] = _summary(entry, rows, columns)
            result_variants[variant] = entry
    finally:
        bar.close()
    return {
        "benchmark": "delta_ppl",
        "method": neurons.method,
        "rows": rows,
        "columns": columns,
        "cells": cells,
        "n_texts": {c: len(eval_texts[c]) for c in columns},
        "max_length": max_length,
        "baseline": baseline,
        "variants": result_variants,
    }


def _random_control(model, run, row_sets, variant, classes, rows, columns, empty, baseline, eval_texts, *,
                    n_random, random_seed, random_columns, batch_size, max_length) -> dict:
    per_cell: list[list[list[float]]] = [[[] for _ in columns] for _ in rows]
    for i, lang in enumerate(rows):
        if lang in empty:
            continue
        cols = columns if random_columns == "all" else [c for c in columns if c == lang]
        if not cols:
            continue
        for k in range(n_random):
            control = row_sets[variant, lang].random_like(seed=random_seed * 100_003 + 1_009 * k + i)

            def ablate(control=control, cols=cols):
                with deactivate(model, control, classes=classes):
                    return eval_columns(model, eval_texts, cols, batch_size=batch_size, max_length=max_length)

            cells = run(f"{variant}/{lang}/random{k}", ablate)
            for c in cols:
                per_cell[i][columns.index(c)].append(cells[c]["log_ppl"] - baseline[c]["log_ppl"])
    stats = [[mean_sd(cell) if cell else (None, None) for cell in row] for row in per_cell]
    return {
        "n_seeds": n_random,
        "seed": random_seed,
        "columns": random_columns,
        "delta_log_ppl_mean": [[m for m, _ in row] for row in stats],
        "delta_log_ppl_sd": [[s for _, s in row] for row in stats],
    }


def _summary(entry: dict, rows: list[str], columns: list[str]) -> dict:
    delta = entry["delta_log_ppl"]
    diagonal = [delta[i][columns.index(lang)] for i, lang in enumerate(rows) if lang in columns]
    off = [delta[i][j] for i, lang in enumerate(rows) for j, col in enumerate(columns) if col != lang]
    summary = {
        "diagonal_mean_delta_logppl": mean_or_none(diagonal),
        "offdiagonal_mean_delta_logppl": mean_or_none(off),
    }
    rows_ok = [i for i, lang in enumerate(rows) if lang in columns and delta[i][columns.index(lang)] is not None]
    summary["diagonal_is_row_max"] = mean_or_none([
        1.0 if delta[i][columns.index(rows[i])] >= max(v for v in delta[i] if v is not None) else 0.0 for i in rows_ok
    ]) if entry_is_full(delta) else None
    cols_ok = [(i, columns.index(lang)) for i, lang in enumerate(rows)
               if lang in columns and delta[i][columns.index(lang)] is not None]
    summary["diagonal_is_column_max"] = mean_or_none([
        1.0 if delta[i][j] >= max(delta[k][j] for k in range(len(rows)) if delta[k][j] is not None) else 0.0
        for i, j in cols_ok
    ]) if entry_is_full(delta) else None
    random = entry.get("random")
    if random:
        means = random["delta_log_ppl_mean"]
        summary["random_control_mean_delta_logppl"] = mean_or_none([v for row in means for v in row])
        summary["random_control_diagonal_mean_delta_logppl"] = mean_or_none(
            [means[i][columns.index(lang)] for i, lang in enumerate(rows) if lang in columns]
        )
    return summary


def entry_is_full(delta: list[list[float | None]]) -> bool:
    """Whether any off-diagonal cell was measured (not a diagonal-only run)."""
    return any(v is not None for i, row in enumerate(delta) for j, v in enumerate(row) if i != j)


def headline(result: dict, variant: str = DEFAULT_VARIANT) -> dict:
    """The summary numbers of one variant (diagonal, off-diagonal, random control means)."""
    if variant not in result["variants"]:
        variant = next(iter(result["variants"]))
    return {"variant": variant, **result["variants"][variant]["summary"]}


def ablate_language(
    model, neurons: NeuronSet, corpus, language: str, *, classes: Sequence[str] | None = ("specific", "related"),
    n_texts: int = 50, batch_size: int = 8, max_length: int = 256,
) -> dict:
    """One row of the ΔPPL matrix (`steer ablate`): log-PPL of the first `n_texts` eval texts of every
    language of both `corpus` and `neurons`, unsteered and with `language`'s neurons of `classes` set to 0
    (classes None: specific and related)."""
    if isinstance(n_texts, bool) or not isinstance(n_texts, int) or n_texts < 1:
        raise ValueError(f"n_texts must be at least 1, got {n_texts}")
    classes = ("specific", "related") if classes is None else ([classes] if isinstance(classes, str) else list(classes))
    if not classes:
        raise ValueError("classes is empty; use specific, related and/or general")
    chosen = neurons.select([language], classes=classes)
    if chosen.is_empty():
        raise ValueError(f"'{language}' has no neuron of classes {', '.join(classes)} in this neuron set, so there is "
                         "nothing to ablate; choose another language or class, or identify neurons with a larger top_rate")
    texts = {lang: corpus.eval[lang][:n_texts] for lang in corpus.languages if lang in neurons.languages}
    if any(not items for items in texts.values()):
        raise ValueError("perplexity needs at least one text")
    columns = list(texts)
    base = ablated = {}
    if columns:
        base = eval_columns(model, texts, columns, batch_size=batch_size, max_length=max_length)
        if any(base[lang]["log_ppl"] is None for lang in columns):
            raise ValueError("no token to score: every text is shorter than two tokens")
        with deactivate(model, chosen, classes=classes):
            ablated = eval_columns(model, texts, columns, batch_size=batch_size, max_length=max_length)
    evaluated = {lang: {"log_ppl": base[lang]["log_ppl"], "ablated_log_ppl": ablated[lang]["log_ppl"],
                        "delta_log_ppl": ablated[lang]["log_ppl"] - base[lang]["log_ppl"]} for lang in columns}
    return {"language": language, "classes": list(classes), "n_neurons": len(chosen),
            "evaluated": evaluated}


def _run(ctx: Context, spec: DeltaPPLBench, job: Job) -> dict:
    neurons = ctx.neurons[spec.neurons]
    texts = ctx.eval_texts(spec.n_texts)
    rows = [lang for lang in neurons.languages if lang in texts]
    cache_key = ("baseline", stable_hash({lang: texts[lang] for lang in texts}), spec.max_length)
    result = delta_ppl_matrix(
        ctx.model, neurons, texts, rows=rows, variants=spec.variants, n_random=spec.n_random,
        random_seed=spec.random_seed, random_columns=spec.random_columns, random_variants=spec.random_variants,
        cells=spec.cells, batch_size=spec.batch_size, max_length=spec.max_length,
        baseline=ctx.cache.get(cache_key), checkpoint=job.checkpoint, progress=ctx.progress,
    )
    ctx.cache[cache_key] = result["baseline"]
    plot_delta_ppl(result, job.figures[0])
    result["neurons"] = spec.neurons
    return result


register(Benchmark(
    kind="delta_ppl", spec=DeltaPPLBench, run=_run, figures=("{name}.png",),
    section=lambda result, figures: delta_ppl_section(result, figures[0]),
))
