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


def _ci(rates: dict | None, key: str = "fluent_success") -> str:
    """A rate with its 95% interval, e.g. "0.24 [0.18, 0.31]" ("–" when there is none)."""
    if not rates or rates.get(key) is None:
        return "–"
    ci = rates.get(f"{key}_ci")
    return f"{rates[key]:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def forced_table(result: dict) -> list[str]:
    """Per target and overall: fluent (raw) success with 95% intervals beside the random-neuron control, the
    unsteered rate and both ceilings (markdown rows)."""
    lines = ["| target | n | fluent | raw | random neurons: fluent | unsteered: fluent | own text (ceiling) | "
             "human text (ceiling) |", "|---|---|---|---|---|---|---|---|"]
    for target, row in result["per_target"].items():
        lines.append(f"| {target} | {row['forced']['n']} | {_ci(row['forced'])} | {_ci(row['forced'], 'raw_success')} | "
                     f"{_ci(row['random'])} | {_ci(row['unsteered'])} | {_ci(row['own_text'])} | "
                     f"{_ci(row['human_text'])} |")
    lines.append(f"| **all** | {result['n']} | **{_ci(result)}** | {_ci(result, 'raw_success')} | {_ci(result['random'])} | "
                 f"{_ci(result['unsteered'])} | {_ci(result['own_text'])} | {_ci(result['human_text'])} |")
    return lines


def forced_section(result: dict, figure: str) -> str:
    setting = result["setting"]
    decoding = result.get("decoding", {})
    extra = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in decoding.items()
                      if k in ("repetition_penalty", "no_repeat_ngram_size") and v is not None)
    split = result["split"]
    lines = [f"## Forced language ({result['method']}, mode {setting['mode']}, strength {setting['strength']:g}, "
             f"suppress {setting['suppress']}, {forcing_steps_phrase(setting['steps'])}"
             f"{', ' + extra if extra else ''}; {result['prompt']} prompts)", "",
             f"![forced language]({figure})", ""]
    own_bars = sum(not bar["pooled"] for bar in result["bars"].values())
    lines.append(
        f"Evaluation half of the held-out paragraphs (sweeps and the fluency bars read only the tuning half); "
        f"{result['n_per_pair']} prompt(s) per (source, target) pair, each from its own paragraph (seed {result['seed']}), "
        f"{result['n']} continuations from {result['n_paragraphs']} paragraphs. A continuation is a *raw* success when "
        f"the language identifier's top-1 over all its languages is the target, a *fluent* success when it also reads "
        f"like text in the target (NLL under the unsteered model within the target's bar), has a "
        f"distinct-token share of at least {result['judge']['min_distinct_share']:g} and no token repeated more than "
        f"{result['judge']['max_run']} times in a row (digits aside), and is not another prompt's continuation word "
        f"for word. Brackets: 95% intervals from a bootstrap over paragraphs. Controls: the same push on random neurons "
        f"with the same per-layer counts ({split['n_random']} seeds), the unsteered model on the same prompts, the "
        f"model's own continuations of prompts written in the target and the true continuations of such paragraphs "
        f"({split['n_own']} per target). The NLL bar lies midway between human text in the target, read the same way "
        f"(its {result['judge']['nll_good_quantile']:.0%} quantile; true continuations of up to {split['n_baseline']} "
        f"tuning-half paragraphs) and the same text with its tokens shuffled (its "
        f"{result['judge']['nll_bad_quantile']:.0%} quantile): {own_bars} of {len(result['bars'])} languages have at least {result['judge']['min_baseline']} "
        f"such texts of their own, the others get the bar of all languages pooled (marked below)."
    )
    lines += [""] + forced_table(result)
    lines += ["", "| target | NLL of fluent successes | NLL of own text | NLL of human text | bar: NLL ≤ (from, n) | "
              "why forced continuations fail | detected among the languages |", "|---|---|---|---|---|---|---|"]
    for target, row in result["per_target"].items():
        bar = row["bar"]
        fails = ", ".join(f"{k} {v}" for k, v in sorted(row["failures"].items(), key=lambda kv: -kv[1]))
        among = ", ".join(f"{k} {v}" for k, v in sorted(row["confusion"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {target} | {_f(row['fluency_nll'], '{:.2f}')} | {_f(row['own_language_nll'], '{:.2f}')} | "
                     f"{_f(row.get('human_nll'), '{:.2f}')} | {bar['nll_max']:.2f} ({bar['source']}, {bar['n']}) | "
                     f"{fails} | {among} |")
    sweep = result.get("sweep")
    if sweep:
        lines += ["", f"Sweep on the tuning half ({sweep[0]['n']} continuations per setting, "
                      f"{sweep[0]['n_paragraphs']} paragraphs):", "",
                  "| mode | strength | suppress | steps | raw | fluent |", "|---|---|---|---|---|---|"]
        for row in sorted(sweep, key=lambda r: -(r["fluent"] or 0)):
            lines.append(f"| {row['mode']} | {row['strength']:g} | {row['suppress']} | {row['steps'] or 'all'} | "
                         f"{_ci(row, 'raw')} | {_ci(row, 'fluent')} |")
    lines += ["", "One continuation per target language (a fluent success where there is one):", "",
              "| prompt (source) | target | continuation | detected | fluent |", "|---|---|---|---|---|"]
    for ex in result["examples"]:
        text = ex["continuation"].replace("|", "\\|").replace("\n", " ")[:100]
        prompt = ex["prompt"].replace("|", "\\|")[:60]
        lines.append(f"| {prompt} ({ex['source']}) | {ex['target']} | {text} | {ex['detected']} | "
                     f"{'✓' if ex['fluent'] else '✗ ' + (ex['reason'] or '')} |")
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


def forced_sweep_table(sweep: dict) -> list[str]:
    """A tuning-half sweep file's settings (benchmarks/forced_sweep.py), best first, as markdown rows."""
    languages = sweep["languages"]
    lines = ["| neurons | mode | strength | suppress | phase | steps | n | raw | fluent | " + " | ".join(languages) + " |",
             "|---" * (9 + len(languages)) + "|"]
    for row in sweep["settings"]:
        per = " | ".join(_f(row["per_target"][t]["fluent"], "{:.2f}") for t in languages)
        lines.append(f"| {row['neurons']} | {row['mode']} | {row['strength']:g} | {row['suppress']} | {row['phase']} | "
                     f"{row['steps'] or 'all'} | {row['n']} | {_ci(row, 'raw')} | **{_ci(row, 'fluent')}** | {per} |")
    return lines
