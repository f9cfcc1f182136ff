"""The `steer` command on the tiny model: each subcommand writes into --out; bad input is one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from steer.cli import main
from steer.provenance import git_commit

from conftest import TEXTS


@pytest.fixture()
def text_dir(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    for lang, texts in TEXTS.items():
        (folder / f"{lang}.txt").write_text("\n".join(texts * 3) + "\n", encoding="utf-8")
    return folder


def test_corpus_collect_identify_generate(tmp_path, text_dir, tiny_dir, capsys, monkeypatch):
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
                 "--force-language", "de", "--mode", "diffmean", "--max-new-tokens", "4", "--out", str(tmp_path / "gen"),
                 "Hello"]) == 0
    printed = capsys.readouterr().out
    assert "unsteered" in printed and "forced de" in printed
    assert json.loads((tmp_path / "gen" / "generations.json").read_text())["steered"]["settings"]["force_language"] == "de"
    generations = json.loads((tmp_path / "gen" / "generations.json").read_text())
    assert generations["steer_version"] and generations["model"]["weights_hash"] and generations["model"]["n_layers"] == 4
    # without --neurons: the default forcing neurons from the stats; both sides decode with the same repetition controls
    assert main(["generate", "--model", str(tiny_dir), "--stats", str(stats), "--force-language", "de", "--mode",
                 "diffmean", "--phase", "output", "--steps", "3", "--no-repeat-ngram-size", "2", "--max-new-tokens",
                 "4", "--out", str(tmp_path / "gen2"), "Hello"]) == 0
    generations = json.loads((tmp_path / "gen2" / "generations.json").read_text())
    steered, plain = generations["steered"]["settings"], generations["unsteered"]["settings"]
    assert steered["phase"] == "output" and steered["suppress"] == "none" and steered["steps"] == 3
    assert {spec["steps"] for spec in steered["interventions"]} == {3}
    assert (steered["repetition_penalty"], steered["no_repeat_ngram_size"]) == (1.2, 2)
    assert (plain["repetition_penalty"], plain["no_repeat_ngram_size"]) == (1.2, 2)
    # neither --mode nor --push: the learned push, fitted on --corpus the first time and read from the cache after
    monkeypatch.setenv("STEER_HOME", str(tmp_path / "home"))
    written = []
    for run in ("gen3", "gen4"):
        assert main(["generate", "--model", str(tiny_dir), "--stats", str(stats), "--force-language", "de",
                     "--corpus", str(corpus), "--max-new-tokens", "4", "--out", str(tmp_path / run), "Hello"]) == 0
        learned = json.loads((tmp_path / run / "generations.json").read_text())["steered"]["settings"]
        assert learned["mode"] == "learned push" and learned["push"]["target"] == "de" and learned["steps"] is None
        written += [p.stat().st_mtime_ns for p in (tmp_path / "home" / "pushes").glob("*/push.safetensors")]
    assert len(written) == 2 and written[0] == written[1]  # one push, fitted once


def test_ablate_compare_and_bench_with_a_positional_config(tmp_path, text_dir, tiny_dir, capsys):
    corpus, stats = tmp_path / "corpus", tmp_path / "stats"
    assert main(["corpus", "build", "--from-dir", str(text_dir), "--out", str(corpus)]) == 0
    assert main(["collect", "--model", str(tiny_dir), "--corpus", str(corpus), "--out", str(stats),
                 "--batch-size", "4"]) == 0
    for method in ("lape", "zhang2025"):
        assert main(["identify", str(stats), "--method", method, "--top-rate", "0.05",
                     "--out", str(tmp_path / f"{method}.json")]) == 0
    capsys.readouterr()

    # ablate: one row of the ΔPPL matrix, with the file header
    assert main(["ablate", "--model", str(tiny_dir), "--neurons", str(tmp_path / "lape.json"), "--language", "de",
                 "--corpus", str(corpus), "--n-texts", "2", "--out", str(tmp_path / "ablate")]) == 0
    printed = capsys.readouterr().out
    assert "log-PPL" in printed and "ablate_de.json" in printed
    ablate = json.loads((tmp_path / "ablate" / "ablate_de.json").read_text())
    assert ablate["steer_version"] and ablate["model"]["weights_hash"] and ablate["model"]["n_layers"] == 4
    assert ablate["language"] == "de" and ablate["classes"] == ["specific", "related"]
    assert set(ablate["evaluated"]) == {"en", "de", "ja"}
    for row in ablate["evaluated"].values():
        assert row["delta_log_ppl"] == pytest.approx(row["ablated_log_ppl"] - row["log_ppl"])

    # compare with trained languages: alignment.json names the models of both sets
    assert main(["compare", str(tmp_path / "lape.json"), str(tmp_path / "zhang2025.json"), "--trained", "de",
                 "--out", str(tmp_path / "compare")]) == 0
    assert "Does alignment change language neurons" in capsys.readouterr().out
    alignment = json.loads((tmp_path / "compare" / "alignment.json").read_text())
    assert alignment["steer_version"] and alignment["trained"] == ["de"] and "specific_to_related" in alignment["claims"]
    assert alignment["model"]["weights_hash"] and alignment["aligned_model"]["weights_hash"]
    assert "Does alignment change" in (tmp_path / "compare" / "report.md").read_text()

    # bench: the config as a positional argument (as demo.toml's header says), or as --config
    config = tmp_path / "bench.toml"
    config.write_text(f'[model]\nname = "{tiny_dir}"\n[corpus]\nsource = "corpus"\n[stats]\npath = "stats"\n'
                      '[neurons.z]\npath = "zhang2025.json"\n[bench.layers]\n')
    assert main(["bench", str(config), "--out", str(tmp_path / "bench")]) == 0
    assert json.loads((tmp_path / "bench" / "layers.json").read_text())["meta"]["model"]["n_layers"] == 4
    assert main(["bench", "--config", str(config), "--out", str(tmp_path / "bench")]) == 0
    assert "## Where language neurons are" in (tmp_path / "bench" / "report.md").read_text()
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--out", str(tmp_path / "bench")])
    assert exit_.value.code == 2
    assert "config" in capsys.readouterr().err


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


def _header(data: dict) -> None:
    """What every file steer writes records at its top level: the steer version and the model."""
    assert data["steer_version"], data.keys()
    assert data["model"]["weights_hash"], data["model"]


def test_bench_on_a_text_dir_corpus(tmp_path, text_dir, tiny_dir, one_thread, capsys):
    config = tmp_path / "bench.toml"
    config.write_text(
        f'[model]\nname = "{tiny_dir}"\n[corpus]\nsource = "{text_dir}"\nn_eval = 1\n'
        "[stats]\nmax_tokens_per_language = 200\nmax_length = 32\n"
        '[neurons.z]\nmethod = "zhang2025"\ntop_rate = 0.05\n'
        '[bench.delta_ppl]\nn_texts = 1\nn_random = 0\nrandom_columns = "none"\nmax_length = 32\n[bench.layers]\n'
    )
    out = tmp_path / "bench"
    assert main(["bench", str(config), "--out", str(out), "--threads", "1"]) == 0
    for name in ("delta_ppl", "layers"):
        saved = json.loads((out / f"{name}.json").read_text())
        _header(saved["meta"])
        assert saved["meta"]["model"]["n_layers"] == 4 and (out / f"{name}.png").exists()
    assert (out / "report.md").exists() and (out / "stats" / "stats.json").exists()
    assert json.loads((out / "neurons" / "z.json").read_text())["meta"]["model"]["name"] == tiny_dir.name
    only = tmp_path / "only"  # --only runs the benchmarks named, nothing else
    assert main(["bench", str(config), "--only", "layers", "--out", str(only), "--threads", "1"]) == 0
    assert (only / "layers.json").exists() and not (only / "delta_ppl.json").exists()
    assert main(["bench", str(config), "--only", "layers,transfer", "--out", str(tmp_path / "none")]) == 2
    assert "no benchmark named 'transfer' in the config (defined: delta_ppl, layers)" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_compare_writes_its_header(tmp_path, tiny_neurons, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    tiny_neurons.save(a)
    tiny_neurons.select(classes="specific").save(b)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "compare")]) == 0
    compare = json.loads((tmp_path / "compare" / "compare.json").read_text())
    _header(compare)
    assert compare["model_b"]["weights_hash"] == compare["model"]["weights_hash"]
    assert (tmp_path / "compare" / "compare.png").exists() and (tmp_path / "compare" / "report.md").exists()


def test_align_two_steps(tmp_path, text_dir, tiny_dir, one_thread, capsys):
    out = tmp_path / "aligned"
    assert main(["align", "--model", str(tiny_dir), "--corpus", str(text_dir), "--train-languages", "de",
                 "--steps", "2", "--batch-size", "2", "--max-length", "64", "--out", str(out)]) == 0
    info = json.loads((out / "align.json").read_text())
    _header(info)
    assert info["steps"] == 2 and info["config"]["train_languages"] == ["de"] and len(info["losses"]) == 2
    assert (out / "config.json").exists() and (out / "adapter").is_dir()
    assert "aligned model ->" in capsys.readouterr().out


def _twice_as_long(text_dir):
    """Enough lines for two held-out texts per language: the forced-language benchmark tunes on one, reports the other."""
    for file in text_dir.glob("*.txt"):
        file.write_text(file.read_text() * 2)


def test_demo_quick_on_the_tiny_model(tmp_path, text_dir, tiny_dir, one_thread, capsys):
    (text_dir / "eu.txt").write_text("\n".join(["Katua esterilla gainean dago eta leihotik begiratzen du.",
                                                "Ireki fitxategia menua eta aukeratu gorde.",
                                                "Hautatu formatua eman nahi diezun gelaxkak.",
                                                "Funtzio honek balioen batura itzultzen du."] * 3) + "\n")
    _twice_as_long(text_dir)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--model", str(tiny_dir), "--corpus", str(text_dir), "--threads", "1",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    _header(summary["meta"])
    assert summary["meta"]["model"]["name"] == tiny_dir.name and summary["languages"] == ["en", "de", "eu"]
    assert summary["skipped"] == [] and "transfer" in summary
    assert summary["command"] == f"steer demo --quick --model {tiny_dir} --corpus {text_dir} --threads 1 --out {out}"
    assert summary["commit"] == git_commit()  # this checkout's HEAD (None from an installed wheel)
    assert (out / "report.md").exists() and "diagonal_mean_delta_logppl" in capsys.readouterr().out
    for name in ("delta_ppl", "forced", "transfer", "layers"):
        _header(json.loads((out / f"{name}.json").read_text())["meta"])


def test_demo_without_a_low_resource_language_skips_transfer(tmp_path, text_dir, tiny_dir, one_thread, capsys):
    _twice_as_long(text_dir)
    out = tmp_path / "demo"
    with pytest.warns(UserWarning, match="skips the low-resource transfer benchmark"):
        assert main(["demo", "--quick", "--model", str(tiny_dir), "--corpus", str(text_dir), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["languages"] == ["en", "de"] and summary["skipped"] == ["transfer"] and "transfer" not in summary
