"""Figures for the benchmarks (PNG, matplotlib's object API with the Agg canvas: no pyplot state,
no display needed). Each function takes a benchmark's result dict and a path, writes atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steer._io import atomic_file

CLASS_COLORS = {"specific": "#d95f02", "related": "#7570b3", "general": "#999999"}
MODE_MARKERS = {"set": "o", "additive": "s", "diffmean": "^"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _array(matrix) -> np.ma.MaskedArray:
    data = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)
    return np.ma.masked_invalid(data)


def heatmap(fig, ax, matrix, rows, columns, *, title: str, label: str, center: float | None = 0.0,
            cmap: str = "RdBu_r", fmt: str | None = None, vmin=None, vmax=None, annotate: bool = True,
            colorbar: bool = True):
    import matplotlib as mpl

    data = _array(matrix)
    if fmt is None:
        biggest = float(np.abs(data).max()) if data.count() else 0.0
        fmt = "{:.3f}" if biggest < 0.1 else "{:.2f}" if biggest < 10 else "{:.1f}"
    colormap = mpl.colormaps[cmap].with_extremes(bad="#eeeeee")
    if center is not None and data.count():
        span = max(abs(float(data.min()) - center), abs(float(data.max()) - center)) or 1.0
        norm = mpl.colors.TwoSlopeNorm(vcenter=center, vmin=center - span, vmax=center + span)
        image = ax.imshow(data, cmap=colormap, norm=norm, aspect="auto")
    else:
        image = ax.imshow(data, cmap=colormap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title(title, fontsize=9)
    if annotate and len(rows) * len(columns) <= 400:
        size = 7 if len(columns) <= 10 else 5
        mask = np.ma.getmaskarray(data)
        for i in range(len(rows)):
            for j in range(len(columns)):
                if not mask[i, j]:
                    r, g, b, _ = image.cmap(image.norm(float(data[i, j])))
                    color = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
                    ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=size, color=color)
    if colorbar:
        fig.colorbar(image, ax=ax, label=label, shrink=0.8)
    return image


def plot_delta_ppl(result: dict, path: str | Path) -> Path:
    """One heatmap per variant (Δ log-PPL, rows deactivated, columns evaluated) and the random control."""
    panels = []
    for variant, entry in result["variants"].items():
        panels.append((f"{result['method']}: deactivate {variant}", entry["delta_log_ppl"]))
        if entry.get("random"):
            random = entry["random"]
            panels.append((f"random control ({random['n_seeds']} seeds, {variant}, mean)", random["delta_log_ppl_mean"]))
    n = len(panels)
    cols = min(n, 2)
    nrows = (n + cols - 1) // cols
    side = 0.45 * max(len(result["columns"]), 4) + 2
    fig = _figure(cols * side + 1, nrows * (0.42 * max(len(result["rows"]), 4) + 1.6))
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, (title, matrix) in zip(axes.flat, panels):
        heatmap(fig, ax, matrix, result["rows"], result["columns"], title=title, label="Δ log-PPL (nats)")
        ax.set_xlabel("evaluated language")
        ax.set_ylabel("deactivated language")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return save_figure(fig, path)


FORCED_SERIES = (("forced", "forced", "#1b9e77"), ("random", "random neurons", "#d95f02"),
                 ("unsteered", "unsteered", "#999999"), ("own_text", "own text (ceiling)", "#7570b3"),
                 ("human_text", "human text (ceiling)", "#e7298a"))


def plot_forced(result: dict, path: str | Path) -> Path:
    """Fluent success matrix (source × target) at the setting, and per target fluent success with its 95% interval
    beside the random-neuron control, the unsteered rate and both ceilings."""
    langs = result["languages"]
    targets = list(result["per_target"])
    side = 0.45 * max(len(langs), 4) + 2
    fig = _figure(side + 0.5 * len(targets) + 3.5, 0.42 * max(len(langs), 4) + 1.8)
    axes = fig.subplots(1, 2, squeeze=False, width_ratios=[side, 0.5 * len(targets) + 3])[0]
    setting = result["setting"]
    heatmap(fig, axes[0], result["fluent_matrix"], langs, targets, center=None, cmap="viridis", vmin=0, vmax=1,
            title=f"fluent success ({setting['mode']}, strength {setting['strength']:g})",
            label="fraction fluent in the target", fmt="{:.1f}")
    axes[0].set_xlabel("target language")
    axes[0].set_ylabel("prompt language")
    ax = axes[1]
    x = np.arange(len(targets) + 1)
    width = 0.8 / len(FORCED_SERIES)
    for k, (key, label, color) in enumerate(FORCED_SERIES):
        rates = [result["per_target"][t][key] for t in targets] + [result if key == "forced" else result[key]]
        values = np.array([np.nan if r is None or r["fluent_success"] is None else r["fluent_success"] for r in rates])
        low = np.array([np.nan if r is None or r["fluent_success_ci"] is None else r["fluent_success_ci"][0]
                        for r in rates])
        high = np.array([np.nan if r is None or r["fluent_success_ci"] is None else r["fluent_success_ci"][1]
                         for r in rates])
        offset = x - 0.4 + (k + 0.5) * width
        ax.bar(offset, values, width, color=color, label=label)
        ax.errorbar(offset, values, yerr=[np.nan_to_num(values - low), np.nan_to_num(high - values)], fmt="none",
                    ecolor="black", elinewidth=0.7, capsize=1.5)
    ax.set_xticks(x, targets + ["all"])
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"fluent success ({result['half']} half, 95% CI)")
    ax.set_title(f"fluent success per target, {result['prompt']} prompts", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, ncols=2)
    return save_figure(fig, path)


def forced_grid(rows: list[dict], target: str | None = None) -> tuple[list[str], list[float], list[list[float | None]]]:
    """(neuron sets, strengths, fluent success [neuron set][strength]) of forced_sweep settings, for one target or
    (None) all: the neuron sets in the rows' order, the strengths sorted, None where no row has that cell."""
    specs = list(dict.fromkeys(row["neurons"] for row in rows))
    strengths = sorted({float(row["strength"]) for row in rows})
    cells = {(row["neurons"], float(row["strength"])): row for row in rows}
    rate = (lambda row: row["fluent"]) if target is None else (lambda row: row["per_target"][target]["fluent"])
    return specs, strengths, [[rate(cells[spec, s]) if (spec, s) in cells else None for s in strengths]
                              for spec in specs]


def plot_forced_grid(rows: list[dict], languages: list[str], path: str | Path, *, title: str) -> Path:
    """Fluent success over a neurons × strength grid of forced_sweep settings (`forced_grid`): one panel for all
    targets and one per target."""
    panels = [("all targets", None)] + [(target, target) for target in languages]
    specs, strengths, _ = forced_grid(rows)
    cols = min(len(panels), 4)
    nrows = (len(panels) + cols - 1) // cols
    width = 0.55 * max(len(strengths), 3) + 1.6
    fig = _figure(cols * width, nrows * (0.32 * max(len(specs), 3) + 1.4) + 0.4)
    fig.suptitle(title, fontsize=10)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, (name, target) in zip(axes.flat, panels):
        _, _, matrix = forced_grid(rows, target)
        image = heatmap(fig, ax, matrix, specs, [f"{s:g}" for s in strengths], center=None, cmap="viridis", vmin=0,
                        vmax=1, title=name, label="fluent success", fmt="{:.2f}", colorbar=False)
        ax.set_xlabel("strength", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, label="fluent success", shrink=0.6)
    return save_figure(fig, path)


def plot_transfer(result: dict, path: str | Path) -> Path:
    """Per low-resource language: Δ log-PPL for deactivating shared neurons, random, amplifying."""
    targets, sources = result["low_resource"], result["high_resource"]
    fig = _figure(max(4.0, 0.55 * len(sources) + 1.8) * len(targets), 3.4)
    axes = fig.subplots(1, len(targets), squeeze=False)[0]
    width = 0.27
    x = np.arange(len(sources))
    for ax, target in zip(axes, targets):
        row = result["pairs"][target]
        shared = [np.nan if row[s]["deactivate_shared"] is None else row[s]["deactivate_shared"] for s in sources]
        rand = [np.nan if row[s]["random"]["mean"] is None else row[s]["random"]["mean"] for s in sources]
        rand_sd = [0.0 if not row[s]["random"].get("sd") else row[s]["random"]["sd"] for s in sources]
        amp = [np.nan if row[s]["amplify_shared"] is None else row[s]["amplify_shared"] for s in sources]
        ax.bar(x - width, shared, width, label="deactivate shared", color="#d95f02")
        ax.bar(x, rand, width, yerr=rand_sd, label="random (same size)", color="#bbbbbb")
        ax.bar(x + width, amp, width, label=f"amplify shared ×{result['factor']:g}", color="#1b9e77")
        specific = result["specific"][target]["delta_log_ppl"]
        if specific is not None:
            ax.axhline(specific, color="#7570b3", linestyle="--", linewidth=1, label=f"deactivate {target}-specific")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(x, [f"{s}\n({row[s]['n_shared']})" for s in sources], fontsize=7)
        ax.set_title(f"{target}: Δ log-PPL on {target}", fontsize=9)
        ax.set_xlabel("high-resource language (shared neurons)", fontsize=8)
    axes[0].set_ylabel("Δ log-PPL (nats)")
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def _stage_shading(ax, stages) -> None:
    shades = ["#f4f4f4", "#ffffff"]
    for k, stage in enumerate(stages):
        if stage["layers"]:
            ax.axvspan(stage["layers"][0] - 0.5, stage["layers"][-1] + 0.5, color=shades[k % 2], zorder=0)
            ax.text((stage["layers"][0] + stage["layers"][-1]) / 2, 0.98, f"stage {k + 1}", transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=7, color="#555555")


def plot_layers(result: dict, path: str | Path) -> Path:
    """Stacked bars of specific / related / general neurons per layer (stages shaded) and per language."""
    fig = _figure(11, 3.6)
    left, right = fig.subplots(1, 2, width_ratios=[1.6, 1])
    layers = np.arange(result["n_layers"])
    bottom = np.zeros(len(layers))
    _stage_shading(left, result["stages"])
    for cls in ("specific", "related", "general"):
        values = np.array(result["per_layer"][cls], dtype=float)
        left.bar(layers, values, bottom=bottom, color=CLASS_COLORS[cls], label=cls, zorder=2)
        bottom += values
    left.set_xticks(layers, [str(layer) for layer in layers], fontsize=7)
    left.set_xlim(-0.5, len(layers) - 0.5)
    left.margins(y=0.12)
    left.set_xlabel("layer (bands: the four stages)")
    left.set_ylabel("neurons")
    left.set_title(f"{result['method']}: neurons per layer", fontsize=9)
    left.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.9))
    langs = result["languages"]
    spec = [result["per_language"][lang]["specific"] for lang in langs]
    rel = [result["per_language"][lang]["related"] for lang in langs]
    right.bar(langs, spec, color=CLASS_COLORS["specific"], label="specific")
    right.bar(langs, rel, bottom=spec, color=CLASS_COLORS["related"], label="related")
    right.set_title("neurons per language", fontsize=9)
    right.tick_params(axis="x", labelsize=8)
    right.legend(fontsize=8)
    return save_figure(fig, path)


def plot_overlap(result: dict, path: str | Path) -> Path:
    """Jaccard overlap of the language-related neurons of each language pair (counts annotated)."""
    langs = result["languages"]
    side = 0.45 * max(len(langs), 4) + 2.2
    fig = _figure(side, side - 0.6)
    ax = fig.subplots()
    heatmap(fig, ax, result["related_jaccard"], langs, langs, center=None, cmap="magma_r", vmin=0, vmax=None,
            title=f"{result['method']}: shared language-related neurons (Jaccard)", label="Jaccard", annotate=False)
    counts = result["related_overlap"]
    size = 7 if len(langs) <= 10 else 5
    for i in range(len(langs)):
        for j in range(len(langs)):
            ax.text(j, i, str(counts[i][j]), ha="center", va="center", fontsize=size, color="#333333")
    return save_figure(fig, path)


def plot_compare(result: dict, path: str | Path) -> Path:
    """Counts by sharing N (A vs B) and per-layer change (B − A) per class."""
    fig = _figure(10, 3.4)
    left, right = fig.subplots(1, 2)
    ns = list(result["by_sharing"])
    x = np.arange(len(ns))
    left.bar(x - 0.2, [result["by_sharing"][n]["a"] for n in ns], 0.4, label="A", color="#bbbbbb")
    left.bar(x + 0.2, [result["by_sharing"][n]["b"] for n in ns], 0.4, label="B", color="#1b9e77")
    left.set_xticks(x, ns)
    left.set_xlabel("N: languages sharing the neuron (1 = specific)")
    left.set_ylabel("neurons")
    left.set_title("neurons by sharing, A vs B", fontsize=9)
    left.legend(fontsize=8)
    for cls in ("specific", "related", "general"):
        change = result["per_layer"][cls]["change"]
        right.plot(range(len(change)), change, marker=".", color=CLASS_COLORS[cls], label=cls)
    right.axhline(0, color="black", linewidth=0.6)
    right.set_xlabel("layer")
    right.set_ylabel("B − A")
    right.set_title("per-layer change", fontsize=9)
    right.legend(fontsize=8)
    return save_figure(fig, path)
