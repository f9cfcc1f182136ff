"""Compare two neuron sets of the same model shape: A (before, e.g. the base model) and B (after,
e.g. the aligned model), as in Zhang et al. (2025).

Pure functions on NeuronSets: counts by sharing N before / after, per-layer change per class,
overlap per class, and, given the languages an alignment was trained on, the change in specific
and related neuron counts for trained versus untrained languages (their Table 2: "spontaneous
multilingual alignment" is untrained languages moving the same way as trained ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from steer._io import file_header, prepare_out, write_json_atomic, write_text_atomic
from steer.bench.plots import plot_compare
from steer.bench.registry import Benchmark, Context, Job, register
from steer.languages import Lang
from steer.neurons import NeuronSet

CLASSES = ("specific", "related", "general")


@dataclass
class CompareBench:
    """`[bench.compare]`: two neuron sets of the config, A (before) and B (after), and the trained languages."""

    a: str = ""
    b: str = ""
    trained: list[Lang] | None = None

    def check(self, where: str) -> None:
        if not self.a or not self.b:
            raise ValueError(f"{where}: compare needs a = \"<neuron set>\" and b = \"<neuron set>\"")


def _restrict(neurons: NeuronSet, languages: list[str]) -> NeuronSet:
    if list(neurons.languages) == languages:
        return neurons
    rows = [neurons.index(lang) for lang in languages]
    return NeuronSet(languages, neurons.membership[rows], neurons.general, neurons.method, dict(neurons.params),
                     dict(neurons.meta))


def _change(a: float, b: float) -> dict:
    return {"a": a, "b": b, "change": b - a, "relative": (b - a) / a if a else None}


# Resampling noise for a count's change: neurons are drawn with replacement (the same draw for every count),
# and a change is "shown" only where its percentile interval excludes zero.
N_BOOTSTRAP = 2000
LEVEL = 0.95


def neuron_bootstrap(values: Int[Tensor, "neuron stat"], *, n_boot: int = N_BOOTSTRAP, level: float = LEVEL,
                     seed: int = 0) -> list[list[float]]:
    """Per column, the `level` percentile interval of the column's sum when the rows (neurons) are resampled
    with replacement, `n_boot` times.

    Exact and cheap at any model size: a resample's sums depend only on how often each *distinct* row is
    drawn, which is one multinomial draw over the distinct rows (a few dozen; the values are small counts).
    """
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"neuron_bootstrap needs a [neuron, stat] table with at least one row, got {tuple(values.shape)}")
    rows, counts = torch.unique(values.to(torch.int64), dim=0, return_counts=True)
    counts = counts.to(torch.float64).numpy()
    draws = np.random.default_rng(seed).multinomial(int(values.shape[0]), counts / counts.sum(), size=n_boot)
    sums = torch.from_numpy(draws).to(torch.float64) @ rows.to(torch.float64)  # [boot, stat]
    tail = (1 - level) / 2
    bounds = torch.quantile(sums, torch.tensor([tail, 1 - tail], dtype=torch.float64), dim=0)  # [2, stat]
    return bounds.T.tolist()


def shown(ci: Sequence[float] | None, direction: int) -> str:
    """'holds' when the interval lies wholly on the side `direction` (+1 up, -1 down) of zero, 'does not hold'
    when wholly on the other side, 'not shown' when it spans zero (or there is none)."""
    if ci is None:
        return "not shown"
    low, high = direction * ci[0], direction * ci[1]
    if min(low, high) > 0:
        return "holds"
    if max(low, high) < 0:
        return "does not hold"
    return "not shown"


def combined(verdicts: Sequence[str]) -> str:
    """All parts shown to hold: holds; any part shown to fail: does not hold; otherwise: not shown."""
    if verdicts and all(v == "holds" for v in verdicts):
        return "holds"
    if "does not hold" in verdicts:
        return "does not hold"
    return "not shown"


def compare_neuron_sets(a: NeuronSet, b: NeuronSet, trained: Sequence[str] | None = None) -> dict:
    """What changed from A to B. Both sets must have the same shape (layers × neurons).

    Only the languages of both sets are compared (sharing N is counted over them); the others
    are listed in `languages_dropped`. `trained`: languages the model was aligned on; the rest
    of the common languages are "untrained".
    """
    if (a.n_layers, a.d_mlp) != (b.n_layers, b.d_mlp):
        raise ValueError(
            f"cannot compare neuron sets of different model shapes: {a.n_layers}×{a.d_mlp} vs {b.n_layers}×{b.d_mlp}"
        )
    common = [lang for lang in a.languages if lang in b.languages]
    if not common:
        raise ValueError(f"the two neuron sets share no language ({a.languages} vs {b.languages})")
    dropped = sorted((set(a.languages) | set(b.languages)) - set(common))
    a, b = _restrict(a, common), _restrict(b, common)

    sharing_a, sharing_b = a.counts_by_sharing(), b.counts_by_sharing()
    by_sharing = {str(n): _change(sharing_a.get(n, 0), sharing_b.get(n, 0)) for n in range(1, len(common) + 1)}
    # Per neuron, what it adds to each count in A and in B (columns named in `stats`), for the intervals.
    spec_a, spec_b = a.class_mask("specific").flatten(), b.class_mask("specific").flatten()
    rel_a, rel_b = a.class_mask("related").flatten(), b.class_mask("related").flatten()
    stats = {"specific": (spec_a, spec_b), "related": (rel_a, rel_b)}

    layers_a, layers_b = a.counts_per_layer(), b.counts_per_layer()
    per_layer = {cls: {"a": layers_a[cls], "b": layers_b[cls],
                       "change": [y - x for x, y in zip(layers_a[cls], layers_b[cls])]} for cls in CLASSES}

    overlap = {}
    for cls in CLASSES:
        mask_a, mask_b = a.class_mask(cls), b.class_mask(cls)
        inter, union = int((mask_a & mask_b).sum()), int((mask_a | mask_b).sum())
        overlap[cls] = {"a": int(mask_a.sum()), "b": int(mask_b.sum()), "intersection": inter, "union": union,
                        "jaccard": inter / union if union else 1.0}
    inter = int((a.membership & b.membership).sum())
    union = int((a.membership | b.membership).sum())
    overlap["language_membership"] = {"a": int(a.membership.sum()), "b": int(b.membership.sum()),
                                      "intersection": inter, "union": union, "jaccard": inter / union if union else 1.0}

    per_a, per_b = a.counts_per_language(), b.counts_per_language()
    per_language = {lang: {cls: _change(per_a[lang][cls], per_b[lang][cls]) for cls in ("specific", "related")}
                    for lang in common}
    result = {
        "benchmark": "compare",
        "a": {"method": a.method, "params": a.params, "model": a.meta.get("model", {}).get("name"),
              "weights_hash": a.meta.get("model", {}).get("weights_hash"), "n": len(a)},
        "b": {"method": b.method, "params": b.params, "model": b.meta.get("model", {}).get("name"),
              "weights_hash": b.meta.get("model", {}).get("weights_hash"), "n": len(b)},
        "languages": common,
        "languages_dropped": dropped,
        "by_sharing": by_sharing,
        "per_layer": per_layer,
        "overlap": overlap,
        "per_language": per_language,
        "class_change": None,  # specific (N = 1) and related (N > 1) neurons, A -> B, with intervals
        "trained_vs_untrained": None,
        "noise": {"resampled": "neurons", "n_boot": N_BOOTSTRAP, "level": LEVEL, "seed": 0},
    }
    if trained is not None:
        trained = list(trained)
        unknown = [lang for lang in trained if lang not in common]
        if unknown:
            raise ValueError(f"trained language(s) {unknown} are not in both neuron sets ({common})")
        untrained = [lang for lang in common if lang not in trained]
        groups = {"trained": trained, "untrained": untrained}
        table = {"trained": trained, "untrained": untrained}
        for group, langs in groups.items():
            rows = [common.index(lang) for lang in langs]
            member_a = a.membership[rows].reshape(len(rows), a.n_layers * a.d_mlp)
            member_b = b.membership[rows].reshape(len(rows), b.n_layers * b.d_mlp)
            for cls, (mask_a, mask_b) in (("specific", (spec_a, spec_b)), ("related", (rel_a, rel_b))):
                stats[f"{cls}/{group}"] = ((member_a & mask_a).sum(0), (member_b & mask_b).sum(0))
        for cls in ("specific", "related"):
            table[cls] = {}
            for group, langs in groups.items():
                if not langs:
                    table[cls][group] = None
                    continue
                total_a = sum(per_a[lang][cls] for lang in langs)
                total_b = sum(per_b[lang][cls] for lang in langs)
                entry = _change(total_a, total_b)
                entry["mean_per_language_a"] = total_a / len(langs)
                entry["mean_per_language_b"] = total_b / len(langs)
                entry["mean_change_per_language"] = (total_b - total_a) / len(langs)
                table[cls][group] = entry
        result["trained_vs_untrained"] = table
    names = list(stats)
    change = torch.stack([stats[name][1].to(torch.int64) - stats[name][0].to(torch.int64) for name in names], 1)
    intervals = dict(zip(names, neuron_bootstrap(change)))
    result["class_change"] = {cls: {**_change(int(stats[cls][0].sum()), int(stats[cls][1].sum())),
                                    "ci": intervals[cls]} for cls in ("specific", "related")}
    if trained is not None:
        table = result["trained_vs_untrained"]
        follow = []
        for cls in ("specific", "related"):
            for group in ("trained", "untrained"):
                if table[cls][group] is not None:
                    table[cls][group]["ci"] = intervals[f"{cls}/{group}"]
            t, u = table[cls]["trained"], table[cls]["untrained"]
            if t is None or u is None:
                continue
            direction = {"holds": 1, "does not hold": -1}.get(shown(t["ci"], 1))
            if direction is not None:  # the trained languages' change is shown: do the untrained follow it?
                follow.append(shown(u["ci"], direction))
        # True: every shown trained change is followed beyond noise; False: one is reversed beyond noise;
        # None: not shown either way (intervals span zero, or no trained change beyond noise).
        verdict = combined(follow) if follow else "not shown"
        table["untrained_follow_trained"] = {"holds": True, "does not hold": False}.get(verdict)
    return result


def _fmt_change(entry: dict | None) -> str:
    if entry is None:
        return "–"
    rel = f" ({entry['relative']:+.0%})" if entry.get("relative") is not None else ""
    ci = f", CI {entry['ci'][0]:+.0f} … {entry['ci'][1]:+.0f}" if entry.get("ci") is not None else ""
    return f"{entry['a']} → {entry['b']} ({entry['change']:+d}{ci}){rel}"


def compare_markdown(result: dict, figure: str | None = None) -> str:
    """A markdown section for `report.md` describing a comparison."""
    lines = ["## Neuron sets compared: A → B", ""]
    lines.append(
        f"A = {result['a']['method']} ({result['a']['model'] or 'model ?'}), "
        f"B = {result['b']['method']} ({result['b']['model'] or 'model ?'}); languages: {', '.join(result['languages'])}"
        + (f" (dropped, not in both: {', '.join(result['languages_dropped'])})" if result["languages_dropped"] else "")
        + "."
    )
    lines.append("")
    if figure:
        lines += [f"![neuron counts before and after]({figure})", ""]
    ov = result["overlap"]
    lines.append(
        "Each panel compares the two sets neuron by neuron: how many neurons each language-sharing level N holds "
        "and how every layer's class counts move from A to B; "
        f"A and B agree on {ov['language_membership']['jaccard']:.0%} of (language, neuron) memberships (Jaccard)."
    )
    lines += ["", "| N (languages sharing) | A → B (change) |", "|---|---|"]
    lines += [f"| {n} | {_fmt_change(entry)} |" for n, entry in result["by_sharing"].items()]
    lines += ["", "| class | A | B | both | Jaccard |", "|---|---|---|---|---|"]
    lines += [f"| {cls} | {o['a']} | {o['b']} | {o['intersection']} | {o['jaccard']:.2f} |"
              for cls, o in ov.items()]
    table = result.get("trained_vs_untrained")
    if table:
        lines += ["", "Trained vs untrained languages (sum over the group's languages; Zhang et al. 2025, Table 2):", "",
                  "| group | languages | specific | related |", "|---|---|---|---|"]
        for group in ("trained", "untrained"):
            lines.append(f"| {group} | {', '.join(table[group]) or '–'} | {_fmt_change(table['specific'][group])} | "
                         f"{_fmt_change(table['related'][group])} |")
        follow = table["untrained_follow_trained"]
        noise = result.get("noise") or {}
        level = f"{noise.get('level', LEVEL):.0%} intervals over resampled neurons"
        if follow is None:
            lines += ["", f"Whether untrained languages change in the same direction as trained ones is not shown: "
                          f"the {level} of the changes include zero."]
        else:
            lines += ["", ("Untrained languages change in the same direction as trained ones, beyond the "
                           f"{level} (consistent with spontaneous multilingual alignment)." if follow else
                           "Untrained languages change in the opposite direction to trained ones, beyond the "
                           f"{level} (no sign of spontaneous multilingual alignment here).")]
    return "\n".join(lines) + "\n"


def write_compare_report(result: dict, out: str | Path) -> Path:
    """Write `out/compare.json`, `out/compare.png` and `out/report.md` (atomically); returns report.md's path."""
    out = prepare_out(out, "compare", option="out")
    header = file_header({"name": result["a"]["model"], "weights_hash": result["a"]["weights_hash"]},
                         model_b={"name": result["b"]["model"], "weights_hash": result["b"]["weights_hash"]})
    write_json_atomic(out / "compare.json", {**header, **result})
    plot_compare(result, out / "compare.png")
    return write_text_atomic(out / "report.md", "# steer: neuron set comparison\n\n" + compare_markdown(result, "compare.png"))


def _run(ctx: Context, spec: CompareBench, job: Job) -> dict:
    result = compare_neuron_sets(ctx.neurons[spec.a], ctx.neurons[spec.b], trained=spec.trained)
    plot_compare(result, job.figures[0])
    result["a"]["name"], result["b"]["name"] = spec.a, spec.b
    return result


register(Benchmark(
    kind="compare", spec=CompareBench, run=_run, figures=("{name}.png",),
    neuron_sets=lambda spec: [spec.a, spec.b],
    section=lambda result, figures: compare_markdown(result, figures[0]),
))
