"""Base vs aligned model: perplexity before/after and whether Zhang et al. 2025's claims hold.

`steer align` makes the aligned model; `steer compare BASE.json ALIGNED.json --trained eu,om
--base-model M --aligned-model DIR` then writes this section beside the neuron-set comparison
(`write_alignment_report`).
The claims checked, each with the numbers behind the verdict:

1. alignment turns language-specific neurons into language-related ones (fewer N = 1, more N > 1);
2. "spontaneous multilingual alignment": languages the alignment never trained on change the same way;
3. alignment lifts low-resource languages (their held-out log-PPL falls).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from steer._io import file_header, write_json_atomic, write_text_atomic
from steer.corpus import Corpus, load_corpus
from steer.languages import LOW_RESOURCE
from steer.models import load_model, model_info
from steer.scoring import perplexity


def alignment_perplexity(base, aligned, corpus, *, languages: Sequence[str] | None = None, n_eval: int = 8,
                         max_length: int = 128, batch_size: int = 8) -> dict[str, dict]:
    """log-PPL of each language's held-out split under the base and the aligned model."""
    languages = list(languages or corpus.languages)
    result = {}
    for lang in languages:
        texts = corpus.eval[lang][:n_eval]
        before = perplexity(base, texts, batch_size=batch_size, max_length=max_length)["log_ppl"]
        after = perplexity(aligned, texts, batch_size=batch_size, max_length=max_length)["log_ppl"]
        result[lang] = {"base": before, "aligned": after, "change": after - before}
    return result


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def alignment_claims(compare: dict, ppl: dict[str, dict] | None, trained: Sequence[str],
                     low_resource: Sequence[str]) -> dict:
    """Verdicts on the paper's three claims from a `compare_neuron_sets` result and perplexities."""
    by_sharing = compare["by_sharing"]
    specific = by_sharing["1"]
    related_a = sum(entry["a"] for n, entry in by_sharing.items() if n != "1")
    related_b = sum(entry["b"] for n, entry in by_sharing.items() if n != "1")
    claims = {
        "specific_to_related": {
            "holds": specific["change"] < 0 and related_b > related_a,
            "specific": [specific["a"], specific["b"]], "related": [related_a, related_b],
        }
    }
    table = compare.get("trained_vs_untrained") or {}
    untrained = (table.get("specific") or {}).get("untrained")
    untrained_related = (table.get("related") or {}).get("untrained")
    if untrained is not None and untrained_related is not None:
        claims["spontaneous_alignment"] = {
            "holds": untrained["change"] < 0 and untrained_related["change"] > 0,
            "untrained_specific": [untrained["a"], untrained["b"]],
            "untrained_related": [untrained_related["a"], untrained_related["b"]],
        }
    if ppl:
        low = [lang for lang in low_resource if lang in ppl]
        groups = {
            "low_resource_trained": [lang for lang in low if lang in trained],
            "low_resource_untrained": [lang for lang in low if lang not in trained],
            "high_resource": [lang for lang in ppl if lang not in low],
        }
        changes = {name: _mean([ppl[lang]["change"] for lang in langs]) for name, langs in groups.items()}
        low_changes = [ppl[lang]["change"] for lang in low]
        claims["lifts_low_resource"] = {
            "holds": bool(low_changes) and _mean(low_changes) < 0,
            "mean_log_ppl_change": changes, "groups": groups,
        }
    return claims


CLAIM_TEXT = {
    "specific_to_related": "Alignment turns language-specific neurons into language-related ones",
    "spontaneous_alignment": "Languages the alignment did not train on move the same way (spontaneous alignment)",
    "lifts_low_resource": "Alignment lowers the held-out perplexity of low-resource languages",
}


def alignment_markdown(claims: dict, ppl: dict[str, dict] | None, trained: Sequence[str]) -> str:
    lines = ["## Does alignment change language neurons as Zhang et al. 2025 report?", ""]
    for key, claim in claims.items():
        verdict = "**holds**" if claim["holds"] else "**does not hold**"
        if key == "specific_to_related":
            numbers = (f"specific {claim['specific'][0]} → {claim['specific'][1]}, "
                       f"related {claim['related'][0]} → {claim['related'][1]}")
        elif key == "spontaneous_alignment":
            numbers = (f"untrained languages: specific {claim['untrained_specific'][0]} → "
                       f"{claim['untrained_specific'][1]}, related {claim['untrained_related'][0]} → "
                       f"{claim['untrained_related'][1]}")
        else:
            numbers = ", ".join(f"{name.replace('_', ' ')} {value:+.3f}" for name, value in
                                claim["mean_log_ppl_change"].items() if value is not None)
            numbers = f"mean Δ log-PPL (aligned − base): {numbers}"
        lines.append(f"- {CLAIM_TEXT[key]}: {verdict} on this model ({numbers}).")
    if ppl:
        lines += ["", f"Held-out log-PPL (nats/token) before and after; trained languages: {', '.join(trained)}.", "",
                  "| language | trained | base | aligned | Δ |", "|---|---|---|---|---|"]
        for lang, entry in ppl.items():
            lines.append(f"| {lang} | {'yes' if lang in trained else 'no'} | {entry['base']:.3f} | "
                         f"{entry['aligned']:.3f} | {entry['change']:+.3f} |")
    return "\n".join(lines) + "\n"


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
