# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Finding language neurons
#
# A neuron of an MLP layer is *active* on a token when its gate activation is positive. Counting, for
# each language, on what fraction of that language's tokens each neuron is active gives an activation
# probability `P[language, layer, neuron]`. Neurons whose probability is concentrated on one or a few
# languages are *language neurons*: **specific** when only one language claims them (N = 1),
# **related** when several do (N > 1); **general** neurons are active for every language and are kept
# apart (Zhang et al. 2025; LAPE: Tang et al. 2024).
#
# This notebook collects the statistics on a small slice of the embedded LibreOffice-help corpus with
# the embedded Gemma 3 270M, selects neurons with both methods and looks at where they are.

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets, warned when steer loads

import time

import matplotlib.pyplot as plt
import numpy as np

import steer
from steer.notebook import setup, table

# Sizes: small by default so the notebook runs in minutes on a CPU; raise them for real numbers
# (each STEER_NB_<NAME> in the environment overrides one). Files go under $STEER_NB_OUT/<notebook>.
nb = setup("01_find_language_neurons",
           max_stats=24,  # paragraphs per language for the statistics
           max_length=128,  # tokens per paragraph, at most
           languages=[])  # language codes; empty: all
MAX_STATS, MAX_LENGTH, LANGUAGES, OUT = nb.max_stats, nb.max_length, nb.languages, nb.out


# %% [markdown]
# ## Model and corpus
#
# `steer.load_model()` loads the embedded Gemma 3 270M behind TransformerLens hook points;
# `steer.load_corpus()` the paragraph-aligned LibreOffice help. We keep the first `MAX_STATS`
# paragraphs of each language's `stats` split (the `eval` split stays held out for notebook 2).

# %%
model = steer.load_model()
info = steer.model_info(model)
print(f"{info.name}: {info.n_layers} layers × {info.d_mlp} MLP neurons (weights {info.weights_hash})")

corpus = steer.load_corpus(progress=False).subset(languages=LANGUAGES or None, max_stats=MAX_STATS, max_eval=0)
print(corpus)

# %% [markdown]
# ## Activation statistics
#
# `steer.collect` streams the paragraphs through the model once and counts, per language, layer and
# neuron, the tokens on which the neuron is active (and sums its output, used later for steering).
# The result is a plain object that can be saved and merged.

# %%
started = time.perf_counter()
stats = steer.collect(model, corpus, max_length=MAX_LENGTH, progress=False)
print(f"collected in {time.perf_counter() - started:.1f} s")
stats.save(OUT / "stats")
table(["language", "tokens"], [[lang, int(n)] for lang, n in zip(stats.languages, stats.tokens, strict=True)])

# %% [markdown]
# ## Selecting language neurons: zhang2025 and LAPE
#
# Both methods rank neurons by the entropy of their activation probability over languages (low
# entropy = concentrated on few languages) and keep the top 1% (`top_rate=0.01`); a language claims
# a selected neuron when its probability is above a high quantile of all probabilities.
# `zhang2025` adds a peak term weighted by λ, searched so that no general neuron is selected.

# %%
zhang = steer.identify(stats, method="zhang2025")
lape = steer.identify(stats, method="lape")


def n_language(neurons):
    """Neurons claimed by at least one language (specific + related), general ones excluded."""
    return sum(neurons.counts_by_sharing().values())


for neurons in (zhang, lape):
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in neurons.params.items()}
    print(f"{neurons.method:>9}: {n_language(neurons)} language neurons, {int(neurons.general.sum())} general"
          f" | {shown}")

# %% [markdown]
# ## Where the neurons are: counts per layer
#
# The papers report language neurons concentrated in the first and last layers. Each bar counts a
# neuron once, by its class.

# %%
fig, axes = plt.subplots(2, 2, figsize=(11, 5), sharex=True, sharey="row")
for col, neurons in enumerate((zhang, lape)):
    counts = neurons.counts_per_layer()
    layers = np.arange(neurons.n_layers)
    top, bottom = axes[0, col], axes[1, col]
    top.bar(layers, counts["specific"], label="specific (N = 1)", color="tab:blue")
    top.bar(layers, counts["related"], bottom=counts["specific"], label="related (N > 1)", color="tab:orange")
    bottom.bar(layers, counts["general"], color="tab:gray")
    top.set_title(neurons.method)
    bottom.set_xlabel("layer")
    bottom.set_xticks(layers[::2])
axes[0, 0].set_ylabel("language neurons")
axes[1, 0].set_ylabel("general neurons")
axes[0, 1].legend()
fig.tight_layout()
fig.savefig(OUT / "counts_per_layer.png", dpi=100)
plt.show()

# %% [markdown]
# ## Counts per language
#
# How many neurons each language claims alone (specific) and together with other languages (related).

# %%
per_zhang, per_lape = zhang.counts_per_language(), lape.counts_per_language()
table(["language", "zhang2025 specific", "zhang2025 related", "lape specific", "lape related"],
      [[lang, per_zhang[lang]["specific"], per_zhang[lang]["related"],
        per_lape[lang]["specific"], per_lape[lang]["related"]]
       for lang in zhang.languages])

# %% [markdown]
# ## Counts by N (how many languages share a neuron)
#
# A neuron claimed by N languages is specific for N = 1 and related for N > 1. Most language
# neurons are expected at small N.

# %%
by_zhang, by_lape = zhang.counts_by_sharing(), lape.counts_by_sharing()
table(["N", "zhang2025", "lape"], [[n, by_zhang[n], by_lape[n]] for n in by_zhang])

# %% [markdown]
# ## Which languages share neurons
#
# `overlap()[a, b]` counts the neurons claimed by both a and b (the diagonal is a's total). Related
# languages (e.g. the Romance ones, or Japanese and Chinese) are expected to share more.

# %%
overlap = zhang.overlap().numpy()
n = len(zhang.languages)
fig, ax = plt.subplots(figsize=(0.55 * n + 2, 0.55 * n + 1.5))
image = ax.imshow(overlap, cmap="viridis")
ax.set_xticks(range(n), zhang.languages)
ax.set_yticks(range(n), zhang.languages)
for i in range(n):
    for j in range(n):
        ax.text(j, i, int(overlap[i, j]), ha="center", va="center",
                color="white" if overlap[i, j] < overlap.max() / 2 else "black", fontsize=8)
ax.set_title("zhang2025: neurons shared by two languages")
fig.colorbar(image, ax=ax, shrink=0.8)
fig.tight_layout()
fig.savefig(OUT / "overlap.png", dpi=100)
plt.show()

# %% [markdown]
# ## Do the two methods agree?
#
# Jaccard index of the (language, layer, neuron) memberships: 1 means the same sets, 0 disjoint.

# %%
rows = [["all languages", zhang.jaccard(lape), n_language(zhang), n_language(lape)]]
rows += [[lang, zhang[lang].jaccard(lape[lang]), len(zhang[lang]), len(lape[lang])] for lang in zhang.languages]
table(["languages", "Jaccard", "zhang2025 neurons", "lape neurons"], rows)

# %% [markdown]
# ## Saving
#
# A neuron file records the model (name, weights hash), the corpus fingerprint, the method and its
# parameters; `NeuronSet.load(path, model=model)` refuses a file made for another model.

# %%
for neurons in (zhang, lape):
    path = neurons.save(OUT / f"neurons_{neurons.method}.json")
    again = steer.NeuronSet.load(path, model=model)
    assert again.jaccard(neurons) == 1.0 and again.languages == neurons.languages
    print("saved", path.name)
