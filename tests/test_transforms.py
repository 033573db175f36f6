"""Chapter 2's table of augmentation strengths, read from the code."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from cxrlib.recipe import preset
from cxrlib.transforms import (
    AUGMENTATION_REASONS,
    NO_AUGMENT,
    AugmentConfig,
    augmentation_table,
    cutmix_batch,
    mixup_batch,
)


def test_augmentation_table_reads_each_setting_from_the_config() -> None:
    table = augmentation_table({"default": AugmentConfig(), "cpu preset": preset("cpu").augment, "none": NO_AUGMENT})
    assert list(table.columns) == ["default", "cpu preset", "none", "why"]
    assert list(table.index) == [f.name for f in fields(AugmentConfig)]  # every augmentation, none forgotten
    default = table["default"].to_dict()
    assert default == {
        "rotation": "±7°",
        "scale": "0.9–1.1",
        "translate": "±6 %",
        "brightness": "±15 %",
        "contrast": "±15 %",
        "gamma": "0.85–1.15",
        "noise": "σ = 0.02",
        "blur": "10 % of images",
        "hflip": "off",
    }
    # the cpu preset switches noise and blur off and keeps the rest
    changed = {name for name in table.index if table.loc[name, "cpu preset"] != table.loc[name, "default"]}
    assert changed == {"noise", "blur"} and table.loc["noise", "cpu preset"] == "off"
    assert set(table["none"]) == {"off"}
    assert table.loc["hflip", "why"] == AUGMENTATION_REASONS["hflip"]


def test_augmentation_table_shows_a_flip_and_other_strengths() -> None:
    stronger = AugmentConfig(rotation=10.0, translate=0.1, gamma=(0.8, 1.2), blur=0.25, hflip=True)
    column = augmentation_table({"stronger": stronger})["stronger"]
    assert (column["rotation"], column["translate"], column["gamma"]) == ("±10°", "±10 %", "0.8–1.2")
    assert (column["blur"], column["hflip"]) == ("25 % of images", "on (half of the images)")


def test_mixup_batch_blends_each_image_with_a_partner_repeatably() -> None:
    images = torch.arange(4, dtype=torch.float32).reshape(4, 1, 1, 1).expand(4, 1, 2, 2).clone()
    mixed, partner, lam = mixup_batch(images, 0.2, np.random.default_rng(3))
    assert 0.0 <= lam <= 1.0 and sorted(partner.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(mixed, lam * images + (1 - lam) * images[partner])
    again = mixup_batch(images, 0.2, np.random.default_rng(3))
    assert again[2] == lam and torch.equal(again[1], partner)  # the same draws from the same seed
    assert mixup_batch(images, 0.2, np.random.default_rng(4))[2] != lam


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_batch_pastes_one_box_and_weighs_it_by_its_area(seed: int) -> None:
    images = torch.arange(4, dtype=torch.float32).reshape(4, 1, 1, 1).expand(4, 1, 20, 30).clone()
    mixed, partner, lam = cutmix_batch(images, 1.0, np.random.default_rng(seed))
    assert sorted(partner.tolist()) == [0, 1, 2, 3]
    for k in range(4):
        own = mixed[k] == images[k]
        pasted = mixed[k] == images[partner[k]]
        assert bool((own | pasted).all())  # every pixel is its own or its partner's
        if int(partner[k]) != k:
            # the pasted share is one rectangle, and lam is the share left its own
            assert float(own.float().mean()) == pytest.approx(lam)
            rows, cols = torch.nonzero(~own[0], as_tuple=True)
            if len(rows):
                box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
                assert int(box) == len(rows)
    again = cutmix_batch(images, 1.0, np.random.default_rng(seed))
    assert again[2] == lam and torch.equal(again[0], mixed)  # the same draws from the same seed
