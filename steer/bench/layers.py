"""Where language neurons sit: per-layer counts by class, the four stages, per-language counts,
and how much languages share their language-related neurons.

Zhang et al. (2025) split multilingual inference into four stages by the layer distribution of
neuron types: (1) multilingual understanding (early layers, many language neurons), (2) shared
semantic-space reasoning (middle layers, few language neurons), (3) multilingual output-space
transformation (language neurons rise again), (4) vocabulary-space outputting (the last layers,
after the language-neuron peak). `four_stages` locates them on a given set from its counts with a
simple, stated rule (see its docstring): a heuristic reading, not a fitted model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steer.bench.plots import plot_layers, plot_overlap
from steer.bench.registry import Benchmark, Context, Job, register
from steer.bench.report import layers_section
from steer.neurons import NeuronSet


@dataclass
class LayersBench:
    """`[bench.layers]`: which neuron set to describe."""

    neurons: str = ""


STAGE_NAMES = (
    "multilingual understanding",
    "shared semantic-space reasoning",
    "multilingual output-space transformation",
    "vocabulary-space outputting",
)


def four_stages(language_neurons: list[int]) -> list[list[int]]:
    """Layer lists of the four stages, from the per-layer count of language neurons.

    Rule: stage 2 is the trough, the contiguous run of layers around the smallest count in the
    middle half of the model whose counts stay within a quarter of the range above that minimum;
    stage 1 is everything before it; stage 4 is the layers after the largest count that follows
    the trough (at least the last layer); stage 3 lies between. Every stage gets >= 1 layer when
    the model has >= 4 layers.
    """
    n = len(language_neurons)
    if n < 4:
        return [[layer] if layer < n else [] for layer in range(4)]
    counts = [float(c) for c in language_neurons]
    lo, hi = n // 4, n - n // 4
    band = list(range(max(1, lo), min(n - 2, hi)))
    if not band:
        band = [n // 2 - 1]
    trough = min(band, key=lambda layer: (counts[layer], layer))
    limit = counts[trough] + 0.25 * (max(counts) - counts[trough])
    a = b = trough
    while a - 1 >= 1 and counts[a - 1] <= limit:
        a -= 1
    while b + 1 <= n - 3 and counts[b + 1] <= limit:
        b += 1
    after = list(range(b + 1, n))
    peak = max(after, key=lambda layer: (counts[layer], layer))
    if peak >= n - 1:
        peak = n - 2
    peak = max(peak, b + 1)
    return [list(range(0, a)), list(range(a, b + 1)), list(range(b + 1, peak + 1)), list(range(peak + 1, n))]


def layer_distribution(neurons: NeuronSet) -> dict:
    """Per-layer counts by class, the four stages, per-language counts and related-neuron overlap."""
    per_layer = neurons.counts_per_layer()
    language = [s + r for s, r in zip(per_layer["specific"], per_layer["related"])]
    stages = []
    for name, layers in zip(STAGE_NAMES, four_stages(language)):
        stages.append({
            "name": name,
            "layers": layers,
            **{cls: int(sum(per_layer[cls][layer] for layer in layers)) for cls in ("specific", "related", "general")},
        })
    per_language = neurons.counts_per_language()
    totals = {lang: c["specific"] + c["related"] for lang, c in per_language.items()}
    related = neurons.class_mask("related")
    related_membership = (neurons.membership & related).reshape(len(neurons.languages), -1).to(torch.float32)
    related_overlap = (related_membership @ related_membership.T).round().to(torch.int64)
    sizes = related_overlap.diagonal()
    union = sizes[:, None] + sizes[None, :] - related_overlap
    jaccard = torch.where(union > 0, related_overlap / union.clamp(min=1), torch.zeros_like(union, dtype=torch.float32))
    english = None
    if "en" in totals and len(totals) > 1:
        others = [v for lang, v in totals.items() if lang != "en"]
        english = {"en": totals["en"], "mean_of_others": sum(others) / len(others),
                   "ratio": totals["en"] / (sum(others) / len(others)) if sum(others) else None}
    return {
        "benchmark": "layers",
        "method": neurons.method,
        "languages": list(neurons.languages),
        "n_layers": neurons.n_layers,
        "d_mlp": neurons.d_mlp,
        "per_layer": per_layer,
        "stages": stages,
        "per_language": per_language,
        "by_sharing": {str(k): v for k, v in neurons.counts_by_sharing().items()},
        "totals": {"specific": int(neurons.class_mask("specific").sum()), "related": int(related.sum()),
                   "general": int(neurons.general.sum())},
        "english": english,
        "related_overlap": related_overlap.tolist(),
        "related_jaccard": [[round(float(v), 4) for v in row] for row in jaccard],
    }


def _run(ctx: Context, spec: LayersBench, job: Job) -> dict:
    result = layer_distribution(ctx.neurons[spec.neurons])
    plot_layers(result, job.figures[0])
    plot_overlap(result, job.figures[1])
    result["neurons"] = spec.neurons
    return result


register(Benchmark(
    kind="layers", spec=LayersBench, run=_run, figures=("{name}.png", "{name}_overlap.png"),
    section=lambda result, figures: layers_section(result, figures[0], figures[1]),
))
