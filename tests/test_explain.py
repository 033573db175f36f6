"""CAMs through pytorch-grad-cam on the one-channel ResNet, Grad-CAM by hand, the lung
share, and the randomization sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrlib import explain
from cxrlib.config import CXRError
from cxrlib.models import build_model, cam_target_layer, set_backbone_trainable
from cxrlib.regions import central_chest_box


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
    box = central_chest_box(20)
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


def test_gradcam_hirescam_and_cam_are_one_map_at_layer4_and_part_at_layer3(
    model: torch.nn.Module, images: torch.Tensor
) -> None:
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
    up = torch.nn.functional.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[
        :, 0
    ]
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


def test_cascade_is_read_along_its_whole_path() -> None:
    dip = explain.read_cascade({"fc": 0.24, "layer4": 0.10, "layer3": 0.15, "layer2": 0.28})
    assert dip == (
        "Mean absolute Spearman similarity 0.24 with fc randomized; it fell to 0.10 with everything down "
        "to layer4 randomized (its lowest), then rose to 0.28 with everything down to layer2 randomized."
    )
    falling = explain.read_cascade({"fc": 0.50, "layer4": 0.40, "layer3": 0.30})
    assert falling.endswith("; it fell to 0.30 with everything down to layer3 randomized.")
    assert "lowest" not in falling and "rose" not in falling
    peak = explain.read_cascade({"fc": 0.10, "layer4": 0.30, "layer3": 0.20})
    assert peak.startswith("Mean absolute Spearman similarity 0.10 with fc randomized (its lowest); it rose to 0.30")
    assert peak.endswith("then fell to 0.20 with everything down to layer3 randomized.")
    assert explain.read_cascade({"fc": 0.3}) == "Mean absolute Spearman similarity 0.30 with fc randomized."
    assert "stayed at 0.30" in explain.read_cascade({"fc": 0.301, "layer4": 0.299})  # equal as printed


def test_method_checks_are_read() -> None:
    text = explain.read_method_checks({"gradcam": 0.012, "gradcam++": 0.37, "hirescam": 0.0104, "eigencam": 0.87})
    assert text.startswith(
        "Similarity, trained vs randomized, from lowest to highest: gradcam 0.01, hirescam 0.01, "
        "gradcam++ 0.37, eigencam 0.87."
    )
    assert "The same as gradcam's: hirescam." in text
    assert text.endswith("The worst pass, whose maps depend least on the randomized weights: eigencam (0.87).")
    other = explain.read_method_checks({"gradcam": 0.60, "eigencam": 0.20})
    assert "The same as gradcam's: no method." in other and other.endswith("gradcam (0.60).")


def test_gallery_gaps_and_inside_shares_are_read() -> None:
    examples = explain.examples_by_class(np.array([0, 0, 1, 1]), np.eye(4)[[0, 1, 1, 1]])
    text = explain.describe_examples(examples, ["COVID", "Normal"])
    assert text == (
        "Empty cells: only 1 right prediction of COVID; only 1 wrong prediction of COVID; "
        "no wrong prediction of Normal."
    )
    full = {0: {"right": [0, 1], "wrong": [2, 3]}}
    assert explain.describe_examples(full, ["COVID"]).startswith("Every class has at least 2 right and 2 wrong")
    shares = explain.read_inside_shares(np.array([0.58, 0.50, np.nan]), 0.56, map_side=2)
    assert shares.startswith("Inside the central-chest box: 58%, 50% of the maps' energy, against 56% for a uniform")
    assert "1 of 2 above it, 1 below, 0 level. Each map has 2x2 cells." in shares and "1 map(s) without" in shares
    assert explain.read_inside_shares(np.array([np.nan]), 0.5).startswith("No map has any positive evidence")


def test_agreement_table_from_maps() -> None:
    ramp = np.arange(16.0).reshape(4, 4) / 15
    table = explain.agreement_table({"gradcam": ramp, "hirescam": ramp.copy(), "eigencam": 1 - ramp})
    assert table.loc["hirescam", "largest pixel difference"] == 0.0
    assert table.loc["eigencam", "mean Spearman with gradcam"] == pytest.approx(-1.0)
    text = explain.read_agreement(table)
    assert text == (
        "At layer4: the same map as Grad-CAM: hirescam; a different map: eigencam (Spearman -1.00, "
        "largest pixel difference 1.00)."
    )
    with pytest.raises(CXRError, match="Grad-CAM's maps"):
        explain.agreement_table({"hirescam": ramp})
