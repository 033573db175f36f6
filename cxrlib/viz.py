"""Figures for the book. Each function draws on a new (or given) Matplotlib figure and
returns it, so chapters stay one line per figure and tests can inspect the result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np

from .config import CLASS_NAMES

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


def class_palette(classes: Sequence[str] = CLASS_NAMES) -> list[str]:
    return [CLASS_COLORS.get(c, "#7f7f7f") for c in classes]


def plot_class_counts(data: CXRData, *, ax: Any = None) -> Figure:
    """Stacked bars: images per class, split into train / valid / test."""
    import pandas as pd
    import seaborn as sns

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
    fig, axes = plt.subplots(len(data.classes), per_class, figsize=(1.6 * per_class, 1.75 * len(data.classes)),
                             squeeze=False)  # fmt: skip
    for row, name in enumerate(data.classes):
        members = allowed[labels[allowed] == row]
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for col in range(per_class):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(chosen):
                ax.imshow(pixels[chosen[col]], cmap="gray", vmin=0, vmax=255)
        axes[row, 0].text(-0.08, 0.5, name, transform=axes[row, 0].transAxes, ha="right", va="center",
                          color=CLASS_COLORS.get(name, "black"), fontsize=11, fontweight="bold")  # fmt: skip
    fig.subplots_adjust(left=0.16, wspace=0.04, hspace=0.06)
    return fig


def plot_intensity_profile(data: CXRData, *, size: int = 64, ax: Any = None) -> Figure:
    """Per class: the share of near-black pixels (< 10) and the mean brightness of each image.

    A class whose images have a very different background is separable without looking at
    any disease: a shortcut a network finds within one epoch.
    """
    import seaborn as sns

    pixels = np.asarray(data.pixels(size, progress=False))
    labels = data.labels()
    black = (pixels < 10).mean(axis=(1, 2))
    fig, ax = _figure(ax, figsize=(7, 3))
    names = [data.classes[i] for i in labels]
    sns.boxplot(x=black * 100, y=names, order=data.classes, hue=names, hue_order=data.classes,
                palette=class_palette(data.classes), ax=ax, fliersize=1.5, legend=False)  # fmt: skip
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
    from .imaging import read_gray

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
    import torch

    names = ["original", *augmentations]
    cols = min(5, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        torch.manual_seed(seed)
        shown = image if name == "original" else augmentations[name](image)
        _show_gray(ax, shown, name)
    fig.tight_layout()
    return fig


def plot_random_augmentations(image: Any, transform: Any, *, n: int = 10, seed: int = 0, cols: int = 5) -> Figure:
    """``n`` random draws of a full training pipeline on one image (before normalization)."""
    import torch

    torch.manual_seed(seed)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.4 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            _show_gray(ax, transform(image), f"draw {k + 1}")
    fig.tight_layout()
    return fig


def plot_history(history: list[dict[str, Any]], *, axes: Any = None) -> Figure:
    """Learning curves from a run's ``history.json``: loss, and validation accuracy / AUC."""
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
    axes[1].plot(epochs, [h["train_accuracy"] for h in history], ":", color="gray", label="train accuracy")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylim(0, 1.02)
    axes[1].set_title("Validation metrics")
    axes[1].legend(frameon=False, loc="lower right")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
