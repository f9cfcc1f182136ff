"""Helpers shared by the benchmarks: stable hashes, reading back saved work (the one resume rule), means."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable

from steer._io import write_json_atomic


def stable_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of the canonical JSON of `obj` (sorted keys): equal for equal configs."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def mean_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def read_json(path: str | Path | None) -> dict:
    """The JSON object at `path`; {} when there is none or it cannot be read (an interrupted write)."""
    if path is None or not Path(path).exists():
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_keyed(path: str | Path | None, key: str, field: str = "key") -> dict | None:
    """Saved work at `path`, if it was made from the same inputs: its `field` holds `key` (a hash of
    everything it depends on). None otherwise: the work is redone and the file overwritten, never mixed in.

    The one resume rule of the benchmarks: a finished benchmark's `<name>.json` (field
    `config_hash`) and the units of an unfinished one (`Partial`) are both reused through it.
    """
    data = read_json(path)
    return data if data.get(field) == key else None


class Partial:
    """Results of the units of a long benchmark, saved after each unit so an interrupted run resumes.

    The file holds a key (a hash of everything the results depend on); a file with another key
    is ignored and overwritten, never mixed in (`read_keyed`).
    """

    def __init__(self, path: str | Path | None, key: str):
        self.path = Path(path) if path is not None else None
        self.key = key
        saved = read_keyed(self.path, key)
        self.done: dict[str, Any] = dict(saved.get("done", {})) if saved else {}

    def get(self, unit: str, compute: Callable[[], Any]) -> Any:
        if unit not in self.done:
            self.done[unit] = compute()
            if self.path is not None:
                write_json_atomic(self.path, {"key": self.key, "done": self.done})
        return self.done[unit]


def neuron_fingerprint(neurons) -> str:
    """A hash of a NeuronSet's content (languages, membership, general)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(neurons.languages).encode())
    digest.update(neurons.membership.numpy().tobytes())
    digest.update(neurons.general.numpy().tobytes())
    return digest.hexdigest()[:16]


def texts_fingerprint(texts: dict[str, list]) -> str:
    return stable_hash({lang: list(map(str, items)) for lang, items in texts.items()})


def check_at_least(where: str, **limits: tuple[int | float | None, int]) -> None:
    """A one-line error for the first count below its minimum (None: not set, allowed)."""
    for name, (value, minimum) in limits.items():
        if value is not None and value < minimum:
            raise ValueError(f"{where}: {name} must be at least {minimum}, got {value}")
