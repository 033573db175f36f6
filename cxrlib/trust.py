"""Does the model look at the disease, or at something else? The experiments of chapter 7.

COVID-19 chest X-ray classifiers are known to learn the hospital, the age group or the text
markers instead of the disease: DeGrave et al. (2021) found near-perfect scores inside the
data and about 0.70 AUROC outside it; Maguolo and Nanni (2021) found classifiers that still
worked with the lungs blacked out. The functions here put numbers on the same questions
for any run of this book:

* :func:`region_runs` and :func:`region_table` -- the same recipe trained on the full
  image, with the lungs hidden and with only the lungs (``--region``), compared on one
  test split with stratified bootstrap intervals;
* :func:`cam_inside` -- the share of each Grad-CAM map inside the lung region, per class
  (:func:`inside_by_class`);
* :func:`dark_share` and :func:`background_rule` -- a one-number rule ("how much of the
  image outside the chest is black?") that needs no network at all;
* :func:`blackout_shift` -- what a trained model says about the same images once
  everything outside the lung region is blacked out;
* :func:`naive_split_leakage` -- how many near-duplicate groups a split that ignores them
  would spread over training and test.

The lung region is the data's masks when it has them, otherwise the central-chest box
(:data:`cxrlib.data.CHEST_BOX`); every result says which one it used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import CXRError
from .data import SPLITS, CXRData, central_chest_box
from .transforms import REGION_LABELS, REGIONS, apply_region

#: A pixel at or below this value (0..255) counts as black in :func:`dark_share`.
DARK_LEVEL = 10


# --------------------------------------------------------------------------- experiment 1


def region_runs(
    config: Any,
    name: str,
    *,
    regions: Iterable[str] = REGIONS,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Train (or reuse) ``config`` once per region, as runs ``<name>-<region>`` under
    :func:`cxrlib.config.runs_dir` (see :func:`cxrlib.train.ensure_run`)."""
    from .train import ensure_run

    out = {}
    for region in regions:
        if region not in REGIONS:
            raise CXRError(f"unknown region {region!r}; choose from {', '.join(REGIONS)}")
        out[region] = ensure_run(replace(config, region=region), f"{name}-{region}", data_dir=data_dir,
                                 progress=progress, log=log)  # fmt: skip
    return out


def region_table(
    runs: Mapping[str, str | os.PathLike[str]],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    n_resamples: int = 1000,
    seed: int = 0,
) -> Any:
    """One row per (region, measure): accuracy, macro AUC and the sensitivity of each
    class, with stratified percentile-bootstrap 95 % intervals, on ``split`` of each run's
    data. Columns: ``region``, ``measure``, ``estimate``, ``low``, ``high``, ``n``.

    The runs must share their data and split (the same recipe with another region does);
    the table refuses runs evaluated on different images, since their numbers would not
    be comparable.
    """
    import pandas as pd

    from .evaluate import bootstrap_ci, cached_predictions, class_metrics, macro_auc

    rows: list[dict[str, Any]] = []
    reference: tuple[str, list[str]] | None = None
    for region, run in runs.items():
        pred = cached_predictions(run, data_dir, split=split)
        if reference is None:
            reference = (pred.root, list(pred.paths))
        elif (pred.root, list(pred.paths)) != reference:
            raise CXRError(f"the {region} run was evaluated on other images than the first run; "
                           "train the variants with the same data, split and seed")  # fmt: skip
        # the names of bootstrap_ci, and how the table calls them
        estimates = {"accuracy": float(pred.correct.mean()), "macro_auc": macro_auc(pred.probs, pred.labels)}
        names = {"accuracy": "accuracy", "macro_auc": "macro AUC"}
        for cls, m in class_metrics(pred.probs, pred.labels, pred.classes).items():
            estimates[f"sensitivity:{cls}"] = m["sensitivity"]
            names[f"sensitivity:{cls}"] = f"sensitivity {cls}"
        # intervals widened to their estimates by bootstrap_ci itself
        ci = bootstrap_ci(pred.probs, pred.labels, pred.classes, n_resamples=n_resamples, seed=seed,
                          estimates=estimates, per_class=True)  # fmt: skip
        for key, value in estimates.items():
            lo, hi = ci[key]
            rows.append({"region": region, "measure": names[key], "estimate": value, "low": lo, "high": hi,
                         "n": len(pred)})  # fmt: skip
    return pd.DataFrame(rows)


def wide_table(table: Any, digits: int = 2) -> Any:
    """:func:`region_table` as measures x regions, each cell ``0.91 [0.88, 0.94]``."""
    cells = table.assign(cell=[f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
                               for e, lo, hi in zip(table["estimate"], table["low"], table["high"])])  # fmt: skip
    wide = cells.pivot(index="measure", columns="region", values="cell")
    order = list(dict.fromkeys(table["measure"]))
    wide = wide.loc[order, [r for r in REGIONS if r in wide.columns]]
    wide.columns = [REGION_LABELS[r] for r in wide.columns]
    wide.columns.name = None
    return wide


# --------------------------------------------------------------------------- experiment 2


@dataclass
class CamInside:
    """Grad-CAM maps of a split and the share of each map inside the lung region."""

    frame: Any  # pandas: path, true, predicted, confidence, correct, p_<class>..., inside
    cams: np.ndarray  # (n, size, size) in 0..1
    images: np.ndarray  # (n, size, size) uint8, as the model saw them
    regions: np.ndarray  # (n, size, size) bool
    source: str  # "masks" or "chest box"

    @property
    def region_label(self) -> str:
        """The lung region in words, for titles and axis labels."""
        return "lung masks" if self.source == "masks" else "central-chest box"

    @property
    def area(self) -> float:
        """Share of the image the lung region covers: the inside share of a uniform map."""
        return float(self.regions.mean())

    def most_outside(self, n: int = 8, *, true: str | None = None) -> list[int]:
        """Indices of the ``n`` maps with the smallest inside share (optionally of one class)."""
        frame = self.frame if true is None else self.frame[self.frame["true"] == true]
        return [int(i) for i in frame["inside"].sort_values(kind="stable").index[:n]]


def lung_regions_for(root: str | os.PathLike[str], paths: Sequence[str], size: int) -> tuple[np.ndarray, str]:
    """The lung region of each image ``(n, size, size)``: its mask (``<Class>/masks/``)
    when every image has one, else the central-chest box; and which of the two it is."""
    from .explain import lung_masks_for, lung_region

    masks = lung_masks_for(root, paths, size)
    return lung_region(masks, len(paths), size), "masks" if masks is not None else "chest box"


def cam_inside(
    run: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    method: str = "gradcam",
    target: str = "predicted",
    batch_size: int = 32,
) -> CamInside:
    """CAMs of every image of ``split`` (for the predicted or the true class) and the share
    of each map's energy inside the lung region."""
    from .evaluate import cached_predictions, model_input
    from .explain import cam_inside_fraction, compute_cams
    from .train import load_model

    if target not in ("predicted", "true"):
        raise CXRError(f"target must be predicted or true, not {target!r}")
    pred = cached_predictions(run, data_dir, split=split)
    assert pred.images is not None
    loaded = load_model(run)
    targets = pred.predicted if target == "predicted" else pred.labels
    cams = compute_cams(loaded.model, model_input(loaded, pred.images), targets.tolist(), method, batch_size)
    regions, source = lung_regions_for(pred.root, pred.paths, pred.images.shape[-1])
    frame = pred.to_frame().assign(inside=cam_inside_fraction(cams, regions))
    return CamInside(frame, cams, pred.images, np.asarray(regions), source)


def inside_by_class(result: CamInside, *, n_resamples: int = 1000, seed: int = 0) -> Any:
    """Per true class: mean and median inside share, a percentile-bootstrap 95 % interval
    of the mean, the share of maps inside less than a uniform map would be, and ``n``."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for cls, values in result.frame.groupby("true", sort=False)["inside"]:
        v = values.dropna().to_numpy()
        if len(v) == 0:
            continue
        means = v[rng.integers(0, len(v), size=(n_resamples, len(v)))].mean(axis=1)
        lo, hi = np.quantile(means, [0.025, 0.975])
        rows.append({"class": cls, "mean inside": v.mean(), "low": min(lo, v.mean()), "high": max(hi, v.mean()),
                     "median": float(np.median(v)), "below uniform": float((v < result.area).mean()),
                     "n": len(v)})  # fmt: skip
    return pd.DataFrame(rows).set_index("class")


# --------------------------------------------------------------------------- experiment 3


def dark_share(images: np.ndarray, region: np.ndarray | None = None, *, level: int = DARK_LEVEL) -> np.ndarray:
    """Share of pixels at or below ``level`` per image, counted *outside* ``region``
    (boolean, one per image or one for all) when given."""
    images = np.asarray(images)
    dark = images <= level
    if region is None:
        return dark.mean(axis=(-2, -1))
    outside = ~np.broadcast_to(np.asarray(region, dtype=bool), images.shape)
    return (dark & outside).sum(axis=(-2, -1)) / np.maximum(outside.sum(axis=(-2, -1)), 1)


@dataclass
class BackgroundRule:
    """A one-feature classifier: "is at least ``threshold`` of the image outside the chest
    box black?" for one class against the rest, with its threshold fitted on ``train``."""

    target: str
    threshold: float
    train_auc: float
    test_auc: float
    test_sensitivity: float
    test_specificity: float
    frame: Any  # pandas: class, split, dark share


def background_rule(data: CXRData, target: str = "Lung_Opacity", *, size: int = 64,
                    fit_split: str = "train", test_split: str = "test") -> BackgroundRule:  # fmt: skip
    """Fit :class:`BackgroundRule` for ``target`` on ``fit_split`` and measure it on
    ``test_split``. The feature is :func:`dark_share` outside the central-chest box: it
    reads no pixel of the lungs."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score, roc_curve

    if target not in data.classes:
        raise CXRError(f"no class {target!r} in the data (classes: {', '.join(data.classes)})")
    for s in (fit_split, test_split):
        if s not in SPLITS:
            raise CXRError(f"unknown split {s!r}; choose from {', '.join(SPLITS)}")
    pixels = data.pixels(size, progress=False)
    share = dark_share(pixels, central_chest_box(size))
    labels = np.array([r.label for r in data.records])
    assignment = np.array(data.split.assignment)
    fit, test = assignment == fit_split, assignment == test_split
    y_fit, y_test = labels[fit] == target, labels[test] == target
    if y_fit.all() or not y_fit.any() or y_test.all() or not y_test.any():
        raise CXRError(f"both {target} and other images are needed in the {fit_split} and {test_split} splits")
    fpr, tpr, thresholds = roc_curve(y_fit, share[fit])
    best = int(np.argmax(tpr - fpr))  # Youden's J on the fitting split only
    threshold = float(min(thresholds[best], 1.0))
    below = share[fit][share[fit] < threshold]
    if len(below):  # halfway to the next score down: a margin on both sides, as a human would draw it
        threshold = (threshold + float(below.max())) / 2
    flagged = share[test] >= threshold
    frame = pd.DataFrame({"class": labels, "split": assignment, "dark share": share})
    return BackgroundRule(target, threshold, float(roc_auc_score(y_fit, share[fit])),
                          float(roc_auc_score(y_test, share[test])), float(flagged[y_test].mean()),
                          float((~flagged[~y_test]).mean()), frame)  # fmt: skip


def blackout_shift(run: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, *,
                   split: str = "test", region: str = "lungs-only") -> Any:  # fmt: skip
    """How a model trained on ``full`` images changes its mind when, in the same test
    images, everything outside the lung region is blacked out (``lungs-only``) or the lung
    region is (``hide-lungs``): a table of true class x predicted class shares, before
    and after."""
    import pandas as pd

    from .evaluate import cached_predictions, predict_images
    from .train import load_model

    if region == "full" or region not in REGIONS:
        raise CXRError(f"region must be hide-lungs or lungs-only, not {region!r}")
    pred = cached_predictions(run, data_dir, split=split)
    assert pred.images is not None
    loaded = load_model(run)
    if loaded.preprocessing.region != "full":
        raise CXRError("blackout_shift needs a model trained on full images")
    regions, _ = lung_regions_for(pred.root, pred.paths, pred.images.shape[-1])
    after = predict_images(loaded, apply_region(np.asarray(pred.images), regions, region)).argmax(axis=1)
    true = [pred.classes[i] for i in pred.labels]
    frames = []
    for when, predicted in (("before", pred.predicted), ("after", after)):
        f = pd.crosstab(pd.Series(true, name="true"), pd.Series([pred.classes[i] for i in predicted], name="predicted"),
                        normalize="index")  # fmt: skip
        frames.append(f.reindex(columns=pred.classes, fill_value=0.0).assign(when=when))
    return pd.concat(frames).reset_index().set_index(["when", "true"]).loc[["before", "after"]]


# --------------------------------------------------------------------------- experiment 5


def naive_split_leakage(data: CXRData, *, seeds: Iterable[int] = range(20)) -> dict[str, Any]:
    """How many near-duplicate groups a random split *that ignores them* (same split
    sizes, seeded) spreads over more than one split, against the book's grouped split.

    Returns ``groups``, ``images`` (in groups), ``grouped_split`` (groups spread by the
    book's split: 0 by construction), and ``naive_mean``, ``naive_min``, ``naive_max``
    over the seeds.
    """
    groups = data.split.groups
    assignment = np.array(data.split.assignment)
    spread = [len({assignment[i] for i in g}) > 1 for g in groups]
    counts = []
    for seed in seeds:
        shuffled = np.random.default_rng(seed).permutation(assignment)
        counts.append(sum(len({shuffled[i] for i in g}) > 1 for g in groups))
    counts_arr = np.array(counts or [0])
    return {"groups": len(groups), "images": sum(len(g) for g in groups), "grouped_split": int(sum(spread)),
            "naive_mean": float(counts_arr.mean()), "naive_min": int(counts_arr.min()),
            "naive_max": int(counts_arr.max())}  # fmt: skip
