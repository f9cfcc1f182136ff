"""A model split across devices by an accelerate device map gives the same stats and steered tokens.

With no second GPU here, the split is CPU + disk offload: accelerate then moves each offloaded
layer's weights in for its forward pass, through the same hooks it uses between GPUs.
"""

from __future__ import annotations

import pytest
import torch

import steer
from steer.models import layer_device

from conftest import TEXTS

SPLIT = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
         "model.layers.2": "cpu", "model.layers.3": "disk", "model.norm": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module")
def split(tiny_dir, tmp_path_factory):
    return steer.load_model(tiny_dir, device_map=SPLIT, offload_folder=tmp_path_factory.mktemp("offload"))


def test_the_split_model_is_the_same_model(tiny, split):
    assert split.original_model.hf_device_map == SPLIT
    assert steer.model_info(split).weights_hash == steer.model_info(tiny).weights_hash  # offloaded weights are read
    assert layer_device(split, 1) == torch.device("cpu")


def test_collection_on_a_split_model_equals_the_whole_model(tiny, split):
    whole = steer.collect(tiny, TEXTS, sq_sums=True, progress=False)
    parts = steer.collect(split, TEXTS, sq_sums=True, progress=False)
    assert torch.equal(parts.active, whole.active) and torch.equal(parts.tokens, whole.tokens)
    torch.testing.assert_close(parts.sums, whole.sums, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(parts.sq_sums, whole.sq_sums, rtol=1e-6, atol=1e-6)


def test_steered_generation_on_a_split_model_equals_the_whole_model(tiny, split):
    stats = steer.collect(tiny, TEXTS, progress=False)
    neurons = steer.identify(stats, method="zhang2025", top_rate=0.2)
    prompts = ["Hello there", "Die Katze"]
    whole = steer.generate(tiny, prompts, neurons=neurons, stats=stats, force_language="de", mode="diffmean",
                           max_new_tokens=8)
    parts = steer.generate(split, prompts, neurons=neurons, stats=stats, force_language="de", mode="diffmean",
                           max_new_tokens=8)
    plain = steer.generate(tiny, prompts, max_new_tokens=8)
    assert parts.texts == whole.texts
    assert whole.texts != plain.texts  # the steering acts, so the equality above means something


def test_auto_device_and_dtype():
    from steer.models import resolve_device, resolve_dtype

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype(torch.float16) == torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu:banana")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU is visible"):
            resolve_device("cuda")
