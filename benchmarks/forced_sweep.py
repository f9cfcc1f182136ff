"""Choose the forced-language setting on the tuning half, then measure it on the evaluation half.

    python benchmarks/forced_sweep.py --out DIR [--prompt prefix|sentence] [--neurons specificity:1000,lape]
        [--modes diffmean] [--strengths 1,2] [--suppress none] [--phases all] [--steps 4,all]
        [--settings 'specificity:1000/diffmean/2/none/all/4;...'] [--sweep-prompts 3] [--shard 0/2]
        [--eval SETTING] [--eval-prompts 3] [--n-random 3] [--threads 1]

A thin command line over `steer.bench.forced` (`ForcedRun`): the protocol, the judge and the
controls are the library's, as in the `[bench.forced]` benchmark.
1. statistics (`steer.collect`, --max-tokens per language, with sq_sums) on the embedded model, cached in
   DIR; the neuron sets of the settings (`steer.bench.forced.neuron_set`: zhang2025, lape, specificity:K,
   each optionally @first-last layers);
2. the sweep: each setting (neurons/mode/strength/suppress/phase/steps; steps "all" = every step) forces every
   ordered pair of the *tuning* half, --sweep-prompts prompts per pair, each from its own paragraph (at least
   20 paragraphs per target); raw and fluent success with 95% intervals over paragraphs -> DIR/sweep-PROMPT.json;
3. --eval SETTING (or --eval best: the sweep's best fluent setting; a one-shard run only) measures one
   setting on the *evaluation* half with every control (unsteered, --n-random random-neuron seeds, own-text
   and human-text ceilings) -> DIR/eval-PROMPT.json (a `ForcedResult` with the command and the commit).
Units are saved as they finish in DIR/units-KEY-*.json (KEY: a hash of what they depend on), so runs resume,
and --shard i/n runs every n-th setting (n of them side by side; a later run reuses all their units).
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
from pathlib import Path

FIELDS = ("neurons", "mode", "strength", "suppress", "phase", "steps")


def parse_setting(text: str) -> dict:
    values = text.split("/")
    if not 4 <= len(values) <= 6:
        raise SystemExit(f"a setting is neurons/mode/strength/suppress[/phase[/steps]], got '{text}'")
    setting = dict(zip(FIELDS, values))
    setting["strength"] = float(setting["strength"])
    setting.setdefault("phase", "all")
    if "steps" in setting:
        from steer.forcing import parse_steps

        setting["steps"] = parse_steps(setting["steps"])
    return setting


def commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def load_or_collect_stats(out: Path, model, corpus, languages, max_tokens: int):
    """The statistics the sweep forces with (with sq_sums), read from OUT/stats-LANGS-TOKENS-sq or collected there."""
    import steer

    stats_dir = out / f"stats-{'-'.join(languages)}-{max_tokens}-sq"
    try:
        return steer.ActivationStats.load(stats_dir, model=model)
    except (ValueError, OSError):
        stats = steer.collect(model, corpus, languages=languages, max_tokens_per_language=max_tokens,
                              max_length=128, sq_sums=True, checkpoint=out / "checkpoint")
        stats.save(stats_dir)
        return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--languages", default=None, help="default: the embedded corpus' ten")
    parser.add_argument("--corpus", default=None, help="a corpus name or path (default: the embedded one)")
    parser.add_argument("--max-tokens", type=int, default=10000, help="statistics tokens per language")
    parser.add_argument("--prompt", default="prefix", choices=("prefix", "sentence"))
    parser.add_argument("--neurons", default="specificity:1000")
    parser.add_argument("--modes", default="diffmean")
    parser.add_argument("--strengths", default="2")
    parser.add_argument("--suppress", default="none")
    parser.add_argument("--phases", default="all")
    parser.add_argument("--steps", default="4", help="comma list of new-token counts to force for ('all': every one)")
    parser.add_argument("--settings", help="instead of the product: 'neurons/mode/strength/suppress[/phase[/steps]];...'")
    parser.add_argument("--no-sweep", action="store_true", help="skip the sweep (e.g. with --eval SETTING)")
    parser.add_argument("--bars", action="store_true", help="only make the fluency bars (their units) and print them")
    parser.add_argument("--sweep-prompts", type=int, default=3, help="prompts per (source, target) pair, tuning half")
    parser.add_argument("--eval", default=None, help="a setting to measure on the evaluation half, or 'best'")
    parser.add_argument("--eval-prompts", type=int, default=3, help="prompts per pair, evaluation half")
    parser.add_argument("--n-random", type=int, default=3, help="random-neuron control seeds")
    parser.add_argument("--n-baseline", type=int, default=100, help="tuning paragraphs per language for the NLL bars")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repetition-penalty", type=float, default=None, help="default: the library's")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=None, help="default: the library's")
    parser.add_argument("--seed", type=int, default=0, help="the paragraph draw")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th setting from the i-th, no evaluation")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    shard, shards = (int(x) for x in args.shard.split("/"))
    if args.settings:
        grid = [parse_setting(text) for text in args.settings.split(";")]
    else:
        grid = [parse_setting("/".join(values)) for values in itertools.product(
            args.neurons.split(","), args.modes.split(","), args.strengths.split(","), args.suppress.split(","),
            args.phases.split(","), args.steps.split(","))]
    grid = [] if args.no_sweep else grid
    chosen = None if args.eval in (None, "best") else parse_setting(args.eval)
    if args.eval == "best" and (shards > 1 or not grid):
        raise SystemExit("--eval best needs the whole sweep in one run (no --shard, no --no-sweep)")

    import torch

    import steer
    from steer._io import write_json_atomic
    from steer.bench.forced import ForcedRun, Setting, neuron_set
    from steer.bench.plots import plot_forced, plot_forced_grid

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model = steer.load_model()
    corpus = steer.load_corpus(args.corpus, progress=False)
    languages = args.languages.split(",") if args.languages else corpus.languages
    stats = load_or_collect_stats(args.out, model, corpus, languages, args.max_tokens)
    specs = list(dict.fromkeys([s["neurons"] for s in grid] + ([chosen["neurons"]] if chosen else [])))
    neurons = {spec: neuron_set(spec, stats) for spec in specs or args.neurons.split(",")[:1]}
    run = ForcedRun(model, stats, {lang: list(corpus.eval[lang]) for lang in languages}, neurons, languages=languages,
                    prompt=args.prompt, max_new_tokens=args.new_tokens, repetition_penalty=args.repetition_penalty,
                    no_repeat_ngram_size=args.no_repeat_ngram_size, n_baseline=args.n_baseline, seed=args.seed,
                    checkpoint=args.out / f"units-{{key}}-{shard}of{shards}.json",
                    reuse=[args.out / "units-{key}-*.json"])
    provenance = {"command": " ".join(["python", *sys.argv]), "commit": commit(), "n_baseline": args.n_baseline,
                  "stats_tokens_per_language": args.max_tokens}

    if args.bars:
        for lang, bar in run.bars().items():
            print(f"{lang}: NLL <= {bar.nll_max:.2f} ({bar.source}, {bar.n} continuations)")
        return
    mine = grid[shard::shards]
    print(f"{len(grid)} settings, shard {shard}/{shards}: {len(mine)} here", flush=True)
    rows = []
    for setting in mine:
        row = run.sweep_cell(Setting(**setting), args.sweep_prompts)
        rows.append(row.to_dict())
        print(f"{'/'.join(str(setting[k]) for k in FIELDS)}: fluent {row.rates.fluent_success:.2f} "
              f"[{row.rates.fluent_success_ci[0]:.2f}, {row.rates.fluent_success_ci[1]:.2f}], raw "
              f"{row.rates.raw_success:.2f} ({row.rates.n} continuations)", flush=True)
    if shards > 1:
        return
    if rows:
        rows.sort(key=lambda r: (-r["fluent"], -r["raw"]))
        write_json_atomic(args.out / f"sweep-{args.prompt}.json",
                          {**provenance, "languages": languages, "prompt": args.prompt, "half": "tune",
                           "prompts_per_pair": args.sweep_prompts, "decoding": run.decoding,
                           "bars": {lang: bar.to_dict() for lang, bar in run.bars().items()}, "settings": rows})
        groups = itertools.groupby(sorted(rows, key=lambda r: (r["mode"], r["suppress"], r["phase"], str(r["steps"]))),
                                   lambda r: (r["mode"], r["suppress"], r["phase"], r["steps"]))
        for (mode, suppress, phase, steps), group in groups:
            group = list(group)
            if len({r["neurons"] for r in group}) > 1 and len({r["strength"] for r in group}) > 1:
                path = plot_forced_grid(group, languages, args.out / f"grid-{args.prompt}-{mode}-{suppress}-{phase}-"
                                                                     f"{steps or 'all'}.png",
                                        title=f"fluent success, tuning half ({args.sweep_prompts} prompts per pair, "
                                              f"{args.prompt}): {mode}, suppress {suppress}, phase {phase}, steps "
                                              f"{steps or 'all'}")
                print(f"grid figure: {path}")
        print(f"\nsweep, tuning half ({args.prompt} prompts, {rows[0]['n']} continuations per setting):")
        print("| neurons | mode | strength | suppress | phase | steps | raw | fluent [95% CI] | "
              + " | ".join(languages) + " |")
        print("|---" * (8 + len(languages)) + "|")
        for r in rows:
            per = " | ".join(f"{r['per_target'][t]['fluent']:.2f}" for t in languages)
            print(f"| {r['neurons']} | {r['mode']} | {r['strength']:g} | {r['suppress']} | {r['phase']} | "
                  f"{r['steps'] or 'all'} | {r['raw']:.2f} | {r['fluent']:.2f} [{r['fluent_ci'][0]:.2f}, "
                  f"{r['fluent_ci'][1]:.2f}] | {per} |")
    if args.eval is None:
        return
    if chosen is None:  # the best of the sweep
        chosen = {k: rows[0][k] for k in FIELDS}
    result = run.report(Setting(**chosen), per_pair=args.eval_prompts, n_random=args.n_random).to_dict()
    result.update(provenance, neurons=chosen["neurons"])
    write_json_atomic(args.out / f"eval-{args.prompt}.json", result)
    plot_forced(result, args.out / f"eval-{args.prompt}.png")
    from steer.bench.report import forced_table

    print(f"\nevaluation half, {'/'.join(str(chosen[k]) for k in FIELDS)} ({args.prompt} prompts, "
          f"{args.eval_prompts} per pair):")
    print("\n".join(forced_table(result)))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
