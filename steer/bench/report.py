"""report.md: one section per benchmark, each with its figure (PNG beside it) and a one-sentence
reading of what the figure shows, with the numbers that back it. Written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from steer._io import write_text_atomic


def _f(value, fmt: str = "{:+.3f}") -> str:
    return "–" if value is None else fmt.format(value)


def _pct(value) -> str:
    return "–" if value is None else f"{value:.0%}"


def delta_ppl_section(result: dict, figure: str, variant: str = "specific+related") -> str:
    variants = result["variants"]
    variant = variant if variant in variants else next(iter(variants))
    entry = variants[variant]
    s = entry["summary"]
    diag, off = s["diagonal_mean_delta_logppl"], s["offdiagonal_mean_delta_logppl"]
    rand = s.get("random_control_diagonal_mean_delta_logppl")
    diagonal_only = result.get("cells") == "diagonal"
    scope = "; own language only" if diagonal_only else ""
    lines = [f"## ΔPPL: deactivating language neurons ({result['method']}: {', '.join(variants)}{scope})", "",
             f"![ΔPPL matrix]({figure})", ""]
    if diagonal_only:
        sentence = (
            "Each cell is the rise in mean per-token loss (Δ log-PPL, nats; PPL ratio = e^Δ) on a language's held-out "
            "text when that language's neurons of the panel's variant are set to zero (only each language's own cell is "
            "measured); means: " + ", ".join(
                f"{v} {_f(b['summary']['diagonal_mean_delta_logppl'])}" for v, b in variants.items())
        )
    else:
        sentence = (
            f"Each cell is the rise in mean per-token loss (Δ log-PPL, nats; PPL ratio = e^Δ) on the held-out text of the "
            f"column language when the row language's {variant} neurons are set to zero; neurons that carry their own "
            f"language make the diagonal (here mean {_f(diag)}) exceed the off-diagonal (mean {_f(off)})"
        )
    if rand is not None:
        sentence += (f"{', against' if diagonal_only else ' and'} random neurons with the same per-layer counts "
                     f"({variant}, diagonal mean {_f(rand)})")
    lines.append(sentence + ".")
    verdicts = []
    if diag is not None and off is not None:
        verdicts.append(f"the diagonal {'exceeds' if diag > off else 'does not exceed'} the off-diagonal")
    if diag is not None and rand is not None:
        verdicts.append(f"{'' if verdicts else 'the diagonal '}{'exceeds' if diag > rand else 'does not exceed'} "
                        "the random control")
    if verdicts:
        tail = "" if diagonal_only else (
            f"; a language's own neurons are the most harmful to it in {_pct(s.get('diagonal_is_column_max'))} of "
            f"columns, and its own text is the most harmed by them in {_pct(s.get('diagonal_is_row_max'))} of rows")
        lines.append(f"Here {' and '.join(verdicts)}{tail}.")
    lines += ["", f"Texts: {sum(result['n_texts'].values())} eval paragraphs ({min(result['n_texts'].values())}–"
              f"{max(result['n_texts'].values())} per language), at most {result['max_length']} tokens each.", ""]
    header = "| deactivated | neurons | " + " | ".join(f"Δ own ({v})" for v in variants) + " | mean Δ others | random Δ own (mean ± sd over seeds) |"
    lines += [header, "|" + "---|" * (4 + len(variants) - 1 + 1)]
    columns = result["columns"]
    for i, row in enumerate(result["rows"]):
        j = columns.index(row) if row in columns else None
        own = [_f(variants[v]["delta_log_ppl"][i][j]) if j is not None else "–" for v in variants]
        others = [v for k, v in enumerate(entry["delta_log_ppl"][i]) if k != j and v is not None]
        random = entry.get("random")
        rand_cell = "–"
        if random and j is not None and random["delta_log_ppl_mean"][i][j] is not None:
            rand_cell = f"{random['delta_log_ppl_mean'][i][j]:+.3f}"
            if random["n_seeds"] > 1:
                rand_cell += f" ± {random['delta_log_ppl_sd'][i][j]:.3f}"
        lines.append(f"| {row} | {entry['n_neurons'][row]} | " + " | ".join(own)
                     + f" | {_f(sum(others) / len(others) if others else None)} | {rand_cell} |")
    baseline = result["baseline"]
    lines += ["", "Unsteered PPL: " + ", ".join(f"{c} {baseline[c]['ppl']:.1f}" for c in columns) + ".", ""]
    return "\n".join(lines)


def forcing_steps_phrase(steps: int | None) -> str:
    """How long a forced run pushed, in words (`steps` as in `Intervention.steps`)."""
    return "forcing every step" if steps is None else f"forcing the first {steps} steps"


def forced_section(result: dict, figure: str) -> str:
    decoding = result.get("decoding", {})
    extra = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in decoding.items()
                      if k in ("repetition_penalty", "no_repeat_ngram_size") and v is not None)
    lines = [f"## Forced language ({result['method']}, mode {result['mode']}, strength {result['strength']:g}, "
             f"suppress {result.get('suppress', 'others')}, {forcing_steps_phrase(result.get('steps'))}"
             f"{', ' + extra if extra else ''})", "",
             f"![forced language]({figure})", ""]
    unsteered = result["unsteered"]
    lines.append(
        f"Evaluation half of the held-out paragraphs (the sweep read only the tuning half). A continuation is a *raw* "
        f"success when the language identifier assigns it to the target, a *fluent* success when it also reads like "
        f"the model's own text in the target (NLL under the unsteered model, share of distinct tokens, longest "
        f"repeated run; bars from unsteered text in that language). Fluent success {_pct(result['fluent_success_rate'])}, "
        f"raw {_pct(result['success_rate'])}; without steering {_pct(result['unsteered_fluent_rate'])} of "
        f"continuations are fluent text in the other language, and {_pct(unsteered['in_source_language'])} stay in "
        f"their prompt language. The ceiling: {_pct(result.get('own_text_fluent_rate'))} of the model's own "
        f"continuations of evaluation prompts written in the target pass the same test."
    )
    lines += ["", "| target | raw | fluent | own text fluent (ceiling) | NLL of fluent successes | NLL of own text | "
              "bar: NLL ≤, distinct ≥, run ≤ |", "|---|---|---|---|---|---|---|"]
    for target, row in result["per_target"].items():
        bar = row["bar"]
        lines.append(f"| {target} | {_pct(row['raw'])} | {_pct(row['fluent'])} | {_pct(row.get('own_text_fluent'))} | "
                     f"{_f(row['fluency_nll'], '{:.2f}')} | "
                     f"{_f(row['own_language_nll'], '{:.2f}')} | {bar['nll_max']:.2f}, {bar['distinct_min']:.2f}, "
                     f"{bar['max_run_max']}{' (pooled)' if bar['pooled'] else ''} |")
    sweep = result.get("sweep")
    if sweep:
        lines += ["", f"Sweep on the tuning half ({len(sweep['targets'])} targets, {sweep['n_prompts']} prompt per source):",
                  "", "| mode | strength | suppress | raw | fluent |", "|---|---|---|---|---|"]
        for row in sorted(sweep["settings"], key=lambda r: -(r["fluent"] or 0)):
            lines.append(f"| {row['mode']} | {row['strength']:g} | {row['suppress']} | {_pct(row['raw'])} | "
                         f"{_pct(row['fluent'])} |")
    lines += ["", "One continuation per target language (a fluent success where there is one):", "",
              "| prompt (source) | target | continuation | detected | fluent |", "|---|---|---|---|---|"]
    for target in result["languages"]:
        mine = [ex for ex in result["examples"] if ex["target"] == target]
        if not mine:
            continue
        ex = next((e for e in mine if e["fluent"]), next((e for e in mine if e["success"]), mine[0]))
        text = ex["continuation"].replace("|", "\\|").replace("\n", " ")[:100]
        prompt = ex["prompt"].replace("|", "\\|")[:60]
        lines.append(f"| {prompt} ({ex['source']}) | {ex['target']} | {text} | {ex['detected']} | "
                     f"{'✓' if ex['fluent'] else '✗'} |")
    lines.append("")
    return "\n".join(lines)


def transfer_section(result: dict, figure: str) -> str:
    s = result["summary"]
    lines = [f"## Low-resource transfer ({result['method']})", "", f"![low-resource transfer]({figure})", ""]
    lines.append(
        f"For each low-resource language ({', '.join(result['low_resource'])}), bars show the change in its loss when the "
        f"neurons it shares with each high-resource language are zeroed (mean {_f(s['mean_delta_deactivate_shared'])}), "
        f"when as many random neurons per layer are zeroed (mean {_f(s['mean_delta_random'])}), and when the shared "
        f"neurons are amplified ×{result['factor']:g} (mean {_f(s['mean_delta_amplify_shared'])}); the dashed line is "
        f"zeroing its own specific neurons (mean {_f(s['mean_delta_specific'])})."
    )
    lines += ["", "| low-resource | most shared with | shared neurons | Δ deactivate shared | Δ random | Δ amplify |",
              "|---|---|---|---|---|---|"]
    for target, row in result["pairs"].items():
        source = s["most_shared_source"][target]
        e = row[source]
        lines.append(f"| {target} | {source} | {e['n_shared']} | {_f(e['deactivate_shared'])} | "
                     f"{_f(e['random']['mean'])} | {_f(e['amplify_shared'])} |")
    lines.append("")
    return "\n".join(lines)


def layers_section(result: dict, figure: str, overlap_figure: str | None = None) -> str:
    totals = result["totals"]
    lines = [f"## Where language neurons are ({result['method']})", "", f"![neurons per layer]({figure})", ""]
    stage_text = "; ".join(
        f"{k + 1} {st['name']} (layers {st['layers'][0]}–{st['layers'][-1]}: {st['specific'] + st['related']} language neurons)"
        for k, st in enumerate(result["stages"]) if st["layers"]
    )
    lines.append(
        f"Bars count each layer's language-specific ({totals['specific']}), language-related ({totals['related']}) and "
        f"general ({totals['general']}) neurons; the shaded bands are the four stages of Zhang et al. (2025) located from "
        f"these counts by the rule in `steer.bench.layers.four_stages`: {stage_text}."
    )
    english = result.get("english")
    if english and english.get("ratio") is not None:
        lines.append(
            f"English has {english['en']} language neurons against a mean of {english['mean_of_others']:.0f} for the "
            f"other languages (×{english['ratio']:.2f}); the papers expect far fewer for English, the model's dominant "
            f"language, whose features are largely the shared ones."
        )
    if overlap_figure:
        jac = result["related_jaccard"]
        langs = result["languages"]
        pairs = [(jac[i][j], langs[i], langs[j]) for i in range(len(langs)) for j in range(i + 1, len(langs))]
        lines += ["", f"![related-neuron overlap]({overlap_figure})", ""]
        if pairs:
            top = max(pairs)
            lines.append(
                f"Each cell is the Jaccard overlap of two languages' language-related neurons (shared count written in "
                f"it); the most overlapping pair is {top[1]}–{top[2]} ({top[0]:.2f})."
            )
    lines.append("")
    return "\n".join(lines)


def write_report(out: str | Path, sections: Sequence[str], *, title: str = "steer benchmarks",
                 preamble: str = "") -> Path:
    text = f"# {title}\n\n" + (preamble.strip() + "\n\n" if preamble else "") + "\n".join(s.rstrip() + "\n" for s in sections)
    return write_text_atomic(Path(out) / "report.md", text)
