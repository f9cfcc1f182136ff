"""Running the bridge's HF model as plain HF modules wherever no hook is attached.

The bridge wraps every HF module (and re-implements attention eagerly so that attention-pattern
hooks can fire). `fast_path` swaps each bridge component back for its HF original unless a hook
needs it, so the forward costs what plain HF costs; hook points stay the interface.

What the fast path guarantees, and its documented gaps (each pinned by a test in
tests/test_fast_path.py):

- A hook attached *before* entering fires as often, on the same values, as without the fast path:
  forward hooks, forward pre-hooks and backward hooks alike, on a `HookPoint` or on a bridge
  component itself (`model.blocks[3].register_forward_hook(...)`). Such a component is kept as a
  bridge, and so is every bridge that must run for it to be called (GPT-2's split q/k/v/o
  projections exist only inside the bridge's attention, so a hook on them keeps that attention).
- A hook added *inside* the block to a module that the fast path does not run (a swapped-out
  component, its hook points, its bridge-only parts) raises a one-line RuntimeError naming the point,
  through every door: steer's `attached`, TransformerLens' `add_hook` / `model.hooks()` /
  `run_with_hooks`, and torch's `register_forward_hook`, `register_forward_pre_hook` and backward
  hooks. Hooks added inside the block to points that do run work as usual.
- Gap: a hook point that the bridge never fires may fire here: TransformerLens' joint-QKV attention
  (GPT-2) computes q, k and v from its own split weights and never calls `attn.qkv`, whereas the HF
  attention that replaces it does.
- Inside the block `model.blocks[i]` and its parts are what runs: the HF modules where the bridge
  was swapped out (hooking those works). Keeping a bridge component is decided at entry: a hook
  removed inside the block leaves its component bridged (only slower) until the block ends.
- Nested `fast_path` blocks on one model do nothing more than the outer one.
- OPT runs its MLP on flattened [batch·seq, d] tokens; its block bridge stamps (batch, seq) so that the
  MLP's hooks see [batch, seq, d]. Where that block runs as plain HF, a pre-hook on the HF layer stamps
  them instead, so those hooks see the shape they see on the bridge.
- Attention runs as SDPA only where the architecture declares SDPA support (`sdpa_computes`); Gemma 2
  (attention-logit soft-capping: no SDPA kernel), BLOOM (ALiBi) and XGLM keep their own implementation,
  which is what the bridge runs too. A hook on an attention component keeps the bridge's (eager)
  implementation for the block: some attention bridges (OPT's) compute scores and pattern only there.
- Mixture-of-experts taps (`steer.models.experts.tapped`) act on HF modules that run with and without the
  fast path (the experts' forward, forward hooks on the HF MoE block and router), so a MoE block runs as
  plain HF here with its taps in place.

Everything is restored on exit, also after an exception.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge.generalized_components import AttentionBridge, BlockBridge

from steer.hooks import exclusive

_REGISTER_METHODS = frozenset({"register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
                               "register_full_backward_pre_hook", "register_backward_hook"})
_ACTIVE = "_steer_fast_path"


def sdpa_computes(hf_model: nn.Module) -> bool:
    """Whether torch's SDPA computes this model's attention: its class says so (transformers'
    `_supports_sdpa`; Gemma 2 says no, its attention-logit soft-capping has no SDPA kernel, and neither do
    BLOOM's ALiBi or XGLM's attention, which never declare it). Elsewhere the fast path keeps the
    architecture's own attention implementation."""
    return bool(getattr(type(hf_model), "_supports_sdpa", False))


def _original(module: nn.Module) -> nn.Module | None:
    return module._modules.get("_original_component")


def _wire_blocks(root: nn.Module) -> set[int]:
    """Have every TransformerLens block bridge install its capture hooks now (it does so at its first forward: a
    block kept inside the fast path would try to, on parts that are guarded there) and return their ids. They
    are TransformerLens' own hooks (the split-QKV fork's and hook_mlp_in's capture), not a user's: they do
    not keep a part out of the fast path."""
    ids: set[int] = set()
    for module in root.modules():
        if isinstance(module, BlockBridge) and hasattr(module, "_maybe_wire_capture_hooks"):
            module._maybe_wire_capture_hooks()
            ids.update(handle.id for handle in getattr(module, "_capture_hook_handles", ()))
    return ids


class _Tree:
    """Every module under the HF root (bridge components, their parts and originals): parents, hooks (other
    than the `internal` ones, TransformerLens' own)."""

    def __init__(self, root: nn.Module, internal: set[int] = frozenset()):
        self.root = root
        self.modules: dict[int, nn.Module] = {id(root): root}
        self.parents: dict[int, list[nn.Module]] = {}
        self.hooked: list[nn.Module] = []  # modules with any forward, pre-forward or backward hook
        modules, parents, hooked = self.modules, self.parents, self.hooked
        stack = [root]
        while stack:
            module = stack.pop()
            attrs = module.__dict__
            if any(key not in internal for hooks in (attrs["_forward_hooks"], attrs["_forward_pre_hooks"],
                                                     attrs["_backward_hooks"], attrs.get("_backward_pre_hooks") or {})
                   for key in hooks):
                hooked.append(module)
            for child in attrs["_modules"].values():
                if child is None:
                    continue
                key = id(child)
                if key in parents:
                    parents[key].append(module)
                else:
                    parents[key] = [module]
                    modules[key] = child
                    stack.append(child)

    def live(self, keep: set[int]) -> set[int]:
        """The modules a forward reaches when the bridges outside `keep` are swapped for their originals.

        A kept bridge reaches its hook points, its original, and the parts that exist only inside the
        bridge (not among its original's children); parts it shares with its original are reached
        through the original's slots, swapped or not.
        """
        reached = {id(self.root)}
        stack = [self.root]
        while stack:
            children = stack.pop()._modules
            original = children.get("_original_component")
            if original is not None:  # a kept bridge
                shared = {id(child) for child in original._modules.values()}
                for child in children.values():
                    if child is not None and id(child) not in shared and id(child) not in reached:
                        reached.add(id(child))
                        stack.append(child)
                continue
            for child in children.values():
                if child is None:
                    continue
                inner = child._modules.get("_original_component")
                if inner is not None and id(child) not in keep:
                    child = inner
                if id(child) not in reached:
                    reached.add(id(child))
                    stack.append(child)
        return reached

    def block_ancestors(self, module: nn.Module) -> set[int]:
        """Every TransformerLens block bridge above `module`."""
        return self._ancestors(module, lambda parent: isinstance(parent, BlockBridge), beyond=True)

    def bridge_ancestors(self, module: nn.Module) -> set[int]:
        """The nearest bridge components above `module` (through plain HF modules)."""
        return self._ancestors(module, lambda parent: _original(parent) is not None, beyond=False)

    def _ancestors(self, module: nn.Module, wanted, *, beyond: bool) -> set[int]:
        """The ids of the modules above `module` for which `wanted` holds; with `beyond`, the walk goes on past
        them, else it stops at the first on each path."""
        found: set[int] = set()
        seen: set[int] = set()
        stack = list(self.parents.get(id(module), []))
        while stack:
            parent = stack.pop()
            if id(parent) in seen:
                continue
            seen.add(id(parent))
            hit = wanted(parent)
            if hit:
                found.add(id(parent))
            if beyond or not hit:
                stack.extend(self.parents.get(id(parent), []))
        return found


def _stamped(module: nn.Module) -> bool:
    """A hook point whose conversion reads state that its block bridge sets at each forward: OPT's block
    stamps (batch, seq) so that the hooks of its flattened MLP region see [batch, seq, d], not [batch·seq, d]."""
    return isinstance(module, HookPoint) and hasattr(getattr(module, "hook_conversion", None), "batch_seq")


def _stamp_shapes(tree: _Tree, swaps: list[tuple[nn.Module, str, nn.Module]]) -> list:
    """Where a block bridge that stamps its hooks' conversions is swapped out, stamp them from a pre-hook on
    the HF layer that runs in its place (as the block does), so those hooks see what they see on the bridge."""
    stamped = [(point, tree.block_ancestors(point)) for point in tree.hooked if _stamped(point)]
    handles = []
    for parent, name, block in swaps if stamped else ():
        conversions = [point.hook_conversion for point, blocks in stamped if id(block) in blocks]
        if not conversions:
            continue

        def stamp(module, args, kwargs, conversions=conversions):
            hidden = args[0] if args else kwargs.get("hidden_states")
            if isinstance(hidden, torch.Tensor) and hidden.dim() == 3:
                for conversion in conversions:
                    conversion.batch_seq = (hidden.shape[0], hidden.shape[1])

        handles.append(parent._modules[name].register_forward_pre_hook(stamp, with_kwargs=True))
    return handles


def _keep_set(tree: _Tree) -> tuple[set[int], set[int]]:
    """Which bridges to keep so that every hooked module runs; and the modules reached then."""
    hooked = tree.hooked
    keep = {id(m) for m in hooked if _original(m) is not None}
    keep |= {bridge for m in hooked if isinstance(m, HookPoint) for bridge in tree.bridge_ancestors(m)}
    while True:
        live = tree.live(keep)
        stranded = [m for m in hooked + [tree.modules[i] for i in keep] if id(m) not in live]
        if not stranded:
            return keep, live
        more = set().union(*(tree.bridge_ancestors(m) for m in stranded)) - keep
        if not more:
            names = ", ".join(sorted(_name(tree.root, m) for m in stranded))
            raise RuntimeError(f"hooks on {names} cannot run inside steer's fast_path; remove them or run without it")
        keep |= more


def _name(root: nn.Module, module: nn.Module) -> str:
    if isinstance(module, HookPoint) and module.name:
        return module.name
    for child in module._modules.values():  # a bridge component: its hook points carry its TransformerLens name
        if isinstance(child, HookPoint) and child.name and "." in child.name:
            return child.name.rsplit(".", 1)[0]
    names = [n for n, m in root.named_modules(remove_duplicate=False) if m is module]
    return min(names, key=len) if names else type(module).__name__


def _refuse(root: nn.Module, module: nn.Module, *args, **kwargs):
    raise RuntimeError(
        f"hook added to {_name(root, module)} inside steer's fast_path, where that component runs as "
        "plain HF; attach hooks before entering fast_path"
    )


@contextlib.contextmanager
def fast_path(model) -> Iterator[None]:
    """While active, the HF model runs as plain HF (SDPA attention where `sdpa_computes`, else the
    architecture's own) except where hooks are attached.

    Attach hooks first, then enter: each bridge component is swapped back for its original HF module
    unless a hook attached at entry needs it (a hook on one of its hook points or on the component
    itself, forward, pre-forward or backward). Those hooks fire exactly as without the fast path;
    hook points without hooks cost nothing. Adding a hook inside the block to a point whose component
    was swapped out raises a RuntimeError instead of never firing. See the module docstring for the
    documented gaps. Everything is restored on exit, also after an exception.
    """
    with exclusive(model):  # the module swaps below are global to the model: one thread at a time
        with _fast_path(model):
            yield


@contextlib.contextmanager
def _fast_path(model) -> Iterator[None]:
    hf_model = model.original_model
    if hf_model.__dict__.get(_ACTIVE):
        yield
        return
    tree = _Tree(hf_model, _wire_blocks(hf_model))
    keep, live = _keep_set(tree)
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    stamps: list = []
    guarded: list[dict] = []  # the __dict__ of each module that does not run, its registration refused
    configs = [c for c in (hf_model.config, getattr(hf_model.config, "text_config", None)) if c is not None]
    old_impl = [c._attn_implementation for c in configs]
    try:
        hf_model.__dict__[_ACTIVE] = True
        for module_id in live:
            module = tree.modules.get(module_id)
            if module is None or _original(module) is not None:
                continue
            for name, child in list(module._modules.items()):
                if child is not None and id(child) not in keep and _original(child) is not None:
                    swaps.append((module, name, child))
                    module._modules[name] = _original(child)
        for module_id, module in tree.modules.items():
            if module_id not in live:
                attrs = module.__dict__
                attrs.update(dict.fromkeys(_REGISTER_METHODS, functools.partial(_refuse, model, module)))
                guarded.append(attrs)
        stamps = _stamp_shapes(tree, swaps)
        if sdpa_computes(hf_model) and not any(isinstance(tree.modules[i], AttentionBridge) for i in keep):
            for config in configs:
                config._attn_implementation = "sdpa"
        yield
    finally:
        for handle in stamps:
            handle.remove()
        for module, name, child in reversed(swaps):
            module._modules[name] = child
        for attrs in guarded:
            for attr in _REGISTER_METHODS:
                attrs.pop(attr, None)
        for config, impl in zip(configs, old_impl):
            config._attn_implementation = impl
        hf_model.__dict__.pop(_ACTIVE, None)

