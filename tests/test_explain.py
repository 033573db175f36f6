"""CAMs through pytorch-grad-cam on the one-channel ResNet, Grad-CAM by hand, the lung
share, and the randomization sanity check."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from cxrlib import explain
from cxrlib.config import CXRError
from cxrlib.models import build_model, cam_target_layer, set_backbone_trainable


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net, _ = build_model("resnet18", 4, pretrained="no")  # "no" never warns
    # a few steps of training so that the class scores depend on the image
    x = torch.randn(16, 1, 64, 64)
    y = torch.arange(16) % 4
    x[y == 0, :, :32] += 2.0
    x[y == 1, :, 32:] += 2.0
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 1, 64, 64)


@pytest.mark.parametrize("method", list(explain.CAM_METHODS))
def test_methods_give_unit_maps(model: torch.nn.Module, images: torch.Tensor, method: str) -> None:
    cams = explain.compute_cams(model, images, [0, 1, 2], method)
    assert cams.shape == (3, 64, 64) and cams.dtype == np.float32
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert any(np.ptp(c) > 0.5 for c in cams)  # not all blank
    again = explain.compute_cams(model, images, None, method, batch_size=2)  # predicted classes, batched
    assert again.shape == (3, 64, 64)


def test_cams_leave_the_model_as_it_was(model: torch.nn.Module, images: torch.Tensor) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.requires_grad for p in model.parameters()]
    with torch.no_grad():  # also works inside no_grad (as in an evaluation loop)
        explain.compute_cams(model, images, [0, 1, 2], "gradcam")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(p.grad is None for p in model.parameters())
    layer = cam_target_layer(model)
    assert not layer._forward_hooks and not layer._forward_pre_hooks and not model._forward_pre_hooks
    assert torch.is_grad_enabled()


def test_frozen_model_still_explained(model: torch.nn.Module, images: torch.Tensor) -> None:
    import copy

    frozen = copy.deepcopy(model)
    set_backbone_trainable(frozen, False)
    for p in frozen.parameters():
        p.requires_grad_(False)
    cams = explain.compute_cams(frozen, images, [0, 1, 2], "gradcam")
    assert np.allclose(cams, explain.compute_cams(model, images, [0, 1, 2], "gradcam"), atol=1e-5)


def test_gradcam_by_hand_matches_library(model: torch.nn.Module, images: torch.Tensor) -> None:
    for k in range(3):
        manual = explain.manual_gradcam(model, images[k : k + 1], target_class=k)
        library = explain.compute_cams(model, images[k : k + 1], [k], "gradcam")[0]
        assert manual["weights"].shape == (512,) and manual["activations"].shape == (512, 2, 2)
        assert np.allclose(manual["weights"], manual["gradients"].mean(axis=(1, 2)))
        assert np.allclose(manual["relu"], np.maximum(manual["weighted_sum"], 0))
        assert np.abs(manual["cam"] - library).max() < 1e-4
        with torch.no_grad():
            assert manual["score"] == pytest.approx(float(model(images[k : k + 1])[0, k]), rel=1e-4)


def test_unknown_method_and_bad_shape(model: torch.nn.Module) -> None:
    with pytest.raises(CXRError, match="unknown CAM method"):
        explain.CamExplainer(model, "lime")
    with explain.CamExplainer(model) as explainer, pytest.raises(CXRError):
        explainer(torch.zeros(1, 64, 64))


def test_inside_fraction_on_known_maps() -> None:
    box = explain.central_chest_box(20)
    assert box.shape == (20, 20) and box.sum() == (17 - 2) * (18 - 2)  # rows 2..16, columns 2..17
    uniform = np.ones((1, 20, 20))
    assert explain.cam_inside_fraction(uniform, box)[0] == pytest.approx(box.mean())
    inside = np.zeros((20, 20))
    inside[5:10, 5:10] = 1.0
    corner = np.zeros((20, 20))
    corner[0, 0] = 1.0
    half = inside + np.where(corner > 0, 25.0, 0.0)  # as much energy in the corner as in the box
    blank = np.zeros((20, 20))
    got = explain.cam_inside_fraction(np.stack([inside, corner, half, blank]), box)
    assert got[:3] == pytest.approx([1.0, 0.0, 0.5]) and np.isnan(got[3])
    # one region per image (lung masks)
    masks = np.zeros((2, 20, 20), bool)
    masks[0, :10] = True
    masks[1, 10:] = True
    assert explain.cam_inside_fraction(np.stack([inside, inside]), masks) == pytest.approx([1.0, 0.0])
    regions = explain.lung_region(np.where(masks, 255, 0).astype(np.uint8), 2, 20)
    assert regions.dtype == bool and np.array_equal(regions, masks)
    assert explain.lung_region(None, 3, 20).shape == (3, 20, 20)
    with pytest.raises(CXRError):
        explain.cam_inside_fraction(uniform, np.ones((10, 10), bool))


def test_overlay() -> None:
    gray = np.full((8, 8), 255, np.uint8)
    rgb = explain.overlay(gray, np.zeros((8, 8)), alpha=0.0)
    assert rgb.shape == (8, 8, 3) and np.allclose(rgb, 1.0)
    hot = explain.overlay(np.zeros((8, 8), np.uint8), np.ones((8, 8)), alpha=1.0)
    assert hot[..., 0].mean() > 0.4 and hot[..., 2].mean() < 0.1  # the top of jet is red


def test_randomization_and_sanity_check(model: torch.nn.Module, images: torch.Tensor) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    random_model = explain.randomize_top_layers(model, "layer4", seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    changed = {k.split(".")[0] for k, v in random_model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"fc", "layer4"}
    state = torch.get_rng_state()
    result = explain.sanity_check(model, images, method="gradcam")
    assert torch.equal(state, torch.get_rng_state())  # the global generator is left alone
    assert result["spearman"].shape == (3,) and result["trained"].shape == (3, 64, 64)
    finite = np.isfinite(result["spearman"])
    assert result["mean_abs_spearman"] == pytest.approx(np.abs(result["spearman"][finite]).mean())
    same = explain.sanity_check(model, images, method="gradcam")
    assert np.array_equal(same["randomized"], result["randomized"], equal_nan=True)  # seeded
    cascade = explain.sanity_cascade(model, images, depth=2)
    assert list(cascade) == ["fc", "layer4"]
    assert explain.read_cascade(cascade).startswith(f"Mean absolute Spearman similarity {cascade['fc']:.2f} with fc")
    with pytest.raises(CXRError):
        explain.randomize_top_layers(model, "layer9")


def test_spearman_conventions() -> None:
    ramp = np.arange(16.0).reshape(4, 4)
    assert explain._spearman(ramp, ramp) == pytest.approx(1.0)
    assert explain._spearman(ramp, -ramp) == pytest.approx(-1.0)
    assert explain._spearman(ramp, np.zeros((4, 4))) == 0.0
    assert np.isnan(explain._spearman(np.zeros((4, 4)), np.zeros((4, 4))))


def test_gradcam_hirescam_and_cam_are_one_map_at_layer4_and_part_at_layer3(model: torch.nn.Module,
                                                                          images: torch.Tensor) -> None:  # fmt: skip
    """Global average pooling then one linear layer follow layer4: the gradient is the same
    at every position, so HiResCAM's map is Grad-CAM's. At layer3 it is not."""
    targets = [0, 1, 2]
    deep = explain.method_agreement(model, images, targets, ["gradcam", "hirescam"], layer="layer4")
    assert deep.loc["hirescam", "largest pixel difference"] < 1e-4
    # the original CAM: the classifier's weights times the activations, summed over channels
    with torch.no_grad():
        feats = {}
        hook = cam_target_layer(model).register_forward_hook(lambda m, i, o: feats.__setitem__("A", o))
        model(images)
        hook.remove()
        cam = torch.einsum("nkhw,nk->nhw", feats["A"], model.fc.weight[targets]).clamp_min(0)
    up = torch.nn.functional.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    up = ((up - lo) / (up.amax(dim=(1, 2), keepdim=True) - lo + 1e-7)).numpy()
    gradcam = explain.compute_cams(model, images, targets, "gradcam")
    assert np.abs(up - gradcam).max() < 1e-3
    shallow = explain.method_agreement(model, images, targets, ["gradcam", "hirescam"], layer="layer3")
    assert shallow.loc["hirescam", "largest pixel difference"] > 1e-3
    assert "a different map: hirescam" in explain.read_agreement(shallow)
    assert "the same map as Grad-CAM: hirescam" in explain.read_agreement(deep)
    with pytest.raises(CXRError, match="CAM layer"):
        cam_target_layer(model, "layer9")
