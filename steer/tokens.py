"""Tokenising texts with a mask of the tokens that count, and padding them into a batch (the only padding code).

A text is a string (every token counts) or a (prompt, response) pair (only the response's tokens
count). Collection counts activations on those tokens; perplexity scores them.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

Text = str | tuple[str, str]


def encode_with_mask(tokenizer, item: Text, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids (with the tokenizer's special tokens) and a 0/1 mask of the tokens that count."""
    if isinstance(item, str):
        ids = tokenizer(item, add_special_tokens=True)["input_ids"][:max_length]
        return ids, [1] * len(ids)
    prompt, response = item
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + response_ids)[:max_length]
    return ids, ([0] * len(prompt_ids) + [1] * len(response_ids))[:max_length]


def right_pad(
    rows: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """(input_ids, attention_mask, mask) for (ids, mask) rows, padded on the right."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (ids, counted) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
        mask[row, : len(ids)] = torch.tensor(counted, dtype=torch.long)
    return input_ids, attention, mask


def left_pad(
    rows: Sequence[list[int]], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """(input_ids, attention_mask) for token-id rows, padded on the left (for generation)."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    return input_ids, attention
