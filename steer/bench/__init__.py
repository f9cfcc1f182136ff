"""Benchmarks of language neurons: perplexity under deactivation (the ΔPPL matrix), forced-language
generation, low-resource transfer, layer distribution, before/after comparison; report writing.

    from steer.bench import run_demo, run_bench, compare_neuron_sets, write_compare_report
    run_demo("demo_out")                         # the end-to-end demo (demo.toml): summary.json + report.md
    run_bench("my_bench.toml", "out")            # any TOML config, resumable

Each kind of benchmark is one module registering its spec, run, figures and report section
(`steer.bench.registry`); `steer.bench.schema` reads configs, `steer.bench.runner` runs them.
"""

from steer.bench.compare import compare_markdown, compare_neuron_sets, write_compare_report
from steer.bench.delta_ppl import ablate_language, delta_ppl_matrix
from steer.bench.demo import demo_config, run_demo
from steer.bench.forced import forced_language
from steer.bench.layers import four_stages, layer_distribution
from steer.bench.registry import Benchmark, benchmarks, register
from steer.bench.runner import run_bench
from steer.bench.schema import BenchConfig, load_config
from steer.bench.transfer import low_resource_transfer
from steer.scoring import perplexity, token_nll

__all__ = [
    "BenchConfig",
    "Benchmark",
    "ablate_language",
    "benchmarks",
    "compare_markdown",
    "compare_neuron_sets",
    "delta_ppl_matrix",
    "demo_config",
    "forced_language",
    "four_stages",
    "layer_distribution",
    "load_config",
    "low_resource_transfer",
    "perplexity",
    "register",
    "run_bench",
    "run_demo",
    "token_nll",
    "write_compare_report",
]
