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

# One tiny random configuration per architecture that steer is proven on (tests/test_architectures.py):
# hidden 32, 2 layers, 64 neurons per MLP, 4 heads (2 KV heads where the architecture has GQA), and each
# architecture's own quirks switched on (soft-capping, sliding windows, multipliers, logit scales).
_LLAMA_LIKE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=256)
_MOE = dict(num_experts_per_tok=2)
ARCH_CONFIGS = {
    "llama": dict(model_type="llama", **_LLAMA_LIKE),
    "mistral": dict(model_type="mistral", **_LLAMA_LIKE, sliding_window=None),
    "qwen2": dict(model_type="qwen2", **_LLAMA_LIKE),
    "qwen3": dict(model_type="qwen3", **_LLAMA_LIKE, head_dim=8),
    "gemma": dict(model_type="gemma", **_LLAMA_LIKE, head_dim=8, hidden_act="gelu_pytorch_tanh"),
    "gemma2": dict(model_type="gemma2", **_LLAMA_LIKE, head_dim=8, query_pre_attn_scalar=8, sliding_window=4,
                   attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
                   layer_types=["sliding_attention", "full_attention"]),
    "gemma3": dict(model_type="gemma3_text", **_LLAMA_LIKE, head_dim=8, query_pre_attn_scalar=8, sliding_window=4,
                   layer_types=["sliding_attention", "full_attention"]),
    "olmo": dict(model_type="olmo", **_LLAMA_LIKE),
    "olmo2": dict(model_type="olmo2", **_LLAMA_LIKE),
    "granite": dict(model_type="granite", **_LLAMA_LIKE, embedding_multiplier=2.0, residual_multiplier=0.5,
                    attention_multiplier=0.2, logits_scaling=2.0),
    "cohere": dict(model_type="cohere", **_LLAMA_LIKE, logit_scale=0.5),
    "xglm": dict(model_type="xglm", d_model=32, ffn_dim=64, num_layers=2, attention_heads=4,
                 max_position_embeddings=256),
    "phi3": dict(model_type="phi3", **_LLAMA_LIKE),
    "gpt_neox": dict(model_type="gpt_neox", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=256),
    "opt": dict(model_type="opt", hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                word_embed_proj_dim=32, max_position_embeddings=256),
    "falcon": dict(model_type="falcon", hidden_size=32, ffn_hidden_size=64, num_hidden_layers=2,
                   num_attention_heads=4, max_position_embeddings=256),
    "stablelm": dict(model_type="stablelm", **_LLAMA_LIKE),
    "starcoder2": dict(model_type="starcoder2", **_LLAMA_LIKE, sliding_window=None),
    "smollm3": dict(model_type="smollm3", **_LLAMA_LIKE),
    "gpt2": dict(model_type="gpt2", n_embd=32, n_inner=64, n_layer=2, n_head=4, n_positions=256),
    "bloom": dict(model_type="bloom", hidden_size=32, n_layer=2, n_head=4),  # BLOOM's MLP is always 4 × hidden
    "gptj": dict(model_type="gptj", n_embd=32, n_inner=64, n_layer=2, n_head=4, n_positions=256, rotary_dim=4),
    "codegen": dict(model_type="codegen", n_embd=32, n_inner=64, n_layer=2, n_head=4, n_positions=256, n_ctx=256,
                    rotary_dim=4),
    "gpt_bigcode": dict(model_type="gpt_bigcode", n_embd=32, n_inner=64, n_layer=2, n_head=4, n_positions=256),
    "phi": dict(model_type="phi", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=256),
    "nemotron": dict(model_type="nemotron", **_LLAMA_LIKE, head_dim=8),  # squared ReLU, plain MLP
    "apertus": dict(model_type="apertus", **_LLAMA_LIKE),  # xIELU, plain MLP: counted after act_fn
    "mpt": dict(model_type="mpt", d_model=32, n_layers=2, n_heads=4, expansion_ratio=2, max_seq_len=256),
    "glm": dict(model_type="glm", **_LLAMA_LIKE, head_dim=8),
    "exaone4": dict(model_type="exaone4", **_LLAMA_LIKE),
    "seed_oss": dict(model_type="seed_oss", **_LLAMA_LIKE, head_dim=8),
    "arcee": dict(model_type="arcee", **_LLAMA_LIKE),  # ReLU², plain MLP
    "olmo3": dict(model_type="olmo3", **_LLAMA_LIKE),
    "mixtral": dict(model_type="mixtral", **_LLAMA_LIKE, **_MOE, num_local_experts=4),
    "qwen2_moe": dict(model_type="qwen2_moe", **_LLAMA_LIKE, **_MOE, moe_intermediate_size=64,
                      shared_expert_intermediate_size=64, num_experts=4),
    "qwen3_moe": dict(model_type="qwen3_moe", **_LLAMA_LIKE, **_MOE, head_dim=8, moe_intermediate_size=64,
                      num_experts=4),
    "olmoe": dict(model_type="olmoe", **_LLAMA_LIKE, **_MOE, num_experts=4),
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


def tiny_model_dir(arch: str = "gemma3", seed: int = 0, root: str | Path | None = None, **overrides) -> Path:
    """Build (once) and return the folder of a tiny random model of the given family.

    `arch`: a key of `TINY_CONFIGS` (the models most tests use), or `"arch:NAME"` for `ARCH_CONFIGS[NAME]`
    (one tiny configuration per architecture steer is proven on). `overrides` change config fields
    (e.g. `hidden_act="sigmoid"`); the folder's name records them.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    configs = TINY_CONFIGS
    name = arch
    if arch.startswith("arch:"):
        configs, name = ARCH_CONFIGS, arch[len("arch:"):]
    if name not in configs:
        raise ValueError(f"unknown tiny architecture '{arch}'; choose from "
                         f"{sorted(TINY_CONFIGS) + ['arch:' + a for a in sorted(ARCH_CONFIGS)]}")
    suffix = "".join(f"-{key}={value}" for key, value in sorted(overrides.items()))
    target = Path(root or cache_root() / "tiny") / f"{arch.replace(':', '-')}-seed{seed}{suffix}"
    if (target / "config.json").exists():
        return target
    tokenizer = byte_tokenizer()
    settings = {**configs[name], **overrides}
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
