"""Language-identification accuracy on the held-out eval split of the default corpus.

    python benchmarks/langid_accuracy.py [--corpus libreoffice] [--min-confidence 0.5] [--json out.json]

The README's table is docs/results/langid.json (`--json docs/results/langid.json`, then
benchmarks/readme_tables.py); the file records the command and the commit.

Candidates are the corpus languages.  Prints a markdown table: language, n, accuracy, the most
common wrong label (with its count).  Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from steer.corpus import load_corpus
from steer.langid import DEFAULT_MIN_CONFIDENCE, detect_language


def measure(corpus_name: str | None = None, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> dict:
    corpus = load_corpus(corpus_name)
    rows = []
    start = time.perf_counter()
    n_texts = 0
    for lang in corpus.languages:
        texts = corpus.eval[lang]
        got = detect_language(texts, candidates=corpus.languages, min_confidence=min_confidence)
        n_texts += len(texts)
        wrong = Counter(g for g in got if g != lang)
        top = wrong.most_common(1)
        rows.append({
            "language": lang,
            "n": len(texts),
            "accuracy": sum(g == lang for g in got) / len(texts) if texts else float("nan"),
            "most_common_wrong": top[0][0] if top else None,
            "most_common_wrong_count": top[0][1] if top else 0,
        })  # fmt: skip
    seconds = time.perf_counter() - start
    return {
        "corpus": corpus.source,
        "fingerprint": corpus.fingerprint(),
        "candidates": corpus.languages,
        "min_confidence": min_confidence,
        "texts_per_second": n_texts / seconds if seconds else None,
        "rows": rows,
    }


def to_markdown(result: dict) -> str:
    from steer.bench.readme import langid_rows  # the README's table of docs/results/langid.json

    return "\n".join(langid_rows(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=None, help="corpus name or path (default: the LibreOffice corpus)")
    ap.add_argument("--min-confidence", type=float, default=DEFAULT_MIN_CONFIDENCE)
    ap.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    args = ap.parse_args()
    if args.json is not None:  # before measuring: a new file, or one this script wrote
        from steer._io import check_out_file, is_steer_json

        check_out_file(args.json, is_steer_json, what="result file", option="--json")
    result = measure(args.corpus, args.min_confidence)
    print(f"corpus: {result['corpus']}  candidates: {','.join(result['candidates'])}  "
          f"min_confidence: {result['min_confidence']}  ({result['texts_per_second']:.0f} texts/s)\n")  # fmt: skip
    print(to_markdown(result))
    if args.json:
        from steer._io import file_header, write_json_atomic
        from steer.provenance import command_line, provenance

        write_json_atomic(args.json, {**provenance(command_line()), **file_header(), **result})


if __name__ == "__main__":
    main()
