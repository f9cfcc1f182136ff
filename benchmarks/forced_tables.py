"""Regenerate the README's forced-language tables from the result files under docs/results/.

    python benchmarks/forced_tables.py [--check]

Every block of README.md between `<!-- forced-table: FILE -->` and `<!-- /forced-table -->` becomes the
table of docs/results/FILE (an evaluation result or a sweep written by benchmarks/forced_sweep.py or
`steer bench`), under a line naming the file, its command and its commit
(`steer.bench.report.update_forced_blocks`). --check changes nothing and exits 1 when a block is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    from steer._io import write_text_atomic
    from steer.bench.report import update_forced_blocks

    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    fresh = update_forced_blocks(text, ROOT / "docs" / "results")
    if args.check:
        if fresh != text:
            print("README.md: a forced-language table differs from its result file; run benchmarks/forced_tables.py")
            return 1
        return 0
    if fresh != text:
        write_text_atomic(readme, fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
