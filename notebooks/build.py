"""Write notebooks/*.ipynb (no outputs) with nbformat. Run: .venv/bin/python notebooks/build.py"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent

TABLE_HELPER = '''
def table(header, rows):
    """Show rows as a markdown table."""
    def cell(value):
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\\\|").replace("\\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    display(Markdown("\\n".join(lines)))
'''.strip()


def setup_cell(name: str, sizes: str) -> str:
    return f'''
import os
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import steer

{sizes.strip()}

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

# Everything this notebook writes goes under $STEER_NB_OUT (default: a fresh temporary folder).
OUT = Path(os.environ.get("STEER_NB_OUT") or tempfile.mkdtemp(prefix="steer-nb-")) / "{name}"
OUT.mkdir(parents=True, exist_ok=True)
print("steer", steer.__version__, "| output folder:", OUT)

{TABLE_HELPER}
'''.strip()


EMBEDDED_SIZES = '''
# Sizes: small by default so the notebook runs in minutes on a CPU; raise them for real numbers.
MAX_STATS = int(os.environ.get("STEER_NB_MAX_STATS", 24))    # paragraphs per language for the statistics
MAX_LENGTH = int(os.environ.get("STEER_NB_MAX_LENGTH", 128))  # tokens per paragraph, at most
LANGUAGES = [code for code in os.environ.get("STEER_NB_LANGUAGES", "").split(",") if code]  # empty: all
'''

LOAD_AND_COLLECT = '''
started = time.perf_counter()
model = steer.load_model()
corpus = steer.load_corpus(progress=False)
corpus = corpus.subset(languages=LANGUAGES or None, max_stats=MAX_STATS, max_eval=N_EVAL)
stats = steer.collect(model, corpus, max_length=MAX_LENGTH, progress=False)
neurons = steer.identify(stats, method="zhang2025")
print(steer.model_info(model).name, "|", corpus)
print(f"{sum(neurons.counts_by_sharing().values())} language neurons (zhang2025, λ = {neurons.params['lambda']:.3f}) "
      f"from {int(stats.tokens.sum())} tokens in {time.perf_counter() - started:.0f} s")
'''


def write(name: str, cells: list) -> None:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    ROOT.mkdir(exist_ok=True)
    nbformat.write(nb, ROOT / f"{name}.ipynb")
    print("wrote", ROOT / f"{name}.ipynb")


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str):
    return new_code_cell(text.strip())


# ---------------------------------------------------------------------------------------------- 01
write("01_find_language_neurons", [
    md('''
# 1. Finding language neurons

A neuron of an MLP layer is *active* on a token when its gate activation is positive. Counting, for
each language, on what fraction of that language's tokens each neuron is active gives an activation
probability `P[language, layer, neuron]`. Neurons whose probability is concentrated on one or a few
languages are *language neurons*: **specific** when only one language claims them (N = 1),
**related** when several do (N > 1); **general** neurons are active for every language and are kept
apart (Zhang et al. 2025; LAPE: Tang et al. 2024).

This notebook collects the statistics on a small slice of the embedded LibreOffice-help corpus with
the embedded Gemma 3 270M, selects neurons with both methods and looks at where they are.
'''),
    code(setup_cell("01_find_language_neurons", EMBEDDED_SIZES)),
    md('''
## Model and corpus

`steer.load_model()` loads the embedded Gemma 3 270M behind TransformerLens hook points;
`steer.load_corpus()` the paragraph-aligned LibreOffice help. We keep the first `MAX_STATS`
paragraphs of each language's `stats` split (the `eval` split stays held out for notebook 2).
'''),
    code('''
model = steer.load_model()
info = steer.model_info(model)
print(f"{info.name}: {info.n_layers} layers × {info.d_mlp} MLP neurons (weights {info.weights_hash})")

corpus = steer.load_corpus(progress=False).subset(languages=LANGUAGES or None, max_stats=MAX_STATS, max_eval=0)
print(corpus)
'''),
    md('''
## Activation statistics

`steer.collect` streams the paragraphs through the model once and counts, per language, layer and
neuron, the tokens on which the neuron is active (and sums its output, used later for steering).
The result is a plain object that can be saved and merged.
'''),
    code('''
started = time.perf_counter()
stats = steer.collect(model, corpus, max_length=MAX_LENGTH, progress=False)
print(f"collected in {time.perf_counter() - started:.1f} s")
table(["language", "tokens"], [[lang, int(n)] for lang, n in zip(stats.languages, stats.tokens)])
stats.save(OUT / "stats");
'''),
    md('''
## Selecting language neurons: zhang2025 and LAPE

Both methods rank neurons by the entropy of their activation probability over languages (low
entropy = concentrated on few languages) and keep the top 1% (`top_rate=0.01`); a language claims
a selected neuron when its probability is above a high quantile of all probabilities.
`zhang2025` adds a peak term weighted by λ, searched so that no general neuron is selected.
'''),
    code('''
zhang = steer.identify(stats, method="zhang2025")
lape = steer.identify(stats, method="lape")
def n_language(neurons):
    """Neurons claimed by at least one language (specific + related), general ones excluded."""
    return sum(neurons.counts_by_sharing().values())

for neurons in (zhang, lape):
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in neurons.params.items()}
    print(f"{neurons.method:>9}: {n_language(neurons)} language neurons, {int(neurons.general.sum())} general | {shown}")
'''),
    md('''
## Where the neurons are: counts per layer

The papers report language neurons concentrated in the first and last layers. Each bar counts a
neuron once, by its class.
'''),
    code('''
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
'''),
    md('''
## Counts per language

How many neurons each language claims alone (specific) and together with other languages (related).
'''),
    code('''
per_zhang, per_lape = zhang.counts_per_language(), lape.counts_per_language()
table(["language", "zhang2025 specific", "zhang2025 related", "lape specific", "lape related"],
      [[lang, per_zhang[lang]["specific"], per_zhang[lang]["related"], per_lape[lang]["specific"], per_lape[lang]["related"]]
       for lang in zhang.languages])
'''),
    md('''
## Counts by N (how many languages share a neuron)

A neuron claimed by N languages is specific for N = 1 and related for N > 1. Most language
neurons are expected at small N.
'''),
    code('''
by_zhang, by_lape = zhang.counts_by_sharing(), lape.counts_by_sharing()
table(["N", "zhang2025", "lape"], [[n, by_zhang[n], by_lape[n]] for n in by_zhang])
'''),
    md('''
## Which languages share neurons

`overlap()[a, b]` counts the neurons claimed by both a and b (the diagonal is a's total). Related
languages (e.g. the Romance ones, or Japanese and Chinese) are expected to share more.
'''),
    code('''
overlap = zhang.overlap().numpy()
fig, ax = plt.subplots(figsize=(0.55 * len(zhang.languages) + 2, 0.55 * len(zhang.languages) + 1.5))
image = ax.imshow(overlap, cmap="viridis")
ax.set_xticks(range(len(zhang.languages)), zhang.languages)
ax.set_yticks(range(len(zhang.languages)), zhang.languages)
for i in range(len(zhang.languages)):
    for j in range(len(zhang.languages)):
        ax.text(j, i, int(overlap[i, j]), ha="center", va="center",
                color="white" if overlap[i, j] < overlap.max() / 2 else "black", fontsize=8)
ax.set_title("zhang2025: neurons shared by two languages")
fig.colorbar(image, ax=ax, shrink=0.8)
fig.tight_layout()
fig.savefig(OUT / "overlap.png", dpi=100)
plt.show()
'''),
    md('''
## Do the two methods agree?

Jaccard index of the (language, layer, neuron) memberships: 1 means the same sets, 0 disjoint.
'''),
    code('''
rows = [["all languages", zhang.jaccard(lape), n_language(zhang), n_language(lape)]]
rows += [[lang, zhang[lang].jaccard(lape[lang]), len(zhang[lang]), len(lape[lang])] for lang in zhang.languages]
table(["languages", "Jaccard", "zhang2025 neurons", "lape neurons"], rows)
'''),
    md('''
## Saving

A neuron file records the model (name, weights hash), the corpus fingerprint, the method and its
parameters; `NeuronSet.load(path, model=model)` refuses a file made for another model.
'''),
    code('''
for neurons in (zhang, lape):
    path = neurons.save(OUT / f"neurons_{neurons.method}.json")
    again = steer.NeuronSet.load(path, model=model)
    assert again.jaccard(neurons) == 1.0 and again.languages == neurons.languages
    print("saved", path)
'''),
])

# ---------------------------------------------------------------------------------------------- 02
write("02_ablate_and_delta_ppl", [
    md('''
# 2. Deactivating language neurons: the ΔPPL matrix

If a set of neurons carries a language, switching it off should hurt that language's perplexity
much more than the others'. For every row language we set its neurons' activations to 0
(`steer.deactivate`) and score the held-out `eval` paragraphs of every column language:
Δ = log-PPL(deactivated) − log-PPL(unsteered), in nats per token. The `eval` split is parallel
(the same paragraphs in every language), so columns differ by language, not by content.

A control row deactivates, for each column language, a random set with as many neurons in each
layer as that language's own set (`NeuronSet.random_like`): the diagonal should beat it.
'''),
    code(setup_cell("02_ablate_and_delta_ppl", EMBEDDED_SIZES + '''
N_EVAL = int(os.environ.get("STEER_NB_N_EVAL", 4))            # held-out paragraphs scored per language
''')),
    md('''
## Neurons

The same steps as notebook 1, at the same size: load, collect on the `stats` split, identify with
`zhang2025`.
'''),
    code(LOAD_AND_COLLECT),
    md('''
## Baseline perplexity

`steer.bench.perplexity` scores every token after the first (pads masked), under whatever
intervention is active around the call; `log_ppl` pools the tokens of all texts.
'''),
    code('''
from steer.bench import perplexity

languages = corpus.languages
eval_texts = {lang: corpus.eval[lang] for lang in languages}

def log_ppl(lang):
    return perplexity(model, eval_texts[lang], max_length=MAX_LENGTH)["log_ppl"]

baseline = {lang: log_ppl(lang) for lang in languages}
table(["language", "eval texts", "log-PPL", "PPL"],
      [[lang, len(eval_texts[lang]), baseline[lang], float(np.exp(baseline[lang]))] for lang in languages])
'''),
    md('''
## Deactivate each language's neurons

`neurons[lang]` is one language's specific and related neurons; inside the `with` block they are
0 at every position, and the hooks are gone when it ends. A language without neurons gets an
empty (NaN) row.
'''),
    code('''
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
'''),
    code('''
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
'''),
    md('''
## What the numbers say

The sentence below is computed from the matrix: the diagonal (a language's own neurons off, its
own text scored) against the off-diagonal and against the random control.
'''),
    code('''
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

import json
(OUT / "delta_ppl.json").write_text(json.dumps({
    "languages": languages, "baseline_log_ppl": baseline, "delta": delta.tolist(), "random_control": control.tolist(),
    "diagonal_mean": diagonal, "off_diagonal_mean": off_diagonal, "random_mean": random_mean, "summary": text,
}, indent=2, default=lambda x: None));
'''),
    md('''
For the full benchmark (variants specific / specific+related / +general, several random seeds
per cell, resumable) use `steer.bench.delta_ppl_matrix` or `steer bench`.
'''),
])

# ---------------------------------------------------------------------------------------------- 03
write("03_forced_language_generation", [
    md('''
# 3. Forcing the output language

To make the model continue in a target language, `steer.generate(..., force_language=target)`
switches off the other languages' neurons (keeping those the target shares) and pushes the
target's own neurons towards their mean activation on target-language text (from the stats).
Each continuation's language is then detected offline (`steer.detect_language`).
'''),
    code(setup_cell("03_forced_language_generation", EMBEDDED_SIZES + '''
N_EVAL = 0
TARGETS = os.environ.get("STEER_NB_TARGETS", "de,fr,ja").split(",")   # languages to force
N_PROMPTS = int(os.environ.get("STEER_NB_N_PROMPTS", 3))
MAX_NEW_TOKENS = int(os.environ.get("STEER_NB_MAX_NEW_TOKENS", 24))
''')),
    md('''
## Neurons

As in notebook 1: collect statistics on a slice of the corpus and identify neurons with `zhang2025`.
'''),
    code(LOAD_AND_COLLECT + '''
targets = [lang for lang in TARGETS if lang in neurons.languages and not neurons[lang].is_empty()]
skipped = [lang for lang in TARGETS if lang not in targets]
if skipped:
    print("not forced (not in the corpus slice, or no neurons at this size):", skipped)
print("targets:", targets)
'''),
    md('''
## Unsteered and forced, side by side

Greedy decoding, English prompts. The unsteered model continues in English; each forced column
should switch to its target language.
'''),
    code('''
PROMPTS = [
    "To insert a table into your document, open the",
    "The weather was cold this morning, so we",
    "A spreadsheet function adds the values of",
][:N_PROMPTS]

plain = steer.generate(model, PROMPTS, neurons=neurons, max_new_tokens=MAX_NEW_TOKENS)
forced = {target: steer.generate(model, PROMPTS, neurons=neurons, stats=stats, force_language=target,
                                 max_new_tokens=MAX_NEW_TOKENS) for target in targets}

table(["prompt", "unsteered"] + [f"forced → {t}" for t in targets],
      [[prompt, f"{plain.texts[i]} ({plain.languages[i]})"]
       + [f"{forced[t].texts[i]} ({forced[t].languages[i]})" for t in targets]
       for i, prompt in enumerate(PROMPTS)])
'''),
    code('''
success = {t: sum(lang == t for lang in forced[t].languages) / len(PROMPTS) for t in targets}
unsteered_share = {t: sum(lang == t for lang in plain.languages) / len(PROMPTS) for t in targets}
table(["target", "continuations in target (forced)", "in target (unsteered)"],
      [[t, f"{success[t]:.0%}", f"{unsteered_share[t]:.0%}"] for t in targets])
'''),
    md('''
## Steering modes

Three ways to push the target's neurons (with the other languages' neurons off in all three):
- `set`: the neuron's activation is replaced by strength × its mean on target-language text;
- `add`: strength × that mean is added (the default);
- `diffmean`: strength × (target mean − mean over the other languages) is added.
'''),
    code('''
example, target = PROMPTS[0], targets[0]
rows = [["unsteered", "–", plain.texts[0], plain.languages[0]]]
for mode in ("set", "add", "diffmean"):
    out = steer.generate(model, example, neurons=neurons, stats=stats, force_language=target, mode=mode,
                         max_new_tokens=MAX_NEW_TOKENS)
    rows.append([mode, out.settings["strength"], out.texts[0], out.languages[0]])
display(Markdown(f"Prompt: *{example}*, target **{target}**"))
table(["mode", "strength", "continuation", "detected"], rows)
'''),
    md('''
## Detected languages

`steer.detect_language` is an offline identifier; restricted to candidate languages it picks the
most likely of them, and says `und` when it cannot tell (e.g. a continuation without letters).
'''),
    code('''
import json
texts = plain.texts + [text for t in targets for text in forced[t].texts]
for text, lang in zip(texts, steer.detect_language(texts, candidates=neurons.languages)):
    print(f"{lang:>4}  {text[:90]!r}")
(OUT / "generations.json").write_text(json.dumps(
    {"unsteered": plain.to_dict(), "forced": {t: g.to_dict() for t, g in forced.items()}, "success": success},
    indent=2, ensure_ascii=False));
'''),
    md('''
For a sweep over targets, modes and strengths with fluency scores, see `steer.bench.forced_language`
or `steer bench`.
'''),
])

# ---------------------------------------------------------------------------------------------- 04
write("04_alignment_and_language_neurons", [
    md('''
# 4. Multilingual alignment and language neurons

Zhang et al. (2025) fine-tune a model to translate between a few languages and English, then
identify language neurons before and after. They report that alignment moves neurons between
classes (specific ↔ related) and that untrained languages change the same way as trained ones
("spontaneous multilingual alignment").

The recipe here: `steer.align.align` (LoRA on translation pairs, merged into a plain model
folder), then `steer.collect` + `steer.identify` on the base and on the aligned model, then
`steer.bench.compare_neuron_sets`.

**At this size the numbers are a smoke test.** The model is a tiny random Gemma 3 (4 layers × 128
neurons, byte-level tokenizer) and the corpus a dozen sentences, so nothing here says anything
about real models. To do it for real on the embedded Gemma 3 270M:

```
steer align --train-languages eu,om --out aligned      # about 13 minutes on a 2-core CPU
steer collect --out stats_base
steer collect --model aligned --out stats_aligned
steer identify stats_base --out base.json
steer identify stats_aligned --out aligned.json
steer compare base.json aligned.json --trained eu,om --out compare
```
'''),
    code(setup_cell("04_alignment_and_language_neurons", '''
STEPS = int(os.environ.get("STEER_NB_ALIGN_STEPS", 20))        # alignment steps
TRAIN = ["de", "fr"]                                          # languages the alignment trains on
TOP_RATE = 0.05                                               # 5% of 512 neurons: the tiny model has few
''')),
    md('''
## A tiny model and a small parallel corpus

`tiny_model_dir` builds (in about a second) a randomly initialised Gemma 3 with a byte-level
tokenizer. Alignment needs a *parallel* corpus: `stats[lang][i]` is the same sentence in every
language, and `ids` names each one. English is the pivot; German and French are trained, Spanish
and Japanese are not.
'''),
    code('''
from steer.testing import tiny_model_dir

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
     "Cette fonction renvoie la plus grande valeur d'une liste.", "Esta función devuelve el valor más grande de una lista.",
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
'''),
    md('''
## Alignment

`AlignConfig` holds every setting; `align` trains a LoRA adapter on both translation directions
(trained language ↔ English) of the `stats` split, merges it, and writes a model folder with
`align.json` (settings, losses, weights hashes). Rerunning with the same arguments returns at once.
'''),
    code('''
from steer.align import AlignConfig, align, read_align_info

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
'''),
    md('''
## Language neurons before and after

Same corpus, same method and parameters on both models, so any difference comes from the weights.
'''),
    code('''
sets = {}
for name, folder in (("base", base_dir), ("aligned", aligned_dir)):
    model = steer.load_model(folder)
    stats = steer.collect(model, corpus, batch_size=4, progress=False)
    sets[name] = steer.identify(stats, method="zhang2025", top_rate=TOP_RATE)
    sets[name].save(OUT / f"neurons_{name}.json")
    print(f"{name:>8}: {len(sets[name])} neurons, by N {sets[name].counts_by_sharing()}")
'''),
    md('''
## Comparison

`compare_neuron_sets(A, B, trained=...)` reports the counts by N before and after, the per-layer
change of each class, the overlap of the two sets, and the change of specific / related counts for
trained versus untrained languages (Zhang et al. 2025, Table 2).
'''),
    code('''
from steer.bench import compare_markdown, compare_neuron_sets

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
'''),
    code('''
groups = result["trained_vs_untrained"]
table(["group", "languages", "Δ specific per language", "Δ related per language"],
      [[group, ", ".join(groups[group]), groups["specific"][group]["mean_change_per_language"],
        groups["related"][group]["mean_change_per_language"]] for group in ("trained", "untrained")])
print("untrained languages follow the trained ones:", groups["untrained_follow_trained"],
      "(a smoke test at this size: random weights, a dozen sentences)")
'''),
])
