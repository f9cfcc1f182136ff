"""Confidence intervals for rates over clustered units: a cluster bootstrap (resample clusters, not items).

Continuations made from one paragraph are not independent (the same text, in several languages or
under several pushes), so a rate's interval resamples paragraphs with replacement and takes every
continuation of each drawn paragraph, then reads the percentiles of the resampled rates.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

N_BOOTSTRAP = 2000
LEVEL = 0.95


def _cluster_means(
    values: Sequence[float], clusters: Sequence[Hashable], *, n_boot: int, seed: int,
) -> Float[Tensor, " boot"]:
    """The mean of per-item `values` in each of `n_boot` cluster-bootstrap resamples (whole clusters drawn with
    replacement, every item of a drawn cluster taken)."""
    index = {label: i for i, label in enumerate(dict.fromkeys(clusters))}
    ids = torch.tensor([index[label] for label in clusters])
    n_clusters = len(index)
    totals = torch.bincount(ids, weights=torch.tensor([float(v) for v in values], dtype=torch.float64),
                            minlength=n_clusters)
    sizes = torch.bincount(ids, minlength=n_clusters).to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.randint(n_clusters, (n_boot, n_clusters), generator=generator)  # [boot, cluster draw]
    return totals[drawn].sum(1) / sizes[drawn].sum(1)


def _interval(resampled: Float[Tensor, " boot"], level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = torch.quantile(resampled, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return low, high


def bootstrap_rates(
    flags: Sequence[bool], clusters: Sequence[Hashable], *, n_boot: int = N_BOOTSTRAP, seed: int = 0,
) -> Float[Tensor, " boot"]:
    """The rate of `flags` in each of `n_boot` cluster-bootstrap resamples (`clusters`: one label per flag)."""
    if len(flags) != len(clusters):
        raise ValueError(f"{len(flags)} flags but {len(clusters)} cluster labels")
    if not flags:
        raise ValueError("no items to resample")
    return _cluster_means([bool(f) for f in flags], clusters, n_boot=n_boot, seed=seed)


def rate_ci(
    flags: Sequence[bool], clusters: Sequence[Hashable], *, level: float = LEVEL, n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float | None, tuple[float, float] | None]:
    """(rate, its `level` percentile interval from a cluster bootstrap); (None, None) with no items."""
    if not flags:
        return None, None
    rate = sum(map(bool, flags)) / len(flags)
    return rate, _interval(bootstrap_rates(flags, clusters, n_boot=n_boot, seed=seed), level)


def difference_ci(
    flags_a: Sequence[bool], flags_b: Sequence[bool], clusters: Sequence[Hashable], *, level: float = LEVEL,
    n_boot: int = N_BOOTSTRAP, seed: int = 0,
) -> tuple[float | None, tuple[float, float] | None]:
    """(rate of a − rate of b, its `level` interval) for paired flags (item i of a and of b made from the same
    prompt, in cluster `clusters[i]`): one cluster bootstrap draws the same paragraphs for both, so what the
    two share (an easy paragraph) cancels out of the difference."""
    if not len(flags_a) == len(flags_b) == len(clusters):
        raise ValueError(f"paired rates need as many flags in each ({len(flags_a)}, {len(flags_b)}) as cluster "
                         f"labels ({len(clusters)})")
    if not flags_a:
        return None, None
    gaps = [int(bool(a)) - int(bool(b)) for a, b in zip(flags_a, flags_b)]
    return sum(gaps) / len(gaps), _interval(_cluster_means(gaps, clusters, n_boot=n_boot, seed=seed), level)
