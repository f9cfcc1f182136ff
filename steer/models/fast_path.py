"""Running the bridge's HF model as plain HF modules wherever no hook is attached."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


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
