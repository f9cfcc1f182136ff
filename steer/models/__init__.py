"""Loading models and what steer records about them (name, weights hash, shape, neuron site).

`load_model` returns a TransformerLens `TransformerBridge`. `model_info` is the identity written
into every file derived from a model, and `check_model` refuses a file made for another model.
Where the neurons live: `steer.models.sites`; the embedded default: `steer.models.embedded`;
plain-HF execution where no hook is attached: `steer.models.fast_path.fast_path` (the module is not
shadowed by the function: `import steer.models.fast_path as m` gives the module).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from steer.models.embedded import EMBEDDED_MODEL, embedded_model_dir, quiet_transformers
from steer.models.experts import ExpertLayout
from steer.models.sites import REFUSED, SITES, NeuronSite, check_config, mlp_width, moe_layout, site_for

__all__ = [
    "EMBEDDED_MODEL", "REFUSED", "SITES", "ExpertLayout", "ModelInfo", "NeuronSite", "check_config", "check_model", "decoder",
    "input_device", "layer_device", "load_hf_model", "load_model", "model_info", "resolve_device", "resolve_dtype",
    "resolve_model", "site_for", "weights_hash", "wrap_model",
]  # fmt: skip


@dataclass(frozen=True)
class ModelInfo:
    """What steer records about a loaded model; written into every file derived from it."""

    name: str
    weights_hash: str
    n_layers: int
    d_mlp: int
    model_type: str
    site: NeuronSite
    experts: ExpertLayout | None = None  # a mixture-of-experts MLP: how its experts lie along the neuron axis

    def to_dict(self) -> dict:
        data = {
            "name": self.name,
            "weights_hash": self.weights_hash,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "model_type": self.model_type,
        }
        if self.experts is not None:
            data["experts"] = self.experts.to_dict()
        return data


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
    site = site_for(model)
    return ModelInfo(
        name=name,
        weights_hash=weights_hash(model.original_model),
        n_layers=int(model.cfg.n_layers),
        d_mlp=mlp_width(model),
        model_type=text_config.model_type,
        site=site,
        experts=moe_layout(model) if site.experts else None,
    )


def check_model(recorded: dict, model, what: str, *, require_record: bool = False) -> None:
    """A clear error when a file derived from one model (`recorded`: its model metadata) is used with another.

    With `require_record`, a file that records no model weights is refused too (its shape alone could match
    another model); the callers that read files from disk ask for it.
    """
    info = model_info(model)
    if require_record and not recorded.get("weights_hash"):
        raise ValueError(
            f"{what} records no model (no weights hash), so steer cannot check it was made for '{info.name}'; "
            "remake it with steer on this model, or pass unrecorded=True to use it unchecked"
        )
    if (recorded.get("n_layers"), recorded.get("d_mlp")) != (info.n_layers, info.d_mlp):
        raise ValueError(
            f"{what} is for a model with {recorded.get('n_layers')} layers × {recorded.get('d_mlp')} neurons, "
            f"but '{info.name}' has {info.n_layers} × {info.d_mlp}; use files made for this model"
        )
    layout = info.experts.to_dict() if info.experts is not None else None
    if "experts" in recorded and recorded.get("experts") != layout:
        raise ValueError(
            f"{what} is for experts laid out as {recorded.get('experts')}, but '{info.name}' has {layout}; "
            "use files made for this model"
        )
    if recorded.get("weights_hash") and recorded["weights_hash"] != info.weights_hash:
        raise ValueError(
            f"{what} was made on weights {recorded['weights_hash']} ({recorded.get('name')}), "
            f"not on '{info.name}' ({info.weights_hash}); use files made for this model"
        )


def weights_hash(module: torch.nn.Module, samples_per_tensor: int = 4096) -> str:
    """A fingerprint of the parameters: each distinct tensor's shape, dtype and an evenly strided sample.

    Names and order are left out on purpose, so a plain HF model and the same weights under a
    TransformerLens bridge (which renames and aliases modules) hash alike. Cheap enough to compute at
    every load (no full pass over the weights) and different for any two checkpoints that differ in
    practice (a fine-tune changes sampled entries of every adapted matrix).
    """
    digests = set()
    for tensor in _materialised_parameters(module):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        sample = flat[::step][:samples_per_tensor].to("cpu", torch.float32).contiguous()
        digest = hashlib.sha256(f"{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(sample.numpy().tobytes())
        digests.add(digest.hexdigest())
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()[:16]


def _materialised_parameters(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    """Every parameter with its data: a module offloaded by accelerate (meta weights) is loaded for the read."""
    for sub in module.modules():
        own = list(sub.parameters(recurse=False))
        if any(p.device.type == "meta" for p in own):
            from accelerate.utils import align_module_device

            with align_module_device(sub):
                yield from sub.parameters(recurse=False)
        else:
            yield from own


def resolve_model(name_or_path: str | os.PathLike | None) -> tuple[str, str]:
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


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" is cuda when a GPU is visible, else cpu; under torchrun "cuda" is this process' GPU (cuda:LOCAL_RANK)."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device) == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was asked for but no GPU is visible; use --device cpu (or auto)")
    return device


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu") -> torch.dtype:
    """"auto" is bfloat16 on a GPU and float32 on a CPU; also "float32", "bfloat16", "float16" or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    try:
        return DTYPES[str(dtype)]
    except KeyError:
        raise ValueError(f"unknown dtype '{dtype}'; use auto, {', '.join(DTYPES)}") from None


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
):
    """Load a decoder LLM as a TransformerLens `TransformerBridge`.

    `name_or_path`: None or "gemma-3-270m" for the embedded default, a local folder written by
    `save_pretrained`, or an HF model id (needs hub access). The model is in eval mode.
    `device`: "auto" (a GPU when there is one, else the CPU), "cpu", "cuda" or "cuda:N"; under
    torchrun "cuda" means this process' GPU, cuda:LOCAL_RANK. `dtype`: "auto" (bfloat16 on a GPU,
    float32 on a CPU) or a dtype. A model too large for one device: `device_map="auto"` (or an
    accelerate device map; `max_memory` and `offload_folder` as in transformers) places its layers
    across the GPUs (and CPU or disk); hooks, interventions and collection follow each layer's device.
    """
    from transformers import AutoConfig

    target = resolve_device(device)
    dtype = resolve_dtype(dtype, target)
    name, source = resolve_model(name_or_path)
    with quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = AutoConfig.from_pretrained(source)
        except OSError as error:
            raise RuntimeError(
                f"could not load '{name}' ({error.__class__.__name__}); without hub access, download it elsewhere "
                "and pass its local folder"
            ) from None
    text_config = getattr(config, "text_config", None) or config
    check_config(text_config)  # before loading any weight
    tokenizer, hf_model = load_hf_model(source, device=target, dtype=dtype, device_map=device_map,
                                        max_memory=max_memory, offload_folder=offload_folder)
    return wrap_model(hf_model, tokenizer, name, source=source)


def wrap_model(hf_model, tokenizer, name: str = "custom", *, source: str | None = None):
    """A `TransformerBridge` around an HF causal LM already in memory (on its device(s) and dtype).

    `name` is recorded in every file derived from the model (with a hash of its weights); `source`
    (a folder or hub id) is what TransformerLens is told the model is called, `name` by default.
    """
    from transformer_lens.model_bridge import TransformerBridge

    text_config = getattr(hf_model.config, "text_config", None) or hf_model.config
    check_config(text_config)
    placed = getattr(hf_model, "hf_device_map", None)
    first = next(hf_model.parameters())
    with quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(
            source or name, hf_model=hf_model.eval(), tokenizer=tokenizer, device=None if placed else first.device,
            dtype=first.dtype,
        )
    bridge.eval()
    bridge._steer_info = _describe(bridge, name)
    return bridge


def load_hf_model(
    source: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> tuple:
    """(tokenizer, HF causal LM in eval mode on `device`, or placed by `device_map`) from `source` (a
    folder or hub id, see `resolve_model`), without transformers' chatter: the plain model a bridge
    wraps, or that align trains."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(source)
        if device_map is None:
            return tokenizer, AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device).eval()
        placed = {"device_map": device_map}
        if max_memory is not None:
            placed["max_memory"] = max_memory
        if offload_folder is not None:
            placed["offload_folder"] = str(offload_folder)
        return tokenizer, AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **placed).eval()


def input_device(model) -> torch.device:
    """Where a forward pass takes its inputs: the embedding's device (the first layer's, under a device map)."""
    embedding = model.original_model.get_input_embeddings()
    weight = getattr(embedding, "weight", None)
    if weight is not None and weight.device.type != "meta":
        return weight.device
    hf_map = getattr(model.original_model, "hf_device_map", None) or {}
    for placement in hf_map.values():
        if placement not in ("disk", "meta"):
            return torch.device("cuda", placement) if isinstance(placement, int) else torch.device(placement)
    return torch.device("cpu")


def layer_device(model, layer: int) -> torch.device:
    """The device a decoder layer computes on: its entry in the model's device map, if it has one."""
    hf_map = getattr(model.original_model, "hf_device_map", None)
    if not hf_map:
        return input_device(model)
    hf_layer = model.blocks[layer].original_component
    name = next(n for n, m in model.original_model.named_modules() if m is hf_layer)
    owners = [key for key in hf_map if key == "" or name == key or name.startswith(key + ".")]
    placement = hf_map[max(owners, key=len)] if owners else "cpu"
    if isinstance(placement, int):
        return torch.device("cuda", placement)
    return torch.device("cpu") if placement in ("cpu", "disk", "meta") else torch.device(placement)


def decoder(model) -> torch.nn.Module:
    """The HF decoder stack (embeddings + layers + final norm, no unembedding) of a bridge: the module that
    holds the layer list (`model`, `transformer`, `gpt_neox`; OPT's `model.decoder`, which its causal LM calls
    directly, past its `model`)."""
    hf_model = model.original_model
    stack = model.__dict__.get("_steer_decoder")
    if stack is not None:
        return stack
    blocks = getattr(model, "blocks", None)
    if blocks is not None:  # a bridge: the module whose layer list holds its first block
        targets = {id(blocks[0]), id(getattr(blocks[0], "original_component", blocks[0]))}
        for name, module in hf_model.named_modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) and id(module[0]) in targets and "." in name:
                stack = hf_model.get_submodule(name.rsplit(".", 1)[0])
                break
    else:  # a plain HF model (align's scorer): its base model, or the decoder inside it (OPT)
        stack = getattr(hf_model, "base_model", None)
        inner = getattr(stack, "decoder", None)
        if isinstance(inner, torch.nn.Module) and hasattr(inner, "layers"):
            stack = inner
    if stack is None or stack is hf_model:
        raise ValueError(f"cannot find the decoder stack of {type(hf_model).__name__}")
    model.__dict__["_steer_decoder"] = stack  # a plain attribute, not a registered submodule
    return stack
