"""The results pages' tables, generated from the benchmark JSON kept beside them (``docs/results/data``).

Each table sits in its page between ``<!-- generated:NAME -->`` and ``<!-- /generated -->``; this script
rewrites them from the JSON (``--check``: exit 1 if a page differs, without writing). A test runs the check,
so a table cannot disagree with its data.

    python benchmarks/results_tables.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "docs" / "results"
sys.path.insert(0, str(HERE))

import compile_speed  # noqa: E402
import model_bench  # noqa: E402
import sr_feature_reg  # noqa: E402

#: table name -> (page, data file, renderer)
TABLES = {
    "model_bench": ("model_bench.md", "model_bench.json", lambda d: model_bench.markdown_table(d["records"])),
    "compile_speed": ("compile_engine.md", "compile_speed.json", lambda d: compile_speed.markdown_table(d["cases"])),
    "sr_feature_reg": ("super_resolution.md", "sr_feature_reg.json", sr_feature_reg.markdown_table),
    "sr_feature_reg_levels": ("super_resolution.md", "sr_feature_reg_levels.json", sr_feature_reg.markdown_table),
    "sr_feature_reg_image": ("super_resolution.md", "sr_feature_reg_image.json", sr_feature_reg.markdown_table),
}


def rendered(page: str) -> str:
    """``page`` with every generated block replaced by its table rendered from the data."""
    def block(match: re.Match) -> str:
        _, data, render = TABLES[match.group(1)]
        table = render(json.loads((RESULTS / "data" / data).read_text()))
        return f"<!-- generated:{match.group(1)} -->\n{table}\n<!-- /generated -->"

    return re.sub(r"<!-- generated:(\w+) -->.*?<!-- /generated -->", block, page, flags=re.S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 if a page differs from its data.")
    args = parser.parse_args(argv)
    stale = []
    for page in sorted({page for page, _, _ in TABLES.values()}):
        path = RESULTS / page
        text = path.read_text()
        fresh = rendered(text)
        if fresh != text:
            stale.append(page)
            if not args.check:
                path.write_text(fresh)
    if args.check and stale:
        print(f"stale tables in: {', '.join(stale)} (run python benchmarks/results_tables.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
