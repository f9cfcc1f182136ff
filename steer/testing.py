"""Tiny deterministic models for tests, notebooks and benchmarks: built in a second, no hub needed.

`tiny_model_dir(arch)` writes a randomly initialised model of a supported family with a byte-level
tokenizer (every UTF-8 byte is a token, so any language's text works) into the cache and returns
the folder, which `steer.load_model` loads like any other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from steer._io import atomic_dir, cache_root
from steer.models.embedded import EMBEDDED_MODEL

TINY_CONFIGS = {
    "gemma3": dict(
        model_type="gemma3_text", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=512,
        sliding_window=16, hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=32,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
    ),
    "llama": dict(
        model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, hidden_act="silu",
    ),
    "gpt2": dict(model_type="gpt2", n_embd=64, n_layer=3, n_head=4, n_positions=512, n_inner=128),
}

BYTE_SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def byte_tokenizer():
    """A byte-level tokenizer: 4 special tokens, then one token per byte value."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(BYTE_SPECIALS)}
    for symbol in sorted(alphabet, key=lambda s: ord(s)):
        vocab[symbol] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left",
    )


def tiny_model_dir(arch: str = "gemma3", seed: int = 0, root: str | Path | None = None) -> Path:
    """Build (once) and return the folder of a tiny random model of the given family."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch not in TINY_CONFIGS:
        raise ValueError(f"unknown tiny architecture '{arch}'; choose from {sorted(TINY_CONFIGS)}")
    target = Path(root or cache_root() / "tiny") / f"{arch}-seed{seed}"
    if (target / "config.json").exists():
        return target
    tokenizer = byte_tokenizer()
    settings = dict(TINY_CONFIGS[arch])
    model_type = settings.pop("model_type")
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=0, **settings
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # larger weights than the init's, so activations are not all near zero
        for name, parameter in model.named_parameters():
            if parameter.ndim == 2 and "embed" not in name and "wte" not in name:
                parameter.mul_(4.0)
    with atomic_dir(target, "config.json") as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return target


# The embedded model's architecture (Gemma 3 270M), for speed runs where its weights cannot be installed.
GEMMA3_270M = dict(
    model_type="gemma3_text", vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
    num_attention_heads=4, num_key_value_heads=1, head_dim=256, max_position_embeddings=32768,
    sliding_window=512, hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=256, rms_norm_eps=1e-6,
    layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3, bos_token_id=2, eos_token_id=1, pad_token_id=0,
    tie_word_embeddings=True,
)


def random_gemma_dir(seed: int = 0, root: str | Path | None = None) -> Path:
    """Gemma 3 270M's architecture with random weights: the same cost per token as the real model.

    Uses the embedded model's tokenizer when it is installed, else the byte-level tokenizer (token
    ids then stay below 260, which changes nothing about the cost of a token).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = Path(root or cache_root() / "random") / f"{EMBEDDED_MODEL}-random-seed{seed}"
    if (target / "config.json").exists():
        return target
    embedded = cache_root() / "models" / EMBEDDED_MODEL
    tokenizer = AutoTokenizer.from_pretrained(str(embedded)) if (embedded / "tokenizer.json").exists() else byte_tokenizer()
    settings = dict(GEMMA3_270M)
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with atomic_dir(target, "config.json") as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return target
