"""The ``cxr`` command line (also ``python -m cxrlib``).

Errors that a user can fix (a missing folder, a bad argument) print one line on stderr
and exit with code 2; nothing prints a traceback at a user.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .config import CXRError


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import CXRData, scan

    full = scan(args.data_dir, progress=not args.json and sys.stderr.isatty())
    data = CXRData.load(full.root, fast=False, seed=args.seed, progress=False)
    summary = data.summary()
    if args.write_split:
        data.write_split(args.write_split)
        summary["split_file"] = str(args.write_split)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"dataset: {summary['root']}")
    print(f"images:  {summary['total']} in {len(summary['classes'])} classes"
          f" ({'with' if summary['masks'] else 'no'} lung masks)")
    width = max(len(c) for c in summary["classes"])
    per = summary["split_per_class"]
    print(f"  {'class':<{width}}  {'total':>6} {'train':>6} {'valid':>6} {'test':>6}")
    for c in summary["classes"]:
        print(f"  {c:<{width}}  {summary['counts'][c]:>6} {per['train'].get(c, 0):>6} "
              f"{per['valid'].get(c, 0):>6} {per['test'].get(c, 0):>6}")
    s = summary["split"]
    print(f"  {'all':<{width}}  {summary['total']:>6} {s['train']:>6} {s['valid']:>6} {s['test']:>6}")
    for note in summary["split_notes"]:
        print(f"note: {note}")
    groups = summary["near_duplicate_groups"]
    print(f"near-duplicate groups: {len(groups)} ({sum(len(g) for g in groups)} images), each kept in one split")
    print(f"skipped: {len(summary['skipped'])} unreadable file(s)")
    for item in summary["skipped"]:
        print(f"  {item['path']}: {item['reason']}")
    if args.write_split:
        print(f"split written to {args.write_split}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cxr", description="Chest X-ray book tools: data, training, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("data", help="scan a dataset folder and print its summary and split")
    p.add_argument("data_dir", nargs="?", help="dataset folder (default: CXR_DATA_DIR, then kagglehub)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--write-split", metavar="FILE", help="write the split as CSV (path,class,split)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.set_defaults(func=_cmd_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CXRError as err:
        print(f"cxr: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
