"""Choices measured without retraining, on the runs of ``tools/recipe_runs.py``: test-time
augmentation, and predicting at a larger image size than the one trained at.

For each run folder given, on its **validation** split: accuracy on the three honest classes,
four-class accuracy and macro AUC, for

* ``plain``: the model as saved (``best.pt``);
* ``tta``: the mean of the softmax over the image and four mild views of it (scaled by 0.95
  and 1.05, rotated by -4 and +4 degrees, black fill, as in training's augmentation);
* ``size+32``: the images given at 32 px more than the training size.

Usage: ``python tools/recipe_posthoc.py RUN [RUN ...] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from cxrlib.evaluate import macro_auc, predict_images, predict_split
from cxrlib.recipes import HONEST_CLASSES
from cxrlib.train import load_model

VIEWS = [dict(angle=0.0, scale=0.95), dict(angle=0.0, scale=1.05), dict(angle=-4.0, scale=1.0),
         dict(angle=4.0, scale=1.0)]  # fmt: skip


def scores(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float]:
    predicted = probs.argmax(1)
    honest = np.isin(labels, [classes.index(c) for c in HONEST_CLASSES])
    return {"accuracy_3class": float((predicted[honest] == labels[honest]).mean()),
            "accuracy": float((predicted == labels).mean()), "macro_auc": macro_auc(probs, labels),
            "correct": "".join("01"[int(v)] for v in predicted == labels)}  # fmt: skip


def measure(run: Path) -> dict[str, dict[str, float]]:
    loaded = load_model(run)
    pred = predict_split(run, split="valid", keep_images=True)
    out = {"plain": scores(pred.probs, pred.labels, pred.classes)}
    images = torch.from_numpy(np.array(pred.images))[:, None]
    views = [pred.probs]
    for view in VIEWS:
        moved = F.affine(images, angle=view["angle"], translate=[0, 0], scale=view["scale"], shear=[0.0, 0.0], fill=0)
        views.append(predict_images(loaded, moved[:, 0].numpy()))
    out["tta"] = scores(np.mean(views, axis=0), pred.labels, pred.classes)
    bigger = replace(loaded, preprocessing=replace(loaded.preprocessing, img_size=loaded.preprocessing.img_size + 32))
    big = predict_split(bigger, data_dir=json.loads((run / "config.json").read_text())["data_dir"], split="valid")
    out["size+32"] = scores(big.probs, big.labels, big.classes)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    for run in args.runs:
        results[run.name] = measure(run)
        print(run.name, {k: {m: round(v, 4) for m, v in r.items() if m != "correct"} for k, r in results[run.name].items()})
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
