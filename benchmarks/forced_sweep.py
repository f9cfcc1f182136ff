"""Choose the forced-language setting on the tuning half, then measure it on the evaluation half.

    python benchmarks/forced_sweep.py --out forced_sweep/ [--languages en,de,...] [--threads 2]

1. statistics (`steer.collect`, --max-tokens per language) and zhang2025 neurons on the embedded model;
2. the sweep: every mode × strength × suppress setting continues the first --sweep-prompts prompts
   of each source language's tuning half, forced to every other language; raw and fluent success;
3. the setting with the highest fluent success is measured on the first --eval-prompts prompts of
   each language's evaluation half (all ordered pairs), beside the unsteered rate.
Every continuation uses the same decoding (greedy, --repetition-penalty, --no-repeat-ngram-size).
Results go to OUT/sweep.json and OUT/eval.json (reused when rerun), and tables to stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--languages", default=None, help="default: the embedded corpus' ten")
    parser.add_argument("--max-tokens", type=int, default=10000, help="statistics tokens per language")
    parser.add_argument("--modes", default="diffmean,add,set")
    parser.add_argument("--strengths", default="1,2,4")
    parser.add_argument("--suppress", default="others,source,none")
    parser.add_argument("--sweep-prompts", type=int, default=1)
    parser.add_argument("--eval-prompts", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repetition-penalty", type=float, default=1.2)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=3)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()

    import torch

    import steer
    from steer.bench.forced import forced_language

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model = steer.load_model()
    corpus = steer.load_corpus(progress=False)
    languages = args.languages.split(",") if args.languages else corpus.languages
    stats_dir = args.out / f"stats-{args.max_tokens}"
    try:
        stats = steer.ActivationStats.load(stats_dir, model=model)
    except ValueError:
        stats = steer.collect(model, corpus, languages=languages, max_tokens_per_language=args.max_tokens,
                              max_length=128, checkpoint=args.out / "checkpoint")
        stats.save(stats_dir)
    neurons = steer.identify(stats, method="zhang2025")
    eval_texts = {lang: list(corpus.eval[lang]) for lang in languages}
    decoding = dict(max_new_tokens=args.new_tokens, repetition_penalty=args.repetition_penalty,
                    no_repeat_ngram_size=args.no_repeat_ngram_size)
    common = dict(languages=languages, **decoding)

    sweep = forced_language(model, neurons, stats, eval_texts, n_prompts=1, sweep_n_prompts=args.sweep_prompts,
                            sweep_modes=args.modes.split(","), sweep_strengths=[float(s) for s in args.strengths.split(",")],
                            sweep_suppress=args.suppress.split(","), checkpoint=args.out / "sweep_units.json", **common)
    (args.out / "sweep.json").write_text(json.dumps(sweep, indent=1, ensure_ascii=False))
    settings = sorted(sweep["sweep"]["settings"], key=lambda row: (-(row["fluent"] or 0), -(row["raw"] or 0)))
    print(f"\nsweep, tuning half ({args.sweep_prompts} prompt per source, {len(languages) * (len(languages) - 1)} pairs)")
    print("| mode | strength | suppress | raw | fluent | " + " | ".join(languages) + " |")
    print("|---" * (5 + len(languages)) + "|")
    for row in settings:
        per = " | ".join(f"{row['fluent_per_target'][t]:.2f}" for t in languages)
        print(f"| {row['mode']} | {row['strength']:g} | {row['suppress']} | {row['raw']:.2f} | {row['fluent']:.2f} | {per} |")
    best = settings[0]

    result = forced_language(model, neurons, stats, eval_texts, n_prompts=args.eval_prompts, mode=best["mode"],
                             strength=best["strength"], suppress=best["suppress"], sweep_modes=(),
                             checkpoint=args.out / "eval_units.json", **common)
    (args.out / "eval.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(f"\nevaluation half, {best['mode']} {best['strength']:g} suppress {best['suppress']} "
          f"({args.eval_prompts} prompts per source): fluent {result['fluent_success_rate']:.2f}, "
          f"raw {result['success_rate']:.2f}, unsteered fluent {result['unsteered_fluent_rate']:.2f}")
    print("| target | raw | fluent | NLL of fluent successes | NLL of own text |\n|---|---|---|---|---|")
    for target, row in result["per_target"].items():
        nll = "–" if row["fluency_nll"] is None else f"{row['fluency_nll']:.2f}"
        own = "–" if row["own_language_nll"] is None else f"{row['own_language_nll']:.2f}"
        print(f"| {target} | {row['raw']:.2f} | {row['fluent']:.2f} | {nll} | {own} |")


if __name__ == "__main__":
    main()
