"""The `steer` command: a thin layer over the API (each subcommand writes into --out)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (argparse turns the error into one line naming the option)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def steps_arg(text: str) -> int | str:
    """argparse type of --steps: 'all' (every step) or a whole number of at least 1."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'all' or a positive integer, got {text!r}") from None


def _model_options(parser, *, model: bool = True, device: str = "auto", dtype: str = "auto") -> None:
    """--model (unless the verb names its models otherwise), --device, --dtype and --device-map."""
    if model:
        parser.add_argument("--model", default=None, help="gemma-3-270m (default), a folder or an HF id")
    parser.add_argument("--device", default=device, help=f"auto (a GPU when there is one), cpu, cuda or cuda:N "
                        f"(default {device}; under torchrun cuda means cuda:LOCAL_RANK)")
    parser.add_argument("--dtype", default=dtype, help=f"auto (bfloat16 on a GPU, float32 on a CPU), float32, "
                        f"bfloat16 or float16 (default {dtype})")
    parser.add_argument("--device-map", help="'auto' (or balanced, sequential) to spread a model too large for one "
                        "GPU over the GPUs (and CPU) with accelerate")


def _load(args, name=None):
    import steer

    return steer.load_model(name if name is not None else args.model, device=args.device, dtype=args.dtype,
                            device_map=args.device_map)


def _languages(text: str | None, option: str = "--languages") -> list[str] | None:
    """A comma list of language codes, each validated and normalised (`steer.languages.normalise_codes`)."""
    from steer.languages import normalise_codes

    if text is None:
        return None
    codes = [part for part in text.split(",") if part.strip()]
    if not codes:
        raise ValueError(f"{option} is empty; give comma-separated language codes, e.g. en,de")
    return normalise_codes(codes, what=option)


def _local(name) -> str | None:
    """`name` when it is a local path (a model or corpus folder the run reads), else None."""
    return name if name is not None and Path(str(name)).expanduser().exists() else None


def cmd_corpus_build(args) -> None:
    from steer._io import prepare_out
    from steer.corpus import Corpus, build_libreoffice
    from steer.languages import DEFAULT_LANGUAGES

    languages = _languages(args.languages)
    prepare_out(args.out, "corpus build", inputs=[args.from_dir, args.jsonl])  # before building anything
    if (args.from_dir or args.jsonl) and (args.min_chars is not None or args.n_eval is not None):
        raise ValueError("--min-chars and --n-eval apply to the LibreOffice corpus only; leave them out with "
                         "--from-dir or --jsonl")
    if args.from_dir:
        corpus = Corpus.from_text_dir(args.from_dir, languages=languages)
    elif args.jsonl:
        corpus = Corpus.from_jsonl(args.jsonl, languages=languages)
    else:
        corpus = build_libreoffice(languages or DEFAULT_LANGUAGES,
                                   min_chars=40 if args.min_chars is None else args.min_chars,
                                   n_eval=200 if args.n_eval is None else args.n_eval)
    corpus.save(args.out)
    counts = corpus.counts()
    print(f"corpus ({corpus.source}) -> {args.out}")
    for lang in corpus.languages:
        print(f"  {lang:6s} stats {counts[lang]['stats']:6d}  eval {counts[lang]['eval']:4d}")


def cmd_collect(args) -> None:
    import os

    import steer
    from steer._io import prepare_out
    from steer.collection import clear_checkpoint

    languages = _languages(args.languages)
    out = prepare_out(args.out, "collect", inputs=[args.corpus, _local(args.model)])  # before loading anything
    corpus = steer.load_corpus(args.corpus)  # before the model: a bad corpus is found in a moment
    missing = [lang for lang in languages or [] if lang not in corpus.languages]
    if missing:
        raise ValueError(f"--languages: the corpus has no language {missing}; it has {', '.join(corpus.languages)}")
    model = _load(args)
    stats = steer.collect(
        model, corpus, languages=languages, batch_size=args.batch_size,
        tokens_per_batch=args.tokens_per_batch,
        max_length=args.max_length, max_tokens_per_language=args.max_tokens_per_language, sq_sums=args.sq_sums,
        checkpoint=out / "checkpoint",
    )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank holds the full stats
        stats.save(out)
        clear_checkpoint(out / "checkpoint", int(stats.meta.get("world_size", 1)))
        print(f"stats for {len(stats.languages)} languages, {int(stats.tokens.sum())} tokens -> {out}")


def cmd_identify(args) -> None:
    import steer
    from steer.neurons import check_neurons_out, layer_concentration

    check_neurons_out(args.out, inputs=[args.stats])  # before reading anything
    stats = steer.ActivationStats.load(args.stats)
    params = {}
    if args.top_rate is not None:
        params["top_rate"] = args.top_rate
    if args.lambda_ is not None:
        params["lambda"] = args.lambda_  # "auto" or a number, read (and checked) by the method
    neurons = steer.identify(stats, method=args.method, **params)
    out = neurons.save(args.out)
    counts = neurons.counts_per_layer()
    print(f"{neurons.method}: {len(neurons)} neurons ({json.dumps(neurons.params)}) -> {out}")
    print("layer  specific  related  general")
    for layer in range(neurons.n_layers):
        print(f"{layer:5d}  {counts['specific'][layer]:8d}  {counts['related'][layer]:7d}  {counts['general'][layer]:7d}")
    print(layer_concentration(neurons)["verdict"])


def cmd_ablate(args) -> None:
    import steer
    from steer._io import file_header, prepare_out, write_json_atomic
    from steer.bench.delta_ppl import ablate_language
    from steer.languages import normalise_code
    from steer.steering import Intervention

    prepare_out(args.out, "ablate", inputs=[args.neurons, args.corpus, _local(args.model)])  # before loading anything
    args.language = normalise_code(args.language, what="--language")
    neurons = steer.NeuronSet.load(args.neurons)
    classes = [part.strip() for part in args.classes.split(",") if part.strip()]
    Intervention("suppress", languages=[args.language], classes=classes)  # a bad class: before the model loads
    neurons.index(args.language)
    corpus = steer.load_corpus(args.corpus)
    model = _load(args)
    neurons.check_model(model, what=f"neuron set '{args.neurons}'")
    result = ablate_language(model, neurons, corpus, args.language, classes=classes, n_texts=args.n_texts)
    for lang, row in result["evaluated"].items():
        print(f"  {lang:6s} log-PPL {row['log_ppl']:7.3f} -> {row['ablated_log_ppl']:7.3f}  (Δ {row['delta_log_ppl']:+.3f})")
    path = write_json_atomic(Path(args.out) / f"ablate_{args.language}.json", {**file_header(model), **result})
    print(f"-> {path}")


def cmd_generate(args) -> None:
    import contextlib

    import steer
    from steer._io import prepare_out
    from steer.forcing import STEPS_DEFAULT, SUPPRESS, check_push_corpus, forcing_push
    from steer.generation import check_generate_args
    from steer.languages import normalise_code

    if args.out is not None:  # before generating
        prepare_out(args.out, "generate", inputs=[args.neurons, args.stats, args.push if args.push != "learned" else None,
                                                  args.corpus, _local(args.model)])
    if args.force_language is not None:
        args.force_language = normalise_code(args.force_language, what="--force-language")
    neurons = steer.NeuronSet.load(args.neurons) if args.neurons else None  # files first: a bad one fails fast
    stats = steer.ActivationStats.load(args.stats) if args.stats else None
    push = "learned" if args.push == "learned" else steer.LanguagePush.load(args.push) if args.push else None
    if push == "learned" and args.force_language is None:
        raise ValueError("--push learned needs --force-language (the target whose push is fitted, or read from the cache)")
    if push is not None and args.force_language is None:
        args.force_language = push.target
    if args.force_language is not None:
        push = forcing_push(push, args.mode)
    masked = normalise_code(args.mask_experts, what="--mask-experts") if args.mask_experts else None
    if masked is not None:
        if stats is None:
            raise ValueError("--mask-experts needs --stats (the routing frequencies that pick a language's experts)")
        mask = steer.ExpertMask.for_language(stats, masked, top=args.mask_top)  # a dense model's stats: refused here
    suppress = args.suppress if args.suppress in SUPPRESS else _languages(args.suppress, "--suppress")
    steps = STEPS_DEFAULT if args.steps is None else None if args.steps == "all" else args.steps
    check_generate_args(args.prompts, neurons=neurons, stats=stats, force_language=args.force_language, mode=args.mode,
                        strength=args.strength, suppress=suppress, steps=steps, phase=args.phase,
                        max_new_tokens=args.max_new_tokens, push=push, corpus=args.corpus)  # before the model
    corpus = steer.load_corpus(args.corpus) if push == "learned" else None  # what it is fitted on: before the model
    if corpus is not None:
        check_push_corpus(corpus, args.force_language)
    model = _load(args)
    if neurons is not None:
        neurons.check_model(model, what=f"neuron set '{args.neurons}'")
    if stats is not None:
        stats.check_model(model)
    if push is not None and push != "learned":
        push.check_model(model, what=f"language push '{args.push}'")
    common = dict(max_new_tokens=args.max_new_tokens, do_sample=args.sample, seed=args.seed)
    with steer.intervene(model, expert_masks=[mask]) if masked is not None else contextlib.nullcontext():
        steered = steer.generate(model, args.prompts, neurons=neurons, stats=stats, force_language=args.force_language,
                                 mode=args.mode, strength=args.strength, suppress=suppress, phase=args.phase,
                                 steps=steps, push=push, corpus=corpus, repetition_penalty=args.repetition_penalty,
                                 no_repeat_ngram_size=args.no_repeat_ngram_size, **common)
    same_decoding = {key: steered.settings[key] for key in ("repetition_penalty", "no_repeat_ngram_size")}
    languages = neurons.languages if neurons is not None else stats.languages if stats is not None else \
        [push.target, *push.meta.get("sources", [])] if isinstance(push, steer.LanguagePush) else None
    plain = steer.generate(model, args.prompts, candidates=languages, **same_decoding,
                           **common)
    for prompt, text, lang, base, base_lang in zip(args.prompts, steered.texts, steered.languages, plain.texts,
                                                   plain.languages):
        print(f"prompt      : {prompt}")
        print(f"unsteered   [{base_lang}]: {base}")
        print(f"{'forced ' + (args.force_language or '-'):11s} [{lang}]: {text}" if masked is None else
              f"forced {args.force_language or '-'}, {masked}'s experts masked [{lang}]: {text}")
        print()
    if args.out:
        from steer._io import file_header, write_json_atomic

        write_json_atomic(Path(args.out) / "generations.json",
                          {**file_header(model), "steered": steered.to_dict(), "unsteered": plain.to_dict()})


def cmd_fit_push(args) -> None:
    import steer
    from steer._io import prepare_out
    from steer.languages import normalise_code
    from steer.push_training import PushTraining, fit_push

    out = prepare_out(args.out, "fit-push", inputs=[args.stats, args.neurons, args.corpus, _local(args.model)])
    target = normalise_code(args.target, what="--target")
    training = PushTraining(max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, l2=args.l2, kl=args.kl,
                            prompt=args.prompt, seed=args.seed)
    training.check()  # before anything is read or loaded
    sources = _languages(args.sources, "--sources")
    neurons = steer.NeuronSet.load(args.neurons) if args.neurons else None
    stats = steer.ActivationStats.load(args.stats) if args.stats else None
    if args.residual_layer is None:
        if neurons is None and stats is None:
            raise ValueError("give --stats (the default neurons come from them) or --neurons")
        (neurons if neurons is not None else stats).index(target)
    corpus = steer.load_corpus(args.corpus)
    if target not in corpus.languages:
        raise ValueError(f"--target: the corpus has no language '{target}'; it has {', '.join(corpus.languages)}")
    model = _load(args)
    if neurons is not None:
        neurons.check_model(model, what=f"neuron set '{args.neurons}'")
    if stats is not None:
        stats.check_model(model)
    push = fit_push(model, corpus, target, neurons=neurons, stats=stats, sources=sources, training=training,
                    residual_layer=args.residual_layer)
    push.save(out)
    print(f"push for {target}: {len(push)} {'neurons' if push.site == 'mlp' else 'residual dimensions'}, validation loss {push.meta['val_loss_unpushed']:.3f} -> "
          f"{push.meta['val_loss']:.3f} (step {push.meta['best_step']}, {push.meta['seconds']:.0f} s) -> {out}")


def cmd_bench(args) -> None:
    from steer._io import prepare_out
    from steer.bench.runner import config_inputs, run_bench
    from steer.bench.schema import load_config

    config = load_config(args.config or args.config_option)
    if args.only is not None:
        config = config.only([name.strip() for name in args.only.split(",") if name.strip()])
    prepare_out(args.out, "bench", inputs=config_inputs(config))  # before loading anything
    for field in ("device", "dtype", "device_map"):  # the command line overrides the TOML's [model]
        if getattr(args, field) is not None:
            setattr(config.model, field, getattr(args, field))
    run_bench(config, Path(args.out), threads=args.threads)


def cmd_compare(args) -> None:
    import steer
    from steer._io import prepare_out
    from steer.bench.alignment import write_alignment_report
    from steer.bench.compare import compare_neuron_sets, write_compare_report

    if bool(args.base_model) != bool(args.aligned_model):
        raise ValueError("--base-model and --aligned-model go together: give both (held-out perplexity before and "
                         "after) or neither")
    if args.base_model and not args.trained:
        raise ValueError("--base-model and --aligned-model need --trained (the languages the alignment trained on)")
    trained = _languages(args.trained, "--trained")
    prepare_out(args.out, "compare", inputs=[args.a, args.b, args.corpus, _local(args.base_model),
                                             _local(args.aligned_model)])  # before loading anything
    result = compare_neuron_sets(steer.NeuronSet.load(args.a), steer.NeuronSet.load(args.b), trained=trained)
    report = write_compare_report(result, Path(args.out))
    print(f"comparison -> {report}")
    if trained:
        both = args.base_model and args.aligned_model
        print(write_alignment_report(result, Path(args.out), trained, base=_load(args, args.base_model) if both else None,
                                     aligned=_load(args, args.aligned_model) if both else None, corpus=args.corpus,
                                     n_eval=args.n_eval))


def cmd_demo(args) -> None:
    import steer
    from steer._io import prepare_out
    from steer.bench.demo import run_demo
    from steer.provenance import command_line

    prepare_out(args.out, "demo", inputs=[args.corpus, _local(args.model)])  # before loading anything
    corpus = steer.load_corpus(args.corpus) if args.corpus else None  # default: the LibreOffice help
    summary = run_demo(Path(args.out), quick=args.quick, threads=args.threads, model=_load(args), corpus=corpus,
                       command=command_line(["steer", *args.argv], program="steer"))
    print(f"report -> {Path(args.out) / 'report.md'}")
    for key in ("diagonal_mean_delta_logppl", "offdiagonal_mean_delta_logppl", "random_control_mean_delta_logppl",
                "forced_language_success"):
        print(f"  {key}: {summary.get(key)}")


def cmd_align(args) -> None:
    from steer._io import prepare_out
    from steer.align import AlignConfig, align
    from steer.languages import normalise_code

    prepare_out(args.out, "align", inputs=[args.corpus, _local(args.model)])  # before loading anything
    config = AlignConfig(
        train_languages=_languages(args.train_languages, "--train-languages"),
        pivot=normalise_code(args.pivot, what="--pivot"), objective=args.objective,
        steps=args.steps, rank=args.rank, alpha=args.alpha, batch_size=args.batch_size, max_length=args.max_length,
        lr=args.lr, seed=args.seed, max_pairs=args.max_pairs, checkpoint_every=args.checkpoint_every,
    )
    out = align(args.model, args.corpus, Path(args.out), config, device=args.device, dtype=args.dtype)
    print(f"aligned model -> {out} (load it with steer.load_model('{out}'))")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steer", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="on an error, print the traceback too "
                        "(also STEER_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    corpus = sub.add_parser("corpus", help="build the corpus").add_subparsers(dest="action", required=True)
    build = corpus.add_parser("build", help="LibreOffice help from Debian packages, or your own text")
    build.add_argument("--out", required=True)
    build.add_argument("--languages", help="comma-separated codes (default: en,de,fr,es,ru,ja,zh,eu,om,km)")
    source = build.add_mutually_exclusive_group()
    source.add_argument("--from-dir", help="a folder of <lang>.txt files, one text per line")
    source.add_argument("--jsonl", help="a JSONL file with lang, text (and optional split, id)")
    build.add_argument("--min-chars", type=positive_int, help="LibreOffice corpus: shortest paragraph kept (40)")
    build.add_argument("--n-eval", type=positive_int, help="LibreOffice corpus: eval paragraphs per language (200)")
    build.set_defaults(func=cmd_corpus_build)

    collect = sub.add_parser("collect", help="activation statistics per language")
    _model_options(collect)
    collect.add_argument("--corpus", default=None, help="corpus folder (default: the embedded corpus)")
    collect.add_argument("--out", required=True)
    collect.add_argument("--languages")
    collect.add_argument("--batch-size", type=positive_int, help="texts per batch (default: the device's, 8 on a CPU)")
    collect.add_argument("--tokens-per-batch", type=positive_int, help="padded tokens per batch (default on a GPU: 32768)")
    collect.add_argument("--max-length", type=positive_int, default=256)
    collect.add_argument("--max-tokens-per-language", type=positive_int)
    collect.add_argument("--sq-sums", action="store_true")
    collect.set_defaults(func=cmd_collect)

    identify = sub.add_parser("identify", help="select language neurons from stats")
    identify.add_argument("stats")
    identify.add_argument("--method", default="zhang2025", choices=["zhang2025", "lape", "specificity"])
    identify.add_argument("--top-rate", type=float)
    identify.add_argument("--lambda", dest="lambda_", help="zhang2025 λ: a number or 'auto'")
    identify.add_argument("--out", required=True)
    identify.set_defaults(func=cmd_identify)

    ablate = sub.add_parser("ablate", help="deactivate one language's neurons; log-PPL on every language")
    _model_options(ablate)
    ablate.add_argument("--neurons", required=True)
    ablate.add_argument("--language", required=True)
    ablate.add_argument("--classes", default="specific,related")
    ablate.add_argument("--corpus", default=None)
    ablate.add_argument("--n-texts", type=positive_int, default=50)
    ablate.add_argument("--out", required=True)
    ablate.set_defaults(func=cmd_ablate)

    generate = sub.add_parser("generate", help="steered and unsteered continuations side by side")
    generate.add_argument("prompts", nargs="+")
    _model_options(generate)
    generate.add_argument("--neurons", help="with --force-language: default, the specificity baseline from --stats "
                          "(steer.forcing.PUSH_NEURONS for the learned push, FORCING_NEURONS for a rule)")
    generate.add_argument("--stats")
    generate.add_argument("--force-language")
    generate.add_argument("--mode", help="with --force-language: push with a rule instead of the learned push, "
                          "nothing to fit: set, additive, diffmean or std")
    generate.add_argument("--strength", type=float, help="with --force-language (default: 1 for a learned push, "
                          "steer.forcing.DEFAULT_STRENGTH of the mode for a rule's)")
    generate.add_argument("--suppress", default="none", help="with --force-language, whose neurons to switch off: "
                          "none (default), source (the prompt's language), others, or a comma list of languages")
    generate.add_argument("--phase", default="all", choices=("all", "output"),
                          help="with --force-language: steer every position, or only those predicting new tokens")
    generate.add_argument("--steps", type=steps_arg, help="with --force-language: stop forcing once this many new "
                          "tokens are predicted, or 'all' to force every one (default: every one for a learned push, "
                          "steer.forcing.DEFAULT_STEPS, 4, with --mode)")
    generate.add_argument("--repetition-penalty", type=float, help="HF's (1.0: none; forcing defaults to 1.2); "
                          "the unsteered side uses the same")
    generate.add_argument("--no-repeat-ngram-size", type=int, help="HF's (0: none; forcing defaults to 3)")
    generate.add_argument("--max-new-tokens", type=positive_int, default=32)
    generate.add_argument("--sample", action="store_true")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--push", help="with neither --push nor --mode, --force-language uses 'learned': the "
                          "target's push on its neurons (steer.forcing.PUSH_NEURONS), fitted on --corpus the first "
                          "time (minutes on a CPU) and cached; or a language push folder (steer fit-push) of your own")
    generate.add_argument("--corpus", help="a parallel corpus the learned push is fitted on (default: the embedded "
                          "one)")
    generate.add_argument("--mask-experts", metavar="LANG", help="mixture-of-experts models: take the experts LANG "
                          "is routed to most (per layer, from --stats) out of the routing")
    generate.add_argument("--mask-top", type=positive_int, default=1, help="with --mask-experts: experts per layer (1)")
    generate.add_argument("--out")
    generate.set_defaults(func=cmd_generate)

    fit = sub.add_parser("fit-push", help="learn per-neuron offsets that force a language (a LanguagePush)")
    _model_options(fit)
    fit.add_argument("--target", required=True, help="the language to force")
    fit.add_argument("--stats", help="activation stats: the default neurons (steer.forcing.PUSH_NEURONS) come "
                     "from them")
    fit.add_argument("--neurons", help="a neuron set whose --target neurons are pushed (default: from --stats)")
    fit.add_argument("--corpus", default=None, help="a parallel corpus (default: the embedded one); only its stats "
                     "split is read")
    fit.add_argument("--sources", help="languages whose openings are continued (default: all others)")
    fit.add_argument("--residual-layer", type=int, help="instead of neurons, learn one vector added to the residual "
                     "stream after this layer (the steering-vector baseline)")
    fit.add_argument("--steps", type=positive_int, default=60, help="most training steps (early stopping)")
    fit.add_argument("--batch-size", type=positive_int, default=6)
    fit.add_argument("--lr", type=positive_float, default=0.05)
    fit.add_argument("--l2", type=float, default=1e-3)
    fit.add_argument("--kl", type=float, default=0.0, help="weight of the KL term on the target's own text")
    fit.add_argument("--prompt", default="prefix", choices=("prefix", "sentence"))
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", required=True)
    fit.set_defaults(func=cmd_fit_push)

    bench = sub.add_parser("bench", help="run the benchmarks a TOML config names")
    config = bench.add_mutually_exclusive_group(required=True)
    config.add_argument("config", nargs="?", help="the TOML config (e.g. steer/bench/demo.toml)")
    config.add_argument("--config", dest="config_option", metavar="CONFIG", help="the same, as an option")
    bench.add_argument("--out", required=True)
    bench.add_argument("--threads", type=positive_int, help="torch threads (1 is faster on a loaded machine)")
    bench.add_argument("--only", metavar="NAMES", help="run only these benchmarks of the config (comma-separated names)")
    _model_options(bench, model=False, device=None, dtype=None)  # None: the TOML's [model] (default auto)
    bench.set_defaults(func=cmd_bench)

    compare = sub.add_parser("compare", help="compare two neuron sets (e.g. base vs aligned)")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.add_argument("--trained", help="languages the alignment trained on")
    compare.add_argument("--base-model", help="with --aligned-model: add held-out perplexity before/after")
    compare.add_argument("--aligned-model")
    compare.add_argument("--corpus", default=None)
    compare.add_argument("--n-eval", type=positive_int, default=8)
    _model_options(compare, model=False)
    compare.add_argument("--out", required=True)
    compare.set_defaults(func=cmd_compare)

    demo = sub.add_parser("demo", help="the whole loop on the embedded model and corpus")
    demo.add_argument("--out", required=True)
    demo.add_argument("--quick", action="store_true", help="a tiny run (seconds), for smoke tests")
    demo.add_argument("--threads", type=positive_int, help="torch threads (1 is faster on a loaded machine)")
    demo.add_argument("--corpus", default=None, help="a corpus folder, <lang>.txt folder or .jsonl "
                      "(default: the LibreOffice help)")
    _model_options(demo)
    demo.set_defaults(func=cmd_demo)

    align = sub.add_parser("align", help="LoRA multilingual alignment fine-tune, merged into a model folder")
    _model_options(align, dtype="float32")  # LoRA weights trained in bf16 lose precision: float32 unless asked
    align.add_argument("--corpus", default=None)
    align.add_argument("--train-languages", required=True)
    align.add_argument("--out", required=True)
    align.add_argument("--pivot", default="en")
    align.add_argument("--objective", default="translation", choices=["translation", "dpo"])
    align.add_argument("--steps", type=positive_int, default=200)
    align.add_argument("--rank", type=positive_int, default=8)
    align.add_argument("--alpha", type=positive_int, default=16)
    align.add_argument("--batch-size", type=positive_int, default=4)
    align.add_argument("--max-length", type=positive_int, default=128)
    align.add_argument("--lr", type=positive_float, default=2e-4)
    align.add_argument("--seed", type=int, default=0)
    align.add_argument("--max-pairs", type=positive_int)
    align.add_argument("--checkpoint-every", type=positive_int, default=50)
    align.set_defaults(func=cmd_align)
    for leaf in (build, collect, identify, ablate, generate, fit, bench, compare, demo, align):
        leaf.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="on an error, print the traceback too (also STEER_DEBUG=1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what was asked for, recorded by result files
    debug = args.debug or os.environ.get("STEER_DEBUG", "") not in ("", "0")
    try:
        args.func(args)
    except (ValueError, RuntimeError, OSError) as error:
        if debug:
            import traceback

            traceback.print_exc()
        hint = "" if debug or isinstance(error, ValueError) else " (--debug or STEER_DEBUG=1 shows the traceback)"
        print(f"steer: error: {error}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("steer: interrupted; work up to the last checkpoint is kept: rerun the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
