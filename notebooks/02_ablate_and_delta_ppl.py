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
# # 2. Deactivating language neurons: the ΔPPL matrix
#
# If a set of neurons carries a language, switching it off should hurt that language's perplexity
# much more than the others'. For every row language we set its neurons' activations to 0
# (`steer.deactivate`) and score the held-out `eval` paragraphs of every column language:
# Δ = log-PPL(deactivated) − log-PPL(unsteered), in nats per token. The `eval` split is parallel
# (the same paragraphs in every language), so columns differ by language, not by content.
#
# A control row deactivates, for each column language, a random set with as many neurons in each
# layer as that language's own set (`NeuronSet.random_like`): the diagonal should beat it.

# %%
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import steer
from steer.bench import perplexity

# Sizes: small by default so the notebook runs in minutes on a CPU; raise them for real numbers.
MAX_STATS = int(os.environ.get("STEER_NB_MAX_STATS", 24))  # paragraphs per language for the statistics
MAX_LENGTH = int(os.environ.get("STEER_NB_MAX_LENGTH", 128))  # tokens per paragraph, at most
LANGUAGES = [code for code in os.environ.get("STEER_NB_LANGUAGES", "").split(",") if code]  # empty: all
N_EVAL = int(os.environ.get("STEER_NB_N_EVAL", 2))  # held-out paragraphs scored per language

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no weight-loading bars (read when transformers loads)

# Everything this notebook writes goes under $STEER_NB_OUT (default: a fresh temporary folder, kept in OUT).
OUT = Path(os.environ.get("STEER_NB_OUT") or tempfile.mkdtemp(prefix="steer-nb-")) / "02_ablate_and_delta_ppl"
OUT.mkdir(parents=True, exist_ok=True)
print(f"steer {steer.__version__}; files go to",
      f"$STEER_NB_OUT/{OUT.name}" if os.environ.get("STEER_NB_OUT") else "a temporary folder (OUT)")


def table(header, rows):
    """Show rows as a markdown table."""
    def cell(value):
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    display(Markdown("\n".join(lines)))


# %% [markdown]
# ## Neurons
#
# The same steps as notebook 1, at the same size: load, collect on the `stats` split, identify with
# `zhang2025`.

# %%
started = time.perf_counter()
model = steer.load_model()
corpus = steer.load_corpus(progress=False)
corpus = corpus.subset(languages=LANGUAGES or None, max_stats=MAX_STATS, max_eval=N_EVAL)
stats = steer.collect(model, corpus, max_length=MAX_LENGTH, progress=False)
neurons = steer.identify(stats, method="zhang2025")
print(steer.model_info(model).name, "|", corpus)
print(f"{sum(neurons.counts_by_sharing().values())} language neurons (zhang2025, λ = {neurons.params['lambda']:.3f})"
      f" from {int(stats.tokens.sum())} tokens in {time.perf_counter() - started:.0f} s")

# %% [markdown]
# ## Baseline perplexity
#
# `steer.bench.perplexity` scores every token after the first (pads masked), under whatever
# intervention is active around the call; `log_ppl` pools the tokens of all texts.

# %%
languages = corpus.languages
eval_texts = {lang: corpus.eval[lang] for lang in languages}


def log_ppl(lang):
    """Pooled log-perplexity of `lang`'s eval paragraphs, under the interventions active now."""
    return perplexity(model, eval_texts[lang], max_length=MAX_LENGTH)["log_ppl"]


baseline = {lang: log_ppl(lang) for lang in languages}
table(["language", "eval texts", "log-PPL", "PPL"],
      [[lang, len(eval_texts[lang]), baseline[lang], float(np.exp(baseline[lang]))] for lang in languages])

# %% [markdown]
# ## Deactivate each language's neurons
#
# `neurons[lang]` is one language's specific and related neurons; inside the `with` block they are
# 0 at every position, and the hooks are gone when it ends. A language without neurons gets an
# empty (NaN) row.

# %%
started = time.perf_counter()
delta = np.full((len(languages), len(languages)), np.nan)
for i, row in enumerate(languages):
    if neurons[row].is_empty():
        print(f"{row}: no neurons at this size, row left empty")
        continue
    with steer.deactivate(model, neurons[row]):
        for j, column in enumerate(languages):
            delta[i, j] = log_ppl(column) - baseline[column]

random_set = neurons.random_like(seed=0)
control = np.full(len(languages), np.nan)
for j, column in enumerate(languages):
    if not random_set[column].is_empty():
        with steer.deactivate(model, random_set[column]):
            control[j] = log_ppl(column) - baseline[column]
print(f"{len(languages) + 1} rows in {time.perf_counter() - started:.0f} s")

# %%
rows = [f"{lang} off" for lang in languages] + ["random (own size)"]
matrix = np.vstack([delta, control])
limit = np.nanmax(np.abs(matrix)) if np.isfinite(matrix).any() else 1.0
fig, ax = plt.subplots(figsize=(0.7 * len(languages) + 2.5, 0.6 * len(rows) + 1.5))
image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit)
ax.set_xticks(range(len(languages)), languages)
ax.set_yticks(range(len(rows)), rows)
ax.set_xlabel("evaluated language")
ax.axhline(len(languages) - 0.5, color="black", linewidth=1)
for i in range(len(rows)):
    for j in range(len(languages)):
        if np.isfinite(matrix[i, j]):
            ax.text(j, i, f"{matrix[i, j]:+.2f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(matrix[i, j]) > 0.6 * limit else "black")
ax.set_title("Δ log-PPL (nats/token) when a language's neurons are off")
fig.colorbar(image, ax=ax, shrink=0.8)
fig.tight_layout()
fig.savefig(OUT / "delta_ppl.png", dpi=100)
plt.show()

# %% [markdown]
# ## What the numbers say
#
# The sentence below is computed from the matrix: the diagonal (a language's own neurons off, its
# own text scored) against the off-diagonal and against the random control.

# %%
diagonal = np.nanmean(np.diag(delta)) if np.isfinite(np.diag(delta)).any() else float("nan")
off_diagonal = np.nanmean(delta[~np.eye(len(languages), dtype=bool)]) if len(languages) > 1 else float("nan")
random_mean = np.nanmean(control) if np.isfinite(control).any() else float("nan")
selective = diagonal > off_diagonal and diagonal > random_mean
text = (f"Switching off a language's own neurons changes its log-PPL by {diagonal:+.3f} nats/token on average "
        f"(diagonal), other languages' by {off_diagonal:+.3f} (off-diagonal), and a random set of the same size "
        f"by {random_mean:+.3f}. ")
if selective:
    text += (f"The diagonal is {diagonal / off_diagonal:.1f}× the off-diagonal: the sets are language-selective, "
             "as the papers report." if off_diagonal > 0 else
             "The diagonal exceeds both the off-diagonal and the control: the sets are language-selective.")
else:
    text += ("At this size the sets are not clearly language-selective; collect statistics on more text "
             "(STEER_NB_MAX_STATS) and score more paragraphs (STEER_NB_N_EVAL) before reading anything into it.")
display(Markdown(text))

result = {
    "languages": languages, "baseline_log_ppl": baseline, "delta": delta.tolist(), "random_control": control.tolist(),
    "diagonal_mean": diagonal, "off_diagonal_mean": off_diagonal, "random_mean": random_mean, "summary": text,
}
(OUT / "delta_ppl.json").write_text(json.dumps(result, indent=2, default=lambda x: None))
print("wrote delta_ppl.json")

# %% [markdown]
# For the full benchmark (variants specific / specific+related / +general, several random seeds
# per cell, resumable) use `steer.bench.delta_ppl_matrix` or `steer bench`.
