"""The `steer` command on the tiny model: each subcommand writes into --out; bad input is one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from steer.cli import main

from conftest import TEXTS


@pytest.fixture()
def text_dir(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    for lang, texts in TEXTS.items():
        (folder / f"{lang}.txt").write_text("\n".join(texts * 3) + "\n", encoding="utf-8")
    return folder


def test_corpus_collect_identify_generate(tmp_path, text_dir, tiny_dir, capsys):
    corpus = tmp_path / "corpus"
    assert main(["corpus", "build", "--from-dir", str(text_dir), "--out", str(corpus)]) == 0
    assert (corpus / "corpus.json").exists()
    stats = tmp_path / "stats"
    assert main(["collect", "--model", str(tiny_dir), "--corpus", str(corpus), "--out", str(stats),
                 "--batch-size", "4"]) == 0
    assert (stats / "stats.safetensors").exists() and (stats / "stats.json").exists()
    neurons = tmp_path / "neurons.json"
    assert main(["identify", str(stats), "--method", "lape", "--top-rate", "0.05", "--out", str(neurons)]) == 0
    printed = capsys.readouterr().out
    assert "layer  specific  related  general" in printed and "first and last" in printed
    data = json.loads(neurons.read_text())
    assert data["method"] == "lape" and data["meta"]["model"]["n_layers"] == 4
    assert main(["generate", "--model", str(tiny_dir), "--neurons", str(neurons), "--stats", str(stats),
                 "--force-language", "de", "--max-new-tokens", "4", "--out", str(tmp_path / "gen"), "Hello"]) == 0
    printed = capsys.readouterr().out
    assert "unsteered" in printed and "forced de" in printed
    assert json.loads((tmp_path / "gen" / "generations.json").read_text())["steered"]["settings"]["force_language"] == "de"


def test_bad_input_is_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["identify", str(tmp_path / "missing"), "--out", str(tmp_path / "n.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("steer: error:") and "run `steer collect` first" in err and "\n" not in err
    assert main(["collect", "--model", "no-such-model", "--out", str(tmp_path / "s")]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "steer.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("corpus", "collect", "identify", "ablate", "generate", "bench", "compare", "demo", "align"):
        assert command in result.stdout
