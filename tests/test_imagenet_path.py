"""The ImageNet path that readers with a network get, tested without one.

torchvision looks for ``resnet18-<hash>.pth`` in ``$TORCH_HOME/hub/checkpoints`` before it
downloads anything, and checks the hash only when it downloads. So a file of random
weights put there under the expected name is what a reader's cache would hold after the
first download, and ``pretrained="auto"`` takes the ImageNet path with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest
import torch
import torchvision

from cxrlib.checkpoint import load_model
from cxrlib.models import PretrainedUnavailableError, build_model
from cxrlib.train import train
from cxrlib.transforms import IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD

from conftest import CANONICAL, build_dataset
from tinyrun import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def imagenet_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """Random ResNet-18 weights where torchvision's cache looks for the ImageNet ones."""
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    home = tmp_path / "torch-home"
    target = home / "hub" / "checkpoints" / Path(weights.url).name
    target.parent.mkdir(parents=True)
    torch.manual_seed(123)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, target)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return state


def test_auto_uses_cached_imagenet_weights_with_a_gray_first_layer(imagenet_cache: dict[str, torch.Tensor]) -> None:
    model, used = build_model("resnet18", 4, pretrained="auto")
    assert used is True
    assert model.conv1.in_channels == 1
    assert torch.allclose(model.conv1.weight, imagenet_cache["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(model.layer3[1].conv2.weight, imagenet_cache["layer3.1.conv2.weight"])
    assert model.fc.out_features == 4


def test_narrow_resnet_has_no_imagenet_weights(imagenet_cache: dict[str, torch.Tensor]) -> None:
    model, used = build_model("resnet18-w32", 4, pretrained="auto")
    assert used is False and model.conv1.out_channels == 32 and model.fc.in_features == 256
    with pytest.raises(PretrainedUnavailableError, match="no ImageNet weights"):
        build_model("resnet18-w32", 4, pretrained="yes")
    full = sum(p.numel() for p in build_model("resnet18", 4, pretrained="no")[0].parameters())
    narrow = sum(p.numel() for p in model.parameters())
    assert 0.2 < narrow / full < 0.3
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 4)


def test_training_with_imagenet_weights_uses_imagenet_normalization_and_can_freeze(
    imagenet_cache: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    data = build_dataset(tmp_path / "data", dict.fromkeys(CANONICAL, 12), size=40).path
    cfg = replace(TINY, epochs=1, pretrained="auto", freeze_backbone=True)
    result = train(cfg, tmp_path / "run", data_dir=data, progress=False, log=lambda m: None)
    assert result.pretrained_used is True
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["pretrained_used"] is True
    assert saved["preprocessing"]["normalization"] == {
        "mean": pytest.approx(IMAGENET_GRAY_MEAN),
        "std": pytest.approx(IMAGENET_GRAY_STD),
        "source": "imagenet",
    }
    loaded = load_model(tmp_path / "run")
    assert loaded.preprocessing.normalization.source == "imagenet"
    # the eval transform maps a gray level g to (g/255 - mean) / std with ImageNet's luma statistics
    x = loaded.transform(torch.full((1, 1, 4, 4), 128, dtype=torch.uint8))
    assert float(x.flatten()[0]) == pytest.approx((128 / 255 - IMAGENET_GRAY_MEAN) / IMAGENET_GRAY_STD, abs=1e-5)
    # frozen: every backbone weight is still ImageNet's (summed for conv1), the new classifier trained
    weights = loaded.model.state_dict()
    assert torch.allclose(weights["conv1.weight"], imagenet_cache["conv1.weight"].sum(dim=1, keepdim=True))
    for name in ("layer1.0.conv1.weight", "layer4.1.conv2.weight", "layer2.0.bn1.weight"):
        assert torch.equal(weights[name], imagenet_cache[name]), name
    torch.manual_seed(TINY.seed)
    _fresh, _ = build_model("resnet18", 4, pretrained="auto")
    assert not torch.equal(weights["fc.weight"], _fresh.fc.weight)


def test_chapter_3_reports_imagenet_weights(imagenet_cache: dict[str, torch.Tensor]) -> None:
    """Chapter 3's model cell, run as the chapter runs it, prints that the weights were used."""
    nb = nbformat.read(ROOT / "chapters" / "03_finetune.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "ImageNet weights used" in c.source)
    proc = subprocess.run(
        [sys.executable, "-c", cell.source],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
        cwd=ROOT / "chapters",
    )
    assert proc.returncode == 0, proc.stderr
    assert "ImageNet weights used: True" in proc.stdout
    assert "warning" not in proc.stdout.lower()
