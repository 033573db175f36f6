"""The lung region: the one place that knows what it is and how it is drawn.

Chapter 7 asks whether the model looks at the lungs. That needs, for each image, a boolean
region ``(size, size)``: the **lung mask** that the Kaggle database ships beside each image
(``<Class>/masks/<name>``, a 0/255 drawing of both lungs), or, where a folder has no masks,
the **central-chest box** (:data:`CHEST_BOX`), a fixed rectangle that holds both lungs on a
typical posterior-anterior film. Everything that needs a lung region (training on part of
the image, evaluating such a model, the share of a Grad-CAM map inside the lungs, the
blackout experiments) takes it from here, so every chapter means the same pixels.

Two thresholds are defined once:

* :data:`MASK_LEVEL`: a mask pixel above it is lung (masks are resized with nearest
  neighbour, but a JPEG-saved mask has grey edges);
* :data:`DARK_LEVEL`: a pixel at or below it is black, as in the segmented background of
  the sample's Lung_Opacity images (see :func:`dark_share`).

Regions: a model can be trained on the whole image (``full``), with the lung region blacked
out (``hide-lungs``), or with everything but the lung region blacked out (``lungs-only``).
:func:`apply_region` does this on the ``uint8`` pixels *before* any augmentation, so the
blacked-out image is what the model sees, augmented like any film; :func:`model_view`
gives a trained model its images the same way at prediction time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .config import CXRError
from .imaging import UnreadableImageError, read_gray, resize_gray

#: A mask pixel brighter than this (0-255) is inside the lungs.
MASK_LEVEL = 127

#: A pixel at or below this (0-255) counts as black background.
DARK_LEVEL = 10


#: What a model may see of each image (see the module docstring).
REGIONS = ("full", "hide-lungs", "lungs-only")


#: How each region is called in tables and figures.
REGION_LABELS: dict[str, str] = {"full": "full image", "hide-lungs": "lungs hidden", "lungs-only": "lungs only"}


def apply_region(pixels: np.ndarray, inside: np.ndarray | None, region: str) -> np.ndarray:
    """``uint8`` pixels ``(..., H, W)`` with the lung region (``hide-lungs``) or everything
    outside it (``lungs-only``) set to 0; ``full`` returns the pixels unchanged.

    ``inside`` is a boolean lung region broadcastable to ``pixels`` (one mask per image,
    or one ``(H, W)`` mask for all). Black is the value a detector never reaches inside a
    body, so the hidden part carries no information at all.
    """
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose from {', '.join(REGIONS)}")
    if region == "full":
        return pixels
    if inside is None:
        raise ValueError(f"region {region!r} needs a lung region")
    inside = np.asarray(inside, dtype=bool)
    if inside.shape[-2:] != pixels.shape[-2:]:
        raise ValueError(f"the lung region is {inside.shape[-2:]} but the images are {pixels.shape[-2:]}")
    keep = ~inside if region == "hide-lungs" else inside
    return np.where(keep, pixels, np.zeros((), dtype=pixels.dtype)).astype(pixels.dtype, copy=False)


#: The central-chest box used as the lung region when the data has no lung masks:
#: (top, bottom, left, right) as fractions of the image side. On a well-framed PA film it
#: covers both lungs and the heart but not the shoulders, neck, corner markers or the
#: area below the diaphragm. It is a box, not a lung outline: it also holds the
#: mediastinum, and on a badly framed film it misses part of a lung.
CHEST_BOX = (0.10, 0.85, 0.12, 0.88)


def central_chest_box(size: int) -> np.ndarray:
    """A ``(size, size)`` boolean mask of :data:`CHEST_BOX`."""
    top, bottom, left, right = (round(f * size) for f in CHEST_BOX)
    mask = np.zeros((size, size), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def inside_mask(masks: np.ndarray) -> np.ndarray:
    """Boolean lung regions of mask pixels (0-255): above :data:`MASK_LEVEL` is lung."""
    return np.asarray(masks) > MASK_LEVEL


def binarize_mask(pixels: np.ndarray) -> np.ndarray:
    """A mask's pixels as clean ``uint8`` 0/255 (what the pixel cache and readers store)."""
    return np.where(inside_mask(pixels), 255, 0).astype(np.uint8)


def read_mask(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """One mask file resized to ``size`` with nearest neighbour (a lung edge must stay an
    edge, not a grey ramp), as 0/255 ``uint8``."""
    return binarize_mask(resize_gray(read_gray(path), size, resample=Image.NEAREST))


def chest_boxes(n: int, size: int) -> np.ndarray:
    """:func:`central_chest_box` for ``n`` images: a read-only view repeating one box."""
    return np.broadcast_to(central_chest_box(size), (n, size, size))


def lung_region(masks: np.ndarray | None, n: int, size: int) -> np.ndarray:
    """Boolean lung regions ``(n, size, size)``: the data's masks (0/255), else the chest box."""
    if masks is not None:
        return inside_mask(masks)
    return chest_boxes(n, size)


def lung_masks_for(root: str | os.PathLike[str], paths: Sequence[str], size: int) -> np.ndarray | None:
    """The lung masks of images ``<Class>/images/<name>`` (relative to ``root``), read from
    ``<Class>/masks/<name>`` and resized to ``size``: ``uint8`` 0/255 ``(n, size, size)``,
    or ``None`` when any image has no mask (then use the central-chest box)."""
    out = []
    for rel in paths:
        path = Path(root) / rel
        if path.parent.name != "images":
            return None
        mask = path.parent.parent / "masks" / path.name
        try:
            out.append(read_mask(mask, size))
        except (UnreadableImageError, OSError):
            return None
    return np.stack(out) if out else None


def lung_regions_for(root: str | os.PathLike[str], paths: Sequence[str], size: int) -> tuple[np.ndarray, str]:
    """The lung region of each image ``(n, size, size)``: its mask (``<Class>/masks/``)
    when every image has one, else the central-chest box; and which of the two it is."""
    masks = lung_masks_for(root, paths, size)
    return lung_region(masks, len(paths), size), "masks" if masks is not None else "chest box"


def dark_share(images: np.ndarray, region: np.ndarray | None = None, *, level: int = DARK_LEVEL) -> np.ndarray:
    """Share of pixels at or below ``level`` per image, counted *outside* ``region``
    (boolean, one per image or one for all) when given."""
    images = np.asarray(images)
    dark = images <= level
    if region is None:
        return dark.mean(axis=(-2, -1))
    outside = ~np.broadcast_to(np.asarray(region, dtype=bool), images.shape)
    return (dark & outside).sum(axis=(-2, -1)) / np.maximum(outside.sum(axis=(-2, -1)), 1)


def model_view(
    images: np.ndarray,
    region: str,
    source: str,
    *,
    root: str | os.PathLike[str] | None = None,
    paths: Sequence[str] | None = None,
) -> np.ndarray:
    """``uint8`` images ``(n, size, size)`` as a model trained on ``region`` saw them:
    unchanged for ``full``; with the lungs (``hide-lungs``) or all but the lungs
    (``lungs-only``) blacked out otherwise, the lung region coming from ``source`` as in
    training (``masks``: the masks beside the images, ``<Class>/masks/<name>`` under
    ``root``; ``chest box``: :func:`central_chest_box`).

    Raises:
        CXRError: the model needs masks and these images have none.
    """
    if region == "full" or len(images) == 0:
        return images
    size = images.shape[-1]
    if source == "masks":
        masks = lung_masks_for(root or "", paths or [], size)
        if masks is None:
            raise CXRError(
                f"this model was trained with region {region} from lung masks, and these images "
                "have no masks beside them (<Class>/masks/<name>)"
            )
        inside = inside_mask(masks)
    else:
        inside = central_chest_box(size)
    return apply_region(np.asarray(images), inside, region)
