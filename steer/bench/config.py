"""Benchmark configs (TOML) and the runner: one model load, one stats file, resumable benchmarks.

A config names the model, the corpus, how to get activation stats, the neuron sets, and the
benchmarks to run with their sizes (see `benchmarks/demo.toml`)::

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

`run_bench(config, out)` writes, into `out`: `stats/`, `neurons/<name>.json`, one `<bench>.json`
per benchmark with its figure(s) `<bench>.png`, `stages.json` (the seconds of each stage) and
`report.md`. Each benchmark's JSON records the hash of everything it depends on; a rerun skips it
when the hash matches and redoes it otherwise; long benchmarks also resume mid-way from
`out/.partial/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from steer._io import write_json_atomic
from steer.bench._common import stable_hash

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# ==================================================================================================
# Config dataclasses


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
    name: str = "gemma-3-270m"
    device: str = "cpu"
    dtype: str = "float32"

    def check(self, where: str) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"{where}: dtype must be float32, bfloat16 or float16, got '{self.dtype}'")


@dataclass
class CorpusConfig:
    source: str = "libreoffice"
    languages: list | None = None
    max_stats: int | None = None
    n_eval: int = 24

    def check(self, where: str) -> None:
        if self.languages is not None and (len(self.languages) < 2 or not all(isinstance(x, str) for x in self.languages)):
            raise ValueError(f"{where}: languages must list at least two language codes")
        if self.n_eval < 1:
            raise ValueError(f"{where}: n_eval must be at least 1")


@dataclass
class StatsConfig:
    path: str | None = None
    max_tokens_per_language: int | None = 20000
    batch_size: int = 8
    max_length: int = 256

    def check(self, where: str) -> None:
        if self.max_tokens_per_language is not None and self.max_tokens_per_language < 1:
            raise ValueError(f"{where}: max_tokens_per_language must be positive")


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


@dataclass
class DeltaPPLBench:
    neurons: str = ""
    variants: list = field(default_factory=lambda: ["specific+related"])
    n_texts: int | None = None
    max_length: int = 128
    batch_size: int = 8
    n_random: int = 3
    random_seed: int = 0
    random_columns: str = "all"
    random_variants: list | None = None
    cells: str = "all"

    def check(self, where: str) -> None:
        from steer.bench.delta_ppl import RANDOM_COLUMNS, VARIANTS

        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(f"{where}: variants must be among {', '.join(VARIANTS)}, got {self.variants}")
        if self.random_columns not in RANDOM_COLUMNS:
            raise ValueError(f"{where}: random_columns must be one of {', '.join(RANDOM_COLUMNS)}")
        if self.cells not in ("all", "diagonal"):
            raise ValueError(f"{where}: cells must be 'all' or 'diagonal'")


@dataclass
class ForcedBench:
    neurons: str = ""
    n_prompts: int = 3
    prompt_words: int = 8
    mode: str | None = None
    strength: float | None = None
    sweep_modes: list = field(default_factory=lambda: ["set", "add", "diffmean"])
    sweep_strengths: list = field(default_factory=lambda: [1.0, 2.0, 4.0])
    sweep_n_prompts: int = 1
    sweep_targets: list | None = None
    max_new_tokens: int = 24
    batch_size: int = 32
    fluency: bool = True

    def check(self, where: str) -> None:
        from steer.generation import FORCE_MODES

        for mode in [self.mode, *self.sweep_modes]:
            if mode is not None and mode not in FORCE_MODES:
                raise ValueError(f"{where}: unknown mode '{mode}' (known: {', '.join(FORCE_MODES)})")
        if self.n_prompts < 1 or self.max_new_tokens < 1:
            raise ValueError(f"{where}: n_prompts and max_new_tokens must be at least 1")


@dataclass
class TransferBench:
    neurons: str = ""
    low_resource: list | None = None
    high_resource: list | None = None
    factor: float = 2.0
    n_random: int = 1
    n_texts: int | None = None
    max_length: int = 128
    batch_size: int = 8


@dataclass
class LayersBench:
    neurons: str = ""


@dataclass
class CompareBench:
    a: str = ""
    b: str = ""
    trained: list | None = None

    def check(self, where: str) -> None:
        if not self.a or not self.b:
            raise ValueError(f"{where}: compare needs a = \"<neuron set>\" and b = \"<neuron set>\"")


BENCH_KINDS: dict[str, type] = {
    "delta_ppl": DeltaPPLBench,
    "forced": ForcedBench,
    "transfer": TransferBench,
    "layers": LayersBench,
    "compare": CompareBench,
}


@dataclass
class BenchEntry:
    kind: str
    name: str
    spec: Any

    def neuron_names(self) -> list[str]:
        return [self.spec.a, self.spec.b] if self.kind == "compare" else [self.spec.neurons]


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
        if not isinstance(bench_tables, dict) or not bench_tables:
            raise ValueError(f"{source}: name at least one benchmark, e.g. [bench.delta_ppl] (known: {', '.join(BENCH_KINDS)})")
        entries: list[BenchEntry] = []
        for kind, tables in bench_tables.items():
            if kind not in BENCH_KINDS:
                raise ValueError(f"{source}: unknown benchmark [bench.{kind}] (known: {', '.join(BENCH_KINDS)})")
            tables = tables if isinstance(tables, list) else [tables]
            for k, table in enumerate(tables):
                where = f"{source}: [bench.{kind}]" + (f" #{k + 1}" if len(tables) > 1 else "")
                if not isinstance(table, dict):
                    raise ValueError(f"{where} must be a table")
                table = dict(table)
                name = table.pop("name", kind if len(tables) == 1 else f"{kind}_{k + 1}")
                if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
                    raise ValueError(f"{where}: name must be letters, digits, '-' or '_', got {name!r}")
                if kind != "compare":
                    table.setdefault("neurons", next(iter(neurons)))
                spec = _build(BENCH_KINDS[kind], table, where)
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


# ==================================================================================================
# The runner


class _Stages:
    """`out/stages.json`: per stage its hash and seconds; a stage with a matching hash is not redone."""

    def __init__(self, out: Path):
        self.path = out / "stages.json"
        self.data: dict[str, dict] = {}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                self.data = {}
        self.resumed: list[str] = []

    def record(self, stage: str, seconds: float, key: str | None = None) -> None:
        self.data[stage] = {"seconds": round(seconds, 2), "hash": key}
        write_json_atomic(self.path, self.data)

    def seconds(self) -> dict[str, float]:
        return {stage: entry["seconds"] for stage, entry in self.data.items()}


@dataclass
class Context:
    """Everything the benchmarks share: the model, corpus, stats and neuron sets (loaded once)."""

    config: BenchConfig
    out: Path
    model: Any
    corpus: Any
    stats: Any
    neurons: dict[str, Any]
    keys: dict[str, str]
    progress: bool = True
    cache: dict = field(default_factory=dict)  # results shared between benchmarks of one run

    def eval_texts(self, n_texts: int | None) -> dict[str, list[str]]:
        n = n_texts or self.config.corpus.n_eval
        return {lang: list(self.corpus.eval[lang][:n]) for lang in self.corpus.languages}


def _resolve_path(config: BenchConfig, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else config.base_dir / p


def _load_corpus(config: BenchConfig, corpus=None):
    from steer.corpus import load_corpus

    if corpus is None:
        source = config.corpus.source
        if not source.startswith("libreoffice"):
            source = str(_resolve_path(config, source))
        corpus = load_corpus(source, progress=False)
    languages = config.corpus.languages or list(corpus.languages)
    missing = [lang for lang in languages if lang not in corpus.languages]
    if missing:
        raise ValueError(f"the corpus has no language {missing}; it has {corpus.languages}")
    return corpus.subset(languages, max_stats=config.corpus.max_stats)


def _load_model(config: BenchConfig, model=None):
    import torch

    from steer.models import load_model

    if model is not None and not isinstance(model, (str, Path)):
        return model
    name = str(model) if model is not None else config.model.name
    if name != "gemma-3-270m" and not name.startswith(("/", "~")) and Path(name).exists() is False:
        candidate = config.base_dir / name
        name = str(candidate) if candidate.exists() else name
    return load_model(name, device=config.model.device, dtype=getattr(torch, config.model.dtype))


def prepare(config: BenchConfig, out: Path, *, model=None, corpus=None, progress: bool = True,
            stages: _Stages | None = None) -> Context:
    """Load the model and corpus, collect (or load / reuse) the stats, identify (or load) the neuron sets."""
    from steer.identification import identify
    from steer.models import model_info
    from steer.neurons import NeuronSet
    from steer.collection import collect
    from steer.stats import ActivationStats

    stages = stages or _Stages(out)
    started = time.perf_counter()
    model = _load_model(config, model)
    stages.record("load_model", time.perf_counter() - started)
    info = model_info(model)
    started = time.perf_counter()
    corpus = _load_corpus(config, corpus)
    stages.record("corpus", time.perf_counter() - started)
    model_key = {"name": info.name, "weights_hash": info.weights_hash}
    corpus_key = corpus.fingerprint()
    keys = {"model": stable_hash(model_key), "corpus": corpus_key[:16]}

    # ---- stats: load, reuse out/stats when it was made from the same inputs, or collect
    started = time.perf_counter()
    if config.stats.path is not None:
        stats = ActivationStats.load(_resolve_path(config, config.stats.path), model=model)
        keys["stats"] = stable_hash({"path": config.stats.path, "plan": stats.meta.get("plan"),
                                     "tokens": stats.tokens.tolist()})
        stages.record("collect", time.perf_counter() - started, keys["stats"])
    else:
        keys["stats"] = stable_hash({"model": keys["model"], "corpus": keys["corpus"],
                                     "stats": dataclasses.asdict(config.stats)})
        stats_dir = out / "stats"
        stats = None
        if (stats_dir / "stats.json").exists():
            try:
                saved = ActivationStats.load(stats_dir, model=model)
                if saved.meta.get("bench_key") == keys["stats"]:
                    stats = saved
            except ValueError:
                stats = None
        if stats is None:
            stats = collect(
                model, corpus, languages=corpus.languages, batch_size=config.stats.batch_size,
                max_length=config.stats.max_length, max_tokens_per_language=config.stats.max_tokens_per_language,
                checkpoint=out / ".partial" / f"collect-{keys['stats']}", progress=progress,
            )
            stats.meta["bench_key"] = keys["stats"]
            stats.save(stats_dir)
            shutil.rmtree(out / ".partial" / f"collect-{keys['stats']}", ignore_errors=True)
            stages.record("collect", time.perf_counter() - started, keys["stats"])
        elif "collect" not in stages.data:
            stages.record("collect", float(stats.meta.get("seconds", 0.0)), keys["stats"])
    if list(stats.languages) != list(corpus.languages):
        missing = [lang for lang in corpus.languages if lang not in stats.languages]
        if missing:
            raise ValueError(f"the stats have no language {missing}; they have {stats.languages}")

    # ---- neuron sets
    started = time.perf_counter()
    neurons = {}
    for name, spec in config.neurons.items():
        if spec.path is not None:
            neurons[name] = NeuronSet.load(_resolve_path(config, spec.path), model=model)
            keys[f"neurons/{name}"] = stable_hash({"path": spec.path, "n": len(neurons[name]),
                                                   "content": _neuron_digest(neurons[name])})
        else:
            neurons[name] = identify(stats, method=spec.method, **spec.params)
            keys[f"neurons/{name}"] = stable_hash({"stats": keys["stats"], "method": spec.method, "params": spec.params})
            neurons[name].save(out / "neurons" / f"{name}.json")
    stages.record("identify", time.perf_counter() - started)
    return Context(config, out, model, corpus, stats, neurons, keys, progress)


def _neuron_digest(neurons) -> str:
    from steer.bench._common import neuron_fingerprint

    return neuron_fingerprint(neurons)


# ---- one function per benchmark kind: (context, entry) -> result dict; figures written beside


def _run_delta_ppl(ctx: Context, entry: BenchEntry) -> dict:
    from steer.bench.delta_ppl import delta_ppl_matrix
    from steer.bench.plots import plot_delta_ppl

    spec: DeltaPPLBench = entry.spec
    neurons = ctx.neurons[spec.neurons]
    texts = ctx.eval_texts(spec.n_texts)
    rows = [lang for lang in neurons.languages if lang in texts]
    cache_key = ("baseline", stable_hash({lang: texts[lang] for lang in texts}), spec.max_length)
    result = delta_ppl_matrix(
        ctx.model, neurons, texts, rows=rows, variants=spec.variants, n_random=spec.n_random,
        random_seed=spec.random_seed, random_columns=spec.random_columns, random_variants=spec.random_variants,
        cells=spec.cells, batch_size=spec.batch_size, max_length=spec.max_length,
        baseline=ctx.cache.get(cache_key), checkpoint=ctx.out / ".partial" / f"{entry.name}.json",
        progress=ctx.progress,
    )
    ctx.cache[cache_key] = result["baseline"]
    plot_delta_ppl(result, ctx.out / f"{entry.name}.png")
    result["neurons"] = spec.neurons
    return result


def _run_forced(ctx: Context, entry: BenchEntry) -> dict:
    from steer.bench.forced import forced_language
    from steer.bench.plots import plot_forced
    from steer.generation import DEFAULT_FORCE_MODE

    spec: ForcedBench = entry.spec
    result = forced_language(
        ctx.model, ctx.neurons[spec.neurons], ctx.stats, ctx.eval_texts(max(spec.n_prompts, spec.sweep_n_prompts)),
        n_prompts=spec.n_prompts, prompt_words=spec.prompt_words, mode=spec.mode or DEFAULT_FORCE_MODE,
        strength=spec.strength, sweep_modes=spec.sweep_modes, sweep_strengths=spec.sweep_strengths,
        sweep_n_prompts=spec.sweep_n_prompts, sweep_targets=spec.sweep_targets, max_new_tokens=spec.max_new_tokens,
        batch_size=spec.batch_size, fluency=spec.fluency, checkpoint=ctx.out / ".partial" / f"{entry.name}.json",
        progress=ctx.progress,
    )
    plot_forced(result, ctx.out / f"{entry.name}.png")
    result["neurons"] = spec.neurons
    return result


def _run_transfer(ctx: Context, entry: BenchEntry) -> dict:
    from steer.bench.plots import plot_transfer
    from steer.bench.transfer import low_resource_transfer

    spec: TransferBench = entry.spec
    result = low_resource_transfer(
        ctx.model, ctx.neurons[spec.neurons], ctx.eval_texts(spec.n_texts), low_resource=spec.low_resource,
        high_resource=spec.high_resource, factor=spec.factor, n_random=spec.n_random, batch_size=spec.batch_size,
        max_length=spec.max_length, checkpoint=ctx.out / ".partial" / f"{entry.name}.json", progress=ctx.progress,
    )
    plot_transfer(result, ctx.out / f"{entry.name}.png")
    result["neurons"] = spec.neurons
    return result


def _run_layers(ctx: Context, entry: BenchEntry) -> dict:
    from steer.bench.layers import layer_distribution
    from steer.bench.plots import plot_layers, plot_overlap

    result = layer_distribution(ctx.neurons[entry.spec.neurons])
    plot_layers(result, ctx.out / f"{entry.name}.png")
    plot_overlap(result, ctx.out / f"{entry.name}_overlap.png")
    result["neurons"] = entry.spec.neurons
    return result


def _run_compare(ctx: Context, entry: BenchEntry) -> dict:
    from steer.bench.compare import compare_neuron_sets
    from steer.bench.plots import plot_compare

    spec: CompareBench = entry.spec
    result = compare_neuron_sets(ctx.neurons[spec.a], ctx.neurons[spec.b], trained=spec.trained)
    plot_compare(result, ctx.out / f"{entry.name}.png")
    result["a"]["name"], result["b"]["name"] = spec.a, spec.b
    return result


RUNNERS: dict[str, Callable[[Context, BenchEntry], dict]] = {
    "delta_ppl": _run_delta_ppl,
    "forced": _run_forced,
    "transfer": _run_transfer,
    "layers": _run_layers,
    "compare": _run_compare,
}


def bench_key(ctx: Context, entry: BenchEntry) -> str:
    depends = {"model": ctx.keys["model"], "corpus": ctx.keys["corpus"], "kind": entry.kind,
               "spec": dataclasses.asdict(entry.spec), "n_eval": ctx.config.corpus.n_eval,
               "neurons": {n: ctx.keys[f"neurons/{n}"] for n in entry.neuron_names()}}
    if entry.kind == "forced":
        from steer.generation import DEFAULT_FORCE_MODE, DEFAULT_STRENGTH

        depends["stats"] = ctx.keys["stats"]
        depends["defaults"] = [DEFAULT_FORCE_MODE, DEFAULT_STRENGTH]  # a spec without mode/strength uses these
    return stable_hash(depends)


def result_meta(ctx: Context, entry: BenchEntry | None = None) -> dict:
    """What every benchmark file records about where its numbers come from."""
    import steer
    from steer.models import model_info

    names = entry.neuron_names() if entry is not None else list(ctx.neurons)
    return {
        "model": model_info(ctx.model).to_dict(),
        "corpus": {"source": ctx.corpus.source, "fingerprint": ctx.keys["corpus"], "languages": ctx.corpus.languages},
        "stats": {"tokens": dict(zip(ctx.stats.languages, ctx.stats.tokens.tolist())),
                  "params": ctx.stats.meta.get("params")},
        "neurons": {name: {"method": ctx.neurons[name].method, "params": ctx.neurons[name].params} for name in names},
        "steer_version": steer.__version__,
    }


def run_benchmarks(ctx: Context, stages: _Stages) -> dict[str, dict]:
    """Run every benchmark of the config, skipping those whose JSON is there with the same hash."""
    from tqdm.auto import tqdm

    results: dict[str, dict] = {}
    bar = tqdm(ctx.config.benchmarks, desc="benchmarks", unit="bench", disable=not ctx.progress)
    for entry in bar:
        bar.set_postfix_str(entry.name)
        key = bench_key(ctx, entry)
        path = ctx.out / f"{entry.name}.json"
        if path.exists():
            try:
                saved = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                saved = {}
            if saved.get("config_hash") == key and _figures_present(ctx.out, entry):
                if "meta" not in saved:
                    saved["meta"] = result_meta(ctx, entry)
                    write_json_atomic(path, saved)
                results[entry.name] = saved
                stages.resumed.append(entry.name)
                continue
        started = time.perf_counter()
        result = RUNNERS[entry.kind](ctx, entry)
        seconds = time.perf_counter() - started
        result["config_hash"] = key
        result["seconds"] = round(seconds, 2)
        result["meta"] = result_meta(ctx, entry)
        write_json_atomic(path, result)
        stages.record(entry.name, seconds, key)
        for partial in (ctx.out / ".partial").glob(f"{entry.name}.json"):
            partial.unlink()
        results[entry.name] = result
    return results


def figures(entry: BenchEntry) -> list[str]:
    names = [f"{entry.name}.png"]
    if entry.kind == "layers":
        names.append(f"{entry.name}_overlap.png")
    return names


def _figures_present(out: Path, entry: BenchEntry) -> bool:
    return all((out / name).exists() for name in figures(entry))


def sections(config: BenchConfig, results: dict[str, dict]) -> list[str]:
    from steer.bench import report
    from steer.bench.compare import compare_markdown

    out = []
    for entry in config.benchmarks:
        result = results.get(entry.name)
        if result is None:
            continue
        figs = figures(entry)
        if entry.kind == "delta_ppl":
            out.append(report.delta_ppl_section(result, figs[0]))
        elif entry.kind == "forced":
            out.append(report.forced_section(result, figs[0]))
        elif entry.kind == "transfer":
            out.append(report.transfer_section(result, figs[0]))
        elif entry.kind == "layers":
            out.append(report.layers_section(result, figs[0], figs[1]))
        elif entry.kind == "compare":
            out.append(compare_markdown(result, figs[0]))
    return out


def preamble(ctx: Context) -> str:
    from steer.models import model_info

    info = model_info(ctx.model)
    tokens = dict(zip(ctx.stats.languages, ctx.stats.tokens.tolist()))
    sets = "; ".join(f"{name}: {n.method} {json.dumps(n.params, default=str)} ({len(n)} neurons)"
                     for name, n in ctx.neurons.items())
    return (
        f"Model: {info.name} ({info.n_layers} layers × {info.d_mlp} MLP neurons, weights {info.weights_hash}). "
        f"Corpus: {ctx.corpus.source or 'in-memory'}, languages {', '.join(ctx.corpus.languages)}. "
        f"Activation stats: {sum(tokens.values())} tokens ({min(tokens.values())}–{max(tokens.values())} per language). "
        f"Neuron sets: {sets}. Δ log-PPL is the change in mean per-token negative log-likelihood (nats); "
        f"e^Δ is the PPL ratio."
    )


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with `threads` torch CPU threads (None: leave the setting alone)."""
    import torch

    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def execute(config: BenchConfig, out: str | Path, *, model=None, corpus=None, progress: bool = True):
    """Prepare and run every benchmark; returns (context, results, stages). Used by run_bench and run_demo."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", config.to_dict())
    stages = _Stages(out)
    ctx = prepare(config, out, model=model, corpus=corpus, progress=progress, stages=stages)
    results = run_benchmarks(ctx, stages)
    return ctx, results, stages


def run_bench(config: str | Path | BenchConfig, out: str | Path, *, model=None, corpus=None,
              progress: bool = True, threads: int | None = None) -> dict[str, dict]:
    """Run a benchmark config into `out` (resumable); returns {benchmark name: result dict}.

    `config`: a TOML path or a `BenchConfig`. `model` / `corpus`: an already loaded model (or a
    model name / folder) or corpus to use instead of the config's (their content still enters
    every hash, so results are never mixed up). `threads`: torch CPU threads for the run.
    """
    from steer.bench.report import write_report

    config = load_config(config) if isinstance(config, (str, Path)) else config
    with torch_threads(threads):
        ctx, results, stages = execute(config, out, model=model, corpus=corpus, progress=progress)
    started = time.perf_counter()
    write_report(out, sections(config, results), title=config.title, preamble=preamble(ctx))
    stages.record("report", time.perf_counter() - started)
    return results
