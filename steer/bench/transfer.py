"""Low-resource transfer: do a low-resource language's neurons that it shares with a
high-resource language carry it?

For each low-resource T and high-resource S, the neurons of both S and T ("shared") are
deactivated and T's held-out log-PPL is measured, next to T's own specific neurons and a random
control with the same count per layer; then the shared neurons are amplified (× factor) to see
whether turning them up helps or hurts T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from steer.bench._common import Partial, check_at_least, mean_or_none, mean_sd, neuron_fingerprint, stable_hash, texts_fingerprint
from steer.bench.delta_ppl import eval_columns
from steer.bench.plots import plot_transfer
from steer.bench.registry import Benchmark, Context, Job, register
from steer.bench.report import transfer_section
from steer.languages import LOW_RESOURCE, Lang
from steer.neurons import NeuronSet
from steer.progress import progress_bar
from steer.steering import amplify, deactivate


@dataclass
class TransferBench:
    """`[bench.transfer]`: the arguments of `low_resource_transfer` (texts: the first `n_texts` eval texts)."""

    neurons: str = ""
    low_resource: list[Lang] | None = None
    high_resource: list[Lang] | None = None
    factor: float = 2.0
    n_random: int = 1
    n_texts: int | None = 24  # None: every held-out text of the run
    max_length: int = 128
    batch_size: int = 8

    def check(self, where: str) -> None:
        check_at_least(where, n_texts=(self.n_texts, 1), max_length=(self.max_length, 2),
                       batch_size=(self.batch_size, 1), n_random=(self.n_random, 0))
        if not math.isfinite(self.factor):
            raise ValueError(f"{where}: factor must be a finite number, got {self.factor}")


def shared_set(neurons: NeuronSet, source: str, target: str) -> NeuronSet:
    """The neurons that belong to both `source` and `target`, as a one-language set for `target`."""
    both = neurons.membership[neurons.index(source)] & neurons.membership[neurons.index(target)]
    return NeuronSet([target], both[None], None, f"shared({source},{target})", {}, dict(neurons.meta))


def low_resource_transfer(
    model,
    neurons: NeuronSet,
    eval_texts: dict[str, list[str]],
    *,
    low_resource: Sequence[str] | None = None,
    high_resource: Sequence[str] | None = None,
    factor: float = 2.0,
    n_random: int = 1,
    random_seed: int = 0,
    batch_size: int = 8,
    max_length: int = 128,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """ΔPPL on each low-resource T when deactivating the neurons T shares with each high-resource S,
    T's specific neurons, and random sets of the shared sets' size; Δ when amplifying the shared ones.

    `low_resource` defaults to `steer.languages.LOW_RESOURCE` ∩ the set's languages with eval texts,
    `high_resource` to the other languages with eval texts.
    """
    usable = [lang for lang in neurons.languages if lang in eval_texts and eval_texts[lang]]
    if low_resource is None:
        low_resource = [lang for lang in LOW_RESOURCE if lang in usable]
    low_resource = list(low_resource)
    if not low_resource:
        raise ValueError(f"no low-resource language among {usable}; pass low_resource=[...]")
    for lang in low_resource:
        if lang not in usable:
            raise ValueError(f"low-resource language '{lang}' has no neurons or no eval texts")
    high_resource = [lang for lang in usable if lang not in low_resource] if high_resource is None else list(high_resource)
    for lang in high_resource:
        neurons.index(lang)
    if not high_resource:
        raise ValueError("no high-resource language to pair the low-resource ones with")
    key = stable_hash({"neurons": neuron_fingerprint(neurons), "texts": texts_fingerprint({t: eval_texts[t] for t in low_resource}),
                       "factor": factor, "seed": random_seed, "max_length": max_length})
    partial = Partial(checkpoint, key)
    units = len(low_resource) * (2 + len(high_resource) * (2 + n_random))
    bar = progress_bar(progress, units, "low-resource transfer", unit="pass")

    def log_ppl(unit: str, target: str, context=None) -> float:
        def compute():
            if context is None:
                return eval_columns(model, eval_texts, [target], batch_size=batch_size, max_length=max_length)[target]["log_ppl"]
            with context():
                return eval_columns(model, eval_texts, [target], batch_size=batch_size, max_length=max_length)[target]["log_ppl"]

        bar.set_postfix_str(unit)
        value = partial.get(unit, compute)
        bar.update(1)
        return value

    baseline, specific, pairs = {}, {}, {}
    try:
        for target in low_resource:
            baseline[target] = log_ppl(f"{target}/baseline", target)
            own = neurons.select([target], classes=("specific",))
            if own.is_empty():
                specific[target] = {"n_neurons": 0, "delta_log_ppl": None}
                bar.update(1)
            else:
                value = log_ppl(f"{target}/specific", target, lambda own=own: deactivate(model, own))
                specific[target] = {"n_neurons": len(own), "delta_log_ppl": value - baseline[target]}
            pairs[target] = {}
            for source in high_resource:
                shared = shared_set(neurons, source, target)
                n_shared = int(shared.membership.sum())
                entry = {"n_shared": n_shared, "per_layer": shared.membership[0].sum(1).tolist(),
                         "deactivate_shared": None, "random": {"mean": None, "sd": None}, "amplify_shared": None}
                if n_shared == 0:
                    bar.update(2 + n_random)
                    pairs[target][source] = entry
                    continue
                entry["deactivate_shared"] = log_ppl(
                    f"{target}/{source}/deactivate", target, lambda s=shared: deactivate(model, s)) - baseline[target]
                randoms = []
                for k in range(n_random):
                    control = shared.random_like(seed=random_seed * 100_003 + 1_009 * k + high_resource.index(source))
                    randoms.append(log_ppl(f"{target}/{source}/random{k}", target,
                                           lambda c=control: deactivate(model, c)) - baseline[target])
                mean, sd = mean_sd(randoms)
                entry["random"] = {"mean": mean, "sd": sd, "values": randoms}
                entry["amplify_shared"] = log_ppl(
                    f"{target}/{source}/amplify", target, lambda s=shared: amplify(model, s, factor=factor)) - baseline[target]
                pairs[target][source] = entry
    finally:
        bar.close()
    every = [e for t in pairs.values() for e in t.values()]
    summary = {
        "mean_delta_deactivate_shared": mean_or_none([e["deactivate_shared"] for e in every]),
        "mean_delta_random": mean_or_none([e["random"]["mean"] for e in every]),
        "mean_delta_amplify_shared": mean_or_none([e["amplify_shared"] for e in every]),
        "mean_delta_specific": mean_or_none([s["delta_log_ppl"] for s in specific.values()]),
        "mean_n_shared": mean_or_none([e["n_shared"] for e in every]),
    }
    best = {}
    for target, row in pairs.items():
        scored = [(e["deactivate_shared"], s) for s, e in row.items() if e["deactivate_shared"] is not None]
        best[target] = max(scored)[1] if scored else None
    summary["most_shared_source"] = {t: max(row, key=lambda s: row[s]["n_shared"]) for t, row in pairs.items()}
    summary["most_harmful_source"] = best
    return {
        "benchmark": "transfer",
        "method": neurons.method,
        "low_resource": low_resource,
        "high_resource": high_resource,
        "factor": factor,
        "n_random": n_random,
        "baseline_log_ppl": baseline,
        "specific": specific,
        "pairs": pairs,
        "summary": summary,
    }


def _run(ctx: Context, spec: TransferBench, job: Job) -> dict:
    result = low_resource_transfer(
        ctx.model, ctx.neurons[spec.neurons], ctx.eval_texts(spec.n_texts), low_resource=spec.low_resource,
        high_resource=spec.high_resource, factor=spec.factor, n_random=spec.n_random, batch_size=spec.batch_size,
        max_length=spec.max_length, checkpoint=job.checkpoint, progress=ctx.progress,
    )
    plot_transfer(result, job.figures[0])
    result["neurons"] = spec.neurons
    return result


register(Benchmark(
    kind="transfer", spec=TransferBench, run=_run, figures=("{name}.png",),
    section=lambda result, figures: transfer_section(result, figures[0]),
))
