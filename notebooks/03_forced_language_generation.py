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
# # 3. Forcing the output language
#
# To make the model continue in a target language, `steer.generate(..., stats=stats, force_language=target)`
# pushes the target's neurons by strength × (their mean on target-language text − their mean on the
# other languages), from the stats, while it predicts the first 4 new tokens (`steps`, default
# `steer.forcing.DEFAULT_STEPS`; None pushes at every step); the model then goes on by itself.
# Optionally it also switches off other languages' neurons (keeping those the target shares). Each
# continuation's language is then detected offline (`steer.detect_language`).

# %%
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

from IPython.display import Markdown, display

import steer
from steer.forcing import forcing_neurons

# Sizes: small by default so the notebook runs in minutes on a CPU; raise them for real numbers.
MAX_STATS = int(os.environ.get("STEER_NB_MAX_STATS", 24))  # paragraphs per language for the statistics
MAX_LENGTH = int(os.environ.get("STEER_NB_MAX_LENGTH", 128))  # tokens per paragraph, at most
LANGUAGES = [code for code in os.environ.get("STEER_NB_LANGUAGES", "").split(",") if code]  # empty: all
N_EVAL = 0  # no held-out paragraphs needed here
TARGETS = os.environ.get("STEER_NB_TARGETS", "de,fr,ja").split(",")  # languages to force
N_PROMPTS = int(os.environ.get("STEER_NB_N_PROMPTS", 3))
MAX_NEW_TOKENS = int(os.environ.get("STEER_NB_MAX_NEW_TOKENS", 24))

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no weight-loading bars (read when transformers loads)

# Everything this notebook writes goes under $STEER_NB_OUT (default: a fresh temporary folder, kept in OUT).
OUT = Path(os.environ.get("STEER_NB_OUT") or tempfile.mkdtemp(prefix="steer-nb-")) / "03_forced_language_generation"
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
# As in notebook 1, collect statistics on a slice of the corpus. Forcing picks its neurons from them
# unless given others: `steer.forcing.forcing_neurons(stats)`, the specificity baseline with 1,000
# neurons per language (on this model zhang2025 marks only tens per language, too few to push
# without garbling the text; README, "Forced language").

# %%
started = time.perf_counter()
model = steer.load_model()
corpus = steer.load_corpus(progress=False)
corpus = corpus.subset(languages=LANGUAGES or None, max_stats=MAX_STATS, max_eval=N_EVAL)
stats = steer.collect(model, corpus, max_length=MAX_LENGTH, progress=False)
neurons = forcing_neurons(stats)  # what generate(force_language=...) uses when given no neurons
print(steer.model_info(model).name, "|", corpus)
print(f"{len(neurons)} neurons ({neurons.method}, {neurons.params['n_per_language']} per language)"
      f" from {int(stats.tokens.sum())} tokens in {time.perf_counter() - started:.0f} s")

targets = [lang for lang in TARGETS if lang in neurons.languages and not neurons[lang].is_empty()]
skipped = [lang for lang in TARGETS if lang not in targets]
if skipped:
    print("not forced (not in the corpus slice, or no neurons at this size):", skipped)
print("targets:", targets)

# %% [markdown]
# ## Unsteered and forced, side by side
#
# Greedy decoding with the repetition controls forcing uses (`steer.forcing.DEFAULT_DECODING`),
# the same for both sides; English prompts. The unsteered model continues in English; each forced
# column should switch to its target language.

# %%
PROMPTS = [
    "To insert a table into your document, open the",
    "The weather was cold this morning, so we",
    "A spreadsheet function adds the values of",
][:N_PROMPTS]

forced = {target: steer.generate(model, PROMPTS, stats=stats, force_language=target, max_new_tokens=MAX_NEW_TOKENS)
          for target in targets}
decoding = {key: forced[targets[0]].settings[key] for key in ("repetition_penalty", "no_repeat_ngram_size")}
plain = steer.generate(model, PROMPTS, candidates=stats.languages, max_new_tokens=MAX_NEW_TOKENS, **decoding)

table(["prompt", "unsteered"] + [f"forced → {t}" for t in targets],
      [[prompt, f"{plain.texts[i]} ({plain.languages[i]})"]
       + [f"{forced[t].texts[i]} ({forced[t].languages[i]})" for t in targets]
       for i, prompt in enumerate(PROMPTS)])

# %%
success = {t: sum(lang == t for lang in forced[t].languages) / len(PROMPTS) for t in targets}
unsteered_share = {t: sum(lang == t for lang in plain.languages) / len(PROMPTS) for t in targets}
table(["target", "continuations in target (forced)", "in target (unsteered)"],
      [[t, f"{success[t]:.0%}", f"{unsteered_share[t]:.0%}"] for t in targets])

# %% [markdown]
# ## Steering modes
#
# Ways to push the target's neurons (no other language is switched off, `suppress="none"`, the
# default; `"source"` switches off the prompt's own language, `"others"` every other one):
# - `set`: the neuron's activation is replaced by strength × its mean on target-language text;
# - `add`: strength × that mean is added;
# - `diffmean`: strength × (target mean − mean over the other languages) is added (the default, strength 2);
# - `std` (not shown; stats collected with `sq_sums=True`): strength standard deviations, towards the target.
#
# A continuation detected as the target is not yet a success: many are garbled words in the right
# script. `steer.bench.forced_language` also asks that it read like the model's own text in that
# language (fluent success); see the README's "Forced language" for the measured rates.

# %%
example, target = PROMPTS[0], targets[0]
rows = [["unsteered", "–", plain.texts[0], plain.languages[0]]]
for mode in ("set", "additive", "diffmean"):
    out = steer.generate(model, example, stats=stats, force_language=target, mode=mode, max_new_tokens=MAX_NEW_TOKENS)
    rows.append([mode, out.settings["strength"], out.texts[0], out.languages[0]])
display(Markdown(f"Prompt: *{example}*, target **{target}**"))
table(["mode", "strength", "continuation", "detected"], rows)

# %% [markdown]
# ## Detected languages
#
# `steer.detect_language` is an offline identifier; restricted to candidate languages it picks the
# most likely of them, and says `und` when it cannot tell (e.g. a continuation without letters).

# %%
texts = plain.texts + [text for t in targets for text in forced[t].texts]
for text, lang in zip(texts, steer.detect_language(texts, candidates=neurons.languages), strict=True):
    print(f"{lang:>4}  {text[:90]!r}")

result = {"unsteered": plain.to_dict(), "forced": {t: g.to_dict() for t, g in forced.items()}, "success": success}
(OUT / "generations.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
print("wrote generations.json")

# %% [markdown]
# For a sweep over targets, modes and strengths with fluency scores, see `steer.bench.forced_language`
# or `steer bench`.
