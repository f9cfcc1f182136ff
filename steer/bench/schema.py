"""The schema of benchmark configs (TOML): dataclasses, with one-line errors for every bad input.

A config names the model, the corpus, how to get activation stats, the neuron sets, and the
benchmarks to run with their sizes (see the demo's, `steer/bench/demo.toml`)::

    [model]
    name = "gemma-3-270m"            # or a folder / HF id; device = "cpu"

    [corpus]
    source = "libreoffice"           # or a corpus folder, a folder of <lang>.txt, a .jsonl
    languages = ["en", "de", "fr"]   # default: all of the corpus
    n_eval = 24                      # eval texts per language for the perplexity benchmarks

    [stats]                          # collect on the stats split ...
    max_tokens_per_language = 15000
    # path = "stats/"                # ... or load saved stats

    [neurons.zhang2025]              # a neuron set: a method (+ its parameters) ...
    method = "zhang2025"
    top_rate = 0.01
    [neurons.mine]
    path = "neurons.json"            # ... or a saved NeuronSet

    [[bench.delta_ppl]]              # a table, or an array of tables to run a benchmark several times
    neurons = "zhang2025"
    variants = ["specific+related"]

The `[bench.<kind>]` tables are the spec dataclasses of the registered benchmarks
(`steer.bench.registry`); `steer.bench.runner` runs a config.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steer.bench._common import check_at_least
from steer.bench.registry import benchmarks, get
from steer.models import EMBEDDED_MODEL

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


_TYPES = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,), "list": (list,), "dict": (dict,)}
_NAMES = {"bool": "true/false", "int": "an integer", "float": "a number", "str": "a string", "list": "a list",
          "dict": "a table"}


def _annotation(f: dataclasses.Field) -> list[str]:
    """The type names of a field, from its annotation string (e.g. "list | None" -> ["list", "None"])."""
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return [part.strip().split("[")[0] for part in text.split("|")]


def _kind_ok(value: Any, names: list[str]) -> bool:
    if value is None:
        return "None" in names
    for name in names:
        if name == "None":
            continue
        types = _TYPES.get(name)
        if types is None:
            return True  # an annotation this checker does not know: accept
        if isinstance(value, bool) and name != "bool":
            continue
        if isinstance(value, types):
            return True
    return False


def _type_name(names: list[str]) -> str:
    return " or ".join(_NAMES.get(n, n) for n in names if n != "None")


def _build(cls, table: Any, where: str, extra: str | None = None):
    """`cls(**table)` with one-line errors for unknown keys and wrong types.

    `extra`: the field that collects unknown keys (a neuron method's parameters) instead of failing.
    """
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table, got {type(table).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    spill: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields or key == extra:
            if extra is not None:
                spill[key] = value
                continue
            known = ", ".join(sorted(k for k in fields if not k.startswith("_")))
            raise ValueError(f"{where}: unknown key '{key}' (known: {known})")
        names = _annotation(fields[key])
        if not _kind_ok(value, names):
            raise ValueError(f"{where}: '{key}' must be {_type_name(names)}, got {value!r}")
        kwargs[key] = value
    if extra is not None:
        kwargs[extra] = {**kwargs.get(extra, {}), **spill}
    try:
        obj = cls(**kwargs)
    except TypeError as error:  # a missing required key
        raise ValueError(f"{where}: {error}") from None
    check = getattr(obj, "check", None)
    if check is not None:
        check(where)
    return obj


@dataclass
class ModelConfig:
    name: str = EMBEDDED_MODEL
    device: str = "auto"  # a GPU when there is one
    dtype: str = "auto"  # bfloat16 on a GPU, float32 on a CPU
    device_map: str | None = None  # "auto": spread a model too large for one GPU (accelerate)

    def check(self, where: str) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"{where}: dtype must be auto, float32, bfloat16 or float16, got '{self.dtype}'")


@dataclass
class CorpusConfig:
    source: str = "libreoffice"
    languages: list | None = None
    max_stats: int | None = None
    n_eval: int = 24

    def check(self, where: str) -> None:
        if self.languages is not None and (len(self.languages) < 2 or not all(isinstance(x, str) for x in self.languages)):
            raise ValueError(f"{where}: languages must list at least two language codes")
        if self.languages is not None and len(set(self.languages)) != len(self.languages):
            raise ValueError(f"{where}: languages lists a language twice: {self.languages}")
        if self.n_eval < 1:
            raise ValueError(f"{where}: n_eval must be at least 1")
        check_at_least(where, max_stats=(self.max_stats, 1))


@dataclass
class StatsConfig:
    path: str | None = None
    max_tokens_per_language: int | None = 20000
    batch_size: int = 8
    max_length: int = 256

    def check(self, where: str) -> None:
        if self.max_tokens_per_language is not None and self.max_tokens_per_language < 1:
            raise ValueError(f"{where}: max_tokens_per_language must be positive")
        check_at_least(where, batch_size=(self.batch_size, 1), max_length=(self.max_length, 2))


@dataclass
class NeuronConfig:
    method: str | None = None
    path: str | None = None
    params: dict = field(default_factory=dict)

    def check(self, where: str) -> None:
        from steer.identification import METHODS

        if (self.method is None) == (self.path is None):
            raise ValueError(f"{where}: give either method = \"...\" or path = \"...\"")
        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"{where}: unknown method '{self.method}' (known: {', '.join(sorted(METHODS))})")
        if self.path is not None and self.params:
            raise ValueError(f"{where}: a saved neuron set ('path') takes no method parameters {sorted(self.params)}")
        if self.method is not None:
            from steer.identification import check_params

            try:
                check_params(self.method, self.params)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None


@dataclass
class BenchEntry:
    kind: str
    name: str
    spec: Any

    def neuron_names(self) -> list[str]:
        return get(self.kind).neuron_sets(self.spec)


@dataclass
class BenchConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    neurons: dict[str, NeuronConfig] = field(default_factory=dict)
    benchmarks: list[BenchEntry] = field(default_factory=list)
    title: str = "steer benchmarks"
    base_dir: Path = field(default_factory=Path.cwd)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config", base_dir: Path | None = None) -> "BenchConfig":
        known = {"title", "model", "corpus", "stats", "neurons", "bench"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown section '{unknown[0]}' (known: {', '.join(sorted(known))})")
        title = data.get("title", "steer benchmarks")
        if not isinstance(title, str):
            raise ValueError(f"{source}: title must be a string")
        model = _build(ModelConfig, data.get("model", {}), f"{source}: [model]")
        corpus = _build(CorpusConfig, data.get("corpus", {}), f"{source}: [corpus]")
        stats = _build(StatsConfig, data.get("stats", {}), f"{source}: [stats]")
        neuron_tables = data.get("neurons", {})
        if not isinstance(neuron_tables, dict) or not neuron_tables:
            raise ValueError(f"{source}: define at least one neuron set, e.g. [neurons.zhang2025] method = \"zhang2025\"")
        neurons = {name: _build(NeuronConfig, table, f"{source}: [neurons.{name}]", extra="params")
                   for name, table in neuron_tables.items()}
        bench_tables = data.get("bench", {})
        kinds = benchmarks()
        if not isinstance(bench_tables, dict) or not bench_tables:
            raise ValueError(f"{source}: name at least one benchmark, e.g. [bench.delta_ppl] (known: {', '.join(kinds)})")
        entries: list[BenchEntry] = []
        for kind, tables in bench_tables.items():
            if kind not in kinds:
                raise ValueError(f"{source}: unknown benchmark [bench.{kind}] (known: {', '.join(kinds)})")
            spec_class = kinds[kind].spec
            tables = tables if isinstance(tables, list) else [tables]
            for k, table in enumerate(tables):
                where = f"{source}: [bench.{kind}]" + (f" #{k + 1}" if len(tables) > 1 else "")
                if not isinstance(table, dict):
                    raise ValueError(f"{where} must be a table")
                table = dict(table)
                name = table.pop("name", kind if len(tables) == 1 else f"{kind}_{k + 1}")
                if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
                    raise ValueError(f"{where}: name must be letters, digits, '-' or '_', got {name!r}")
                if "neurons" in {f.name for f in dataclasses.fields(spec_class)}:
                    table.setdefault("neurons", next(iter(neurons)))
                spec = _build(spec_class, table, where)
                entry = BenchEntry(kind, name, spec)
                for ref in entry.neuron_names():
                    if ref not in neurons:
                        raise ValueError(f"{where}: unknown neuron set '{ref}' (defined: {', '.join(neurons)})")
                entries.append(entry)
        names = [e.name for e in entries]
        duplicate = sorted({n for n in names if names.count(n) > 1})
        if duplicate:
            raise ValueError(f"{source}: two benchmarks are named '{duplicate[0]}'; give them distinct name = \"...\"")
        return cls(model, corpus, stats, neurons, entries, title, base_dir or Path.cwd())

    def to_dict(self) -> dict:
        bench: dict[str, list] = {}
        for entry in self.benchmarks:
            bench.setdefault(entry.kind, []).append({"name": entry.name, **dataclasses.asdict(entry.spec)})
        neurons = {}
        for name, spec in self.neurons.items():
            table = {k: v for k, v in (("method", spec.method), ("path", spec.path)) if v is not None}
            neurons[name] = {**table, **spec.params}
        return {"title": self.title, "model": dataclasses.asdict(self.model), "corpus": dataclasses.asdict(self.corpus),
                "stats": dataclasses.asdict(self.stats), "neurons": neurons, "bench": bench}


def load_config(path: str | Path) -> BenchConfig:
    """Read and check a TOML benchmark config; every problem is a one-line ValueError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read config '{path}': {error.strerror or error}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error})") from None
    return BenchConfig.from_dict(data, source=str(path), base_dir=path.parent.resolve())
