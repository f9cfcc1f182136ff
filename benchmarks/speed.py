"""Speed of steer against the bare model, measured side by side in one run (ratios, not timings).

    python benchmarks/speed.py [--shape gemma-270m|llama-1b|llama-8b|moe-small|olmoe-1b-7b] [--random-weights]
                               [--json PATH]
                               [--device cuda --dtype bfloat16] [--batch-size N | --tokens-per-batch N]

1. collection: `steer.collect` tokens/s ÷ a bare HF forward through the decoder layers only (no
   unembedding) on the very same batches of real corpus text;
2. steered generation: `steer.generate` under a deactivation of one language's neurons, new tokens/s
   ÷ plain HF `generate` (default attention, KV cache, no hooks), at batch 1, 8 and 32;
3. unsteered `steer.generate` ÷ the same HF baseline;
4. peak memory of collection at two corpus sizes (each in a fresh process);
5. achieved fraction of the machine's fp32 (or --dtype) matmul rate, for the bare forward and collect.

Each figure is the median of --repeats runs after a warm-up; the two sides of a ratio alternate.
`--shape gemma-270m` (default) runs the embedded weights (`--random-weights`: Gemma 3 270M's
architecture with random weights, same cost per token); `llama-1b` and `llama-8b` build random
weights at Llama-3.2-1B's / Llama-3.1-8B's shape directly on the device, in the dtype (the text is
then tokenised byte by byte: token ids stay small, the cost of a token is the shape's). The
mixture-of-experts shapes do the same: `olmoe-1b-7b` is OLMoE-1B-7B's shape (64 experts, top 8; a GPU's
worth of memory), `moe-small` a Qwen3-MoE-like shape small enough for a CPU (32 experts of 512 neurons,
top 4, 8 layers); there steer counts every expert neuron over its routed tokens, so the collection ratio
measures the expert taps (`steer.models.experts`) against the bare MoE forward.
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


# What a ratio of steer to the bare model should reach (collection and steered generation).
GOAL = 0.9

# Llama shapes (hidden, intermediate, layers, heads, kv heads, vocabulary, as the published configs).
LLAMA_SHAPES = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}

# Mixture-of-experts shapes (random weights): (model type, config), as the published configs or scaled down.
MOE_SHAPES = {
    "moe-small": ("qwen3_moe", dict(hidden_size=1024, intermediate_size=2816, moe_intermediate_size=512,
                                    num_experts=32, num_experts_per_tok=4, num_hidden_layers=8, num_attention_heads=16,
                                    num_key_value_heads=4, head_dim=64, vocab_size=32000, norm_topk_prob=True,
                                    tie_word_embeddings=True, architectures=["Qwen3MoeForCausalLM"])),
    "olmoe-1b-7b": ("olmoe", dict(hidden_size=2048, intermediate_size=1024, num_experts=64, num_experts_per_tok=8,
                                  num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=16,
                                  vocab_size=50304, tie_word_embeddings=False, architectures=["OlmoeForCausalLM"])),
}


def build_models(args, dtype):
    """(steer model, bare HF baseline): two copies of the same weights, the baseline never wrapped."""
    import steer
    from transformers import AutoModelForCausalLM

    if args.shape == "gemma-270m":
        folder = model_folder(args.random_weights)
        model = steer.load_model(folder, device=args.device, dtype=dtype)
        baseline = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(args.device).eval()
        return model, baseline
    from transformers import LlamaConfig

    from steer.models import wrap_model
    from steer.testing import byte_tokenizer

    from transformers import AutoTokenizer

    from steer._io import cache_root

    folder = cache_root() / "random" / "byte-tokenizer"  # TransformerLens re-reads a tokenizer from its folder
    if not (folder / "tokenizer.json").exists():
        byte_tokenizer().save_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if args.shape in MOE_SHAPES:
        from transformers import AutoConfig

        model_type, settings = MOE_SHAPES[args.shape]
        config = AutoConfig.for_model(model_type, **settings, max_position_embeddings=8192, bos_token_id=1,
                                      eos_token_id=2, pad_token_id=0, hidden_act="silu")
    else:
        config = LlamaConfig(**LLAMA_SHAPES[args.shape], max_position_embeddings=8192, rope_theta=500000.0,
                             bos_token_id=1, eos_token_id=2, pad_token_id=0, hidden_act="silu")
    copies = []
    for _ in range(2):
        torch.manual_seed(0)
        with torch.device(args.device):
            copies.append(AutoModelForCausalLM.from_config(config, dtype=dtype).eval())
    return wrap_model(copies[0], tokenizer, name=f"{args.shape}-random"), copies[1]


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
    """2 × the parameters of the decoder layers a token uses (attention's quadratic term is small at these
    lengths): of a mixture of experts' stacked expert weights, only its top-k experts' share."""
    config = hf_model.config
    experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)
    share = config.num_experts_per_tok / experts if experts else 1.0
    layers = hf_model.model.layers
    return 2.0 * sum(p.numel() * (share if p.ndim == 3 else 1.0) for p in layers.parameters())


def bench_collect(texts, args, model, baseline):
    import steer
    from steer.collection import plan_batches

    batches = plan_batches(model.tokenizer, texts, list(texts), batch_size=args.batch_size, max_length=args.max_length,
                           include_bos=False, tokens_per_batch=args.tokens_per_batch)
    tokens = sum(int(b.attention_mask.sum()) for b in batches)
    device = args.device

    def bare():
        with torch.inference_mode():
            for batch in batches:
                baseline.model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))
        _sync(device)

    def steer_collect():
        steer.collect(model, texts, batch_size=args.batch_size, tokens_per_batch=args.tokens_per_batch,
                      max_length=args.max_length, progress=False)
        _sync(device)

    seconds = alternate({"bare": bare, "collect": steer_collect}, args.repeats)
    return tokens, seconds


def bench_generate(texts, args, model, baseline, neurons, batch_size):
    import steer
    from steer.tokens import left_pad

    sizes = neurons.membership.flatten(1).sum(1)  # the language with the most neurons (random weights may give some none)
    language = neurons.languages[int(sizes.argmax())]
    pool = [" ".join(t.split()[:8]) for lang in texts for t in texts[lang]]
    prompts = (pool * (1 + batch_size // max(1, len(pool))))[:batch_size]
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
    parser.add_argument("--shape", default="gemma-270m", choices=["gemma-270m", *LLAMA_SHAPES, *MOE_SHAPES])
    parser.add_argument("--random-weights", action="store_true", help="gemma-270m: random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--languages", default="en,de,ja,km")
    parser.add_argument("--texts-per-language", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=None, help="texts per collection batch (default 16 "
                        "without --tokens-per-batch)")
    parser.add_argument("--tokens-per-batch", type=int, default=None, help="padded tokens per collection batch")
    parser.add_argument("--generate-batches", default="1,8,32")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.json is not None:  # before measuring: a new file, or one this script wrote
        from steer._io import check_out_file, is_steer_json

        check_out_file(args.json, is_steer_json, what="result file", option="--json")
    args.languages = args.languages.split(",")
    if args.batch_size is None and args.tokens_per_batch is None:
        args.batch_size = 16
    dtype = getattr(torch, args.dtype)

    import steer

    texts = corpus_texts(args.texts_per_language, args.languages)
    model, baseline = build_models(args, dtype)
    tokens, collect_s = bench_collect(texts, args, model, baseline)
    stats = steer.collect(model, texts, batch_size=args.batch_size, tokens_per_batch=args.tokens_per_batch,
                          progress=False)
    neurons = steer.identify(stats, method="zhang2025")
    if neurons.membership.sum() == 0:  # random weights can leave zhang2025 nothing language-specific
        neurons = steer.identify(stats, method="specificity")
    batch_sizes = [int(b) for b in args.generate_batches.split(",")]
    generation = {b: bench_generate(texts, args, model, baseline, neurons, b) for b in batch_sizes}
    peak = matmul_flops(dtype, args.device)
    per_token = decoder_flops_per_token(baseline)
    memory = [] if args.skip_memory or args.shape != "gemma-270m" else bench_memory(
        model_folder(args.random_weights), args, [args.texts_per_language // 4, args.texts_per_language])

    figures = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "dtype": args.dtype, "shape": args.shape,
        "weights": "random" if args.random_weights or args.shape != "gemma-270m" else "gemma-3-270m",
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
    figures["bare_forward_tflops"] = figures["bare_forward_tok_s"] * per_token / 1e12
    figures["collect_tflops"] = figures["collect_tok_s"] * per_token / 1e12
    figures["collect_memory"] = memory

    figures["goal"] = GOAL
    figures["repeats"] = args.repeats
    figures["batching"] = {"batch_size": args.batch_size, "tokens_per_batch": args.tokens_per_batch,
                           "languages": args.languages, "texts_per_language": args.texts_per_language,
                           "max_length": args.max_length, "new_tokens": args.new_tokens}

    rows = [("collect ÷ bare decoder forward (tokens/s)", figures["collect_ratio"], GOAL)]
    rows += [(f"steered generate ÷ HF generate, batch {b}", figures[f"generate_ratio_b{b}"], GOAL) for b in batch_sizes]
    rows += [(f"unsteered generate ÷ HF generate, batch {b}", figures[f"unsteered_generate_ratio_b{b}"], None)
             for b in batch_sizes]
    rows += [("bare forward: fraction of matmul peak", figures["bare_forward_mfu"], None),
             ("collect: fraction of matmul peak", figures["collect_mfu"], None)]
    batching = f"batch {args.batch_size}" if args.tokens_per_batch is None else f"{args.tokens_per_batch} tokens/batch"
    print(f"\nsteer speed — {figures['device']} ({figures['cpu']}, {figures['threads']} threads), {args.dtype}, "
          f"{args.shape} ({figures['weights']} weights), {tokens} tokens, {batching}, median of {args.repeats}")
    print("| figure | ratio | goal |\n|---|---|---|")
    for name, value, goal in rows:
        print(f"| {name} | {value:.2f} | {'≥ %.1f' % goal if goal else ''} |")
    print(f"| bare forward / collect TFLOP/s | {figures['bare_forward_tflops']:.3f} / {figures['collect_tflops']:.3f} | |")
    print(f"| bare forward tokens/s | {figures['bare_forward_tok_s']:.0f} | |")
    print("| HF generate new tokens/s, " + " / ".join(f"b{b}" for b in batch_sizes) + " | "
          + " / ".join(f"{figures[f'hf_generate_tok_s_b{b}']:.1f}" for b in batch_sizes) + " | |")
    for entry in memory:
        print(f"| collection peak RSS growth at {entry['tokens']} tokens | {entry['peak_growth_mb']:.0f} MB | flat |")
    if args.json:
        import datetime
        import os

        from steer._io import file_header, write_json_atomic
        from steer.provenance import command_line, provenance

        machine = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count()}
        write_json_atomic(args.json, {**provenance(command_line()), **file_header(),
                                      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                      "machine": machine, **figures})


if __name__ == "__main__":
    main()
