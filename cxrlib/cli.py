"""The ``cxr`` command line (also ``python -m cxrlib``).

No run of ``cxr`` shows a traceback. What it prints on stderr, and its exit code:

* ``--help`` (of ``cxr`` or of a subcommand): the help on stdout, exit code 0.
* A usage error (no subcommand, an unknown option, a missing argument, a bad value):
  one line, ``cxr SUB: error: MESSAGE (see cxr SUB --help)``, exit code 2. ``cxr`` alone
  is such an error; its line lists the subcommands (``cxr --help`` explains them).
* An error the user can fix (a missing folder, a file that cannot be written): one
  line, ``cxr: error: MESSAGE``, exit code 2. Paths given as options are checked before
  any long work starts (a data scan, a training).
* ``cxr predict`` reports each image it cannot read on its own line, predicts the others
  and exits with code 1.
* An unexpected internal error (a bug): one line,
  ``cxr: internal error: TYPE: MESSAGE (full report: FILE)``, exit code 1; FILE holds the
  command line, the versions and the full traceback, under ``<cache>/crash-reports``
  (else the system's temporary folder).
* Ctrl-C: one line, ``cxr: interrupted``, exit code 130. A reader that closes the pipe
  early (``cxr data --json | head``) ends the command quietly.

The subcommands import their modules when they run, so ``cxr --help`` and usage errors
never import torch (fast, and a broken torch install cannot break them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import DOWNLOAD_SIZE_MB, CXRError

#: = ``cxrlib.models.ARCHITECTURES`` (a copy: importing models imports torch; a test
#: checks that the two agree).
ARCHITECTURES: tuple[str, ...] = ("resnet18", "resnet18-w32", "resnet34", "resnet34-w32", "resnet50")

#: Exit codes.
EXIT_INTERNAL_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_MAX_MESSAGE = 400  # characters of an exception's message on the internal-error line

#: Where a command looks for the data when no folder is given (see config.resolve_data_dir).
_DATA_DEFAULT = "CXR_DATA_DIR, then kagglehub's cache, filled by `cxr download`"


def _one_line(text: str) -> str:
    """``text`` on one line: line breaks (and the spaces around them) become one space."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) pointing at ``--help``, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of ``parser`` by name (empty when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _check_data_dir(value: str | None) -> None:
    """A ``--data DIR`` that is given must be a folder: say so now, before any other work."""
    if value:
        from .config import resolve_data_dir

        resolve_data_dir(value, use_kagglehub=False)  # raises DataNotFoundError (a CXRError)


def _check_output(value: str | None, option: str, *, folder: bool) -> None:
    """A path to write (a file, or a folder created when missing) must be creatable: fail
    before the work that would end by writing it. Permissions are left to the write."""
    if not value:
        return
    path = Path(value).expanduser()
    if path.exists() and path.is_dir() != folder:
        raise CXRError(f"{option}: {path} exists and is {'not ' if folder else ''}a folder")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise CXRError(f"{option}: cannot create {path}: {parent} is a file, not a folder")


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import CXRData

    _check_output(args.write_split, "--write-split", folder=False)
    data = CXRData.load(args.data_dir, fast=False, seed=args.seed, progress=not args.json and sys.stderr.isatty())
    summary = data.summary()
    if args.write_split:
        data.write_split(args.write_split)
        summary["split_file"] = str(args.write_split)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"dataset: {summary['root']}")
    print(
        f"images:  {summary['total']} in {len(summary['classes'])} classes"
        f" ({'with' if summary['masks'] else 'no'} lung masks)"
    )
    width = max(len(c) for c in summary["classes"])
    per = summary["split_per_class"]
    print(f"  {'class':<{width}}  {'total':>6} {'train':>6} {'valid':>6} {'test':>6}")
    for c in summary["classes"]:
        print(
            f"  {c:<{width}}  {summary['counts'][c]:>6} {per['train'].get(c, 0):>6} "
            f"{per['valid'].get(c, 0):>6} {per['test'].get(c, 0):>6}"
        )
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


def _cmd_download(args: argparse.Namespace) -> int:
    from .config import download_database

    folder = download_database()  # raises DownloadError (a CXRError): one line, exit code 2
    print(folder)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .recipe import PRESETS, TrainConfig, preset
    from .runs import describe_outcome
    from .train import train

    _check_data_dir(args.data)
    if args.resume:
        config = TrainConfig()  # replaced by the run's own config.json
    else:
        config = preset(
            args.preset,
            epochs=args.epochs,
            img_size=args.img_size,
            batch_size=args.batch_size,
            arch=args.arch,
            pretrained=args.pretrained,
            seed=args.seed,
            max_minutes=args.max_minutes,
            region=args.region,
            epoch_images=args.epoch_images,
        )
    assert args.preset in PRESETS
    result = train(
        config,
        args.out,
        data_dir=args.data,
        resume=args.resume,
        progress=not args.quiet,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    best = result.best_metrics
    print(
        f"run: {result.run_dir} ({result.stopped}); best epoch {best.get('epoch', -1) + 1}: "
        f"valid accuracy {best.get('valid_accuracy', float('nan')):.4f}, "
        f"valid macro AUC {best.get('valid_macro_auc', float('nan')):.4f}"
    )
    print(describe_outcome(result.run_dir))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_explorer, bench_training
    from .data import CXRData
    from .pages import chapter_config
    from .runs import ensure_run

    if args.run is not None and not (Path(args.run) / "config.json").is_file():
        raise CXRError(f"not a run folder (no config.json): {args.run}")
    _check_data_dir(args.data)
    data = CXRData.load(args.data, fast=args.fast or None, progress=False)
    flat = bench_training(
        data,
        img_size=args.img_size,
        batch_size=args.batch_size,
        steps=args.steps,
        rounds=args.rounds,
        workers=args.workers,
        arch=args.arch,
    )
    if args.explorer_steps:
        run = args.run
        if run is None:  # the chapters' own run in this mode (trained first if missing, as chapter 3 would)
            config = chapter_config()
            run = ensure_run(
                config,
                f"ch03-{config.preset}",
                data_dir=data.root,
                progress=False,
                log=lambda line: print(line, file=sys.stderr),
            )
        saved = json.loads((Path(run) / "config.json").read_text())
        own = int(saved["preprocessing"]["img_size"])  # the size the run predicts at
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

    _check_data_dir(args.data)
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

    _check_output(args.cam, "--cam", folder=True)
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


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _non_negative_int(text: str) -> int:
    """Counts that may be 0, and seeds (numpy's generators refuse negative seeds)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _image_size(text: str) -> int:
    value = _int(text)
    if value < 32:
        raise argparse.ArgumentTypeError(f"must be at least 32 (a ResNet downsamples 32 times): {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cxr",
        description="Chest X-ray book tools: data, training, evaluation.",
        epilog="Run `cxr COMMAND --help` for a command's options. Exit codes: 0 done; 2 a usage error or an "
        "error you can fix (one line on stderr); 1 an internal error (one line, and the file with the full "
        "report), or `cxr predict` could not read some images; 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=_Parser)

    p = sub.add_parser(
        "download",
        help=f"download the COVID-19 Radiography Database with kagglehub (about {DOWNLOAD_SIZE_MB} MB, once; "
        "no Kaggle account needed)",
        description="Download the COVID-19 Radiography Database (the pinned kagglehub handle, or "
        "CXR_KAGGLE_HANDLE) into kagglehub's cache (KAGGLEHUB_CACHE, default ~/.cache/kagglehub), "
        "where every command and chapter then finds it offline; print its folder. Nothing is "
        "downloaded when it is already there. No Kaggle account is needed; where Kaggle refuses or "
        "rate-limits anonymous downloads, set KAGGLE_API_TOKEN (or KAGGLE_USERNAME and KAGGLE_KEY).",
    )
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("data", help="scan a dataset folder and print its summary and split")
    p.add_argument("data_dir", nargs="?", help=f"dataset folder (default: {_DATA_DEFAULT})")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--write-split", metavar="FILE", help="write the split as CSV (path,class,split)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="split seed (default 0)")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train a ResNet into a run folder")
    p.add_argument("--data", metavar="DIR", help=f"dataset folder (default: {_DATA_DEFAULT})")
    p.add_argument("--out", metavar="RUN", required=True, help="run folder to create (or continue with --resume)")
    p.add_argument(
        "--preset",
        choices=["fast", "cpu", "full"],
        default="cpu",
        help="fast: CI seconds; cpu: 2 cores, <= 15 min; full: GPU, 224 px, ImageNet weights",
    )
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--img-size", type=_image_size)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--arch", choices=list(ARCHITECTURES))
    p.add_argument("--epoch-images", type=_positive_int, help="images drawn per epoch (default: the preset's)")
    p.add_argument("--pretrained", choices=["auto", "yes", "no"])
    p.add_argument(
        "--seed", type=_non_negative_int, help="seed of the weights, augmentation and draws (the split stays fixed)"
    )
    p.add_argument(
        "--region",
        choices=["full", "hide-lungs", "lungs-only"],  # = cxrlib.regions.REGIONS
        help="what the model sees: the whole image (default), the image with the lungs blacked out, "
        "or only the lungs; the lung region is the data's masks, else the central-chest box",
    )
    p.add_argument("--resume", action="store_true", help="continue RUN from its last.pt")
    p.add_argument("--max-minutes", type=_positive_float, help="stop before an epoch would pass this budget")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="metrics with 95%% intervals for a trained run")
    p.add_argument("run", help="run folder (uses its best.pt) or a checkpoint file")
    p.add_argument("--data", metavar="DIR", help=f"dataset folder (default: {_DATA_DEFAULT})")
    p.add_argument(
        "--split",
        choices=["test", "valid", "all"],
        default="test",
        help="a split of the run's data, or every image of DIR (all)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--resamples", type=_positive_int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="bootstrap seed")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="predict image files (PNG or JPEG, any size), optionally with Grad-CAM overlays")
    p.add_argument("run", help="run folder (uses its best.pt) or a checkpoint file")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--cam", metavar="OUT_DIR", help="write a CAM overlay PNG per image into OUT_DIR")
    p.add_argument(
        "--cam-method",
        choices=["gradcam", "gradcam++", "hirescam", "eigencam"],
        default="gradcam",
        help="CAM method for --cam (default gradcam)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per image predicted")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("bench", help="print speed numbers (training throughput, loader overhead, explorer step)")
    p.add_argument("--data", metavar="DIR", help=f"dataset folder (default: {_DATA_DEFAULT})")
    p.add_argument("--json", action="store_true")
    p.add_argument("--img-size", type=_image_size, default=128)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--steps", type=_positive_int, default=8, help="training steps per round")
    p.add_argument("--rounds", type=_positive_int, default=3)
    p.add_argument("--workers", type=_non_negative_int, default=0, help="DataLoader worker processes")
    p.add_argument("--fast", action="store_true", help="use the fast-mode subset")
    p.add_argument(
        "--arch", choices=ARCHITECTURES, default="resnet18", help="the network whose training steps are timed"
    )
    p.add_argument(
        "--run",
        metavar="RUN",
        help="trained run for the explorer bench (default: the chapters' run of this mode, trained first if missing)",
    )
    p.add_argument(
        "--explorer-size",
        type=_image_size,
        default=224,
        help="image size of the explorer bench, besides the run's own (goal: 150 ms median at 224)",
    )
    p.add_argument(
        "--explorer-steps", type=_non_negative_int, default=30, help="timed explorer steps (0: skip that bench)"
    )
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cxr`` with ``argv`` (default: the process's arguments); returns the exit code.

    A usage error or ``--help`` raises :class:`SystemExit` (code 2 or 0) from argparse, as
    usual; every other outcome is a returned code (see the module docstring).
    """
    try:
        return _run(argv)
    except CXRError as err:
        print(f"cxr: error: {_one_line(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cxr: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError as err:
        if _stdout_closed():  # the reader left (`cxr data --json | head`): no one to tell
            _silence_stdout()
            return EXIT_INTERNAL_ERROR
        return _internal_error(err, argv)
    except Exception as err:  # a bug: one line here, the traceback in a report file
        return _internal_error(err, argv)
    finally:
        _flush_stdout()


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.error(f"no command given; choose one of: {', '.join(subcommands(parser))}")
    if extra:  # reported by the subcommand's parser, so the line points at its --help
        subcommands(parser)[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return int(args.func(args))


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (where ``poll`` can tell)."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except Exception:  # no poll (Windows), no file descriptor (captured output): cannot tell
        return False


def _silence_stdout() -> None:
    """Point stdout at the null device: the interpreter flushes it at exit, and must not
    find a broken pipe there (it would print about it)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    except Exception:
        pass


def _internal_error(err: BaseException, argv: Sequence[str] | None) -> int:
    try:
        message = _one_line(str(err))
    except Exception:  # an exception whose message itself fails
        message = ""
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    what = f"{type(err).__name__}: {message}" if message else type(err).__name__
    report = _write_crash_report(err, argv)
    where = f"full report: {report}" if report else "no report could be written"
    print(f"cxr: internal error: {what} ({where})", file=sys.stderr)
    return EXIT_INTERNAL_ERROR


def _crash_folders() -> list[Path]:
    import tempfile

    folders = []
    try:
        from .config import cache_dir

        folders.append(cache_dir() / "crash-reports")
    except Exception:
        pass
    folders.append(Path(tempfile.gettempdir()))
    return folders


def _write_crash_report(err: BaseException, argv: Sequence[str] | None) -> Path | None:
    """Write the traceback of ``err`` (and what ran) to a new file; its path, or None."""
    import platform
    import tempfile
    import time
    import traceback
    from importlib.metadata import version

    lines = [f"cxr internal error, {time.strftime('%Y-%m-%d %H:%M:%S %z')}"]
    for label, what in (
        ("command", lambda: " ".join(map(str, ["cxr", *(sys.argv[1:] if argv is None else argv)]))),
        ("cxrlib", lambda: version("cxrlib")),
        ("python", lambda: f"{platform.python_version()} ({sys.executable}) on {platform.platform()}"),
        ("working folder", os.getcwd),
    ):
        try:
            lines.append(f"{label}: {what()}")
        except Exception as exc:  # the report is still worth writing without this line
            lines.append(f"{label}: unknown ({type(exc).__name__})")
    text = "\n".join(lines) + "\n\n" + "".join(traceback.format_exception(type(err), err, err.__traceback__))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in _crash_folders():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"cxr-crash-{stamp}-", suffix=".txt", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as fh:
                fh.write(text)
            return Path(name)
        except Exception:
            continue
    return None


if __name__ == "__main__":
    raise SystemExit(main())
