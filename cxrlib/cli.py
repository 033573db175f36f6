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


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import PRESETS, TrainConfig, preset, train

    if args.resume:
        config = TrainConfig()  # replaced by the run's own config.json
    else:
        config = preset(args.preset, epochs=args.epochs, img_size=args.img_size, batch_size=args.batch_size,
                        arch=args.arch, pretrained=args.pretrained, seed=args.seed, max_minutes=args.max_minutes,
                        region=args.region)  # fmt: skip
    assert args.preset in PRESETS
    result = train(config, args.out, data_dir=args.data, resume=args.resume, progress=not args.quiet,
                   log=lambda msg: print(msg, file=sys.stderr))  # fmt: skip
    best = result.best_metrics
    print(f"run: {result.run_dir} ({result.stopped}); best epoch {best.get('epoch', -1) + 1}: "
          f"valid accuracy {best.get('valid_accuracy', float('nan')):.4f}, "
          f"valid macro AUC {best.get('valid_macro_auc', float('nan')):.4f}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_training
    from .data import CXRData

    data = CXRData.load(args.data, fast=args.fast or None, progress=False)
    result = {"training": bench_training(data, img_size=args.img_size, batch_size=args.batch_size,
                                         steps=args.steps, rounds=args.rounds, workers=args.workers)}  # fmt: skip
    flat = {**result["training"]}
    if args.json:
        print(json.dumps(flat, indent=2))
    else:
        for key, value in flat.items():
            print(f"{key:>28}: {value}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cxr", description="Chest X-ray book tools: data, training, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("data", help="scan a dataset folder and print its summary and split")
    p.add_argument("data_dir", nargs="?", help="dataset folder (default: CXR_DATA_DIR, then kagglehub)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--write-split", metavar="FILE", help="write the split as CSV (path,class,split)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train a ResNet into a run folder")
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: CXR_DATA_DIR, then kagglehub)")
    p.add_argument("--out", metavar="RUN", required=True, help="run folder to create (or continue with --resume)")
    p.add_argument("--preset", choices=["fast", "cpu", "full"], default="cpu",
                   help="fast: CI seconds; cpu: 2 cores, <= 15 min; full: GPU, 224 px, ImageNet weights")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--img-size", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--arch", choices=["resnet18", "resnet34", "resnet50"])
    p.add_argument("--pretrained", choices=["auto", "yes", "no"])
    p.add_argument("--seed", type=int)
    p.add_argument("--region", choices=["full"], help="image region the model sees (default full)")
    p.add_argument("--resume", action="store_true", help="continue RUN from its last.pt")
    p.add_argument("--max-minutes", type=_positive_float, help="stop before an epoch would pass this budget")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("bench", help="print speed numbers (training throughput, loader overhead)")
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: CXR_DATA_DIR, then kagglehub)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--img-size", type=_positive_int, default=128)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--steps", type=_positive_int, default=8, help="training steps per round")
    p.add_argument("--rounds", type=_positive_int, default=3)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--fast", action="store_true", help="use the fast-mode subset")
    p.set_defaults(func=_cmd_bench)
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
