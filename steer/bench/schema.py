"""The schema of benchmark configs (TOML): dataclasses, with one-line errors for every bad input.

A config names the model, the corpus, how to get activation stats, the neuron sets, and the
benchmarks to run with their sizes (see the demo's, `steer/bench/demo.toml`)::

    [model]
    name = "gemma-3-270m"            # or a folder / HF id; device = "cpu"

    [corpus]
    source = "libreoffice"           # or a corpus folder, a folder of <lang>.txt, a .jsonl
    languages = ["en", "de", "fr"]   # default: all of the corpus
    n_eval = 40                      # held-out paragraphs per language every benchmark may read (default: all)

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
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from steer.bench._common import check_at_least
from steer.bench.registry import benchmarks, get
from steer.languages import Lang, is_code, normalise_codes
from steer.models import EMBEDDED_MODEL

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# The annotation names a config field may carry. "lang" is a language code (a str that steer.languages
# accepts); "list[X]" is a list whose every element is an X (e.g. list[float], list[lang]).
_TYPES = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,), "list": (list,), "dict": (dict,),
          "lang": (str,)}
_NAMES = {"bool": "true/false", "int": "an integer", "float": "a number", "str": "a string", "list": "a list",
          "dict": "a table", "lang": "a language code"}


def _annotation(f: dataclasses.Field) -> list[str]:
    """The type names of a field, from its annotation string (e.g. "list[float] | None" -> ["list[float]", "None"])."""
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return [part.strip().replace("Lang", "lang") for part in text.split("|")]


def _kind_ok(value: Any, names: list[str]) -> bool:
    if value is None:
        return "None" in names
    for name in names:
        if name == "None":
            continue
        base, _, item = name.partition("[")
        types = _TYPES.get(base)
        if types is None:
            return True  # an annotation this checker does not know: accept
        if isinstance(value, bool) and base != "bool":
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue  # nan and inf are never a setting
        if base == "lang" and not is_code(str(value).strip().lower().replace("_", "-")):
            continue
        if isinstance(value, types) and (not item or all(_kind_ok(v, [item.rstrip("]")]) for v in value)):
            return True
    return False


_PLURALS = {"bool": "true/false values", "int": "integers", "float": "numbers", "str": "strings",
            "lang": "language codes"}


def _type_name(names: list[str]) -> str:
    def one(name: str) -> str:
        base, _, item = name.partition("[")
        item = item.rstrip("]")
        return f"a list of {_PLURALS.get(item, item)}" if item else _NAMES.get(base, base)

    return " or ".join(one(n) for n in names if n != "None")


def language_fields(obj) -> dict[str, list[str]]:
    """The languages a config object names, field by field (fields annotated lang or list[lang]), normalised."""
    found = {}
    for f in dataclasses.fields(obj):
        names = _annotation(f)
        value = getattr(obj, f.name)
        if value is None or not any(n in ("lang", "list[lang]") for n in names):
            continue
        found[f.name] = normalise_codes(value if isinstance(value, list) else [value], what=f.name)
    return found


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
        if any(n in ("lang", "list[lang]") for n in names) and value is not None:
            value = normalise_codes(value, what=f"{where}: '{key}'") if isinstance(value, list) else \
                normalise_codes([value], what=f"{where}: '{key}'")[0]
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
    languages: list[Lang] | None = None
    max_stats: int | None = None
    n_eval: int | None = None  # held-out paragraphs per language, for every benchmark (None: all of them)

    def check(self, where: str) -> None:
        if self.languages is not None and len(self.languages) < 2:
            raise ValueError(f"{where}: languages must list at least two language codes")
        if self.n_eval is not None and self.n_eval < 1:
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

    def resolve(self, path: str) -> Path:
        """A path of the config, relative to the config's folder unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def input_paths(self) -> list[Path]:
        """Every file or folder the config reads: saved stats, saved neuron sets, a corpus or model folder."""
        paths = [self.resolve(self.stats.path)] if self.stats.path is not None else []
        paths += [self.resolve(spec.path) for spec in self.neurons.values() if spec.path is not None]
        if not self.corpus.source.startswith("libreoffice"):
            paths.append(self.resolve(self.corpus.source))
        if self.model.name != EMBEDDED_MODEL and self.resolve(self.model.name).exists():
            paths.append(self.resolve(self.model.name))
        return paths

    def check_files(self, corpus: bool = True) -> None:
        """A one-line error for a saved stats folder, neuron set or (with `corpus`) corpus the config names but
        that is not there."""
        where = {"[stats] path": self.stats.path,
                 **{f"[neurons.{name}] path": spec.path for name, spec in self.neurons.items()}}
        for key, path in where.items():
            if path is not None and not self.resolve(path).exists():
                raise ValueError(f"{key}: '{self.resolve(path)}' does not exist; fix the path or use method = \"...\"")
        if corpus and not self.corpus.source.startswith("libreoffice") and not self.resolve(self.corpus.source).exists():
            raise ValueError(f"[corpus] source: '{self.resolve(self.corpus.source)}' does not exist; give a corpus "
                             "folder, a folder of <lang>.txt, a .jsonl file or libreoffice")

    def check_languages(self, available: list[str]) -> None:
        """A one-line error for any language the config names that the run will not have: [corpus] languages
        against the corpus, every benchmark's language fields against the languages of the run."""
        missing = [lang for lang in self.corpus.languages or [] if lang not in available]
        if missing:
            raise ValueError(f"[corpus] languages: the corpus has no language {missing}; it has {', '.join(available)}")
        languages = self.corpus.languages or available
        for entry in self.benchmarks:
            for name, codes in language_fields(entry.spec).items():
                unknown = [code for code in codes if code not in languages]
                if unknown:
                    raise ValueError(f"[bench.{entry.kind}] {entry.name}: {name} names {unknown}, not among the "
                                     f"run's languages ({', '.join(languages)})")

    def only(self, names: Sequence[str]) -> "BenchConfig":
        """The same config with only the benchmarks `names` names (kept in the config's order; their results and
        keys are those of a full run); a name the config does not define is a one-line error."""
        defined = [entry.name for entry in self.benchmarks]
        unknown = [name for name in names if name not in defined]
        if unknown or not names:
            raise ValueError(f"no benchmark named '{unknown[0] if unknown else ''}' in the config (defined: "
                             f"{', '.join(defined)})")
        return dataclasses.replace(self, benchmarks=[entry for entry in self.benchmarks if entry.name in names])

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


def recheck(config: BenchConfig) -> BenchConfig:
    """Every section and benchmark spec of `config` checked again as if read from TOML (after code changed
    fields, e.g. the demo's knobs): the same one-line errors, and language codes normalised."""
    config.model = _build(ModelConfig, dataclasses.asdict(config.model), "[model]")
    config.corpus = _build(CorpusConfig, dataclasses.asdict(config.corpus), "[corpus]")
    config.stats = _build(StatsConfig, dataclasses.asdict(config.stats), "[stats]")
    for entry in config.benchmarks:
        entry.spec = _build(type(entry.spec), dataclasses.asdict(entry.spec), f"[bench.{entry.kind}] {entry.name}")
    return config


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
    config = BenchConfig.from_dict(data, source=str(path), base_dir=path.parent.resolve())
    try:
        config.check_files()
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return config
