"""Augmentation and normalization with torchvision.transforms.v2.

Inputs are the cached ``uint8`` images, ``tv_tensors.Image`` of shape ``(1, S, S)``,
optionally with a ``tv_tensors.Mask`` that follows every geometric change.

Each augmentation is named and configurable in :class:`AugmentConfig`, and each is
something that really varies between radiographs:

===============  ==========================================================
name             why it is plausible for a chest X-ray
===============  ==========================================================
rotation         patients are not perfectly upright; a few degrees
scale, translate distance to the detector and framing vary
brightness       exposure (mAs) varies between machines and patients
contrast         kVp and post-processing change contrast
gamma            detector response and window/level differ between sites
noise            quantum noise of low-dose or portable images
blur             patient motion, downsampled scans of films
===============  ==========================================================

Off by default, with reasons: **horizontal flip** (the heart is on the left; a flipped
film shows situs inversus, and laterality markers flip too; a trade-off rather than a rule,
measured on the ``cpu`` preset in chapter 3's recipe table), **vertical flip** (never seen
in practice), **strong colour changes** (radiographs are gray; hue means nothing).

Normalization: with ImageNet weights the gray image is normalized with the luma of the
ImageNet statistics (mean 0.449, std 0.226), matching the first convolution whose RGB
filters were summed into one gray filter (see :mod:`cxrlib.models`); without pretrained
weights, with the mean and standard deviation of the training images.

Regions (chapter 7): a model trained on part of the image (``hide-lungs``, ``lungs-only``)
gets its pixels blacked out by :func:`cxrlib.regions.apply_region` *before* any augmentation,
so the blacked-out image is what the model sees, augmented like any film.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .regions import apply_region

#: ImageNet mean/std (RGB) collapsed to gray with ITU-R 601 luma weights.
IMAGENET_GRAY_MEAN = 0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406
IMAGENET_GRAY_STD = 0.299 * 0.229 + 0.587 * 0.224 + 0.114 * 0.225


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each training augmentation; 0 (or ``False``) switches one off."""

    rotation: float = 7.0  # degrees, uniform in [-rotation, rotation]
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.06  # fraction of the image size
    brightness: float = 0.15
    contrast: float = 0.15
    gamma: tuple[float, float] = (0.85, 1.15)
    noise: float = 0.02  # std of Gaussian noise on the 0..1 scale
    blur: float = 0.1  # probability of a light Gaussian blur
    hflip: bool = False  # see the module docstring: anatomy is not symmetric

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AugmentConfig:
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**clean)


#: Why each augmentation of :class:`AugmentConfig` is plausible for a chest X-ray (or, for
#: the flip, why it is a trade-off), in the order of :func:`augmentation_table`.
AUGMENTATION_REASONS: dict[str, str] = {
    "rotation": "patients are not perfectly upright",
    "scale": "the distance to the detector varies",
    "translate": "framing varies",
    "brightness": "exposure (mAs) varies between machines and patients",
    "contrast": "kVp and post-processing change contrast",
    "gamma": "detector response and window/level differ between sites",
    "noise": "quantum noise of low-dose or portable images",
    "blur": "patient motion, scanned films",
    "hflip": "a trade-off: a flipped film shows the heart on the right (chapter 3 measures it)",
}


def _strength(name: str, cfg: AugmentConfig) -> str:
    """One augmentation's setting as the book's tables show it; ``off`` when switched off."""
    value = getattr(cfg, name)
    if name == "rotation":
        return f"±{value:g}°" if value else "off"
    if name in ("scale", "gamma"):
        low, high = value
        return f"{low:g}–{high:g}" if (low, high) != (1.0, 1.0) else "off"
    if name in ("translate", "brightness", "contrast"):
        return f"±{100 * value:g} %" if value else "off"
    if name == "noise":
        return f"σ = {value:g}" if value else "off"
    if name == "blur":
        return f"{100 * value:g} % of images" if value else "off"
    return "on (half of the images)" if value else "off"


def augmentation_table(columns: Mapping[str, AugmentConfig]) -> pd.DataFrame:
    """One row per augmentation of :class:`AugmentConfig`, one column per named setting
    (e.g. ``{"default": AugmentConfig(), "cpu preset": preset("cpu").augment}``) with its
    strength or ``off``, and why (``why``): chapter 2's table, read from the code."""
    table = pd.DataFrame(
        {label: {name: _strength(name, cfg) for name in AUGMENTATION_REASONS} for label, cfg in columns.items()}
    )
    table["why"] = pd.Series(AUGMENTATION_REASONS)
    table.index.name = "augmentation"
    return table


#: No augmentation at all (for evaluation-like training or ablations).
NO_AUGMENT = AugmentConfig(
    rotation=0, scale=(1.0, 1.0), translate=0, brightness=0, contrast=0, gamma=(1.0, 1.0), noise=0, blur=0, hflip=False
)


class RandomGamma(v2.Transform):
    """Gamma correction with a random exponent (images in 0..1); masks are left alone."""

    def __init__(self, gamma: tuple[float, float]) -> None:
        super().__init__()
        self.gamma = (float(gamma[0]), float(gamma[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"gamma": float(torch.empty(1).uniform_(*self.gamma))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, torch.Tensor) and not isinstance(inpt, tv_tensors.Mask) and inpt.is_floating_point():
            return v2.functional.adjust_gamma(inpt, params["gamma"])
        return inpt


@dataclass(frozen=True)
class Normalization:
    """Mean and std (0..1 scale) for the gray channel, and where they came from."""

    mean: float
    std: float
    source: str = "data"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


IMAGENET_NORMALIZATION = Normalization(IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD, "imagenet")


def data_normalization(
    pixels: Any,
    indices: Any = None,
    *,
    max_images: int = 2000,
    region: str = "full",
    lung_regions: np.ndarray | None = None,
) -> Normalization:
    """Mean and std of (up to ``max_images`` of) the training images, on the 0..1 scale,
    as the model sees them: after :func:`apply_region` when ``region`` is not ``full``
    (``lung_regions`` indexed like ``pixels``)."""
    idx = np.arange(len(pixels)) if indices is None else np.asarray(indices)
    idx = np.sort(idx[:: max(1, len(idx) // max_images)])
    sample = np.asarray(pixels[idx])
    if region != "full":
        sample = apply_region(sample, None if lung_regions is None else lung_regions[idx], region)
    sample = sample.astype(np.float64) / 255.0
    return Normalization(float(sample.mean()), float(sample.std() or 1.0), "data")


def _augmentations(cfg: AugmentConfig) -> list[Any]:
    steps: list[Any] = []
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if cfg.rotation or cfg.translate or tuple(cfg.scale) != (1.0, 1.0):
        steps.append(
            v2.RandomAffine(
                degrees=cfg.rotation,
                translate=(cfg.translate, cfg.translate) if cfg.translate else None,
                scale=tuple(cfg.scale),
            )
        )
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if cfg.brightness or cfg.contrast:
        steps.append(v2.ColorJitter(brightness=cfg.brightness or None, contrast=cfg.contrast or None))
    if tuple(cfg.gamma) != (1.0, 1.0):
        steps.append(RandomGamma(cfg.gamma))
    if cfg.blur:
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.2))], p=cfg.blur))
    if cfg.noise:
        steps.append(v2.GaussianNoise(mean=0.0, sigma=cfg.noise, clip=True))
    return steps


def train_transform(norm: Normalization, augment: AugmentConfig | None = None) -> v2.Compose:
    """Augment, convert to float, normalize. ``augment=None`` uses the defaults."""
    steps = _augmentations(augment or AugmentConfig())
    if not any(isinstance(s, v2.ToDtype) for s in steps):
        steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose([*steps, v2.Normalize([norm.mean], [norm.std])])


def preview_transform(augment: AugmentConfig | None = None) -> v2.Compose:
    """The training augmentations without normalization (images stay in 0..1), for figures."""
    steps = _augmentations(augment or AugmentConfig())
    if not any(isinstance(s, v2.ToDtype) for s in steps):
        steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def implausible_augmentations() -> dict[str, v2.Transform]:
    """Transforms that do *not* produce plausible chest X-rays (for chapter 2's warning)."""
    to_float = v2.ToDtype(torch.float32, scale=True)
    return {
        "vertical flip": v2.Compose([v2.RandomVerticalFlip(p=1.0), to_float]),
        "horizontal flip": v2.Compose([v2.RandomHorizontalFlip(p=1.0), to_float]),
        "inverted": v2.Compose([v2.RandomInvert(p=1.0), to_float]),
        "solarized": v2.Compose([to_float, v2.RandomSolarize(threshold=0.5, p=1.0)]),
        "rotation 45°": v2.Compose([v2.RandomAffine(degrees=(45, 45)), to_float]),
        "heavy contrast": v2.Compose([to_float, v2.ColorJitter(contrast=(2.5, 2.5))]),
    }


def eval_transform(norm: Normalization) -> v2.Compose:
    """No randomness: float conversion and normalization only."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize([norm.mean], [norm.std])])


def single_augmentations(cfg: AugmentConfig | None = None) -> dict[str, v2.Transform]:
    """Each augmentation alone, exaggerated to its configured maximum, for the gallery
    of chapter 2 (inputs: uint8 images; outputs: float images in 0..1)."""
    cfg = cfg or AugmentConfig()
    to_float = v2.ToDtype(torch.float32, scale=True)
    out: dict[str, v2.Transform] = {
        "rotation": v2.Compose([v2.RandomAffine(degrees=(cfg.rotation, cfg.rotation)), to_float]),
        "scale": v2.Compose([v2.RandomAffine(degrees=0, scale=(max(cfg.scale), max(cfg.scale))), to_float]),
        "translate": v2.Compose([v2.RandomAffine(degrees=0, translate=(cfg.translate, cfg.translate)), to_float]),
        "brightness": v2.Compose([to_float, v2.ColorJitter(brightness=(1 + cfg.brightness, 1 + cfg.brightness))]),
        "contrast": v2.Compose([to_float, v2.ColorJitter(contrast=(1 - cfg.contrast, 1 - cfg.contrast))]),
        "gamma": v2.Compose([to_float, RandomGamma((max(cfg.gamma), max(cfg.gamma)))]),
        "noise": v2.Compose([to_float, v2.GaussianNoise(sigma=max(cfg.noise, 1e-6), clip=True)]),
        "blur": v2.Compose([to_float, v2.GaussianBlur(kernel_size=5, sigma=1.2)]),
    }
    return out


def mixup_batch(
    images: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup of one batch: ``(mixed images, partner of each image, weight)``. Each image is
    blended with another of the batch (a random permutation) at the weight ``lam`` drawn from
    Beta(alpha, alpha); the loss is then ``lam * loss(own label) + (1 - lam) * loss(partner's
    label)``. ``rng`` makes the draws repeatable."""
    lam = float(rng.beta(alpha, alpha))
    partner = torch.from_numpy(rng.permutation(len(images))).to(images.device)
    return lam * images + (1.0 - lam) * images[partner], partner, lam


def cutmix_batch(
    images: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix of one batch: ``(images, partner of each image, weight)``. One box, of area
    ``1 - lam`` with ``lam`` drawn from Beta(alpha, alpha) and centred at a random point
    (clipped at the border), is pasted into every image from another image of the batch (a
    random permutation); ``lam`` is then the share of each image left its own, and the loss
    is ``lam * loss(own label) + (1 - lam) * loss(partner's label)`` as for
    :func:`mixup_batch`. ``rng`` makes the draws repeatable."""
    height, width = images.shape[-2:]
    cut = float(np.sqrt(1.0 - rng.beta(alpha, alpha)))
    box_h, box_w = int(round(height * cut)), int(round(width * cut))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    partner = torch.from_numpy(rng.permutation(len(images))).to(images.device)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = images[partner][..., top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    return mixed, partner, lam


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn a file into a model input: stored in every checkpoint."""

    img_size: int
    normalization: Normalization
    region: str = "full"
    #: where the lung region came from when ``region`` is not ``full``: ``masks`` (the
    #: data's lung masks) or ``chest box`` (:data:`cxrlib.regions.CHEST_BOX`)
    region_source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS = ("img_size", "normalization", "region", "region_source")

    def to_dict(self) -> dict[str, Any]:
        return {
            "img_size": self.img_size,
            "normalization": self.normalization.to_dict(),
            "region": self.region,
            "region_source": self.region_source,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        norm = Normalization(**values["normalization"])
        extra = {k: v for k, v in values.items() if k not in cls._FIELDS}
        return cls(int(values["img_size"]), norm, values.get("region", "full"), values.get("region_source"), extra)
