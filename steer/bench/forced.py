"""Forced language: steer generation into a target language and check what comes out, honestly.

The protocol (one implementation: the `[bench.forced]` benchmark, `forced_language` and
`benchmarks/forced_sweep.py` all go through `ForcedRun`):

- **Split.** Each language's held-out paragraphs are cut in two (`halves`): sweeps and the fluency bars
  read the first half (tuning), reported figures the second (evaluation).
- **Sampling.** Every (source, target) pair gets its own paragraphs, drawn without replacement from
  the half with a recorded seed (`pair_paragraphs`): the continuations forced to one target come from
  as many different paragraphs as there are continuations.
- **Prompts.** `prompt="prefix"`: the paragraph's first 8 words; `"sentence"`: its first complete
  sentence (at most `MAX_SENTENCE_WORDS` words).
- **Judge** (`steer.bench.fluency`): raw success when the identifier's top-1 over all its languages
  is the target; fluent success when the continuation also reads like the model's own text in the
  target (NLL bar from human text: at least 30 true continuations of tuning-half paragraphs), is not
  degenerate (absolute, digit-aware limits) and is not another prompt's continuation word for word.
- **Controls**, judged the same way: the unsteered model on the same prompts; the same push on
  random neurons with the same per-layer counts (`n_random` seeds); the model's own continuations of
  prompts written in the target (own-text ceiling); the true continuations of such paragraphs, cut
  to the same token count (human-text ceiling).
- **Intervals.** Every rate carries a 95% interval from a bootstrap over paragraphs
  (`steer.bench.resample`).
"""

from __future__ import annotations

import hashlib
import random
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from steer.bench._common import Partial, check_at_least, mean_or_none, neuron_fingerprint, read_keyed, stable_hash, \
    texts_fingerprint
from steer.bench.fluency import JUDGE_CONSTANTS, Bar, Score, Verdict, bars, judge, score_continuations, shuffle_tokens
from steer.bench.plots import plot_forced
from steer.bench.registry import Benchmark, Context, Job, register
from steer.bench.report import forced_section
from steer.bench.resample import rate_ci
from steer.forcing import (
    DEFAULT_FORCE_MODE, DEFAULT_PUSH_STEPS, DEFAULT_STEPS, DEFAULT_STRENGTH, DEFAULT_SUPPRESS, STEPS_DEFAULT, SUPPRESS,
    check_mode, default_steps, forcing_decoding, parse_steps,
)
from steer.generation import generate
from steer.langid import detect_language, top_language
from steer.languages import Lang
from steer.models import model_info
from steer.progress import progress_bar
from steer.prompts import PROMPT_KINDS, PROMPT_WORDS, make_prompt

MIN_SWEEP_PARAGRAPHS = 20  # paragraphs per target in a tuning-half sweep cell
HALVES = ("tune", "eval")


def true_continuation(tokenizer, text: str, prompt: str, n_tokens: int) -> str | None:
    """The paragraph's own text after `prompt`, cut to its first `n_tokens` tokens (None when shorter)."""
    rest = " ".join(text.split())[len(prompt):].strip()
    ids = tokenizer(rest, add_special_tokens=False)["input_ids"] if rest else []
    if len(ids) < n_tokens:
        return None
    return tokenizer.decode(ids[:n_tokens], skip_special_tokens=True).strip()


def halves(eval_texts: dict[str, list[str]]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The fixed split of the held-out paragraphs: (tuning half, evaluation half), the first and second half.

    Sweeps and the fluency bars read only the tuning half; reported figures come from the evaluation
    half. Paragraph i is the same text in every language of a parallel corpus, so the halves hold
    the same content across languages.
    """
    tune, evaluate = {}, {}
    for lang, texts in eval_texts.items():
        half = len(texts) // 2
        tune[lang], evaluate[lang] = list(texts[:half]), list(texts[half:])
    return tune, evaluate


# ---------------------------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class Item:
    """One continuation to make: the prompt from paragraph `paragraph` of the half, written in `source`."""

    source: str
    target: str | None  # the language it is forced to (None: unsteered own text)
    paragraph: int
    prompt: str


def _order(n: int, *labels) -> list[int]:
    """A seeded permutation of range(n), one per label tuple (string seeding is stable across runs)."""
    return random.Random(":".join(map(str, labels))).sample(range(n), n)


def pair_paragraphs(texts: dict[str, list[str]], languages: Sequence[str], targets: Sequence[str], per_pair: int,
                    seed: int, *, kind: str = "prefix", n_words: int = PROMPT_WORDS) -> dict[str, list[Item]]:
    """Per target, `per_pair` items from every other language of `languages`, each from its own paragraph.

    The paragraphs of one target are drawn without replacement from the half (a permutation seeded by
    `seed` and the target), so no two continuations forced to one target share a paragraph. A half
    with fewer paragraphs than that (a tiny corpus) is drawn again in a new permutation, with a
    warning: the intervals, resampling paragraphs, still count each paragraph once.
    """
    out = {}
    n = min(len(texts[lang]) for lang in languages)
    for target in targets:
        sources = [s for s in languages if s != target]
        if per_pair * len(sources) > n:
            warnings.warn(f"forcing '{target}': {per_pair * len(sources)} continuations from a half of {n} "
                          f"paragraphs; some paragraphs serve several source languages", stacklevel=2)
        order = [i for round_ in range(-(-per_pair * len(sources) // max(n, 1)) + 1)
                 for i in _order(n, "pairs", seed, target, *([round_] if round_ else []))]
        position = 0
        items = []
        for source in sources:
            for _ in range(per_pair):
                while position < len(order) and not texts[source][order[position]].strip():
                    position += 1
                if position == len(order):
                    raise ValueError(f"forcing '{target}': no held-out paragraph left in '{source}' to make a prompt "
                                     f"from; give the corpus more held-out paragraphs")
                i = order[position]
                position += 1
                items.append(Item(source, target, i, make_prompt(texts[source][i], kind, n_words)))
        out[target] = items
    return out


def own_paragraphs(texts: dict[str, list[str]], languages: Sequence[str], n: int, seed: int, *,
                   kind: str = "prefix", n_words: int = PROMPT_WORDS, salt: str = "own") -> dict[str, list[Item]]:
    """Per language, up to `n` items written in it (distinct paragraphs, seeded), for its own-text ceiling/bar."""
    out = {}
    for lang in languages:
        order = _order(len(texts[lang]), salt, seed, lang)
        chosen = [i for i in order if texts[lang][i].strip()][:n]
        if not chosen:
            raise ValueError(f"no held-out paragraph to make a prompt from for '{lang}'")
        out[lang] = [Item(lang, None, i, make_prompt(texts[lang][i], kind, n_words)) for i in chosen]
    return out


# ---------------------------------------------------------------------------------------------- results
@dataclass
class Rates:
    """Raw and fluent success of a group of continuations, with 95% cluster-bootstrap intervals over paragraphs."""

    n: int
    n_paragraphs: int
    raw_success: float | None
    raw_success_ci: tuple[float, float] | None
    fluent_success: float | None
    fluent_success_ci: tuple[float, float] | None

    @classmethod
    def of(cls, rows: Sequence[dict], seed: int = 0) -> "Rates":
        clusters = [row["paragraph"] for row in rows]
        raw, raw_ci = rate_ci([row["in_target"] for row in rows], clusters, seed=seed)
        fluent, fluent_ci = rate_ci([row["fluent"] for row in rows], clusters, seed=seed)
        return cls(len(rows), len(set(clusters)), raw, raw_ci, fluent, fluent_ci)

    @classmethod
    def from_dict(cls, data: dict) -> "Rates":
        return cls(**{f.name: (tuple(data[f.name]) if f.name.endswith("_ci") and data[f.name] is not None
                               else data[f.name]) for f in fields(cls)})


@dataclass
class TargetResult:
    """One target's figures: forced, and each control, judged the same way."""

    forced: Rates
    unsteered: Rates
    random: Rates | None  # every random seed's continuations together
    random_per_seed: list  # fluent success per seed
    own_text: Rates
    human_text: Rates
    bar: dict
    fluency_nll: float | None  # mean NLL of the fluent successes
    own_language_nll: float | None  # mean NLL of the model's own text in the target (the own-text ceiling's)
    human_nll: float | None  # mean NLL of human text in the target (the human-text ceiling's)
    failures: dict  # reason -> count among the forced continuations
    confusion: dict  # label among the run's languages (candidate-restricted identifier) -> count

    @classmethod
    def from_dict(cls, data: dict) -> "TargetResult":
        data = dict(data)
        for name in ("forced", "unsteered", "own_text", "human_text"):
            data[name] = Rates.from_dict(data[name])
        data["random"] = Rates.from_dict(data["random"]) if data.get("random") else None
        return cls(**data)


@dataclass
class SweepRow:
    """One setting of a tuning-half sweep."""

    setting: dict
    rates: Rates
    per_target: dict  # target -> {"raw", "fluent", "n"}

    def to_dict(self) -> dict:  # flat, as plots.forced_grid reads it
        return {**self.setting, "raw": self.rates.raw_success, "fluent": self.rates.fluent_success,
                "raw_ci": self.rates.raw_success_ci, "fluent_ci": self.rates.fluent_success_ci, "n": self.rates.n,
                "n_paragraphs": self.rates.n_paragraphs, "per_target": self.per_target}


@dataclass
class ForcedResult:
    """The forced-language benchmark's result: one vocabulary (`raw_success`, `fluent_success`, `…_ci`)
    for the forced continuations and for every control."""

    languages: list
    method: str
    setting: dict  # mode, strength, suppress, phase, steps (as Intervention.steps: None = every step)
    prompt: str
    half: str
    n_per_pair: int
    seed: int
    decoding: dict
    judge: dict
    raw_success: float | None
    raw_success_ci: tuple | None
    fluent_success: float | None
    fluent_success_ci: tuple | None
    n: int
    n_paragraphs: int
    unsteered: Rates
    random: Rates | None
    random_per_seed: list
    own_text: Rates
    human_text: Rates
    per_target: dict  # target -> TargetResult
    per_source: dict  # source -> Rates
    raw_matrix: list  # [source][target]
    fluent_matrix: list
    bars: dict
    split: dict
    examples: list
    continuations: list
    sweep: list | None = None
    benchmark: str = "forced"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ForcedResult":
        data = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        for name in ("unsteered", "own_text", "human_text"):
            data[name] = Rates.from_dict(data[name])
        data["random"] = Rates.from_dict(data["random"]) if data.get("random") else None
        data["per_target"] = {t: TargetResult.from_dict(row) for t, row in data["per_target"].items()}
        data["per_source"] = {s: Rates.from_dict(row) for s, row in data["per_source"].items()}
        return cls(**data)


# ---------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """A forcing setting: `generate`'s mode/strength/suppress/phase/steps on the neuron set named `neurons`, or,
    with `push`, the learned pushes of that name in the run (`ForcedRun(pushes=...)`; one per target) in place
    of the mode's push (`strength` then scales them, default 1)."""

    neurons: str = "default"
    mode: str = DEFAULT_FORCE_MODE
    strength: float | None = None  # None: DEFAULT_STRENGTH[mode] (1 for a push)
    suppress: str = DEFAULT_SUPPRESS
    phase: str = "all"
    steps: int | None | str = STEPS_DEFAULT  # None: every step; default: the push's (steer.forcing.default_steps)
    push: str | None = None

    def __post_init__(self):
        check_mode(self.mode)
        if self.suppress not in SUPPRESS:
            raise ValueError(f"unknown suppress '{self.suppress}' (known: {', '.join(SUPPRESS)})")
        if self.phase not in ("all", "output"):
            raise ValueError(f"unknown phase '{self.phase}' (known: all, output)")
        object.__setattr__(self, "steps", parse_steps(default_steps(self.steps, self.push)))  # "all" (None) too
        default = 1.0 if self.push is not None else DEFAULT_STRENGTH[self.mode]
        object.__setattr__(self, "strength", float(default if self.strength is None else self.strength))

    def forcing(self) -> dict:
        mode = {} if self.push is not None else {"mode": self.mode}
        return dict(**mode, strength=self.strength, suppress=self.suppress, phase=self.phase, steps=self.steps)

    def to_dict(self) -> dict:
        return asdict(self)  # steps as everywhere: None = every step

    @property
    def name(self) -> str:
        push = self.mode if self.push is None else f"push:{self.push}"
        return f"{push}/{self.strength:g}/{self.suppress}/{self.phase}/{'all' if self.steps is None else self.steps}"


# ---------------------------------------------------------------------------------------------- the run
class ForcedRun:
    """Everything one forced-language measurement shares: the model, stats, neuron sets, the split, the prompt
    kind, the decoding, the judge's bars and a resumable store of finished units.

    `eval_texts`: every held-out paragraph per language. `neuron_sets`: the sets settings may name.
    Units (one `generate` call each) are saved in `checkpoint` as they finish, under a key that holds
    everything they depend on (stats, languages, paragraphs, prompt kind, decoding, judge constants,
    seed); each unit's name holds the rest (half, prompts per pair, neuron fingerprint,
    setting, target). `reuse`: further unit files (other shards' checkpoints) read, never written.
    """

    def __init__(self, model, stats, eval_texts: dict[str, list[str]], neuron_sets: dict, *,
                 languages: Sequence[str] | None = None, prompt: str = "prefix", prompt_words: int = PROMPT_WORDS,
                 max_new_tokens: int = 16, repetition_penalty: float | None = None,
                 no_repeat_ngram_size: int | None = None, n_baseline: int = 100, seed: int = 0, batch_size: int = 32,
                 checkpoint: str | Path | None = None, reuse: Iterable[str | Path] = (), progress: bool = True,
                 pushes: dict | None = None):
        if prompt not in PROMPT_KINDS:
            raise ValueError(f"unknown prompt kind '{prompt}' (known: {', '.join(PROMPT_KINDS)})")
        if not neuron_sets and languages is None:
            raise ValueError("forcing a language needs a neuron set (or, for the judge alone, the languages)")
        if languages is None:
            first = next(iter(neuron_sets.values()))
            languages = [lang for lang in first.languages if lang in eval_texts]
        languages = list(languages)
        if len(languages) < 2:
            raise ValueError("forcing a language needs at least two languages")
        for neurons in neuron_sets.values():
            for lang in languages:
                neurons.index(lang)
        check_at_least("forced language", n_baseline=(n_baseline, 1), max_new_tokens=(max_new_tokens, 1),
                       batch_size=(batch_size, 1), prompt_words=(prompt_words, 1))
        tune, evaluate = halves({lang: list(eval_texts[lang]) for lang in languages})
        short = [lang for lang in languages if not tune[lang]]
        if short:
            raise ValueError(f"forcing a language needs at least 2 held-out paragraphs per language (the first half "
                             f"tunes, the second reports); {', '.join(short)} has fewer: give the corpus more eval texts")
        self.model, self.stats, self.neuron_sets, self.languages = model, stats, dict(neuron_sets), languages
        self.pushes = {name: dict(family) for name, family in (pushes or {}).items()}  # name -> target -> push
        self.texts = {"tune": tune, "eval": evaluate}
        self.prompt, self.prompt_words, self.n_baseline, self.seed = prompt, prompt_words, n_baseline, seed
        self.max_new_tokens, self.batch_size, self.progress = max_new_tokens, batch_size, progress
        self.decoding = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,  # one for every unit
                             **forcing_decoding(repetition_penalty, no_repeat_ngram_size))
        # What a unit's texts and scores depend on beyond its name (which holds the half, prompts per pair, neuron
        # fingerprint, setting and target; the bars' holds n_baseline). The verdicts also depend on the judge's
        # constants: results carry them, and the benchmark's result key holds them.
        self.key = stable_hash({
            "stats": stats.meta.get("plan") if stats is not None else None, "languages": languages, "prompt": prompt, "prompt_words": prompt_words,
            "halves": texts_fingerprint({h: [self.texts[h][lang] for lang in languages] for h in HALVES}),
            "decoding": self.decoding, "scoring": JUDGE_CONSTANTS["scoring_version"], "seed": seed,
        })
        # `checkpoint` and `reuse` may hold "{key}" (a folder of several runs' units) and `reuse` a glob
        self.partial = Partial(str(checkpoint).format(key=self.key) if checkpoint is not None else None, self.key)
        self.known: dict = {}
        for pattern in reuse:
            pattern = Path(str(pattern).format(key=self.key))
            for path in sorted(pattern.parent.glob(pattern.name)):
                if self.partial.path is None or path.resolve() != self.partial.path.resolve():
                    self.known.update((read_keyed(path, self.key) or {}).get("done", {}))
        self._bars: dict[str, Bar] | None = None

    # -------------------------------------------------------------- units
    @staticmethod
    def _fingerprint(neurons) -> str:
        return neuron_fingerprint(neurons)

    def _units(self, units: list[tuple[str, Callable[[], dict]]], desc: str) -> dict[str, dict]:
        todo = [name for name, _ in units if name not in self.known and name not in self.partial.done]
        bar = progress_bar(self.progress and bool(todo), len(units), desc, unit="call", initial=len(units) - len(todo))
        done = {}
        try:
            for name, compute in units:
                if name in self.known:
                    done[name] = self.known[name]
                    continue
                bar.set_postfix_str(name[-40:])
                fresh = name not in self.partial.done
                done[name] = self.partial.get(name, compute)
                if fresh:
                    bar.update(1)
        finally:
            bar.close()
        return done

    def _continue(self, items: list[Item], target: str | None, setting: Setting | None, neurons) -> dict:
        """One generate call over `items` (forced to `target` under `setting` on `neurons`, or unsteered), each
        continuation's labels (top-1 over all languages; among the run's) and scores."""
        prompts = [item.prompt for item in items]
        forced = dict(force_language=target, **setting.forcing()) if setting is not None else {}
        if setting is not None and setting.push is not None:
            forced["push"] = self.pushes[setting.push][target]
        g = generate(self.model, prompts, neurons=neurons, stats=self.stats, detect=False,
                     batch_size=min(self.batch_size, len(prompts)), **forced, **self.decoding)
        scores = score_continuations(self.model, g.texts, batch_size=self.batch_size)
        return {"texts": g.texts, "detected": top_language(g.texts),
                "detected_among": detect_language(g.texts, candidates=self.languages),
                "scores": [asdict(score) for score in scores], "prompts": prompts}

    def _rows(self, items: list[Item], unit: dict, target: str) -> list[dict]:
        """The judged rows of a unit's continuations, judged as forced to `target`."""
        if unit["prompts"] != [item.prompt for item in items]:
            raise RuntimeError("a saved unit does not match its prompts; remove the checkpoint")  # guarded by the key
        scores = [Score(**s) for s in unit["scores"]]
        verdicts = judge(unit["texts"], unit["detected"], scores, target, self.bars()[target])
        return [_row(item, target, text, detected, among, score, verdict) for item, text, detected, among, score, verdict
                in zip(items, unit["texts"], unit["detected"], unit["detected_among"], scores, verdicts)]

    # -------------------------------------------------------------- bars
    def bars(self) -> dict[str, Bar]:
        """Each language's fluency bar (`steer.bench.fluency.bars`) from human text in it, the true continuations of
        up to `n_baseline` tuning-half paragraphs, and the same texts with their tokens shuffled."""
        if self._bars is None:
            human = self._human("tune", self.n_baseline, self.languages)
            names = {lang: f"bar/tune/{self.n_baseline}/{lang}" for lang in self.languages}

            def shuffled(lang: str) -> dict:
                texts = [shuffle_tokens(self.model.tokenizer, text, self.seed) for text in human[lang][1]["texts"]]
                return {"texts": texts, "scores": [asdict(s) for s in score_continuations(self.model, texts,
                                                                                          batch_size=self.batch_size)]}

            done = self._units([(names[lang], lambda lang=lang: shuffled(lang)) for lang in self.languages
                                if human[lang][0]], "fluency bars (shuffled text)")
            self._bars = bars({lang: [Score(**s) for s in unit["scores"]] for lang, (_, unit) in human.items()},
                              {lang: [Score(**s) for s in done[names[lang]]["scores"]] for lang in self.languages
                               if names[lang] in done})
        return self._bars

    def _human(self, half: str, n: int, targets: Sequence[str]) -> dict[str, tuple[list[Item], dict]]:
        """Per target, (items, unit) of the true continuations of up to `n` of its paragraphs (seeded order; after
        the prompt, cut to `max_new_tokens` tokens; paragraphs too short are skipped, unless none is long enough,
        as in a tiny test corpus: then every non-empty rest, as long as it is)."""
        tokenizer = self.model.tokenizer
        chosen = {}
        for t in targets:
            texts = self.texts[half][t]
            items, truths = [], []
            for need in (self.max_new_tokens, 1):  # a tiny corpus with no paragraph that long: what there is
                for i in _order(len(texts), "human", self.seed, t):
                    prompt = make_prompt(texts[i], self.prompt, self.prompt_words) if texts[i].strip() else ""
                    truth = true_continuation(tokenizer, texts[i], prompt, need) if prompt else None
                    if truth:
                        items.append(Item(t, None, i, prompt))
                        truths.append(truth)
                    if len(items) == n:
                        break
                if items:
                    break
            chosen[t] = (items, truths)

        def unit(truths: list[str], prompts: list[str]) -> dict:
            return {"texts": truths, "detected": top_language(truths),
                    "detected_among": detect_language(truths, candidates=self.languages),
                    "scores": [asdict(s) for s in score_continuations(self.model, truths, batch_size=self.batch_size)],
                    "prompts": prompts}

        names = {t: f"human/{half}/{n}/{t}" for t in targets}
        done = self._units([(names[t], lambda t=t: unit(chosen[t][1], [i.prompt for i in chosen[t][0]]))
                            for t in targets if chosen[t][0]], f"human text ({half})")
        return {t: (chosen[t][0], done[names[t]] if chosen[t][0] else _EMPTY) for t in targets}

    # -------------------------------------------------------------- groups of judged rows, per target
    def forced_rows(self, setting: Setting, half: str, per_pair: int, targets: Sequence[str] | None = None, *,
                    neurons=None, label: str = "forced") -> dict[str, list[dict]]:
        """Per target, the judged rows of its (source, paragraph) items forced under `setting` (`neurons`: another
        set than the setting's, e.g. a random control)."""
        targets = self._targets(targets)
        neurons = self.neuron_sets[setting.neurons] if neurons is None else neurons
        items = self.pairs(half, per_pair, targets)
        if setting.push is not None:
            missing = [t for t in targets if t not in self.pushes.get(setting.push, {})]
            if missing:
                raise ValueError(f"no learned push '{setting.push}' for {', '.join(missing)} in this run")
        fp = self._fingerprint(neurons) if setting.push is None else push_fingerprint(
            [self.pushes[setting.push][t] for t in targets])
        return self._judged(items, {t: f"{label}/{half}/{per_pair}/{fp}/{setting.name}/{t}" for t in targets},
                            lambda t: self._continue(items[t], t, setting, neurons), f"{label} {setting.name} ({half})")

    def _judged(self, items: dict[str, list[Item]], names: dict[str, str], compute: Callable[[str], dict],
                desc: str) -> dict[str, list[dict]]:
        """Per target, the judged rows of the unit `names[target]` over `items[target]` (`compute(target)` makes a
        unit not yet done)."""
        done = self._units([(name, lambda t=t: compute(t)) for t, name in names.items()], desc)
        return {t: self._rows(items[t], done[name], t) for t, name in names.items()}

    def unsteered_rows(self, half: str, per_pair: int, targets: Sequence[str] | None = None) -> dict[str, list[dict]]:
        """Per target, the same items as `forced_rows`, continued without steering."""
        targets = self._targets(targets)
        items = self.pairs(half, per_pair, targets)
        return self._judged(items, {t: f"unsteered/{half}/{per_pair}/{t}" for t in targets},
                            lambda t: self._continue(items[t], None, None, None), f"unsteered ({half})")

    def own_rows(self, half: str, n: int, targets: Sequence[str] | None = None) -> dict[str, list[dict]]:
        """Own-text ceiling: per target, the unsteered continuations of `n` prompts written in it."""
        targets = self._targets(targets)
        items = own_paragraphs(self.texts[half], targets, n, self.seed, kind=self.prompt, n_words=self.prompt_words)
        return self._judged(items, {t: f"own/{half}/{n}/{t}" for t in targets},
                            lambda t: self._continue(items[t], None, None, None), f"own text ({half})")

    def human_rows(self, half: str, n: int, targets: Sequence[str] | None = None) -> dict[str, list[dict]]:
        """Human-text ceiling: per target, the true continuations of up to `n` paragraphs written in it (after the
        prompt, cut to the continuations' token count; paragraphs too short are skipped)."""
        targets = self._targets(targets)
        return {t: self._rows(items, unit, t) for t, (items, unit) in self._human(half, n, targets).items()}

    def pairs(self, half: str, per_pair: int, targets: Sequence[str]) -> dict[str, list[Item]]:
        return pair_paragraphs(self.texts[half], self.languages, targets, per_pair, self.seed, kind=self.prompt,
                               n_words=self.prompt_words)

    def _targets(self, targets: Sequence[str] | None) -> list[str]:
        if targets is None:
            return list(self.languages)
        unknown = [t for t in targets if t not in self.languages]
        if unknown:
            raise ValueError(f"unknown target '{unknown[0]}' (languages: {', '.join(self.languages)})")
        return list(targets)

    # -------------------------------------------------------------- sweeps and reports
    def sweep_cell(self, setting: Setting, per_pair: int, targets: Sequence[str] | None = None, *,
                   min_paragraphs: int = MIN_SWEEP_PARAGRAPHS) -> SweepRow:
        """One setting on the tuning half: `per_pair` prompts per (source, target), at least `min_paragraphs`
        paragraphs per target."""
        per_target = min(per_pair * (len(self.languages) - 1), min(len(t) for t in self.texts["tune"].values()))
        if per_target < min_paragraphs:
            raise ValueError(f"a sweep cell needs at least {min_paragraphs} paragraphs per target; {per_pair} per "
                             f"source × {len(self.languages) - 1} sources from a tuning half of "
                             f"{min(len(t) for t in self.texts['tune'].values())} gives {per_target}: raise the "
                             f"prompts per pair or give the corpus more held-out paragraphs")
        rows = self.forced_rows(setting, "tune", per_pair, targets)
        flat = [row for group in rows.values() for row in group]
        return SweepRow(dict(setting.to_dict(), neurons=setting.neurons), Rates.of(flat, self.seed),
                        {t: {"raw": _mean(r["in_target"] for r in group), "fluent": _mean(r["fluent"] for r in group),
                             "n": len(group)} for t, group in rows.items()})

    def report(self, setting: Setting, *, half: str = "eval", per_pair: int = 3, n_random: int = 3,
               random_seed: int = 0, n_own: int | None = None, targets: Sequence[str] | None = None,
               n_examples: int = 1, sweep: list[SweepRow] | None = None) -> ForcedResult:
        """`setting` on `half` (every ordered pair, `per_pair` prompts each) beside every control: unsteered, the same
        push on `n_random` random neuron sets with the same per-layer counts (seeds `random_seed`…), and the
        own-text and human-text ceilings (`n_own` paragraphs per target; default: as many as it has continuations)."""
        targets = self._targets(targets)
        neurons = self.neuron_sets[setting.neurons]
        n_own = per_pair * (len(self.languages) - 1) if n_own is None else n_own
        forced = self.forced_rows(setting, half, per_pair, targets)
        plain = self.unsteered_rows(half, per_pair, targets)
        if setting.push is None:  # the same push on random neurons with the same per-layer counts
            randoms = [self.forced_rows(setting, half, per_pair, targets,
                                        neurons=neurons.random_like(seed=random_seed + k), label=f"random{random_seed + k}")
                       for k in range(n_random)]
        else:  # a learned push's control: pushes learned the same way on random neurons, where the run has them
            controls = [name for name in (random_push_name(setting.push, random_seed + k) for k in range(n_random))
                        if all(t in self.pushes.get(name, {}) for t in targets)]
            randoms = [self.forced_rows(replace(setting, push=name), half, per_pair, targets, label=name)
                       for name in controls]
        own = self.own_rows(half, n_own, targets)
        human = self.human_rows(half, n_own, targets)
        bar_of = self.bars()

        def pooled(groups: dict[str, list[dict]]) -> list[dict]:
            return [row for t in targets for row in groups[t]]

        per_target = {}
        for t in targets:
            rand_rows = [row for r in randoms for row in r[t]]
            per_target[t] = TargetResult(
                forced=Rates.of(forced[t], self.seed), unsteered=Rates.of(plain[t], self.seed),
                random=Rates.of(rand_rows, self.seed) if rand_rows else None,
                random_per_seed=[_mean(row["fluent"] for row in r[t]) for r in randoms],
                own_text=Rates.of(own[t], self.seed), human_text=Rates.of(human[t], self.seed),
                bar=bar_of[t].to_dict(),
                fluency_nll=mean_or_none([row["nll"] for row in forced[t] if row["fluent"]]),
                own_language_nll=mean_or_none([row["nll"] for row in own[t]]),
                human_nll=mean_or_none([row["nll"] for row in human[t]]),
                failures=dict(Counter(row["reason"] or "fluent" for row in forced[t])),
                confusion=dict(Counter(row["detected_among"] for row in forced[t])),
            )
        main = pooled(forced)
        overall = Rates.of(main, self.seed)
        all_random = [row for r in randoms for row in pooled(r)]
        sources = list(self.languages)
        matrix = {(row["source"], row["target"]): [] for row in main}
        for row in main:
            matrix[row["source"], row["target"]].append(row)
        raw_matrix = [[_mean(r["in_target"] for r in matrix[s, t]) if (s, t) in matrix else None for t in targets]
                      for s in sources]
        fluent_matrix = [[_mean(r["fluent"] for r in matrix[s, t]) if (s, t) in matrix else None for t in targets]
                         for s in sources]
        examples = []
        for t in targets:
            ranked = sorted(forced[t], key=lambda r: (not r["fluent"], not r["in_target"]))
            examples += ranked[:n_examples]
        return ForcedResult(
            languages=list(self.languages), method=neurons.method, setting=setting.to_dict(), prompt=self.prompt,
            half=half, n_per_pair=per_pair, seed=self.seed, decoding=dict(self.decoding), judge=dict(JUDGE_CONSTANTS),
            raw_success=overall.raw_success, raw_success_ci=overall.raw_success_ci,
            fluent_success=overall.fluent_success, fluent_success_ci=overall.fluent_success_ci,
            n=overall.n, n_paragraphs=overall.n_paragraphs,
            unsteered=Rates.of(pooled(plain), self.seed),
            random=Rates.of(all_random, self.seed) if all_random else None,
            random_per_seed=[_mean(row["fluent"] for row in pooled(r)) for r in randoms],
            own_text=Rates.of(pooled(own), self.seed), human_text=Rates.of(pooled(human), self.seed),
            per_target=per_target,
            per_source={s: Rates.of([row for row in main if row["source"] == s], self.seed) for s in sources},
            raw_matrix=raw_matrix, fluent_matrix=fluent_matrix,
            bars={lang: b.to_dict() for lang, b in bar_of.items()},
            split={"tune": "first half of each language's held-out paragraphs (sweeps, fluency bars)",
                   "eval": "second half (every reported figure)",
                   "sizes": {lang: [len(self.texts["tune"][lang]), len(self.texts["eval"][lang])]
                             for lang in self.languages},
                   "n_baseline": self.n_baseline, "n_own": n_own, "n_random": n_random, "random_seed": random_seed},
            examples=examples, continuations=main, sweep=[row.to_dict() for row in sweep] if sweep else None,
        )


_EMPTY = {"texts": [], "detected": [], "detected_among": [], "scores": [], "prompts": []}


def _row(item: Item, target: str, text: str, detected: str, among: str, score: Score, verdict: Verdict) -> dict:
    return {"source": item.source, "target": target, "paragraph": item.paragraph, "prompt": item.prompt,
            "continuation": text, "detected": detected, "detected_among": among, "nll": score.nll,
            "in_target": verdict.in_target, "fluent": verdict.fluent, "reason": verdict.reason}


def _mean(flags: Iterable) -> float | None:
    flags = [bool(f) for f in flags]
    return sum(flags) / len(flags) if flags else None


def push_fingerprint(pushes) -> str:
    """A hash of learned pushes' content (targets, sites, units, offsets)."""
    digest = hashlib.sha256()
    for push in pushes:
        digest.update(f"{push.target}/{push.site}/{push.width}".encode())
        for tensor in (push.layers, push.neurons, push.offsets):
            digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def random_push_name(name: str, seed: int) -> str:
    """The name of the random-neuron control of the learned pushes `name` (fitted on `random_like(seed)`)."""
    return f"{name}@random{seed}"


def neuron_set(spec: str, stats):
    """A neuron set by name: 'zhang2025', 'lape', 'specificity:500' (K per language), each optionally '@first-last'
    (only those layers, specific and related classes)."""
    from steer.identification import identify

    name, _, layers = spec.partition("@")
    method, _, k = name.partition(":")
    neurons = identify(stats, method=method, **({"n_per_language": int(k)} if k else {}))
    if layers:
        first, last = (int(x) for x in layers.split("-"))
        neurons = neurons.select(layers=range(first, last + 1), classes=("specific", "related"))
    return neurons


# ---------------------------------------------------------------------------------------------- the benchmark
@dataclass
class ForcedBench:
    """`[bench.forced]`: the arguments of `forced_language` (mode None: the default mode)."""

    neurons: str = ""
    prompt: str = "prefix"
    n_prompts: int = 3  # per (source, target) pair, each from its own paragraph
    prompt_words: int = PROMPT_WORDS
    mode: str | None = None
    strength: float | None = None
    suppress: str | None = None
    steps: int | str = STEPS_DEFAULT  # new tokens to force, or "all"; default: the push's (4; a learned one every)
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    n_baseline: int = 100  # tuning-half paragraphs per language (at most) whose true continuations set the NLL bar
    n_random: int = 3
    seed: int = 0
    sweep_modes: list[str] = field(default_factory=list)
    sweep_strengths: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])
    sweep_suppress: list[str] = field(default_factory=lambda: [DEFAULT_SUPPRESS])
    sweep_n_prompts: int = 3
    sweep_targets: list[Lang] | None = None
    max_new_tokens: int = 16
    batch_size: int = 32
    push: str = ""  # "learned": force with a LanguagePush fitted per target on `neurons` (steer.fit_push) instead
    push_steps: int = 60  # its most training steps (early stopping on held-out stats-split paragraphs)
    push_random: int = 1  # pushes fitted the same way on random neurons (same per-layer counts), as the control

    def check(self, where: str) -> None:
        if self.push not in ("", "learned"):
            raise ValueError(f"{where}: push must be \"\" or \"learned\", got {self.push!r}")
        check_at_least(where, push_steps=(self.push_steps, 1), push_random=(self.push_random, 0))
        for mode in [self.mode, *self.sweep_modes]:
            try:
                if mode is not None:
                    check_mode(mode)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
        for choice in [self.suppress, *self.sweep_suppress]:
            if choice is not None and choice not in SUPPRESS:
                raise ValueError(f"{where}: unknown suppress '{choice}' (known: {', '.join(SUPPRESS)})")
        if self.prompt not in PROMPT_KINDS:
            raise ValueError(f"{where}: unknown prompt '{self.prompt}' (known: {', '.join(PROMPT_KINDS)})")
        try:
            parse_steps(default_steps(self.steps, self.push or None))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if self.n_prompts < 1 or self.max_new_tokens < 1 or self.n_baseline < 1:
            raise ValueError(f"{where}: n_prompts, n_baseline and max_new_tokens must be at least 1")
        check_at_least(where, prompt_words=(self.prompt_words, 1), sweep_n_prompts=(self.sweep_n_prompts, 1),
                       batch_size=(self.batch_size, 1), n_random=(self.n_random, 0),
                       no_repeat_ngram_size=(self.no_repeat_ngram_size, 0))
        if self.repetition_penalty is not None and not self.repetition_penalty > 0:
            raise ValueError(f"{where}: repetition_penalty must be above 0 (1.0: none), got {self.repetition_penalty}")

    def check_corpus(self, corpus, where: str) -> None:
        """Before the model loads: the held-out split must give both halves (tuning, reporting) a paragraph, and
        a learned push needs a parallel corpus to train on."""
        if self.push and not corpus.parallel:
            raise ValueError(f"{where}: push = \"learned\" trains on parallel text; this corpus is not parallel")
        short = [lang for lang in corpus.languages if len(corpus.eval[lang]) < 2]
        if short:
            raise ValueError(f"{where}: forcing a language needs at least 2 held-out paragraphs per language (the "
                             f"first half tunes, the second reports); {', '.join(short)} has fewer: give the corpus "
                             "more eval texts")


def forced_language(
    model,
    neurons,
    stats,
    eval_texts: dict[str, list[str]],
    *,
    languages: Sequence[str] | None = None,
    prompt: str = "prefix",
    n_prompts: int = 3,
    prompt_words: int = PROMPT_WORDS,
    mode: str = DEFAULT_FORCE_MODE,
    strength: float | None = None,
    suppress: str = DEFAULT_SUPPRESS,
    steps: int | None | str = STEPS_DEFAULT,
    push: str | None = None,
    pushes: dict | None = None,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    n_baseline: int = 100,
    n_random: int = 3,
    n_own: int | None = None,
    seed: int = 0,
    sweep_modes: Sequence[str] = (),
    sweep_strengths: Sequence[float] = (1.0, 2.0, 4.0),
    sweep_suppress: Sequence[str] = (DEFAULT_SUPPRESS,),
    sweep_n_prompts: int = 3,
    sweep_targets: Sequence[str] | None = None,
    sweep_min_paragraphs: int = MIN_SWEEP_PARAGRAPHS,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    n_examples: int = 1,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> ForcedResult:
    """Raw and fluent success at (`mode`, `strength`, `suppress`, `steps`) on the evaluation half, with controls.

    `eval_texts`: every held-out paragraph per language; `halves` splits them. Every ordered (source,
    target) pair continues `n_prompts` prompts (`prompt`: "prefix" or "sentence") from paragraphs of
    its own, drawn with `seed`. Beside it: the unsteered model on the same prompts, the same push on
    `n_random` random neuron sets with the same per-layer counts, the model's own text and the true
    text in the target (ceilings). The fluency bars come from human text: the true continuations of
    `n_baseline` tuning-half paragraphs per language. The optional sweep (every mode × strength × suppress of `sweep_modes`…) reads the
    tuning half, `sweep_n_prompts` per pair (at least `sweep_min_paragraphs` per target). Every
    continuation uses the same decoding (greedy, `repetition_penalty` / `no_repeat_ngram_size`; None:
    `steer.forcing.DEFAULT_DECODING`), and every forced one the same `steps` (None: every step).
    """
    for choice in (suppress, *sweep_suppress):
        if choice not in SUPPRESS:
            raise ValueError(f"suppress must be among {', '.join(SUPPRESS)}, got '{choice}'")
    for each in [mode, *sweep_modes]:
        check_mode(each)
    setting = Setting("default", mode, strength, suppress, "all", steps, push)
    run = ForcedRun(model, stats, eval_texts, {"default": neurons}, languages=languages, prompt=prompt,
                    prompt_words=prompt_words, max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
                    no_repeat_ngram_size=no_repeat_ngram_size, n_baseline=n_baseline, seed=seed,
                    batch_size=batch_size, checkpoint=checkpoint, progress=progress, pushes=pushes)
    targets = run.languages if sweep_targets is None else [t for t in sweep_targets if t in run.languages]
    sweep = [run.sweep_cell(replace(setting, mode=m, strength=float(s), suppress=sup), sweep_n_prompts, targets,
                            min_paragraphs=sweep_min_paragraphs)
             for m in sweep_modes for s in sweep_strengths for sup in sweep_suppress]
    return run.report(setting, per_pair=n_prompts, n_random=n_random, n_own=n_own, n_examples=n_examples,
                      sweep=sweep or None)


def fitted_push(model, corpus, target: str, where: Path, training, *, neurons=None, residual_layer: int | None = None,
                progress: bool = True, on_eval=None):
    """A LanguagePush for `target` fitted on the corpus' stats split (`steer.fit_push`, on `neurons` or, with
    `residual_layer`, the residual stream), or read from `where` when a push fitted from the same model, corpus,
    neurons (or layer) and training is there: a rerun resumes per push."""
    from steer.push import LanguagePush
    from steer.push_training import fit_push

    info = model_info(model)
    key = stable_hash({"model": {"name": info.name, "weights_hash": info.weights_hash},
                       "corpus": corpus.fingerprint(), "target": target,
                       "neurons": neuron_fingerprint(neurons) if neurons is not None else None,
                       "residual_layer": residual_layer, "training": asdict(training)})
    if (where / "push.safetensors").is_file():
        saved = LanguagePush.load(where, model=model)
        if saved.meta.get("bench_key") == key:
            return saved
    push = fit_push(model, corpus, target, neurons=neurons, residual_layer=residual_layer, training=training,
                    progress=progress, on_eval=on_eval)
    push.meta["bench_key"] = key
    push.save(where)
    return push


def fitted_pushes(ctx: Context, neurons, training, folder: Path, targets: Sequence[str]) -> dict:
    """target -> `fitted_push` on `neurons`, each in `folder/<target>`."""
    return {target: fitted_push(ctx.model, ctx.corpus, target, folder / target, training, neurons=neurons,
                                progress=ctx.progress) for target in targets}


def _run(ctx: Context, spec: ForcedBench, job: Job) -> dict:
    pushes = {}
    if spec.push:
        from steer.push_training import PushTraining

        training = PushTraining(max_steps=spec.push_steps, seed=spec.seed)
        neurons, folder = ctx.neurons[spec.neurons], ctx.out / f"{job.name}-pushes"
        pushes["learned"] = fitted_pushes(ctx, neurons, training, folder / "learned", ctx.corpus.languages)
        for k in range(spec.push_random):
            pushes[random_push_name("learned", k)] = fitted_pushes(
                ctx, neurons.random_like(seed=k), training, folder / f"random{k}", ctx.corpus.languages)
    result = forced_language(
        ctx.model, ctx.neurons[spec.neurons], ctx.stats, {lang: list(ctx.corpus.eval[lang]) for lang in ctx.corpus.languages},
        prompt=spec.prompt, n_prompts=spec.n_prompts, prompt_words=spec.prompt_words,
        mode=spec.mode or DEFAULT_FORCE_MODE, strength=spec.strength, suppress=spec.suppress or DEFAULT_SUPPRESS,
        steps=parse_steps(default_steps(spec.steps, spec.push or None)), repetition_penalty=spec.repetition_penalty, no_repeat_ngram_size=spec.no_repeat_ngram_size,
        n_baseline=spec.n_baseline, n_random=spec.push_random if spec.push else spec.n_random, seed=spec.seed, sweep_modes=spec.sweep_modes,
        sweep_strengths=spec.sweep_strengths, sweep_suppress=spec.sweep_suppress, sweep_n_prompts=spec.sweep_n_prompts,
        sweep_targets=spec.sweep_targets, max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size,
        checkpoint=job.checkpoint, progress=ctx.progress, push="learned" if spec.push else None, pushes=pushes,
    ).to_dict()
    plot_forced(result, job.figures[0])
    result["neurons"] = spec.neurons
    return result


def _key(ctx: Context) -> dict:
    # the steering strengths come from the stats; a spec without mode/strength uses the defaults; the verdicts
    # depend on the judge's constants
    return {"stats": ctx.keys["stats"], "defaults": [DEFAULT_FORCE_MODE, DEFAULT_STRENGTH, DEFAULT_SUPPRESS, DEFAULT_STEPS,
                                       DEFAULT_PUSH_STEPS],
            "judge": JUDGE_CONSTANTS, "protocol": 2}


register(Benchmark(
    kind="forced", spec=ForcedBench, run=_run, figures=("{name}.png",), key=_key,
    section=lambda result, figures: forced_section(result, figures[0]),
))
