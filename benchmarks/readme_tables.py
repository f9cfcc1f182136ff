"""The README's result tables, regenerated from the result files under docs/results/ (`make docs`).

    python benchmarks/readme_tables.py [--check]

Every block of README.md between `<!-- results: KIND FILE -->` and `<!-- /results -->` (and every forced-language
block, `<!-- forced-table: FILE -->` … `<!-- /forced-table -->`) becomes what `steer.bench.readme` makes of
docs/results/FILE, under a line naming the file, its command and its commit. --check changes nothing and
exits 1 when a block is stale.

Copy a run's figures into a result file first (then the README is regenerated):

    python benchmarks/readme_tables.py --from-demo DEMO_OUT [--provenance P.json]      # -> demo-summary.json
    python benchmarks/readme_tables.py --from-delta-ppl OUT/delta_ppl.json --provenance P.json --out NAME.json
    python benchmarks/readme_tables.py --from-compare COMPARE_OUT --aligned ALIGNED_DIR --provenance P.json
                                                                                        # -> alignment.json

P.json holds {"command": ..., "commit": ...} (and optionally "commit_note"): how the run was made, for outputs
that do not record it themselves (a demo summary written since steer demo records it needs none).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"


def _read(path: Path | None) -> dict | None:
    return None if path is None else json.loads(Path(path).read_text(encoding="utf-8"))


def copy_result(args) -> Path | None:
    """The result file one of --from-* asks for, written under docs/results/; None when none is asked for."""
    from steer._io import write_json_atomic
    from steer.bench.results import alignment_result, delta_ppl_result, demo_result
    from steer.provenance import command_line, provenance

    given = _read(args.provenance)
    if args.from_demo:
        data, name = demo_result(_read(args.from_demo / "summary.json"), given), "demo-summary.json"
    elif args.from_delta_ppl:
        data, name = delta_ppl_result(_read(args.from_delta_ppl), given), None
    elif args.from_compare:
        align = _read(args.aligned / "align.json") if args.aligned else None
        data = alignment_result(_read(args.from_compare / "compare.json"), _read(args.from_compare / "alignment.json"),
                                given, align=align)
        name = "alignment.json"
    else:
        return None
    out = args.out or (RESULTS / name if name else None)
    if out is None:
        raise SystemExit("--out: where to write the result file (e.g. docs/results/delta-ppl-generalise.json)")
    data["copied_by"] = provenance(command_line())
    return write_json_atomic(out, data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a table is stale")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from-demo", type=Path, metavar="DIR", help="a steer demo output folder")
    source.add_argument("--from-delta-ppl", type=Path, metavar="FILE", help="a steer bench delta_ppl result")
    source.add_argument("--from-compare", type=Path, metavar="DIR", help="a steer compare output folder "
                        "(with --base-model / --aligned-model: alignment.json)")
    parser.add_argument("--aligned", type=Path, metavar="DIR", help="with --from-compare: the aligned model folder")
    parser.add_argument("--provenance", type=Path, metavar="FILE", help="JSON: the run's command and commit")
    parser.add_argument("--out", type=Path, help="the result file (default: docs/results/<kind>.json)")
    args = parser.parse_args()
    from steer._io import write_text_atomic
    from steer.bench.readme import stale_blocks, update_blocks

    if args.check and (args.from_demo or args.from_delta_ppl or args.from_compare):
        parser.error("--check changes nothing: give it alone")
    written = copy_result(args)
    if written:
        print(f"wrote {written}")
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if args.check:
        stale = stale_blocks(text, RESULTS)
        for block in stale:
            print(f"README.md: the table of '{block}' differs from its file; run python benchmarks/readme_tables.py")
        return 1 if stale else 0
    fresh = update_blocks(text, RESULTS)
    if fresh != text:
        write_text_atomic(readme, fresh)
        print("README.md: tables regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
