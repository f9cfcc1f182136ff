"""Regenerate the README's result tables, the forced-language ones among them: the same as readme_tables.py.

    python benchmarks/forced_tables.py [--check]

Kept under this name for the commands that name it; see benchmarks/readme_tables.py.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv[0] = str(Path(__file__).with_name("readme_tables.py"))
    runpy.run_path(sys.argv[0], run_name="__main__")
