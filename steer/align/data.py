"""What the alignment trains on: translation examples from a parallel corpus, their prompt, their tokens.

For every paragraph index ``i`` of the corpus' ``stats`` split (never ``eval``) and every trained
language ``T``, two examples: ``T`` to the pivot and the pivot to ``T``. An example is encoded as
prompt + " " + answer + eos, truncated to ``max_length``; only the answer's tokens carry a loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from steer.align.config import AlignConfig
from steer.languages import language_name
from steer.tokens import right_pad

PROMPT_TEMPLATE = "Translate from {src_name} to {tgt_name}:\n{src_text}\n{tgt_name}:"
IGNORE_INDEX = -100  # the label of a token without loss (prompt, padding), as HF models expect


def translation_prompt(src_lang: str, tgt_lang: str, text: str) -> str:
    """The prompt the alignment trains on; the answer follows after one space. Use it to evaluate the model."""
    return PROMPT_TEMPLATE.format(src_name=language_name(src_lang), tgt_name=language_name(tgt_lang), src_text=text)


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


class Encoder:
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

    def batch(
        self, rows: list[tuple[list[int], int]]
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Right-padded input ids, attention mask and labels (IGNORE_INDEX on the prompt and the padding)
        of encoded rows (ids, prompt length)."""
        masked = [(ids, ([0] * n_prompt + [1] * len(ids))[: len(ids)]) for ids, n_prompt in rows]
        input_ids, attention, answer = right_pad(masked, self.pad)
        labels = input_ids.masked_fill(answer == 0, IGNORE_INDEX)
        return input_ids, attention, labels
