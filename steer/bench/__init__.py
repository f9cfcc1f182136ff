"""Benchmarks of language neurons: perplexity under deactivation (the ΔPPL matrix), forced-language
generation, low-resource transfer, layer distribution, before/after comparison; report writing.

    from steer.bench import run_demo, run_bench, compare_neuron_sets, write_compare_report
    run_demo("demo_out")                         # the end-to-end demo: summary.json + report.md
    run_bench("benchmarks/demo.toml", "out")     # any TOML config, resumable
"""

from steer.bench.compare import compare_markdown, compare_neuron_sets, write_compare_report
from steer.bench.config import BenchConfig, load_config, run_bench
from steer.bench.delta_ppl import delta_ppl_matrix
from steer.bench.demo import demo_config, run_demo
from steer.bench.forced import forced_language
from steer.bench.layers import four_stages, layer_distribution
from steer.scoring import perplexity, token_nll
from steer.bench.transfer import low_resource_transfer

__all__ = [
    "BenchConfig",
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
    "run_bench",
    "run_demo",
    "token_nll",
    "write_compare_report",
]
