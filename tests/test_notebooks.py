"""The worked examples in notebooks/: executed at a small size, and their committed .ipynb checked.

Each notebook's source is a jupytext percent-format `.py`, paired with an `.ipynb` committed with the
outputs of a full-size run (`make notebooks`). The tests check that each pair holds the same cells and
that the `.ipynb` carries a clean run's outputs, and execute the `.py` sources at a small size (the
sizes come from environment variables read in each notebook's first code cell); a cell that raises
fails the test.

Each notebook runs in a fresh kernel on *this* interpreter (a private kernelspec, so a user-level
`python3` kernel pointing elsewhere cannot be picked up), writes only under a temporary
$STEER_NB_OUT, and must leave the notebooks folder untouched. Notebooks 01-03 run the embedded
Gemma 3 270M (integration); 04 runs on the tiny random model.

The kernels get OMP_NUM_THREADS=1 unless it is set already: on a shared 2-core machine torch's
second thread waits for a busy core at every op, which made these notebooks 2-10 times slower.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

import steer

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parent.parent
STEER = Path(steer.__file__).resolve().parent  # the package these tests import
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_find_language_neurons", "02_ablate_and_delta_ppl", "03_forced_language_generation",
         "04_alignment_and_language_neurons"]
PLOTTING = NAMES  # each draws at least one figure
KERNEL = "steer-test-python"
CELL_TIMEOUT = 600

SMALL = {  # sizes every notebook reads from the environment
    "STEER_NB_LANGUAGES": "en,de,fr,ja",
    "STEER_NB_MAX_STATS": "6",
    "STEER_NB_MAX_LENGTH": "64",
    "STEER_NB_N_EVAL": "2",
    "STEER_NB_N_PROMPTS": "2",
    "STEER_NB_MAX_NEW_TOKENS": "12",
    "STEER_NB_ALIGN_STEPS": "20",
    "STEER_NB_PUSH_STEPS": "3",
}


def _kernelspec(root: Path) -> Path:
    """A kernelspec that starts ipykernel with this very interpreter; returned folder goes on JUPYTER_PATH."""
    folder = root / "kernels" / KERNEL
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "steer tests", "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec))
    return root


def run_notebook(name: str, tmp_path: Path, monkeypatch) -> tuple[Path, float]:
    out = tmp_path / "out"
    monkeypatch.setenv("STEER_NB_OUT", str(out))
    for key, value in SMALL.items():
        monkeypatch.setenv(key, value)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if key not in os.environ:
            monkeypatch.setenv(key, "1")
    # The kernel imports the steer under test (this checkout, or the installed wheel under `make test-wheel`),
    # wherever the environment's install points.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(STEER.parent), os.environ.get("PYTHONPATH")])))
    jupyter = _kernelspec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(jupyter), os.environ.get("JUPYTER_PATH")])))

    nb = jupytext.read(NOTEBOOKS / f"{name}.py")  # the source: code and markdown, no outputs
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), f"{name} has stored outputs"
    # First cell: fail at once if the kernel is not this interpreter's environment, or imports another steer.
    init = str((STEER / "__init__.py").resolve())
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        "import os, sys\n"
        f"assert sys.prefix == {sys.prefix!r}, f'kernel runs {{sys.executable}}, not the test environment'\n"
        "import steer\n"
        f"assert os.path.realpath(steer.__file__) == {init!r}, f'kernel imports {{steer.__file__}}'"
    ))
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(workdir)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    seconds = time.perf_counter() - started
    print(f"{name}: {seconds:.1f} s")
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, "a notebook wrote into notebooks/"
    return out / name, seconds


def _cells(nb) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def test_notebooks_exist_with_outputs():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    assert sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")) == NAMES
    assert not (NOTEBOOKS / "build.py").exists(), "the notebooks' source is their .py, not a generator"
    temp = tempfile.gettempdir()
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert "STEER_NB_OUT" in nb.cells[1].source, f"{name} must write under $STEER_NB_OUT"
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        # One clean run from the top in a fresh kernel: every cell executed, in order, none failed.
        assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), f"{name} is not executed"
        outputs = [output for cell in code for output in cell.outputs]
        assert outputs, f"{name} has no outputs"
        assert not [o for o in outputs if o.output_type == "error"], f"{name} has an error output"
        assert not [o for o in outputs if o.get("name") == "stderr" and "Traceback" in o.text], name
        text = json.dumps([o for o in outputs if "image/png" not in o.get("data", {})])
        assert temp not in text, f"{name}'s outputs show a temporary path"
        pngs = sum("image/png" in o.get("data", {}) for o in outputs)
        assert pngs >= (name in PLOTTING), f"{name} has no plot in its outputs"
        assert (NOTEBOOKS / f"{name}.ipynb").stat().st_size < 1_000_000, f"{name}.ipynb is over 1 MB"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_pair_in_sync(name):
    """The .py (source) and the .ipynb (executed) hold the same cells: `make notebooks` after an edit."""
    source = jupytext.read(NOTEBOOKS / f"{name}.py")
    executed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert _cells(executed) == _cells(source), f"{name}.py and {name}.ipynb differ: run `make notebooks`"
    for nb in (source, executed):
        assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"


USES_SETUP = NAMES


@pytest.mark.parametrize("name", USES_SETUP)
def test_notebook_first_cell_is_the_library_setup(name):
    source = jupytext.read(NOTEBOOKS / f"{name}.py")
    first = next(cell.source for cell in source.cells if cell.cell_type == "code")
    assert f'setup("{name}"' in first, f"{name}: the first code cell should call steer.notebook.setup"
    assert "tempfile" not in first and "def table" not in first, f"{name} repeats the setup helper's code"


def test_02_computes_the_matrix_with_the_library():
    code = "\n".join(cell.source for cell in jupytext.read(NOTEBOOKS / "02_ablate_and_delta_ppl.py").cells
                     if cell.cell_type == "code")
    assert "delta_ppl_matrix(" in code
    for own in ("random_like", "steer.deactivate", "perplexity("):  # no second ΔPPL or control of its own
        assert own not in code, f"notebook 02 computes {own} itself instead of calling delta_ppl_matrix"


@pytest.mark.integration
def test_01_find_language_neurons(tmp_path, monkeypatch):
    out, _ = run_notebook("01_find_language_neurons", tmp_path, monkeypatch)
    for file in ("neurons_zhang2025.json", "neurons_lape.json", "counts_per_layer.png", "overlap.png",
                 "stats/stats.json"):
        assert (out / file).is_file(), file


@pytest.mark.integration
def test_02_ablate_and_delta_ppl(tmp_path, monkeypatch):
    out, _ = run_notebook("02_ablate_and_delta_ppl", tmp_path, monkeypatch)
    result = json.loads((out / "delta_ppl.json").read_text())  # delta_ppl_matrix's result, and the sentence
    languages = SMALL["STEER_NB_LANGUAGES"].split(",")
    assert result["benchmark"] == "delta_ppl" and result["rows"] == result["columns"] == languages
    entry = result["variants"]["specific+related"]
    assert len(entry["delta_log_ppl"]) == len(languages) and entry["random"]["columns"] == "diagonal"
    assert entry["random"]["n_seeds"] == 3 and len(entry["random"]["delta_log_ppl_mean"]) == len(languages)
    assert result["text"].startswith("Switching off")
    assert (out / "delta_ppl.png").is_file()


@pytest.mark.integration
def test_03_forced_language_generation(tmp_path, monkeypatch):
    out, _ = run_notebook("03_forced_language_generation", tmp_path, monkeypatch)
    result = json.loads((out / "forced.json").read_text())  # forced_language's result: the library's measure
    languages = SMALL["STEER_NB_LANGUAGES"].split(",")
    assert result["languages"] == languages and list(result["per_target"]) == languages
    assert result["n"] == len(languages) * (len(languages) - 1) * int(SMALL["STEER_NB_N_PROMPTS"])
    assert result["fluent_success_ci"] is not None and result["random"]["fluent_success_ci"] is not None
    assert (out / "forced.png").is_file()
    push = steer.LanguagePush.load(out / "push")  # the learned push, fitted at the small budget
    assert push.target in languages and 1 <= push.meta["curve"][-1]["step"] <= int(SMALL["STEER_NB_PUSH_STEPS"])


def test_03_measures_with_the_library():
    code = "\n".join(cell.source for cell in jupytext.read(NOTEBOOKS / "03_forced_language_generation.py").cells
                     if cell.cell_type == "code")
    for call in ("forced_language(", "plot_forced(", "forced_table("):
        assert call in code, f"notebook 03 should call {call.rstrip('(')}"


def test_04_alignment_and_language_neurons(tmp_path, monkeypatch):
    out, _ = run_notebook("04_alignment_and_language_neurons", tmp_path, monkeypatch)
    info = json.loads((out / "aligned" / "align.json").read_text())
    assert info["steps"] == int(SMALL["STEER_NB_ALIGN_STEPS"])
    for file in ("neurons_base.json", "neurons_aligned.json", "compare_by_sharing.png"):
        assert (out / file).is_file(), file
