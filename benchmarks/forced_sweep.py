"""Choose the forced-language setting on the tuning half, then measure it on the evaluation half.

    python benchmarks/forced_sweep.py --out forced_sweep/ [--neurons zhang2025,lape,specificity:500@12-17]
        [--modes diffmean,std] [--strengths 1,2] [--suppress source,none] [--phases all,output] [--steps all,4]
        [--settings 'zhang2025/diffmean/2/source/all;lape/std/1/none/output/4'] [--shard 0/2] [--threads 1]
        [--eval-top 1]

1. statistics (`steer.collect`, --max-tokens per language, with sq_sums for the "std" push) on the embedded
   model, and each neuron set of --neurons: a method (zhang2025, lape, specificity:K for K neurons per
   language), optionally restricted to a range of layers (@12-17);
2. the sweep: every neurons × mode × strength × suppress × phase × steps setting (steps: force only until that
   many new tokens are predicted; "all": every step) continues the first
   --sweep-prompts prompts of each source language's tuning half, forced to every other language; raw and
   fluent success (`steer.bench.forced.judge`) against bars from the unsteered model's own text (the first
   --n-baseline tuning prompts per language);
3. the --eval-top settings with the highest fluent success are measured on the first --eval-prompts prompts
   of each language's evaluation half (all ordered pairs), beside the unsteered rate and the ceiling (the
   model's own text in the target judged the same way).
Every continuation uses the same decoding (greedy, --repetition-penalty, --no-repeat-ngram-size).
--shard i/n runs every n-th setting only (run n of them side by side, one thread each; a run without
--shard then reuses all their units). Units are saved in OUT/units-KEY-*.json as they finish; tables go to
stdout and OUT/sweep.json, OUT/eval.json; for every mode/suppress/phase/steps swept over more than one neuron set and
strength, OUT/grid-MODE-SUPPRESS-PHASE-STEPS.png shows fluent success per target over that neurons × strength grid.
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path


def neuron_set(spec: str, stats):
    """'zhang2025', 'lape', 'specificity:500', each optionally '@first-last' (layers)."""
    import steer

    name, _, layers = spec.partition("@")
    method, _, k = name.partition(":")
    neurons = steer.identify(stats, method=method, **({"n_per_language": int(k)} if k else {}))
    if layers:
        first, last = (int(x) for x in layers.split("-"))
        neurons = neurons.select(layers=range(first, last + 1), classes=("specific", "related"))
    return neurons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--languages", default=None, help="default: the embedded corpus' ten")
    parser.add_argument("--max-tokens", type=int, default=10000, help="statistics tokens per language")
    parser.add_argument("--neurons", default="zhang2025")
    parser.add_argument("--modes", default="diffmean")
    parser.add_argument("--strengths", default="1,2,4")
    parser.add_argument("--suppress", default="source")
    parser.add_argument("--phases", default="all")
    parser.add_argument("--steps", default="all", help="comma list of new-token counts to force for, or all")
    parser.add_argument("--sweep-prompts", type=int, default=1)
    parser.add_argument("--eval-prompts", type=int, default=2)
    parser.add_argument("--eval-top", type=int, default=1, help="how many of the best settings to evaluate")
    parser.add_argument("--n-baseline", type=int, default=20, help="tuning prompts per language for the bars")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repetition-penalty", type=float, default=1.2)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=3)
    parser.add_argument("--settings", help="instead of the product: 'neurons/mode/strength/suppress/phase[/steps];...'")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th setting from the i-th, no evaluation")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()

    import torch

    import steer
    from steer._io import write_json_atomic
    from steer.bench._common import Partial, read_keyed, stable_hash, texts_fingerprint
    from steer.bench.forced import continue_prompts, halves, judge, make_prompts, own_language_bars
    from steer.bench.plots import plot_forced_grid

    if args.threads:
        torch.set_num_threads(args.threads)
    shard, shards = (int(x) for x in args.shard.split("/"))
    args.out.mkdir(parents=True, exist_ok=True)
    model = steer.load_model()
    corpus = steer.load_corpus(progress=False)
    languages = args.languages.split(",") if args.languages else corpus.languages
    stats_dir = args.out / f"stats-{args.max_tokens}-sq"
    try:
        stats = steer.ActivationStats.load(stats_dir, model=model)
    except ValueError:
        stats = steer.collect(model, corpus, languages=languages, max_tokens_per_language=args.max_tokens,
                              max_length=128, sq_sums=True, checkpoint=args.out / "checkpoint")
        stats.save(stats_dir)
    specs = args.neurons.split(",") + ([s.split("/")[0] for s in args.settings.split(";")] if args.settings else [])
    neurons = {spec: neuron_set(spec, stats) for spec in dict.fromkeys(specs)}
    tune, evaluate = halves({lang: list(corpus.eval[lang]) for lang in languages})
    prompts = {"tune": make_prompts(tune, languages, max(args.n_baseline, args.sweep_prompts), 8),
               "eval": make_prompts(evaluate, languages, args.eval_prompts, 8)}
    decoding = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                    repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size)
    # What a unit depends on beyond its name (half, prompt count, setting, target). The files are named by this
    # key, so a run with other inputs never overwrites another's units.
    key = stable_hash({"stats": stats.meta.get("plan"), "decoding": decoding, "languages": languages,
                       "halves": texts_fingerprint({"tune": [tune[lang] for lang in languages],
                                                    "eval": [evaluate[lang] for lang in languages]}),
                       "n_baseline": args.n_baseline})
    known: dict = {}
    for path in sorted(args.out.glob(f"units-{key}-*.json")):  # every shard's finished units
        known.update((read_keyed(path, key) or {}).get("done", {}))
    partial = Partial(args.out / f"units-{key}-{shard}of{shards}.json", key)

    first = next(iter(neurons))

    def unit(name: str, half: str, k: int, target: str | None, forcing: dict | None, spec: str | None = None):
        if name in known:
            return known[name]
        chosen = {s: prompts[half][s][:k] for s in languages}
        return partial.get(name, lambda: continue_prompts(model, neurons[spec or first], stats, chosen, target, forcing,
                                                          decoding))

    baseline = unit("baseline", "tune", args.n_baseline, None, None)
    bars = own_language_bars(baseline, languages)
    fields = ("neurons", "mode", "strength", "suppress", "phase", "steps")
    if args.settings:
        grid = [dict(zip(fields, setting.split("/"))) for setting in args.settings.split(";")]
    else:
        grid = [dict(zip(fields, values)) for values in itertools.product(
            args.neurons.split(","), args.modes.split(","), args.strengths.split(","), args.suppress.split(","),
            args.phases.split(","), args.steps.split(","))]
    for setting in grid:
        setting["strength"] = float(setting["strength"])
        setting["steps"] = None if setting.get("steps", "all") == "all" else int(setting["steps"])

    def name_of(setting: dict) -> str:  # without steps when forcing every step: the names of earlier runs' units
        return "/".join(str(setting[k]) for k in fields if setting[k] is not None)

    def score(setting: dict, half: str, k: int) -> dict:
        forcing = {key: setting[key] for key in ("mode", "strength", "suppress", "phase")}
        forcing["steps"] = setting["steps"] or 0  # generate's 0: every step (None would be its DEFAULT_STEPS)
        raw, fluent, per_target, pairs = [], [], {}, {}
        for target in languages:
            done = unit(f"{half}{k}/{name_of(setting)}/{target}", half, k, target, forcing, setting["neurons"])
            r, f, nll = judge(done, target, bars[target], range(len(done["sources"])))
            raw, fluent = raw + r, fluent + f
            per_target[target] = {"raw": sum(r) / len(r), "fluent": sum(f) / len(f),
                                  "fluency_nll": sum(nll) / len(nll) if nll else None}
            pairs[target] = [{"source": s, "text": t, "detected": d, "fluent": ok}
                             for s, t, d, ok in zip(done["sources"], done["texts"], done["detected"], f)]
        return {**setting, "raw": sum(raw) / len(raw), "fluent": sum(fluent) / len(fluent), "per_target": per_target,
                "n_neurons": len(neurons[setting["neurons"]]), "continuations": pairs}

    print(f"{len(grid)} settings, shard {shard}/{shards}: {len(grid[shard::shards])} here", flush=True)
    scored = []
    for i, setting in enumerate(grid[shard::shards]):
        scored.append(score(setting, "tune", args.sweep_prompts))
        print(f"[{i + 1}] {name_of(setting)}: fluent {scored[-1]['fluent']:.2f} raw {scored[-1]['raw']:.2f}", flush=True)
    if shards > 1:
        return

    rows = sorted(scored, key=lambda r: (-r["fluent"], -r["raw"]))  # one shard: every setting of the grid
    write_json_atomic(args.out / "sweep.json", {"languages": languages, "decoding": decoding, "settings": rows})

    def rest(row: dict) -> tuple:
        return row["mode"], row["suppress"], row["phase"], row["steps"] or "all"

    for (mode, suppress, phase, steps), group in itertools.groupby(sorted(rows, key=lambda r: tuple(map(str, rest(r)))),
                                                                  rest):
        group = sorted(group, key=lambda r: list(neurons).index(r["neurons"]))  # the neurons in the order given
        if len({r["neurons"] for r in group}) > 1 and len({r["strength"] for r in group}) > 1:
            path = plot_forced_grid(group, languages, args.out / f"grid-{mode}-{suppress}-{phase}-{steps}.png",
                                    title=f"fluent success, tuning half ({args.sweep_prompts} prompt per source): {mode}, "
                                          f"suppress {suppress}, phase {phase}, steps {steps}")
            print(f"grid figure: {path}")
    print(f"\nsweep, tuning half ({args.sweep_prompts} prompt per source, {len(languages) * (len(languages) - 1)} "
          f"pairs), fluent success per target:")
    print("| neurons | n | mode | strength | suppress | phase | steps | raw | fluent | " + " | ".join(languages) + " |")
    print("|---" * (9 + len(languages)) + "|")
    for row in rows:
        per = " | ".join(f"{row['per_target'][t]['fluent']:.2f}" for t in languages)
        print(f"| {row['neurons']} | {row['n_neurons']} | {row['mode']} | {row['strength']:g} | {row['suppress']} | "
              f"{row['phase']} | {row['steps'] or 'all'} | {row['raw']:.2f} | {row['fluent']:.2f} | {per} |")

    if args.eval_top < 1:
        return
    plain = unit(f"eval{args.eval_prompts}/unsteered", "eval", args.eval_prompts, None, None)
    own = {t: judge(plain, t, bars[t], [r for r, s in enumerate(plain["sources"]) if s == t])[1] for t in languages}
    unsteered = [judge(plain, t, bars[t], [r for r, s in enumerate(plain["sources"]) if s != t])[1] for t in languages]
    evaluated = []
    for best in rows[: args.eval_top]:
        setting = {k: best[k] for k in fields}
        result = score(setting, "eval", args.eval_prompts)
        result["unsteered_fluent"] = sum(map(sum, unsteered)) / sum(map(len, unsteered))
        result["own_text_fluent"] = sum(map(sum, own.values())) / sum(map(len, own.values()))
        for t in languages:
            result["per_target"][t]["own_text_fluent"] = sum(own[t]) / len(own[t])
        evaluated.append(result)
        print(f"\nevaluation half, {name_of(setting)} ({args.eval_prompts} prompts per source): fluent "
              f"{result['fluent']:.2f}, raw {result['raw']:.2f}, unsteered fluent {result['unsteered_fluent']:.2f}, "
              f"own text (ceiling) {result['own_text_fluent']:.2f}")
        print("| target | raw | fluent | own text fluent | NLL of fluent successes |\n|---|---|---|---|---|")
        for target, row in result["per_target"].items():
            nll = "–" if row["fluency_nll"] is None else f"{row['fluency_nll']:.2f}"
            print(f"| {target} | {row['raw']:.2f} | {row['fluent']:.2f} | {row['own_text_fluent']:.2f} | {nll} |")
    write_json_atomic(args.out / "eval.json", {"settings": evaluated})


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
