"""Evaluation: predictions, metrics with bootstrap intervals, calibration, thresholds.

scikit-learn does the arithmetic; this module decides what is reported and how classes
are matched. Classes are matched **by name** between the model and the data, so a folder
holding only some of the model's classes works: metrics are computed over the classes
present in the data (probabilities still come from all of the model's outputs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from torch.utils.data import DataLoader

from .config import CXRError
from .train import LoadedModel, load_model, pick_device, predict_proba

COVID = "COVID"


@dataclass
class Predictions:
    """Probabilities over the model's classes for a set of images."""

    probs: np.ndarray  # (n, n_model_classes)
    labels: np.ndarray  # (n,) index into ``classes`` (the model's classes)
    classes: list[str]  # the model's classes
    paths: list[str]

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def present(self) -> list[int]:
        """Indices (into ``classes``) of the classes that occur in ``labels``."""
        return sorted(int(c) for c in np.unique(self.labels))

    def to_frame(self) -> Any:
        import pandas as pd

        frame = pd.DataFrame({"path": self.paths, "true": [self.classes[i] for i in self.labels],
                              "predicted": [self.classes[i] for i in self.predicted],
                              "confidence": self.probs.max(axis=1)})  # fmt: skip
        for i, c in enumerate(self.classes):
            frame[f"p_{c}"] = self.probs[:, i]
        frame["correct"] = frame["true"] == frame["predicted"]
        return frame


def predict_split(
    model: LoadedModel | str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    device: str | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Predictions:
    """Predict one split of a dataset (``all``: every image of the folder).

    For ``valid`` and ``test`` the run's own ``split.csv`` is used when the data folder is
    the one the model was trained on, so test images are never training images.
    """
    from .data import CXRData, CXRDataset

    if isinstance(model, LoadedModel):
        loaded, run_dir = model, None
    else:
        path = Path(model)
        loaded, run_dir = load_model(path), (path if path.is_dir() else path.parent)
    split_file = run_dir / "split.csv" if run_dir is not None and (run_dir / "split.csv").is_file() else None
    cfg = loaded.config
    if split == "all":
        data = CXRData.load(data_dir, fast=False, progress=progress)
    else:
        same_data = split_file is not None and _same_root(run_dir, data_dir)  # type: ignore[arg-type]
        data = CXRData.load(data_dir, fast=cfg.fast_subset, seed=cfg.seed, valid_size=cfg.valid_size,
                            test_size=cfg.test_size, split_file=split_file if same_data else None,
                            progress=progress)  # fmt: skip
    unknown = [c for c in data.classes if c not in loaded.classes]
    if unknown:
        raise CXRError(f"the data has classes the model does not know: {', '.join(unknown)}")
    to_model = np.array([loaded.classes.index(c) for c in data.classes])
    labels = to_model[data.labels()]
    indices = data.indices(split)
    if len(indices) == 0:
        raise CXRError(f"the {split} split is empty")
    dataset = CXRDataset(data.pixels(loaded.preprocessing.img_size, progress=progress), labels, indices,
                         transform=loaded.transform)  # fmt: skip
    dev = pick_device(device)
    loaded.model.to(dev)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    probs, y = predict_proba(loaded.model, loader, dev, progress=progress)
    return Predictions(probs, y.astype(np.int64), list(loaded.classes), [data.records[i].path for i in indices])


def _same_root(run_dir: Path, data_dir: str | os.PathLike[str] | None) -> bool:
    import json

    from .config import resolve_data_dir

    try:
        saved = json.loads((run_dir / "config.json").read_text()).get("data_dir")
        return saved is not None and Path(saved).resolve() == resolve_data_dir(data_dir)
    except (OSError, ValueError, CXRError):
        return False


# --------------------------------------------------------------------------- metrics


def _per_class(probs: np.ndarray, labels: np.ndarray, classes: list[str], present: list[int]) -> dict[str, dict[str, Any]]:
    predicted = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=present, zero_division=0
    )
    out = {}
    for k, c in enumerate(present):
        negatives = labels != c
        specificity = float(((predicted != c) & negatives).sum() / negatives.sum()) if negatives.any() else float("nan")
        auc = float(roc_auc_score(labels == c, probs[:, c])) if 0 < (labels == c).sum() < len(labels) else float("nan")
        out[classes[c]] = {"sensitivity": float(recall[k]), "specificity": specificity, "precision": float(precision[k]),
                           "f1": float(f1[k]), "auc": auc, "support": int(support[k])}  # fmt: skip
    return out


def macro_auc(probs: np.ndarray, labels: np.ndarray, present: list[int] | None = None) -> float:
    """Mean one-vs-rest AUC over the classes present (each needs positives and negatives)."""
    present = present if present is not None else sorted(np.unique(labels).tolist())
    aucs = [roc_auc_score(labels == c, probs[:, c]) for c in present if 0 < (labels == c).sum() < len(labels)]
    return float(np.mean(aucs)) if aucs else float("nan")


def bootstrap_ci(
    probs: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, list[float]]:
    """Stratified percentile-bootstrap intervals for accuracy, macro AUC, COVID sensitivity.

    Each resample draws, *within each true class*, as many images as that class has, with
    replacement: class sizes stay fixed, as in a test set built with 100 per class.
    """
    rng = np.random.default_rng(seed)
    present = sorted(int(c) for c in np.unique(labels))
    by_class = [np.flatnonzero(labels == c) for c in present]
    covid = classes.index(COVID) if COVID in classes and classes.index(COVID) in present else None
    predicted = probs.argmax(axis=1)
    stats: dict[str, list[float]] = {"accuracy": [], "macro_auc": [], "covid_sensitivity": []}
    for _ in range(n_resamples):
        idx = np.concatenate([rng.choice(members, size=len(members), replace=True) for members in by_class])
        y, p = labels[idx], probs[idx]
        stats["accuracy"].append(float((predicted[idx] == y).mean()))
        stats["macro_auc"].append(macro_auc(p, y, present) if len(present) > 1 else float("nan"))
        if covid is not None:
            stats["covid_sensitivity"].append(float((predicted[idx][y == covid] == covid).mean()))
    out = {}
    for name, values in stats.items():
        arr = np.array(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        out[name] = [float(np.quantile(arr, alpha / 2)), float(np.quantile(arr, 1 - alpha / 2))] if len(arr) else \
            [float("nan"), float("nan")]  # fmt: skip
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the top-class confidence, equal-width bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(confidence, bins[1:-1]), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def reliability_curve(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Per confidence bin: mean confidence, accuracy and count (for the diagram)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(confidence, bins[1:-1]), 0, n_bins - 1)
    conf, acc, count = [], [], []
    for b in range(n_bins):
        mask = which == b
        conf.append(confidence[mask].mean() if mask.any() else np.nan)
        acc.append(correct[mask].mean() if mask.any() else np.nan)
        count.append(int(mask.sum()))
    return {"bin_edges": bins, "confidence": np.array(conf), "accuracy": np.array(acc), "count": np.array(count)}


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimizing the validation negative log-likelihood of
    ``softmax(log p / T)`` (Guo et al. 2017), found by a bounded 1-D search."""
    from scipy.optimize import minimize_scalar

    logits = np.log(np.clip(probs, 1e-12, 1.0))

    def nll(t: float) -> float:
        scaled = torch.log_softmax(torch.from_numpy(logits / t), dim=1)
        return float(-scaled[np.arange(len(labels)), labels].mean())

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def covid_threshold(probs: np.ndarray, labels: np.ndarray, classes: list[str], target_sensitivity: float = 0.95) -> float:
    """The highest COVID-probability threshold whose sensitivity on these images (use the
    validation split) is at least ``target_sensitivity``."""
    if COVID not in classes:
        raise CXRError("the model has no COVID class")
    c = classes.index(COVID)
    positives = np.sort(probs[labels == c, c])
    if len(positives) == 0:
        raise CXRError("no COVID images to choose a threshold on")
    k = int(np.floor((1 - target_sensitivity) * len(positives)))
    return float(positives[min(k, len(positives) - 1)])


def threshold_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str], threshold: float) -> dict[str, float]:
    """Sensitivity and specificity of "COVID if p(COVID) >= threshold"."""
    c = classes.index(COVID)
    flagged = probs[:, c] >= threshold
    pos = labels == c
    return {"threshold": threshold,
            "sensitivity": float(flagged[pos].mean()) if pos.any() else float("nan"),
            "specificity": float((~flagged[~pos]).mean()) if (~pos).any() else float("nan")}  # fmt: skip


def compute_metrics(pred: Predictions, *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Every number of ``cxr evaluate --json`` for one set of predictions."""
    present = pred.present
    probs, labels, classes = pred.probs, pred.labels, pred.classes
    predicted = pred.predicted
    names = [classes[c] for c in present]
    matrix = confusion_matrix(labels, predicted, labels=list(range(len(classes))))
    keep = present
    # predictions of classes absent from the data still count as errors: keep their columns
    used_cols = sorted(set(keep) | set(np.unique(predicted).tolist()))
    return {
        "n": int(len(labels)),
        "classes": names,
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)) if len(present) > 0 else float("nan"),
        "macro_auc": macro_auc(probs, labels, present),
        "per_class": _per_class(probs, labels, classes, present),
        "confusion_matrix": {"labels": names, "predicted_labels": [classes[c] for c in used_cols],
                             "matrix": matrix[np.ix_(keep, used_cols)].tolist()},  # fmt: skip
        "ci95": bootstrap_ci(probs, labels, classes, n_resamples=n_resamples, seed=seed),
        "ece": expected_calibration_error(probs, labels),
    }


def roc_curves(pred: Predictions) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """One-vs-rest ROC curve ``(fpr, tpr, auc)`` per class present."""
    out = {}
    for c in pred.present:
        y = pred.labels == c
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, pred.probs[:, c])
            out[pred.classes[c]] = (fpr, tpr, float(roc_auc_score(y, pred.probs[:, c])))
    return out
