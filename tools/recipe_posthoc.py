"""Choices measured without retraining, on the runs of ``tools/recipe_runs.py``: test-time
augmentation, predicting at a larger image size than the one trained at, and class offsets.

For each run folder given, on its **validation** split: accuracy on the three honest classes,
four-class accuracy and macro AUC, for

* ``plain``: the model as saved (``best.pt``);
* ``tta``: the mean of the softmax over the image and four mild views of it (scaled by 0.95
  and 1.05, rotated by -4 and +4 degrees, black fill, as in training's augmentation);
* ``size+32``: the images given at 32 px more than the training size;
* ``size+32+offsets``: both, the offsets fitted (cross-fitted) on the larger size's outputs;
* ``multi-size+offsets``: the mean of the softmax at 16, 32 and 48 px more than the training
  size, with offsets cross-fitted on that mean (judged against ``size+32+offsets``);
* ``offsets``: per-class logit offsets (:func:`cxrlib.train.fit_class_offsets`), measured
  honestly by cross-fitting: the validation split is cut in two halves (stratified by class,
  seed 0), and each half is predicted with the offsets fitted on the other.

Usage: ``python tools/recipe_posthoc.py RUN [RUN ...] [--only CHOICE ...] [--json OUT]
[--valid-images CSV]`` (``--json`` adds to the file's runs when it exists). ``--valid-images``
names the validation images, in the order of every ``correct`` string (one ``0``/``1`` per
image): written when the file does not exist, and otherwise checked, so that every run's
strings refer to the same images in the same order (``cxrlib.ablation.miss_shares``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.transforms.v2 import functional as F

from cxrlib.ablation import HONEST_CLASSES
from cxrlib.checkpoint import load_model, predict_images, run_data_dir
from cxrlib.evaluate import Predictions, predict_split
from cxrlib.metrics import macro_auc
from cxrlib.train import fit_class_offsets

VIEWS = [
    dict(angle=0.0, scale=0.95),
    dict(angle=0.0, scale=1.05),
    dict(angle=-4.0, scale=1.0),
    dict(angle=4.0, scale=1.0),
]


def scores(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float]:
    predicted = probs.argmax(1)
    honest = np.isin(labels, [classes.index(c) for c in HONEST_CLASSES])
    sensitivity = {f"sens_{c}": float((predicted[labels == k] == k).mean()) for k, c in enumerate(classes)}
    return {
        "accuracy_3class": float((predicted[honest] == labels[honest]).mean()),
        "accuracy": float((predicted == labels).mean()),
        "macro_auc": macro_auc(probs, labels),
        **sensitivity,
        "correct": "".join("01"[int(v)] for v in predicted == labels),
    }


CHOICES = ("tta", "size+32", "offsets", "size+32+offsets", "multi-size+offsets")
#: the sizes ``multi-size+offsets`` averages, in pixels above the training size
MULTI_SIZE_STEPS = (16, 32, 48)


def crossfit_offsets(probs: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Probabilities after class offsets, each half of the images shifted by the offsets
    fitted on the other half (stratified halves), so no image helps fit its own offsets."""
    rng = np.random.default_rng(seed)
    half = np.zeros(len(labels), dtype=int)
    for k in np.unique(labels):
        half[rng.permutation(np.flatnonzero(labels == k))[::2]] = 1
    log_p = np.log(np.clip(probs, 1e-12, 1.0))
    shifted = np.empty_like(log_p)
    for h in (0, 1):
        offsets = fit_class_offsets(probs[half != h], labels[half != h])
        shifted[half == h] = log_p[half == h] + offsets
    shifted = np.exp(shifted - shifted.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def check_valid_images(pred: Predictions, csv: Path) -> None:
    """Write ``csv`` (path, class of each validation image, in prediction order) when it does
    not exist; otherwise raise unless ``pred`` predicted the same images in the same order."""
    images = pd.DataFrame({"path": pred.paths, "class": [pred.classes[k] for k in pred.labels]})
    if not csv.is_file():
        images.to_csv(csv, index=False)
    elif not images.equals(pd.read_csv(csv)):
        raise SystemExit(f"{csv}: this run's validation images differ from the file's (another split?)")


def measure(
    run: Path, choices: tuple[str, ...] = CHOICES, valid_images: Path | None = None
) -> dict[str, dict[str, float]]:
    loaded = load_model(run)
    pred = predict_split(run, split="valid", keep_images=True)
    if valid_images is not None:
        check_valid_images(pred, valid_images)
    out = {"plain": scores(pred.probs, pred.labels, pred.classes)}
    if "offsets" in choices:
        out["offsets"] = scores(crossfit_offsets(pred.probs, pred.labels), pred.labels, pred.classes)
    if "tta" in choices:
        images = torch.from_numpy(np.array(pred.images))[:, None]
        views = [pred.probs]
        for view in VIEWS:
            moved = F.affine(
                images, angle=view["angle"], translate=[0, 0], scale=view["scale"], shear=[0.0, 0.0], fill=0
            )
            views.append(predict_images(loaded, moved[:, 0].numpy()))
        out["tta"] = scores(np.mean(views, axis=0), pred.labels, pred.classes)
    at_32 = bool({"size+32", "size+32+offsets"} & set(choices))
    steps = set(MULTI_SIZE_STEPS if "multi-size+offsets" in choices else ()) | ({32} if at_32 else set())
    trained = loaded.preprocessing.img_size
    at = {
        step: predict_split(loaded.at_size(trained + step), data_dir=run_data_dir(run), split="valid") for step in steps
    }
    if at_32:
        big = at[32]
        out["size+32"] = scores(big.probs, big.labels, big.classes)
        out["size+32+offsets"] = scores(crossfit_offsets(big.probs, big.labels), big.labels, big.classes)
    if "multi-size+offsets" in choices:
        mean = np.mean([at[step].probs for step in MULTI_SIZE_STEPS], axis=0)
        out["multi-size+offsets"] = scores(crossfit_offsets(mean, pred.labels), pred.labels, pred.classes)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", nargs="+", choices=CHOICES, default=list(CHOICES))
    parser.add_argument("--valid-images", type=Path, help="the validation images' CSV: written, or checked")
    args = parser.parse_args()
    results = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
    for run in args.runs:
        results[run.name] = {**results.get(run.name, {}), **measure(run, tuple(args.only), args.valid_images)}
        print(
            run.name,
            {k: {m: round(v, 4) for m, v in r.items() if m != "correct"} for k, r in results[run.name].items()},
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
