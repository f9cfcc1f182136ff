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
# # 4. Multilingual alignment and language neurons
#
# Zhang et al. (2025) fine-tune a model to translate between a few languages and English, then
# identify language neurons before and after. They report that alignment moves neurons between
# classes (specific ↔ related) and that untrained languages change the same way as trained ones
# ("spontaneous multilingual alignment").
#
# The recipe here: `steer.align.align` (LoRA on translation pairs, merged into a plain model
# folder), then `steer.collect` + `steer.identify` on the base and on the aligned model, then
# `steer.bench.compare_neuron_sets`.
#
# **At this size the numbers are a smoke test.** The model is a tiny random Gemma 3 (4 layers × 128
# neurons, byte-level tokenizer) and the corpus a dozen sentences, so nothing here says anything
# about real models. To do it for real on the embedded Gemma 3 270M:
#
# ```
# steer align --train-languages eu,om --out aligned      # about 13 minutes on a 2-core CPU
# steer collect --out stats_base
# steer collect --model aligned --out stats_aligned
# steer identify stats_base --out base.json
# steer identify stats_aligned --out aligned.json
# steer compare base.json aligned.json --trained eu,om --out compare
# ```

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets, warned when steer loads

import time

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import steer
from steer.align import AlignConfig, align, read_align_info
from steer.bench import compare_markdown, compare_neuron_sets
from steer.bench.alignment import alignment_claims, alignment_markdown
from steer.notebook import setup, table
from steer.testing import tiny_model_dir

# Files go under $STEER_NB_OUT/<notebook>; STEER_NB_ALIGN_STEPS overrides the number of steps.
nb = setup("04_alignment_and_language_neurons", align_steps=20)
STEPS, OUT = nb.align_steps, nb.out
TRAIN = ["de", "fr"]  # languages the alignment trains on
TOP_RATE = 0.05  # 5% of 512 neurons: the tiny model has few


# %% [markdown]
# ## A tiny model and a small parallel corpus
#
# `tiny_model_dir` builds (in about a second) a randomly initialised Gemma 3 with a byte-level
# tokenizer. Alignment needs a *parallel* corpus: `stats[lang][i]` is the same sentence in every
# language, and `ids` names each one. English is the pivot; German and French are trained, Spanish
# and Japanese are not.

# %%
base_dir = tiny_model_dir("gemma3", root=OUT / "models")

SENTENCES = [  # en, de, fr, es, ja
    ("Click the button to save the document.", "Klicken Sie auf die Schaltfläche, um das Dokument zu speichern.",
     "Cliquez sur le bouton pour enregistrer le document.", "Haga clic en el botón para guardar el documento.",
     "ボタンをクリックして文書を保存します。"),
    ("Select the text that you want to copy.", "Wählen Sie den Text aus, den Sie kopieren möchten.",
     "Sélectionnez le texte que vous voulez copier.", "Seleccione el texto que desea copiar.",
     "コピーしたいテキストを選択します。"),
    ("The table has three rows and four columns.", "Die Tabelle hat drei Zeilen und vier Spalten.",
     "Le tableau a trois lignes et quatre colonnes.", "La tabla tiene tres filas y cuatro columnas.",
     "表には三つの行と四つの列があります。"),
    ("Open the Format menu and choose Paragraph.", "Öffnen Sie das Menü Format und wählen Sie Absatz.",
     "Ouvrez le menu Format et choisissez Paragraphe.", "Abra el menú Formato y elija Párrafo.",
     "書式メニューを開いて段落を選びます。"),
    ("This function returns the largest value in a list.", "Diese Funktion gibt den größten Wert einer Liste zurück.",
     "Cette fonction renvoie la plus grande valeur d'une liste.",
     "Esta función devuelve el valor más grande de una lista.",
     "この関数はリストの最大値を返します。"),
    ("You can change the page margins in this dialog.", "In diesem Dialog können Sie die Seitenränder ändern.",
     "Vous pouvez modifier les marges de la page dans cette boîte de dialogue.",
     "Puede cambiar los márgenes de la página en este diálogo.", "このダイアログでページの余白を変更できます。"),
    ("Press Enter to confirm your entry.", "Drücken Sie die Eingabetaste, um Ihre Eingabe zu bestätigen.",
     "Appuyez sur Entrée pour confirmer votre saisie.", "Pulse Intro para confirmar su entrada.",
     "入力を確定するにはEnterキーを押します。"),
    ("The chart shows the sales of each month.", "Das Diagramm zeigt den Umsatz jedes Monats.",
     "Le graphique montre les ventes de chaque mois.", "El gráfico muestra las ventas de cada mes.",
     "グラフは各月の売上を示しています。"),
    ("Delete the selected cells and move the rest up.",
     "Löschen Sie die markierten Zellen und verschieben Sie den Rest nach oben.",
     "Supprimez les cellules sélectionnées et déplacez le reste vers le haut.",
     "Elimine las celdas seleccionadas y mueva el resto hacia arriba.", "選択したセルを削除して残りを上に移動します。"),
    ("Insert a picture from a file on your computer.", "Fügen Sie ein Bild aus einer Datei auf Ihrem Computer ein.",
     "Insérez une image à partir d'un fichier de votre ordinateur.",
     "Inserte una imagen desde un archivo de su ordenador.", "コンピューター上のファイルから画像を挿入します。"),
    ("The spelling check marks unknown words in red.", "Die Rechtschreibprüfung markiert unbekannte Wörter rot.",
     "La vérification orthographique marque les mots inconnus en rouge.",
     "La revisión ortográfica marca en rojo las palabras desconocidas.", "スペルチェックは未知の単語を赤で示します。"),
    ("Save a copy of the file in another format.", "Speichern Sie eine Kopie der Datei in einem anderen Format.",
     "Enregistrez une copie du fichier dans un autre format.", "Guarde una copia del archivo en otro formato.",
     "ファイルのコピーを別の形式で保存します。"),
]
languages = ["en", "de", "fr", "es", "ja"]
n_stats = len(SENTENCES) - 2
corpus = steer.Corpus(
    languages=languages,
    stats={lang: [row[k] for row in SENTENCES[:n_stats]] for k, lang in enumerate(languages)},
    eval={lang: [row[k] for row in SENTENCES[n_stats:]] for k, lang in enumerate(languages)},
    ids={"stats": [f"s{i}" for i in range(n_stats)], "eval": [f"e{i}" for i in range(len(SENTENCES) - n_stats)]},
    source="notebook", parallel=True,
)
print(base_dir.name, "|", corpus)

# %% [markdown]
# ## Alignment
#
# `AlignConfig` holds every setting; `align` trains a LoRA adapter on both translation directions
# (trained language ↔ English) of the `stats` split, merges it, and writes a model folder with
# `align.json` (settings, losses, weights hashes). Rerunning with the same arguments returns at once.

# %%
config = AlignConfig(train_languages=TRAIN, pivot="en", steps=STEPS, batch_size=4, max_length=192, lr=1e-3,
                     checkpoint_every=max(STEPS, 1))
started = time.perf_counter()
aligned_dir = align(base_dir, corpus, OUT / "aligned", config, progress=False)
info = read_align_info(aligned_dir)
print(f"{info['steps']} steps on {info['n_examples']} examples in {time.perf_counter() - started:.1f} s; "
      f"loss {info['losses'][0]:.3f} → {info['losses'][-1]:.3f}")

fig, ax = plt.subplots(figsize=(5, 2.5))
ax.plot(range(1, len(info["losses"]) + 1), info["losses"])
ax.set_xlabel("step")
ax.set_ylabel("translation loss")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Language neurons before and after
#
# Same corpus, same method and parameters on both models, so any difference comes from the weights.

# %%
sets = {}
for name, folder in (("base", base_dir), ("aligned", aligned_dir)):
    model = steer.load_model(folder)
    stats = steer.collect(model, corpus, batch_size=4, progress=False)
    sets[name] = steer.identify(stats, method="zhang2025", top_rate=TOP_RATE)
    sets[name].save(OUT / f"neurons_{name}.json")
    print(f"{name:>8}: {len(sets[name])} neurons, by N {sets[name].counts_by_sharing()}")

# %% [markdown]
# ## Comparison
#
# `compare_neuron_sets(A, B, trained=...)` reports the counts by N before and after, the per-layer
# change of each class, the overlap of the two sets, and the change of specific / related counts for
# trained versus untrained languages (Zhang et al. 2025, Table 2).

# %%
result = compare_neuron_sets(sets["base"], sets["aligned"], trained=TRAIN)

ns = list(result["by_sharing"])
before = [result["by_sharing"][n]["a"] for n in ns]
after = [result["by_sharing"][n]["b"] for n in ns]
fig, ax = plt.subplots(figsize=(5, 2.8))
x = np.arange(len(ns))
ax.bar(x - 0.2, before, width=0.4, label="base")
ax.bar(x + 0.2, after, width=0.4, label="aligned")
ax.set_xticks(x, ns)
ax.set_xlabel("N (languages sharing a neuron)")
ax.set_ylabel("neurons")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "compare_by_sharing.png", dpi=100)
plt.show()

display(Markdown(compare_markdown(result)))

# %%
groups = result["trained_vs_untrained"]
table(["group", "languages", "Δ specific per language", "Δ related per language"],
      [[group, ", ".join(groups[group]), groups["specific"][group]["mean_change_per_language"],
        groups["related"][group]["mean_change_per_language"]] for group in ("trained", "untrained")])
follow = {True: "yes", False: "no, they move the opposite way", None: "not shown"}[groups["untrained_follow_trained"]]
print(f"untrained languages follow the trained ones beyond the resampling noise: {follow}",
      "(a smoke test at this size: random weights, a dozen sentences)")

# %% [markdown]
# ## Do Zhang et al.'s claims hold here?
#
# `alignment_claims` decides each claim against resampling noise: a change counts only when its 95%
# interval (2,000 resamples of the neurons) lies wholly on one side of zero, and is "not shown"
# otherwise. `steer compare ... --base-model M --aligned-model DIR` adds the held-out perplexity
# claim (low-resource languages against the untrained high-resource ones, resampling texts).

# %%
claims = alignment_claims(result, None, TRAIN, low_resource=[])
display(Markdown(alignment_markdown(claims, None, TRAIN)))
