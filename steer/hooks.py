"""Installing hook functions on TransformerLens hook points, only ever for the length of a `with` block.

Hooks are registered with torch's own `register_forward_hook` on the `HookPoint` modules and removed
through their handles in `finally`, so an exception inside the block leaves the model with exactly
the hooks it had before, and hooks the user added themselves are never touched.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch

HookFn = Callable[[torch.Tensor], torch.Tensor | None]


class StopForward(Exception):
    """Raised from a hook to end a forward pass early (after the last hooked MLP)."""


def hook_point(model, name: str) -> torch.nn.Module:
    try:
        return model.hook_dict[name]
    except KeyError:
        raise ValueError(f"the model has no hook point '{name}'") from None


@contextlib.contextmanager
def attached(model, hooks: Iterable[tuple[str, HookFn]]) -> Iterator[None]:
    """Attach `fn(activation) -> activation | None` to each named hook point for the block's duration."""
    handles = []
    try:
        for name, fn in hooks:
            module = hook_point(model, name)
            handles.append(module.register_forward_hook(_as_forward_hook(fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _as_forward_hook(fn: HookFn):
    def forward_hook(module, inputs, output):
        return fn(output)

    return forward_hook


def hook_count(model) -> int:
    """How many forward hooks are installed on the model's hook points (for leak checks).

    `hook_dict` lists some hook points under two names (aliases); each module is counted once.
    """
    modules = {id(module): module for module in model.hook_dict.values()}
    return sum(len(module._forward_hooks) for module in modules.values())
