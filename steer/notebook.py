"""The first cell of the worked examples in notebooks/: sizes from the environment, one output folder, tables.

```python
from steer.notebook import setup, table
nb = setup("02_ablate_and_delta_ppl", max_stats=24, n_eval=2, languages=[])
nb.max_stats, nb.n_eval, nb.languages, nb.out
```

Each keyword names a size and gives its default; the environment variable `STEER_NB_<NAME>` (e.g.
`STEER_NB_MAX_STATS`) overrides it, read as the default's type (an int, or a comma-separated list:
empty means the default's meaning, e.g. all languages). Everything a notebook writes goes under
`$STEER_NB_OUT/<notebook>/` (default: a new temporary folder). Nothing here is needed outside notebooks.

Importing steer imports tqdm, which warns once in a kernel without ipywidgets ("IProgress not found"): a
notebook that wants clean outputs filters that warning before its first `import steer`.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

from steer._version import __version__

ENV_PREFIX = "STEER_NB_"


def _read(name: str, default):
    key = ENV_PREFIX + name.upper()
    raw = os.environ.get(key)
    if raw is None:
        return default
    if isinstance(default, bool) or not isinstance(default, (int, list, str)):
        raise TypeError(f"setup: size '{name}' must default to an int, a list or a str, got {default!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{key}={raw!r}: not an integer") from None
    if isinstance(default, list):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def setup(name: str, **sizes) -> SimpleNamespace:
    """Sizes (each `STEER_NB_<NAME>` or its default), the output folder `out` (created), quiet progress.

    Returns a namespace with one attribute per size and `out`, `$STEER_NB_OUT/<name>` or a new
    temporary folder's `<name>`; prints the steer version and where the files go (never a temporary
    path, so committed outputs do not name one).
    """
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"setup: '{name}' is not a notebook name")
    if "out" in sizes:
        raise ValueError("setup: 'out' is the output folder, not a size")
    values = {key: _read(key, default) for key, default in sizes.items()}
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
    _quiet_loading()
    given = os.environ.get(ENV_PREFIX + "OUT")
    out = Path(given or tempfile.mkdtemp(prefix="steer-nb-")) / name
    out.mkdir(parents=True, exist_ok=True)
    print(f"steer {__version__}; files go to", f"$STEER_NB_OUT/{name}" if given else "a temporary folder (nb.out)")
    return SimpleNamespace(out=out, **values)


def _quiet_loading() -> None:
    """No weight-loading or download progress bars in the notebook's outputs, whatever was imported already."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by huggingface_hub when it loads
    try:
        import huggingface_hub.utils
        import transformers.utils.logging
    except ImportError:
        return
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def _cell(value) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence, rows: Sequence[Sequence]) -> str:
    """Rows as a markdown table (floats to 3 decimals; `|` and newlines escaped)."""
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def table(header: Sequence, rows: Sequence[Sequence]) -> None:
    """Show rows as a markdown table in the notebook."""
    from IPython.display import Markdown, display

    display(Markdown(markdown_table(header, rows)))
