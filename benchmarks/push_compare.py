"""Learned language pushes on several neuron sets, against their controls, on the evaluation half (#21).

    python benchmarks/push_compare.py --out DIR [--families F,F,...] [--targets de,ru,...] [--threads 1]
        [--fit-only [--shard i/n]] [--snapshots FAMILY] [--push-steps 4,all] [--languages ..] [--corpus ..]
        [--results FILE]

A family is one push per target:
  NEURONS           learned on the target's neurons of that set (`steer.bench.forced.neuron_set`:
                    specificity:500, zhang2025, lape, ...)
  random:NEURONS    learned the same way, with the same budget, on random neurons with NEURONS' per-layer
                    counts (seed 0): the control a learned push on language neurons must beat
  residual:L[:LR]   one vector added to the residual stream after layer L, learned the same way (the usual
                    steering-vector baseline), with Adam's learning rate LR if given (the residual stream's
                    scale is not the neurons')
  diffmean:NEURONS  the diffmean rule (`force_language` with mode="diffmean": its default strength, the first
                    steps), nothing learned
Every push is fitted by `steer.fit_push` (the corpus' stats split only; early stopping on held-out
stats-split paragraphs; `steer.PushTraining` defaults unless --max-steps is given) and saved in
DIR/pushes/FAMILY/TARGET, so a rerun reads it back; --fit-only --shard i/n fits every n-th (family, target)
so several processes share the fitting. Then every family is measured by `ForcedRun.report` on the
evaluation half (prefix prompts, --eval-prompts per ordered pair, each from its own paragraph; the
project's judge, controls and 95% cluster-bootstrap intervals), and each learned family is compared with
its random-neuron control, with diffmean on the same neurons and with the residual vector, as paired
differences (the same prompts; one bootstrap over paragraphs). DIR is the folder of
`benchmarks/forced_sweep.py`: the statistics, the judge's bars, the unsteered and ceiling units and the
diffmean units are shared with it. --snapshots FAMILY also keeps that family's push at every validation
and measures fluent success against training steps. --push-steps 4,all chooses how many new tokens the
learned pushes force on the *tuning* half (the first learned family's fluent success, --tune-prompts per
pair) before anything is measured on the evaluation half; --tune-neurons F,F,... measures those learned
families on the tuning half too (`neurons_tuning` in the result), to choose the neuron set the same way.
Writes DIR/push-compare.json (and --results FILE without the continuations) and DIR/push-compare.png (with
specificity:k families at two or more k, a panel of success against k, beside their random controls).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forced_sweep import commit, load_or_collect_stats  # noqa: E402

DEFAULT_FAMILIES = "specificity:500,random:specificity:500,residual:9,diffmean:specificity:500"


def parse_family(text: str) -> dict:
    kind, _, rest = text.partition(":")
    if kind == "random":
        return {"name": text, "kind": "random", "neurons": rest}
    if kind == "residual":  # residual:L or residual:L:LR (Adam's learning rate; default PushTraining's)
        layer, _, lr = rest.partition(":")
        return {"name": text, "kind": "residual", "layer": int(layer)} | ({"lr": float(lr)} if lr else {})
    if kind == "diffmean":
        return {"name": text, "kind": "diffmean", "neurons": rest}
    return {"name": text, "kind": "learned", "neurons": text}


def safe(name: str) -> str:
    return name.replace(":", "-").replace("/", "_").replace("@", "_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--families", default=DEFAULT_FAMILIES)
    parser.add_argument("--targets", default=None, help="default: every language")
    parser.add_argument("--languages", default=None, help="default: the corpus' languages")
    parser.add_argument("--corpus", default=None, help="a corpus name or path (default: the embedded one)")
    parser.add_argument("--max-tokens", type=int, default=10000, help="statistics tokens per language")
    parser.add_argument("--max-steps", type=int, default=None, help="default: steer.PushTraining's")
    parser.add_argument("--eval-prompts", type=int, default=2, help="prompts per ordered pair, evaluation half")
    parser.add_argument("--fit-only", action="store_true")
    parser.add_argument("--shard", default="0/1", help="i/n with --fit-only: every n-th (family, target) from the i-th")
    parser.add_argument("--snapshots", default=None, help="a learned family whose pushes are kept at every validation")
    parser.add_argument("--push-steps", default="4",
                        help="new tokens a learned push forces for ('all': every one); several (4,all): chosen on the "
                             "tuning half by the first learned family's fluent success, then used for every push")
    parser.add_argument("--tune-prompts", type=int, default=3, help="prompts per ordered pair, tuning half")
    parser.add_argument("--tune-neurons", default=None, help="learned families (comma-separated) also measured on "
                        "the tuning half, so that a neuron set can be chosen without reading the evaluation half")
    parser.add_argument("--results", type=Path, default=None, help="also write the result, without continuations, here")
    parser.add_argument("--units", default="push", help="this process' unit file, DIR/units-KEY-UNITS.json (processes "
                        "measuring side by side each need their own; every run reads them all)")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    families = [parse_family(text) for text in args.families.split(",")]
    if not any("neurons" in family for family in families):
        parser.error("--families needs at least one family on neurons (the residual vector is measured beside one)")
    shard, shards = (int(x) for x in args.shard.split("/"))
    names = {f["name"]: f for f in families}
    tune_neurons = args.tune_neurons.split(",") if args.tune_neurons else []
    for name in tune_neurons:  # before anything is fitted
        if names.get(name, {}).get("kind") != "learned":
            parser.error(f"--tune-neurons {name}: not a learned family of --families")

    import torch

    import steer
    from steer._io import write_json_atomic
    from steer.bench.forced import ForcedRun, Setting, fitted_push, neuron_set, random_push_name
    from steer.push import LanguagePush
    from steer.push_training import PushTraining

    if args.threads:
        torch.set_num_threads(args.threads)
    model = steer.load_model()
    corpus = steer.load_corpus(args.corpus, progress=False)
    languages = args.languages.split(",") if args.languages else corpus.languages
    targets = args.targets.split(",") if args.targets else languages
    stats = load_or_collect_stats(args.out, model, corpus, languages, args.max_tokens)
    specs = list(dict.fromkeys(f["neurons"] for f in families if "neurons" in f))
    neurons = {spec: neuron_set(spec, stats) for spec in specs}
    training = PushTraining(**({"max_steps": args.max_steps} if args.max_steps else {}))

    # ------------------------------------------------------------------ fitting
    def where(family: str, target: str) -> Path:
        return args.out / "pushes" / safe(family) / target

    def fit(family: dict, target: str) -> LanguagePush:
        started = time.perf_counter()
        on_eval = None
        if family["name"] == args.snapshots:
            def on_eval(step: int, push: LanguagePush) -> None:
                push.save(where(f"{family['name']}@step{step}", target))
        if family["kind"] == "residual":
            push = fitted_push(model, corpus, target, where(family["name"], target),
                               replace(training, lr=family.get("lr", training.lr)), residual_layer=family["layer"],
                               on_eval=on_eval)
        else:
            chosen = neurons[family["neurons"]]
            if family["kind"] == "random":
                chosen = chosen.random_like(seed=0)
            push = fitted_push(model, corpus, target, where(family["name"], target), training, neurons=chosen,
                               on_eval=on_eval)
        print(f"{family['name']} -> {target}: val loss {push.meta['val_loss_unpushed']:.3f} -> "
              f"{push.meta['val_loss']:.3f} at step {push.meta['best_step']} ({push.meta['seconds']:.0f} s fit; "
              f"{time.perf_counter() - started:.0f} s here)", flush=True)
        return push

    learned = [f for f in families if f["kind"] != "diffmean"]
    jobs = [(f, t) for f in learned for t in targets]
    if args.fit_only:
        for family, target in jobs[shard::shards]:
            fit(family, target)
        return
    pushes = {f["name"]: {t: fit(f, t) for t in targets} for f in learned}
    for family in learned:  # each learned family's random control goes by the name ForcedRun.report looks for
        if family["kind"] == "random":
            pushes[random_push_name(family["neurons"], 0)] = pushes[family["name"]]
    steps_seen = sorted({int(p.name.rpartition("_step")[2]) for p in
                         (args.out / "pushes").glob(f"{safe(args.snapshots)}_step*")}) if args.snapshots else []
    for step in steps_seen:  # the push at that step; a fit that stopped earlier keeps its best push
        name = f"{args.snapshots}@step{step}"
        pushes[name] = {t: (LanguagePush.load(where(name, t), model=model) if (where(name, t) / "push.safetensors")
                            .is_file() else pushes[args.snapshots][t]) for t in targets}

    # ------------------------------------------------------------------ measuring
    run = ForcedRun(model, stats, {lang: list(corpus.eval[lang]) for lang in languages}, neurons, languages=languages,
                    prompt="prefix", checkpoint=args.out / f"units-{{key}}-{args.units}.json",
                    reuse=[args.out / "units-{key}-*.json"], pushes=pushes)
    first = specs[0]
    from steer.forcing import parse_steps

    candidates = [parse_steps(text) for text in args.push_steps.split(",")]
    def tune(setting: Setting, label: str) -> dict:
        """One cell on the tuning half (--tune-prompts per pair): its fluent success, with what it rests on."""
        row = run.sweep_cell(setting, args.tune_prompts, targets)
        print(f"tuning half, {label}: fluent {row.rates.fluent_success:.2f}", flush=True)
        return {"fluent": row.rates.fluent_success, "fluent_ci": row.rates.fluent_success_ci,
                "raw": row.rates.raw_success, "n": row.rates.n, "per_target": row.per_target}

    tuning = {}
    main_family = next((f["name"] for f in families if f["kind"] == "learned"), None)
    if len(candidates) > 1 and main_family is not None:  # the tuning half chooses; the evaluation half reports
        for steps in candidates:
            tuning["all" if steps is None else str(steps)] = tune(Setting(first, push=main_family, steps=steps),
                                                                  f"{main_family}, steps {steps or 'all'}")
        best = max(tuning, key=lambda key: tuning[key]["fluent"])  # the first listed wins a tie
        push_steps = parse_steps(best)
    else:
        push_steps = candidates[0]
    # which neuron set a learned push should use: chosen on the tuning half, like the steps
    neurons_tuning = {name: tune(Setting(names[name]["neurons"], push=name, steps=push_steps), name)
                      for name in tune_neurons}
    results = {}
    for family in families:
        if family["kind"] == "diffmean":
            setting = Setting(family["neurons"])
            n_random = 3
        else:
            # a random family is measured under the name the learned family's control goes by: one set of units
            push = random_push_name(family["neurons"], 0) if family["kind"] == "random" else family["name"]
            setting = Setting(family.get("neurons", first), push=push, steps=push_steps)
            n_random = 1 if family["kind"] == "learned" else 0
        results[family["name"]] = run.report(setting, per_pair=args.eval_prompts, n_random=n_random,
                                             targets=targets).to_dict()
        r = results[family["name"]]
        print(f"{family['name']}: fluent {r['fluent_success']:.2f} [{r['fluent_success_ci'][0]:.2f}, "
              f"{r['fluent_success_ci'][1]:.2f}], raw {r['raw_success']:.2f}", flush=True)
    curve = {}
    for step in steps_seen:
        r = run.report(Setting(first, push=f"{args.snapshots}@step{step}", steps=push_steps), per_pair=args.eval_prompts, n_random=0,
                       targets=targets)
        curve[step] = {"fluent": r.fluent_success, "fluent_ci": r.fluent_success_ci,
                       "per_target": {t: row.forced.fluent_success for t, row in r.per_target.items()}}

    comparisons = compare(results, families)
    fits = {f["name"]: {t: {k: pushes[f["name"]][t].meta.get(k) for k in
                            ("seconds", "best_step", "val_loss", "val_loss_unpushed", "curve")}
                        | {"units": len(pushes[f["name"]][t])} for t in targets} for f in learned}
    summary = {
        "command": " ".join(["python", *sys.argv]), "commit": commit(), "languages": languages, "targets": targets,
        "families": families, "training": asdict(training),
        "eval_prompts": args.eval_prompts, "push_steps": push_steps,
        "push_steps_tuning": {"family": main_family, "half": "tune", "prompts_per_pair": args.tune_prompts,
                              "cells": tuning} if tuning else None,
        "neurons_tuning": {"half": "tune", "prompts_per_pair": args.tune_prompts, "push_steps": push_steps,
                           "cells": neurons_tuning} if neurons_tuning else None,
        "stats_tokens_per_language": args.max_tokens,
        "results": results, "comparisons": comparisons, "fits": fits, "curve_steps": curve,
    }
    write_json_atomic(args.out / "push-compare.json", summary)
    if args.results:
        slim = dict(summary, results={name: {k: v for k, v in r.items() if k != "continuations"}
                                      for name, r in results.items()})
        write_json_atomic(args.results, slim)
        plot(summary, args.results.with_suffix(".png"))
    plot(summary, args.out / "push-compare.png")
    from steer.bench.readme import push_rows

    print("\n".join(push_rows(summary)))


def compare(results: dict, families: list[dict]) -> dict:
    """Paired differences in fluent success (overall and per target, with 95% intervals over paragraphs) of each
    learned family against its random control, the diffmean rule (on its neurons where measured) and the first
    residual vector."""
    from steer.bench.resample import difference_ci

    def flags(name: str) -> dict:
        return {(r["source"], r["target"], r["paragraph"]): r for r in results[name]["continuations"]}

    def diff(a: str, b: str) -> dict:
        rows_a, rows_b = flags(a), flags(b)
        keys = [k for k in rows_a if k in rows_b]
        out = {}
        for target in [None, *dict.fromkeys(k[1] for k in keys)]:
            chosen = [k for k in keys if target is None or k[1] == target]
            value, ci = difference_ci([rows_a[k]["fluent"] for k in chosen], [rows_b[k]["fluent"] for k in chosen],
                                      [k[2] for k in chosen])
            out["overall" if target is None else target] = {"difference": value, "ci": ci, "n": len(chosen)}
        return out

    names = {f["name"]: f for f in families}
    residual = next((f["name"] for f in families if f["kind"] == "residual"), None)
    rule = next((f["name"] for f in families if f["kind"] == "diffmean"), None)
    out = {}
    for family in families:
        if family["kind"] != "learned":
            continue
        # the diffmean rule on the same neurons, else the first one measured (the rule force_language applies)
        against = {"random": f"random:{family['neurons']}",
                   "diffmean": f"diffmean:{family['neurons']}" if f"diffmean:{family['neurons']}" in names else rule,
                   "residual": residual}
        out[family["name"]] = {label: diff(family["name"], other) | {"against": other}
                               for label, other in against.items() if other in names}
    return out


def plot(summary: dict, path: Path) -> None:
    """Per target fluent success with intervals for each family; the validation loss of the first learned family
    against training steps; and, with snapshots, fluent success against training steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, targets = summary["results"], summary["targets"]
    sizes = neuron_curve(summary)
    curves = 1 + bool(summary["curve_steps"]) + bool(sizes)  # below the bars, side by side
    fig = plt.figure(figsize=(max(4.6 * curves, 2 + 0.25 * len(targets) * len(results)), 8.4))
    grid = fig.add_gridspec(2, curves)
    axes = [fig.add_subplot(grid[0, :])] + [fig.add_subplot(grid[1, k]) for k in range(curves)]
    width = 0.8 / len(results)
    for k, (name, r) in enumerate(results.items()):
        xs = [i + (k - (len(results) - 1) / 2) * width for i in range(len(targets))]
        rates = [r["per_target"][t]["forced"] for t in targets]
        ys = [x["fluent_success"] for x in rates]
        err = [[y - x["fluent_success_ci"][0] for y, x in zip(ys, rates)],
               [x["fluent_success_ci"][1] - y for y, x in zip(ys, rates)]]
        axes[0].bar(xs, ys, width, yerr=err, capsize=2, label=f"{name} ({r['fluent_success']:.2f})")
    first = next(iter(results.values()))
    axes[0].scatter(range(len(targets)), [first["per_target"][t]["own_text"]["fluent_success"] for t in targets],
                    marker="_", s=300, color="black", label="own-text ceiling", zorder=3)
    axes[0].set_xticks(range(len(targets)), targets)
    axes[0].set_ylim(0, 1.3)
    axes[0].set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    axes[0].set_ylabel("fluent success (95% CI)")
    axes[0].set_title("forced language, evaluation half")
    axes[0].legend(fontsize=7, loc="upper center", ncol=min(6, len(results) + 1))  # above the bars (axis to 1.3)
    family, fits = next(iter(summary["fits"].items()))
    for t in targets:
        steps = [0] + [p["step"] for p in fits[t]["curve"]]
        losses = [fits[t]["val_loss_unpushed"]] + [p["val_loss"] for p in fits[t]["curve"]]
        axes[1].plot(steps, losses, marker=".", label=t)
    axes[1].set_xlabel("training step")
    axes[1].set_ylabel("validation loss (nats/token)")
    axes[1].set_title(f"learning curve: {family}")
    axes[1].legend(fontsize=7, ncol=2)
    if summary["curve_steps"]:
        steps = sorted(summary["curve_steps"], key=int)
        ys = [summary["curve_steps"][s]["fluent"] for s in steps]
        lows = [summary["curve_steps"][s]["fluent_ci"][0] for s in steps]
        highs = [summary["curve_steps"][s]["fluent_ci"][1] for s in steps]
        xs = [0] + [int(s) for s in steps]
        unsteered = first["unsteered"]["fluent_success"]
        axes[2].plot(xs, [unsteered] + ys, marker="o")
        axes[2].fill_between(xs[1:], lows, highs, alpha=0.25)
        axes[2].set_xlabel("training step")
        axes[2].set_ylabel("fluent success, all targets")
        axes[2].set_ylim(0, 1)
        axes[2].set_title("success against training")
    if sizes:
        ax = axes[-1]
        for label, points in sizes.items():
            ks = sorted(points)
            low, high = ([points[k][0] - points[k][1][0] for k in ks], [points[k][1][1] - points[k][0] for k in ks])
            ax.errorbar(ks, [points[k][0] for k in ks], yerr=[low, high], capsize=3, marker="o", label=label)
        ax.set_xscale("log")
        ticks = sorted({k for points in sizes.values() for k in points})
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        ax.set_xlabel("specificity neurons per language (k)")
        ax.set_ylabel("fluent success, all targets")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.set_title("success against the number of neurons")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def neuron_curve(summary: dict) -> dict:
    """{"language neurons" / "random neurons": {k: (fluent, ci)}} over the learned families on specificity:k and
    their random controls, when at least two k were measured; else {}."""
    curve: dict = {}
    for family in summary["families"]:
        method, _, k = family.get("neurons", "").partition(":")
        if family["kind"] in ("learned", "random") and method == "specificity" and k.isdigit():
            r = summary["results"][family["name"]]
            label = "language neurons" if family["kind"] == "learned" else "random neurons, same per-layer counts"
            curve.setdefault(label, {})[int(k)] = (r["fluent_success"], r["fluent_success_ci"])
    return curve if any(len(points) > 1 for points in curve.values()) else {}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
