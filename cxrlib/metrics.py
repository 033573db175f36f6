"""Metrics: pure functions of class probabilities and true labels.

No model and no data folder here: the AUCs (training scores its validation split with
:func:`macro_auc`), per-class sensitivity and specificity with exact intervals, the
stratified bootstrap, calibration (ECE, reliability, temperature) and the COVID operating
threshold. :mod:`cxrlib.evaluate` runs a model on images and reports with these.

Intervals: exact (Clopper-Pearson) for proportions (accuracy, sensitivity, specificity;
:mod:`cxrlib.stats`), a stratified bootstrap for the macro AUC (:func:`bootstrap_ci`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from .config import CXRError
from .stats import exact_interval


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC per row of ``scores`` ``(r, n)`` with the same ``positive`` mask
    ``(n,)``: the Mann-Whitney statistic from average ranks (ties count one half)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    ranks = rankdata(scores, axis=-1)
    return (ranks[..., positive].sum(axis=-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def macro_auc(probs: np.ndarray, labels: np.ndarray, present: list[int] | None = None) -> float:
    """Mean one-vs-rest AUC over the classes present (``nan`` with fewer than two)."""
    present = present if present is not None else sorted(int(c) for c in np.unique(labels))
    if len(present) < 2:
        return float("nan")
    return float(np.mean([roc_auc_score(labels == c, probs[:, c]) for c in present]))


def basic_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and macro one-vs-rest AUC (over the classes present in ``labels``)."""
    acc = float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")
    return {"accuracy": acc, "macro_auc": macro_auc(probs, labels)}


COVID = "COVID"


#: Bins of the reliability diagram and of the expected calibration error (equal width).
N_BINS = 10


#: Bootstrap resamples of every interval that has no exact formula (the macro AUC, the ECE).
N_RESAMPLES = 1000


#: How each interval of :func:`compute_metrics` is made (``cxr evaluate`` prints it too).
CI_METHODS = {
    "accuracy": "exact (Clopper-Pearson)",
    "sensitivity and specificity": "exact (Clopper-Pearson)",
    "macro_auc": "stratified bootstrap",
}


def class_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, dict[str, Any]]:
    """Sensitivity and specificity (each with its exact 95 % interval), precision, F1,
    one-vs-rest AUC and support of each class present in ``labels`` (``nan`` where
    undefined)."""
    predicted = probs.argmax(axis=1)
    out = {}
    for c in sorted(int(k) for k in np.unique(labels)):
        positive, flagged = labels == c, predicted == c
        tp = int((positive & flagged).sum())
        fn = int((positive & ~flagged).sum())
        fp = int((~positive & flagged).sum())
        tn = int((~positive & ~flagged).sum())
        out[classes[c]] = {
            "sensitivity": tp / (tp + fn),
            "sensitivity_ci95": list(exact_interval(tp, tp + fn)),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
            "specificity_ci95": list(exact_interval(tn, tn + fp)),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "auc": float(roc_auc_score(positive, probs[:, c])) if tn + fp else float("nan"),
            "support": tp + fn,
        }
    return out


def bootstrap_ci(
    probs: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
    estimates: dict[str, float] | None = None,
    per_class: bool = False,
) -> dict[str, list[float]]:
    """Stratified percentile-bootstrap ``1 - alpha`` intervals for accuracy, macro AUC and
    COVID sensitivity; with ``per_class``, also ``sensitivity:<class>`` for every class
    present.

    Each resample draws, *within each true class*, as many images as that class has, with
    replacement: class sizes stay fixed, as in a test set built with 100 per class.

    A percentile interval need not contain the point estimate when the bootstrap
    distribution is lopsided or collapsed (e.g. a sensitivity of 10/10, or a statistic
    that takes a handful of values); the interval is then widened to the estimate
    (``estimates``, default: the statistic on the original sample), so that it always
    brackets the reported number. Undefined statistics give ``[nan, nan]``.
    """
    if n_resamples < 1:
        raise CXRError("n_resamples must be at least 1")
    rng = np.random.default_rng(seed)
    present = sorted(int(c) for c in np.unique(labels))
    strata = [np.flatnonzero(labels == c) for c in present]
    y = np.concatenate([labels[s] for s in strata])  # the same for every resample
    predicted = probs.argmax(axis=1)
    covid = classes.index(COVID) if COVID in classes and classes.index(COVID) in present else None

    def stats(idx: np.ndarray) -> dict[str, np.ndarray]:  # idx: (r, n) resampled image indices
        pred = predicted[idx]
        out = {"accuracy": (pred == y).mean(axis=1)}
        if len(present) > 1:
            out["macro_auc"] = np.mean([rank_auc(probs[idx, c], y == c) for c in present], axis=0)
        if covid is not None:
            out["covid_sensitivity"] = (pred[:, y == covid] == covid).mean(axis=1)
        if per_class:
            for c in present:
                out[f"sensitivity:{classes[c]}"] = (pred[:, y == c] == c).mean(axis=1)
        return out

    collected: dict[str, list[np.ndarray]] = {}
    chunk = max(1, 2_000_000 // max(1, len(y)))  # bound memory on large folders
    for start in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - start)
        idx = np.concatenate([s[rng.integers(0, len(s), size=(r, len(s)))] for s in strata], axis=1)
        for name, values in stats(idx).items():
            collected.setdefault(name, []).append(values)
    point = {k: float(v[0]) for k, v in stats(np.concatenate(strata)[None]).items()}
    point.update(estimates or {})
    out = {}
    names = ["accuracy", "macro_auc", "covid_sensitivity"]
    if per_class:
        names += [f"sensitivity:{classes[c]}" for c in present]
    for name in names:
        if name not in collected or not math.isfinite(point.get(name, float("nan"))):
            out[name] = [float("nan"), float("nan")]
            continue
        lo, hi = np.quantile(np.concatenate(collected[name]), [alpha / 2, 1 - alpha / 2])
        out[name] = [min(float(lo), point[name]), max(float(hi), point[name])]
    return out


def _bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence among ``n_bins`` equal-width bins of 0..1 (1.0 in the last)."""
    return np.clip(np.floor(confidence * n_bins).astype(np.int64), 0, n_bins - 1)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE of the top-class confidence: the gap between confidence and accuracy in each
    equal-width bin, weighted by the share of images in the bin."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = _bins(confidence, n_bins)
    ece = 0.0
    for b in np.unique(which):
        mask = which == b
        ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def reliability_curve(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per confidence bin: mean confidence, accuracy and count (for the diagram); empty
    bins have ``nan``. The ECE is the count-weighted mean of ``|accuracy - confidence|``."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = _bins(confidence, n_bins)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, weights=confidence, minlength=n_bins) / count
        acc = np.bincount(which, weights=correct.astype(float), minlength=n_bins) / count
    return {"bin_edges": np.linspace(0, 1, n_bins + 1), "confidence": conf, "accuracy": acc, "count": count}


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``, the same as ``softmax(logits / T)``: T > 1 softens, T < 1 sharpens.
    The predicted class never changes."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    return np.exp(_log_softmax(logits / temperature))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimizing the negative log-likelihood of ``softmax(log p / T)``
    (Guo et al. 2017); fit it on the **validation** split, apply it to test."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    rows = np.arange(len(labels))

    def loss(log_t: float) -> float:
        return float(-_log_softmax(logits / math.exp(log_t))[rows, labels].mean())

    best = minimize_scalar(loss, bounds=(math.log(0.05), math.log(20.0)), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(best.x))


def covid_threshold(
    probs: np.ndarray, labels: np.ndarray, classes: list[str], target_sensitivity: float = 0.95
) -> float:
    """The highest COVID-probability threshold whose sensitivity on these images (use the
    validation split) is at least ``target_sensitivity``: "COVID if p(COVID) >= threshold"."""
    if COVID not in classes:
        raise CXRError("the model has no COVID class")
    if not 0 < target_sensitivity <= 1:
        raise CXRError("the target sensitivity must be in (0, 1]")
    c = classes.index(COVID)
    positives = np.sort(probs[labels == c, c])
    if len(positives) == 0:
        raise CXRError("no COVID images to choose a threshold on")
    # flagging the positives[k:] keeps n - k of n: the largest k with (n - k) / n >= target
    k = int(math.floor((1 - target_sensitivity) * len(positives) + 1e-9))
    return float(positives[min(k, len(positives) - 1)])


def threshold_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str], threshold: float) -> dict[str, float]:
    """What "COVID if p(COVID) >= threshold" does: sensitivity, specificity, precision
    (positive predictive value at this mix of classes) and the share of images flagged."""
    c = classes.index(COVID)
    flagged = probs[:, c] >= threshold
    pos = labels == c
    tp, fp = int((flagged & pos).sum()), int((flagged & ~pos).sum())
    return {
        "threshold": float(threshold),
        "sensitivity": tp / pos.sum() if pos.any() else float("nan"),
        "sensitivity_ci95": list(exact_interval(tp, int(pos.sum()))),
        "positives": int(pos.sum()),
        "specificity": float((~flagged[~pos]).mean()) if (~pos).any() else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "flagged": float(flagged.mean()),
    }


def ppv_at_prevalence(sensitivity: float, specificity: float, prevalence: float) -> float:
    """Positive predictive value (the share of flagged patients who have the disease) at a
    given prevalence, by Bayes' rule: a test set with 25 % COVID says little about a
    clinic where 2 % of the patients have it."""
    flagged_sick = sensitivity * prevalence
    flagged_healthy = (1 - specificity) * (1 - prevalence)
    return flagged_sick / (flagged_sick + flagged_healthy) if flagged_sick + flagged_healthy else float("nan")


def _stratified_resamples(labels: np.ndarray, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Index arrays of ``n_resamples`` bootstrap samples drawn within each true class."""
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(n_resamples):
        yield np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata])


def ece_interval(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
    versus: np.ndarray | None = None,
) -> list[float]:
    """Stratified percentile-bootstrap interval of the :func:`expected_calibration_error`
    (images resampled within each true class). With a few hundred images the ECE is noisy,
    and this interval says how noisy. With ``versus`` (other probabilities for the same
    images), the interval of the *change* ``ECE(probs) - ECE(versus)``, paired: both are
    computed on the same resamples, as two models on the same images must be compared."""
    values = [
        expected_calibration_error(probs[idx], labels[idx])
        - (expected_calibration_error(versus[idx], labels[idx]) if versus is not None else 0.0)
        for idx in _stratified_resamples(labels, n_resamples, seed)
    ]
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return [float(lo), float(hi)]
