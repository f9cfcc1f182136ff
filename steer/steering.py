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
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Sequence

from jaxtyping import Float, Int
from torch import Tensor

from steer.hooks import attached
from steer.models import decoder, layer_device, model_info
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
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps must be a whole number of at least 1 (or None: every step), got {self.steps!r}")
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


def _as_list(languages) -> list[str] | None:
    return [languages] if isinstance(languages, str) else (None if languages is None else list(languages))


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
                 pushes: Sequence = ()):
        self.model = model
        self.interventions = list(interventions)
        self.pushes = list(pushes)
        self.phase = _Phase()
        self.layer_ops = _bind(model, self.interventions, neurons, stats, self.pushes)
        for layer, op in _bind_pushes(model, self.pushes):
            self.layer_ops.setdefault(layer, []).append(op)
        self.layer_ops = dict(sorted(self.layer_ops.items()))
        self._stack: contextlib.ExitStack | None = None

    def hooks(self):
        site = model_info(self.model).site
        return [(site.down_input_hook(layer), self._hook(ops)) for layer, ops in sorted(self.layer_ops.items())]

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
            stack.enter_context(attached(self.model, self.hooks()))
            if any(op.phase != "all" or op.steps is not None for ops in self.layer_ops.values() for op in ops):
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


def _bind_pushes(model, pushes) -> list[tuple[int, _LayerOp]]:
    """Each learned push as per-layer add ops (its offsets × scale), after checking it was fitted on `model`."""
    ops = []
    for applied in pushes:
        if applied.phase not in PHASES:
            raise ValueError(f"unknown phase '{applied.phase}'; use one of {', '.join(PHASES)}")
        if applied.steps is not None and (isinstance(applied.steps, bool) or not isinstance(applied.steps, int)
                                          or applied.steps < 1):
            raise ValueError(f"steps must be a whole number of at least 1 (or None: every step), got {applied.steps!r}")
        applied.push.check_model(model)
        for layer, (index, offsets) in applied.push.per_layer().items():
            device = layer_device(model, layer)
            ops.append((layer, _LayerOp("add", index.to(device), (applied.scale * offsets).to(device), applied.phase,
                                        applied.steps)))
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
              pushes: Sequence = ()) -> Steering:
    """Bind interventions to a model: `with steer.intervene(model, spec, neurons=ns): ...`; learned pushes
    (`push.applied(...)`) go in `pushes` and need no neuron set."""
    return Steering(model, interventions, neurons, stats, pushes)


def deactivate(model, neurons: NeuronSet, *, value: float = 0.0, phase: str = "all", classes=CLASSES) -> Steering:
    """Set the neurons (all languages of `neurons`; pick one with `neurons["fr"]`) to `value` (0)."""
    return Steering(model, [Intervention("suppress", value=value, phase=phase, classes=_as_list(classes))], neurons)


def amplify(model, neurons: NeuronSet, factor: float = 2.0, *, phase: str = "all", classes=CLASSES) -> Steering:
    """Multiply the neurons' down_proj input by `factor`."""
    return Steering(model, [Intervention("scale", factor=factor, phase=phase, classes=_as_list(classes))], neurons)
