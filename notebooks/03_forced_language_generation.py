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
# pushes the target's neurons while it generates. The policy lives in `steer.forcing`. Two kinds of push:
# - a *rule* (`mode=`), nothing to fit: the *diffmean* rule adds strength × (the neuron's mean on
#   target-language text − its mean on the other languages) (`DEFAULT_STRENGTH`) over the first
#   `DEFAULT_STEPS` new tokens, and the model goes on by itself;
# - a *learned* push (the last sections): one offset per neuron, fitted on parallel text. It is what
#   `force_language` does when given neither `mode` nor `push`, because it forces far more often (README,
#   "A learned language push"); it is fitted the first time for each (model, target) (minutes on a CPU) and
#   read from steer's cache after.
#
# Both push the specificity baseline's neurons of each language (500 per language for the rule,
# `FORCING_NEURONS`; 1,000 for the learned push, `PUSH_NEURONS`), switch no other language off
# (`suppress="none"`), and decode greedily with a repetition penalty (`DEFAULT_DECODING`); the settings are
# the ones chosen on the tuning half of the held-out paragraphs (README, "Forced language").
# This notebook shows the rule first, since it needs no fitting, and the first cell prints its settings.
#
# Whether a forced continuation is in the target is decided offline (`steer.detect_language`); whether it
# counts as a success, by the library's measure (`steer.bench.forced_language`): in the target *and* fluent,
# with a 95% interval over paragraphs, beside the same push on random neurons and two ceilings.

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets, warned when steer loads

import json
import time

from IPython.display import Image, Markdown, display

import steer
from steer.bench.forced import forced_language
from steer.bench.plots import plot_forced
from steer.bench.report import forced_table
from steer.forcing import (DEFAULT_DECODING, DEFAULT_FORCE_MODE, DEFAULT_PUSH, DEFAULT_STEPS, DEFAULT_STRENGTH,
                           FORCING_NEURONS, PUSH_NEURONS)
from steer.forcing import forcing_neurons
from steer.notebook import setup, table

# Sizes: small by default so the notebook runs in minutes on a CPU; raise them for real numbers
# (each STEER_NB_<NAME> in the environment overrides one). Files go under $STEER_NB_OUT/<notebook>.
nb = setup("03_forced_language_generation",
           max_stats=24,  # paragraphs per language for the statistics
           max_length=128,  # tokens per paragraph, at most
           languages=["en", "de", "fr", "ja"],  # the languages forced to (and prompted in); empty: all
           n_prompts=1,  # prompts per (source, target) pair in the measurement
           n_baseline=30,  # tuning-half paragraphs per language whose true continuations set the fluency bar
           n_random=3,  # random-neuron control seeds
           max_new_tokens=16,
           push_steps=30)  # training steps of the learned push fitted at the end
MAX_STATS, MAX_LENGTH, LANGUAGES, OUT = nb.max_stats, nb.max_length, nb.languages, nb.out
N_PROMPTS, N_BASELINE, N_RANDOM, MAX_NEW_TOKENS = nb.n_prompts, nb.n_baseline, nb.n_random, nb.max_new_tokens
print(f"forcing: decoding {DEFAULT_DECODING}; default push: {DEFAULT_PUSH} on {PUSH_NEURONS}; the rule: "
      f"{DEFAULT_FORCE_MODE} at strength {DEFAULT_STRENGTH[DEFAULT_FORCE_MODE]:g} on {FORCING_NEURONS}, the first "
      f"{DEFAULT_STEPS} new tokens")

# %% [markdown]
# ## Neurons
#
# As in notebook 1, collect statistics on a slice of the corpus' `stats` split. Forcing picks its neurons
# from them unless given others: `steer.forcing.forcing_neurons(stats)` (on this model zhang2025 marks only
# tens of neurons per language, too few to push without garbling the text).

# %%
started = time.perf_counter()
model = steer.load_model()
corpus = steer.load_corpus(progress=False)
corpus = corpus.subset(languages=LANGUAGES or None, max_stats=MAX_STATS)  # every held-out paragraph stays
stats = steer.collect(model, corpus, max_length=MAX_LENGTH, progress=False)
neurons = forcing_neurons(stats)  # what a rule's push uses when given no neurons (FORCING_NEURONS)
targets = [lang for lang in neurons.languages if not neurons[lang].is_empty()]
print(steer.model_info(model).name, "|", corpus)
print(f"{len(neurons)} neurons ({neurons.method}, {neurons.params['n_per_language']} per language)"
      f" from {int(stats.tokens.sum())} tokens in {time.perf_counter() - started:.0f} s; targets: {targets}")

# %% [markdown]
# ## Unsteered and forced, side by side
#
# A few English prompts, decoded the same way on both sides, forced with the diffmean rule
# (`mode=DEFAULT_FORCE_MODE`). The unsteered model continues in English; each forced column should switch
# to its target language. The label after each continuation is the language `steer.detect_language` finds
# in it.

# %%
PROMPTS = [
    "To insert a table into your document, open the",
    "The weather was cold this morning, so we",
    "A spreadsheet function adds the values of",
]
forced = {target: steer.generate(model, PROMPTS, stats=stats, force_language=target, mode=DEFAULT_FORCE_MODE,
                                 max_new_tokens=MAX_NEW_TOKENS) for target in targets if target != "en"}
plain = steer.generate(model, PROMPTS, candidates=stats.languages, max_new_tokens=MAX_NEW_TOKENS, **DEFAULT_DECODING)
table(["prompt", "unsteered"] + [f"forced → {t}" for t in forced],
      [[prompt, f"{plain.texts[i]} ({plain.languages[i]})"]
       + [f"{forced[t].texts[i]} ({forced[t].languages[i]})" for t in forced]
       for i, prompt in enumerate(PROMPTS)])

# %% [markdown]
# ## Measured: fluent success with its interval
#
# A continuation in the target is not yet a success: many are garbled words in the right script.
# `forced_language` measures the default setting the way the README's tables are measured, at a small size:
# every ordered (source, target) pair of the languages continues `N_PROMPTS` prompt(s) cut from held-out
# paragraphs of its own (the paragraph's first words, in the source language; the evaluation half), and a
# continuation succeeds when the language identifier's top-1 is the target *and* it is fluent: not less
# likely under the unsteered model than human text in the target (a bar set from the true continuations of
# `N_BASELINE` tuning-half paragraphs per language) and not degenerate. Beside it, judged the same way: the
# same push on random neurons with the same per-layer counts (`N_RANDOM` seeds), the unsteered model, and
# two ceilings (the model's own continuations of prompts written in the target, and the true continuations).
# Every rate has a 95% interval from a bootstrap over paragraphs.

# %%
started = time.perf_counter()
result = forced_language(model, neurons, stats, {lang: list(corpus.eval[lang]) for lang in corpus.languages},
                         n_prompts=N_PROMPTS, n_baseline=N_BASELINE, n_random=N_RANDOM,
                         max_new_tokens=MAX_NEW_TOKENS, progress=False).to_dict()
print(f"{result['n']} forced continuations from {result['n_paragraphs']} paragraphs in "
      f"{time.perf_counter() - started:.0f} s")
display(Markdown("\n".join(forced_table(result))))


def rate(rates: dict | None) -> str:
    if not rates or rates.get("fluent_success") is None:
        return "–"
    ci = rates.get("fluent_success_ci")
    return f"{rates['fluent_success']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


display(Markdown(
    f"Forced to another language, **{rate(result)}** of {result['n']} continuations are fluent text in the "
    f"target (95% interval over paragraphs); the same push on random neurons gives {rate(result['random'])}, "
    f"the unsteered model {rate(result['unsteered'])}. The ceilings: the model's own text in the target passes "
    f"{rate(result['own_text'])}, human text {rate(result['human_text'])}. At this size the intervals are wide; "
    "the README's tables come from larger runs of the same measurement."))

# %% [markdown]
# Per target, the same rates as bars (left: fluent success for every prompt language × target):

# %%
plot_forced(result, OUT / "forced.png")
display(Image(filename=str(OUT / "forced.png")))
(OUT / "forced.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
print("wrote forced.json")

# %% [markdown]
# ## Steering modes
#
# Other ways to push the target's neurons (`mode=`), each at its default strength (`DEFAULT_STRENGTH`):
# - `set`: the neuron's activation is replaced by strength × its mean on target-language text;
# - `additive`: strength × that mean is added;
# - `diffmean`: strength × (target mean − mean over the other languages) is added (the default rule);
# - `std` (not shown; stats collected with `sq_sums=True`): strength standard deviations, towards the target.
#
# `suppress="source"` also switches off the prompt's own language's neurons, `"others"` every other
# language's. The README's "Forced language" compares them under the measure above.

# %%
example, target = PROMPTS[0], next(iter(forced))
rows = [["unsteered", "–", plain.texts[0], plain.languages[0]]]
for mode in ("set", "additive", "diffmean"):
    out = steer.generate(model, example, stats=stats, force_language=target, mode=mode, max_new_tokens=MAX_NEW_TOKENS)
    rows.append([mode, out.settings["strength"], out.texts[0], out.languages[0]])
display(Markdown(f"Prompt: *{example}*, target **{target}**"))
table(["mode", "strength", "continuation", "detected"], rows)

# %% [markdown]
# For a sweep over neurons, modes and strengths on the tuning half, see `benchmarks/forced_sweep.py`; for
# the measurement as a benchmark with a report, `steer bench` with a `[bench.forced]` section.

# %% [markdown]
# ## A learned push
#
# diffmean pushes every neuron of the target by one rule. `steer.fit_push` learns one offset per neuron
# instead (here of the learned push's default neurons, `PUSH_NEURONS`), from parallel text of the statistics
# split only (the opening of a paragraph in another language, then the rest of that paragraph in the target;
# cross-entropy of the continuation, the model frozen), and `generate(..., push=push)` forces with it. Here
# one target's push at a small budget (`push_steps`). `generate(..., force_language=target)` with neither
# `push` nor `mode` fits one at the library's budget the first time (`steer.forcing.learned_push`) and reads
# it from steer's cache after.

# %%
from steer.push_training import PushTraining

target = next(t for t in forced if t != "en")
started = time.perf_counter()
push = steer.fit_push(model, corpus, target, neurons=forcing_neurons(stats, learned=True), progress=False,
                      training=PushTraining(max_steps=nb.push_steps, eval_every=max(1, nb.push_steps // 3)))
print(f"{len(push)} offsets for {target} in {time.perf_counter() - started:.0f} s; validation loss "
      f"{push.meta['val_loss_unpushed']:.2f} -> {push.meta['val_loss']:.2f} nats/token (step {push.meta['best_step']})")
learned = steer.generate(model, PROMPTS, push=push, max_new_tokens=MAX_NEW_TOKENS)
table(["prompt", f"diffmean → {target}", f"learned push → {target}"],
      [[prompt, f"{forced[target].texts[i]} ({forced[target].languages[i]})",
        f"{learned.texts[i]} ({learned.languages[i]})"] for i, prompt in enumerate(PROMPTS)])
saved = push.save(OUT / "push")

# %% [markdown]
# ## Does the push need the language neurons?
#
# `benchmarks/push_compare.py` fits the same push, with the same budget, on each target's language neurons, on
# random neurons with the same per-layer counts, and as one residual-stream vector, and measures each as
# above on the evaluation half (README, "A learned language push"). The figures of its last run, from the
# result file in a checkout of steer (an installed steer has none): fluent success per target against the
# diffmean rule and the random-neuron control, the learning curve in validation loss, and fluent success
# against training steps.

# %%
from pathlib import Path

from steer.bench.readme import push_rows

results = Path(steer.__file__).resolve().parent.parent / "docs" / "results"
if (results / "push-compare.json").is_file():
    comparison = json.loads((results / "push-compare.json").read_text())
    display(Markdown("\n".join(push_rows(comparison))))
    display(Image(filename=str(results / "push-compare.png")))
else:
    print("no docs/results/push-compare.json here: run benchmarks/push_compare.py in a checkout")
