"""The README's result tables are generated from the files under docs/results/ (benchmarks/readme_tables.py):
every block equals what its file makes, every file says which command and commit made it, and each renderer
and result-file copier does what it says on a small fixture."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from steer.bench.readme import (
    RENDERERS, alignment_rows, delta_ppl_rows, demo_rows, forced_rows, langid_rows, push_rows, speed_rows, stale_blocks,
    update_blocks,
)
from steer.bench.results import DEMO_KEYS, alignment_result, delta_ppl_result, demo_result

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
BLOCKS = re.compile(r"<!-- (?:results: (?P<kind>[\w\-]+)|forced-table:) (?P<file>[\w.\-]+) -->")


def test_readme_tables_equal_their_result_files():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert stale_blocks(readme, RESULTS) == [], \
        "a README table differs from its file under docs/results: run python benchmarks/readme_tables.py (make docs)"
    assert update_blocks(readme, RESULTS) == readme
    blocks = list(BLOCKS.finditer(readme))
    assert {m["kind"] or "forced" for m in blocks} >= {"forced", "demo", "delta-ppl", "alignment", "langid", "speed"}
    for match in blocks:  # each file names the command that made it and the full commit
        data = json.loads((RESULTS / match["file"]).read_text(encoding="utf-8"))
        assert data["command"], match["file"]
        assert re.fullmatch(r"[0-9a-f]{40}", data["commit"] or ""), f"{match['file']}: no full commit hash"


def test_a_stale_block_is_regenerated_and_the_rest_kept(tmp_path):
    (tmp_path / "l.json").write_text(json.dumps({**LANGID, "command": "python x", "commit": "a" * 40}))
    text = "intro\n<!-- results: langid l.json -->\nOLD BODY\n<!-- /results -->\nend\n"
    assert stale_blocks(text, tmp_path) == ["langid l.json"]
    fresh = update_blocks(text, tmp_path)
    assert fresh.startswith("intro\n<!-- results: langid l.json -->\n*From `")
    assert "`python x` at aaaaaaaaaa.*" in fresh and "| de | 200 | 0.995 | en (1) |" in fresh and "OLD BODY" not in fresh
    assert fresh.endswith("<!-- /results -->\nend\n")
    assert update_blocks(fresh, tmp_path) == fresh and stale_blocks(fresh, tmp_path) == []
    with pytest.raises(ValueError, match="unknown kind 'lang-id'"):
        update_blocks("<!-- results: lang-id l.json -->\n<!-- /results -->", tmp_path)
    with pytest.raises(ValueError, match="cannot read .*missing.json"):
        update_blocks("<!-- results: langid missing.json -->\n<!-- /results -->", tmp_path)


def test_forced_blocks_keep_their_markers(tmp_path):
    sweep = {"languages": ["de"], "command": "python x", "commit": "abc", "settings": [
        {"neurons": "n", "mode": "diffmean", "strength": 2.0, "suppress": "none", "phase": "all", "steps": 4, "n": 9,
         "raw": 0.5, "raw_ci": [0.2, 0.8], "fluent": 0.25, "fluent_ci": [0.0, 0.5], "per_target": {"de": {"fluent": 0.25}}}]}
    (tmp_path / "s.json").write_text(json.dumps(sweep))
    text = "intro\n<!-- forced-table: s.json -->\nOLD BODY\n<!-- /forced-table -->\nend\n"
    fresh = update_blocks(text, tmp_path)
    assert "OLD BODY" not in fresh and "0.25 [0.00, 0.50]" in fresh and "`python x` at abc" in fresh
    assert fresh.startswith("intro\n") and fresh.endswith("<!-- /forced-table -->\nend\n")
    assert forced_rows(sweep)[2].startswith("| n | diffmean | 2 | none | all | 4 | 9 |")


# ------------------------------------------------------------------ renderers on fixtures

DEMO = {
    "languages": ["en", "de"], "model": "m", "diagonal_mean_delta_logppl": 0.9071, "offdiagonal_mean_delta_logppl": 0.1532,
    "random_control_mean_delta_logppl": -0.0072, "random_control_cells": "diagonal",
    "diagonal_is_row_max_fraction": 0.4, "diagonal_is_column_max_fraction": 0.7,
    "forced_language_success": 0.4333, "forced_language_success_ci": [0.3265, 0.5368],
    "forced_language_success_raw": 0.45, "forced_language_success_raw_ci": [0.33, 0.55],
    "forced_language_random_control": 0.0185, "forced_language_random_control_ci": [0.004, 0.0337],
    "forced_language_random_control_seeds": 3, "forced_language_unsteered_rate": 0.0,
    "forced_language_own_text_rate": 0.8, "forced_language_human_text_rate": 0.8889, "forced_language_n": 90,
    "forced_language_prompt": "prefix", "forced_language_mode": "diffmean", "forced_language_strength": 3.0,
    "forced_language_suppress": "none", "forced_language_steps": 4,
}
LANGID = {"rows": [{"language": "en", "n": 200, "accuracy": 1.0, "most_common_wrong": None, "most_common_wrong_count": 0},
                   {"language": "de", "n": 200, "accuracy": 0.995, "most_common_wrong": "en", "most_common_wrong_count": 1}]}


def test_demo_rows():
    rows = demo_rows(DEMO)
    assert rows[:2] == ["| figure | value |", "|---|---|"]
    text = "\n".join(rows)
    for shown in ("mean over 2 languages) | **+0.907** |", "(off-diagonal mean) | +0.153 |", "own text | −0.007 |",
                  "| 0.40 / 0.70 |", "(diffmean 3, first 4 steps, prefix prompts): fluent success, 90 continuations | "
                  "**0.43 [0.33, 0.54]** |", "fluent or not | 0.45 [0.33, 0.55] |", "(3 seeds) | 0.02 [0.00, 0.03] |",
                  "unsteered | 0.00 |", "in the target | 0.80 / 0.89 |"):
        assert shown in text, shown


def test_delta_ppl_rows():
    spread = {"method": "m", "variant": "v", "languages": [], "n_texts": {"a": 8, "b": 6}, "n_random": 0, "rows": {},
              "summary": {"diagonal_mean_delta_logppl": None, "offdiagonal_mean_delta_logppl": None}}
    assert "over 6–8 held-out paragraphs" in delta_ppl_rows(spread)[0]
    data = {"method": "zhang2025", "variant": "specific+related", "languages": ["it", "dz"], "n_texts": 8,
            "n_random": 3, "rows": {"it": {"neurons": 40, "own": 0.5123, "others": 0.1011, "random": 0.003, "random_sd": 0.002},
                                    "dz": {"neurons": 0, "own": None, "others": None, "random": None, "random_sd": None}},
            "summary": {"diagonal_mean_delta_logppl": 0.5123, "offdiagonal_mean_delta_logppl": 0.1011,
                        "random_control_mean_delta_logppl": 0.003}}
    rows = delta_ppl_rows(data)
    assert rows[0] == ("zhang2025 specific + related neurons of it, dz, switched off one language at a time; "
                       "Δ log-PPL in nats/token over 8 held-out paragraphs per language.")
    assert "mean ± sd, 3 seeds" in rows[2]
    assert rows[4:] == ["| it | 40 | +0.512 | +0.101 | +0.003 ± 0.002 |", "| dz | 0 | – | – | – |",
                        "| **mean** | | **+0.512** | +0.101 | +0.003 |"]


ALIGNMENT = {
    "trained": ["eu", "om"], "low_resource": ["eu", "om", "km"], "align": {"steps": 80, "batch_size": 4, "seconds": 643.7},
    "by_sharing": {"1": {"a": 137, "b": 130}, "2": {"a": 57, "b": 46}},
    "memberships": {"trained": {"specific": {"a": 35, "b": 44}, "related": {"a": 43, "b": 34}},
                    "untrained": {"specific": {"a": 102, "b": 86}, "related": {"a": 197, "b": 174}}},
    "perplexity": {"en": {"base": 3.8, "aligned": 3.5, "change": -0.3}, "de": {"base": 4.0, "aligned": 3.8, "change": -0.2},
                   "eu": {"base": 5.41, "aligned": 4.61, "change": -0.8}, "om": {"base": 6.89, "aligned": 6.17, "change": -0.72},
                   "km": {"base": 3.57, "aligned": 3.50, "change": -0.07}},
    "claims": {
        "specific_to_related": {"verdict": "does not hold", "specific": [137, 130], "related": [92, 77],
                                "specific_ci": [-23.0, 9.0], "related_ci": [-25.0, -6.0]},
        "spontaneous_alignment": {"verdict": "does not hold", "untrained_specific": [102, 86],
                                  "untrained_related": [197, 174], "untrained_specific_ci": [-29.0, -4.0],
                                  "untrained_related_ci": [-41.0, -6.0]},
        "lifts_low_resource": {"verdict": "holds", "low_resource": ["eu", "om", "km"], "difference": -0.28,
                               "difference_ci": [-0.40, -0.17], "by_group": {
                                   "low_resource_trained": {"languages": ["eu", "om"], "difference": -0.51,
                                                            "difference_ci": [-0.69, -0.35], "verdict": "holds"},
                                   "low_resource_untrained": {"languages": ["km"], "difference": 0.18,
                                                              "difference_ci": [0.12, 0.24], "verdict": "does not hold"}}},
    },
}


def test_alignment_rows():
    text = "\n".join(alignment_rows(ALIGNMENT))
    for shown in ("Aligned on eu and om: 80 steps of batch 4 (644 s of training).",
                  "| neurons shared by N = 1 / 2 languages | 137 / 57 | 130 / 46 |",
                  "| trained languages: specific / related memberships | 35 / 43 | 44 / 34 |",
                  "| untrained languages: specific / related memberships | 102 / 197 | 86 / 174 |",
                  "| held-out log-PPL, trained low-resource (eu, om) | 5.41, 6.89 | 4.61, 6.17 (mean Δ −0.76) |",
                  "| held-out log-PPL, untrained low-resource (km) | 3.57 | 3.50 (mean Δ −0.07) |",
                  "| held-out log-PPL, high-resource (mean Δ) | | −0.25 |",
                  "- specific → related **does not hold** (specific 137 → 130, CI −23 … +9; related 92 → 77, CI −25 … −6);",
                  "related 197 → 174, CI −41 … −6);",
                  "eu, om and km together fall 0.28 nats/token more than the untrained high-resource languages "
                  "(CI +0.17 … +0.40)", "the trained eu and om alone: **holds** (0.51 more, CI +0.35 … +0.69)",
                  "the untrained km alone: **does not hold** (0.18 less, CI +0.12 … +0.24)."):
        assert shown in text, shown


def test_langid_rows():
    assert langid_rows(LANGID) == ["| language | n | accuracy | most common error |", "|---|---|---|---|",
                                   "| en | 200 | 1.000 | – |", "| de | 200 | 0.995 | en (1) |"]


def test_speed_rows():
    data = {"date": "2026-12-07T10:00:00+00:00", "device": "cpu", "cpu": "x86_64", "threads": 2,
            "machine": {"cpu_count": 2}, "dtype": "float32", "weights": "gemma-3-270m", "collect_tokens": 3949,
            "repeats": 3, "goal": 0.9, "collect_ratio": 0.971, "generate_ratio_b1": 0.94, "generate_ratio_b8": 0.99,
            "unsteered_generate_ratio_b1": 1.01, "unsteered_generate_ratio_b8": 1.0, "bare_forward_mfu": 0.53,
            "collect_mfu": 0.52, "bare_forward_tflops": 0.086, "collect_tflops": 0.083, "bare_forward_tok_s": 430.2,
            "hf_generate_tok_s_b1": 8.0, "hf_generate_tok_s_b8": 37.0, "collect_memory": []}
    rows = speed_rows(data)
    assert rows[0] == ("Run: 2026-12-07, cpu, x86_64, 2 cores, 2 torch threads, float32, gemma-3-270m weights, "
                       "3,949 tokens, median of 3.")
    assert rows[4:] == [
        "| `steer.collect` ÷ bare HF decoder forward (tokens/s) | 0.97 | ≥ 0.9 |",
        "| steered `steer.generate` (one language deactivated) ÷ HF `generate`, batch 1 | 0.94 | ≥ 0.9 |",
        "| steered `steer.generate` ÷ HF `generate`, batch 8 | 0.99 | ≥ 0.9 |",
        "| unsteered `steer.generate` ÷ HF `generate`, batch 1 / 8 | 1.01 / 1.00 | |",
        "| bare forward / collect: fraction of the float32 matmul peak | 0.53 / 0.52 | |",
        "| bare forward / collect: TFLOP/s | 0.086 / 0.083 | |",
        "| bare forward tokens/s; HF generate new tokens/s at batch 1 / 8 | 430; 8.0 / 37.0 | |",
    ]
    data["collect_memory"] = [{"tokens": 944, "peak_growth_mb": 0.2}]
    assert speed_rows(data)[-1] == "| collection peak RSS growth at 944 tokens | 0 MB | flat |"
    data.update(weights="random", shape="llama-1b", threads=1, goal=None)
    assert "1 torch thread, float32, random weights, llama-1b shape," in speed_rows(data)[0]
    assert speed_rows(data)[4].endswith("| 0.97 |  |")


def test_push_rows():
    """Each push with its interval, the controls, and paired differences starred only where the interval excludes 0."""
    def rates(fluent, ci=(0.1, 0.9)):
        return {"fluent_success": fluent, "fluent_success_ci": list(ci)}

    def result(overall, de, ja):
        return {**rates(overall, (overall - 0.1, overall + 0.1)),
                "per_target": {t: {"forced": rates(v), "unsteered": rates(0.0), "own_text": rates(0.9),
                                   "human_text": rates(0.95)} for t, v in (("de", de), ("ja", ja))},
                "unsteered": rates(0.0, (0.0, 0.02)), "own_text": rates(0.9, (0.8, 1.0)),
                "human_text": rates(0.95, (0.9, 1.0))}

    data = {"targets": ["de", "ja"],
            "families": [{"name": "specificity:500", "kind": "learned", "neurons": "specificity:500"},
                         {"name": "random:specificity:500", "kind": "random", "neurons": "specificity:500"},
                         {"name": "residual:9", "kind": "residual", "layer": 9}],
            "results": {"specificity:500": result(0.8, 0.9, 0.7), "random:specificity:500": result(0.6, 0.5, 0.7),
                        "residual:9": result(0.3, 0.4, 0.2)},
            "comparisons": {"specificity:500": {
                "random": {"overall": {"difference": 0.2, "ci": [0.05, 0.35]}, "de": {"difference": 0.4, "ci": [0.1, 0.7]},
                           "ja": {"difference": 0.0, "ci": [-0.2, 0.2]}},
                "residual": {"overall": {"difference": 0.5, "ci": [-0.01, 0.9]}, "de": {"difference": 0.5, "ci": [0.2, 0.8]},
                             "ja": {"difference": 0.5, "ci": [-0.1, 0.9]}}}}}
    assert push_rows(data) == [
        "| push | fluent, all targets | de | ja |", "|---|---|---|---|",
        "| learned push, specificity:500 neurons | 0.80 [0.70, 0.90] | 0.90 | 0.70 |",
        "| learned push, random neurons (per-layer counts of specificity:500) | 0.60 [0.50, 0.70] | 0.50 | 0.70 |",
        "| learned residual-stream vector, after layer 9 | 0.30 [0.20, 0.40] | 0.40 | 0.20 |",
        "| unsteered | 0.00 [0.00, 0.02] | 0.00 | 0.00 |",
        "| ceiling: the model's own text | 0.90 [0.80, 1.00] | 0.90 | 0.90 |",
        "| ceiling: human text | 0.95 [0.90, 1.00] | 0.95 | 0.95 |",
        "| learned push, specificity:500 neurons − its random-neuron control | +0.20 [+0.05, +0.35]* | +0.40* | +0.00 |",
        "| learned push, specificity:500 neurons − the residual vector | +0.50 [−0.01, +0.90] | +0.50* | +0.50 |",
        "",
        "- learned push, specificity:500 neurons against its random-neuron control, per target: ahead beyond the "
        "interval: de; no difference shown: ja.",
        "- learned push, specificity:500 neurons against the residual vector, per target: ahead beyond the interval: "
        "de; no difference shown: ja.",
    ]
    # what the tuning half chose, before the evaluation half was read: the steps, and the neuron set
    data.update(push_steps=None, push_steps_tuning={"family": "specificity:500", "prompts_per_pair": 3, "cells": {
        "4": {"fluent": 0.6, "fluent_ci": [0.5, 0.7]}, "all": {"fluent": 0.8, "fluent_ci": [0.7, 0.9]}}},
        neurons_tuning={"prompts_per_pair": 3, "cells": {"specificity:500": {"fluent": 0.8, "fluent_ci": [0.7, 0.9]},
                                                         "specificity:4000": {"fluent": 0.85, "fluent_ci": [0.8, 0.9]}}})
    data["families"][2]["lr"] = 2.0
    data["comparisons"]["specificity:500"]["residual"]["against"] = "residual:9"  # named: which vector, which rule
    rows = push_rows(data)
    assert rows[4] == "| learned residual-stream vector, after layer 9 (lr 2) | 0.30 [0.20, 0.40] | 0.40 | 0.20 |"
    assert rows[9].startswith("| learned push, specificity:500 neurons − the learned residual-stream vector, after "
                              "layer 9 (lr 2) | +0.50")
    assert rows[-2:] == [
        "- Tuning half (3 prompts per pair), new tokens a learned push forces (specificity:500): 4 0.60 [0.50, 0.70], "
        "all 0.80 [0.70, 0.90]; chosen: all.",
        "- Tuning half (3 prompts per pair), the learned push's neurons: specificity:500 0.80 [0.70, 0.90], "
        "specificity:4000 0.85 [0.80, 0.90]; the highest: specificity:4000."]


def test_every_kind_has_a_renderer_test():
    assert set(RENDERERS) == {"forced", "demo", "delta-ppl", "alignment", "langid", "speed", "push"}


# ------------------------------------------------------------------ copying a run's figures into a result file

def test_demo_result_keeps_the_figures_and_where_they_came_from():
    summary = {**DEMO, "seconds": {"this_run": 1238.3}, "meta": {"model": {"name": "m"}, "corpus": {"source": "c"}}}
    with pytest.raises(ValueError, match="records no command and commit"):
        demo_result(summary)
    given = {"command": "steer demo --out d", "commit": "b" * 40, "ignored": 1}
    data = demo_result(summary, given)
    assert list(data)[:2] == ["command", "commit"] and data["commit"] == "b" * 40 and "ignored" not in data
    assert {key: data[key] for key in DEMO_KEYS} == DEMO and data["seconds"] == 1238.3
    assert demo_rows(data) == demo_rows(DEMO)
    own = demo_result({**summary, "command": "steer demo --out e", "commit": None}, given)  # the run's own wins
    assert own["command"] == "steer demo --out e" and own["commit"] is None
    with pytest.raises(ValueError, match="has no 'forced_language_n'"):
        demo_result({k: v for k, v in summary.items() if k != "forced_language_n"}, given)


def test_delta_ppl_result_per_row():
    result = {"benchmark": "delta_ppl", "method": "zhang2025", "rows": ["it", "nl"], "columns": ["it", "nl"], "n_texts": 8,
              "variants": {"specific+related": {
                  "n_neurons": {"it": 40, "nl": 30}, "delta_log_ppl": [[0.5, 0.1], [0.2, 0.7]],
                  "random": {"n_seeds": 3, "delta_log_ppl_mean": [[0.01, None], [None, 0.03]],
                             "delta_log_ppl_sd": [[0.001, None], [None, 0.002]]},
                  "summary": {"diagonal_mean_delta_logppl": 0.6, "offdiagonal_mean_delta_logppl": 0.15,
                              "random_control_mean_delta_logppl": 0.02}}}}
    data = delta_ppl_result(result, {"command": "steer bench g.toml", "commit": "c" * 40})
    assert data["rows"]["nl"] == {"neurons": 30, "own": 0.7, "others": 0.2, "random": 0.03, "random_sd": 0.002}
    assert data["n_random"] == 3 and data["languages"] == ["it", "nl"] and data["summary"]["offdiagonal_mean_delta_logppl"] == 0.15
    with pytest.raises(ValueError, match="not a ΔPPL result with the variant 'specific'"):
        delta_ppl_result(result, {"command": "x", "commit": None}, variant="specific")


def test_alignment_result_decides_the_verdicts_again():
    compare = {"languages": ["en", "eu"], "by_sharing": {"1": {"a": 5, "b": 4}, "2": {"a": 1, "b": 2}, "3": {"a": 0, "b": 0}},
               "class_change": {"specific": {"a": 5, "b": 4, "ci": [-3.0, -1.0]}, "related": {"a": 1, "b": 2, "ci": [1.0, 2.0]}},
               "trained_vs_untrained": {
                   "specific": {"trained": {"a": 2, "b": 1}, "untrained": {"a": 3, "b": 3, "ci": [-1.0, 1.0]}},
                   "related": {"trained": {"a": 0, "b": 1}, "untrained": {"a": 1, "b": 1, "ci": [-1.0, 1.0]}}}}
    alignment = {"model": {"name": "base"}, "aligned_model": {"name": "aligned"}, "trained": ["eu"], "perplexity": None,
                 "claims": {"stale": {"verdict": "old"}}}
    data = alignment_result(compare, alignment, {"command": "steer compare a b", "commit": "d" * 40, "commit_note": "n"},
                            align={"steps": 8, "seconds": 9.5, "config": {"batch_size": 2}})
    assert data["commit_note"] == "n" and data["align"] == {"steps": 8, "batch_size": 2, "seconds": 9.5}
    assert data["by_sharing"] == {"1": {"a": 5, "b": 4}, "2": {"a": 1, "b": 2}}  # empty levels left out
    assert data["memberships"]["trained"]["related"] == {"a": 0, "b": 1}
    assert data["claims"]["specific_to_related"]["verdict"] == "holds" and "stale" not in data["claims"]
    assert data["claims"]["spontaneous_alignment"]["verdict"] == "not shown" and data["low_resource"] == ["eu"]
