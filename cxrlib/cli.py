"""The ``cxr`` command line (also ``python -m cxrlib``).

Errors that a user can fix (a missing folder, a bad argument) print one line on stderr
and exit with code 2; nothing prints a traceback at a user. ``cxr predict`` reports each
image it cannot read on its own line, predicts the others and exits with code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import CXRError
from .models import ARCHITECTURES


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import CXRData

    data = CXRData.load(args.data_dir, fast=False, seed=args.seed, progress=not args.json and sys.stderr.isatty())
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
    from .train import PRESETS, TrainConfig, describe_outcome, preset, train

    if args.resume:
        config = TrainConfig()  # replaced by the run's own config.json
    else:
        config = preset(args.preset, epochs=args.epochs, img_size=args.img_size, batch_size=args.batch_size,
                        arch=args.arch, pretrained=args.pretrained, seed=args.seed, max_minutes=args.max_minutes,
                        region=args.region, epoch_images=args.epoch_images)  # fmt: skip
    assert args.preset in PRESETS
    result = train(config, args.out, data_dir=args.data, resume=args.resume, progress=not args.quiet,
                   log=lambda msg: print(msg, file=sys.stderr))  # fmt: skip
    best = result.best_metrics
    print(f"run: {result.run_dir} ({result.stopped}); best epoch {best.get('epoch', -1) + 1}: "
          f"valid accuracy {best.get('valid_accuracy', float('nan')):.4f}, "
          f"valid macro AUC {best.get('valid_macro_auc', float('nan')):.4f}")
    print(describe_outcome(result.run_dir))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_explorer, bench_training
    from .data import CXRData
    from .pages import chapter_config
    from .train import ensure_run

    if args.run is not None and not (Path(args.run) / "config.json").is_file():
        raise CXRError(f"not a run folder (no config.json): {args.run}")
    data = CXRData.load(args.data, fast=args.fast or None, progress=False)
    flat = bench_training(data, img_size=args.img_size, batch_size=args.batch_size, steps=args.steps,
                          rounds=args.rounds, workers=args.workers)  # fmt: skip
    if args.explorer_steps:
        run = args.run
        if run is None:  # the chapters' own run in this mode (trained first if missing, as chapter 3 would)
            config = chapter_config()
            run = ensure_run(config, f"ch03-{config.preset}", data_dir=data.root, progress=False,
                             log=lambda line: print(line, file=sys.stderr))  # fmt: skip
        own = int(json.loads((Path(run) / "config.json").read_text())["train"]["img_size"])
        sizes = list(dict.fromkeys([own, args.explorer_size]))  # the headline numbers are the last size's
        flat.update(bench_explorer(run, data.root, sizes=sizes, steps=args.explorer_steps))
    if args.json:
        print(json.dumps(flat, indent=2))
    else:
        for key, value in flat.items():
            print(f"{key:>28}: {value}")
    return 0


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import compute_metrics, json_ready, predict_split

    pred = predict_split(args.run, args.data, split=args.split, progress=not args.json and sys.stderr.isatty())
    for note in pred.notes:
        print(f"note: {note}", file=sys.stderr)
    metrics = compute_metrics(pred, n_resamples=args.resamples, seed=args.seed)
    if args.json:
        print(json.dumps(json_ready(metrics), indent=2))
        return 0
    ci = metrics["ci95"]

    def with_ci(name: str, value: float) -> str:
        lo, hi = ci[name]
        return f"{_fmt(value)}  95% CI [{_fmt(lo)}, {_fmt(hi)}]"

    # the folder's name, not its absolute path: this output is shown on the book's pages
    print(f"{args.split}: {metrics['n']} images of {Path(pred.root).name}, classes {', '.join(metrics['classes'])}")
    print(f"accuracy          {with_ci('accuracy', metrics['accuracy'])}")
    print(f"balanced accuracy {_fmt(metrics['balanced_accuracy'])}")
    print(f"macro AUC         {with_ci('macro_auc', metrics['macro_auc'])}")
    if "COVID" in metrics["per_class"]:
        print(f"COVID sensitivity {with_ci('covid_sensitivity', metrics['per_class']['COVID']['sensitivity'])}")
    print(f"ECE               {_fmt(metrics['ece'])}")
    print("intervals: accuracy and sensitivity exact (Clopper-Pearson), macro AUC stratified bootstrap")
    width = max(len(c) for c in metrics["classes"])
    print(f"  {'class':<{width}}  sens   spec   prec   F1     AUC    n")
    for name, m in metrics["per_class"].items():
        cells = "  ".join(_fmt(m[k], 3).ljust(5) for k in ("sensitivity", "specificity", "precision", "f1", "auc"))
        print(f"  {name:<{width}}  {cells}  {m['support']}")
    cm = metrics["confusion_matrix"]
    print("confusion matrix (rows: true, columns: predicted):")
    width = max(len(c) for c in cm["labels"])
    print(f"  {'':<{width}}  " + " ".join(f"{c[:8]:>8}" for c in cm["labels"]))
    for name, row in zip(cm["labels"], cm["matrix"]):
        print(f"  {name:<{width}}  " + " ".join(f"{v:>8}" for v in row))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .evaluate import json_ready, predict_files

    results, errors = predict_files(args.run, args.images, cam_dir=args.cam, cam_method=args.cam_method)
    for path, reason in errors:
        print(f"cxr: {path}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(json_ready([r.to_dict() for r in results]), indent=2))
    else:
        for r in results:
            probs = "  ".join(f"{c} {p:.3f}" for c, p in r.probabilities.items())
            cam = f"  [{args.cam_method}: {r.cam}]" if r.cam else ""
            print(f"{r.path}: {r.predicted} ({r.probabilities[r.predicted]:.1%})  |  {probs}{cam}")
    return 1 if errors else 0


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
    p.add_argument("--arch", choices=list(ARCHITECTURES))
    p.add_argument("--epoch-images", type=_positive_int, help="images drawn per epoch (default: the preset's)")
    p.add_argument("--pretrained", choices=["auto", "yes", "no"])
    p.add_argument("--seed", type=int, help="seed of the weights, augmentation and draws (the split stays fixed)")
    p.add_argument("--region", choices=["full", "hide-lungs", "lungs-only"],  # = cxrlib.transforms.REGIONS
                   help="what the model sees: the whole image (default), the image with the lungs blacked out, "
                        "or only the lungs; the lung region is the data's masks, else the central-chest box")
    p.add_argument("--resume", action="store_true", help="continue RUN from its last.pt")
    p.add_argument("--max-minutes", type=_positive_float, help="stop before an epoch would pass this budget")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="metrics with 95%% intervals for a trained run")
    p.add_argument("run", help="run folder (uses its best.pt) or a checkpoint file")
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: CXR_DATA_DIR, then kagglehub)")
    p.add_argument("--split", choices=["test", "valid", "all"], default="test",
                   help="a split of the run's data, or every image of DIR (all)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--resamples", type=_positive_int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="predict image files (PNG or JPEG, any size), optionally with Grad-CAM overlays")
    p.add_argument("run", help="run folder (uses its best.pt) or a checkpoint file")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--cam", metavar="OUT_DIR", help="write a CAM overlay PNG per image into OUT_DIR")
    p.add_argument("--cam-method", choices=["gradcam", "gradcam++", "hirescam", "eigencam"], default="gradcam",
                   help="CAM method for --cam (default gradcam)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per image predicted")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("bench", help="print speed numbers (training throughput, loader overhead, explorer step)")
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: CXR_DATA_DIR, then kagglehub)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--img-size", type=_positive_int, default=128)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--steps", type=_positive_int, default=8, help="training steps per round")
    p.add_argument("--rounds", type=_positive_int, default=3)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--fast", action="store_true", help="use the fast-mode subset")
    p.add_argument("--run", metavar="RUN", help="trained run for the explorer bench (default: the chapters' run "
                   "of this mode, trained first if missing)")
    p.add_argument("--explorer-size", type=_positive_int, default=224,
                   help="image size of the explorer bench, besides the run's own (goal: 150 ms median at 224)")
    p.add_argument("--explorer-steps", type=int, default=30, help="timed explorer steps (0: skip that bench)")
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
