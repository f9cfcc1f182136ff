"""Execute the worked examples in notebooks/ at a small size; a cell that raises fails the test.

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
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = "steer-test-python"
CELL_TIMEOUT = 600

SMALL = {  # sizes every notebook reads from the environment
    "STEER_NB_LANGUAGES": "en,de,fr,ja",
    "STEER_NB_MAX_STATS": "6",
    "STEER_NB_MAX_LENGTH": "64",
    "STEER_NB_N_EVAL": "2",
    "STEER_NB_TARGETS": "de,fr",
    "STEER_NB_N_PROMPTS": "2",
    "STEER_NB_MAX_NEW_TOKENS": "12",
    "STEER_NB_ALIGN_STEPS": "20",
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
    jupyter = _kernelspec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(jupyter), os.environ.get("JUPYTER_PATH")])))

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), f"{name} has stored outputs"
    # First cell: fail at once if the kernel is not this interpreter's environment.
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        f"import sys\nassert sys.prefix == {sys.prefix!r}, f'kernel runs {{sys.executable}}, not the test environment'"
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


def test_notebooks_exist_without_outputs():
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01_find_language_neurons", "02_ablate_and_delta_ppl", "03_forced_language_generation",
                     "04_alignment_and_language_neurons"]
    for name in names:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{name} has stored outputs"
        assert "STEER_NB_OUT" in nb.cells[1].source, f"{name} must write under $STEER_NB_OUT"


@pytest.mark.integration
def test_01_find_language_neurons(tmp_path, monkeypatch):
    out, _ = run_notebook("01_find_language_neurons", tmp_path, monkeypatch)
    for file in ("neurons_zhang2025.json", "neurons_lape.json", "counts_per_layer.png", "overlap.png",
                 "stats/stats.json"):
        assert (out / file).is_file(), file


@pytest.mark.integration
def test_02_ablate_and_delta_ppl(tmp_path, monkeypatch):
    out, _ = run_notebook("02_ablate_and_delta_ppl", tmp_path, monkeypatch)
    result = json.loads((out / "delta_ppl.json").read_text())
    languages = SMALL["STEER_NB_LANGUAGES"].split(",")
    assert result["languages"] == languages
    assert len(result["delta"]) == len(languages) and len(result["random_control"]) == len(languages)
    assert result["summary"].startswith("Switching off")
    assert (out / "delta_ppl.png").is_file()


@pytest.mark.integration
def test_03_forced_language_generation(tmp_path, monkeypatch):
    out, _ = run_notebook("03_forced_language_generation", tmp_path, monkeypatch)
    result = json.loads((out / "generations.json").read_text())
    assert len(result["unsteered"]["texts"]) == int(SMALL["STEER_NB_N_PROMPTS"])
    assert set(result["forced"]) <= set(SMALL["STEER_NB_TARGETS"].split(","))


def test_04_alignment_and_language_neurons(tmp_path, monkeypatch):
    out, _ = run_notebook("04_alignment_and_language_neurons", tmp_path, monkeypatch)
    info = json.loads((out / "aligned" / "align.json").read_text())
    assert info["steps"] == int(SMALL["STEER_NB_ALIGN_STEPS"])
    for file in ("neurons_base.json", "neurons_aligned.json", "compare_by_sharing.png"):
        assert (out / file).is_file(), file
