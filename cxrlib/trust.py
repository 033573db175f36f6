"""Does the model look at the disease, or at something else? The experiments of chapter 7.

COVID-19 chest X-ray classifiers are known to learn the hospital, the age group or the text
markers instead of the disease: DeGrave et al. (2021) found near-perfect scores inside the
data and about 0.70 AUROC outside it; Maguolo and Nanni (2021) found classifiers that still
worked with the lungs blacked out. The functions here put numbers on the same questions
for any run of this book:

* :func:`region_runs` and :func:`region_table` -- the same recipe trained on the full
  image, with the lungs hidden and with only the lungs (``--region``), compared on one
  test split with exact intervals for proportions and a bootstrap for the AUC, and image by
  image with McNemar's test (:func:`region_pairs`);
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
#: :func:`read_blackout_shift` calls it a collapse when this share of all images goes to one class.
COLLAPSE_SHARE = 0.8


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
    class, with 95 % intervals (exact Clopper-Pearson for the proportions, a stratified
    bootstrap for the macro AUC), on ``split`` of each run's data. Columns: ``region``, ``measure``, ``estimate``, ``low``, ``high``, ``n``.

    The runs must share their data and split (the same recipe with another region does);
    the table refuses runs evaluated on different images, since their numbers would not
    be comparable.
    """
    import pandas as pd

    from .evaluate import bootstrap_ci, cached_predictions, class_metrics, macro_auc
    from .stats import exact_interval

    rows: list[dict[str, Any]] = []
    reference: tuple[str, list[str]] | None = None
    for region, run in runs.items():
        pred = cached_predictions(run, data_dir, split=split)
        if reference is None:
            reference = (pred.root, list(pred.paths))
        elif (pred.root, list(pred.paths)) != reference:
            raise CXRError(f"the {region} run was evaluated on other images than the first run; "
                           "train the variants with the same data, split and seed")  # fmt: skip
        # proportions get exact intervals (a bootstrap collapses to [1, 1] at 10 of 10);
        # the macro AUC, which has no such formula, a stratified bootstrap
        auc = macro_auc(pred.probs, pred.labels)
        auc_ci = bootstrap_ci(pred.probs, pred.labels, pred.classes, n_resamples=n_resamples, seed=seed,
                              estimates={"macro_auc": auc})["macro_auc"]  # fmt: skip
        measures = [("accuracy", float(pred.correct.mean()), exact_interval(int(pred.correct.sum()), len(pred))),
                    ("macro AUC", auc, auc_ci)]  # fmt: skip
        for cls, m in class_metrics(pred.probs, pred.labels, pred.classes).items():
            measures.append((f"sensitivity {cls}", m["sensitivity"], m["sensitivity_ci95"]))
        for name, value, (lo, hi) in measures:
            rows.append({"region": region, "measure": name, "estimate": value, "low": lo, "high": hi,
                         "n": len(pred)})  # fmt: skip
    return pd.DataFrame(rows)


def read_region_table(table: Any, chance: float) -> list[str]:
    """Sentences reading :func:`region_table`: each model's accuracy against ``chance``
    (above it only when the whole exact interval is), then, for the lungs-hidden model,
    which classes it still recognises (the lower end of the sensitivity's interval above
    chance) and which it does not."""
    out = []
    for region, rows in table.groupby("region", sort=False):
        acc = rows[rows["measure"] == "accuracy"].iloc[0]
        where = "above" if acc["low"] > chance else "not clearly above"
        out.append(f"{REGION_LABELS[region]}: accuracy {acc['estimate']:.2f} [{acc['low']:.2f}, {acc['high']:.2f}], "
                   f"{where} chance ({chance:.2f}).")  # fmt: skip
        if region != "hide-lungs":
            continue
        sens = rows[rows["measure"].str.startswith("sensitivity ")]
        kept = [f"{m.removeprefix('sensitivity ')} {e:.2f} [{lo:.2f}, {hi:.2f}]"
                for m, e, lo, hi in zip(sens["measure"], sens["estimate"], sens["low"], sens["high"]) if lo > chance]
        lost = [m.removeprefix("sensitivity ") for m, lo in zip(sens["measure"], sens["low"]) if lo <= chance]
        out.append("With the lungs hidden, still recognised above chance: " + (", ".join(kept) or "no class")
                   + "; not clearly above chance: " + (", ".join(lost) or "no class") + ".")  # fmt: skip
    return out


def region_pairs(runs: Mapping[str, str | os.PathLike[str]], data_dir: str | os.PathLike[str] | None = None, *,
                 split: str = "test") -> Any:  # fmt: skip
    """The full-image model against each other region's model on the same ``split``
    images, with McNemar's exact test (:func:`cxrlib.stats.mcnemar`): one row per region,
    with the images only one of the two got right, the p-value and a sentence."""
    import pandas as pd

    from .evaluate import cached_predictions
    from .stats import describe_paired, mcnemar

    if "full" not in runs:
        raise CXRError("region_pairs needs the full-image run (key 'full')")
    full = cached_predictions(runs["full"], data_dir, split=split)
    rows = []
    for region, run in runs.items():
        if region == "full":
            continue
        other = cached_predictions(run, data_dir, split=split)
        if list(other.paths) != list(full.paths):
            raise CXRError(f"the {region} run was evaluated on other images than the full-image run")
        test = mcnemar(full.correct, other.correct)
        rows.append({"against": REGION_LABELS[region], "accuracy, full image": float(full.correct.mean()),
                     "accuracy, other": float(other.correct.mean()), "only full image right": test["a_only"],
                     "only the other right": test["b_only"], "McNemar p": test["p"],
                     "reading": describe_paired(REGION_LABELS["full"], REGION_LABELS[region], test)})  # fmt: skip
    return pd.DataFrame(rows).set_index("against")


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


#: A ResNet's last feature map has one cell per 32 input pixels; below this many cells a
#: side, a map cannot say where inside the lungs the evidence lies.
MIN_MAP_CELLS = 4


def read_inside(result: CamInside, by_class: Any) -> list[str]:
    """Sentences reading :func:`inside_by_class`: how coarse the maps are (and, below
    :data:`MIN_MAP_CELLS` cells a side, that no conclusion is drawn from them), then which
    classes' maps lie inside the region less than a uniform map would."""
    size = int(result.images.shape[-1])
    cells = max(1, size // 32)
    out = [f"The maps have {cells} x {cells} cells (one per 32 pixels of the {size}-px input); a uniform map "
           f"puts {result.area:.0%} of its energy inside the {result.region_label}."]  # fmt: skip
    if cells < MIN_MAP_CELLS:
        out.append(f"With fewer than {MIN_MAP_CELLS} cells a side, each cell covers much of the region and of its "
                   "surroundings at once: these shares describe the grid, not what the model looks at, and no "
                   "conclusion is drawn from them here.")  # fmt: skip
        return out
    below = [f"{c} ({row['mean inside']:.2f} [{row['low']:.2f}, {row['high']:.2f}])"
             for c, row in by_class.iterrows() if row["high"] < result.area]  # fmt: skip
    above = [c for c, row in by_class.iterrows() if row["low"] > result.area]
    out.append("Mean inside share below the uniform map's, whole interval: " + (", ".join(below) or "no class")
               + "; above it: " + (", ".join(above) or "no class") + ".")  # fmt: skip
    return out


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


def read_blackout_shift(shift: Any, region: str = "lungs-only") -> list[str]:
    """One sentence per true class reading :func:`blackout_shift`: the share still given
    its true class before and after the blackout, and where the largest share went."""
    out = []
    change = "the surround blacked out" if region == "lungs-only" else "the lungs blacked out"
    for cls in shift.loc["before"].index:
        before, after = shift.loc[("before", cls)], shift.loc[("after", cls)]
        top = after.drop(labels=[cls]).astype(float)
        went = f"; the most went to {top.idxmax()} ({top.max():.0%})" if top.max() > 0 else ""
        out.append(f"{cls}: {before[cls]:.0%} predicted as {cls} before, {after[cls]:.0%} with {change}{went}.")
    # the share of all images (the classes weigh as in the split) given each class afterwards
    after_all = shift.loc["after"].astype(float).mean(axis=0)
    top = str(after_all.idxmax())
    if after_all[top] >= COLLAPSE_SHARE:
        why = (" Lung_Opacity is the class whose films are segmented in the sample (experiment 3): to this model, "
               "black regions mean Lung_Opacity." if top == "Lung_Opacity" else "")  # fmt: skip
        out.append(f"A collapse: {after_all[top]:.0%} of all images become {top} with {change}.{why}")
    return out


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
