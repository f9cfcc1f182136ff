"""steer.notebook: the notebooks' shared first cell (sizes from the environment, output folder, tables)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from steer.notebook import markdown_table, setup


def test_setup_reads_sizes_from_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STEER_NB_OUT", str(tmp_path))
    monkeypatch.setenv("STEER_NB_MAX_STATS", "6")
    monkeypatch.setenv("STEER_NB_LANGUAGES", "en, de,,ja")
    monkeypatch.delenv("STEER_NB_N_EVAL", raising=False)
    nb = setup("02_x", max_stats=24, n_eval=2, languages=[], note="default")
    assert (nb.max_stats, nb.n_eval, nb.languages, nb.note) == (6, 2, ["en", "de", "ja"], "default")
    assert nb.out == tmp_path / "02_x" and nb.out.is_dir()
    printed = capsys.readouterr().out
    assert "$STEER_NB_OUT/02_x" in printed and str(tmp_path) not in printed
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


def test_setup_without_steer_nb_out_uses_a_new_temporary_folder(monkeypatch, capsys):
    monkeypatch.delenv("STEER_NB_OUT", raising=False)
    nb = setup("01_y")
    try:
        assert nb.out.name == "01_y" and nb.out.is_dir()
        assert Path(tempfile.gettempdir()) in nb.out.parents
        assert tempfile.gettempdir() not in capsys.readouterr().out
    finally:
        nb.out.rmdir()
        nb.out.parent.rmdir()


def test_setup_refuses_bad_values(tmp_path, monkeypatch):
    monkeypatch.setenv("STEER_NB_OUT", str(tmp_path))
    monkeypatch.setenv("STEER_NB_MAX_STATS", "many")
    with pytest.raises(ValueError, match=r"STEER_NB_MAX_STATS='many': not an integer"):
        setup("n", max_stats=24)
    with pytest.raises(ValueError, match="not a notebook name"):
        setup("../n")
    with pytest.raises(ValueError, match="'out' is the output folder"):
        setup("n", out=1)
    monkeypatch.setenv("STEER_NB_FLAG", "1")
    with pytest.raises(TypeError, match="must default to an int, a list or a str"):
        setup("n", flag=True)


def test_markdown_table_formats_and_escapes():
    text = markdown_table(["a", "b|c"], [[1, 0.12345], ["x|y", "two\nlines"]])
    assert text.splitlines() == ["| a | b\\|c |", "|---|---|", "| 1 | 0.123 |", "| x\\|y | two lines |"]
