"""Print the end-of-build summary of `make book`: execution time per chapter, where the
HTML is, and whether the build failed.

    python tools/book_report.py BUILD_DIR [--seconds N] [--status 0|1]

Reads ``BUILD_DIR/execution-times.json`` (written by the Sphinx extension
``book/_ext/cxrbook.py``). Exits non-zero when ``--status`` is non-zero or a notebook
failed, so the Makefile can print the table and still fail.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path)
    parser.add_argument("--seconds", type=int, default=None, help="wall time of the whole build")
    parser.add_argument("--status", type=int, default=0, help="exit status of jupyter-book")
    args = parser.parse_args(argv)

    times = args.build / "execution-times.json"
    failed = []
    if times.exists():
        rows = json.loads(times.read_text())["notebooks"]
        width = max([len(r["docname"]) for r in rows] + [8])
        print(f"\nmake book: notebook execution times\n  {'notebook':<{width}}  seconds  result")
        for row in rows:
            result = "ok" if row["succeeded"] else f"FAILED ({row['error']})"
            print(f"  {row['docname']:<{width}}  {row['seconds']:>7.1f}  {result}")
            if not row["succeeded"]:
                failed.append(row["docname"])
        print(f"  {'total':<{width}}  {sum(r['seconds'] for r in rows):>7.1f}")
    else:
        print(f"\nmake book: no execution times ({times} is missing: the build stopped early)")

    index = (args.build / "html" / "index.html").resolve()
    took = f" in {args.seconds} s" if args.seconds is not None else ""
    if args.status or failed:
        print(
            f"make book: the build FAILED{took} (see the warnings above)"
            + (f"; notebooks that failed: {', '.join(failed)}" if failed else "")
        )
        return 1
    print(f"make book: built{took}; open {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
