"""Augmentation pipelines, exercise checks, model construction and the training benchmark."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision import tv_tensors

from cxrlib import models
from cxrlib.checks import check_augmentation
from cxrlib.config import CXRError
from cxrlib.models import PretrainedUnavailableError, PretrainedUnavailableWarning, build_model
from cxrlib.transforms import (
    NO_AUGMENT,
    AugmentConfig,
    Normalization,
    eval_transform,
    implausible_augmentations,
    preview_transform,
    single_augmentations,
    train_transform,
)

from conftest import CANONICAL, build_dataset

NORM = Normalization(0.5, 0.25)


def _image(size: int = 48) -> tv_tensors.Image:
    rng = np.random.default_rng(0)
    return tv_tensors.Image(torch.from_numpy(rng.integers(0, 256, (1, size, size), dtype=np.uint8)))


def test_defaults_do_not_flip() -> None:
    assert AugmentConfig().hflip is False
    names = [type(t).__name__ for t in train_transform(NORM).transforms]
    assert "RandomHorizontalFlip" not in names and "RandomVerticalFlip" not in names
    assert "RandomHorizontalFlip" in [
        type(t).__name__ for t in train_transform(NORM, AugmentConfig(hflip=True)).transforms
    ]


def test_train_and_eval_pipelines() -> None:
    image = _image()
    torch.manual_seed(0)
    out = train_transform(NORM)(image)
    assert out.shape == (1, 48, 48) and out.dtype == torch.float32
    plain = eval_transform(NORM)(image)
    expected = (image.float() / 255 - 0.5) / 0.25
    assert torch.allclose(plain, expected, atol=1e-6)
    assert torch.equal(eval_transform(NORM)(image), plain)  # no randomness
    torch.manual_seed(1)
    a = train_transform(NORM)(image)
    torch.manual_seed(2)
    b = train_transform(NORM)(image)
    assert not torch.allclose(a, b)
    assert torch.allclose(train_transform(NORM, NO_AUGMENT)(image), plain, atol=1e-6)


def test_mask_follows_geometric_augmentation() -> None:
    image = tv_tensors.Image(torch.zeros(1, 40, 40, dtype=torch.uint8))
    image[:, 10:20, 5:15] = 255
    mask = tv_tensors.Mask((image > 0).to(torch.uint8) * 255)
    cfg = AugmentConfig(rotation=10, translate=0.1, brightness=0, contrast=0, gamma=(1.0, 1.0), noise=0, blur=0)
    torch.manual_seed(3)
    out_image, out_mask = preview_transform(cfg)(image, mask)
    assert isinstance(out_mask, tv_tensors.Mask)
    assert ((out_image > 0.5) == (out_mask > 127)).float().mean() > 0.97
    assert not torch.equal(out_mask, mask)


def test_every_named_augmentation_changes_the_image() -> None:
    image = _image()
    for name, transform in single_augmentations().items():
        torch.manual_seed(0)
        out = transform(image)
        assert out.shape == image.shape, name
        assert not torch.allclose(out, image.float() / 255, atol=1e-4), name


def test_check_augmentation_accepts_and_rejects() -> None:
    assert check_augmentation(preview_transform()).passed
    flips = implausible_augmentations()
    assert any("mirrors" in p for p in check_augmentation(flips["horizontal flip"]).problems)
    assert any("upside down" in p for p in check_augmentation(flips["vertical flip"]).problems)
    assert any("inverts" in p for p in check_augmentation(flips["inverted"]).problems)
    assert any("same image" in p for p in check_augmentation(lambda x: x).problems)

    def not_written(image):
        raise NotImplementedError

    report = check_augmentation(not_written)
    assert not report.passed and "not written yet" in str(report)
    assert "shape" in str(check_augmentation(lambda x: x[:, :10]))
    assert "raised" in str(check_augmentation(lambda x: 1 / 0))


@pytest.mark.parametrize("arch", sorted(models.NARROW))
def test_narrow_resnets_keep_their_base_s_depth_at_half_width(arch: str) -> None:
    base, width = models.NARROW[arch]
    narrow, used = build_model(arch, 4, pretrained="no")
    full, _ = build_model(base, 4, pretrained="no")
    assert not used and narrow.conv1.in_channels == 1 and narrow.fc.out_features == 4
    for k in range(1, 5):
        stage, full_stage = getattr(narrow, f"layer{k}"), getattr(full, f"layer{k}")
        assert len(stage) == len(full_stage)  # the same blocks per stage
        assert stage[-1].conv2.out_channels == width * 2 ** (k - 1) == full_stage[-1].conv2.out_channels // 2
    with torch.no_grad():
        assert narrow.eval()(torch.zeros(2, 1, 64, 64)).shape == (2, 4)


def test_build_model_offline_modes() -> None:
    # conftest refuses network connections, as on this machine
    with pytest.raises(PretrainedUnavailableError, match="could not be loaded"):
        build_model("resnet18", 4, pretrained="yes")
    with pytest.warns(PretrainedUnavailableWarning, match="training from scratch"):
        model, used = build_model("resnet18", 4, pretrained="auto")
    assert used is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, used = build_model("resnet34", 3, pretrained="no")
    assert used is False and model.conv1.in_channels == 1 and model.fc.out_features == 3
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 3)
    with pytest.raises(CXRError):
        build_model("vgg11", 4)
    with pytest.raises(CXRError):
        build_model("resnet18", 4, pretrained="maybe")  # type: ignore[arg-type]


def test_pretrained_rgb_filters_are_summed(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    monkeypatch.setattr(models, "_imagenet_state_dict", lambda arch: reference.state_dict())
    model, used = build_model("resnet18", 4, pretrained="yes")
    assert used
    assert torch.allclose(model.conv1.weight, reference.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    # a gray image through the summed filter equals the RGB image (gray copied 3 times)
    x = torch.rand(1, 1, 32, 32)
    assert torch.allclose(model.conv1(x), reference.conv1(x.repeat(1, 3, 1, 1)), atol=1e-5)


def test_bench_reports_the_three_numbers(tmp_path: Path) -> None:
    from cxrlib.bench import bench_training
    from cxrlib.data import CXRData

    ds = build_dataset(tmp_path / "d", dict.fromkeys(CANONICAL, 10), size=40)
    data = CXRData.load(ds.path, valid_size=8, test_size=8, progress=False)
    result = bench_training(data, img_size=32, batch_size=4, steps=2, rounds=1)
    assert result["train_images_per_s_loader"] > 0 and result["train_images_per_s_model"] > 0
    assert result["loader_ratio"] == pytest.approx(
        result["train_images_per_s_loader"] / result["train_images_per_s_model"], rel=0.01
    )


def test_cxr_bench_times_the_network_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from cxrlib.cli import main

    ds = build_dataset(tmp_path / "d", dict.fromkeys(CANONICAL, 10), size=40)
    args = ["bench", "--data", str(ds.path), "--img-size", "32", "--steps", "1", "--rounds", "1"]
    assert main([*args, "--arch", "resnet18-w32", "--explorer-steps", "0", "--json"]) == 0
    numbers = json.loads(capsys.readouterr().out)
    assert numbers["arch"] == "resnet18-w32" and numbers["train_images_per_s_model"] > 0
