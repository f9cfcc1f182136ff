"""steer.bench on the tiny model and on synthetic neuron sets (fast)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import steer
from steer.bench import (
    compare_neuron_sets, delta_ppl_matrix, demo_config, four_stages, load_config, perplexity, run_demo,
    write_compare_report,
)
from steer.bench.delta_ppl import ablated_log_ppl
from steer.prompts import prompt_prefix
from steer.corpus import Corpus
from steer.hooks import hook_count
from steer.neurons import NeuronSet
from steer.testing import tiny_model_dir

ROOT = Path(__file__).resolve().parents[1]

PARALLEL = {
    "en": ["The cat sits on the mat and looks out of the window.",
           "Open the file menu and choose save as to store the document.",
           "Click the button to insert a new table into the text.",
           "Select the cells that you want to format.",
           "The dialog shows the properties of the current object."],
    "de": ["Die Katze sitzt auf der Matte und schaut aus dem Fenster.",
           "Öffnen Sie das Menü Datei und wählen Sie Speichern unter.",
           "Klicken Sie auf die Schaltfläche, um eine neue Tabelle einzufügen.",
           "Wählen Sie die Zellen aus, die Sie formatieren möchten.",
           "Der Dialog zeigt die Eigenschaften des aktuellen Objekts."],
    "eu": ["Katua esterilla gainean dago eta leihotik begiratzen du.",
           "Ireki fitxategia menua eta aukeratu gorde honela dokumentua gordetzeko.",
           "Egin klik botoian testuan taula berri bat txertatzeko.",
           "Hautatu formatua eman nahi diezun gelaxkak.",
           "Elkarrizketa-koadroak uneko objektuaren propietateak erakusten ditu."],
}
EVAL = {lang: texts[3:] for lang, texts in PARALLEL.items()}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench_model_dir(tmp_path_factory):
    return tiny_model_dir("gemma3", root=tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def bench_model(bench_model_dir):
    return steer.load_model(bench_model_dir)


def synthetic_set(model, members: dict[str, list[tuple[int, int]]], general=()) -> NeuronSet:
    info = steer.model_info(model)
    membership = torch.zeros((len(members), info.n_layers, info.d_mlp), dtype=torch.bool)
    for k, cells in enumerate(members.values()):
        for layer, neuron in cells:
            membership[k, layer, neuron] = True
    gen = torch.zeros((info.n_layers, info.d_mlp), dtype=torch.bool)
    for layer, neuron in general:
        gen[layer, neuron] = True
    return NeuronSet(list(members), membership, gen, "synthetic")


# ------------------------------------------------------------------ perplexity


def test_perplexity_batched_equals_single_and_full_logits(bench_model):
    texts = [PARALLEL["en"][0], "Hi", PARALLEL["de"][1], "x", PARALLEL["eu"][2]]
    batched = perplexity(bench_model, texts, batch_size=8)
    for text, value, n in zip(texts, batched["per_text"]["log_ppl"], batched["per_text"]["n_tokens"]):
        alone = perplexity(bench_model, [text], batch_size=1)
        assert alone["n_tokens"] == n
        assert alone["log_ppl"] == pytest.approx(value, abs=1e-4)
        ids = bench_model.tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            logits = bench_model.original_model(input_ids=ids).logits[0, :-1].float()
        reference = torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()
        assert value == pytest.approx(reference, abs=1e-4)
    pooled = sum(v * n for v, n in zip(batched["per_text"]["log_ppl"], batched["per_text"]["n_tokens"]))
    assert batched["log_ppl"] == pytest.approx(pooled / batched["n_tokens"], abs=1e-9)
    assert batched["ppl"] == pytest.approx(torch.tensor(batched["log_ppl"]).exp().item(), rel=1e-6)


def test_perplexity_sees_interventions_and_leaves_no_hooks(bench_model):
    texts = EVAL["en"]
    before = hook_count(bench_model)
    base = perplexity(bench_model, texts)["log_ppl"]
    ns = synthetic_set(bench_model, {"en": [(layer, n) for layer in range(4) for n in range(0, 128, 2)]})
    with steer.deactivate(bench_model, ns):
        ablated = perplexity(bench_model, texts)["log_ppl"]
    assert abs(ablated - base) > 1e-4
    assert perplexity(bench_model, texts)["log_ppl"] == pytest.approx(base, abs=1e-6)
    assert hook_count(bench_model) == before


def test_perplexity_scores_only_the_continuation(bench_model):
    full = perplexity(bench_model, ["Hello there, general"])
    pair = perplexity(bench_model, [("Hello there,", " general")])
    assert pair["n_tokens"] == len(" general".encode())  # byte tokenizer: one token per byte
    assert pair["n_tokens"] < full["n_tokens"]
    with pytest.raises(ValueError):
        perplexity(bench_model, [])


# ------------------------------------------------------------------ ΔPPL


def test_delta_ppl_matrix_diagonal_rows_and_random_control(bench_model):
    many = [(layer, n) for layer in range(4) for n in range(0, 60, 3)]
    ns = synthetic_set(bench_model, {"en": many, "de": [(1, 70), (2, 71)] + many[:5], "eu": []})
    result = delta_ppl_matrix(bench_model, ns, EVAL, variants=["specific", "specific+related"], n_random=2,
                              random_columns="all", progress=False)
    assert result["rows"] == ["en", "de", "eu"] and result["columns"] == ["en", "de", "eu"]
    block = result["variants"]["specific+related"]
    assert block["empty_rows"] == ["eu"]
    assert block["delta_log_ppl"][2] == [None, None, None]
    assert block["n_neurons"] == {"en": len(many), "de": 7, "eu": 0}
    # the en row is exactly "deactivate en's neurons, measure, subtract the baseline"
    with steer.deactivate(bench_model, ns["en"]):
        direct = ablated_log_ppl(bench_model, ns["en"], EVAL, ["de"], max_length=128)["de"]["log_ppl"]
    expected = direct - result["baseline"]["de"]["log_ppl"]
    assert block["delta_log_ppl"][0][1] == pytest.approx(expected, abs=1e-5)
    assert abs(block["delta_log_ppl"][0][0]) > 1e-4  # 80 neurons off changes the loss
    # "specific" drops the 5 neurons en and de share
    assert result["variants"]["specific"]["n_neurons"]["de"] == 2
    random = block["random"]
    assert random["n_seeds"] == 2
    assert random["delta_log_ppl_mean"][0][0] is not None and random["delta_log_ppl_sd"][0][0] is not None
    assert random["delta_log_ppl_mean"][2] == [None, None, None]
    summary = block["summary"]
    diagonal = [block["delta_log_ppl"][0][0], block["delta_log_ppl"][1][1]]
    assert summary["diagonal_mean_delta_logppl"] == pytest.approx(sum(diagonal) / 2)


def test_delta_ppl_reuses_a_given_baseline(bench_model):
    ns = synthetic_set(bench_model, {"en": [(0, 1), (1, 2), (2, 3)], "de": [(2, 3), (3, 9)]})
    first = delta_ppl_matrix(bench_model, ns, EVAL, n_random=0, progress=False)
    again = delta_ppl_matrix(bench_model, ns, EVAL, n_random=0, baseline=first["baseline"], progress=False)
    assert again["variants"] == first["variants"]
    with pytest.raises(ValueError, match="baseline lacks"):
        delta_ppl_matrix(bench_model, ns, EVAL, baseline={"en": first["baseline"]["en"]}, progress=False)


def test_delta_ppl_rejects_empty_sets(bench_model):
    empty = synthetic_set(bench_model, {"en": [], "de": []})
    with pytest.raises(ValueError, match="every row"):
        delta_ppl_matrix(bench_model, empty, EVAL, progress=False)
    with pytest.raises(ValueError, match="no neuron"):
        ablated_log_ppl(bench_model, empty.select(["en"]), EVAL)
    ns = synthetic_set(bench_model, {"en": [(0, 1)], "de": [(0, 2)]})
    with pytest.raises(ValueError, match="variant"):
        delta_ppl_matrix(bench_model, ns, EVAL, variants=["everything"], progress=False)
    with pytest.raises(ValueError, match="no eval texts"):
        delta_ppl_matrix(bench_model, ns, EVAL, columns=["fr"], progress=False)


def test_delta_ppl_diagonal_cells_and_general_variant(bench_model):
    ns = synthetic_set(bench_model, {"en": [(0, 1), (1, 2)], "de": [(2, 3)]}, general=[(3, 4), (3, 5)])
    result = delta_ppl_matrix(bench_model, ns, EVAL, variants=["specific+related+general"], cells="diagonal",
                              n_random=1, progress=False)
    block = result["variants"]["specific+related+general"]
    assert block["n_neurons"] == {"en": 4, "de": 3}
    assert block["delta_log_ppl"][0][1] is None and block["delta_log_ppl"][0][0] is not None
    assert block["random"]["columns"] == "diagonal"


# ------------------------------------------------------------------ compare (known answers)


def _set(members, general=(), shape=(2, 8)):
    membership = torch.zeros((len(members), *shape), dtype=torch.bool)
    for k, cells in enumerate(members.values()):
        for cell in cells:
            membership[(k, *cell)] = True
    gen = torch.zeros(shape, dtype=torch.bool)
    for cell in general:
        gen[cell] = True
    return NeuronSet(list(members), membership, gen, "synthetic")


A = _set({"en": [(0, 0), (0, 1), (1, 0)], "de": [(0, 1), (0, 2)], "fr": [(0, 1), (1, 5)]}, general=[(1, 7)])
B = _set({"en": [(0, 0), (1, 0)], "de": [(0, 1), (0, 2), (1, 0)], "fr": [(0, 1), (1, 6)]}, general=[(1, 7), (1, 3)])


def test_compare_known_answers(tmp_path):
    result = compare_neuron_sets(A, B, trained=["de"])
    assert {n: (e["a"], e["b"], e["change"]) for n, e in result["by_sharing"].items()} == {
        "1": (4, 3, -1), "2": (0, 2, 2), "3": (1, 0, -1)}
    assert result["per_layer"]["specific"] == {"a": [2, 2], "b": [2, 1], "change": [0, -1]}
    assert result["per_layer"]["general"]["change"] == [0, 1]
    assert result["overlap"]["specific"] == {"a": 4, "b": 3, "intersection": 2, "union": 5, "jaccard": 0.4}
    assert result["overlap"]["related"]["jaccard"] == 0.5
    assert result["overlap"]["general"]["intersection"] == 1
    table = result["trained_vs_untrained"]
    assert table["trained"] == ["de"] and table["untrained"] == ["en", "fr"]
    assert (table["specific"]["trained"]["a"], table["specific"]["trained"]["b"]) == (1, 1)
    assert (table["related"]["trained"]["a"], table["related"]["trained"]["b"]) == (1, 2)
    assert (table["specific"]["untrained"]["a"], table["specific"]["untrained"]["b"]) == (3, 2)
    assert table["related"]["untrained"]["change"] == 0
    assert result["per_language"]["en"]["specific"]["change"] == -1
    report = write_compare_report(result, tmp_path)
    text = report.read_text()
    assert "compare.png" in text and (tmp_path / "compare.png").exists() and (tmp_path / "compare.json").exists()


def test_compare_checks_its_inputs():
    with pytest.raises(ValueError, match="shapes"):
        compare_neuron_sets(A, _set({"en": [(0, 0)]}, shape=(3, 8)))
    with pytest.raises(ValueError, match="trained"):
        compare_neuron_sets(A, B, trained=["ja"])
    other = _set({"en": [(0, 0)], "ja": [(0, 3)]})
    result = compare_neuron_sets(A, other)
    assert result["languages"] == ["en"] and result["languages_dropped"] == ["de", "fr", "ja"]
    assert compare_neuron_sets(A, A)["overlap"]["language_membership"]["jaccard"] == 1.0


# ------------------------------------------------------------------ layers, prompts


def test_four_stages_known_answer():
    stages = four_stages([10, 9, 8, 2, 1, 1, 2, 8, 12, 5])
    assert stages == [[0, 1, 2], [3, 4, 5, 6], [7, 8], [9]]
    assert all(four_stages([5] * n) and all(four_stages([5] * n)) for n in (4, 5, 18))
    assert sum(len(s) for s in four_stages(list(range(18)))) == 18


def test_prompt_prefix():
    assert prompt_prefix("one two three four five six seven eight nine ten", 8) == "one two three four five six seven eight"
    assert prompt_prefix("这是一个很长的中文句子没有空格但是有很多字", 4) == "这是一个很长的中"
    assert len(prompt_prefix("ក" * 100, 8)) == 32


# ------------------------------------------------------------------ config


def _write(tmp_path, text):
    path = tmp_path / "bench.toml"
    path.write_text(text)
    return path


GOOD = """
[corpus]
languages = ["en", "de"]
[neurons.z]
method = "zhang2025"
top_rate = 0.02
[bench.delta_ppl]
variants = ["specific"]
"""


@pytest.mark.parametrize("text, message", [
    (GOOD + "foo = 1\n", "unknown key 'foo'"),
    (GOOD.replace('variants = ["specific"]', 'n_random = "3"'), "'n_random' must be an integer"),
    (GOOD.replace('variants = ["specific"]', 'variants = ["all"]'), "variants must be among"),
    (GOOD + "[extra]\n", "unknown section 'extra'"),
    (GOOD + "[bench.layers]\nneurons = \"nope\"\n", "unknown neuron set 'nope'"),
    (GOOD + "[bench.speed]\n", "unknown benchmark"),
    (GOOD.replace('method = "zhang2025"', 'method = "magic"'), "unknown method 'magic'"),
    (GOOD.replace('method = "zhang2025"', 'method = "lape"\npath = "x.json"'), "either method"),
    (GOOD.replace('languages = ["en", "de"]', 'languages = "en"'), "'languages' must be a list"),
    ("[corpus\n", "not valid TOML"),
    ("[corpus]\n", "at least one neuron set"),
])
def test_config_errors_are_one_line(tmp_path, text, message):
    with pytest.raises(ValueError) as error:
        load_config(_write(tmp_path, text))
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(str(tmp_path))


def test_config_parses_and_round_trips(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert config.neurons["z"].params == {"top_rate": 0.02}
    [entry] = config.benchmarks
    assert (entry.kind, entry.name, entry.spec.neurons, entry.spec.variants) == ("delta_ppl", "delta_ppl", "z", ["specific"])
    assert type(config).from_dict(config.to_dict()).to_dict() == config.to_dict()
    with pytest.raises(ValueError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_demo_toml_is_the_demo_config():
    packaged = Path(steer.bench.__file__).parent / "demo.toml"  # the installed package's (the wheel's, in test-wheel)
    assert load_config(packaged).to_dict() == demo_config().to_dict()
    assert not (ROOT / "benchmarks" / "demo.toml").exists()  # one demo config, shipped as package data


def test_demo_quick_and_knobs_set_every_size():
    quick = demo_config(quick=True)
    assert quick.stats.max_tokens_per_language == 300 and quick.corpus.n_eval == 2 and quick.stats.max_length == 32
    specs = {entry.name: entry.spec for entry in quick.benchmarks}
    assert all(specs[name].max_length == 32 for name in ("delta_ppl", "delta_ppl_variants", "delta_ppl_lape", "transfer"))
    assert (specs["delta_ppl"].n_random, specs["delta_ppl_lape"].n_random, specs["delta_ppl_variants"].n_random) == (1, 1, 0)
    forced = specs["forced"]
    assert (forced.n_prompts, forced.max_new_tokens, forced.sweep_targets) == (1, 4, None)
    assert (forced.sweep_modes, forced.n_baseline, forced.n_random) == ([], 2, 1)
    assert specs["transfer"].n_texts == 2
    sized = {name: n.params for name, n in quick.neurons.items() if "n_per_language" in n.params}
    from steer.forcing import FORCING_NEURONS

    forcing = quick.neurons["forcing"]  # the demo forces with the library's default neurons, at their size
    assert sized == {"forcing": forcing.params} and {"method": forcing.method, **forcing.params} == FORCING_NEURONS
    assert all(n.params == {"top_rate": 0.05} for name, n in quick.neurons.items() if name not in sized)
    full = demo_config(n_eval=3, top_rate=0.02, sweep_targets=["de"], max_new_tokens=None, languages=["en", "de"])
    specs = {entry.name: entry.spec for entry in full.benchmarks}
    assert full.corpus.n_eval == 3 and full.corpus.languages == ["en", "de"] and full.base_dir == Path.cwd()
    assert specs["forced"].sweep_targets == ["de"] and specs["forced"].max_new_tokens == 16  # None: the TOML's
    assert all(n.params == {"top_rate": 0.02} for name, n in full.neurons.items() if name != "forcing")
    with pytest.raises(ValueError, match="unknown demo knob 'speed'"):
        demo_config(speed=2)


# ------------------------------------------------------------------ the registry


def test_every_registered_benchmark_has_spec_run_figures_and_section():
    import dataclasses

    from steer.bench import registry

    kinds = registry.benchmarks()
    assert list(kinds)[:5] == ["delta_ppl", "forced", "transfer", "layers", "compare"]
    for kind, record in kinds.items():
        assert record.kind == kind
        assert dataclasses.is_dataclass(record.spec) and record.spec()  # every field has a default
        assert callable(record.run) and callable(record.section) and callable(record.neuron_sets)
        assert record.figure_names("x") and all(name.endswith(".png") for name in record.figure_names("x"))
    assert kinds["layers"].figure_names("l") == ["l.png", "l_overlap.png"]
    assert kinds["compare"].neuron_sets(kinds["compare"].spec(a="p", b="q")) == ["p", "q"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register(dataclasses.replace(kinds["layers"]))
    with pytest.raises(ValueError, match="unknown benchmark 'speed'"):
        registry.get("speed")


def test_a_registered_benchmark_runs_from_a_config(tmp_path, bench_model):
    import dataclasses

    from steer.bench import registry, run_bench

    @dataclasses.dataclass
    class CountBench:
        neurons: str = ""
        scale: int = 1

    def run(ctx, spec, job):
        job.figures[0].write_bytes(b"png")
        return {"n": len(ctx.neurons[spec.neurons]) * spec.scale}

    record = registry.register(registry.Benchmark(
        kind="count_test", spec=CountBench, run=run, section=lambda result, figures: f"## count {result['n']}\n"))
    try:
        text = GOOD.replace('[bench.delta_ppl]\nvariants = ["specific"]\n', "[bench.count_test]\nscale = 2\n")
        with pytest.raises(ValueError, match="'scale' must be an integer"):
            load_config(_write(tmp_path, text.replace("scale = 2", 'scale = "2"')))
        corpus = Corpus(languages=list(PARALLEL), stats={k: v[:3] for k, v in PARALLEL.items()}, eval=dict(EVAL),
                        source="test", parallel=True)
        results = run_bench(_write(tmp_path, text), tmp_path / "out", model=bench_model, corpus=corpus, progress=False)
        assert list(results) == ["count_test"] and results["count_test"]["n"] % 2 == 0
        assert (tmp_path / "out" / "count_test.png").exists()
        assert f"## count {results['count_test']['n']}" in (tmp_path / "out" / "report.md").read_text()
        assert json.loads((tmp_path / "out" / "count_test.json").read_text())["meta"]["steer_version"]
    finally:
        registry.unregister(record.kind)
    assert "count_test" not in registry.benchmarks()


# ------------------------------------------------------------------ the demo, quick, on the tiny model

SUMMARY_KEYS = {"languages", "diagonal_mean_delta_logppl", "offdiagonal_mean_delta_logppl",
                "random_control_mean_delta_logppl", "forced_language_success", "neurons_per_layer", "seconds"}


def test_run_demo_quick_writes_summary_and_report(tmp_path, bench_model_dir):
    corpus = Corpus(languages=list(PARALLEL), stats={k: v[:3] for k, v in PARALLEL.items()}, eval=dict(EVAL),
                    source="test", parallel=True)
    out = tmp_path / "demo"
    summary = run_demo(out, quick=True, model=bench_model_dir, corpus=corpus, progress=False)
    on_disk = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(on_disk)
    assert on_disk["languages"] == ["en", "de", "eu"]
    assert set(on_disk["neurons_per_layer"]) == {"specific", "related", "general"}
    assert {"collect", "identify", "delta_ppl", "forced", "transfer", "layers"} <= set(on_disk["seconds"])
    assert 0.0 <= on_disk["forced_language_success"] <= 1.0
    report = (out / "report.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {"delta_ppl.png", "forced.png", "transfer.png", "layers.png", "layers_overlap.png"} <= set(figures)
    for name in figures:
        assert (out / name).stat().st_size > 1000
    for name in ("delta_ppl", "forced", "transfer", "layers"):
        saved = json.loads((out / f"{name}.json").read_text())
        assert saved["config_hash"] and saved["meta"]["model"]["weights_hash"] and saved["meta"]["steer_version"]
    assert on_disk["meta"]["model"]["n_layers"] == 4
    assert on_disk["command"] == f"steer.bench.run_demo({str(out)!r}, quick=True, model={str(bench_model_dir)!r}, " \
        "corpus=Corpus)" and "commit" in on_disk  # called from Python: the call, and the checkout's commit
    assert summary["resumed"] == []
    # a rerun on the same folder redoes nothing
    again = run_demo(out, quick=True, model=bench_model_dir, corpus=corpus, progress=False)
    assert set(again["resumed"]) >= {"delta_ppl", "forced", "transfer", "layers"}
    assert again["diagonal_mean_delta_logppl"] == summary["diagonal_mean_delta_logppl"]


def test_the_benchmark_configs_in_benchmarks_load():
    from pathlib import Path

    from steer.bench.schema import load_config

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    configs = sorted(folder.glob("*.toml"))
    assert configs
    for path in configs:
        load_config(path)


@pytest.mark.parametrize("name", ["generalise.toml", "push.toml"])
def test_benchmark_configs_load_and_force_with_the_library_default_neurons(name):
    """The configs under benchmarks/ are valid, and their forcing neurons are the library's default."""
    from steer.forcing import FORCING_NEURONS

    config = load_config(Path(__file__).resolve().parent.parent / "benchmarks" / name)
    forcing = config.neurons["forcing"]
    assert {"method": forcing.method, **forcing.params} == FORCING_NEURONS
    assert any(entry.kind == "forced" and entry.spec.neurons == "forcing" for entry in config.benchmarks)
