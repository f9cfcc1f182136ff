"""benchmarks/push_compare.py's bookkeeping: which pushes each learned push is compared with, and the curve of
success against the number of neurons."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def push_compare():
    spec = importlib.util.spec_from_file_location("push_compare", ROOT / "benchmarks" / "push_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(fluent: list[int], ci=(0.1, 0.9)) -> dict:
    """A family's result: one continuation per paragraph (source en, target de), `fluent` its flags."""
    return {"fluent_success": sum(fluent) / len(fluent), "fluent_success_ci": list(ci),
            "continuations": [{"source": "en", "target": "de", "paragraph": i, "fluent": bool(f)}
                              for i, f in enumerate(fluent)]}


def test_each_learned_push_is_compared_with_its_control_the_rule_and_the_residual_vector(push_compare):
    families = [push_compare.parse_family(text) for text in
                "specificity:500,specificity:1000,random:specificity:1000,residual:9:2,residual:9,"
                "diffmean:specificity:500".split(",")]
    assert families[3] == {"name": "residual:9:2", "kind": "residual", "layer": 9, "lr": 2.0}
    results = {"specificity:500": _result([1, 1, 0, 1]), "specificity:1000": _result([1, 1, 1, 1]),
               "random:specificity:1000": _result([1, 0, 0, 1]), "residual:9:2": _result([1, 1, 1, 0]),
               "residual:9": _result([0, 0, 0, 0]), "diffmean:specificity:500": _result([0, 1, 0, 0])}
    compared = push_compare.compare(results, families)
    # specificity:500 has no random control here; specificity:1000 no diffmean of its own: the first rule measured
    assert {name: {label: d["against"] for label, d in against.items()} for name, against in compared.items()} == {
        "specificity:500": {"diffmean": "diffmean:specificity:500", "residual": "residual:9:2"},
        "specificity:1000": {"random": "random:specificity:1000", "diffmean": "diffmean:specificity:500",
                             "residual": "residual:9:2"}}
    assert compared["specificity:1000"]["random"]["overall"]["difference"] == pytest.approx(0.5)
    assert compared["specificity:1000"]["diffmean"]["de"]["difference"] == pytest.approx(0.75)


def test_success_against_neurons_needs_two_sizes(push_compare):
    families = [push_compare.parse_family(text) for text in
                ("specificity:500", "random:specificity:500", "lape", "specificity:4000")]
    results = {f["name"]: _result([1, 0], (0.2, 0.8)) for f in families}
    curve = push_compare.neuron_curve({"families": families, "results": results})
    assert set(curve["language neurons"]) == {500, 4000}  # lape is no specificity:k set
    assert curve["random neurons, same per-layer counts"] == {500: (0.5, [0.2, 0.8])}
    one = [f for f in families if f["name"] != "specificity:4000"]
    assert push_compare.neuron_curve({"families": one, "results": results}) == {}
