"""The runner: one model load, one stats file, every benchmark of a config, resumable.

`run_bench(config, out)` writes, into `out`: `stats/`, `neurons/<name>.json`, one `<bench>.json`
per benchmark with its figure(s) `<bench>.png`, `stages.json` (the seconds of each stage) and
`report.md`. Resuming follows one rule (`steer.bench._common.read_keyed`): saved work is reused
only when it records the hash of the inputs it was made from and that hash matches. Each
benchmark's JSON records the hash of everything it depends on (`config_hash`); a rerun skips it
when the hash matches and redoes it otherwise; an unfinished benchmark resumes mid-way from its
units in `out/.partial/<bench>.json`, and the stats in `out/stats` are reused when their
`bench_key` matches.

What a benchmark is (its spec, run, figures and report section) comes from its record in
`steer.bench.registry`; the runner knows no kind by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from steer._io import file_header, prepare_out, remove_owned, write_json_atomic
from steer.bench._common import neuron_fingerprint, read_json, read_keyed, stable_hash
from steer.bench.registry import Context, Job, get
from steer.bench.report import write_report
from steer.bench.schema import BenchConfig, BenchEntry, load_config
from steer.collection import collect
from steer.corpus import load_corpus
from steer.identification import identify
from steer.models import EMBEDDED_MODEL, load_model, model_info
from steer.neurons import NeuronSet
from steer.stats import ActivationStats


class Stages:
    """`out/stages.json`: per stage its hash and seconds; `resumed`: the benchmarks this run reused."""

    def __init__(self, out: Path):
        self.path = out / "stages.json"
        self.data: dict[str, dict] = read_json(self.path)
        self.resumed: list[str] = []

    def record(self, stage: str, seconds: float, key: str | None = None) -> None:
        self.data[stage] = {"seconds": round(seconds, 2), "hash": key}
        write_json_atomic(self.path, self.data)

    def seconds(self) -> dict[str, float]:
        return {stage: entry["seconds"] for stage, entry in self.data.items()}


def _resolve_path(config: BenchConfig, path: str) -> Path:
    return config.resolve(path)


def config_inputs(config: BenchConfig) -> list[Path]:
    """What a run of `config` reads from disk (its output must not overlap any of it)."""
    return config.input_paths()


def _load_corpus(config: BenchConfig, corpus=None):
    """The run's corpus (the config's unless one is given), after every language the config names is checked
    against it: before any model is loaded."""
    if corpus is None:
        source = config.corpus.source
        if not source.startswith("libreoffice"):
            source = str(_resolve_path(config, source))
        corpus = load_corpus(source, progress=False)
    config.check_languages(list(corpus.languages))
    languages = config.corpus.languages or list(corpus.languages)
    corpus = corpus.subset(languages, max_stats=config.corpus.max_stats, max_eval=config.corpus.n_eval)
    for entry in config.benchmarks:  # what a benchmark needs of the corpus (e.g. enough held-out text)
        check = getattr(entry.spec, "check_corpus", None)
        if check is not None:
            check(corpus, f"[bench.{entry.kind}] {entry.name}")
    return corpus


def _load_model(config: BenchConfig, model=None):
    if model is not None and not isinstance(model, (str, Path)):
        return model
    name = str(model) if model is not None else config.model.name
    if name != EMBEDDED_MODEL and not name.startswith(("/", "~")) and Path(name).exists() is False:
        candidate = config.base_dir / name
        name = str(candidate) if candidate.exists() else name
    return load_model(name, device=config.model.device, dtype=config.model.dtype, device_map=config.model.device_map)


def prepare(config: BenchConfig, out: Path, *, model=None, corpus=None, progress: bool = True,
            stages: Stages | None = None) -> Context:
    """Load the model and corpus, collect (or load / reuse) the stats, identify (or load) the neuron sets."""
    stages = stages or Stages(out)
    started = time.perf_counter()
    corpus = _load_corpus(config, corpus)  # first: its languages are checked before the model loads
    stages.record("corpus", time.perf_counter() - started)
    started = time.perf_counter()
    model = _load_model(config, model)
    stages.record("load_model", time.perf_counter() - started)
    info = model_info(model)
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
            remove_owned(out / ".partial" / f"collect-{keys['stats']}")
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
                                                   "content": neuron_fingerprint(neurons[name])})
        else:
            neurons[name] = identify(stats, method=spec.method, **spec.params)
            keys[f"neurons/{name}"] = stable_hash({"stats": keys["stats"], "method": spec.method, "params": spec.params})
            neurons[name].save(out / "neurons" / f"{name}.json")
    stages.record("identify", time.perf_counter() - started)
    return Context(config, out, model, corpus, stats, neurons, keys, progress)


def job(ctx: Context, entry: BenchEntry) -> Job:
    """The paths of one benchmark of the run: its figures in `out`, its checkpoint in `out/.partial`."""
    return Job(entry.name, [ctx.out / name for name in get(entry.kind).figure_names(entry.name)],
               ctx.out / ".partial" / f"{entry.name}.json")


def bench_key(ctx: Context, entry: BenchEntry) -> str:
    """The hash of everything a benchmark's result depends on (recorded in its JSON as `config_hash`)."""
    depends = {"model": ctx.keys["model"], "corpus": ctx.keys["corpus"], "kind": entry.kind,
               "spec": dataclasses.asdict(entry.spec), "n_eval": ctx.config.corpus.n_eval,
               "neurons": {n: ctx.keys[f"neurons/{n}"] for n in entry.neuron_names()}}
    record = get(entry.kind)
    if record.key is not None:
        depends.update(record.key(ctx))
    return stable_hash(depends)


def result_meta(ctx: Context, entry: BenchEntry | None = None) -> dict:
    """What every benchmark file records about where its numbers come from."""
    names = entry.neuron_names() if entry is not None else list(ctx.neurons)
    return file_header(
        ctx.model,
        corpus={"source": ctx.corpus.source, "fingerprint": ctx.keys["corpus"], "languages": ctx.corpus.languages},
        stats={"tokens": dict(zip(ctx.stats.languages, ctx.stats.tokens.tolist())),
               "params": ctx.stats.meta.get("params")},
        neurons={name: {"method": ctx.neurons[name].method, "params": ctx.neurons[name].params} for name in names},
    )


def run_benchmarks(ctx: Context, stages: Stages) -> dict[str, dict]:
    """Run every benchmark of the config, skipping those whose JSON is there with the same hash."""
    results: dict[str, dict] = {}
    bar = tqdm(ctx.config.benchmarks, desc="benchmarks", unit="bench", disable=not ctx.progress)
    for entry in bar:
        bar.set_postfix_str(entry.name)
        key = bench_key(ctx, entry)
        paths = job(ctx, entry)
        path = ctx.out / f"{entry.name}.json"
        saved = read_keyed(path, key, "config_hash")
        if saved is not None and all(figure.exists() for figure in paths.figures):
            if "meta" not in saved:
                saved["meta"] = result_meta(ctx, entry)
                write_json_atomic(path, saved)
            results[entry.name] = saved
            stages.resumed.append(entry.name)
            continue
        started = time.perf_counter()
        result = get(entry.kind).run(ctx, entry.spec, paths)
        seconds = time.perf_counter() - started
        result["config_hash"] = key
        result["seconds"] = round(seconds, 2)
        result["meta"] = result_meta(ctx, entry)
        write_json_atomic(path, result)
        stages.record(entry.name, seconds, key)
        remove_owned(paths.checkpoint)
        results[entry.name] = result
    return results


def figures(entry: BenchEntry) -> list[str]:
    """The file names of a benchmark's figures (beside its JSON)."""
    return get(entry.kind).figure_names(entry.name)


def sections(config: BenchConfig, results: dict[str, dict]) -> list[str]:
    """The report.md section of every benchmark of `config` that has a result, in config order."""
    return [get(entry.kind).section(results[entry.name], figures(entry))
            for entry in config.benchmarks if entry.name in results]


def preamble(ctx: Context) -> str:
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


def execute(config: BenchConfig, out: str | Path, *, model=None, corpus=None, progress: bool = True,
            verb: str = "bench"):
    """Prepare and run every benchmark; returns (context, results, stages). Used by run_bench and run_demo."""
    config.model.check("[model]")  # again: the command line may have changed it
    config.check_files(corpus=corpus is None)
    out = prepare_out(out, verb, inputs=config_inputs(config))
    corpus = _load_corpus(config, corpus)  # its languages checked against the config's before anything is written
    write_json_atomic(out / "config.json", config.to_dict())
    stages = Stages(out)
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
    config = load_config(config) if isinstance(config, (str, Path)) else config
    prepare_out(out, "bench", inputs=config_inputs(config))  # before loading anything
    with torch_threads(threads):
        ctx, results, stages = execute(config, out, model=model, corpus=corpus, progress=progress)
    started = time.perf_counter()
    write_report(out, sections(config, results), title=config.title, preamble=preamble(ctx))
    stages.record("report", time.perf_counter() - started)
    return results
