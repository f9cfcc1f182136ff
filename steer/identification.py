"""Selecting language neurons from activation statistics: `identify(stats, method=...) -> NeuronSet`.

Every method works on P[lang, layer, neuron] = active / tokens with whole-tensor ops (no loop over
neurons). "kth(r)" is the value at 1-based rank round(r · numel) of all P values sorted ascending,
as `torch.kthvalue` gives it. Ties in a ranking are broken by position (layer-major, then neuron),
so the selection is deterministic.

- `lape` (Tang et al. 2024): entropy of the per-neuron language distribution.
- `zhang2025` (Zhang et al. 2025): normalised entropy minus λ · max probability, with the
  reference code's search for λ, and the specific / related / general split.
- `specificity`: per language the neurons whose P most exceeds every other language's.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from steer.neurons import NeuronSet
from steer.stats import ActivationStats

METHODS: dict[str, Callable[..., NeuronSet]] = {}


def method(name: str):
    def register(fn):
        METHODS[name] = fn
        return fn

    return register


def method_params(name: str) -> list[str]:
    """The parameters a registered method takes, by the names users pass (`lambda_` is given as `lambda`)."""
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; choose one of {', '.join(sorted(METHODS))}")
    return [p.rstrip("_") for p in _param_names(name)]


def _param_names(name: str) -> list[str]:
    signature = inspect.signature(METHODS[name])
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in list(signature.parameters.values())[1:] if p.kind in kinds]


def check_params(name: str, params) -> None:
    """A one-line error naming the method and the parameters it takes when `params` holds any other."""
    accepted = method_params(name)
    names = _param_names(name)
    unknown = [key for key in params if key not in names and key + "_" not in names]
    if unknown:
        which = ", ".join(f"'{key}'" for key in unknown)
        raise ValueError(f"method '{name}' takes no parameter {which}; its parameters are {', '.join(accepted)}")
    signature = inspect.signature(METHODS[name]).parameters
    for key, value in params.items():
        _check_value(key, value, str(signature[key if key in signature else key + "_"].annotation))


def _check_value(key: str, value, annotation: str) -> None:
    """A method parameter's value against its annotation (before any work): rates in (0, 1], counts ≥ 1,
    numbers finite, and "auto" where a string is allowed."""
    if value is None and "None" in annotation:
        return
    if key.endswith(("_rate", "_ratio")):
        _check_rate(**{key: value})
    elif "int" in annotation and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{key} must be a whole number of at least 1, got {value!r}")
    elif "float" in annotation:
        number = value
        if isinstance(value, str) and "str" in annotation:
            if value == "auto":
                return
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{key} must be a number or 'auto', got {value!r}") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ValueError(f"{key} must be a finite number{' or auto' if 'str' in annotation else ''}, got {value!r}")


def identify(stats: ActivationStats, method: str = "zhang2025", **params) -> NeuronSet:
    """Select language neurons from `stats` with a registered method (see `METHODS`)."""
    check_params(method, params)
    if len(stats.languages) < 2:
        raise ValueError("identifying language neurons needs stats for at least two languages")
    if int(stats.tokens.sum()) == 0:
        raise ValueError("the stats count no tokens; collect them on a corpus with text first")
    empty = [lang for lang, n in zip(stats.languages, stats.tokens.tolist()) if n == 0]
    if empty:
        raise ValueError(
            f"the stats count no tokens for {', '.join(repr(lang) for lang in empty)}, so nothing can be said about "
            "its neurons; collect stats with text in that language, or without it"
        )
    neurons = METHODS[method](stats, **params)
    neurons.meta = {
        "model": stats.meta.get("model", {}),
        "corpus": stats.meta.get("corpus", {}),
        "tokens": dict(zip(stats.languages, stats.tokens.tolist())),
        **neurons.meta,
    }
    return neurons


def kth(values: Tensor, ratio: float) -> float:
    """The value at 1-based rank round(ratio · numel) of `values` sorted ascending."""
    flat = values.flatten()
    rank = min(max(round(ratio * flat.numel()), 1), flat.numel())
    return float(flat.kthvalue(rank).values)


def _lowest(scores: Float[Tensor, "layer neuron"], n: int) -> Bool[Tensor, "layer neuron"]:
    """Mask of the n lowest scores; ties go to the earlier (layer, neuron)."""
    order = torch.sort(scores.flatten(), stable=True).indices[:n]
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[order] = True
    return mask.reshape(scores.shape)


def _general(probs: Tensor, tau: float) -> Bool[Tensor, "layer neuron"]:
    return (probs > tau).all(0)


@method("lape")
def lape(
    stats: ActivationStats, top_rate: float = 0.01, filter_rate: float = 0.95, activation_bar_ratio: float = 0.95
) -> NeuronSet:
    _check_rate(top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio)
    probs = stats.probs().to(torch.float64)  # [lang, layer, neuron]
    total = probs.sum(0, keepdim=True)
    normed = torch.where(total > 0, probs / total.clamp(min=1e-300), torch.zeros_like(probs))
    entropy = -(normed * torch.where(normed > 0, normed.log(), torch.zeros_like(normed))).sum(0)
    tau = kth(probs, filter_rate)
    entropy[~(probs > tau).any(0)] = math.inf
    n_select = round(top_rate * stats.n_layers * stats.d_mlp)
    selected = _lowest(entropy, n_select)
    bar = kth(probs, activation_bar_ratio)
    membership = (probs > bar) & selected
    return NeuronSet(
        stats.languages, membership, _general(probs, tau), "lape",
        {"top_rate": top_rate, "filter_rate": filter_rate, "activation_bar_ratio": activation_bar_ratio,
         "tau": tau, "activation_bar": bar, "n_selected": n_select,
         "n_unassigned": int((selected & ~membership.any(0)).sum())},
    )


def zhang_entropy(probs: Float[Tensor, "lang layer neuron"]) -> Float[Tensor, "layer neuron"]:
    """Normalised entropy of each neuron's distribution over languages, as the reference computes it."""
    k = probs.shape[0]
    total = probs.sum(0, keepdim=True)
    dist = torch.where(total > 0, probs / total.clamp(min=1e-300), torch.full_like(probs, 1.0 / k))
    dist = dist.clamp(min=1e-12)
    dist = dist / dist.sum(0, keepdim=True)
    return -(dist * (dist + 1e-30).log()).sum(0) / math.log(k)


@method("zhang2025")
def zhang2025(
    stats: ActivationStats,
    top_rate: float = 0.01,
    threshold_ratio: float = 0.95,
    lambda_: float | str = "auto",
    **aliases,
) -> NeuronSet:
    """Zhang et al. 2025. `lambda_` (or `lambda` via **) is a number or "auto" (the reference's search);
    a string holding a number (from a command line) is read as that number."""
    if "lambda" in aliases:
        lambda_ = aliases.pop("lambda")
    if aliases:
        raise ValueError(f"unknown zhang2025 parameters {sorted(aliases)}; use top_rate, threshold_ratio, lambda")
    _check_rate(top_rate=top_rate, threshold_ratio=threshold_ratio)
    if lambda_ != "auto":
        try:
            if isinstance(lambda_, bool):
                raise TypeError
            lambda_ = float(lambda_)
        except (TypeError, ValueError):
            raise ValueError(f"lambda must be a number or 'auto', got {lambda_!r}") from None
    probs = stats.probs().to(torch.float64)
    k = probs.shape[0]
    entropy = zhang_entropy(probs)
    c_k = sum(1.0 / i for i in range(1, k + 1)) / k
    peak = probs.max(0).values / c_k
    tau = kth(probs, threshold_ratio)
    sharing = (probs > tau).sum(0)
    n_select = round(top_rate * stats.n_layers * stats.d_mlp)

    def select(lam: float) -> Bool[Tensor, "layer neuron"]:
        return _lowest(entropy - lam * peak, n_select)

    def ok(lam: float) -> bool:
        return not bool((select(lam) & (sharing == k)).any())

    if lambda_ == "auto":
        best = None
        if ok(0.0):
            best = 0.0
        if ok(0.2):
            best = 0.2
        lo, hi = 0.0, 0.2
        while hi - lo > 1e-3:
            mid = (lo + hi) / 2
            if ok(mid):
                best, lo = mid, mid
            else:
                hi = mid
        if best is None:
            raise ValueError(
                "no λ in [0, 0.2] keeps general neurons out of the selection; pass a smaller top_rate "
                "or an explicit lambda"
            )
        lam = best
    else:
        lam = float(lambda_)
        if not math.isfinite(lam):
            raise ValueError(f"lambda must be a finite number or 'auto', got {lambda_}")
    selected = select(lam)
    membership = (probs > tau) & selected
    return NeuronSet(
        stats.languages, membership, sharing == k, "zhang2025",
        {"top_rate": top_rate, "threshold_ratio": threshold_ratio, "lambda": lam,
         "lambda_search": lambda_ == "auto", "tau": tau, "c_K": c_k, "n_selected": n_select,
         "n_unassigned": int((selected & (sharing == 0)).sum())},
    )


@method("specificity")
def specificity(stats: ActivationStats, top_rate: float = 0.01, n_per_language: int | None = None) -> NeuronSet:
    """Per language, the n neurons with the largest P[k] − max over other languages (only margins > 0)."""
    _check_rate(top_rate=top_rate)
    probs = stats.probs()
    k = probs.shape[0]
    n = n_per_language if n_per_language is not None else round(top_rate * stats.n_layers * stats.d_mlp / k)
    if n < 1:
        raise ValueError("n_per_language must be at least 1")
    top2 = probs.topk(min(2, k), dim=0)
    first, second = top2.values[0], top2.values[-1]
    is_top = torch.arange(k)[:, None, None] == top2.indices[0]
    best_other = torch.where(is_top, second, first)
    margin = probs - best_other  # [lang, layer, neuron]
    flat = margin.reshape(k, -1)
    order = torch.sort(-flat, dim=1, stable=True).indices[:, :n]
    membership = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True)
    membership &= flat > 0
    return NeuronSet(
        stats.languages, membership.reshape(probs.shape), None, "specificity",
        {"top_rate": top_rate, "n_per_language": n},
    )


def _check_rate(**rates: float) -> None:
    for name, value in rates.items():
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value <= 1):
            raise ValueError(f"{name} must be in (0, 1], got {value}")
