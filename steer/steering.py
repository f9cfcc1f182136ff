"""Interventions on language neurons: suppress (deactivate), scale, set and add, in a phase.

An `Intervention` is plain data (JSON-serialisable) naming an op, which neurons (languages,
classes, layers of a NeuronSet) and its strength. `steer(model, ...)` binds interventions to a
model (checking everything before any forward pass) and applies them, inside a `with` block, to
the down_proj input act_fn(gate)·up: for one neuron that is the same as acting on act_fn(gate).

Ops use TransformerLens' declarative vocabulary (suppress, scale, add, set):
- `suppress`: set to `value` (0 by default: the papers' ablation);
- `scale`: multiply by `factor` (> 1 amplifies, < 1 damps);
- `set`: set to `value`, or by default to `alpha` × each neuron's mean on `target` (Tang et al.'s
  steering with alpha = 1);
- `add`: add `alpha` × the target's mean ("additive") or `alpha` × (target mean − mean of the other
  languages' means) ("diffmean"): the two variants of Gurgurov et al. 2025; or ("std") `alpha`
  standard deviations of each neuron on the target, in the direction of diffmean, so that one
  alpha means the same push for every neuron (needs stats collected with sq_sums).

Per hooked layer and forward there is one index op (index_fill_/index_copy_/index_add_); layers
without selected neurons get no hook. The phase (`all`, `prompt`, `generated`, or `output`: the
positions whose next token is generated, i.e. the prompt's last one and every generated one) is
resolved from absolute token positions, so results are the same with and without the KV cache.
In `steer.generate`, `steps` cuts an intervention off once it has acted on the prediction of that many new
tokens (a brief push that lets the model continue on its own).

On a mixture-of-experts model a neuron is (layer, expert, index) laid out flat (`steer.models.experts`):
the same ops act on each expert's down-projection input, on the rows routed to that expert only, through
taps on the experts (one gather of per-expert op tables per layer and forward). `ExpertMask` changes the
routing itself: the masked experts get no token in its phase (their router logits are -inf before top-k).
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from steer.hooks import attached
from steer.models import decoder, layer_device, model_info
from steer.models.experts import Rows, tapped
from steer.neurons import CLASSES, NeuronSet

OPS = ("suppress", "scale", "set", "add")
OP_ALIASES = {"deactivate": "suppress", "zero": "suppress", "ablate": "suppress", "amplify": "scale"}
PHASES = ("all", "prompt", "generated", "output")
ADD_MODES = ("additive", "diffmean", "std")


@dataclass
class Intervention:
    op: str
    languages: list[str] | None = None
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    layers: list[int] | None = None
    value: float | None = None
    factor: float | None = None
    target: str | None = None
    alpha: float = 1.0
    mode: str = "additive"
    phase: str = "all"
    exclude_languages: list[str] | None = None
    steps: int | None = None  # in generate: act only until the steps-th new token is predicted (None: every step)
    allow_empty: bool = False  # selecting no neuron is then a no-op, not an error (e.g. a suppression fully excluded)

    def __post_init__(self) -> None:
        self.op = OP_ALIASES.get(self.op, self.op)
        self.languages = _as_list(self.languages)
        self.exclude_languages = _as_list(self.exclude_languages)
        self.classes = _as_list(self.classes)
        unknown = [cls for cls in self.classes if cls not in (*CLASSES, "general")]
        if unknown or not self.classes:
            raise ValueError(f"unknown class '{unknown[0]}'; use specific, related and/or general" if unknown
                             else "classes is empty; use specific, related and/or general")
        if self.op not in OPS:
            raise ValueError(f"unknown op '{self.op}'; use one of {', '.join(OPS)} (or deactivate/amplify)")
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase '{self.phase}'; use one of {', '.join(PHASES)}")
        check_steps(self.steps)
        if self.layers is not None:
            self.layers = list(self.layers) if not isinstance(self.layers, (int, str)) else [self.layers]
            bad = [layer for layer in self.layers if isinstance(layer, bool) or not isinstance(layer, int)]
            if bad:
                raise ValueError(f"layers must be whole layer numbers, got {bad[0]!r}")
        if self.op == "scale" and (self.factor is None or not math.isfinite(self.factor)):
            raise ValueError(f"scale needs a finite factor, got {self.factor}")
        for name in ("value", "alpha"):
            number = getattr(self, name)
            if number is not None and not math.isfinite(number):
                raise ValueError(f"{name} must be a finite number, got {number}")
        if self.op == "set" and self.value is None and self.target is None:
            raise ValueError("set needs a constant value or a target language whose mean to use")
        if self.op == "add":
            if self.target is None:
                raise ValueError("add needs a target language whose mean to add")
            if self.mode not in ADD_MODES:
                raise ValueError(f"unknown add mode '{self.mode}'; use one of {', '.join(ADD_MODES)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Intervention":
        known = [f.name for f in fields(cls)]
        unknown = [key for key in data if key not in known]
        if unknown:
            raise ValueError(f"unknown Intervention field '{unknown[0]}'; the fields are {', '.join(known)}")
        return cls(**data)


def check_steps(steps: int | None) -> int | None:
    """The one check of `steps`: a whole number N >= 1 (act until the N-th new token is predicted) or None (every
    step); returns it."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        hint = " (0 no longer means every step: pass None, or 'all' on a command line)" if steps == 0 else ""
        raise ValueError(f"steps must be a whole number of at least 1, or None for every step, got {steps!r}{hint}")
    return steps


def _as_list(languages) -> list[str] | None:
    return [languages] if isinstance(languages, str) else (None if languages is None else list(languages))


@dataclass
class ExpertMask:
    """Mask experts out of the routing of a mixture-of-experts model: `experts` maps a layer to the experts its
    router may not choose (in `phase`, for `steps` as in `Intervention`); the router picks its top-k among the
    others, renormalised as the architecture does. `ExpertMask.for_language` picks a language's own experts."""

    experts: dict[int, list[int]]
    phase: str = "all"
    steps: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.experts, dict) or not self.experts:
            raise ValueError("experts must map layers to the experts to mask, e.g. {3: [0, 5]}")
        clean = {}
        for layer, experts in self.experts.items():
            layer = int(layer) if isinstance(layer, str) and layer.isdigit() else layer
            experts = [experts] if isinstance(experts, int) else list(experts)
            if isinstance(layer, bool) or not isinstance(layer, int) or not experts or any(
                    isinstance(e, bool) or not isinstance(e, int) for e in experts):
                raise ValueError(f"experts must map whole layer numbers to lists of whole expert numbers, got "
                                 f"{layer!r}: {experts!r}")
            clean[layer] = sorted(set(experts))
        self.experts = clean
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase '{self.phase}'; use one of {', '.join(PHASES)}")
        check_steps(self.steps)

    @classmethod
    def for_language(cls, stats, language: str, top: int = 1, **kwargs) -> "ExpertMask":
        """Mask, in every layer, the `top` experts chosen most often for `language` beyond the other languages'
        mean routing frequency (the "language experts" of `ActivationStats.routing`)."""
        routing = stats.routing()  # [lang, layer, column]
        layout = stats.experts
        k = stats.index(language)
        others = [i for i in range(len(stats.languages)) if i != k]
        excess = routing[k] - (routing[others].mean(0) if others else 0)
        excess = excess[:, :layout.n_experts]  # the shared expert is never routed
        if not 1 <= top < layout.n_experts - layout.top_k + 1:
            raise ValueError(f"top must be between 1 and {layout.n_experts - layout.top_k} (the router must keep "
                             f"{layout.top_k} experts to choose from), got {top}")
        chosen = excess.topk(top, dim=-1).indices
        return cls({layer: sorted(chosen[layer].tolist()) for layer in range(chosen.shape[0])}, **kwargs)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _LayerOp:
    op: str
    index: Int[Tensor, " n"]
    values: Float[Tensor, " n"] | float
    phase: str
    steps: int | None = None


class _Phase:
    """Absolute position of the current forward's tokens, read from the decoder's attention mask."""

    def __init__(self) -> None:
        self.prompt_width: int | None = None  # positions < prompt_width are the prompt
        self.start = 0  # absolute position of the first token of the current forward

    def pre_hook(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        seq = (ids if ids is not None else embeds).shape[1]
        past = kwargs.get("past_key_values")
        if past is not None and hasattr(past, "get_seq_length"):
            self.start = int(past.get_seq_length())
            return
        mask = kwargs.get("attention_mask")  # 2D masks cover past + current tokens
        total = mask.shape[-1] if isinstance(mask, Tensor) and mask.ndim == 2 else seq
        self.start = total - seq

    def bounds(self, phase: str, seq: int, steps: int | None = None) -> tuple[int, int]:
        """The slice [lo, hi) of this forward's positions that the phase covers, cut after the position that
        predicts the `steps`-th new token when `steps` is given.

        Outside `steer.generate` no prompt width is known: "all" and "prompt" then cover every position, and
        a phase that needs the prompt's end ("generated", "output") or `steps` is an error, never a no-op.
        """
        if self.prompt_width is None:
            if phase not in ("all", "prompt") or steps is not None:
                what = f"phase '{phase}'" if phase not in ("all", "prompt") else "steps"
                raise RuntimeError(f"{what} needs to know where the prompt ends, which only steer.generate tells "
                                   "the steering; for your own forward passes use phase 'all' or 'prompt' without "
                                   "steps")
            return 0, seq
        lo, hi = 0, seq
        if phase != "all":
            # "output": the positions whose next token is generated (the prompt's last one, and every generated one)
            edge = self.prompt_width - (1 if phase == "output" else 0)
            boundary = max(0, min(seq, edge - self.start))
            lo, hi = (0, boundary) if phase == "prompt" else (boundary, seq)
        if steps is not None:  # absolute position prompt_width - 1 + k predicts the (k + 1)-th new token
            hi = max(lo, min(hi, self.prompt_width - 1 + steps - self.start))
        return lo, hi


class Steering:
    """Interventions (and learned pushes, `steer.push.AppliedPush`) bound to a model. Use as a context manager,
    or `apply()` + `remove()` in finally."""

    def __init__(self, model, interventions: Sequence[Intervention], neurons: NeuronSet | None, stats=None,
                 pushes: Sequence = (), expert_masks: Sequence[ExpertMask] = ()):
        self.model = model
        self.interventions = list(interventions)
        self.pushes = list(pushes)
        self.expert_masks = list(expert_masks)
        self.phase = _Phase()
        self.layer_ops = _bind(model, self.interventions, neurons, stats, self.pushes or self.expert_masks)
        self.resid_ops: dict[int, list[_LayerOp]] = {}  # residual-stream pushes, per layer
        for site, layer, op in _bind_pushes(model, self.pushes):
            (self.layer_ops if site == "mlp" else self.resid_ops).setdefault(layer, []).append(op)
        self.layer_ops = dict(sorted(self.layer_ops.items()))
        self.experts = model_info(model).experts
        self.routers = _bind_masks(model, self.expert_masks, self.experts)
        self._stack: contextlib.ExitStack | None = None

    def hooks(self):
        site = model_info(self.model).site
        return [(site.down_input_hook(layer), self._hook(ops)) for layer, ops in sorted(self.layer_ops.items())] + \
            [(f"blocks.{layer}.hook_resid_post", self._hook(ops)) for layer, ops in sorted(self.resid_ops.items())]

    def _attached(self):
        """The hooks on the down-projection inputs (a dense MLP), or taps on the experts and routers (MoE)."""
        if self.experts is None:
            return attached(self.model, self.hooks())
        taps = {layer: self._tap([_ExpertOp(op, self.experts) for op in ops]) for layer, ops in self.layer_ops.items()}
        routers = {layer: self._router(masks) for layer, masks in self.routers.items()}
        return tapped(self.model, taps, routers=routers)

    def _tap(self, ops: list["_ExpertOp"]):
        phase = self.phase

        def tap(rows: Rows) -> None:
            for op in ops:
                lo, hi = phase.bounds(op.layer_op.phase, rows.seq, op.layer_op.steps)
                if hi > lo:
                    op.apply(rows, lo, hi)

        return tap

    def _router(self, masks: list[tuple[Tensor, str, int | None]]):
        phase = self.phase

        def router(logits: Tensor, seq: int) -> Tensor | None:
            out = None
            for experts, mask_phase, steps in masks:
                lo, hi = phase.bounds(mask_phase, seq, steps)
                if hi <= lo:
                    continue
                out = logits.clone() if out is None else out
                position = torch.arange(logits.shape[0], device=logits.device) % seq
                rows = ((position >= lo) & (position < hi))[:, None]
                blocked = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
                blocked[experts.to(logits.device)] = True
                out = out.masked_fill(rows & blocked, float("-inf"))
            return out

        return router

    def _hook(self, ops: list[_LayerOp]):
        phase = self.phase

        def hook(activation: Tensor) -> Tensor:
            seq = activation.shape[1]
            for layer_op in ops:
                lo, hi = phase.bounds(layer_op.phase, seq, layer_op.steps)
                if hi <= lo:
                    continue
                target = activation if (lo, hi) == (0, seq) else activation[:, lo:hi]
                _apply(target, layer_op)
            return activation

        return hook

    def apply(self) -> "Steering":
        if self._stack is not None:
            raise RuntimeError("this steering is already applied")
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(self._attached())
            if any(op.phase != "all" or op.steps is not None for ops in self.layer_ops.values() for op in ops) or any(
                    mask.phase != "all" or mask.steps is not None for mask in self.expert_masks):
                thread, track = threading.get_ident(), self.phase.pre_hook

                def pre_hook(module, args, kwargs):  # only this thread's forward passes move the phase
                    if threading.get_ident() == thread:
                        track(module, args, kwargs)

                handle = decoder(self.model).register_forward_pre_hook(pre_hook, with_kwargs=True)
                stack.callback(handle.remove)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        active_steerings(self.model).append(self)
        return self

    def remove(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()
            active = active_steerings(self.model)
            if self in active:
                active.remove(self)

    def __enter__(self) -> "Steering":
        return self.apply()

    def __exit__(self, *exc) -> None:
        self.remove()


def active_steerings(model) -> list[Steering]:
    """The steerings currently applied to `model` (so generation can tell them where the prompt ends)."""
    return model.__dict__.setdefault("_steer_active", [])


def _apply(x: Tensor, layer_op: _LayerOp) -> None:
    index, values = layer_op.index, layer_op.values
    if layer_op.op == "suppress":
        x.index_fill_(-1, index, float(values))
    elif layer_op.op == "scale":
        x.index_copy_(-1, index, x.index_select(-1, index) * values)
    elif layer_op.op == "set":
        if isinstance(values, Tensor):
            x.index_copy_(-1, index, values.to(x.dtype).expand(*x.shape[:-1], -1))
        else:
            x.index_fill_(-1, index, float(values))
    else:  # add
        x.index_add_(-1, index, values.to(x.dtype).expand(*x.shape[:-1], -1))


class _ExpertOp:
    """One layer op on a mixture-of-experts layer: per-expert tables [expert, width] over the routed experts (the
    op's identity where a neuron is not selected) and the shared expert's own indices."""

    def __init__(self, layer_op: _LayerOp, layout):
        self.layer_op = layer_op
        index, values = layer_op.index, layer_op.values
        end = layout.n_experts * layout.width
        routed = index < end
        self.shared = _LayerOp(layer_op.op, index[~routed] - end,
                               values[~routed] if isinstance(values, Tensor) else values, layer_op.phase)
        r_index = index[routed]
        r_values = values[routed] if isinstance(values, Tensor) else values
        self.any_routed = bool(routed.any())
        shape = (layout.n_experts, layout.width)
        op = layer_op.op
        identity = 1.0 if op == "scale" else 0.0
        table = torch.full((end,), identity, device=index.device, dtype=torch.float32)
        table[r_index] = r_values.float() if isinstance(r_values, Tensor) else float(r_values)
        self.table = table.view(shape)
        chosen = torch.zeros(end, dtype=torch.bool, device=index.device)
        chosen[r_index] = True
        self.chosen = chosen.view(shape)

    def apply(self, rows: Rows, lo: int, hi: int) -> None:
        x = rows.down_input
        if isinstance(rows.column, int):  # the shared expert: [batch·seq, width] rows in token order
            if len(self.shared.index):
                view = x.view(-1, rows.seq, x.shape[-1])
                _apply(view if (lo, hi) == (0, rows.seq) else view[:, lo:hi], self.shared)
            return
        if not self.any_routed:
            return
        position = rows.positions()
        live = ((position >= lo) & (position < hi))[:, None]
        table = self.table[rows.column].to(x.dtype)
        if self.layer_op.op == "scale":
            x.mul_(torch.where(live, table, torch.ones_like(table)))
        elif self.layer_op.op == "add":
            x.add_(torch.where(live, table, torch.zeros_like(table)))
        else:  # suppress, set: the chosen neurons take their value
            x.copy_(torch.where(live & self.chosen[rows.column], table, x))


def _bind_masks(model, masks: Sequence[ExpertMask], layout) -> dict[int, list[tuple[Tensor, str, int | None]]]:
    """Each expert mask as per-layer (experts, phase, steps), checked against the model's experts."""
    routers: dict[int, list] = {}
    if not masks:
        return routers
    if layout is None:
        raise ValueError("expert masks need a mixture-of-experts model; this model's MLP is dense")
    n_layers = model_info(model).n_layers
    for mask in masks:
        for layer, experts in mask.experts.items():
            if not 0 <= layer < n_layers:
                raise ValueError(f"expert mask on layer {layer}, but the model has layers 0-{n_layers - 1}")
            if not all(0 <= e < layout.n_experts for e in experts):
                raise ValueError(f"expert mask on experts {experts}, but the model has experts 0-{layout.n_experts - 1}")
            if layout.n_experts - len(experts) < layout.top_k:
                raise ValueError(f"masking {len(experts)} of {layout.n_experts} experts leaves fewer than the "
                                 f"{layout.top_k} the router chooses per token")
            device = layer_device(model, layer)
            routers.setdefault(layer, []).append((torch.tensor(experts, device=device), mask.phase, mask.steps))
    return routers


def _bind_pushes(model, pushes) -> list[tuple[str, int, _LayerOp]]:
    """Each learned push as (site, layer, add op) with its offsets × scale, after checking it was fitted on
    `model`; site "mlp" acts on the down-projection input, "residual" on the residual stream after the layer."""
    ops = []
    for applied in pushes:
        if applied.phase not in PHASES:
            raise ValueError(f"unknown phase '{applied.phase}'; use one of {', '.join(PHASES)}")
        check_steps(applied.steps)
        applied.push.check_model(model)
        if applied.push.site == "residual" and model_info(model).experts is not None:
            raise ValueError("a residual-stream push on a mixture-of-experts model is not supported yet")
        for layer, (index, offsets) in applied.push.per_layer().items():
            device = layer_device(model, layer)
            ops.append((applied.push.site, layer, _LayerOp("add", index.to(device), (applied.scale * offsets).to(device),
                                                           applied.phase, applied.steps)))
    return ops


def _bind(model, interventions: Sequence[Intervention], neurons: NeuronSet | None, stats,
          pushes: Sequence = ()) -> dict[int, list[_LayerOp]]:
    """Resolve every intervention to per-layer (op, indices, values), validating all before any forward."""
    if not interventions:
        if pushes:
            return {}
        raise ValueError("no interventions given")
    if neurons is None:
        raise ValueError("interventions need a NeuronSet (steer.identify or NeuronSet.load)")
    neurons.check_model(model)
    means = stds = None
    layer_ops: dict[int, list[_LayerOp]] = {}
    for spec in interventions:
        chosen = neurons.select(_as_list(spec.languages), spec.classes, spec.layers)
        if spec.exclude_languages:  # positions used by any excluded language stay untouched, whatever the rows
            chosen = chosen.without(neurons.select(_as_list(spec.exclude_languages), list(CLASSES) + ["general"]))
        per_layer = chosen.layer_indices()
        if not per_layer and spec.allow_empty:
            continue
        if not per_layer:
            raise ValueError(_nothing_selected(spec, neurons))
        if spec.target is not None:
            if stats is None:
                raise ValueError(f"{spec.op} with a target language needs ActivationStats (their means)")
            stats.check_model(model)
            means = stats.means() if means is None else means
            target_row = means[stats.index(spec.target)]
            if spec.op == "add" and spec.mode == "std" and stds is None:
                stds = stats.stds()
        for layer, index in per_layer.items():
            device = layer_device(model, layer)  # index and values live beside the layer's activations
            values: Tensor | float
            if spec.op == "suppress":
                values = 0.0 if spec.value is None else spec.value
            elif spec.op == "scale":
                values = spec.factor
            elif spec.op == "set":
                values = spec.value if spec.value is not None else (spec.alpha * target_row[layer, index]).to(device)
            else:
                direction = target_row[layer, index]
                if spec.mode != "additive":
                    others = [k for k, lang in enumerate(stats.languages) if lang != spec.target]
                    direction = direction - means[others][:, layer, index].mean(0)
                if spec.mode == "std":
                    direction = direction.sign() * stds[stats.index(spec.target), layer, index]
                values = (spec.alpha * direction).to(device)
            layer_ops.setdefault(layer, []).append(_LayerOp(spec.op, index.to(device), values, spec.phase, spec.steps))
    return layer_ops


def _nothing_selected(spec: Intervention, neurons: NeuronSet) -> str:
    """Why an intervention selects no neuron, naming the languages of the set it was given."""
    languages = ", ".join(spec.languages or neurons.languages)
    where = f" in layers {spec.layers}" if spec.layers is not None else ""
    but = f" once the neurons of {', '.join(spec.exclude_languages)} are left on" if spec.exclude_languages else ""
    return (f"{spec.op} on {languages} selects no neuron: the neuron set has none of classes {', '.join(spec.classes)}"
            f"{where} for {languages}{but}; choose another language or class, or identify neurons with a larger top_rate")


def intervene(model, *interventions: Intervention, neurons: NeuronSet | None = None, stats=None,
              pushes: Sequence = (), expert_masks: Sequence[ExpertMask] = ()) -> Steering:
    """Bind interventions to a model: `with steer.intervene(model, spec, neurons=ns): ...`; learned pushes
    (`push.applied(...)`) go in `pushes` and need no neuron set, nor do `expert_masks` (`ExpertMask`: experts
    taken out of a mixture-of-experts model's routing)."""
    return Steering(model, interventions, neurons, stats, pushes, expert_masks)


def deactivate(model, neurons: NeuronSet, *, value: float = 0.0, phase: str = "all", classes=CLASSES) -> Steering:
    """Set the neurons (all languages of `neurons`; pick one with `neurons["fr"]`) to `value` (0)."""
    return Steering(model, [Intervention("suppress", value=value, phase=phase, classes=_as_list(classes))], neurons)


def amplify(model, neurons: NeuronSet, factor: float = 2.0, *, phase: str = "all", classes=CLASSES) -> Steering:
    """Multiply the neurons' down_proj input by `factor`."""
    return Steering(model, [Intervention("scale", factor=factor, phase=phase, classes=_as_list(classes))], neurons)
