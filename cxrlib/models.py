"""ResNets for gray chest X-rays, with or without ImageNet weights.

Gray input: the first convolution takes **one** channel. When ImageNet weights are used,
its three RGB filters are summed into one gray filter, which responds to a gray image
as the original responds to the same image copied into R, G and B (up to the per-channel
normalization, which :mod:`cxrlib.transforms` replaces by its luma average). This keeps
inputs 3 times smaller than repeating the gray channel.

``resnet18-w32`` is a ResNet-18 at half width (32, 64, 128 and 256 channels in its four
stages instead of 64 to 512): the same depth, blocks and shortcuts, a quarter of the
computation and of the 11 million weights. Trained from scratch on a few thousand X-rays
it needs no more capacity, and on 2 CPU cores it trains about four times faster at the
same image size, which the ``cpu`` recipe spends on a larger image and more epochs (the
measurements are in chapter 3). ``resnet34-w32`` is ResNet-34's deeper stack of the same
blocks (3, 4, 6 and 3 per stage) at that width, about twice the computation of
``resnet18-w32``. No ImageNet weights exist for either.

ImageNet weights come through torchvision's weights API and cache
(``~/.cache/torch/hub/checkpoints``, or ``TORCH_HOME``). ``pretrained``:

* ``"auto"``: use them when they can be had, otherwise train from scratch and say so once;
* ``"yes"``: use them or raise :class:`PretrainedUnavailableError` saying how to get them;
* ``"no"``: never try.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from typing import Literal

import torch
import torchvision
from torch import nn

from .config import CXRError

ARCHITECTURES: tuple[str, ...] = ("resnet18", "resnet18-w32", "resnet34", "resnet34-w32", "resnet50")

#: Architectures that are a torchvision model with other stage widths: name -> (torchvision
#: name, width of the first stage). They have no ImageNet weights.
NARROW: dict[str, tuple[str, int]] = {"resnet18-w32": ("resnet18", 32), "resnet34-w32": ("resnet34", 32)}
Pretrained = Literal["auto", "yes", "no"]


class PretrainedUnavailableError(CXRError):
    """ImageNet weights were required but could not be loaded."""


class PretrainedUnavailableWarning(UserWarning):
    """ImageNet weights could not be loaded; the model starts from random weights."""


def _narrow_resnet(base: str, width: int) -> nn.Module:
    """torchvision's ``base`` (a BasicBlock ResNet) with stage widths ``width * (1, 2, 4, 8)``."""
    model = torchvision.models.get_model(base, weights=None)
    block = torchvision.models.resnet.BasicBlock
    depths = [len(getattr(model, f"layer{k}")) for k in range(1, 5)]
    model.inplanes = width  # _make_layer reads and advances it, as in ResNet.__init__
    model.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    for k, depth in enumerate(depths):
        setattr(model, f"layer{k + 1}", model._make_layer(block, width * 2**k, depth, stride=1 if k == 0 else 2))
    model.fc = nn.Linear(width * 8, 1000)
    for m in model.modules():  # the initialization of ResNet.__init__
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return model


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    # torch.hub prints "Downloading: ..." before trying; keep it, and only show it when
    # the download does not fail (a failure is reported once, by build_model).
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise):
        state = weights.get_state_dict(progress=False, check_hash=True)
    sys.stdout.write(noise.getvalue())
    return state


def build_model(
    arch: str = "resnet18",
    num_classes: int = 4,
    pretrained: Pretrained = "auto",
) -> tuple[nn.Module, bool]:
    """A ResNet with a one-channel input and ``num_classes`` outputs.

    Returns ``(model, used_imagenet_weights)``.
    """
    if arch not in ARCHITECTURES:
        raise CXRError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    if pretrained not in ("auto", "yes", "no"):
        raise CXRError(f"pretrained must be auto, yes or no, not {pretrained!r}")
    if arch in NARROW:
        model = _narrow_resnet(*NARROW[arch])
    else:
        model = torchvision.models.get_model(arch, weights=None)
    used = False
    if pretrained != "no" and arch in NARROW:
        message = f"there are no ImageNet weights for {arch}"
        if pretrained == "yes":
            raise PretrainedUnavailableError(message + "; use resnet18, resnet34 or resnet50, or --pretrained no")
    elif pretrained != "no":
        try:
            state = _imagenet_state_dict(arch)
        except Exception as err:  # URLError offline, HTTP errors, hash mismatch, corrupt cache
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            message = (
                f"ImageNet weights for {arch} could not be loaded ({reason}). Download them once with "
                f"network access (they are cached under ~/.cache/torch/hub/checkpoints), or use --pretrained no"
            )
            if pretrained == "yes":
                raise PretrainedUnavailableError(message) from None
            warnings.warn(message + "; training from scratch instead.", PretrainedUnavailableWarning, stacklevel=2)
        else:
            model.load_state_dict(state)
            used = True
    first = model.conv1
    gray = nn.Conv2d(1, first.out_channels, first.kernel_size, first.stride, first.padding, bias=False)
    with torch.no_grad():
        if used:
            gray.weight.copy_(first.weight.sum(dim=1, keepdim=True))
    model.conv1 = gray
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model, used


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter except the final classifier's (``fc``)."""
    head = {id(p) for p in model.fc.parameters()}  # type: ignore[union-attr]
    return [p for p in model.parameters() if id(p) not in head]


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (``False``) or unfreeze the backbone; the classifier stays trainable."""
    for p in backbone_parameters(model):
        p.requires_grad_(trainable)


#: The stages a CAM can read: ``layer4`` (the default) or the finer ``layer3``.
CAM_LAYERS = ("layer4", "layer3")


def cam_target_layer(model: nn.Module, layer: str = "layer4") -> nn.Module:
    """The layer Grad-CAM looks at: the last block of ``layer4`` (7x7 at 224 px), the
    deepest layer that still has a spatial map, or of ``layer3`` (twice as fine, 14x14 at
    224 px, and less class-specific)."""
    if layer not in CAM_LAYERS:
        raise CXRError(f"unknown CAM layer {layer!r}; choose from {', '.join(CAM_LAYERS)}")
    return getattr(model, layer)[-1]  # type: ignore[index]


def n_weights(module: nn.Module, *, trainable_only: bool = False) -> int:
    """The number of weights (parameter elements) of ``module``; with ``trainable_only``,
    only those with ``requires_grad`` (what an optimizer would change)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_weights(arch: str) -> int:
    """The number of weights of architecture ``arch`` as :func:`build_model` makes it (one
    gray input channel, four classes), e.g. for a model card to glue."""
    model, _ = build_model(arch, pretrained="no")
    return n_weights(model)
