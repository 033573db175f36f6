"""Figures for the book. Each function draws on a new (or given) Matplotlib figure and
returns it, so chapters stay one line per figure and tests can inspect the result."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .config import CLASS_NAMES
from .evaluate import roc_curves
from .explain import overlay
from .imaging import read_gray
from .regions import REGION_LABELS, REGIONS, apply_region, dark_share

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .data import CXRData

#: One colour per class, used by every figure of the book.
CLASS_COLORS: dict[str, str] = {
    "COVID": "#d62728",
    "Lung_Opacity": "#ff7f0e",
    "Normal": "#2ca02c",
    "Viral Pneumonia": "#1f77b4",
}


@contextlib.contextmanager
def seeded_jitter(seed: int = 0) -> Iterator[None]:
    """Seed NumPy's global generator for the block and restore the caller's state after it.
    seaborn's strip plots jitter their dots with that generator, which a kernel starts in a
    random state: without this, each build of a page would scatter the dots differently."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def class_palette(classes: Sequence[str] = CLASS_NAMES) -> list[str]:
    return [CLASS_COLORS.get(c, "#7f7f7f") for c in classes]


def plot_class_counts(data: CXRData, *, ax: Any = None) -> Figure:
    """Stacked bars: images per class, split into train / valid / test."""
    frame = data.frame()
    table = pd.crosstab(frame["class"], frame["split"]).reindex(index=data.classes, columns=["train", "valid", "test"])
    fig, ax = _figure(ax, figsize=(7, 3.2))
    left = np.zeros(len(table))
    for split, colour in zip(table.columns, sns.color_palette("Greys_r", 4)[:3]):
        ax.barh(table.index, table[split], left=left, color=colour, edgecolor="black", linewidth=0.5, label=split)
        left += table[split].to_numpy()
    for y, total in enumerate(left):
        ax.text(total, y, f" {int(total)}", va="center")
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_xlim(0, left.max() * 1.15)
    ax.legend(loc="lower right", frameon=False)
    ax.set_title("Images per class and split")
    sns.despine(ax=ax)
    fig.tight_layout()
    return fig


def plot_samples(data: CXRData, *, per_class: int = 6, split: str = "all", seed: int = 0, size: int = 224) -> Figure:
    """A grid of random images, one row per class, read from the pixel cache."""
    pixels = data.pixels(size, progress=False)
    labels = data.labels()
    allowed = data.indices(split)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(
        len(data.classes), per_class, figsize=(1.6 * per_class, 1.75 * len(data.classes)), squeeze=False
    )
    for row, name in enumerate(data.classes):
        members = allowed[labels[allowed] == row]
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for col in range(per_class):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(chosen):
                ax.imshow(pixels[chosen[col]], cmap="gray", vmin=0, vmax=255)
        axes[row, 0].text(
            -0.08,
            0.5,
            name,
            transform=axes[row, 0].transAxes,
            ha="right",
            va="center",
            color=CLASS_COLORS.get(name, "black"),
            fontsize=11,
            fontweight="bold",
        )
    fig.subplots_adjust(left=0.16, wspace=0.04, hspace=0.06)
    return fig


def plot_intensity_profile(data: CXRData, *, size: int = 64, ax: Any = None) -> Figure:
    """Per class: the share of near-black pixels (at or below :data:`cxrlib.regions.DARK_LEVEL`) and the mean brightness of each image.

    A class whose images have a very different background is separable without looking at
    any disease: a shortcut a network finds within one epoch.
    """
    pixels = np.asarray(data.pixels(size, progress=False))
    labels = data.labels()
    black = dark_share(pixels)
    fig, ax = _figure(ax, figsize=(7, 3))
    names = [data.classes[i] for i in labels]
    sns.boxplot(
        x=black * 100,
        y=names,
        order=data.classes,
        hue=names,
        hue_order=data.classes,
        palette=class_palette(data.classes),
        ax=ax,
        fliersize=1.5,
        legend=False,
    )
    ax.set_xlabel("near-black pixels per image (%)")
    ax.set_ylabel("")
    ax.set_title("How much of each image is black background?")
    sns.despine(ax=ax)
    fig.tight_layout()
    return fig


def plot_duplicate_groups(data: CXRData, *, max_groups: int = 4) -> Figure | None:
    """Show the first near-duplicate groups side by side, titled with class and split.

    Images are read from their files (not the pixel cache), so this is cheap on a large
    dataset. Returns ``None`` when there is no group.
    """
    groups = data.split.groups[:max_groups]
    if not groups:
        return None
    width = max(len(g) for g in groups)
    fig, axes = plt.subplots(len(groups), width, figsize=(2.2 * width, 2.4 * len(groups)), squeeze=False)
    for row, group in enumerate(groups):
        for col in range(width):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(group):
                record = data.records[group[col]]
                ax.imshow(read_gray(data.root / record.path), cmap="gray", vmin=0, vmax=255)
                name = record.path.rsplit("/", 1)[-1]
                ax.set_title(f"{name[:22]}\n{record.label} / {data.split.assignment[group[col]]}", fontsize=8)
    fig.tight_layout()
    return fig


def _figure(ax: Any, figsize: tuple[float, float]) -> tuple[Figure, Any]:
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def _show_gray(ax: Any, image: Any, title: str | None = None) -> None:
    """Draw a uint8 or 0..1 float image (tensor or array, shape (H, W) or (1, H, W))."""
    array = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32).squeeze()
    vmax = 255.0 if array.max() > 1.5 else 1.0
    ax.imshow(array, cmap="gray", vmin=0, vmax=vmax)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)


def plot_augmentation_gallery(image: Any, augmentations: dict[str, Any], *, seed: int = 0) -> Figure:
    """The original image, then the image under each named augmentation alone."""
    names = ["original", *augmentations]
    cols = min(5, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    with torch.random.fork_rng(devices=[]):  # the caller's random state is restored afterwards
        for ax, name in zip(axes.flat, names):
            torch.manual_seed(seed)
            shown = image if name == "original" else augmentations[name](image)
            _show_gray(ax, shown, name)
    fig.tight_layout()
    return fig


def plot_random_augmentations(image: Any, transform: Any, *, n: int = 10, seed: int = 0, cols: int = 5) -> Figure:
    """``n`` random draws of a full training pipeline on one image (before normalization)."""
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.4 * rows), squeeze=False)
    with torch.random.fork_rng(devices=[]):  # the caller's random state is restored afterwards
        torch.manual_seed(seed)
        for k, ax in enumerate(axes.flat):
            ax.axis("off")
            if k < n:
                _show_gray(ax, transform(image), f"draw {k + 1}")
    fig.tight_layout()
    return fig


def plot_history(history: list[dict[str, Any]], *, axes: Any = None) -> Figure:
    """Learning curves from a run's ``history.json``: loss, and validation accuracy / AUC
    (of the weight average, with the raw weights' last accuracy as a cross, when the run has one)."""
    epochs = [h["epoch"] + 1 for h in history]
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    else:
        fig = axes[0].figure
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    axes[0].plot(epochs, [h["valid_loss"] for h in history], "s-", label="validation loss")
    axes[0].set_xlabel("epoch")
    axes[0].set_title("Loss")
    axes[0].legend(frameon=False)
    axes[1].plot(epochs, [h["valid_accuracy"] for h in history], "o-", label="validation accuracy")
    axes[1].plot(epochs, [h["valid_macro_auc"] for h in history], "s-", label="validation macro AUC")
    if "valid_accuracy_raw" in history[-1]:  # a run with a weight average (EMA)
        axes[1].plot(
            [epochs[-1]],
            [history[-1]["valid_accuracy_raw"]],
            "x",
            color="C0",
            markersize=8,
            label="validation accuracy, raw weights",
        )
    axes[1].plot(epochs, [h["train_accuracy"] for h in history], ":", color="gray", label="train accuracy")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylim(0, 1.02)
    axes[1].set_title("Validation metrics")
    axes[1].legend(frameon=False, loc="lower right")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(metrics: dict[str, Any], *, ax: Any = None, normalize: bool = False) -> Figure:
    """Heatmap of ``metrics["confusion_matrix"]`` (from :func:`cxrlib.evaluate.compute_metrics`)."""
    cm = metrics["confusion_matrix"]
    matrix = np.asarray(cm["matrix"], dtype=float)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = _figure(ax, figsize=(5.2, 4.4))
    sns.heatmap(
        matrix,
        annot=True,
        fmt=".2f" if normalize else ".0f",
        cmap="Blues",
        cbar=False,
        ax=ax,
        xticklabels=cm["labels"],
        yticklabels=cm["labels"],
        square=True,
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix" + (" (row-normalized)" if normalize else ""))
    fig.tight_layout()
    return fig


def plot_roc(curves: dict[str, tuple[Any, Any, float]], *, ax: Any = None) -> Figure:
    """One-vs-rest ROC curves (from :func:`cxrlib.evaluate.roc_curves`)."""
    fig, ax = _figure(ax, figsize=(5, 4.6))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, color=CLASS_COLORS.get(name), label=f"{name} (AUC {auc:.3f})", linewidth=2)
    ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
    _finish_roc(ax, "ROC, one class against the rest", "true positive rate (sensitivity)", legend_size=9)
    return fig


def _finish_roc(ax: Any, title: str, ylabel: str, *, legend_size: float) -> None:
    """Axis labels, title, legend and square aspect shared by the ROC-style figures."""
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="lower right", frameon=False, fontsize=legend_size)
    ax.set_aspect("equal")
    ax.figure.tight_layout()


def plot_reliability(curves: dict[str, dict[str, Any]], *, ax: Any = None) -> Figure:
    """Reliability diagram: accuracy against confidence per bin, one line per named curve
    (e.g. before and after temperature scaling; from :func:`cxrlib.metrics.reliability_curve`)."""
    fig, ax = _figure(ax, figsize=(5, 4.6))
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    for name, curve in curves.items():
        ok = np.isfinite(curve["confidence"])
        ax.plot(curve["confidence"][ok], curve["accuracy"][ok], "o-", label=name)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("Reliability diagram")
    ax.legend(frameon=False, loc="upper left", fontsize=9)
    fig.tight_layout()
    return fig


def plot_operating_point(pred: Any, op: dict[str, Any], *, ax: Any = None) -> Figure:
    """The COVID-vs-rest ROC curve on test, with the threshold chosen on validation
    (:func:`cxrlib.evaluate.operating_point`) and the plain arg-max rule marked."""
    fpr, tpr, _ = roc_curves(pred)["COVID"]
    fig, ax = _figure(ax, figsize=(5, 4.6))
    ax.plot(fpr, tpr, color=CLASS_COLORS["COVID"], linewidth=2, label="COVID against the rest (test)")
    chosen, argmax = op["test"], op["test_argmax"]
    ax.plot(
        1 - chosen["specificity"],
        chosen["sensitivity"],
        "o",
        markersize=10,
        color="black",
        label=f"p(COVID) ≥ {op['threshold']:.3f} (chosen on validation)",
    )
    ax.plot(1 - argmax["specificity"], argmax["sensitivity"], "s", markersize=9, color="gray", label="arg-max rule")
    ax.axhline(op["target_sensitivity"], linestyle=":", color="gray")
    _finish_roc(ax, "Screening operating point", "sensitivity", legend_size=8)
    return fig


def plot_cam_grid(
    images: Any, cams: Any, titles: Sequence[str], *, cols: int = 4, alpha: float = 0.45, size: float = 2.3
) -> Figure:
    """CAM overlays in a grid, one title per image; an image given as ``None`` leaves its
    cell blank (to keep one row per class)."""
    rows = max(1, int(np.ceil(len(titles) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, (size + 0.35) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, cam, title in zip(axes.flat, images, cams, titles):
        if image is None:
            continue
        ax.imshow(overlay(image, cam, alpha=alpha))
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_gradcam_steps(image: Any, manual: dict[str, Any], library: Any) -> Figure:
    """Grad-CAM step by step (from :func:`cxrlib.explain.manual_gradcam`) next to the
    library's map for the same image and class."""
    fig, axes = plt.subplots(1, 5, figsize=(13, 2.9))
    axes[0].imshow(np.asarray(image).squeeze(), cmap="gray")
    axes[0].set_title("X-ray", fontsize=9)
    limit = float(np.abs(manual["weighted_sum"]).max()) or 1.0
    axes[1].imshow(manual["weighted_sum"], cmap="coolwarm", vmin=-limit, vmax=limit)
    axes[1].set_title("Σ αₖ Aᵏ (before ReLU)", fontsize=9)
    axes[2].imshow(manual["relu"], cmap="jet", vmin=0)
    axes[2].set_title("after ReLU", fontsize=9)
    axes[3].imshow(overlay(image, manual["cam"]))
    axes[3].set_title("upsampled, by hand", fontsize=9)
    axes[4].imshow(overlay(image, library))
    axes[4].set_title("pytorch-grad-cam", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_sanity(images: Any, trained: Any, randomized: Any, spearman: Any, *, cols: int = 6) -> Figure:
    """CAMs of the trained model (top row) and of the model with randomized top layers
    (bottom row), with the Spearman similarity of each pair."""
    n = min(cols, len(images))
    fig, axes = plt.subplots(2, n, figsize=(2.1 * n, 4.6), squeeze=False)
    for k in range(n):
        axes[0, k].imshow(overlay(images[k], trained[k]))
        axes[1, k].imshow(overlay(images[k], randomized[k]))
        axes[1, k].set_title(f"ρ = {spearman[k]:.2f}", fontsize=9)
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("trained", fontsize=10)
    axes[1, 0].set_ylabel("randomized", fontsize=10)
    fig.tight_layout()
    return fig


def plot_inside_fraction(frame: Any, *, area: float, region: str = "central-chest box", ax: Any = None) -> Figure:
    """Per true class, the share of CAM energy inside the lung region (``frame`` columns
    ``true`` and ``inside``), with the share a uniform map would have."""
    rows = _class_rows(frame, "true")
    fig, ax = _figure(ax, figsize=(7, 3.2))
    sns.boxplot(x="inside", **rows, ax=ax, fliersize=0)
    with seeded_jitter():
        sns.stripplot(data=frame, x="inside", y="true", order=rows["order"], color="black", size=2.5, alpha=0.5, ax=ax)
    ax.set_xlim(0, 1)
    return _finish_class_rows(fig, ax, area, f" uniform map: {area:.0%}", f"share of CAM energy inside the {region}")


def plot_region_examples(images: Any, regions: Any, titles: Sequence[str]) -> Figure:
    """One row per image: the full image, the lungs hidden, only the lungs (chapter 7).

    ``images``: ``uint8`` ``(n, H, W)``; ``regions``: boolean lung regions, one per image
    or one for all; ``titles``: one per row.
    """
    images = np.asarray(images)
    regions = np.broadcast_to(np.asarray(regions, dtype=bool), images.shape)
    fig, axes = plt.subplots(len(images), len(REGIONS), figsize=(2.3 * len(REGIONS), 2.3 * len(images)), squeeze=False)
    for row, (image, region, title) in enumerate(zip(images, regions, titles)):
        for col, name in enumerate(REGIONS):
            _show_gray(axes[row, col], apply_region(image, region, name), REGION_LABELS[name] if row == 0 else None)
        axes[row, 0].text(
            -0.06, 0.5, title, transform=axes[row, 0].transAxes, rotation=90, ha="right", va="center", fontsize=9
        )
    fig.tight_layout()
    return fig


def plot_image_files(
    root: str | os.PathLike[str], paths: Sequence[str], titles: Sequence[str], *, cols: int = 5
) -> Figure | None:
    """The images at ``paths`` (relative to ``root``) that exist there, in a grid, each with
    its title; ``None`` when none of them exists (another copy of the data). Chapter 3 shows
    the validation images that most trainings miss (:func:`cxrlib.ablation.miss_shares`)."""
    files = [(Path(root) / path, title) for path, title in zip(paths, titles)]
    found = [(file, title) for file, title in files if file.is_file()]
    if not found:
        return None
    rows = -(-len(found) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (path, title) in zip(axes.flat, found):
        _show_gray(ax, read_gray(path), title)
    fig.tight_layout()
    return fig


def plot_region_comparison(table: Any, *, ax: Any = None) -> Figure:
    """Estimates with 95 % intervals per measure (rows) and region (colours): the table
    of :func:`cxrlib.trust.region_table`."""
    measures = list(dict.fromkeys(table["measure"]))
    regions = list(dict.fromkeys(table["region"]))
    colors = {"full": "#444444", "hide-lungs": "#d62728", "lungs-only": "#1f77b4"}
    fig, ax = _figure(ax, figsize=(7.5, 0.55 * len(measures) + 1.2))
    step = 0.8 / max(1, len(regions))
    for k, region in enumerate(regions):
        part = table[table["region"] == region].set_index("measure").reindex(measures)
        y = np.arange(len(measures)) - 0.4 + step * (k + 0.5)
        est = part["estimate"].to_numpy(dtype=float)
        err = np.vstack([est - part["low"].to_numpy(dtype=float), part["high"].to_numpy(dtype=float) - est])
        ax.errorbar(
            est,
            y,
            xerr=err,
            fmt="o",
            color=colors.get(region, "gray"),
            capsize=3,
            markersize=4,
            label=REGION_LABELS.get(region, region),
        )
    ax.set_yticks(np.arange(len(measures)), measures)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("estimate with 95 % bootstrap interval")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(regions), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_dark_share(frame: Any, threshold: float | None = None, *, ax: Any = None) -> Figure:
    """Per class, the share of black pixels outside the chest box (``frame`` columns
    ``class`` and ``dark share``), with a rule's threshold if given."""
    fig, ax = _figure(ax, figsize=(7, 3.0))
    with seeded_jitter():
        sns.stripplot(x="dark share", **_class_rows(frame, "class"), size=2.5, alpha=0.6, jitter=0.3, ax=ax)
    ax.set_xlim(-0.02, 1.02)
    mark = None if threshold is None else f" threshold {threshold:.2f}"
    return _finish_class_rows(
        fig, ax, threshold, mark, "share of black pixels outside the central-chest box", color="black"
    )


def _class_rows(frame: Any, column: str) -> dict[str, Any]:
    """Seaborn arguments for one row per class of ``frame[column]``, in the book's class
    order and colours."""
    order = [c for c in CLASS_COLORS if c in set(frame[column])]
    palette = class_palette(order)
    return {
        "data": frame,
        "y": column,
        "order": order,
        "hue": column,
        "hue_order": order,
        "palette": palette,
        "legend": False,
    }


def _finish_class_rows(
    fig: Figure, ax: Any, mark_at: float | None, mark: str | None, xlabel: str, color: str = "gray"
) -> Figure:
    """A per-class row plot's dashed reference line (when ``mark_at`` is given) with its label,
    its x label, no y label, no top or right spine."""
    if mark_at is not None:
        ax.axvline(mark_at, linestyle="--", color=color)
        ax.text(mark_at, -0.6, mark, color=color, fontsize=8, va="bottom")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("")
    sns.despine(ax=ax)
    fig.tight_layout()
    return fig
