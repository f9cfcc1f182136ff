"""Mixture-of-experts MLPs: where an expert neuron lives, and taps on the rows each expert computes.

A neuron of a mixture-of-experts MLP is (layer, expert, index). steer keeps every tensor
``[lang, layer, neuron]`` as for a dense model by laying the experts side by side: neuron
``n = expert × width + j`` for the routed experts, and, where the architecture has one (Qwen2-MoE),
the shared expert after them as column ``n_experts`` (neurons ``n_experts × width + j``, its own
width). `ExpertLayout` does the arithmetic; `ModelInfo.experts` records it and every file derived
from the model carries it. A routed expert sees only the tokens routed to it, so its activation
probability and mean divide by its routed-token count (`ActivationStats.routed`, ``[lang, layer,
column]``); the shared expert sees every token.

The bridge names no per-expert hook point (its ``mlp.hook_pre`` / ``hook_post`` are the whole MoE
block's input and output), so `tapped` reaches into the HF modules for the length of a ``with``
block: each layer's experts module runs `_routed_forward`, transformers' grouped-mm experts forward
with a tap between ``act_fn(gate) · up`` and the down projection (the rows of all routed
(token, expert) pairs, sorted by expert, in one tensor: one reduction per layer and quantity, no loop
over experts in steer); the shared expert runs its own MLP with the same tap. The tap may change the
down-projection input in place (interventions). A forward pre-hook on the HF MoE block stamps the
sequence length, so taps can tell each row's position ([batch·seq] rows, like OPT's flattened MLP).
Router hooks replace the router's output with the routing of edited logits (`route`; `steer.ExpertMask`
sets a masked expert's logit to -inf before top-k). Nested blocks compose (their taps run in the order
the blocks began); everything is removed in ``finally``.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from steer.hooks import StopForward, exclusive

MOE_MODEL_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")


@dataclass(frozen=True)
class ExpertLayout:
    """How the experts of one MoE layer are laid side by side along the neuron axis."""

    n_experts: int
    width: int  # neurons per routed expert
    top_k: int
    shared: int = 0  # neurons of the shared expert (0: none)

    @property
    def columns(self) -> int:
        """Expert columns of the routed-token counts: the routed experts, then the shared expert if any."""
        return self.n_experts + (1 if self.shared else 0)

    @property
    def d_mlp(self) -> int:
        return self.n_experts * self.width + self.shared

    def column_of(self) -> Int[Tensor, " neuron"]:
        """The expert column of every neuron (the shared expert's is `n_experts`)."""
        routed = torch.arange(self.n_experts).repeat_interleave(self.width)
        return torch.cat([routed, torch.full((self.shared,), self.n_experts, dtype=torch.long)])

    def split(self, neuron: Int[Tensor, "*n"]) -> tuple[Int[Tensor, "*n"], Int[Tensor, "*n"]]:
        """(expert column, index inside the expert) of flat neuron indices."""
        neuron = torch.as_tensor(neuron, dtype=torch.long)
        routed = neuron < self.n_experts * self.width
        expert = torch.where(routed, neuron // self.width, torch.full_like(neuron, self.n_experts))
        index = torch.where(routed, neuron % self.width, neuron - self.n_experts * self.width)
        return expert, index

    def neuron(self, expert: int, index: int) -> int:
        """The flat neuron index of (expert, index); expert `n_experts` is the shared expert."""
        width = self.shared if expert == self.n_experts and self.shared else self.width
        if not 0 <= expert < self.columns or not 0 <= index < width:
            raise ValueError(f"no neuron ({expert}, {index}): the layer has {self.n_experts} experts of {self.width} "
                             f"neurons" + (f" and a shared expert of {self.shared}" if self.shared else ""))
        return expert * self.width + index

    def to_dict(self) -> dict:
        return {"n_experts": self.n_experts, "width": self.width, "top_k": self.top_k, "shared": self.shared}

    @classmethod
    def from_dict(cls, data: dict) -> "ExpertLayout":
        try:
            layout = cls(int(data["n_experts"]), int(data["width"]), int(data["top_k"]), int(data.get("shared", 0)))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"an expert layout needs whole numbers n_experts, width, top_k (and shared), got {data!r}")
        if min(layout.n_experts, layout.width, layout.top_k) < 1 or layout.shared < 0:
            raise ValueError(f"an expert layout needs positive n_experts, width and top_k, got {data!r}")
        return layout


def _unwrap(module: nn.Module) -> nn.Module:
    while isinstance(getattr(module, "original_component", None), nn.Module):
        module = module.original_component
    return module


def moe_blocks(model) -> list[nn.Module]:
    """The HF MoE block of every layer of a bridge (under the bridge's `MoEBridge`)."""
    return [_unwrap(block.mlp) for block in model.blocks]


def is_moe(model) -> bool:
    from transformer_lens.model_bridge.generalized_components.moe import MoEBridge

    blocks = getattr(model, "blocks", None)
    return blocks is not None and any(isinstance(getattr(b, "mlp", None), MoEBridge) for b in blocks)


def expert_layout(model, refusal: Callable[[str], ValueError]) -> ExpertLayout:
    """The layout of a bridge's MoE layers; `refusal(reason)` for what steer cannot tap exactly."""
    from transformers.integrations import moe as hf_moe

    layouts = set()
    for layer, block in enumerate(moe_blocks(model)):
        experts = getattr(block, "experts", None)
        experts = _unwrap(experts) if experts is not None else None
        router = getattr(block, "gate", None)
        if experts is None or router is None or getattr(experts, "gate_up_proj", None) is None:
            raise refusal(f"layer {layer}'s MLP is not a routed experts block with gate_up_proj (a model mixing dense "
                          "and MoE layers, or experts laid out differently); steer taps only that layout")
        if (getattr(experts, "has_bias", False) or not getattr(experts, "has_gate", True)
                or getattr(experts, "has_post_expert_norm", False) or getattr(experts, "is_transposed", False)
                or not getattr(experts, "is_concatenated", True)
                or getattr(type(experts), "_apply_gate", hf_moe._default_apply_gate) is not hf_moe._default_apply_gate):
            raise refusal("its experts are not plain concatenated gate/up SwiGLU experts without bias; steer's tap "
                          "would not compute what they compute")
        shared = getattr(block, "shared_expert", None)
        shared_width = 0
        if shared is not None:
            shared = _unwrap(shared)
            if not all(hasattr(shared, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn")):
                raise refusal("its shared expert is not a gated MLP (gate_proj, up_proj, down_proj)")
            shared_width = int(shared.down_proj.in_features)
        n_experts, two_width, _ = experts.gate_up_proj.shape
        layouts.add(ExpertLayout(int(n_experts), int(two_width) // 2, int(router.top_k), shared_width))
    if len(layouts) != 1:
        raise refusal("its MoE layers differ in shape; steer lays out one expert shape for every layer")
    return layouts.pop()


@dataclass
class Rows:
    """What one segment of a MoE layer computed in one forward: rows of (token, expert) pairs.

    `token` is each row's flat (batch·seq) index (None for the shared expert: every token, in order);
    `down_input` may be changed in place (it is what the down projection then reads).
    """

    layer: int
    column: Int[Tensor, " row"] | int  # expert column per row (an int: one expert for every row)
    token: Int[Tensor, " row"] | None
    gate: Float[Tensor, "row width"]
    down_input: Float[Tensor, "row width"]
    n_tokens: int
    seq: int  # positions per sequence (rows are [batch·seq] flattened)

    def positions(self) -> Int[Tensor, " row"]:
        """Each row's position within its sequence (of this forward)."""
        token = self.token if self.token is not None else torch.arange(self.n_tokens, device=self.gate.device)
        return token % self.seq

    def tokens(self) -> Int[Tensor, " row"]:
        return self.token if self.token is not None else torch.arange(self.n_tokens, device=self.gate.device)


Tap = Callable[[Rows], None]
RouterFn = Callable[[Tensor, int], Tensor]  # (router logits [tokens, expert], seq) -> logits, -inf where masked


def _routed_forward(experts: nn.Module, tap: Callable[[Rows, int], None], hidden: Tensor, top_k_index: Tensor,
                    top_k_weights: Tensor) -> Tensor:
    """transformers' grouped-mm experts forward (`grouped_mm_experts_forward`, no bias, no expert parallelism),
    with `tap` on the rows between act_fn(gate)·up and the down projection."""
    from transformers.integrations.moe import _grouped_linear

    num_top_k = top_k_index.size(-1)
    num_tokens, hidden_dim = hidden.shape
    sample_weights = top_k_weights.reshape(-1)
    expert_ids_g, perm = torch.sort(top_k_index.reshape(-1))
    token = perm // num_top_k
    selected = hidden[token]
    histc_input = expert_ids_g.float() if hidden.device.type in ("cpu", "mps") else expert_ids_g.int()
    tokens_per_expert = torch.histc(histc_input, bins=experts.num_experts, min=0, max=experts.num_experts - 1)
    offsets = torch.cumsum(tokens_per_expert, dim=0, dtype=torch.int32)
    proj = _grouped_linear(selected, experts.gate_up_proj, offsets)
    gate, up = proj.chunk(2, dim=-1)
    down_input = experts.act_fn(gate) * up
    tap(Rows(-1, expert_ids_g, token, gate, down_input, num_tokens, 0), num_tokens)
    out = _grouped_linear(down_input, experts.down_proj, offsets)
    weighted = out * sample_weights[perm].unsqueeze(-1)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.size(0), device=perm.device)
    return weighted[inverse].view(num_tokens, num_top_k, hidden_dim).sum(dim=1).to(hidden.dtype)


def _shared_forward(mlp: nn.Module, column: int, tap: Callable[[Rows, int], None], x: Tensor) -> Tensor:
    """The shared expert's own forward (down(act(gate(x)) · up(x))), with `tap` on its down-projection input."""
    gate = mlp.gate_proj(x)
    down_input = mlp.act_fn(gate) * mlp.up_proj(x)
    rows = x.reshape(-1, x.shape[-1]).shape[0]
    tap(Rows(-1, column, None, gate.reshape(rows, -1), down_input.view(rows, -1), rows, 0), rows)
    return mlp.down_proj(down_input)


@contextlib.contextmanager
def tapped(model, taps: dict[int, Tap], *, routers: dict[int, RouterFn] | None = None,
           stop_layer: int | None = None) -> Iterator[None]:
    """For the block: `taps[layer](rows)` on each segment a MoE layer computes (routed experts, shared
    expert), `routers[layer]` on its router logits (before top-k), and StopForward after `stop_layer`'s
    MoE block. Only this thread's forward passes are tapped; the model is held for the thread."""
    routers = routers or {}
    blocks = moe_blocks(model)
    thread = threading.get_ident()
    seqs: dict[int, int] = {}
    handles: list = []
    overridden: list[nn.Module] = []
    with exclusive(model):
        try:
            for layer in sorted(set(taps) | set(routers) | ({stop_layer} if stop_layer is not None else set())):
                block = blocks[layer]

                def stamp(module, args, kwargs, layer=layer):
                    hidden = args[0] if args else kwargs.get("hidden_states")
                    seqs[layer] = hidden.shape[-2] if hidden.dim() == 3 else hidden.shape[0]

                handles.append(block.register_forward_pre_hook(stamp, with_kwargs=True))
                if layer in taps:
                    fn = taps[layer]

                    def call(rows: Rows, n_tokens: int, layer=layer, fn=fn) -> None:
                        if threading.get_ident() != thread:
                            return
                        rows.layer, rows.seq = layer, seqs.get(layer, n_tokens)
                        fn(rows)

                    experts = _unwrap(block.experts)
                    _add_tap(experts, call, lambda h, i, w, experts=experts: _routed_forward(
                        experts, _run(experts), h, i, w))
                    overridden.append((experts, call))
                    shared = getattr(block, "shared_expert", None)
                    if shared is not None:
                        shared = _unwrap(shared)
                        column = experts.num_experts
                        _add_tap(shared, call, lambda x, shared=shared, column=column: _shared_forward(
                            shared, column, _run(shared), x))
                        overridden.append((shared, call))
                if layer in routers:
                    handles.append(_unwrap(block.gate).register_forward_hook(_router_hook(routers[layer], layer, seqs,
                                                                                          thread)))
                if layer == stop_layer:
                    def stop(module, args, output):
                        if threading.get_ident() == thread:
                            raise StopForward

                    handles.append(block.register_forward_hook(stop))
            yield
        finally:
            for module, call in reversed(overridden):
                _remove_tap(module, call)
            for handle in reversed(handles):
                handle.remove()


_TAPS = "_steer_taps"


def _add_tap(module: nn.Module, call, forward) -> None:
    """Add `call` to the module's taps; the first tap installs the tapped forward (an instance attribute over the
    class' forward), so nested `tapped` blocks (a steering inside another) all act, in the order they began."""
    taps = module.__dict__.setdefault(_TAPS, [])
    if not taps:
        module.forward = forward
    taps.append(call)


def _remove_tap(module: nn.Module, call) -> None:
    taps = module.__dict__.get(_TAPS, [])
    if call in taps:
        taps.remove(call)
    if not taps:
        module.__dict__.pop("forward", None)
        module.__dict__.pop(_TAPS, None)


def _run(module: nn.Module):
    def run(rows: Rows, n_tokens: int) -> None:
        for call in list(module.__dict__.get(_TAPS, ())):
            call(rows, n_tokens)

    return run


def _router_hook(fn: RouterFn, layer: int, seqs: dict[int, int], thread: int):
    def hook(router, args, output):
        if threading.get_ident() != thread:
            return None
        logits = output[0]
        masked = fn(logits, seqs.get(layer, logits.shape[0]))
        if masked is None:
            return None
        return route(router, masked)

    return hook


def route(router: nn.Module, logits: Float[Tensor, "token expert"]) -> tuple[Tensor, Tensor, Tensor]:
    """What a top-k router returns for these logits: (logits, top-k weights, top-k experts), as transformers' routers
    compute them (softmax in float32, top-k, renormalised where the router says so)."""
    probs = torch.nn.functional.softmax(logits, dtype=torch.float, dim=-1)
    top_value, top_index = torch.topk(probs, router.top_k, dim=-1)
    if getattr(router, "norm_topk_prob", True):
        top_value = top_value / top_value.sum(dim=-1, keepdim=True)
    if hasattr(router, "norm_topk_prob"):  # Qwen-MoE and OLMoE cast back; Mixtral keeps float32
        top_value = top_value.to(logits.dtype)
    return logits, top_value, top_index
