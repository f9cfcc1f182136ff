"""Installing hook functions on TransformerLens hook points, only ever for the length of a `with` block.

steer registers its hooks through the hook point's own API, `HookPoint.add_hook(fn, dir="fwd",
is_permanent=True)`, so they are TransformerLens hooks like any other: they show in
`hook_point.fwd_hooks` and `model.list_hooks()`, and the hook point's input/output conversion applies
to them as to the user's. They are marked permanent only so that a `model.reset_hooks()` (which
clears the user's temporary hooks) does not silently switch a steering off in the middle of its
block; steer removes exactly its own handles in `finally` (never by a global reset), so an
exception inside the block leaves the model with exactly the hooks it had before, and hooks the
user added themselves are never touched. `model.reset_hooks(including_permanent=True)` inside the
block does remove steer's hooks too: the block then warns when it ends.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Callable, Iterable, Iterator

import torch

HookFn = Callable[[torch.Tensor], torch.Tensor | None]


class StopForward(Exception):
    """Raised from a hook to end a forward pass early (after the last hooked MLP)."""


def hook_point(model, name: str) -> torch.nn.Module:
    return _lookup(model.hook_dict, name)


def _lookup(points: dict, name: str) -> torch.nn.Module:
    try:
        return points[name]
    except KeyError:
        raise ValueError(f"the model has no hook point '{name}'") from None


_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def exclusive(model) -> Iterator[None]:
    """Hold the model for this thread for the block: steer's hooks and fast path are global to a model.

    Re-entrant in one thread (a steering block around `generate` is fine). A second thread that
    tries to attach hooks or run steer on the model while the first holds it gets a RuntimeError at
    once, rather than steering (or counting) the other thread's forward passes.
    """
    with _LOCKS_GUARD:
        lock = model.__dict__.setdefault("_steer_lock", threading.RLock())
    if not lock.acquire(blocking=False):
        raise RuntimeError(
            "this model is in use by another thread (a steering block, collect or generate): steer's hooks are "
            "global to a model, so give each thread its own model or run the calls one after another"
        )
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def attached(model, hooks: Iterable[tuple[str, HookFn]]) -> Iterator[None]:
    """Attach `fn(activation) -> activation | None` to each named hook point for the block's duration.

    Each hook is a TransformerLens hook (`HookPoint.add_hook`), visible in `hook_point.fwd_hooks`. The
    hooks act only on forward passes run by the thread that attached them (another thread's forward
    through the same model passes them by), and the model is held for this thread (`exclusive`).
    """
    with exclusive(model), _attached(model, hooks):
        yield


@contextlib.contextmanager
def _attached(model, hooks: Iterable[tuple[str, HookFn]]) -> Iterator[None]:
    points = model.hook_dict  # a property that rebuilds the alias map: read it once
    check = getattr(model, "check_hooks_to_add", None)  # TransformerLens' own refusal of gated-off points
    added = []
    try:
        for name, fn in hooks:
            point = _lookup(points, name)
            hook = _as_lens_hook(fn, name, threading.get_ident())
            if check is not None:
                check(point, name, hook)
            added.append((point, point.add_hook(hook, dir="fwd", is_permanent=True)))
        yield
    finally:
        lost = [point.name for point, handle in added if not any(h is handle for h in point.fwd_hooks)]
        for point, handle in reversed(added):
            handle.hook.remove()
            point.fwd_hooks[:] = [h for h in point.fwd_hooks if h is not handle]
        if lost:
            warnings.warn(f"steer's hooks on {', '.join(lost)} were removed inside their block "
                          "(reset_hooks(including_permanent=True)?): they stopped acting from then on", stacklevel=3)


def _as_lens_hook(fn: HookFn, name: str, thread: int):
    def lens_hook(activation, hook=None):
        if threading.get_ident() != thread:  # another thread's forward pass: not ours to touch
            return None
        return fn(activation)

    lens_hook.__qualname__ = f"steer[{name}]:{getattr(fn, '__qualname__', type(fn).__name__)}"
    lens_hook.__wrapped__ = fn
    return lens_hook


def hook_count(model) -> int:
    """How many forward hooks are installed on the model's hook points (for leak checks).

    Counts torch's registrations, so hooks added through TransformerLens, steer or torch directly
    all count. `hook_dict` lists some hook points under two names (aliases); each module is counted once.
    """
    modules = {id(module): module for module in model.hook_dict.values()}
    return sum(len(module._forward_hooks) for module in modules.values())
