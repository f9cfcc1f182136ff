"""One progress bar for all long work: tqdm when enabled, a silent stand-in otherwise."""

from __future__ import annotations


class NoBar:
    """The part of tqdm's interface steer uses, doing nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, total: int, desc: str, unit: str = "it", initial: int = 0, unit_scale: bool = False):
    """A tqdm bar over `total` units (starting at `initial`, for resumed work), or a `NoBar`."""
    if not enabled:
        return NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale, smoothing=0.1)
