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
(:data:`cxrlib.regions.CHEST_BOX`); every result says which one it used
(:func:`describe_region_source`). Each experiment has a ``read_*`` or ``describe_*``
function that turns its numbers into sentences, so a chapter never types a result.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from .checkpoint import load_model, model_input, predict_images
from .config import CXRError
from .data import SPLITS, CXRData
from .evaluate import cached_predictions
from .explain import cam_inside_fraction, compute_cams
from .metrics import bootstrap_ci, class_metrics, macro_auc
from .regions import (
    CHEST_BOX,
    REGION_LABELS,
    REGIONS,
    apply_region,
    central_chest_box,
    dark_share,
    lung_regions_for,
)
from .runs import describe_outcome, ensure_run
from .stats import describe_paired, exact_interval, format_p, mcnemar, with_interval

if TYPE_CHECKING:
    from .recipe import TrainConfig

#: :func:`read_blackout_shift` calls it a collapse when this share of all images goes to one class.
COLLAPSE_SHARE = 0.8
#: :func:`read_blackout_shift`: the blackout "pulls" the other classes towards a class when
#: the share of their images given that class rises by at least this much (and "pushes" them
#: away when it falls by as much).
PULL_SHARE = 0.10
#: :func:`read_inside_vs_blackout`: a class "depends on the surround" when blacking it out
#: leaves at most this fraction of the images it got right before.
KEPT_FRACTION = 0.5
#: :func:`read_region_pairs`: without a significant difference, two models whose numbers of
#: test images right are at most this many apart predict "about as well" as each other.
CLOSE_IMAGES = 2
#: A test AUC at or above this separates a class from the rest (:attr:`BackgroundRule.separates`).
SEPARATED_AUC = 0.9
#: :func:`read_background_rules`: an AUC within this distance of 0.5 reads as "about 0.5".
AUC_MARGIN = 0.05


def _classes_or_none(names: Iterable[str]) -> str:
    """Class names (or readings) joined for a sentence, or "no class" when there are none."""
    return ", ".join(names) or "no class"


def describe_region_source(source: str) -> str:
    """What the lung region of a run is (``source``: ``masks`` or ``chest box``, as
    :attr:`cxrlib.data.CXRData.region_source` says), as a sentence for a page to print."""
    if source == "masks":
        return "The lung region is the database's own lung masks, one per image."
    if source == "chest box":
        top, bottom, left, right = (round(100 * f) for f in CHEST_BOX)
        return (
            f"The lung region is the central-chest box (rows {top}-{bottom} %, columns {left}-{right} %): "
            "this data folder has no lung masks."
        )
    raise CXRError(f"unknown lung region source {source!r}; choose masks or chest box")


def region_source_caveat(source: str) -> str:
    """What the lung region of ``source`` means for the region experiments, as a sentence."""
    if source == "masks":
        return (
            'This run uses the database\'s lung masks: "lungs hidden" blacks out the lung fields only, and '
            "the heart and the mediastinum stay visible; a mask can still miss the edges of a lung."
        )
    if source == "chest box":
        return (
            'This run uses the central-chest box instead of masks: "lungs hidden" also hides the heart and '
            'the mediastinum, and "lungs only" still shows them and, on a segmented image, the black '
            "surroundings inside the box. The experiment is cleaner with the database's masks."
        )
    raise CXRError(f"unknown lung region source {source!r}; choose masks or chest box")


def region_name(source: str) -> str:
    """The lung region of ``source`` as a noun phrase: "the lung masks" or "the central-chest box"."""
    return "the lung masks" if source == "masks" else "the central-chest box"


def describe_split(data: CXRData) -> str:
    """The split the chapters' models use, in words, for a model card: "1,748 training
    images (COVID 500, ...), 400 validation images (100 per class) and 400 test images (100
    per class)", preceded in fast mode by the size of the fast subset."""
    labels = np.array([r.label for r in data.records])
    assignment = np.array(data.split.assignment)
    parts = []
    for split, name in (("train", "training"), ("valid", "validation"), ("test", "test")):
        counts = [int(((assignment == split) & (labels == c)).sum()) for c in data.classes]
        per_class = (
            f"{counts[0]:,} per class"
            if len(set(counts)) == 1
            else ", ".join(f"{c} {n:,}" for c, n in zip(data.classes, counts))
        )
        parts.append(f"{sum(counts):,} {name} images ({per_class})")
    text = f"{parts[0]}, {parts[1]} and {parts[2]}"
    return f"a fast-mode subset of {len(labels):,} images: {text}" if data.settings.fast else text


def describe_recipe(config: TrainConfig) -> str:
    """The recipe that trained a build's model, in words, for a model card to glue next to
    its description of the ``cpu`` recipe (plain text, no markup), e.g. "the fast recipe:
    resnet18, 64-px images, 2 passes over the training split, no moving average of the
    weights, no class offsets"."""
    average = (
        "an exponential moving average of the weights"
        if config.ema_decay is not None
        else "no moving average of the weights"
    )
    offsets = "one offset per class fitted on the validation split" if config.class_offsets else "no class offsets"
    return (
        f"the {config.preset} recipe: {config.arch}, {config.size_phrase()}, {config.budget_phrase()}, "
        f"{average}, {offsets}"
    )


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
    """Train (or reuse) ``config`` once per region, as runs :func:`region_run_name` under
    :func:`cxrlib.config.runs_dir` (see :func:`cxrlib.runs.ensure_run`)."""
    out = {}
    for region in regions:
        if region not in REGIONS:
            raise CXRError(f"unknown region {region!r}; choose from {', '.join(REGIONS)}")
        out[region] = ensure_run(
            replace(config, region=region), region_run_name(name, region), data_dir=data_dir, progress=progress, log=log
        )
    return out


def region_run_name(name: str, region: str) -> str:
    """The folder name of ``name``'s run for one region: ``<name>-<region>``."""
    return f"{name}-{region}"


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
    rows: list[dict[str, Any]] = []
    reference: tuple[str, list[str]] | None = None
    for region, run in runs.items():
        pred = cached_predictions(run, data_dir, split=split)
        if reference is None:
            reference = (pred.root, list(pred.paths))
        elif (pred.root, list(pred.paths)) != reference:
            raise CXRError(
                f"the {region} run was evaluated on other images than the first run; "
                "train the variants with the same data, split and seed"
            )
        # proportions get exact intervals (a bootstrap collapses to [1, 1] at 10 of 10);
        # the macro AUC, which has no such formula, a stratified bootstrap
        auc = macro_auc(pred.probs, pred.labels)
        auc_ci = bootstrap_ci(
            pred.probs, pred.labels, pred.classes, n_resamples=n_resamples, seed=seed, estimates={"macro_auc": auc}
        )["macro_auc"]
        measures = [
            ("accuracy", float(pred.correct.mean()), exact_interval(int(pred.correct.sum()), len(pred))),
            ("macro AUC", auc, auc_ci),
        ]
        for cls, m in class_metrics(pred.probs, pred.labels, pred.classes).items():
            measures.append((f"sensitivity {cls}", m["sensitivity"], m["sensitivity_ci95"]))
        for name, value, (lo, hi) in measures:
            rows.append({"region": region, "measure": name, "estimate": value, "low": lo, "high": hi, "n": len(pred)})
    return pd.DataFrame(rows)


def read_region_table(table: Any, chance: float) -> list[str]:
    """Sentences reading :func:`region_table`: each model's accuracy against ``chance``
    (above it only when the whole exact interval is), then, for the lungs-hidden model,
    which classes it still recognises (the lower end of the sensitivity's interval above
    chance) and which it does not, and how each class's sensitivity changed from the
    full-image model (largest loss first)."""
    out = []
    full = table[table["region"] == "full"].set_index("measure")["estimate"]
    for region, rows in table.groupby("region", sort=False):
        acc = rows[rows["measure"] == "accuracy"].iloc[0]
        where = "above" if acc["low"] > chance else "not clearly above"
        out.append(
            f"{REGION_LABELS[region]}: accuracy {acc['estimate']:.2f} [{acc['low']:.2f}, {acc['high']:.2f}], "
            f"{where} chance ({chance:.2f})."
        )
        if region != "hide-lungs":
            continue
        sens = rows[rows["measure"].str.startswith("sensitivity ")]
        kept = [
            f"{m.removeprefix('sensitivity ')} {e:.2f} [{lo:.2f}, {hi:.2f}]"
            for m, e, lo, hi in zip(sens["measure"], sens["estimate"], sens["low"], sens["high"])
            if lo > chance
        ]
        lost = [m.removeprefix("sensitivity ") for m, lo in zip(sens["measure"], sens["low"]) if lo <= chance]
        out.append(
            "With the lungs hidden, still recognised above chance: "
            + _classes_or_none(kept)
            + "; not clearly above chance: "
            + _classes_or_none(lost)
            + "."
        )
        changes = sorted(
            (
                (full[m] - e, m.removeprefix("sensitivity "), full[m], e)
                for m, e in zip(sens["measure"], sens["estimate"])
                if m in full.index
            ),
            key=lambda change: -change[0],
        )
        if changes:
            out.append(
                "Sensitivity from the full image to lungs hidden, largest loss first: "
                + ", ".join(f"{cls} {a:.2f} -> {b:.2f} ({b - a:+.2f})" for _, cls, a, b in changes)
                + "."
            )
    return out


def region_pairs(
    runs: Mapping[str, str | os.PathLike[str]], data_dir: str | os.PathLike[str] | None = None, *, split: str = "test"
) -> Any:
    """The full-image model against each other region's model on the same ``split``
    images, with McNemar's exact test (:func:`cxrlib.stats.mcnemar`): one row per region,
    with the images only one of the two got right, the p-value and a sentence."""
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
        rows.append(
            {
                "against": REGION_LABELS[region],
                "images": len(full),
                "accuracy, full image": float(full.correct.mean()),
                "accuracy, other": float(other.correct.mean()),
                "only full image right": test["a_only"],
                "only the other right": test["b_only"],
                "McNemar p": test["p"],
                "reading": describe_paired(REGION_LABELS["full"], REGION_LABELS[region], test),
            }
        )
    return pd.DataFrame(rows).set_index("against")


def read_region_pairs(pairs: Any, alpha: float = 0.05, *, region: str = "the lung region") -> list[str]:
    """One sentence per row of :func:`region_pairs`: McNemar's reading (the same ``alpha``
    as :func:`cxrlib.stats.describe_paired`), then what it means for that variant: blacking
    out part of the image cost accuracy or helped (a significant difference); predicts about
    as well as the whole image (no significant difference, and the two models' numbers of
    images right at most :data:`CLOSE_IMAGES` apart); or, not significant but farther apart,
    which model got more images right, by how many, and that this many images cannot tell
    the difference from chance. ``region`` names the lung region (:func:`region_name`)."""
    out = []
    for against, row in pairs.iterrows():
        full_only, other_only = int(row["only full image right"]), int(row["only the other right"])
        n = int(row["images"])
        hidden = against == REGION_LABELS["hide-lungs"]
        differ = full_only + other_only > 0 and float(row["McNemar p"]) < alpha
        if differ and full_only > other_only:
            meaning = (
                f"Hiding {region} costs accuracy: it carries class information that the rest of the image "
                "does not replace."
                if hidden
                else f"Blacking out everything outside {region} costs accuracy: the surround adds class "
                "information (which does not say which of the two the full model uses)."
            )
        elif differ:
            meaning = (
                f"The {against} model is the more accurate one: blacking out part of the image helped, so the "
                "full-image model does not make the most of what it sees (it may be undertrained, or the "
                "blacked-out part misleads it)."
            )
        elif abs(other_only - full_only) <= CLOSE_IMAGES:
            part = f"the image without {region}" if hidden else f"{region} alone"
            meaning = (
                f"On these {n} test images, {part} predicts the class about as well as the whole image (a "
                "small difference would go unnoticed)"
                + ("." if hidden else "; this does not say that the full model uses the lungs.")
            )
        else:
            other_ahead = other_only > full_only
            ahead = f"the {against} model" if other_ahead else "the full-image model"
            accuracies = (float(row["accuracy, other"]), float(row["accuracy, full image"]))
            high, low = accuracies if other_ahead else accuracies[::-1]
            meaning = (
                f"{ahead[0].upper()}{ahead[1:]} got {abs(other_only - full_only)} more of these {n} test "
                f"images right (accuracy {high:.2f} against {low:.2f}), but with this many images a "
                f"difference of this size cannot be told from chance (McNemar {format_p(float(row['McNemar p']))})"
                + ("; this does not say that the full model uses the lungs." if other_ahead and not hidden else ".")
            )
        out.append(f"Full image vs {against}: {row['reading']} {meaning}")
    return out


def format_measure(table: Any, region: str, measure: str, digits: int = 2) -> str:
    """One cell of :func:`region_table` as text, ``0.81 [0.72, 0.88]``, for a page to glue;
    "not measured" when the table has no such region or measure (a data folder without
    that class)."""
    row = table[(table["region"] == region) & (table["measure"] == measure)]
    if row.empty:
        return "not measured"
    estimate, low, high = (float(row.iloc[0][k]) for k in ("estimate", "low", "high"))
    return with_interval(estimate, (low, high), digits)


def describe_region_runs(runs: Mapping[str, str | os.PathLike[str]]) -> list[str]:
    """How each trained region variant ended and how long it trained
    (:func:`cxrlib.runs.describe_outcome`), one sentence per run but the full image."""
    return [f"{REGION_LABELS[region]}: {describe_outcome(run)}" for region, run in runs.items() if region != "full"]


def wide_table(table: Any, digits: int = 2, auc_digits: int = 3) -> Any:
    """:func:`region_table` as measures x regions, each cell ``0.91 [0.88, 0.94]``; AUCs
    with ``auc_digits`` (``0.996 [0.993, 0.999]``: at 2 digits it would read as a perfect
    1.00)."""
    cells = table.assign(
        cell=[
            with_interval(e, (lo, hi), auc_digits if "AUC" in m else digits)
            for m, e, lo, hi in zip(table["measure"], table["estimate"], table["low"], table["high"])
        ]
    )
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

    @property
    def map_cells(self) -> int:
        """Cells a side of the maps: a ResNet's last feature map has one per 32 input pixels."""
        return max(1, int(self.images.shape[-1]) // 32)

    @property
    def map_grid(self) -> str:
        """The maps' resolution in words, e.g. "5 x 5 cells for a 160-px input"."""
        return f"{self.map_cells} x {self.map_cells} cells for a {int(self.images.shape[-1])}-px input"

    def most_outside(self, n: int = 8, *, true: str | None = None) -> list[int]:
        """Indices of the ``n`` maps with the smallest inside share (optionally of one class)."""
        frame = self.frame if true is None else self.frame[self.frame["true"] == true]
        return [int(i) for i in frame["inside"].sort_values(kind="stable").index[:n]]


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
    rng = np.random.default_rng(seed)
    rows = []
    for cls, values in result.frame.groupby("true", sort=False)["inside"]:
        v = values.dropna().to_numpy()
        if len(v) == 0:
            continue
        means = v[rng.integers(0, len(v), size=(n_resamples, len(v)))].mean(axis=1)
        lo, hi = np.quantile(means, [0.025, 0.975])
        rows.append(
            {
                "class": cls,
                "mean inside": v.mean(),
                "low": min(lo, v.mean()),
                "high": max(hi, v.mean()),
                "median": float(np.median(v)),
                "below uniform": float((v < result.area).mean()),
                "n": len(v),
            }
        )
    return pd.DataFrame(rows).set_index("class")


#: A ResNet's last feature map has one cell per 32 input pixels; below this many cells a
#: side, a map cannot say where inside the lungs the evidence lies.
MIN_MAP_CELLS = 4


def read_inside(result: CamInside, by_class: Any) -> list[str]:
    """Sentences reading :func:`inside_by_class`: how coarse the maps are (and, below
    :data:`MIN_MAP_CELLS` cells a side, that no conclusion is drawn from them), then which
    classes' maps lie inside the region less than a uniform map would, and how many maps
    of all classes do."""
    size = int(result.images.shape[-1])
    cells = result.map_cells
    out = [
        f"The maps have {cells} x {cells} cells (one per 32 pixels of the {size}-px input); a uniform map "
        f"puts {result.area:.0%} of its energy inside the {result.region_label}."
    ]
    if cells < MIN_MAP_CELLS:
        out.append(
            f"With fewer than {MIN_MAP_CELLS} cells a side, each cell covers much of the region and of its "
            "surroundings at once: these shares describe the grid, not what the model looks at, and no "
            "conclusion is drawn from them here."
        )
        return out
    below = [
        f"{c} ({row['mean inside']:.2f} [{row['low']:.2f}, {row['high']:.2f}])"
        for c, row in by_class.iterrows()
        if row["high"] < result.area
    ]
    above = [c for c, row in by_class.iterrows() if row["low"] > result.area]
    out.append(
        "Mean inside share below the uniform map's, whole interval: "
        + _classes_or_none(below)
        + "; above it: "
        + _classes_or_none(above)
        + "."
    )
    inside = result.frame["inside"].dropna()
    n_below = int((inside < result.area).sum())
    out.append(
        f"{n_below} of {len(inside)} maps ({n_below / max(len(inside), 1):.1%}) put less of their energy inside "
        "than a uniform map would."
    )
    return out


def read_inside_vs_blackout(result: CamInside, by_class: Any, shift: Any) -> list[str]:
    """Compare experiment 2 with the blackout of experiment 3: the classes whose maps lie
    inside the lung region (the whole interval of the mean above the uniform share) yet
    that keep at most :data:`KEPT_FRACTION` of their correct answers once everything
    outside the region is blacked out (:func:`blackout_shift` with ``lungs-only``). Such a
    class shows that an inside share can miss a shortcut. Maps under
    :data:`MIN_MAP_CELLS` cells a side are too coarse for the comparison."""
    cells = result.map_cells
    if cells < MIN_MAP_CELLS:
        return [
            f"The maps have {cells} x {cells} cells, too coarse to say whether they lie inside the "
            f"{result.region_label} (experiment 2): no comparison with the blackout here."
        ]
    inside = [c for c, row in by_class.iterrows() if row["low"] > result.area]
    fallen = []
    for cls in inside:
        before, after = float(shift.loc[("before", cls), cls]), float(shift.loc[("after", cls), cls])
        if before > 0 and after <= KEPT_FRACTION * before:
            fallen.append(
                f"{cls} (mean inside share {by_class.loc[cls, 'mean inside']:.2f}, uniform "
                f"{result.area:.2f}; predicted as {cls} {before:.0%} before, {after:.0%} with the surround "
                "blacked out)"
            )
    if not inside:
        return [
            f"No class has its maps clearly inside the {result.region_label}: nothing to compare with the blackout."
        ]
    if fallen:
        return [
            f"Maps inside the {result.region_label}, answers from the surround: " + "; ".join(fallen) + ". "
            "The inside share missed this dependence: a map says where the evidence for a class was strongest, "
            "not that nothing outside mattered."
        ]
    return [
        f"Every class whose maps lie inside the {result.region_label} ({', '.join(inside)}) keeps more than "
        f"{KEPT_FRACTION:.0%} of its correct answers with the surround blacked out: here the inside share and "
        "the blackout agree, which does not make the inside share a test for shortcuts."
    ]


# --------------------------------------------------------------------------- experiment 3


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
    test_target: int = 0  # test images of the target class
    test_flagged: int = 0  # ... of which the rule flags
    test_other: int = 0  # test images of the other classes
    test_passed: int = 0  # ... of which the rule leaves out

    @property
    def separates(self) -> bool:
        """Whether the rule separates its class from the rest: test AUC >= :data:`SEPARATED_AUC`."""
        return self.test_auc >= SEPARATED_AUC

    def describe(self) -> list[str]:
        """Two sentences: the rule, and its AUCs and test sensitivity and specificity with
        exact 95 % intervals (:func:`cxrlib.stats.exact_interval`) and their counts."""
        sens_lo, sens_hi = exact_interval(self.test_flagged, self.test_target)
        spec_lo, spec_hi = exact_interval(self.test_passed, self.test_other)
        return [
            f"rule: {self.target} if at least {self.threshold:.0%} of the pixels outside the box are black",
            f"AUC training {self.train_auc:.3f}, test {self.test_auc:.3f}; test sensitivity "
            f"{self.test_sensitivity:.2f} [{sens_lo:.2f}, {sens_hi:.2f}] "
            f"({self.test_flagged} of {self.test_target}), specificity {self.test_specificity:.2f} [{spec_lo:.2f}, {spec_hi:.2f}] "
            f"({self.test_passed} of {self.test_other}); exact 95 % intervals",
        ]


def background_rule(
    data: CXRData, target: str = "Lung_Opacity", *, size: int = 64, fit_split: str = "train", test_split: str = "test"
) -> BackgroundRule:
    """Fit :class:`BackgroundRule` for ``target`` on ``fit_split`` and measure it on
    ``test_split``. The feature is :func:`dark_share` outside the central-chest box: it
    reads no pixel of the lungs."""
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
    return BackgroundRule(
        target,
        threshold,
        float(roc_auc_score(y_fit, share[fit])),
        float(roc_auc_score(y_test, share[test])),
        float(flagged[y_test].mean()),
        float((~flagged[~y_test]).mean()),
        frame,
        test_target=int(y_test.sum()),
        test_flagged=int(flagged[y_test].sum()),
        test_other=int((~y_test).sum()),
        test_passed=int((~flagged[~y_test]).sum()),
    )


def read_background_rules(rules: Mapping[str, BackgroundRule]) -> list[str]:
    """Sentences reading one :func:`background_rule` per class (Exercise 7.2): the classes
    the black background separates (:attr:`BackgroundRule.separates`), those with a test
    AUC below 0.5 (the rest is blacker), and, for these, the test AUC against the other
    classes *without* the separated ones: about 0.5 (within :data:`AUC_MARGIN`) means the
    separated class in "the rest" explains the low AUC; still below means the class's own
    films are less black than the others' too."""
    separated = [c for c, r in rules.items() if r.separates]
    below = {c: r.test_auc for c, r in rules.items() if r.test_auc < 0.5}
    out = [
        f"Separated by the black background (test AUC >= {SEPARATED_AUC:g}): " + _classes_or_none(separated) + ".",
        "Test AUC below 0.5 (the rest is blacker): "
        + _classes_or_none(f"{c} {auc:.3f}" for c, auc in below.items())
        + ".",
    ]
    if not below or not separated:
        return out
    frame = next(iter(rules.values())).frame
    test = frame[(frame["split"] == "test") & ~frame["class"].isin(separated)]
    readings = []
    for cls in below:
        if cls in separated or test["class"].nunique() < 2:
            continue
        auc = float(roc_auc_score(test["class"] == cls, test["dark share"]))
        if auc < 0.5 - AUC_MARGIN:
            why = "still below 0.5: its films are less black than those of the other classes too"
        elif auc > 0.5 + AUC_MARGIN:
            why = "above 0.5: only the separated films in the rest pulled it below"
        else:
            why = "about 0.5: the separated films in the rest explain the low AUC"
        readings.append(f"{cls} {auc:.3f} ({why})")
    if readings:
        out.append(f"Test AUC against the other classes without {', '.join(separated)}: " + "; ".join(readings) + ".")
    return out


def describe_background_shortcut(rule: BackgroundRule | None, table: Any = None) -> str:
    """One sentence for a summary or a model card: whether the one-number rule separates
    its class (test AUC), and the sensitivity for that class of the model trained with the
    lungs hidden (from :func:`region_table`, when given)."""
    if rule is None:
        return "This data has no Lung_Opacity class, so the one-number rule has nothing to find."
    verdict = "separates" if rule.separates else "does not separate"
    out = (
        f"The one-number rule (the share of black pixels outside the central-chest box) {verdict} {rule.target} "
        f"from the other classes (test AUC {rule.test_auc:.3f})"
    )
    if table is not None and (table["region"] == "hide-lungs").any():
        out += (
            ", and the model trained with the lungs hidden recognises "
            f"{format_measure(table, 'hide-lungs', f'sensitivity {rule.target}')} of the {rule.target} test images"
        )
    return out + "."


def blackout_shift(
    run: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    region: str = "lungs-only",
) -> Any:
    """How a model trained on ``full`` images changes its mind when, in the same test
    images, everything outside the lung region is blacked out (``lungs-only``) or the lung
    region is (``hide-lungs``): a table of true class x predicted class shares, before
    and after."""
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
        f = pd.crosstab(
            pd.Series(true, name="true"),
            pd.Series([pred.classes[i] for i in predicted], name="predicted"),
            normalize="index",
        )
        frames.append(f.reindex(columns=pred.classes, fill_value=0.0).assign(when=when))
    return pd.concat(frames).reset_index().set_index(["when", "true"]).loc[["before", "after"]]


def read_blackout_shift(shift: Any, region: str = "lungs-only", *, segmented: str | None = None) -> list[str]:
    """Sentences reading :func:`blackout_shift`: one per true class (the share still given
    its true class before and after the blackout, and where the largest share went); for
    ``segmented`` (the class whose films alone have a black background, when there is one:
    :attr:`BackgroundRule.separates`), whether the blackout pulls the images of the other
    classes towards it (:data:`PULL_SHARE`), or that there is no such class; and a
    collapse, when at least :data:`COLLAPSE_SHARE` of all images go to one class."""
    out = []
    change = "the surround blacked out" if region == "lungs-only" else "the lungs blacked out"
    for cls in shift.loc["before"].index:
        before, after = shift.loc[("before", cls)], shift.loc[("after", cls)]
        top = after.drop(labels=[cls]).astype(float)
        went = f"; the most went to {top.idxmax()} ({top.max():.0%})" if top.max() > 0 else ""
        out.append(f"{cls}: {before[cls]:.0%} predicted as {cls} before, {after[cls]:.0%} with {change}{went}.")
    others = [c for c in shift.loc["before"].index if c != segmented]
    if segmented is not None and segmented in shift.columns and others:
        # each class weighs the same (the test split has equal counts per class)
        before = float(shift.loc["before"].loc[others, segmented].astype(float).mean())
        after = float(shift.loc["after"].loc[others, segmented].astype(float).mean())
        if after - before >= PULL_SHARE:
            reading = f"the black pulls them towards {segmented}, the class with the black background"
        elif before - after >= PULL_SHARE:
            reading = f"the black pushes them away from {segmented}, the class with the black background"
        else:
            reading = f"the black does not pull them towards {segmented}, the class with the black background"
        out.append(
            f"Images of the other classes predicted as {segmented}: {before:.0%} before, {after:.0%} with "
            f"{change}: {reading}."
        )
    elif segmented is None:
        out.append(
            "No class is told apart by a black background of its own (experiment 3): no pull towards one to read here."
        )
    after_all = shift.loc["after"].astype(float).mean(axis=0)
    top = str(after_all.idxmax())
    if after_all[top] >= COLLAPSE_SHARE:
        why = (
            f" {top} is the class whose films alone have a black background (experiment 3): to this model, black "
            f"means {top}. This is the shortcut itself."
            if top == segmented
            else f" To this model, an image with {change} looks like {top}."
        )
        out.append(f"A collapse: {after_all[top]:.0%} of all images become {top} with {change}.{why}")
    return out


def compare_hidden(shift: Any, table: Any, chance: float) -> list[str]:
    """Exercise 7.1: the full-image model with the lungs blacked out at prediction time
    (``shift``, :func:`blackout_shift` with ``hide-lungs``) against the model trained with
    the lungs hidden (:func:`region_table`), class by class; then the classes the
    lungs-hidden model recognises above ``chance`` (whole exact interval) that the full
    model recognised (above ``chance`` of them) and loses (at most ``chance`` kept)."""
    out = []
    lost = []
    for cls in shift.loc["after"].index:
        before, kept = float(shift.loc[("before", cls), cls]), float(shift.loc[("after", cls), cls])
        trained = table[(table["region"] == "hide-lungs") & (table["measure"] == f"sensitivity {cls}")]
        if trained.empty:
            continue
        low = float(trained.iloc[0]["low"])
        out.append(
            f"{cls}: the full model recognises {before:.2f} of its test images, {kept:.2f} with the lungs "
            "blacked out; the model trained with the lungs hidden, "
            f"{format_measure(table, 'hide-lungs', f'sensitivity {cls}')}."
        )
        if low > chance and before > chance >= kept:
            lost.append(cls)
    if lost:
        out.append(
            f"Recognised without the lungs by the lungs-hidden model, lost by the full model once its lungs "
            f"are black: {', '.join(lost)}. For these, what lies outside the lungs is enough, yet the full "
            "model does not rely on it alone."
        )
    else:
        out.append(
            "No class is recognised by the lungs-hidden model and lost by the full model once its lungs are black."
        )
    return out


# --------------------------------------------------------------------------- experiment 5


def naive_split_leakage(data: CXRData, *, seeds: Iterable[int] = range(20)) -> dict[str, Any]:
    """How many near-duplicate groups a random split *that ignores them* (same split
    sizes, seeded) spreads over more than one split, against the book's grouped split.

    Returns ``groups``, ``images`` (in groups), ``total_images``, ``test_images`` (the
    size of the test split), ``grouped_split`` (groups spread by the book's split: 0 by
    construction), ``naive_mean``, ``naive_min``, ``naive_max`` (groups spread over any
    two splits, over the seeds), and ``grouped_test_leaks`` and ``leaks_mean``,
    ``leaks_min``, ``leaks_max``: the test images whose group also has a training image,
    that is, test images whose near-duplicate the model was trained on.
    """
    groups = data.split.groups
    assignment = np.array(data.split.assignment)

    def spread(split: np.ndarray) -> int:
        return sum(len({split[i] for i in g}) > 1 for g in groups)

    def test_leaks(split: np.ndarray) -> int:
        return sum(sum(split[i] == "test" for i in g) for g in groups if any(split[i] == "train" for i in g))

    counts, leaks = [], []
    for seed in seeds:
        shuffled = np.random.default_rng(seed).permutation(assignment)
        counts.append(spread(shuffled))
        leaks.append(test_leaks(shuffled))
    counts_arr, leaks_arr = np.array(counts or [0]), np.array(leaks or [0])
    return {
        "groups": len(groups),
        "images": sum(len(g) for g in groups),
        "total_images": len(assignment),
        "test_images": int((assignment == "test").sum()),
        "grouped_split": spread(assignment),
        "naive_mean": float(counts_arr.mean()),
        "naive_min": int(counts_arr.min()),
        "naive_max": int(counts_arr.max()),
        "grouped_test_leaks": test_leaks(assignment),
        "leaks_mean": float(leaks_arr.mean()),
        "leaks_min": int(leaks_arr.min()),
        "leaks_max": int(leaks_arr.max()),
    }


def describe_leakage(leak: Mapping[str, Any], page_test_images: int | None = None) -> list[str]:
    """Sentences reading :func:`naive_split_leakage` (run on the whole data folder): the
    groups, how many a random split spreads, how many test images it gives a near-duplicate
    in training, and how much each such image can move an accuracy on the whole folder's
    test split (100 / test images points). ``page_test_images``, the number of test images
    the page's own models are measured on, adds a sentence: the same number, or (a fast-mode
    subset) how much one image moves an accuracy there."""
    test_images = int(leak["test_images"])
    per_image = 100 / max(test_images, 1)
    out = [
        f"{leak['groups']} near-duplicate groups ({leak['images']} images) in {leak['total_images']:,} images.",
        f"Groups spread over two splits: the book's grouped split {leak['grouped_split']}, a random split "
        f"{leak['naive_mean']:.1f} on average (from {leak['naive_min']} to {leak['naive_max']}).",
        f"Test images with a near-duplicate in training: the book's split {leak['grouped_test_leaks']}, a random "
        f"split {leak['leaks_mean']:.1f} on average (from {leak['leaks_min']} to {leak['leaks_max']}). Each can "
        f"move an accuracy on the whole folder's reference test split ({test_images:,} images) by {per_image:.2g} "
        f"points: up to {leak['leaks_max'] * per_image:.2g} points for the worst of these random splits.",
    ]
    if page_test_images is None:
        return out
    if page_test_images == test_images:
        out.append(f"This page's models are tested on {page_test_images:,} test images too.")
    else:
        out.append(
            f"This page's models are tested on a subset of {page_test_images:,} test images (fast mode), "
            f"where one image moves an accuracy by {100 / max(page_test_images, 1):.2g} points."
        )
    return out
