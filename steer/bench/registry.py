"""The benchmarks a config can name: one record per kind, registered next to the benchmark's code.

A record ties together everything the runner needs to know about a kind of benchmark (as
SAELens's registry does for SAE architectures): the dataclass of its `[bench.<kind>]` table, the
function that runs it, the figures it writes and the report section it makes of its result::

    register(Benchmark(kind="layers", spec=LayersBench, run=run_layers, section=layers_md,
                       figures=("{name}.png", "{name}_overlap.png")))

`Context` is what the runner hands every run (the model, corpus, stats and neuron sets, loaded
once) and `Job` the paths of one benchmark; the benchmark modules use these two and nothing of
the runner itself.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# The benchmarks steer ships, in the order they are listed (error messages, `steer bench` help).
BUILTIN = ("delta_ppl", "forced", "transfer", "layers", "compare")

_RECORDS: dict[str, "Benchmark"] = {}


@dataclass
class Context:
    """Everything the benchmarks of one run share: the model, corpus, stats and neuron sets (loaded once)."""

    config: Any  # the BenchConfig
    out: Path
    model: Any
    corpus: Any
    stats: Any
    neurons: dict[str, Any]
    keys: dict[str, str]  # hashes of the inputs: "model", "corpus", "stats", "neurons/<name>"
    progress: bool = True
    cache: dict = field(default_factory=dict)  # results shared between benchmarks of one run

    def eval_texts(self, n_texts: int | None) -> dict[str, list[str]]:
        """The first `n_texts` held-out texts per language (None: all the run has; `[corpus] n_eval` trims them
        for every benchmark)."""
        return {lang: list(self.corpus.eval[lang][:n_texts]) for lang in self.corpus.languages}


@dataclass(frozen=True)
class Job:
    """Where one benchmark writes: its name, its figures (in the order of the record's `figures`) and
    a JSON checkpoint for resuming mid-way (the runner removes it once the benchmark is done)."""

    name: str
    figures: list[Path]
    checkpoint: Path


def _one_set(spec: Any) -> list[str]:
    return [spec.neurons]


@dataclass(frozen=True)
class Benchmark:
    """One kind of benchmark.

    `spec`: the dataclass of its `[bench.<kind>]` table (fields with defaults, an optional
    `check(where)`; a field `neurons` defaults to the config's first neuron set). `run(ctx, spec,
    job)`: the result dict, figures written to `job.figures`. `figures`: file name templates
    (`{name}` is the benchmark's name). `section(result, figures)`: its report.md section.
    `neuron_sets(spec)`: the neuron sets it reads (default: `spec.neurons`). `key(ctx)`: inputs
    beyond the spec, the model, corpus and neuron sets that its result depends on (entered in the
    hash that decides whether a saved result is reused).
    """

    kind: str
    spec: type
    run: Callable[[Context, Any, Job], dict]
    section: Callable[[dict, list[str]], str]
    figures: tuple[str, ...] = ("{name}.png",)
    neuron_sets: Callable[[Any], list[str]] = _one_set
    key: Callable[[Context], dict] | None = None

    def figure_names(self, name: str) -> list[str]:
        return [template.format(name=name) for template in self.figures]


def register(record: Benchmark) -> Benchmark:
    """Add a kind of benchmark (a ValueError for a second record of the same kind or an incomplete one)."""
    if record.kind in _RECORDS and _RECORDS[record.kind] is not record:
        raise ValueError(f"a benchmark '{record.kind}' is already registered")
    if not dataclasses.is_dataclass(record.spec):
        raise ValueError(f"benchmark '{record.kind}': spec must be a dataclass, got {record.spec!r}")
    if not callable(record.run) or not callable(record.section) or not record.figures:
        raise ValueError(f"benchmark '{record.kind}' needs a run function, a report section and its figures")
    _RECORDS[record.kind] = record
    return record


def unregister(kind: str) -> None:
    """Remove a kind registered with `register` (the built-in ones stay)."""
    if kind in BUILTIN:
        raise ValueError(f"the built-in benchmark '{kind}' cannot be removed")
    _RECORDS.pop(kind, None)


def benchmarks() -> dict[str, Benchmark]:
    """Every registered kind: the built-in ones first (in `BUILTIN` order), then the others as registered."""
    for kind in BUILTIN:
        if kind not in _RECORDS:
            importlib.import_module(f"steer.bench.{kind}")
    ordered = {kind: _RECORDS[kind] for kind in BUILTIN}
    ordered.update({kind: record for kind, record in _RECORDS.items() if kind not in ordered})
    return ordered


def get(kind: str) -> Benchmark:
    known = benchmarks()
    if kind not in known:
        raise ValueError(f"unknown benchmark '{kind}' (known: {', '.join(known)})")
    return known[kind]
