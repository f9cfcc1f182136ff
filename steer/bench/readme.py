"""The README's result tables, generated from the small result files under docs/results/.

A block of the README

    <!-- results: KIND FILE -->
    (generated)
    <!-- /results -->

becomes a line naming FILE, the command that made it and its commit, then what the renderer `RENDERERS[KIND]`
makes of the file (markdown lines). The forced-language blocks keep their own markers
(`<!-- forced-table: FILE -->` … `<!-- /forced-table -->`, kind "forced"). `update_blocks` regenerates every
block; `benchmarks/readme_tables.py` runs it on README.md (`--check`: changes nothing, fails when a block is
stale), and a test fails when a block differs from its file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Sequence

from steer.bench.report import forced_sweep_table, forced_table

BLOCK = re.compile(r"(?P<open><!-- results: (?P<kind>[\w\-]+) (?P<file>[\w.\-]+) -->\n)(?P<body>.*?)(?P<close><!-- /results -->)",
                   re.S)
FORCED_BLOCK = re.compile(r"(?P<open><!-- forced-table: (?P<file>[\w.\-]+) -->\n)(?P<body>.*?)(?P<close><!-- /forced-table -->)",
                          re.S)


def _signed(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:+.{digits}f}".replace("-", "−")


def _rate(value, ci=None) -> str:
    """A rate with its 95% interval, e.g. "0.43 [0.33, 0.54]"; "–" for none."""
    if value is None:
        return "–"
    return f"{value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _interval(ci, digits: int = 2, sign: int = 1) -> str:
    """A 95% interval as "CI a … b" (values times `sign`, low first)."""
    low, high = sorted(sign * v for v in ci)
    return f"CI {_signed(low, digits)} … {_signed(high, digits)}"


# ------------------------------------------------------------------ renderers: result dict -> markdown lines

def forced_rows(data: dict) -> list[str]:
    """A forced-language evaluation result (`forced_table`) or a tuning-half sweep (`forced_sweep_table`)."""
    return forced_sweep_table(data) if "settings" in data else forced_table(data)


def demo_rows(data: dict) -> list[str]:
    """The demo's headline figures (docs/results/demo-summary.json, from a demo's summary.json)."""
    steps = data.get("forced_language_steps")
    setting = (f"{data['forced_language_mode']} {data['forced_language_strength']:g}, "
               f"{'every step' if steps is None else f'first {steps} steps'}, {data['forced_language_prompt']} prompts")
    ppl_label = "ΔPPL (nats/token) when a language's zhang2025 specific + related neurons are switched off"
    return [
        "| figure | value |", "|---|---|",
        f"| {ppl_label}: its own text (diagonal, mean over {len(data['languages'])} languages) | "
        f"**{_signed(data['diagonal_mean_delta_logppl'])}** |",
        f"| … the other languages' text (off-diagonal mean) | {_signed(data['offdiagonal_mean_delta_logppl'])} |",
        f"| … random neurons with the same per-layer counts, own text | "
        f"{_signed(data['random_control_mean_delta_logppl'])} |",
        f"| own language hit hardest: share of rows / of columns | {data['diagonal_is_row_max_fraction']:.2f} / "
        f"{data['diagonal_is_column_max_fraction']:.2f} |",
        f"| forced language ({setting}): fluent success, {data['forced_language_n']} continuations | "
        f"**{_rate(data['forced_language_success'], data['forced_language_success_ci'])}** |",
        f"| … in the target, fluent or not | "
        f"{_rate(data['forced_language_success_raw'], data['forced_language_success_raw_ci'])} |",
        f"| … the same push on random neurons ({data['forced_language_random_control_seeds']} seeds) | "
        f"{_rate(data['forced_language_random_control'], data['forced_language_random_control_ci'])} |",
        f"| … unsteered | {_rate(data['forced_language_unsteered_rate'])} |",
        f"| … ceilings: the model's own text / human text in the target | "
        f"{_rate(data['forced_language_own_text_rate'])} / {_rate(data['forced_language_human_text_rate'])} |",
    ]


def delta_ppl_rows(data: dict) -> list[str]:
    """A ΔPPL matrix's rows (docs/results/delta-ppl-*.json): each language's own cell against the others and the
    random control, then the means."""
    seeds = data["n_random"]
    counts = sorted(set(data["n_texts"].values())) if isinstance(data["n_texts"], dict) else [data["n_texts"]]
    texts = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    lines = [f"{data['method']} {data['variant'].replace('+', ' + ')} neurons of {', '.join(data['languages'])}, switched "
             f"off one language at a time; Δ log-PPL in nats/token over {texts} held-out paragraphs per "
             "language.", "",
             "| neurons switched off | neurons | Δ own language | Δ other languages (mean) | "
             f"Δ random neurons, own language (mean ± sd, {seeds} seeds) |", "|---|---|---|---|---|"]
    for lang, row in data["rows"].items():
        spread = f" ± {row['random_sd']:.3f}" if row.get("random_sd") is not None else ""
        lines.append(f"| {lang} | {row['neurons']} | {_signed(row['own'])} | {_signed(row['others'])} | "
                     f"{_signed(row['random'])}{spread} |")
    summary = data["summary"]
    lines.append(f"| **mean** | | **{_signed(summary['diagonal_mean_delta_logppl'])}** | "
                 f"{_signed(summary['offdiagonal_mean_delta_logppl'])} | "
                 f"{_signed(summary.get('random_control_mean_delta_logppl'))} |")
    return lines


def alignment_rows(data: dict) -> list[str]:
    """Base vs aligned (docs/results/alignment.json): neuron counts and held-out log-PPL, then the verdicts of
    `steer compare` on Zhang et al. 2025's claims with the numbers behind them."""
    sharing = data["by_sharing"]
    levels = " / ".join(sharing)
    groups = data["memberships"]
    ppl = data["perplexity"]
    trained_low = [lang for lang in data["low_resource"] if lang in data["trained"]]
    untrained_low = [lang for lang in data["low_resource"] if lang not in data["trained"]]
    high = [lang for lang in ppl if lang not in data["low_resource"]]

    def values(langs: list[str], side: str) -> str:
        return ", ".join(f"{ppl[lang][side]:.2f}" for lang in langs)

    high_change = sum(ppl[lang]["change"] for lang in high) / len(high) if high else None
    align = data.get("align")
    lines = [f"Aligned on {_and(data['trained'])}: {align['steps']} steps of batch {align['batch_size']} "
             f"({align['seconds']:.0f} s of training).", ""] if align else []
    lines += [
        "| | base | aligned |", "|---|---|---|",
        f"| neurons shared by N = {levels} languages | {' / '.join(str(s['a']) for s in sharing.values())} | "
        f"{' / '.join(str(s['b']) for s in sharing.values())} |",
    ]
    for group in ("trained", "untrained"):
        specific, related = groups[group]["specific"], groups[group]["related"]
        lines.append(f"| {group} languages: specific / related memberships | {specific['a']} / {related['a']} | "
                     f"{specific['b']} / {related['b']} |")
    for label, langs in ((f"trained low-resource ({', '.join(trained_low)})", trained_low),
                         (f"untrained low-resource ({', '.join(untrained_low)})", untrained_low)):
        if langs:
            change = sum(ppl[lang]["change"] for lang in langs) / len(langs)
            lines.append(f"| held-out log-PPL, {label} | {values(langs, 'base')} | {values(langs, 'aligned')} "
                         f"(mean Δ {_signed(change, 2)}) |")
    if high:
        lines.append(f"| held-out log-PPL, high-resource (mean Δ) | | {_signed(high_change, 2)} |")
    return lines + [""] + alignment_verdicts(data)


def alignment_verdicts(data: dict) -> list[str]:
    """The verdicts of `steer compare` (`claims`), one sentence each, with their numbers."""
    claims = data["claims"]
    lines = []
    claim = claims.get("specific_to_related")
    if claim:
        s, r = claim["specific"], claim["related"]
        lines.append(f"- specific → related **{claim['verdict']}** (specific {s[0]} → {s[1]}, "
                     f"{_interval(claim['specific_ci'], 0)}; related {r[0]} → {r[1]}, {_interval(claim['related_ci'], 0)});")
    claim = claims.get("spontaneous_alignment")
    if claim:
        s, r = claim["untrained_specific"], claim["untrained_related"]
        lines.append(f"- spontaneous alignment **{claim['verdict']}** (the untrained languages' specific memberships "
                     f"{s[0]} → {s[1]}, {_interval(claim['untrained_specific_ci'], 0)}; related {r[0]} → {r[1]}, "
                     f"{_interval(claim['untrained_related_ci'], 0)});")
    claim = claims.get("lifts_low_resource")
    if claim:
        if claim.get("difference") is None:
            measured = claim.get("reason") or "not measured"
        else:
            measured = f"{_and(claim['low_resource'])} together {_fall(claim['difference'], claim['difference_ci'])}"
        for group in (claim.get("by_group") or {}).values():
            trained = "trained" if set(group["languages"]) <= set(data["trained"]) else "untrained"
            measured += (f"; the {trained} {_and(group['languages'])} alone: **{group['verdict']}** "
                         f"({_fall(group['difference'], group['difference_ci'], short=True)})")
        lines.append(f"- low-resource perplexity **{claim['verdict']}**: {measured}.")
    return lines


def _and(items: Sequence[str]) -> str:
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else list(items))


def _fall(difference: float, ci, short: bool = False) -> str:
    """A group's log-PPL change beyond the untrained high-resource languages' change, as a fall more or less."""
    more = "more" if difference < 0 else "less"
    if short:
        return f"{abs(difference):.2f} {more}, {_interval(ci, 2, -1 if difference < 0 else 1)}"
    return (f"fall {abs(difference):.2f} nats/token {more} than the untrained high-resource languages "
            f"({_interval(ci, 2, -1 if difference < 0 else 1)})")


def langid_rows(data: dict) -> list[str]:
    """Language-identification accuracy per language (docs/results/langid.json, benchmarks/langid_accuracy.py)."""
    lines = ["| language | n | accuracy | most common error |", "|---|---|---|---|"]
    for row in data["rows"]:
        wrong = f"{row['most_common_wrong']} ({row['most_common_wrong_count']})" if row["most_common_wrong"] else "–"
        lines.append(f"| {row['language']} | {row['n']} | {row['accuracy']:.3f} | {wrong} |")
    return lines


def speed_rows(data: dict) -> list[str]:
    """steer against the bare model (docs/results/speed.json, benchmarks/speed.py --json): the run's conditions,
    then each ratio beside its goal."""
    batches = sorted(int(key.rsplit("_b", 1)[1]) for key in data if key.startswith("generate_ratio_b"))
    goal = data.get("goal")
    target = f"≥ {goal:g}" if goal is not None else ""
    machine = data.get("machine") or {}
    where = ", ".join(filter(None, [data.get("device"), data.get("cpu"),
                                    f"{machine['cpu_count']} cores" if machine.get("cpu_count") else None,
                                    f"{data['threads']} torch thread{'s' if data['threads'] > 1 else ''}"
                                    if data.get("threads") else None]))
    conditions = ", ".join(filter(None, [
        (data.get("date") or "")[:10] or None, where, data.get("dtype"), f"{data.get('weights')} weights",
        f"{data['shape']} shape" if data.get("weights") == "random" and data.get("shape") else None,
        f"{data['collect_tokens']:,} tokens" if data.get("collect_tokens") else None,
        f"median of {data['repeats']}" if data.get("repeats") else None]))
    def per_batch(key: str, fmt: str) -> str:
        return " / ".join(format(data[f"{key}_b{b}"], fmt) for b in batches)

    named = " / ".join(str(b) for b in batches)
    lines = [f"Run: {conditions}.", "", "| figure | ratio | goal |", "|---|---|---|",
             f"| `steer.collect` ÷ bare HF decoder forward (tokens/s) | {data['collect_ratio']:.2f} | {target} |"]
    for b in batches:
        what = "steered `steer.generate` (one language deactivated)" if b == batches[0] else "steered `steer.generate`"
        lines.append(f"| {what} ÷ HF `generate`, batch {b} | {data[f'generate_ratio_b{b}']:.2f} | {target} |")
    lines += [
        f"| unsteered `steer.generate` ÷ HF `generate`, batch {named} | {per_batch('unsteered_generate_ratio', '.2f')} | |",
        f"| bare forward / collect: fraction of the {data.get('dtype', '')} matmul peak | {data['bare_forward_mfu']:.2f} / "
        f"{data['collect_mfu']:.2f} | |",
        f"| bare forward / collect: TFLOP/s | {data['bare_forward_tflops']:.3f} / {data['collect_tflops']:.3f} | |",
        f"| bare forward tokens/s; HF generate new tokens/s at batch {named} | {data['bare_forward_tok_s']:.0f}; "
        f"{per_batch('hf_generate_tok_s', '.1f')} | |",
    ]
    for entry in data.get("collect_memory") or []:
        lines.append(f"| collection peak RSS growth at {entry['tokens']:,} tokens | {entry['peak_growth_mb']:.0f} MB | flat |")
    return lines


def _family_label(family: dict) -> str:
    if family["kind"] == "learned":
        return f"learned push, {family['neurons']} neurons"
    if family["kind"] == "random":
        return f"learned push, random neurons (per-layer counts of {family['neurons']})"
    if family["kind"] == "residual":
        lr = f" (lr {family['lr']:g})" if "lr" in family else ""
        return f"learned residual-stream vector, after layer {family['layer']}{lr}"
    return f"diffmean rule (the default rule), {family['neurons']} neurons"


def _excludes_zero(ci) -> bool:
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def push_rows(data: dict) -> list[str]:
    """benchmarks/push_compare.py's result: fluent success [95% CI] of each push, overall and per target, beside the
    controls and ceilings; then each learned push's paired difference from its random-neuron control, the diffmean
    rule and the residual vector (* where the 95% interval excludes 0)."""
    results, targets = data["results"], data["targets"]
    families = {family["name"]: family for family in data["families"]}
    lines = ["| push | fluent, all targets | " + " | ".join(targets) + " |", "|---" * (len(targets) + 2) + "|"]
    for name, r in results.items():
        per = " | ".join(f"{r['per_target'][t]['forced']['fluent_success']:.2f}" for t in targets)
        lines.append(f"| {_family_label(families[name])} | {_rate(r['fluent_success'], r['fluent_success_ci'])} | {per} |")
    first = next(iter(results.values()))
    for label, key in (("unsteered", "unsteered"), ("ceiling: the model's own text", "own_text"),
                       ("ceiling: human text", "human_text")):
        per = " | ".join(f"{first['per_target'][t][key]['fluent_success']:.2f}" for t in targets)
        lines.append(f"| {label} | {_rate(first[key]['fluent_success'], first[key]['fluent_success_ci'])} | {per} |")
    names = {"random": "its random-neuron control", "diffmean": "the diffmean rule", "residual": "the residual vector"}

    def other(label: str, d: dict) -> str:  # what a learned push was compared with
        return names[label] if label == "random" or d.get("against") not in families else \
            f"the {_family_label(families[d['against']])}"

    for name, against in data["comparisons"].items():
        for label, d in against.items():
            per = " | ".join(_signed(d[t]["difference"], 2) + ("*" if _excludes_zero(d[t]["ci"]) else "")
                             for t in targets if t in d)
            overall = d["overall"]
            lines.append(f"| {_family_label(families[name])} − {other(label, d)} | {_signed(overall['difference'], 2)} "
                         f"[{_signed(overall['ci'][0], 2)}, {_signed(overall['ci'][1], 2)}]"
                         f"{'*' if _excludes_zero(overall['ci']) else ''} | {per} |")
    verdicts = []
    for name, against in data["comparisons"].items():
        for label, d in against.items():
            groups = {"ahead": [], "behind": [], "not shown": []}
            for t in targets:
                if t in d:
                    ci = d[t]["ci"]
                    groups["ahead" if ci[0] > 0 else "behind" if ci[1] < 0 else "not shown"].append(t)
            said = "; ".join(f"{word}: {', '.join(ts)}" for word, ts in (("ahead beyond the interval", groups["ahead"]),
                                                                         ("behind beyond the interval", groups["behind"]),
                                                                         ("no difference shown", groups["not shown"])) if ts)
            verdicts.append(f"- {_family_label(families[name])} against {other(label, d)}, per target: {said}.")
    bullets = verdicts + _tuning_lines(data)
    return lines + ([""] + bullets if bullets else [])


def _tuning_lines(data: dict) -> list[str]:
    """What was chosen on the tuning half before the evaluation half was read: the steps a learned push forces,
    and (when measured) the neuron set."""
    lines = []
    steps = data.get("push_steps_tuning")
    if steps:
        cells = ", ".join(f"{key} {_rate(c['fluent'], c['fluent_ci'])}" for key, c in steps["cells"].items())
        chosen = "all" if data["push_steps"] is None else data["push_steps"]
        lines.append(f"- Tuning half ({steps['prompts_per_pair']} prompts per pair), new tokens a learned push forces "
                     f"({steps['family']}): {cells}; chosen: {chosen}.")
    neurons = data.get("neurons_tuning")
    if neurons:
        cells = ", ".join(f"{name} {_rate(c['fluent'], c['fluent_ci'])}" for name, c in neurons["cells"].items())
        best = max(neurons["cells"], key=lambda name: neurons["cells"][name]["fluent"])
        lines.append(f"- Tuning half ({neurons['prompts_per_pair']} prompts per pair), the learned push's neurons: "
                     f"{cells}; the highest: {best}.")
    return lines


RENDERERS: dict[str, Callable[[dict], list[str]]] = {
    "forced": forced_rows,
    "demo": demo_rows,
    "delta-ppl": delta_ppl_rows,
    "alignment": alignment_rows,
    "langid": langid_rows,
    "speed": speed_rows,
    "push": push_rows,
}


# ------------------------------------------------------------------ the blocks

def source_line(folder: Path, file: str, data: dict) -> str:
    """The line above a table: its file, the command that made it, the commit (and a note on that commit)."""
    commit = (data.get("commit") or "")[:10]
    note = f" ({data['commit_note']})" if data.get("commit_note") else ""
    return (f"*From `{folder.parent.name}/{folder.name}/{file}`: `{data.get('command', '?')}`"
            f"{f' at {commit}' if commit else ''}{note}.*")


def render(kind: str, file: str, results_dir: str | Path) -> str:
    """The body of a block: the source line and the table `RENDERERS[kind]` makes of `results_dir/file`."""
    if kind not in RENDERERS:
        raise ValueError(f"README block of unknown kind '{kind}' (known: {', '.join(RENDERERS)})")
    folder = Path(results_dir)
    path = folder / file
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"README block '{kind} {file}': cannot read {path}: {error}") from None
    return source_line(folder, file, data) + "\n\n" + "\n".join(RENDERERS[kind](data)) + "\n"


def update_blocks(text: str, results_dir: str | Path) -> str:
    """`text` (the README) with every results block and forced-table block regenerated from `results_dir`."""
    text = BLOCK.sub(lambda m: m["open"] + render(m["kind"], m["file"], results_dir) + m["close"], text)
    return FORCED_BLOCK.sub(lambda m: m["open"] + render("forced", m["file"], results_dir) + m["close"], text)


def stale_blocks(text: str, results_dir: str | Path) -> list[str]:
    """The files of the blocks of `text` that differ from what their files make ("KIND FILE")."""
    stale = []
    for pattern, kind in ((BLOCK, None), (FORCED_BLOCK, "forced")):
        for match in pattern.finditer(text):
            kind_here = kind or match["kind"]
            if match["body"] != render(kind_here, match["file"], results_dir):
                stale.append(f"{kind_here} {match['file']}")
    return stale
