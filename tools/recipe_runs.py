"""Measure training recipes on the validation split and append them to the recipe table.

Each call trains one variant of the starting recipe (:func:`starting_recipe`: the ``cpu``
preset's network, image size and schedule, with every augmentation of ``AugmentConfig()``)
with one seed, then measures it on the
run's **validation** split (the test split is never looked at: it is what the chapters
report), and appends one row to ``book/data/recipe_runs.csv``:

* what changed (the variant, its overrides), the seed, the images shown and the seconds;
* validation accuracy on all four classes and on the three classes without the sample's
  segmented-background shortcut (COVID, Normal, Viral Pneumonia), with exact
  (Clopper-Pearson) 95 % intervals;
* macro AUC with a stratified bootstrap 95 % interval;
* the sensitivity of each class, with exact intervals;
* for runs with a weight average (EMA), the raw weights' accuracy at the last epoch;
* which validation images it got right (``valid_correct``, one 0/1 per image in split
  order), so two variants can be compared image by image (McNemar's test);
* the commit and the exact command.

Chapter 3 draws the table; it never retrains it. Usage::

    python tools/recipe_runs.py --variant base --seed 0 --data DIR [--epochs E] [--epoch-images K]
    python tools/recipe_runs.py --list
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cxrlib import stats
from cxrlib.ablation import machine_tag, run_name
from cxrlib.checkpoint import load_model
from cxrlib.evaluate import predict_split
from cxrlib.metrics import bootstrap_ci, macro_auc
from cxrlib.recipe import TrainConfig, preset
from cxrlib.train import train
from cxrlib.transforms import AugmentConfig

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "cxrlib" / "recipe_runs.csv"  # package data: chapter 3 reads it wherever cxrlib is installed
HONEST = ("COVID", "Normal", "Viral Pneumonia")

_AUG = AugmentConfig()


def starting_recipe(seed: int) -> TrainConfig:
    """What every variant changes one thing of: the ``cpu`` preset's network, size and
    schedule with the default augmentations and balanced draws (the preset itself is the
    ``preset+fewer-lung-opacity`` variant that the measurements chose), predicting at its
    training size and without class offsets: both are set after training, and the offsets
    are fitted on the validation split, so a row measuring them there would flatter them
    (``tools/recipe_posthoc.py`` measures them, cross-fitted)."""
    return replace(
        preset("cpu", seed=seed),
        augment=AugmentConfig(),
        class_shares=None,
        eval_size_increase=0,
        class_offsets=False,
    )


#: the base of the ``preset+...`` variants (the cpu preset before preset+fewer-lung-opacity)
_NO_NOISE_BLUR: dict[str, Any] = {"augment": replace(_AUG, noise=0.0, blur=0.0)}
#: the cpu preset's training: no noise or blur, Lung_Opacity drawn at weight 0.4
_PRESET_TRAINING: dict[str, Any] = {**_NO_NOISE_BLUR, "class_shares": {"Lung_Opacity": 0.4}}


def _preset_augment(**changes: Any) -> dict[str, Any]:
    """The preset's training with some augmentation strengths changed."""
    return {**_PRESET_TRAINING, "augment": replace(_PRESET_TRAINING["augment"], **changes)}


#: Each variant: what it changes, as overrides of :func:`starting_recipe`.
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "resnet18-112px": {"arch": "resnet18", "img_size": 112},
    "192px": {"img_size": 192},
    "128px": {"img_size": 128},
    "sgd-nesterov": {"optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4},
    "no-noise-blur": _NO_NOISE_BLUR,
    "no-gamma": {"augment": replace(_AUG, gamma=(1.0, 1.0))},
    "hflip": {"augment": replace(_AUG, hflip=True)},
    "no-label-smoothing": {"label_smoothing": 0.0},
    "not-balanced": {"balanced": False},
    "no-ema": {"ema_decay": None},
    # one change on top of the cpu preset (no-noise-blur at 22 x 2,000)
    "preset+hflip": {"augment": replace(_NO_NOISE_BLUR["augment"], hflip=True)},
    "preset+fewer-lung-opacity": _PRESET_TRAINING,
    # with --epochs 30: about the preset's minutes, spent on more, smaller images
    "preset+128px": {**_NO_NOISE_BLUR, "img_size": 128},
    # one change on top of the cpu preset as it is (the training of preset+fewer-lung-opacity),
    # compared with the preset's runs as both predict (ablation.challengers)
    "cpu+176px": {**_PRESET_TRAINING, "img_size": 176},
    "cpu+more-covid": {**_PRESET_TRAINING, "class_shares": {**_PRESET_TRAINING["class_shares"], "COVID": 1.5}},
    "cpu+no-ema": {**_PRESET_TRAINING, "ema_decay": None},
    "cpu+no-label-smoothing": {**_PRESET_TRAINING, "label_smoothing": 0.0},
    # the preset ends at about 99 % training accuracy: three times the weight decay regularizes more
    "cpu+more-weight-decay": {**_PRESET_TRAINING, "weight_decay": 0.15},
    # the peak learning rate was set, not screened: half of it and twice it
    "cpu+lower-lr": {**_PRESET_TRAINING, "lr": 1e-3},
    "cpu+higher-lr": {**_PRESET_TRAINING, "lr": 4e-3},
    # the warm-up was set, not screened: twice as long
    "cpu+longer-warmup": {**_PRESET_TRAINING, "warmup_fraction": 0.3},
    # the preset ends near 99 % training accuracy: mixup (Beta(0.2, 0.2) weights) regularizes
    "cpu+mixup": {**_PRESET_TRAINING, "mixup": 0.2},
    # the augmentations not yet screened, in two groups: the geometric ones (rotation, scaling,
    # shift) and the intensity ones (brightness, contrast), each group switched off
    "cpu+no-geometric": _preset_augment(rotation=0.0, scale=(1.0, 1.0), translate=0.0),
    "cpu+no-intensity": _preset_augment(brightness=0.0, contrast=0.0),
    # the geometric group was the one that mattered most: the other direction, stronger
    "cpu+stronger-geometric": _preset_augment(rotation=10.0, scale=(0.8, 1.2), translate=0.08),
    # Lung_Opacity (no validation error at any seed) drawn at half the preset's weight again,
    # so the three honest classes get more of the budget
    "cpu+fewest-lung-opacity": {**_PRESET_TRAINING, "class_shares": {"Lung_Opacity": 0.2}},
    # taking the label smoothing out was behind at both seeds: the other direction, three times it
    "cpu+more-label-smoothing": {**_PRESET_TRAINING, "label_smoothing": 0.15},
    # tripling the weight decay was behind at both seeds: the other direction, a third of it
    "cpu+less-weight-decay": {**_PRESET_TRAINING, "weight_decay": 0.0167},
    # twice the optimizer steps on half-size batches (noisier steps). The EMA's decay per step is
    # raised to 0.9985 (0.997 per 32 images ~ 0.9985 per 16), though within 2,750 steps its
    # warm-up ramp (1 + n) / (10 + n) stays below both caps, so the average spans about as many
    # images either way
    "cpu+batch-16": {**_PRESET_TRAINING, "batch_size": 16, "ema_decay": 0.9985},
    # each augmentation of AugmentConfig on its own, the other way from the preset: noise and
    # blur were switched off together, and the geometric and intensity ones were screened as
    # groups, so no single one had been measured on the preset
    "cpu+noise": _preset_augment(noise=_AUG.noise),
    "cpu+blur": _preset_augment(blur=_AUG.blur),
    "cpu+no-gamma": _preset_augment(gamma=(1.0, 1.0)),
    "cpu+no-rotation": _preset_augment(rotation=0.0),
    "cpu+no-scale": _preset_augment(scale=(1.0, 1.0)),
    "cpu+no-translate": _preset_augment(translate=0.0),
    "cpu+no-brightness": _preset_augment(brightness=0.0),
    "cpu+no-contrast": _preset_augment(contrast=0.0),
    # about the preset's pixels (0.97 of them), spent small early and large late: the epochs
    # ramp from 128 px to 192 px, which the last five, validation and prediction (+32) use
    "cpu+progressive": {**_PRESET_TRAINING, "img_size": 192, "start_img_size": 128},
    # a box from another image of the batch pasted into half of the batches
    "cpu+cutmix": {**_PRESET_TRAINING, "cutmix": 0.5},
    # the issue's "deeper ResNet": ResNet-34's blocks at the preset's width cost about twice the
    # computation per image, so it trains at 128 px (predicting at 160) and for 19 epochs, set
    # before its runs by timing the two training steps (0.89 times the preset's speed; to repeat:
    # cxr bench --arch resnet34-w32 --img-size 128 against --arch resnet18-w32 --img-size 160)
    "cpu+resnet34": {**_PRESET_TRAINING, "arch": "resnet34-w32", "img_size": 128, "epochs": 19},
}

FIELDS = [
    "variant",
    "changes",
    "seed",
    "arch",
    "img_size",
    "epochs",
    "epoch_images",
    "images_shown",
    "seconds",
    "stopped",
    "machine",
    "valid_n",
    "accuracy",
    "accuracy_lo",
    "accuracy_hi",
    "accuracy_3class",
    "accuracy_3class_lo",
    "accuracy_3class_hi",
    "macro_auc",
    "macro_auc_lo",
    "macro_auc_hi",
    "raw_last_accuracy",
    "sens_COVID",
    "sens_COVID_lo",
    "sens_COVID_hi",
    "sens_Lung_Opacity",
    "sens_Lung_Opacity_lo",
    "sens_Lung_Opacity_hi",
    "sens_Normal",
    "sens_Normal_lo",
    "sens_Normal_hi",
    "sens_Viral Pneumonia",
    "sens_Viral Pneumonia_lo",
    "sens_Viral Pneumonia_hi",
    "valid_correct",
    "commit",
    "command",
]


def exact_interval(successes: int, n: int) -> tuple[float, float, float]:
    """Estimate and Clopper-Pearson 95 % interval of a proportion."""
    return (successes / n, *stats.exact_interval(successes, n))


def describe(overrides: dict[str, Any]) -> str:
    parts = []
    for key, value in overrides.items():
        if isinstance(value, AugmentConfig):
            changed = {k: v for k, v in value.to_dict().items() if v != _AUG.to_dict()[k]}
            parts += [f"augment.{k}={v}" for k, v in changed.items()]
        else:
            parts.append(f"{key}={value}")
    return "; ".join(parts) or "the starting recipe"


def validation_row(run_dir: Path, classes_order: list[str]) -> dict[str, Any]:
    pred = predict_split(run_dir, split="valid")
    probs, labels, classes = pred.probs, pred.labels, pred.classes
    predicted = probs.argmax(1)
    row: dict[str, Any] = {"valid_n": len(labels), "valid_correct": "".join("01"[int(v)] for v in predicted == labels)}
    row["accuracy"], row["accuracy_lo"], row["accuracy_hi"] = exact_interval(
        int((predicted == labels).sum()), len(labels)
    )
    honest = np.isin(labels, [classes.index(c) for c in HONEST if c in classes])
    row["accuracy_3class"], row["accuracy_3class_lo"], row["accuracy_3class_hi"] = exact_interval(
        int((predicted[honest] == labels[honest]).sum()), int(honest.sum())
    )
    row["macro_auc"] = macro_auc(probs, labels)
    row["macro_auc_lo"], row["macro_auc_hi"] = bootstrap_ci(probs, labels, classes, estimates={})["macro_auc"]
    for c in classes_order:
        k = classes.index(c)
        mine = labels == k
        row[f"sens_{c}"], row[f"sens_{c}_lo"], row[f"sens_{c}_hi"] = exact_interval(
            int((predicted[mine] == k).sum()), int(mine.sum())
        )
    return row


def cpu_model() -> str:
    """This machine's CPU as the kernel names it (``AMD EPYC``): two CPUs give two networks
    from one seed, so each row records where it was trained."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "cxrlib"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


MACHINE = machine_tag(cpu_model())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="dataset folder (default: CXR_DATA_DIR)")
    parser.add_argument("--epochs", type=int, help="override the preset's epochs (a shorter screening budget)")
    parser.add_argument("--epoch-images", type=int, help="override the preset's images per epoch")
    parser.add_argument("--runs", default="build/recipe-runs", help="where the run folders go")
    parser.add_argument("--table", default=str(TABLE))
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    parser.add_argument(
        "--record",
        type=Path,
        metavar="RUN",
        help="add a row for a run trained elsewhere (e.g. by `cxr train --preset cpu`), measured "
        "like the others; give --command and --seconds with it",
    )
    parser.add_argument("--command", help="with --record: the command that trained RUN")
    parser.add_argument("--seconds", type=float, help="with --record: its wall-clock seconds")
    parser.add_argument(
        "--machine",
        default=MACHINE,
        help=f"with --record: the CPU that trained RUN, as a tag (default: this one, {MACHINE})",
    )
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="recompute the validation columns of every row from its run folder (no training)",
    )
    args = parser.parse_args(argv)
    if args.remeasure:
        return remeasure(Path(args.table), Path(args.runs))
    if args.record:
        if not (args.variant and args.command and args.seconds):
            parser.error("--record needs --variant, --command and --seconds")
        return record(args.record, args.variant, args.command, args.seconds, Path(args.table), args.machine)
    if args.list or not args.variant:
        for name, overrides in VARIANTS.items():
            print(f"{name:>20}: {describe(overrides)}")
        return 0
    overrides = dict(VARIANTS[args.variant])
    budget = {k: v for k, v in (("epochs", args.epochs), ("epoch_images", args.epoch_images)) if v is not None}
    config = replace(starting_recipe(args.seed), **overrides, **budget, max_minutes=None)
    config.validate()
    run_dir = Path(args.runs) / run_name(args.variant, config.epochs, args.seed, config.epoch_images, MACHINE)
    started = time.monotonic()
    train(
        config,
        run_dir,
        data_dir=args.data,
        overwrite=True,
        progress=False,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    seconds = time.monotonic() - started  # the run folder says everything else the row needs
    command = "python tools/recipe_runs.py " + shlex.join(a for a in (argv or sys.argv[1:]) if a)
    return record(run_dir, args.variant, command, seconds, Path(args.table), MACHINE)


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}


def record(run_dir: Path, variant: str, command: str, seconds: float, table: Path, machine: str) -> int:
    """Measure a finished run folder on its validation split and append its row."""
    saved = json.loads((run_dir / "config.json").read_text())
    if "class_offsets" in saved:
        print(
            f"error: {run_dir} has class offsets fitted on its validation split, which would flatter its row; "
            "record a run trained without them (class_offsets=False)",
            file=sys.stderr,
        )
        return 2
    cfg, outcome = saved["train"], saved.get("outcome", {})
    loaded = load_model(run_dir)
    row = {
        "variant": variant,
        "changes": describe(VARIANTS[variant]),
        "seed": cfg["seed"],
        "arch": cfg["arch"],
        "img_size": cfg["img_size"],
        "epochs": cfg["epochs"],
        "epoch_images": cfg["epoch_images"],
        "images_shown": outcome.get("epochs_done", 0) * cfg["epoch_images"],
        "seconds": round(seconds),
        "stopped": outcome.get("stopped", ""),
        "machine": machine,
        "commit": commit(),
        "command": command,
    }
    row.update(validation_row(run_dir, loaded.classes))
    history = json.loads((run_dir / "history.json").read_text())
    if "valid_accuracy_raw" in history[-1]:
        row["raw_last_accuracy"] = history[-1]["valid_accuracy_raw"]
    row = _rounded(row)
    append_row(table, row)
    print(json.dumps({k: v for k, v in row.items() if k != "valid_correct"}))
    return 0


def append_row(table: Path, row: dict[str, Any]) -> None:
    table.parent.mkdir(parents=True, exist_ok=True)
    new = not table.exists()
    with table.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in FIELDS})


def remeasure(table: Path, runs: Path) -> int:
    rows = list(csv.DictReader(table.open()))
    for row in rows:
        run_dir = runs / run_name(row["variant"], row["epochs"], row["seed"], row["epoch_images"], row["machine"])
        if not run_dir.is_dir():
            print(f"kept as it is (no run folder {run_dir})")
            continue
        fresh = validation_row(run_dir, load_model(run_dir).classes)
        row.update(_rounded(fresh))
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in FIELDS} for r in rows)
    print(f"remeasured {len(rows)} rows of {table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
