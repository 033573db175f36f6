"""The lung region (:mod:`cxrlib.regions`): masks, the chest box, blackout, dark pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrlib.config import CXRError
from cxrlib.regions import (
    CHEST_BOX,
    DARK_LEVEL,
    MASK_LEVEL,
    apply_region,
    central_chest_box,
    dark_share,
    inside_mask,
    lung_masks_for,
    lung_region,
    lung_regions_for,
    model_view,
    read_mask,
)


def test_apply_region_hides_and_keeps() -> None:
    pixels = np.arange(1, 17, dtype=np.uint8).reshape(4, 4)
    inside = np.zeros((4, 4), bool)
    inside[1:3, 1:3] = True
    assert apply_region(pixels, inside, "full") is pixels
    hidden = apply_region(pixels, inside, "hide-lungs")
    only = apply_region(pixels, inside, "lungs-only")
    assert hidden.dtype == np.uint8 and only.dtype == np.uint8
    assert (hidden[inside] == 0).all() and (hidden[~inside] == pixels[~inside]).all()
    assert (only[~inside] == 0).all() and (only[inside] == pixels[inside]).all()
    assert (hidden + only == pixels).all()  # the two variants split the image
    batch = np.stack([pixels, pixels + 1])
    assert (apply_region(batch, inside, "hide-lungs")[:, inside] == 0).all()  # one region for all
    with pytest.raises(ValueError, match="unknown region"):
        apply_region(pixels, inside, "lungs")
    with pytest.raises(ValueError, match="is \\(3, 3\\)"):
        apply_region(pixels, inside[:3, :3], "hide-lungs")


def test_chest_box_matches_its_fractions() -> None:
    box = central_chest_box(100)
    rows, cols = np.nonzero(box)
    top, bottom, left, right = CHEST_BOX
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (
        round(top * 100),
        round(bottom * 100),
        round(left * 100),
        round(right * 100),
    )
    assert box.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a full rectangle


def test_dark_share_counts_only_outside() -> None:
    images = np.full((2, 10, 10), 200, np.uint8)
    images[0, :2] = 0  # 20 black pixels in rows 0-1
    region = np.zeros((10, 10), bool)
    region[:1] = True  # row 0 is "inside"
    np.testing.assert_allclose(dark_share(images), [0.2, 0.0])
    np.testing.assert_allclose(dark_share(images, region), [10 / 90, 0.0])


def test_mask_level_splits_grey_edges() -> None:
    pixels = np.array([[0, MASK_LEVEL, MASK_LEVEL + 1, 255]], np.uint8)
    assert inside_mask(pixels).tolist() == [[False, False, True, True]]


def test_lung_region_reads_masks_or_falls_back_to_the_box() -> None:
    masks = np.zeros((2, 20, 20), bool)
    masks[0, :10] = True
    masks[1, 10:] = True
    regions = lung_region(np.where(masks, 255, 0).astype(np.uint8), 2, 20)
    assert regions.dtype == bool and np.array_equal(regions, masks)
    boxes = lung_region(None, 3, 20)
    assert boxes.shape == (3, 20, 20) and (boxes == central_chest_box(20)).all()


def _image_with_mask(root: Path, name: str, mask: np.ndarray | None) -> str:
    (root / "COVID" / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 40), 120, np.uint8)).save(root / "COVID" / "images" / name)
    if mask is not None:
        (root / "COVID" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / "COVID" / "masks" / name)
    return f"COVID/images/{name}"


def test_masks_are_read_resized_and_binarized(tmp_path: Path) -> None:
    mask = np.zeros((40, 40), np.uint8)
    mask[:, :20] = 200  # left half is lung; 200 is above the level, so it becomes 255
    rel = _image_with_mask(tmp_path, "a.png", mask)
    read = read_mask(tmp_path / "COVID" / "masks" / "a.png", 20)
    assert read.shape == (20, 20) and set(np.unique(read)) == {0, 255} and (read[:, :10] == 255).all()
    masks = lung_masks_for(tmp_path, [rel], 20)
    assert masks is not None and np.array_equal(masks[0], read)
    regions, source = lung_regions_for(tmp_path, [rel], 20)
    assert source == "masks" and regions[0, :, :10].all() and not regions[0, :, 10:].any()


def test_a_missing_mask_means_the_chest_box(tmp_path: Path) -> None:
    with_mask = _image_with_mask(tmp_path, "a.png", np.full((40, 40), 255, np.uint8))
    without = _image_with_mask(tmp_path, "b.png", None)
    assert lung_masks_for(tmp_path, [with_mask, without], 20) is None
    regions, source = lung_regions_for(tmp_path, [with_mask, without], 20)
    assert source == "chest box" and (regions == central_chest_box(20)).all()


def test_model_view_blacks_out_as_in_training(tmp_path: Path) -> None:
    images = np.full((2, 20, 20), 90, np.uint8)
    assert model_view(images, "full", "chest box") is images
    box = central_chest_box(20)
    hidden = model_view(images, "hide-lungs", "chest box")
    assert (hidden[:, box] == 0).all() and (hidden[:, ~box] == 90).all()
    mask = np.zeros((40, 40), np.uint8)
    mask[:20] = 255  # top half is lung
    rel = _image_with_mask(tmp_path, "a.png", mask)
    only = model_view(images[:1], "lungs-only", "masks", root=tmp_path, paths=[rel])
    assert (only[0, :10] == 90).all() and (only[0, 10:] == 0).all()
    with pytest.raises(CXRError, match="no masks beside them"):
        model_view(images[:1], "lungs-only", "masks", root=tmp_path, paths=["COVID/images/none.png"])


def test_dark_level_is_inclusive() -> None:
    images = np.array([[[DARK_LEVEL, DARK_LEVEL + 1]]], np.uint8)
    assert dark_share(images).tolist() == [0.5]
