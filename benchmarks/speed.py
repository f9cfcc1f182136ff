"""Speed of steer against the bare model, measured side by side in one run (ratios, not timings).

    python benchmarks/speed.py [--random-weights] [--json PATH] [--device cuda --dtype bfloat16]

1. collection: `steer.collect` tokens/s ÷ a bare HF forward through the decoder layers only (no
   unembedding) on the very same batches of real corpus text;
2. steered generation: `steer.generate` under a deactivation of one language's neurons, new tokens/s
   ÷ plain HF `generate` (default attention, KV cache, no hooks), at batch 1 and batch 8;
3. unsteered `steer.generate` ÷ the same HF baseline;
4. peak memory of collection at two corpus sizes (each in a fresh process);
5. achieved fraction of the machine's fp32 (or --dtype) matmul rate, for the bare forward and collect.

Each figure is the median of --repeats runs after a warm-up; the two sides of a ratio alternate.
`--random-weights` builds Gemma 3 270M's architecture with random weights (same cost per token),
for machines where the embedded weights are not installed.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def model_folder(random_weights: bool) -> str:
    if random_weights:
        from steer.testing import random_gemma_dir

        return str(random_gemma_dir())
    from steer.models import embedded_model_dir

    return str(embedded_model_dir())


def corpus_texts(n_per_language: int, languages: list[str]) -> dict[str, list[str]]:
    import steer

    corpus = steer.load_corpus(progress=False)
    return {lang: corpus.stats[lang][:n_per_language] for lang in languages}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, run in alternation after one warm-up each."""
    for fn in fns.values():
        fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in samples.items()}


def matmul_flops(dtype: torch.dtype, device: str, size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def decoder_flops_per_token(hf_model) -> float:
    """2 × the parameters of the decoder layers (attention's quadratic term is small at these lengths)."""
    layers = hf_model.model.layers
    return 2.0 * sum(p.numel() for p in layers.parameters())


def bench_collect(folder, texts, args, model, baseline):
    import steer
    from steer.collection import plan_batches

    batches = plan_batches(model.tokenizer, texts, list(texts), batch_size=args.batch_size, max_length=args.max_length,
                           include_bos=False)
    tokens = sum(int(b.attention_mask.sum()) for b in batches)
    device = args.device

    def bare():
        with torch.inference_mode():
            for batch in batches:
                baseline.model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))
        _sync(device)

    def steer_collect():
        steer.collect(model, texts, batch_size=args.batch_size, max_length=args.max_length, progress=False)
        _sync(device)

    seconds = alternate({"bare": bare, "collect": steer_collect}, args.repeats)
    return tokens, seconds


def bench_generate(texts, args, model, baseline, neurons, batch_size):
    import steer
    from steer.tokens import left_pad

    language = neurons.languages[1]
    prompts = [" ".join(t.split()[:8]) for lang in texts for t in texts[lang]][:batch_size]
    tokenizer = model.tokenizer
    device = args.device
    n_new = args.new_tokens
    input_ids, attention_mask = left_pad([tokenizer(p)["input_ids"] for p in prompts], tokenizer.pad_token_id)
    spec = steer.Intervention("suppress", languages=[language])

    def hf_generate():
        with torch.inference_mode():
            baseline.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), max_new_tokens=n_new,
                              min_new_tokens=n_new, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        _sync(device)

    def steered():
        steer.generate(model, prompts, interventions=[spec], neurons=neurons, max_new_tokens=n_new,
                       min_new_tokens=n_new, batch_size=batch_size)
        _sync(device)

    def unsteered():
        steer.generate(model, prompts, max_new_tokens=n_new, min_new_tokens=n_new, batch_size=batch_size)
        _sync(device)

    seconds = alternate({"hf": hf_generate, "steered": steered, "unsteered": unsteered}, args.repeats)
    return len(prompts) * n_new, seconds


def peak_memory_child(folder: str, n_per_language: int, languages: list[str], batch_size: int, max_length: int) -> None:
    """Run in a fresh process: print the peak RSS growth (MB) of one collection."""
    import steer

    texts = corpus_texts(n_per_language, languages)
    model = steer.load_model(folder)
    steer.collect(model, {lang: texts[lang][:1] for lang in languages}, progress=False)  # warm-up allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats = steer.collect(model, texts, batch_size=batch_size, max_length=max_length, progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"tokens": int(stats.tokens.sum()), "peak_growth_mb": (after - before) / 1024}))


def bench_memory(folder, args, sizes):
    results = []
    for size in sizes:
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import speed; "
                f"speed.peak_memory_child({folder!r}, {size}, {args.languages!r}, {args.batch_size}, {args.max_length})")
        output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--languages", default="en,de,ja,km")
    parser.add_argument("--texts-per-language", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.languages = args.languages.split(",")
    dtype = getattr(torch, args.dtype)

    import steer
    from transformers import AutoModelForCausalLM

    folder = model_folder(args.random_weights)
    texts = corpus_texts(args.texts_per_language, args.languages)
    model = steer.load_model(folder, device=args.device, dtype=dtype)
    baseline = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(args.device).eval()

    tokens, collect_s = bench_collect(folder, texts, args, model, baseline)
    stats = steer.collect(model, texts, batch_size=args.batch_size, progress=False)
    neurons = steer.identify(stats, method="zhang2025")
    generation = {b: bench_generate(texts, args, model, baseline, neurons, b) for b in (1, 8)}
    peak = matmul_flops(dtype, args.device)
    per_token = decoder_flops_per_token(baseline)
    memory = [] if args.skip_memory else bench_memory(folder, args, [args.texts_per_language // 4, args.texts_per_language])

    figures = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "dtype": args.dtype, "weights": "random" if args.random_weights else "gemma-3-270m",
        "collect_tokens": tokens,
        "bare_forward_tok_s": tokens / collect_s["bare"], "collect_tok_s": tokens / collect_s["collect"],
        "collect_ratio": collect_s["bare"] / collect_s["collect"],
    }
    for b, (new_tokens, seconds) in generation.items():
        figures[f"hf_generate_tok_s_b{b}"] = new_tokens / seconds["hf"]
        figures[f"generate_ratio_b{b}"] = seconds["hf"] / seconds["steered"]
        figures[f"unsteered_generate_ratio_b{b}"] = seconds["hf"] / seconds["unsteered"]
    figures["matmul_flops"] = peak
    figures["bare_forward_mfu"] = figures["bare_forward_tok_s"] * per_token / peak
    figures["collect_mfu"] = figures["collect_tok_s"] * per_token / peak
    figures["collect_memory"] = memory

    rows = [
        ("collect ÷ bare decoder forward (tokens/s)", figures["collect_ratio"], 0.9),
        ("steered generate ÷ HF generate, batch 1", figures["generate_ratio_b1"], 0.9),
        ("steered generate ÷ HF generate, batch 8", figures["generate_ratio_b8"], 0.9),
        ("unsteered generate ÷ HF generate, batch 1", figures["unsteered_generate_ratio_b1"], None),
        ("unsteered generate ÷ HF generate, batch 8", figures["unsteered_generate_ratio_b8"], None),
        ("bare forward: fraction of matmul peak", figures["bare_forward_mfu"], None),
        ("collect: fraction of matmul peak", figures["collect_mfu"], None),
    ]
    print(f"\nsteer speed — {figures['device']} ({figures['cpu']}, {figures['threads']} threads), {args.dtype}, "
          f"{figures['weights']} weights, {tokens} tokens, median of {args.repeats}")
    print("| figure | ratio | goal |\n|---|---|---|")
    for name, value, goal in rows:
        print(f"| {name} | {value:.2f} | {'≥ %.1f' % goal if goal else ''} |")
    print(f"| bare forward tokens/s | {figures['bare_forward_tok_s']:.0f} | |")
    print(f"| HF generate new tokens/s, b1 / b8 | {figures['hf_generate_tok_s_b1']:.1f} / {figures['hf_generate_tok_s_b8']:.1f} | |")
    for entry in memory:
        print(f"| collection peak RSS growth at {entry['tokens']} tokens | {entry['peak_growth_mb']:.0f} MB | flat |")
    if args.json:
        from steer._io import write_json_atomic

        write_json_atomic(args.json, figures)


if __name__ == "__main__":
    main()
