"""Base vs aligned model: perplexity before/after and whether Zhang et al. 2025's claims hold.

`steer align` makes the aligned model; `steer compare BASE.json ALIGNED.json --trained eu,om
--base-model M --aligned-model DIR` then writes this section beside the neuron-set comparison
(`write_alignment_report`).
The claims checked, each with the numbers behind the verdict:

1. alignment turns language-specific neurons into language-related ones (fewer N = 1, more N > 1);
2. "spontaneous multilingual alignment": languages the alignment never trained on change the same way;
3. alignment lifts low-resource languages (their held-out log-PPL falls more than that of the untrained
   high-resource languages, which share the fine-tuning's domain adaptation but not its languages).

A verdict is decided against resampling noise, never by a sign alone: "holds" when the change's
percentile interval (bootstrap over neurons for counts, over held-out texts for perplexity) lies on
the claimed side of zero, "does not hold" on the other side, "not shown" when it spans zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from steer._io import file_header, write_json_atomic, write_text_atomic
from steer.bench.compare import LEVEL, N_BOOTSTRAP, combined, shown
from steer.corpus import Corpus, load_corpus
from steer.languages import LOW_RESOURCE
from steer.models import load_model, model_info
from steer.scoring import perplexity


def alignment_perplexity(base, aligned, corpus, *, languages: Sequence[str] | None = None, n_eval: int = 8,
                         max_length: int = 128, batch_size: int = 8) -> dict[str, dict]:
    """log-PPL of each language's held-out split under the base and the aligned model, pooled over tokens,
    with the per-text values (`per_text`) the verdicts resample."""
    languages = list(languages or corpus.languages)
    result = {}
    for lang in languages:
        texts = corpus.eval[lang][:n_eval]
        before = perplexity(base, texts, batch_size=batch_size, max_length=max_length)
        after = perplexity(aligned, texts, batch_size=batch_size, max_length=max_length)
        result[lang] = {"base": before["log_ppl"], "aligned": after["log_ppl"],
                        "change": after["log_ppl"] - before["log_ppl"],
                        "per_text": {"base": before["per_text"]["log_ppl"], "aligned": after["per_text"]["log_ppl"],
                                     "n_tokens_base": before["per_text"]["n_tokens"],
                                     "n_tokens_aligned": after["per_text"]["n_tokens"]}}
    return result


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def text_bootstrap(ppl: dict[str, dict], languages: Sequence[str], *, n_boot: int = N_BOOTSTRAP,
                   seed: int = 0) -> dict[str, Float[Tensor, " boot"]]:
    """Per language, the pooled log-PPL change (aligned − base) in `n_boot` resamples of its held-out texts
    (drawn with replacement, each language on its own). Needs `per_text` values, at least two texts each."""
    generator = torch.Generator().manual_seed(seed)
    draws = {}
    for lang in languages:
        per_text = ppl[lang].get("per_text")
        if not per_text:
            raise ValueError(f"'{lang}': no per-text perplexities to resample (made by alignment_perplexity)")
        rows = [(a, b, na, nb) for a, b, na, nb in zip(per_text["aligned"], per_text["base"],
                                                       per_text["n_tokens_aligned"], per_text["n_tokens_base"])
                if a is not None and b is not None]
        if len(rows) < 2:
            raise ValueError(f"'{lang}': {len(rows)} scored held-out text(s); resampling needs at least 2")
        after, before, n_after, n_before = torch.tensor(rows, dtype=torch.float64).T
        picks = torch.randint(len(rows), (n_boot, len(rows)), generator=generator)
        weights = torch.zeros(n_boot, len(rows), dtype=torch.float64).scatter_add_(
            1, picks, torch.ones(n_boot, len(rows), dtype=torch.float64))  # [boot, text]: times drawn
        draws[lang] = (weights @ (n_after * after)) / (weights @ n_after) - (weights @ (n_before * before)) / (weights @ n_before)
    return draws


def _interval(draws: Tensor, level: float = LEVEL) -> list[float]:
    tail = (1 - level) / 2
    return torch.quantile(draws, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()


def _lifts_low_resource(ppl: dict[str, dict], trained: Sequence[str], low_resource: Sequence[str]) -> dict:
    """Low-resource languages' mean log-PPL change against the untrained high-resource languages' (the same
    fine-tuning on the same domain, without their language trained): a fall beyond the text-resampling noise."""
    low = [lang for lang in ppl if lang in low_resource]
    control = [lang for lang in ppl if lang not in low_resource and lang not in trained]
    groups = {
        "low_resource_trained": [lang for lang in low if lang in trained],
        "low_resource_untrained": [lang for lang in low if lang not in trained],
        "high_resource": [lang for lang in ppl if lang not in low],
        "high_resource_untrained": control,
    }
    changes = {name: _mean([ppl[lang]["change"] for lang in langs]) for name, langs in groups.items()}
    claim = {"verdict": "not shown", "low_resource": low, "control": control,
             "low_resource_mean_change": _mean([ppl[lang]["change"] for lang in low]),
             "control_mean_change": _mean([ppl[lang]["change"] for lang in control]),
             "difference": None, "difference_ci": None, "low_resource_ci": None, "control_ci": None,
             "per_language_ci": {}, "by_group": {}, "mean_log_ppl_change": changes, "groups": groups, "reason": None}
    if not low:
        claim["reason"] = "no low-resource language was evaluated"
        return claim
    if not control:
        claim["reason"] = "no untrained high-resource language to compare the change with"
    try:
        draws = text_bootstrap(ppl, low + control)
    except ValueError as error:
        claim["reason"] = str(error)
        return claim
    claim["per_language_ci"] = {lang: _interval(d) for lang, d in draws.items()}
    low_draws = torch.stack([draws[lang] for lang in low]).mean(0)
    claim["low_resource_ci"] = _interval(low_draws)
    if control:
        control_draws = torch.stack([draws[lang] for lang in control]).mean(0)
        claim["control_ci"] = _interval(control_draws)
        claim["difference"] = claim["low_resource_mean_change"] - claim["control_mean_change"]
        claim["difference_ci"] = _interval(low_draws - control_draws)
        claim["verdict"] = shown(claim["difference_ci"], -1)
        # the same test for the trained and the untrained low-resource languages apart (the verdict is the pooled one)
        for name in ("low_resource_trained", "low_resource_untrained"):
            langs = groups[name]
            if not langs:
                continue
            group_draws = torch.stack([draws[lang] for lang in langs]).mean(0) - control_draws
            difference = changes[name] - claim["control_mean_change"]
            ci = _interval(group_draws)
            claim["by_group"][name] = {"languages": langs, "mean_change": changes[name], "difference": difference,
                                       "difference_ci": ci, "verdict": shown(ci, -1)}
    return claim


def alignment_claims(compare: dict, ppl: dict[str, dict] | None, trained: Sequence[str],
                     low_resource: Sequence[str]) -> dict:
    """Verdicts on the paper's three claims from a `compare_neuron_sets` result and perplexities.

    Each verdict is "holds" (the change's interval lies on the claimed side of zero), "does not hold" (on
    the other side) or "not shown" (it spans zero, or cannot be measured: `reason`). Neuron counts are
    resampled over neurons (`compare_neuron_sets`); perplexities over held-out texts, and a low-resource
    fall counts only beyond the fall of the untrained high-resource languages.
    """
    change = compare.get("class_change") or {}
    specific, related = change.get("specific"), change.get("related")
    if specific is None or related is None:
        raise ValueError("the comparison has no class changes with intervals: make it with compare_neuron_sets")
    claims = {
        "specific_to_related": {
            "verdict": combined([shown(specific["ci"], -1), shown(related["ci"], 1)]),
            "specific": [specific["a"], specific["b"]], "related": [related["a"], related["b"]],
            "specific_ci": specific["ci"], "related_ci": related["ci"],
        }
    }
    table = compare.get("trained_vs_untrained") or {}
    untrained = (table.get("specific") or {}).get("untrained")
    untrained_related = (table.get("related") or {}).get("untrained")
    if untrained is not None and untrained_related is not None:
        claims["spontaneous_alignment"] = {
            "verdict": combined([shown(untrained.get("ci"), -1), shown(untrained_related.get("ci"), 1)]),
            "untrained_specific": [untrained["a"], untrained["b"]],
            "untrained_related": [untrained_related["a"], untrained_related["b"]],
            "untrained_specific_ci": untrained.get("ci"), "untrained_related_ci": untrained_related.get("ci"),
        }
    if ppl:
        claims["lifts_low_resource"] = _lifts_low_resource(ppl, trained, low_resource)
    return claims


CLAIM_TEXT = {
    "specific_to_related": "Alignment turns language-specific neurons into language-related ones",
    "spontaneous_alignment": "Languages the alignment did not train on move the same way (spontaneous alignment)",
    "lifts_low_resource": "Alignment lowers the held-out perplexity of low-resource languages more than of "
                          "untrained high-resource ones",
}


def _ci(ci: Sequence[float] | None, fmt: str = "+.0f") -> str:
    return f"CI {ci[0]:{fmt}} … {ci[1]:{fmt}}" if ci is not None else "no CI"


def _count(pair: Sequence[int], ci: Sequence[float] | None) -> str:
    return f"{pair[0]} → {pair[1]} ({pair[1] - pair[0]:+d}, {_ci(ci)})"


def alignment_markdown(claims: dict, ppl: dict[str, dict] | None, trained: Sequence[str]) -> str:
    lines = ["## Does alignment change language neurons as Zhang et al. 2025 report?", "",
             f"A claim **holds** when the {LEVEL:.0%} interval of its change lies wholly on the claimed side of zero, "
             "**does not hold** when it lies wholly on the other side, and is **not shown** when it spans zero. "
             f"Intervals: {N_BOOTSTRAP} resamples of the neurons (counts) or of each language's held-out texts "
             "(perplexity).", ""]
    for key, claim in claims.items():
        if key == "specific_to_related":
            numbers = (f"specific neurons {_count(claim['specific'], claim['specific_ci'])}, "
                       f"related {_count(claim['related'], claim['related_ci'])}")
        elif key == "spontaneous_alignment":
            numbers = (f"untrained languages' specific memberships "
                       f"{_count(claim['untrained_specific'], claim['untrained_specific_ci'])}, related "
                       f"{_count(claim['untrained_related'], claim['untrained_related_ci'])}")
        else:
            parts = [f"mean Δ log-PPL (aligned − base): low-resource ({', '.join(claim['low_resource']) or '–'})"
                     f" {_signed(claim['low_resource_mean_change'])} ({_ci(claim['low_resource_ci'], '+.3f')})",
                     f"untrained high-resource ({', '.join(claim['control']) or '–'}) "
                     f"{_signed(claim['control_mean_change'])} ({_ci(claim['control_ci'], '+.3f')})"]
            if claim["difference"] is not None:
                parts.append(f"difference {claim['difference']:+.3f} ({_ci(claim['difference_ci'], '+.3f')})")
            for name, group in (claim.get("by_group") or {}).items():
                parts.append(f"{name.replace('_', ' ')} ({', '.join(group['languages'])}) alone: difference "
                             f"{group['difference']:+.3f} ({_ci(group['difference_ci'], '+.3f')}), {group['verdict']}")
            numbers = "; ".join(parts)
        reason = f"; {claim['reason']}" if claim.get("reason") else ""
        lines.append(f"- {CLAIM_TEXT[key]}: **{claim['verdict']}** on this model ({numbers}{reason}).")
    if ppl:
        cis = (claims.get("lifts_low_resource") or {}).get("per_language_ci") or {}
        lines += ["", f"Held-out log-PPL (nats/token) before and after; trained languages: {', '.join(trained)}.", "",
                  "| language | trained | base | aligned | Δ | Δ 95% CI |", "|---|---|---|---|---|---|"]
        for lang, entry in ppl.items():
            ci = f"{cis[lang][0]:+.3f} … {cis[lang][1]:+.3f}" if lang in cis else "–"
            lines.append(f"| {lang} | {'yes' if lang in trained else 'no'} | {entry['base']:.3f} | "
                         f"{entry['aligned']:.3f} | {entry['change']:+.3f} | {ci} |")
    return "\n".join(lines) + "\n"


def _signed(value: float | None) -> str:
    return f"{value:+.3f}" if value is not None else "–"


def _described(side: dict) -> dict:
    """The model of one side of a comparison, as its neuron set recorded it."""
    return {"name": side.get("model"), "weights_hash": side.get("weights_hash")}


def write_alignment_report(compare: dict, out: str | Path, trained: Sequence[str], *, base=None, aligned=None,
                           corpus=None, n_eval: int = 8) -> str:
    """The verdicts on the claims into `out/alignment.json`, and their section appended to `out/report.md`
    (written before by `write_compare_report`); returns the section.

    `compare`: a `compare_neuron_sets` result, A = base, B = aligned. With both `base` and `aligned`
    (loaded models, or names / folders) the held-out log-PPL of `corpus` (a Corpus, a name / path,
    or None: the embedded corpus; its first `n_eval` eval texts) before and after enters the claims.
    """
    out = Path(out)
    trained = list(trained)
    if (base is None) != (aligned is None):
        raise ValueError("give both the base and the aligned model for the perplexity before/after, or neither")
    ppl = None
    if base is not None and aligned is not None:
        corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
        base = load_model(base) if isinstance(base, (str, Path)) else base
        aligned = load_model(aligned) if isinstance(aligned, (str, Path)) else aligned
        ppl = alignment_perplexity(base, aligned, corpus, languages=compare["languages"], n_eval=n_eval)
    claims = alignment_claims(compare, ppl, trained, LOW_RESOURCE)
    header = file_header(base if ppl is not None else _described(compare["a"]),
                         aligned_model=model_info(aligned).to_dict() if ppl is not None else _described(compare["b"]))
    write_json_atomic(out / "alignment.json", {**header, "trained": trained, "claims": claims, "perplexity": ppl})
    section = alignment_markdown(claims, ppl, trained)
    report = out / "report.md"
    write_text_atomic(report, report.read_text() + "\n" + section)
    return section
