"""The small result files under docs/results/: the figures the README quotes, copied out of a run's output
together with where they came from (the command that made them and its commit).

Each function takes what a run wrote (a demo's summary.json, a `steer bench` ΔPPL result, `steer compare`'s
compare.json and alignment.json) and returns the dict to save; `steer.bench.readme` renders it into the
README. Provenance comes from the run's own file where it records one (a demo summary since `steer demo`
writes it), else from `provenance` (a dict with at least "command" and "commit"); without either it is refused.
"""

from __future__ import annotations

from typing import Sequence

from steer._io import file_header

# The demo figures the README quotes (keys of summary.json).
DEMO_KEYS = (
    "languages", "model",
    "diagonal_mean_delta_logppl", "offdiagonal_mean_delta_logppl", "random_control_mean_delta_logppl",
    "random_control_cells", "diagonal_is_row_max_fraction", "diagonal_is_column_max_fraction",
    "forced_language_success", "forced_language_success_ci", "forced_language_success_raw",
    "forced_language_success_raw_ci", "forced_language_random_control", "forced_language_random_control_ci",
    "forced_language_random_control_seeds", "forced_language_unsteered_rate", "forced_language_own_text_rate",
    "forced_language_human_text_rate", "forced_language_n", "forced_language_prompt", "forced_language_mode",
    "forced_language_strength", "forced_language_suppress", "forced_language_steps",
)
PROVENANCE_KEYS = ("command", "commit", "commit_note", "uncommitted_changes", "note")


def _provenance(recorded: dict, given: dict | None, what: str) -> dict:
    """The run's own provenance where it has a command, else `given`; "command" and "commit" first."""
    source = recorded if recorded.get("command") else (given or {})
    if not source.get("command"):
        raise ValueError(f"{what} records no command and commit: pass the run's provenance (command, commit)")
    kept = {key: source[key] for key in PROVENANCE_KEYS if key in source}
    kept.setdefault("commit", None)
    return kept


def demo_result(summary: dict, provenance: dict | None = None) -> dict:
    """The README's demo figures from a demo's summary.json."""
    missing = [key for key in DEMO_KEYS if key not in summary]
    if missing:
        raise ValueError(f"the demo summary has no '{missing[0]}': is it a summary.json of `steer demo`?")
    meta = summary.get("meta") or {}
    return {**_provenance(summary, provenance, "the demo summary"), **file_header(meta.get("model")),
            "corpus": meta.get("corpus"), **{key: summary[key] for key in DEMO_KEYS},
            "seconds": (summary.get("seconds") or {}).get("this_run")}


def delta_ppl_result(result: dict, provenance: dict | None = None, variant: str = "specific+related") -> dict:
    """Each row language's own ΔPPL against its mean on the other languages and the random control (a
    `steer bench` delta_ppl result, e.g. benchmarks/generalise.toml's)."""
    if result.get("benchmark") != "delta_ppl" or variant not in result.get("variants", {}):
        raise ValueError(f"not a ΔPPL result with the variant '{variant}'")
    entry = result["variants"][variant]
    rows, columns = result["rows"], result["columns"]
    random = entry.get("random") or {}
    table = {}
    for i, lang in enumerate(rows):
        j = columns.index(lang)
        others = [v for k, v in enumerate(entry["delta_log_ppl"][i]) if k != j and v is not None]
        table[lang] = {
            "neurons": entry["n_neurons"][lang],
            "own": entry["delta_log_ppl"][i][j],
            "others": sum(others) / len(others) if others else None,
            "random": random["delta_log_ppl_mean"][i][j] if random else None,
            "random_sd": random["delta_log_ppl_sd"][i][j] if random else None,
        }
    meta = result.get("meta") or {}
    return {**_provenance(result, provenance, "the ΔPPL result"), **file_header(meta.get("model")),
            "corpus": meta.get("corpus"), "method": result["method"], "variant": variant, "languages": rows,
            "n_texts": result["n_texts"], "n_random": random.get("n_seeds", 0), "rows": table,
            "summary": entry["summary"]}


def alignment_result(compare: dict, alignment: dict, provenance: dict, *, align: dict | None = None,
                     low_resource: Sequence[str] | None = None) -> dict:
    """Base vs aligned from `steer compare`'s compare.json and alignment.json: counts by sharing level, trained
    and untrained memberships, held-out log-PPL, and the verdicts, decided again by this checkout's
    `alignment_claims` from the stored counts and per-text perplexities (so verdicts added since the run
    are there too). `align`: the aligned model's align.json (steps, batch size, seconds)."""
    from steer.bench.alignment import alignment_claims
    from steer.languages import LOW_RESOURCE

    low_resource = list(LOW_RESOURCE if low_resource is None else low_resource)
    trained = list(alignment["trained"])
    ppl = alignment.get("perplexity")
    claims = alignment_claims(compare, ppl, trained, low_resource)
    sharing = {n: {"a": level["a"], "b": level["b"]} for n, level in compare["by_sharing"].items()
               if level["a"] or level["b"]}
    groups = compare["trained_vs_untrained"]
    memberships = {group: {cls: {"a": groups[cls][group]["a"], "b": groups[cls][group]["b"]}
                           for cls in ("specific", "related")} for group in ("trained", "untrained")}
    config = (align or {}).get("config") or {}
    return {
        **_provenance({}, provenance, "the alignment run"),
        **file_header(alignment.get("model")), "aligned_model": alignment.get("aligned_model"),
        "languages": compare["languages"], "trained": trained,
        "low_resource": [lang for lang in compare["languages"] if lang in low_resource],
        "align": {"steps": (align or {}).get("steps"), "batch_size": config.get("batch_size"),
                  "seconds": (align or {}).get("seconds")} if align else None,
        "by_sharing": sharing, "memberships": memberships,
        "perplexity": {lang: {k: entry[k] for k in ("base", "aligned", "change")} for lang, entry in (ppl or {}).items()},
        "claims": claims,
    }
