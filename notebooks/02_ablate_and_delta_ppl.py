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
# `steer.bench.delta_ppl_matrix` does all of it, the same function `steer bench` and `steer demo`
# run. Its control deactivates, for each row, random neurons with as many in each layer as the row
# language's own set (`NeuronSet.random_like`, several seeds) and scores the row's own language:
# the diagonal should beat it.

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets, warned when steer loads

import json
import time

import numpy as np
from IPython.display import Image, Markdown, display

import steer
from steer.bench.delta_ppl import delta_ppl_matrix
from steer.bench.plots import plot_delta_ppl
from steer.notebook import setup, table

# Sizes: small by default so the notebook runs in minutes on a CPU; raise them for real numbers
# (each STEER_NB_<NAME> in the environment overrides one). Files go under $STEER_NB_OUT/<notebook>.
nb = setup("02_ablate_and_delta_ppl",
           max_stats=24,  # paragraphs per language for the statistics
           max_length=128,  # tokens per paragraph, at most
           languages=[],  # language codes; empty: all
           n_eval=2,  # held-out paragraphs scored per language
           n_random=3)  # random control seeds per row
MAX_STATS, MAX_LENGTH, LANGUAGES, N_EVAL, N_RANDOM, OUT = (nb.max_stats, nb.max_length, nb.languages, nb.n_eval,
                                                          nb.n_random, nb.out)

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
# ## The matrix
#
# `delta_ppl_matrix(model, neurons, eval_texts)` scores the unsteered baseline, then each row with
# that language's specific and related neurons off (`steer.deactivate`, inside a `with` block: the
# hooks are gone when it ends), then the random control. A language without neurons gets an empty
# row. `steer.bench.perplexity` scores every token after the first (pads masked); `log_ppl` pools
# the tokens of a language's texts.

# %%
started = time.perf_counter()
languages = corpus.languages
eval_texts = {lang: corpus.eval[lang] for lang in languages}
result = delta_ppl_matrix(model, neurons, eval_texts, n_random=N_RANDOM, random_columns="diagonal",
                          max_length=MAX_LENGTH, progress=False)
entry = result["variants"]["specific+related"]
print(f"{len(languages)} rows × {len(languages)} columns and {N_RANDOM} random seeds per row "
      f"in {time.perf_counter() - started:.0f} s; empty rows: {entry['empty_rows'] or 'none'}")
baseline = {lang: result["baseline"][lang]["log_ppl"] for lang in languages}
table(["language", "eval texts", "log-PPL", "PPL", "neurons off"],
      [[lang, len(eval_texts[lang]), baseline[lang], float(np.exp(baseline[lang])), entry["n_neurons"][lang]]
       for lang in languages])

# %%
plot_delta_ppl(result, OUT / "delta_ppl.png")
display(Image(filename=str(OUT / "delta_ppl.png")))

# %% [markdown]
# ## What the numbers say
#
# The sentence below is computed from the result's summary: the diagonal (a language's own neurons
# off, its own text scored) against the off-diagonal and against the random control on the diagonal.

# %%
summary = entry["summary"]
diagonal, off_diagonal = summary["diagonal_mean_delta_logppl"], summary["offdiagonal_mean_delta_logppl"]
random_mean = summary.get("random_control_diagonal_mean_delta_logppl")
nan = float("nan")
diagonal, off_diagonal, random_mean = (nan if v is None else v for v in (diagonal, off_diagonal, random_mean))
selective = diagonal > off_diagonal and diagonal > random_mean
text = (f"Switching off a language's own neurons changes its log-PPL by {diagonal:+.3f} nats/token on average "
        f"(diagonal), other languages' by {off_diagonal:+.3f} (off-diagonal), and random neurons with the same "
        f"per-layer counts by {random_mean:+.3f} ({N_RANDOM} seeds). ")
if selective:
    text += (f"The diagonal is {diagonal / off_diagonal:.1f}× the off-diagonal: the sets are language-selective, "
             "as the papers report." if off_diagonal > 0 else
             "The diagonal exceeds both the off-diagonal and the control: the sets are language-selective.")
else:
    text += ("At this size the sets are not clearly language-selective; collect statistics on more text "
             "(STEER_NB_MAX_STATS) and score more paragraphs (STEER_NB_N_EVAL) before reading anything into it.")
display(Markdown(text))

(OUT / "delta_ppl.json").write_text(json.dumps({**result, "text": text}, indent=2))
print("wrote delta_ppl.json")

# %% [markdown]
# For the other variants (specific only, or with the general neurons), a random control on every
# cell, resuming after an interruption and a report, give `delta_ppl_matrix` more arguments
# (`variants=`, `random_columns="all"`, `checkpoint=`) or run `steer bench` with a `[bench.delta_ppl]` section.
