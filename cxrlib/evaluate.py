"""Evaluation: a model's predictions on a split or a folder, and the report made of them
(metrics with intervals, calibration, the COVID operating point, and their readings).

The arithmetic is in :mod:`cxrlib.metrics` (pure functions of probabilities and labels);
this module decides what is reported and how classes are matched.

Classes are matched **by name** between the model and the data, so a folder holding only
some of the model's classes works: metrics are computed over the classes present in the
data (probabilities still come from all of the model's outputs, and a prediction of a
class absent from the data is still an error).

Where the images come from (:func:`predict_split`):

* ``valid`` / ``test``: the run's own ``split.csv`` when the data folder is the one the
  model was trained on, so test images are never training images; for another folder, a
  fresh split with the run's seed and sizes;
* ``all``: every readable image of the folder, no split at all (any number of images per
  class, any subset of the classes).

Numbers that are undefined (the AUC of a class when no other class is present, the
specificity when every image is of one class, the precision of a class never predicted)
are ``nan`` here and ``null`` in JSON (:func:`json_ready`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

from .checkpoint import LoadedModel, cpu_model, load_model, model_input, predict_images, run_data_dir
from .config import CXRError, DataNotFoundError, cache_dir, resolve_data_dir
from .data import CXRData, PixelCache, _atomic_write_bytes, find_dataset_root, scan
from .explain import compute_cams, overlay
from .imaging import UnreadableImageError, read_gray, resize_gray
from .metrics import (
    CI_METHODS,
    COVID,
    N_RESAMPLES,
    apply_temperature,
    bootstrap_ci,
    class_metrics,
    covid_threshold,
    ece_interval,
    expected_calibration_error,
    fit_temperature,
    macro_auc,
    nll,
    reliability_curve,
    threshold_metrics,
)
from .regions import model_view
from .stats import exact_interval, with_interval

#: Format of the prediction cache (:func:`cached_predictions`); bump when it changes.
PREDICTIONS_CACHE_VERSION = 1


@dataclass
class Predictions:
    """Probabilities over the model's classes for a set of images.

    ``labels`` index the model's ``classes``; ``images`` (optional) are the ``uint8``
    pixels the model saw, ``(n, size, size)``; ``notes`` say anything worth knowing
    (files skipped, a fresh split made).
    """

    probs: np.ndarray  # (n, n_model_classes)
    labels: np.ndarray  # (n,) index into ``classes`` (the model's classes)
    classes: list[str]  # the model's classes
    paths: list[str]  # relative to ``root``
    root: str = ""
    images: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """The probability of the predicted class."""
        return self.probs.max(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    @property
    def present(self) -> list[int]:
        """Indices (into ``classes``) of the classes that occur in ``labels``."""
        return sorted(int(c) for c in np.unique(self.labels))

    def with_probs(self, probs: np.ndarray) -> Predictions:
        """The same images with other probabilities (e.g. after temperature scaling)."""
        return Predictions(probs, self.labels, self.classes, self.paths, self.root, self.images, list(self.notes))

    def to_frame(self) -> Any:
        """A pandas DataFrame: path, true, predicted, confidence, correct, one ``p_<class>`` per class."""
        frame = pd.DataFrame(
            {
                "path": self.paths,
                "true": [self.classes[i] for i in self.labels],
                "predicted": [self.classes[i] for i in self.predicted],
                "confidence": self.confidence,
            }
        )
        for i, c in enumerate(self.classes):
            frame[f"p_{c}"] = self.probs[:, i]
        frame["correct"] = frame["true"] == frame["predicted"]
        return frame


# --------------------------------------------------------------------------- predicting


def _as_loaded(model: LoadedModel | str | os.PathLike[str]) -> tuple[LoadedModel, Path | None]:
    """``(loaded model, run folder or None)`` for a LoadedModel, a run folder or a checkpoint."""
    if isinstance(model, LoadedModel):
        return model, None
    path = Path(model).expanduser()
    return load_model(path), (path if path.is_dir() else path.parent)


def _data_root(run_dir: Path | None, data_dir: str | os.PathLike[str] | None) -> Path:
    """The data folder: ``data_dir``, else ``CXR_DATA_DIR``, else the folder the run was
    trained on (when it still exists), else kagglehub."""
    try:
        return resolve_data_dir(data_dir, use_kagglehub=False)
    except DataNotFoundError:
        if data_dir is not None or os.environ.get("CXR_DATA_DIR"):
            raise
    saved = run_data_dir(run_dir)
    if saved and Path(saved).is_dir():
        return Path(saved).resolve()
    return resolve_data_dir(None)


def _model_labels(record_labels: list[str], loaded: LoadedModel) -> np.ndarray:
    unknown = sorted(set(record_labels) - set(loaded.classes))
    if unknown:
        raise CXRError(
            f"the data has classes the model does not know: {', '.join(unknown)} "
            f"(the model knows {', '.join(loaded.classes)})"
        )
    lookup = {c: i for i, c in enumerate(loaded.classes)}
    return np.array([lookup[c] for c in record_labels], dtype=np.int64)


def predict_split(
    model: LoadedModel | str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    device: str | None = None,
    batch_size: int = 64,
    keep_images: bool = False,
    progress: bool = False,
) -> Predictions:
    """Predict one split (``valid``, ``test``) of a dataset, or every image of it (``all``).

    ``model`` is a run folder (its ``best.pt``), a checkpoint file or a loaded model. The
    data folder is ``data_dir``, else ``CXR_DATA_DIR``, else the one the run was trained on.
    See the module docstring for where the split comes from.
    """
    if split not in ("valid", "test", "all"):
        raise CXRError(f"unknown split {split!r}; choose from valid, test, all")
    loaded, run_dir = _as_loaded(model)
    root = _data_root(run_dir, data_dir)
    notes: list[str] = []
    if split == "all":
        found = scan(root, progress=progress)
        records, chosen = found.records, np.arange(len(found.records))
        root = found.root
        notes += [f"skipped unreadable file {s.path}: {s.reason}" for s in found.skipped]
    else:
        cfg = loaded.config
        split_file = run_dir / "split.csv" if run_dir is not None else None
        saved_root = run_data_dir(run_dir)
        same = (
            split_file is not None
            and split_file.is_file()
            and saved_root is not None
            and Path(saved_root).resolve() == find_dataset_root(root)[0]
        )
        if split_file is not None and not same:
            notes.append("this is not the data folder the model was trained on: a fresh split was made")
        data = CXRData.load(
            root,
            **cfg.split_options(),
            split_file=split_file if same else None,
            progress=progress,
        )
        records, chosen, root = data.records, data.indices(split), data.root
    if len(chosen) == 0:
        raise CXRError(f"no images to evaluate ({split} split of {root})")
    labels = _model_labels([records[i].label for i in chosen], loaded)
    size = loaded.preprocessing.img_size
    full = PixelCache(root, records, size)
    if full.is_complete() or len(chosen) == len(records):  # e.g. built by training
        pixels = full.load(progress=progress)
        images = pixels if len(chosen) == len(records) else pixels[chosen]
    else:  # cache only the images needed, not the whole database
        images = PixelCache(root, [records[i] for i in chosen], size).load(progress=progress)
    prep = loaded.preprocessing
    images = model_view(images, prep.region, prep.region_source, root=root, paths=[records[i].path for i in chosen])
    if loaded.preprocessing.region != "full":
        notes.append(
            f"region {loaded.preprocessing.region}: the images are blacked out as in training "
            f"(lung region from the {loaded.preprocessing.region_source})"
        )
    probs = predict_images(loaded, images, device=device, batch_size=batch_size, progress=progress)
    return Predictions(
        probs,
        labels,
        list(loaded.classes),
        [records[i].path for i in chosen],
        str(root),
        np.array(images) if keep_images else None,
        notes,
    )


def cached_predictions(
    run: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    device: str | None = None,
    progress: bool = False,
) -> Predictions:
    """:func:`predict_split` with ``keep_images=True``, computed once and cached.

    The cache is ``predictions-<split>.npz`` in the run folder (or under the cache folder
    when the run folder is read-only), keyed by the checkpoint's path, size and
    modification time, the split, the data folder and the image size: retraining the run
    or pointing at other data recomputes it.
    """
    run = Path(run).expanduser()
    ckpt = run / "best.pt" if run.is_dir() else run
    run_dir = run if run.is_dir() else run.parent
    if not ckpt.is_file():
        raise CXRError(f"checkpoint not found: {ckpt}")
    st = ckpt.stat()
    root = _data_root(run_dir, data_dir)
    key = json.dumps([PREDICTIONS_CACHE_VERSION, str(ckpt.resolve()), st.st_size, st.st_mtime_ns, split, str(root)])
    candidates = [
        run_dir / f"predictions-{split}.npz",
        cache_dir() / "predictions" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz",
    ]
    for path in candidates:
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return Predictions(
                        z["probs"],
                        z["labels"],
                        z["classes"].tolist(),
                        z["paths"].tolist(),
                        str(z["root"]),
                        z["images"],
                        z["notes"].tolist(),
                    )
        except (OSError, KeyError, ValueError):
            continue
    pred = predict_split(run, root, split=split, device=device, keep_images=True, progress=progress)
    arrays = {
        "key": np.array(key),
        "probs": pred.probs,
        "labels": pred.labels,
        "classes": np.array(pred.classes),
        "paths": np.array(pred.paths),
        "root": np.array(pred.root),
        "images": pred.images,
        "notes": np.array(pred.notes, dtype=str),
    }
    for path in candidates:
        try:
            _atomic_write_bytes(path, lambda fh: np.savez(fh, **arrays))
            break
        except OSError:
            continue
    return pred


# --------------------------------------------------------------------------- single files


@dataclass
class FilePrediction:
    """The prediction for one image file."""

    path: str
    predicted: str
    probabilities: dict[str, float]
    cam: str | None = None  # the overlay written with ``cam_dir``

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "predicted": self.predicted, "probabilities": self.probabilities}
        if self.cam is not None:
            out["cam"] = self.cam
        return out


def predict_files(
    model: LoadedModel | str | os.PathLike[str],
    paths: list[str | os.PathLike[str]],
    *,
    cam_dir: str | os.PathLike[str] | None = None,
    cam_method: str = "gradcam",
    device: str | None = None,
    batch_size: int = 32,
) -> tuple[list[FilePrediction], list[tuple[str, str]]]:
    """Predict image files one by one; bad inputs do not stop the others.

    Returns ``(predictions, errors)``; ``errors`` holds ``(path, reason)`` for a missing
    path, a folder, or a file that cannot be decoded. With ``cam_dir``, a Grad-CAM overlay
    of the predicted class is written per image (``<name>.<method>.png``).
    """
    loaded, _ = _as_loaded(model)
    size = loaded.preprocessing.img_size
    good: list[str] = []
    originals: list[np.ndarray] = []
    resized: list[np.ndarray] = []
    errors: list[tuple[str, str]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            errors.append((str(p), "is a folder, not an image file"))
            continue
        if not path.exists():
            errors.append((str(p), "no such file"))
            continue
        try:
            gray = read_gray(path)
        except (UnreadableImageError, OSError) as err:
            errors.append((str(p), str(err) or type(err).__name__))
            continue
        small = resize_gray(gray, size)
        if loaded.preprocessing.region != "full":
            try:
                small = model_view(
                    small[None],
                    loaded.preprocessing.region,
                    loaded.preprocessing.region_source,
                    paths=[str(path.resolve())],
                )[0]
            except CXRError as err:
                errors.append((str(p), str(err)))
                continue
        good.append(str(p))
        originals.append(gray)  # kept for the overlays
        resized.append(small)
        if cam_dir is None:
            originals[-1] = resized[-1]  # no need to keep the full-size image
    if not good:
        return [], errors
    images = np.stack(resized)
    probs = predict_images(loaded, images, device=device, batch_size=batch_size)
    out = [
        FilePrediction(p, loaded.classes[int(row.argmax())], {c: float(v) for c, v in zip(loaded.classes, row)})
        for p, row in zip(good, probs)
    ]
    if cam_dir is not None:
        _write_cams(loaded, images, probs.argmax(axis=1), originals, out, Path(cam_dir), cam_method, batch_size)
    return out, errors


def _write_cams(
    loaded: LoadedModel,
    images: np.ndarray,
    targets: np.ndarray,
    originals: list[np.ndarray],
    out: list[FilePrediction],
    cam_dir: Path,
    method: str,
    batch_size: int,
) -> None:

    try:
        cam_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CXRError(f"cannot create {cam_dir}: {err.strerror or err}") from None
    cams = compute_cams(cpu_model(loaded.model), model_input(loaded, images), targets.tolist(), method, batch_size)
    used: set[str] = set()
    for pred, original, cam in zip(out, originals, cams):
        # overlay at the file's own aspect ratio, at most 768 px on the long side
        h, w = original.shape
        scale = min(1.0, 768 / max(h, w))
        shape = (max(1, round(w * scale)), max(1, round(h * scale)))
        gray = np.asarray(Image.fromarray(original).resize(shape, Image.BILINEAR))
        big = np.asarray(Image.fromarray(cam).resize(shape, Image.BILINEAR))
        stem = Path(pred.path).stem or "image"
        name, k = f"{stem}.{method}.png", 1
        while name in used:
            k += 1
            name = f"{stem}-{k}.{method}.png"
        used.add(name)
        target = cam_dir / name
        rgb = (overlay(gray, big) * 255).round().astype(np.uint8)
        try:
            Image.fromarray(rgb).save(target)
        except OSError as err:
            raise CXRError(f"cannot write {target}: {err.strerror or err}") from None
        pred.cam = str(target)


# --------------------------------------------------------------------------- metrics


def operating_point(valid: Predictions, test: Predictions, target_sensitivity: float = 0.95) -> dict[str, Any]:
    """Choose the COVID threshold on ``valid`` for ``target_sensitivity`` and report it on
    both splits, next to the plain arg-max rule on test."""
    threshold = covid_threshold(valid.probs, valid.labels, valid.classes, target_sensitivity)
    c = test.classes.index(COVID)
    argmax_rule = threshold_metrics(np.eye(len(test.classes))[test.predicted], test.labels, test.classes, 0.5)
    return {
        "target_sensitivity": target_sensitivity,
        "threshold": threshold,
        "valid": threshold_metrics(valid.probs, valid.labels, valid.classes, threshold),
        "test": threshold_metrics(test.probs, test.labels, test.classes, threshold),
        "test_argmax": {**argmax_rule, "threshold": float("nan")},
        "covid_index": c,
    }


def describe_operating_point(op: dict[str, Any]) -> str:
    """Two sentences reading :func:`operating_point`: the sensitivity the validation
    threshold reached on validation and on test, whether the exact interval of the test
    sensitivity includes the target, lies above it or below it, and what the threshold cost
    in specificity against the arg-max rule."""
    test, valid, argmax_rule = op["test"], op["valid"], op["test_argmax"]
    target = op["target_sensitivity"]
    lo, hi = test["sensitivity_ci95"]
    side = "below" if test["sensitivity"] < target else "at or above"
    if hi < target:
        verdict = "lies wholly below the target"
    elif lo >= target:
        verdict = "lies wholly at or above the target"
    else:
        verdict = "includes the target, so this test split cannot tell whether the rule reaches it on new patients"
    return (
        f"The threshold {op['threshold']:.3f}, chosen for {target:.0%} sensitivity on validation (where it "
        f"reached {valid['sensitivity']:.1%}), reached {test['sensitivity']:.1%} on test, {side} the target; "
        f"its exact 95% interval over the {test['positives']} COVID images, [{lo:.1%}, {hi:.1%}], {verdict}. "
        f"Its test specificity is {test['specificity']:.1%}, against {argmax_rule['specificity']:.1%} for the "
        f"arg-max rule (sensitivity {argmax_rule['sensitivity']:.1%})."
    )


def operating_point_table(op: dict[str, Any], digits: int = 3) -> Any:
    """:func:`operating_point` as a pandas table: one row per rule (the arg-max rule on
    test, the threshold on validation and on test), columns sensitivity, specificity,
    precision and the share flagged, as numbers rounded to ``digits``."""
    threshold = op["threshold"]
    rules = {
        "arg-max rule, test": op["test_argmax"],
        f"p(COVID) >= {threshold:.3f}, validation": op["valid"],
        f"p(COVID) >= {threshold:.3f}, test": op["test"],
    }
    columns = ("sensitivity", "specificity", "precision", "flagged")
    rows = {name: {c: float(m[c]) for c in columns} for name, m in rules.items()}
    return pd.DataFrame.from_dict(rows, orient="index").round(digits)


def describe_threshold_choice(
    chosen_on_valid: dict[str, Any], chosen_on_test: dict[str, Any], target_sensitivity: float
) -> str:
    """One sentence comparing, on the test split, a COVID threshold chosen on validation with
    one chosen on test (both :func:`threshold_metrics` on test): what choosing on test
    seems to gain, in sensitivity or in specificity, on the very images it was fitted to."""
    v, t = chosen_on_valid, chosen_on_test
    head = (
        f"Chosen on test, the threshold {t['threshold']:.3f} reaches {t['sensitivity']:.1%} sensitivity on "
        f"test, at least {target_sensitivity:.0%} by construction; chosen on validation, {v['threshold']:.3f} "
        f"reaches {v['sensitivity']:.1%}"
    )
    if v["sensitivity"] < target_sensitivity:
        return (
            f"{head}, below the target. On these images, choosing on test turns a missed target into a met one "
            "(and pays for it in specificity): an optimism fitted to these COVID images, which new patients "
            "will not share."
        )
    gain = round(100 * t["specificity"], 1) - round(100 * v["specificity"], 1)  # points, between the printed values
    if round(gain, 1) > 0:
        return (
            f"{head}. Both reach the target, and the test-chosen threshold also looks better in specificity, "
            f"{t['specificity']:.1%} against {v['specificity']:.1%} ({gain:+.1f} points): an optimism fitted "
            "to these COVID images, which new patients will not share."
        )
    return (
        f"{head}. Both reach the target with the same specificity, {v['specificity']:.1%}: here choosing on "
        "test gained nothing, yet its number is still fitted to these images."
    )


def calibration(valid: Predictions, test: Predictions, *, n_resamples: int = N_RESAMPLES) -> dict[str, Any]:
    """Temperature fitted on ``valid``; ECE (with bootstrap intervals), NLL and reliability
    curves on ``test`` before and after scaling."""
    t = fit_temperature(valid.probs, valid.labels)
    scaled = apply_temperature(test.probs, t)
    return {
        "temperature": t,
        "ece_before": expected_calibration_error(test.probs, test.labels),
        "ece_after": expected_calibration_error(scaled, test.labels),
        "ece_before_ci95": ece_interval(test.probs, test.labels, n_resamples=n_resamples),
        "ece_after_ci95": ece_interval(scaled, test.labels, n_resamples=n_resamples),
        "ece_change_ci95": ece_interval(scaled, test.labels, n_resamples=n_resamples, versus=test.probs),
        "nll_before": nll(test.probs, test.labels),
        "nll_after": nll(scaled, test.labels),
        "curve_before": reliability_curve(test.probs, test.labels),
        "curve_after": reliability_curve(scaled, test.labels),
        "test_scaled": test.with_probs(scaled),
    }


def _lean(temperature: float) -> int:
    """+1 when the fitted temperature softens (T > 1 at two decimals), -1 when it sharpens, 0 at 1.00."""
    t = round(temperature, 2)
    return 1 if t > 1 else -1 if t < 1 else 0


def describe_temperature(temperature: float) -> str:
    """Which way a temperature fitted on validation (:func:`fit_temperature`) says the model
    leans: over-confident (T > 1, scaling softens its probabilities), under-confident (T < 1,
    scaling sharpens them) or neither (T = 1.00 at two decimals)."""
    lean = _lean(temperature)
    if lean > 0:
        return f"over-confident on validation (T = {temperature:.2f} > 1 softens its probabilities)"
    if lean < 0:
        return f"under-confident on validation (T = {temperature:.2f} < 1 sharpens its probabilities)"
    return f"neither over- nor under-confident on validation (T = {temperature:.2f})"


def describe_calibration(cal: dict[str, Any]) -> str:
    """One sentence reading :func:`calibration`: which way the fitted temperature pushed the
    probabilities, whether the test ECE went down or up, with its intervals, and whether
    the paired interval of the change excludes 0."""
    t = cal["temperature"]
    direction = {
        1: "softened (the model was over-confident on validation)",
        -1: "sharpened (the model was under-confident on validation)",
        0: "left the probabilities almost as they were",
    }[_lean(t)]
    before, after = cal["ece_before"], cal["ece_after"]
    (b_lo, b_hi), (a_lo, a_hi) = cal["ece_before_ci95"], cal["ece_after_ci95"]
    moved = "lowered" if after < before else "raised" if after > before else "left"
    # the same images before and after: a paired interval of the change, not overlapping intervals
    c_lo, c_hi = cal["ece_change_ci95"]
    change = f"the paired bootstrap interval of the change, [{c_lo:+.3f}, {c_hi:+.3f}], " + (
        "includes 0, so this test split cannot tell the change apart from noise" if c_lo <= 0 <= c_hi else "excludes 0"
    )
    return (
        f"T = {t:.2f} {direction}; it {moved} the test ECE from {before:.3f} [{b_lo:.3f}, {b_hi:.3f}] to "
        f"{after:.3f} [{a_lo:.3f}, {a_hi:.3f}] (bootstrap 95% intervals), and the test NLL from "
        f"{cal['nll_before']:.3f} to {cal['nll_after']:.3f}; {change}."
    )


def describe_temperature_effect(before: Predictions, after: Predictions) -> str:
    """One sentence on what temperature scaling (``after``, e.g. ``calibration()["test_scaled"]``)
    changed against ``before`` on the same images: predicted classes, accuracy, and the
    largest change of a one-vs-rest AUC (at four decimals, as a page prints them)."""
    changed = int((after.predicted != before.predicted).sum())
    acc_before, acc_after = float(before.correct.mean()), float(after.correct.mean())
    accuracy = (
        f"the accuracy stayed at {acc_before:.4f}"
        if acc_before == acc_after
        else f"the accuracy went from {acc_before:.4f} to {acc_after:.4f}"
    )
    auc_before = class_metrics(before.probs, before.labels, before.classes)
    auc_after = class_metrics(after.probs, after.labels, after.classes)
    moves = {
        c: auc_after[c]["auc"] - m["auc"]
        for c, m in auc_before.items()
        if math.isfinite(m["auc"]) and math.isfinite(auc_after[c]["auc"])
    }
    head = f"{changed} of {len(before)} predicted classes changed and {accuracy}"
    # a change counts when the two values differ as the page prints them (four decimals)
    printed = {c: abs(round(auc_after[c]["auc"], 4) - round(auc_before[c]["auc"], 4)) for c in moves}
    largest = max(moves, key=lambda c: (printed[c], abs(moves[c]))) if moves else None
    if largest is None or printed[largest] == 0:
        return f"{head}; no one-vs-rest AUC changed at four decimals."
    return (
        f"{head}; the one-vs-rest AUCs moved by at most {abs(moves[largest]):.4f} ({largest}: "
        f"{auc_before[largest]['auc']:.4f} -> {auc_after[largest]['auc']:.4f})."
    )


def top_confusions(metrics: dict[str, Any], k: int = 3) -> list[tuple[str, str, int]]:
    """The ``k`` most frequent errors of :func:`compute_metrics`' confusion matrix, as
    ``(true class, predicted class, count)``, most frequent first (ties in class order)."""
    cm = metrics["confusion_matrix"]
    errors = [
        (true, pred, count)
        for i, (true, row) in enumerate(zip(cm["labels"], cm["matrix"]))
        for j, (pred, count) in enumerate(zip(cm["labels"], row))
        if i != j and count > 0
    ]
    return sorted(errors, key=lambda e: -e[2])[:k]


def describe_confusions(metrics: dict[str, Any], k: int = 3) -> str:
    """One sentence naming the most frequent errors (:func:`top_confusions`)."""
    errors = top_confusions(metrics, k)
    total = metrics["n"] - int(np.trace(np.array(metrics["confusion_matrix"]["matrix"])))
    if not errors:
        return f"No test image of the {metrics['n']} is misclassified."
    listed = "; ".join(f"{count} {true} -> {pred}" for true, pred, count in errors)
    return f"{total} of {metrics['n']} test images are misclassified; the most frequent errors: {listed}."


def describe_class_pair(metrics: dict[str, Any], cls: str, other: str) -> str:
    """One sentence on two classes of :func:`compute_metrics`: the one-vs-rest AUC of ``cls``
    and the errors between the two, each way (e.g. Viral Pneumonia and Normal, where an age
    shortcut would show)."""
    per_class, cm = metrics["per_class"], metrics["confusion_matrix"]
    missing = [c for c in (cls, other) if c not in per_class]
    if missing:
        return f"No {' or '.join(missing)} image in this split: nothing to read about {cls} and {other}."
    i, j = cm["labels"].index(cls), cm["labels"].index(other)
    matrix = cm["matrix"]
    return (
        f"{cls}: one-vs-rest AUC {per_class[cls]['auc']:.3f}; {matrix[j][i]} of {per_class[other]['support']} "
        f"{other} test images called {cls}, and {matrix[i][j]} of {per_class[cls]['support']} {cls} images "
        f"called {other}."
    )


def read_confusion_pairs(pairs: Any) -> str:
    """Sentences reading a table of mistakes per ``(true, predicted)`` pair (columns
    ``count`` and ``mean``, the mean confidence), as chapter 6 builds it: the most frequent
    pair, the most confident pair, and the COVID films called Normal (missed patients)."""
    if len(pairs) == 0:
        return "No mistakes: no pair to investigate."

    def pair(key: Any) -> str:
        count = int(pairs.loc[key, "count"])
        return (
            f"{key[0]} -> {key[1]}, {count} mistake{'s' if count != 1 else ''} at mean confidence "
            f"{pairs.loc[key, 'mean']:.2f}"
        )

    frequent = pairs["count"].sort_values(ascending=False, kind="stable").index[0]
    confident = pairs["mean"].idxmax()
    text = f"Most frequent: {pair(frequent)}"
    text += (
        "; it is also the most confident pair."
        if tuple(confident) == tuple(frequent)
        else f"; most confident: {pair(confident)}."
    )
    missed = (COVID, "Normal")
    if missed in (tuple(frequent), tuple(confident)):
        text += " COVID films called Normal are missed patients."
    elif missed in pairs.index:
        count = int(pairs.loc[missed, "count"])
        text += (
            f" COVID films called Normal (missed patients): {count}, at mean confidence "
            f"{pairs.loc[missed, 'mean']:.2f}."
        )
    else:
        text += " No COVID film was called Normal."
    return text


def compute_metrics(pred: Predictions, *, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Every number of ``cxr evaluate --json`` for one set of predictions (``nan`` where
    undefined; see :func:`json_ready`).

    ``confusion_matrix`` is square over the classes present in the data plus any other
    class the model predicted (its row is then all zeros), so every image is counted.
    """
    present = pred.present
    probs, labels, classes = pred.probs, pred.labels, pred.classes
    predicted = pred.predicted
    per_class = class_metrics(probs, labels, classes)
    shown = sorted(set(present) | {int(c) for c in np.unique(predicted)})
    position = {c: k for k, c in enumerate(shown)}
    matrix = np.zeros((len(shown), len(shown)), dtype=np.int64)
    np.add.at(matrix, ([position[int(c)] for c in labels], [position[int(c)] for c in predicted]), 1)
    metrics: dict[str, Any] = {
        "n": int(len(labels)),
        "classes": [classes[c] for c in present],
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(np.mean([m["sensitivity"] for m in per_class.values()])),
        "macro_auc": macro_auc(probs, labels, present),
        "per_class": per_class,
        "confusion_matrix": {"labels": [classes[c] for c in shown], "matrix": matrix.tolist()},
    }
    # proportions get exact intervals; the AUC, which has no such formula, the bootstrap
    auc_ci = bootstrap_ci(
        probs, labels, classes, n_resamples=n_resamples, seed=seed, estimates={"macro_auc": metrics["macro_auc"]}
    )["macro_auc"]
    covid = per_class.get(COVID)
    metrics["ci95"] = {
        "accuracy": list(exact_interval(int((predicted == labels).sum()), len(labels))),
        "macro_auc": auc_ci,
        "covid_sensitivity": covid["sensitivity_ci95"] if covid else [float("nan"), float("nan")],
    }
    metrics["ci95_method"] = CI_METHODS
    metrics["ece"] = expected_calibration_error(probs, labels)
    return metrics


def per_class_table(metrics: dict[str, Any], digits: int = 3) -> Any:
    """The per-class metrics of :func:`compute_metrics` as a pandas table to show: sensitivity
    and specificity each with its exact 95 % interval (``0.950 [0.887, 0.984]``), precision,
    F1 and AUC rounded to ``digits``, and the number of images of the class."""
    rows = {
        name: {
            "sensitivity [95% CI]": with_interval(m["sensitivity"], m["sensitivity_ci95"], digits),
            "specificity [95% CI]": with_interval(m["specificity"], m["specificity_ci95"], digits),
            "precision": round(m["precision"], digits),
            "F1": round(m["f1"], digits),
            "AUC": round(m["auc"], digits),
            "images": int(m["support"]),
        }
        for name, m in metrics["per_class"].items()
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def describe_interval_widths(metrics: dict[str, Any], cls: str = COVID) -> str:
    """One sentence comparing the widths of the exact intervals of :func:`compute_metrics`:
    the accuracy (over every image), the sensitivity of ``cls`` (over its own images only)
    and its specificity (over the images of the other classes)."""
    per_class = metrics["per_class"]
    if cls not in per_class:
        return f"No {cls} image in this split: no sensitivity to compare with the accuracy."
    n, m = metrics["n"], per_class[cls]
    lo, hi = metrics["ci95"]["accuracy"]
    accuracy = hi - lo
    sens = m["sensitivity_ci95"][1] - m["sensitivity_ci95"][0]
    positives = m["support"]
    text = (
        f"Widths of the exact 95% intervals: accuracy {accuracy:.3f}, over all {n} images; {cls} sensitivity "
        f"{sens:.3f}, over its {positives} {cls} images ({sens / accuracy:.1f} times the accuracy's)"
    )
    others = n - positives
    if others == 0:
        return text + "."
    spec = m["specificity_ci95"][1] - m["specificity_ci95"][0]
    return (
        f"{text}; {cls} specificity {spec:.3f}, over the {others} images of the other classes "
        f"({spec / accuracy:.1f} times)."
    )


def describe_class_sizes(pred: Predictions) -> str:
    """How many images each class present has, in words: ``100 per class`` when they are
    equal, ``from 80 to 100 per class`` otherwise."""
    counts = np.bincount(pred.labels, minlength=len(pred.classes))[pred.present]
    if len(counts) == 0:
        return "no images"
    lo, hi = int(counts.min()), int(counts.max())
    return f"{lo:,} per class" if lo == hi else f"from {lo:,} to {hi:,} per class"


def json_ready(obj: Any) -> Any:
    """``obj`` with ``nan``/infinite floats as ``None`` and numpy scalars and arrays as
    Python values, so ``json.dumps`` writes valid JSON (``null``, never ``NaN``)."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def roc_curves(pred: Predictions) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """One-vs-rest ROC curve ``(fpr, tpr, auc)`` per class present (with at least one
    image of another class)."""
    out = {}
    for c in pred.present:
        y = pred.labels == c
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, pred.probs[:, c])
            out[pred.classes[c]] = (fpr, tpr, float(roc_auc_score(y, pred.probs[:, c])))
    return out
