"""Multilingual alignment: fine-tune a model with LoRA on a parallel corpus and save the merged "after" model.

The recipe (objective ``"translation"``, the default): for every paragraph index ``i`` of the corpus'
``stats`` split (never ``eval``) and every trained language ``T``, two supervised examples::

    Translate from Basque to English:\\n<text in T>\\nEnglish: <text in the pivot><eos>
    Translate from English to Basque:\\n<text in the pivot>\\nBasque: <text in T><eos>

The loss is the mean cross-entropy on the answer tokens only (the prompt and the padding carry no loss).
Objective ``"dpo"`` uses the same prompts with Direct Preference Optimisation (Rafailov et al. 2023):
the translation is preferred over an untranslated copy of the source (the answer in the wrong
language), and the reference model is the base model (the LoRA adapter switched off).

Training is LoRA (``peft``) on the linear projections, AdamW with a short linear warm-up and a linear
decay, gradient clipping at 1.0, and is deterministic on CPU: the example order is a seeded function
of the step, so an interrupted run resumes from ``out/checkpoint/`` and ends with exactly the weights
an uninterrupted run would have. At the end the adapter is merged into the weights and ``out/`` holds
a plain model folder (loadable by ``steer.load_model(out)``), the LoRA adapter in ``out/adapter/`` and
``out/align.json`` with everything needed to reproduce and check the run.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import torch

from steer._io import atomic_dir, steer_version, write_json_atomic
from steer.languages import language_name

__all__ = [
    "AlignConfig",
    "Example",
    "OBJECTIVES",
    "PROMPT_TEMPLATE",
    "align",
    "build_examples",
    "language_name",
    "read_align_info",
    "translation_prompt",
]

OBJECTIVES = ("translation", "dpo")
PROMPT_TEMPLATE = "Translate from {src_name} to {tgt_name}:\n{src_text}\n{tgt_name}:"
DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

_FORMAT = "steer.align"
_CHECKPOINT_FORMAT = "steer.align.checkpoint"
_FORMAT_VERSION = 1
_IGNORE_ON_RESUME = ("checkpoint_every",)  # settings that do not change the result
_MAX_WARMUP = 10


class _Stop(Exception):
    """Raised by the `_stop_after` test hook: the run stops as if killed after that step."""


def translation_prompt(src_lang: str, tgt_lang: str, text: str) -> str:
    """The prompt the alignment trains on; the answer follows after one space. Use it to evaluate the model."""
    return PROMPT_TEMPLATE.format(src_name=language_name(src_lang), tgt_name=language_name(tgt_lang), src_text=text)


# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class AlignConfig:
    """Settings of one alignment run; saved in the checkpoint and in ``align.json``.

    The defaults are sized for Gemma 3 270M on a 2-core CPU: about 3.5 s a step (batch 4, 128 tokens,
    float32), so 200 steps take about 13 minutes with loading and saving when the CPU is not shared.
    ``beta`` is used by the "dpo" objective only. ``checkpoint_every`` does not change the result, so a
    run may be resumed with another value.
    """

    train_languages: list[str]
    pivot: str = "en"
    objective: str = "translation"
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))
    steps: int = 200
    batch_size: int = 4
    lr: float = 2e-4
    max_length: int = 128
    seed: int = 0
    max_pairs: int | None = None
    checkpoint_every: int = 50
    beta: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.train_languages, str):
            self.train_languages = [s.strip() for s in self.train_languages.split(",") if s.strip()]
        self.train_languages = list(self.train_languages)
        self.target_modules = list(self.target_modules)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlignConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown AlignConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def validate(self) -> None:
        """Raise a one-line ValueError for settings that cannot work (checked before any work)."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective '{self.objective}': use one of {', '.join(OBJECTIVES)}")
        if not self.train_languages:
            raise ValueError("no languages to train: give at least one, e.g. train_languages=['eu', 'om']")
        if len(set(self.train_languages)) != len(self.train_languages):
            raise ValueError(f"duplicate train languages {self.train_languages}: list each language once")
        if self.pivot in self.train_languages:
            raise ValueError(
                f"the pivot '{self.pivot}' is also a train language: drop it from the train languages "
                "(every example translates between a train language and the pivot)"
            )
        checks = [
            ("steps", self.steps >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("rank", self.rank >= 1, "at least 1"),
            ("alpha", self.alpha > 0, "positive"),
            ("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "positive"),
            ("max_length", self.max_length >= 16, "at least 16 tokens"),
            ("checkpoint_every", self.checkpoint_every >= 1, "at least 1"),
            ("max_pairs", self.max_pairs is None or self.max_pairs >= 1, "at least 1 (or None for all)"),
            ("beta", self.beta > 0, "positive"),
        ]
        for name, ok, need in checks:
            if not ok:
                raise ValueError(f"{name} must be {need} (got {getattr(self, name)!r})")
        if not self.target_modules:
            raise ValueError("target_modules is empty: name the linear layers to adapt, e.g. q_proj, v_proj")

    def check_corpus(self, corpus) -> None:
        """Raise a one-line ValueError when the corpus cannot serve these settings."""
        missing = [lang for lang in self.train_languages if lang not in corpus.languages]
        if missing:
            raise ValueError(
                f"train language(s) {missing} not in the corpus (it has {corpus.languages}): "
                "pick train languages from those or build a corpus that includes them"
            )
        if self.pivot not in corpus.languages:
            raise ValueError(
                f"pivot language '{self.pivot}' is not in the corpus (it has {corpus.languages}): "
                "build the corpus with it or choose another pivot"
            )
        if not corpus.parallel:
            raise ValueError(
                "alignment needs a parallel corpus (the same paragraph at the same index in every language); "
                "build one with `steer corpus build`"
            )

    def _resume_key(self) -> dict[str, Any]:
        data = json.loads(json.dumps(self.to_dict()))
        for key in _IGNORE_ON_RESUME:
            data.pop(key, None)
        return data


# --------------------------------------------------------------------------------------------------
# Examples and batches


@dataclass(frozen=True)
class Example:
    """One training example: translate paragraph `index` from `src_lang` to `tgt_lang`."""

    index: int
    src_lang: str
    tgt_lang: str
    src_text: str
    tgt_text: str


def build_examples(corpus, config: AlignConfig) -> list[Example]:
    """The examples of the run, in a fixed order (paragraph, language, direction); `stats` split only."""
    langs = [*config.train_languages, config.pivot]
    usable = [i for i in range(len(corpus.stats[config.pivot])) if all(corpus.stats[lang][i].strip() for lang in langs)]
    if config.max_pairs is not None and config.max_pairs < len(usable):
        generator = torch.Generator().manual_seed(config.seed)
        keep = torch.randperm(len(usable), generator=generator)[: config.max_pairs].sort().values.tolist()
        usable = [usable[k] for k in keep]
    examples = []
    for i in usable:
        pivot_text = corpus.stats[config.pivot][i].strip()
        for lang in config.train_languages:
            text = corpus.stats[lang][i].strip()
            if text == pivot_text:  # untranslated: it would teach the model to answer in the pivot
                continue
            examples.append(Example(i, lang, config.pivot, text, pivot_text))
            examples.append(Example(i, config.pivot, lang, pivot_text, text))
    if not examples:
        raise ValueError(
            f"the corpus has no translated paragraph in all of {langs} in its stats split: "
            "build a parallel corpus with these languages"
        )
    return examples


class _Encoder:
    """Token ids of prompt + answer, truncated to `max_length`, with the prompt length (no loss there)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.eos = tokenizer.eos_token_id
        if self.eos is None:
            raise ValueError("the tokenizer has no eos token; alignment needs one to end each answer")
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        bos = tokenizer.bos_token_id
        probe = tokenizer("Translate").input_ids
        self.prefix = [bos] if bos is not None and probe[:1] == [bos] else []
        self.head, self.tail = PROMPT_TEMPLATE.split("{src_text}")
        self._cache: dict[str, list[int]] = {}  # the few distinct prompt heads and tails

    def _ids(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self.tokenizer(text, add_special_tokens=False).input_ids
        return self._cache[text]

    def encode(self, example: Example, answer: str) -> tuple[list[int], int]:
        names = {"src_name": language_name(example.src_lang), "tgt_name": language_name(example.tgt_lang)}
        head = self.prefix + self._ids(self.head.format(**names))
        tail = self._ids(self.tail.format(**names))
        src = self.tokenizer(example.src_text, add_special_tokens=False).input_ids
        tgt = self.tokenizer(" " + answer, add_special_tokens=False).input_ids + [self.eos]
        room = self.max_length - len(head) - len(tail)
        if room < 2:
            raise ValueError(f"max_length {self.max_length} leaves no room after the prompt; use at least 64")
        if len(src) + len(tgt) > room:  # share the room: the shorter part keeps all it needs
            half = room // 2
            if len(src) <= half:
                tgt = tgt[: room - len(src)]
            elif len(tgt) <= room - half:
                src = src[: room - len(tgt)]
            else:
                src, tgt = src[:half], tgt[: room - half]
        prompt = head + src + tail
        return prompt + tgt, len(prompt)


def _collate(rows: list[tuple[list[int], int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 on the prompt and the padding)."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for r, (ids, n_prompt) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        attention[r, : len(ids)] = 1
        labels[r, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return input_ids, attention, labels


class _Order:
    """Which examples make up step `s`: consecutive slices of seeded per-epoch permutations (stateless)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=generator).tolist()}
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        start = step * self.batch_size
        return [self._perm(p // self.n)[p % self.n] for p in range(start, start + self.batch_size)]


def _lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first min(10, steps // 10) steps, then linear decay (never to zero)."""
    warmup = max(1, min(_MAX_WARMUP, steps // 10))
    if step < warmup:
        return (step + 1) / warmup
    return (steps - step) / max(1, steps - warmup)


# --------------------------------------------------------------------------------------------------
# Losses


class _Scorer:
    """Log-probabilities of the answer tokens. Runs the LM head only where there are labels when that is
    exactly the model's own computation (checked once), else falls back to the full forward."""

    def __init__(self, model):
        self.model = model
        self.fast = False

    def _full_logits(self, input_ids, attention, select):
        logits = self.model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
        return logits[:, :-1][select]

    def _fast_logits(self, input_ids, attention, select):
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention, use_cache=False).last_hidden_state
        logits = base.get_output_embeddings()(hidden[:, :-1][select])
        cap = getattr(base.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def decide(self, input_ids, attention, labels) -> bool:
        """Use the fast path only if it gives the model's own logits on this batch (run in eval mode, so no
        random numbers are drawn and a resumed run stays exact)."""
        select = labels[:, 1:] != -100
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                fast = self._fast_logits(input_ids, attention, select)
                full = self._full_logits(input_ids, attention, select)
            self.fast = fast.shape == full.shape and bool(torch.allclose(fast, full, atol=1e-4, rtol=1e-4))
        except Exception:
            self.fast = False
        finally:
            self.model.train(was_training)
        return self.fast

    def token_logprobs(self, input_ids, attention, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p of each answer token [N], row of each token [N]) for the shifted labels."""
        target = labels[:, 1:]
        select = target != -100
        get = self._fast_logits if self.fast else self._full_logits
        logits = get(input_ids, attention, select).float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target[select].unsqueeze(-1)).squeeze(-1)
        rows = torch.arange(labels.shape[0]).unsqueeze(1).expand_as(target)[select]
        return logp, rows


def _sequence_logprobs(scorer: _Scorer, batch, n_rows: int) -> torch.Tensor:
    logp, rows = scorer.token_logprobs(*batch)
    return torch.zeros(n_rows, dtype=logp.dtype).index_add(0, rows, logp)


# --------------------------------------------------------------------------------------------------
# The run


def _trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _present_targets(hf_model, wanted: list[str]) -> list[str]:
    from transformers.pytorch_utils import Conv1D

    output = hf_model.get_output_embeddings()
    leaves = {
        name.rsplit(".", 1)[-1]
        for name, m in hf_model.named_modules()
        if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not output
    }
    present = [t for t in wanted if t in leaves]
    if not present:
        raise ValueError(
            f"none of the target modules {wanted} is a linear layer of this model; it has {sorted(leaves)}"
        )
    return present


def _uses_conv1d(hf_model, targets: list[str]) -> bool:
    """GPT-2 style models store their projections transposed (`Conv1D`); LoRA must be told."""
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) and name.rsplit(".", 1)[-1] in targets for name, m in hf_model.named_modules())


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed torch and random and turn on deterministic algorithms; restore all of it on exit."""
    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    py_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.manual_seed(seed)
            random.seed(seed)
            yield
        finally:
            torch.use_deterministic_algorithms(was_on, warn_only=was_warn)
            random.setstate(py_state)


def _load_base(source: str, device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steer.models.embedded import quiet_transformers

    with quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(source)
        hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(device)
    return tokenizer, hf_model


def _identity(config: AlignConfig, base_hash: str, corpus) -> dict[str, Any]:
    return {
        "config": config._resume_key(),
        "base_weights_hash": base_hash,
        "corpus_fingerprint": corpus.fingerprint(),
    }


def _differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    diffs = []
    stored_config = dict(stored.get("config", {}))
    for key in _IGNORE_ON_RESUME:
        stored_config.pop(key, None)
    for key in sorted(set(stored_config) | set(wanted["config"])):
        if stored_config.get(key) != wanted["config"].get(key):
            diffs.append(f"{key}: {stored_config.get(key)!r} there, {wanted['config'].get(key)!r} now")
    if stored.get("base_weights_hash") != wanted["base_weights_hash"]:
        diffs.append("another base model")
    if stored.get("corpus_fingerprint") != wanted["corpus_fingerprint"]:
        diffs.append("another corpus")
    return diffs


def read_align_info(path: str | Path) -> dict[str, Any]:
    """The ``align.json`` of a folder written by :func:`align` (ValueError if it is not one)."""
    file = Path(path) / "align.json"
    if not file.is_file():
        raise ValueError(f"{path} is not a folder written by steer align (no align.json)")
    info = json.loads(file.read_text(encoding="utf-8"))
    if info.get("format") != _FORMAT:
        raise ValueError(f"{file} is not a steer align file (format={info.get('format')!r})")
    if info.get("format_version", 0) > _FORMAT_VERSION:
        raise ValueError(f"{file} has format version {info['format_version']}; upgrade steer to read it")
    return info


def _check_out(out: Path, identity: dict[str, Any]) -> str:
    """'done' (out already holds this very result), 'resume', or 'fresh'; ValueError when out holds something else."""
    if (out / "align.json").is_file():
        diffs = _differences(read_align_info(out), identity)
        if diffs:
            raise ValueError(
                f"{out} already holds an aligned model made with other settings ({'; '.join(diffs)}): "
                "choose another output folder or delete it"
            )
        return "done"
    state = out / "checkpoint" / "state.json"
    if state.is_file():
        stored = json.loads(state.read_text(encoding="utf-8"))
        diffs = _differences(stored, identity)
        if diffs:
            raise ValueError(
                f"{out / 'checkpoint'} was made with other settings ({'; '.join(diffs)}): rerun with the same "
                f"arguments to resume it, or delete {out / 'checkpoint'} to start over"
            )
        return "resume"
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{out} exists and is not a folder; choose another output folder")
        others = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        if others:
            raise ValueError(
                f"{out} exists and is not a steer align folder (it holds {sorted(others)[:5]}); "
                "choose another output folder or empty it"
            )
    return "fresh"


def _save_checkpoint(folder: Path, model, optimizer, step: int, identity: dict, extra: dict) -> None:
    from safetensors.torch import save_file

    params = _trainable(model)
    adapter = {name: p.detach().to("cpu").contiguous().clone() for name, p in params}
    opt_tensors: dict[str, torch.Tensor] = {"torch_rng_state": torch.get_rng_state().clone()}
    for name, p in params:
        for key, value in optimizer.state.get(p, {}).items():
            if torch.is_tensor(value):
                opt_tensors[f"{name}::{key}"] = value.detach().to("cpu").contiguous().clone()
    state = {"format": _CHECKPOINT_FORMAT, "format_version": _FORMAT_VERSION, "steer_version": steer_version(),
             "step": step, **identity, **extra}  # fmt: skip
    with atomic_dir(folder, "state.json") as tmp:
        tmp.mkdir()
        save_file(adapter, str(tmp / "adapter.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def _load_checkpoint(folder: Path, model, optimizer) -> dict[str, Any]:
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    adapter = load_file(str(folder / "adapter.safetensors"))
    opt_tensors = load_file(str(folder / "optimizer.safetensors"))
    params = _trainable(model)
    names = [name for name, _ in params]
    if sorted(names) != sorted(adapter):
        raise ValueError(f"{folder} does not match this model's adapter; delete it to start over")
    with torch.no_grad():
        for name, p in params:
            p.copy_(adapter[name].to(p.device))
    opt_state = optimizer.state_dict()
    for i, name in enumerate(names):
        entries = {k.split("::", 1)[1]: v for k, v in opt_tensors.items() if k.startswith(name + "::")}
        if entries:
            opt_state["state"][i] = entries
    optimizer.load_state_dict(opt_state)
    torch.set_rng_state(opt_tensors["torch_rng_state"])
    return state


def _copy_license_files(source: str, target: Path) -> None:
    folder = Path(source)
    if folder.is_dir():
        for pattern in ("*TERMS*", "LICENSE*", "NOTICE*", "USE_POLICY*"):
            for file in folder.glob(pattern):
                if file.is_file():
                    shutil.copy(file, target / file.name)


def align(
    model: str | Path,
    corpus,
    out: str | Path,
    config: AlignConfig,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    _stop_after: int | None = None,
) -> Path:
    """Fine-tune `model` towards `config.pivot` for `config.train_languages` and write the merged model to `out`.

    `model`: "gemma-3-270m", a local model folder or an HF id. `corpus`: a `Corpus` or anything
    `steer.corpus.load_corpus` accepts. Rerunning with the same arguments resumes from
    ``out/checkpoint/`` (saved every `config.checkpoint_every` steps) and gives the same final weights;
    rerunning after completion returns at once. Returns `out`, a model folder for `steer.load_model`.
    """
    from steer.corpus import Corpus, load_corpus
    from steer.models import resolve_model, weights_hash

    config.validate()
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus, progress=progress)
    config.check_corpus(corpus)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder; choose another output folder")
    base_name, source = resolve_model(model)
    examples = build_examples(corpus, config)

    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm

    tokenizer, hf_model = _load_base(source, device)
    base_hash = weights_hash(hf_model)
    identity = _identity(config, base_hash, corpus)
    where = _check_out(out, identity)
    if where == "done":
        if progress:
            print(f"{out} already holds this alignment; nothing to do")
        return out
    targets = _present_targets(hf_model, config.target_modules)
    encoder = _Encoder(tokenizer, config.max_length)
    order = _Order(len(examples), config.batch_size, config.seed)

    with _deterministic(config.seed):
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets,
                          bias="none", task_type="CAUSAL_LM", fan_in_fan_out=_uses_conv1d(hf_model, targets))  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(hf_model, lora)
        params = [p for _, p in _trainable(peft_model)]
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        scorer = _Scorer(peft_model)
        probe = _collate([encoder.encode(examples[0], examples[0].tgt_text)], encoder.pad)
        scorer.decide(*(t.to(device) for t in probe))
        step, losses, seconds = 0, [], 0.0
        if where == "resume":
            state = _load_checkpoint(out / "checkpoint", peft_model, optimizer)
            step, losses, seconds = int(state["step"]), list(state["losses"]), float(state["seconds"])
        peft_model.train()
        started = time.perf_counter()
        bar = tqdm(total=config.steps, initial=step, desc=f"align {'+'.join(config.train_languages)}",
                   disable=not progress, dynamic_ncols=True)  # fmt: skip
        try:
            while step < config.steps:
                batch = [examples[k] for k in order.batch(step)]
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * _lr_factor(step, config.steps)
                if config.objective == "translation":
                    loss = _translation_loss(scorer, encoder, batch, device)
                else:
                    loss = _dpo_loss(scorer, peft_model, encoder, batch, config.beta, device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                step += 1
                losses.append(round(float(loss.detach()), 6))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if step % config.checkpoint_every == 0 and step < config.steps:
                    extra = {"losses": losses, "seconds": seconds + time.perf_counter() - started,
                             "base_model": base_name}  # fmt: skip
                    _save_checkpoint(out / "checkpoint", peft_model, optimizer, step, identity, extra)
                if _stop_after is not None and step >= _stop_after and step < config.steps:
                    raise _Stop(f"stopped after step {step}")
        finally:
            bar.close()
        seconds += time.perf_counter() - started

        peft_model.eval()
        info = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "steer_version": steer_version(),
            "base_model": base_name,
            "base_source": source,
            "base_weights_hash": base_hash,
            "corpus_fingerprint": identity["corpus_fingerprint"],
            "corpus_source": corpus.source,
            "config": config.to_dict(),
            "target_modules_used": targets,
            "prompt_template": PROMPT_TEMPLATE,
            "language_names": {lang: language_name(lang) for lang in [*config.train_languages, config.pivot]},
            "n_examples": len(examples),
            "n_pairs": len({e.index for e in examples}),
            "steps": step,
            "losses": losses,
            "seconds": round(seconds, 3),
        }
        with atomic_dir(out, "align.json", "checkpoint/state.json") as tmp:
            tmp.mkdir()
            peft_model.save_pretrained(str(tmp / "adapter"))
            merged = peft_model.merge_and_unload()
            info["weights_hash"] = weights_hash(merged)
            merged.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            _copy_license_files(source, tmp)
            write_json_atomic(tmp / "align.json", info)
    return out


def _translation_loss(scorer: _Scorer, encoder: _Encoder, batch: list[Example], device) -> torch.Tensor:
    rows = [encoder.encode(e, e.tgt_text) for e in batch]
    tensors = tuple(t.to(device) for t in _collate(rows, encoder.pad))
    logp, _ = scorer.token_logprobs(*tensors)
    return -logp.mean()


def _dpo_loss(scorer: _Scorer, model, encoder: _Encoder, batch: list[Example], beta: float, device) -> torch.Tensor:
    """DPO: the translation (chosen) against an untranslated copy of the source (rejected)."""
    rows = [encoder.encode(e, e.tgt_text) for e in batch] + [encoder.encode(e, e.src_text) for e in batch]
    tensors = tuple(t.to(device) for t in _collate(rows, encoder.pad))
    n = len(batch)
    policy = _sequence_logprobs(scorer, tensors, 2 * n)
    with torch.no_grad(), model.disable_adapter():
        reference = _sequence_logprobs(scorer, tensors, 2 * n)
    margin = (policy[:n] - reference[:n]) - (policy[n:] - reference[n:])
    return -torch.nn.functional.logsigmoid(beta * margin).mean()
