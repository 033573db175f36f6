"""Class activation maps with pytorch-grad-cam, and checks of what they show.

Target layer: the last block of ``layer4`` of the ResNet (:func:`cxrlib.models.cam_target_layer`),
the deepest layer with a spatial map (7x7 at 224 px, 5x5 at 160 px, 4x4 at 112 or 128 px, 2x2 at 64 px:
:func:`map_size`). Deeper
means more class-specific; earlier layers give sharper but less class-specific maps. The
same layer is used for ResNet-18, -34 and -50.

Methods, selectable by name (:data:`CAM_METHODS`):

``gradcam``
    Selvaraju et al. 2017: channel weights = spatially averaged gradients of the class
    score, weighted sum of the activation maps, ReLU.
``gradcam++``
    Weights from higher-order gradient terms; better when a class shows up in several places.
``hirescam``
    Element-wise gradient x activation, summed over channels: follows the model's
    computation exactly (no averaging of gradients).
``eigencam``
    The first principal component of the activations: no gradients, so the same map
    for every class. pytorch-grad-cam leaves the sign of the component to the SVD, which
    can turn the map inside out; here the sign is chosen so that the largest magnitude is
    positive (Chung and Ying 2025).

Every map is at input resolution and scaled to 0..1 per image (a map with no positive
evidence is all zeros).

Lung region: :func:`lung_region` uses the data's lung masks when present; otherwise the
documented central-chest box :data:`cxrlib.regions.CHEST_BOX` (rows 10 %-85 %, columns
12 %-88 % of the image), which on a well-framed PA film covers both lungs and the heart
but not the shoulders, neck, corner markers or the area below the diaphragm.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction
from scipy.stats import spearmanr
from torch import nn

from .config import CXRError
from .models import cam_target_layer


class SignedEigenCAM(EigenCAM):
    """EigenCAM whose principal component is oriented so that its largest magnitude is
    positive (pytorch-grad-cam's EigenCAM keeps the SVD's arbitrary sign)."""

    def get_cam_image(
        self,
        input_tensor: Any,
        target_layer: Any,
        target_category: Any,
        activations: Any,
        grads: Any,
        eigen_smooth: bool,
    ) -> np.ndarray:
        return get_2d_projection_with_sign_correction(activations)


CAM_METHODS: dict[str, type] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "eigencam": SignedEigenCAM,
}

#: The ResNet's parts from the output down, for the cascading randomization.
TOP_DOWN = ("fc", "layer4", "layer3", "layer2", "layer1", "conv1")


def map_size(size: int) -> int:
    """Side of the ResNet's last activation map for ``size`` px inputs: five stride-2
    steps, each rounding up (2 at 64 px, 4 at 112 or 128 px, 5 at 160 px, 7 at 224 px)."""
    for _ in range(5):
        size = (size + 1) // 2
    return size


def _grad_off(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook of the whole model: no autograd graph for the layers before the target."""
    torch.set_grad_enabled(False)


def _detach_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook of the target layer: autograd back on, and the layer's input a
    fresh leaf that requires grad.

    The gradient Grad-CAM needs (at the target layer's output) is unchanged, but nothing
    before the target layer is recorded or back-propagated (faster), and it works for a
    model whose parameters are frozen.
    """
    torch.set_grad_enabled(True)
    return (args[0].detach().requires_grad_(True), *args[1:])


class CamExplainer:
    """Computes CAMs for one model and method; reuse it for many images (hooks are kept
    until :meth:`close`). The model is put in eval mode.

    >>> with CamExplainer(model, "gradcam") as explainer:
    ...     cams = explainer(batch, target_classes=[0, 2])   # (n, H, W) in 0..1
    """

    def __init__(self, model: nn.Module, method: str = "gradcam", target_layer: nn.Module | None = None) -> None:
        if method not in CAM_METHODS:
            raise CXRError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")
        self.model = model.eval()
        self.method = method
        self.target_layer = target_layer or cam_target_layer(model)
        self._cam = CAM_METHODS[method](model=self.model, target_layers=[self.target_layer])

    def __call__(self, images: torch.Tensor, target_classes: Sequence[int] | None = None) -> np.ndarray:
        """CAMs ``(n, H, W)`` at input resolution, each scaled to 0..1, for prepared images
        ``(n, 1, H, W)``. ``target_classes=None`` explains the predicted class of each image."""
        if images.ndim != 4:
            raise CXRError(f"expected images of shape (n, channels, H, W), got {tuple(images.shape)}")
        targets = None if target_classes is None else [ClassifierOutputTarget(int(c)) for c in target_classes]
        handles = [
            self.model.register_forward_pre_hook(_grad_off),
            self.target_layer.register_forward_pre_hook(_detach_input),
        ]
        try:
            with torch.enable_grad():  # also restores the mode if the forward pass fails
                cams = self._cam(input_tensor=images, targets=targets)
        finally:
            for handle in handles:
                handle.remove()
            self.model.zero_grad(set_to_none=True)
            self._cam.activations_and_grads.clear()
        return np.clip(np.asarray(cams, dtype=np.float32), 0.0, 1.0)

    def close(self) -> None:
        self._cam.activations_and_grads.release()

    def __enter__(self) -> CamExplainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    target_classes: Sequence[int] | None = None,
    method: str = "gradcam",
    batch_size: int = 32,
    layer: str = "layer4",
) -> np.ndarray:
    """CAMs for a stack of prepared images ``(n, 1, H, W)``, in batches: ``(n, H, W)`` in 0..1.
    ``layer``: the stage read (:data:`cxrlib.models.CAM_LAYERS`)."""
    out = []
    with CamExplainer(model, method, cam_target_layer(model, layer)) as explainer:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            classes = None if target_classes is None else list(target_classes[start : start + batch_size])
            out.append(explainer(chunk, classes))
    return np.concatenate(out) if out else np.zeros((0, *images.shape[-2:]), np.float32)


def manual_gradcam(model: nn.Module, image: torch.Tensor, target_class: int) -> dict[str, Any]:
    """Grad-CAM by hand with two torch hooks, step by step, for one image ``(1, 1, H, W)``.

    Returns the activations ``A`` ``(C, h, w)`` of the target layer, the gradients
    ``dy_c/dA``, the channel weights (the gradients averaged over the map), the weighted
    sum before the ReLU, the map after the ReLU, and that map upsampled to ``H x W`` and
    scaled to 0..1 (what :func:`compute_cams` returns).
    """
    model.eval()
    layer = cam_target_layer(model)
    store: dict[str, torch.Tensor] = {}

    def forward_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        store["activations"] = output.detach()
        output.register_hook(lambda grad: store.__setitem__("gradients", grad.detach()))

    handle = layer.register_forward_hook(forward_hook)
    try:
        with torch.enable_grad():
            x = image.detach().clone().requires_grad_(True)
            scores = model(x)
            model.zero_grad(set_to_none=True)
            scores[0, target_class].backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    activations, gradients = store["activations"][0], store["gradients"][0]
    weights = gradients.mean(dim=(1, 2))  # one number per channel
    weighted = (weights[:, None, None] * activations).sum(dim=0)
    relu = weighted.clamp_min(0)
    up = torch.nn.functional.interpolate(relu[None, None], size=image.shape[-2:], mode="bilinear", align_corners=False)
    up = up[0, 0]  # back from (1, 1, H, W)
    up = up - up.min()
    up = up / (up.max() + 1e-7)
    return {
        "activations": activations.numpy(),
        "gradients": gradients.numpy(),
        "weights": weights.numpy(),
        "weighted_sum": weighted.numpy(),
        "relu": relu.numpy(),
        "cam": up.numpy(),
        "score": float(scores[0, target_class].detach()),
    }


def cam_inside_fraction(cams: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Share of CAM energy (sum of the map) inside the region, per image.

    ``regions``: boolean ``(n, H, W)`` or one ``(H, W)`` mask for all. A CAM spread evenly
    over the image gives the region's area share; 1.0 means everything is inside; a map
    that is all zeros gives ``nan``.
    """
    cams = np.asarray(cams, dtype=np.float64)
    if cams.ndim == 2:
        cams = cams[None]
    regions = np.asarray(regions, dtype=bool)
    if regions.shape[-2:] != cams.shape[-2:]:
        raise CXRError(f"regions are {regions.shape[-2:]} but the maps are {cams.shape[-2:]}")
    regions = np.broadcast_to(regions, cams.shape)
    total = cams.sum(axis=(1, 2))
    inside = (cams * regions).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def examples_by_class(labels: np.ndarray, probs: np.ndarray, n: int = 2) -> dict[int, dict[str, list[int]]]:
    """Per true class, the indices of its ``n`` most confident right and ``n`` most
    confident wrong predictions: ``{class: {"right": [...], "wrong": [...]}}``."""
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    out = {}
    for c in sorted(int(k) for k in np.unique(labels)):
        members = np.flatnonzero(labels == c)
        members = members[np.argsort(-confidence[members], kind="stable")]
        right = members[predicted[members] == c]
        wrong = members[predicted[members] != c]
        out[c] = {"right": right[:n].tolist(), "wrong": wrong[:n].tolist()}
    return out


def describe_examples(examples: dict[int, dict[str, list[int]]], classes: Sequence[str], n: int = 2) -> str:
    """One sentence on :func:`examples_by_class`: the classes with fewer than ``n`` right or
    ``n`` wrong predictions, whose cells of a gallery stay empty."""
    gaps = []
    for c, found in examples.items():
        for kind in ("right", "wrong"):
            k = len(found[kind])
            if k < n:
                gaps.append(
                    f"{'no' if k == 0 else f'only {k}'} {kind} prediction{'s' if k > 1 else ''} of {classes[c]}"
                )
    if not gaps:
        return f"Every class has at least {n} right and {n} wrong predictions: no cell is empty."
    return "Empty cells: " + "; ".join(gaps) + "."


def read_inside_shares(
    inside: np.ndarray, area: float, region: str = "central-chest box", map_side: int | None = None
) -> str:
    """One sentence reading a few maps' inside shares (:func:`cam_inside_fraction`) against
    ``area``, the share a uniform map would put inside the region: each share, and how many
    lie above and below the uniform map's (at whole percent, as printed). ``map_side``: the
    cells a side of the maps, said so that coarse maps are read as such."""
    values = [float(v) for v in np.asarray(inside, dtype=float).ravel()]
    shown = [round(100 * v) for v in values if np.isfinite(v)]
    if not shown:
        return "No map has any positive evidence: there is no share to compare."
    uniform = round(100 * area)
    above, below = sum(v > uniform for v in shown), sum(v < uniform for v in shown)
    grid = f" Each map has {map_side}x{map_side} cells." if map_side else ""
    if len(shown) < len(values):
        grid += f" {len(values) - len(shown)} map(s) without positive evidence are left out."
    return (
        f"Inside the {region}: {', '.join(f'{v}%' for v in shown)} of the maps' energy, against {uniform}% for a "
        f"uniform map: {above} of {len(shown)} above it, {below} below, {len(shown) - above - below} level."
        f"{grid}"
    )


def overlay(image: Any, cam: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """An RGB float image (0..1): the gray X-ray (``uint8``, or floats in 0..1) with the CAM
    as a jet heatmap on top."""
    gray = np.asarray(image, dtype=np.float32).squeeze()
    if np.asarray(image).dtype == np.uint8 or gray.max() > 1.5:
        gray = gray / 255.0
    heat = matplotlib.colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    return np.clip((1 - alpha) * gray[..., None] + alpha * heat, 0, 1)


def randomize_top_layers(model: nn.Module, upto: str = "layer4", seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose parts from ``fc`` down to ``upto`` (see :data:`TOP_DOWN`)
    are re-initialized: the cascading randomization of Adebayo et al. 2018. The default
    stops at ``layer4``, the layer Grad-CAM reads. ``model`` itself is not changed."""
    if upto not in TOP_DOWN:
        raise CXRError(f"upto must be one of {', '.join(TOP_DOWN)}, not {upto!r}")
    clone = copy.deepcopy(model)
    saved = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        for name in TOP_DOWN[: TOP_DOWN.index(upto) + 1]:
            for module in getattr(clone, name).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()  # convolutions, linear layers, batch norms (and their statistics)
    finally:
        torch.set_rng_state(saved)
    return clone.eval()


def method_agreement(
    model: nn.Module,
    images: torch.Tensor,
    target_classes: Sequence[int],
    methods: Sequence[str] = tuple(CAM_METHODS),
    layer: str = "layer4",
) -> Any:
    """Each method's maps against Grad-CAM's at one ``layer``, for the same images and
    classes: the mean Spearman rank correlation and the largest pixel difference
    (:func:`agreement_table`).

    At ``layer4`` of a ResNet, global average pooling and one linear layer follow: the
    gradient of a class score is the same at every position of a channel, so Grad-CAM's
    channel weights are the classifier's weights divided by the number of positions, and
    HiResCAM (gradient times activation, position by position) gives Grad-CAM's map
    exactly. Grad-CAM's weighted sum is the original CAM of Zhou et al. (which has no
    ReLU) divided by that number: after the ReLU and the 0..1 scaling, both give the
    positive part of CAM. At ``layer3`` the gradients vary over positions, and the methods
    part ways.
    """
    reference = compute_cams(model, images, target_classes, "gradcam", layer=layer)
    maps = {
        m: reference if m == "gradcam" else compute_cams(model, images, target_classes, m, layer=layer) for m in methods
    }
    return agreement_table(maps, layer=layer, reference=reference)


def agreement_table(maps: dict[str, np.ndarray], layer: str = "layer4", reference: np.ndarray | None = None) -> Any:
    """Maps of several methods (``{method: maps}``, one map ``(H, W)`` or a stack ``(n, H, W)``
    each, for the same images and classes) against Grad-CAM's (``reference``, else
    ``maps["gradcam"]``): one row per method with the ``layer``, the mean Spearman rank
    correlation and the largest pixel difference, as :func:`read_agreement` reads them."""
    if reference is None:
        if "gradcam" not in maps:
            raise CXRError("agreement_table needs Grad-CAM's maps (a 'gradcam' entry or reference=)")
        reference = maps["gradcam"]
    reference = np.asarray(reference, dtype=float)
    reference = reference[None] if reference.ndim == 2 else reference
    rows = []
    for m, stack in maps.items():
        stack = np.asarray(stack, dtype=float)
        stack = stack[None] if stack.ndim == 2 else stack
        rho = [_spearman(a, b) for a, b in zip(reference, stack)]
        rows.append(
            {
                "method": m,
                "layer": layer,
                "mean Spearman with gradcam": float(np.nanmean(rho)),
                "largest pixel difference": float(np.abs(stack - reference).max()),
            }
        )
    return pd.DataFrame(rows).set_index("method")


def read_agreement(agreement: Any, same_below: float = 1e-4) -> str:
    """One sentence naming the methods whose maps equal Grad-CAM's (largest pixel difference
    below ``same_below``) and those that differ, with their mean Spearman correlation and
    largest pixel difference."""
    layer = str(agreement["layer"].iloc[0])
    others = agreement.drop(index="gradcam", errors="ignore")
    same = [m for m, row in others.iterrows() if row["largest pixel difference"] < same_below]
    differ = [
        f"{m} (Spearman {row['mean Spearman with gradcam']:.2f}, largest pixel difference "
        f"{row['largest pixel difference']:.2f})"
        for m, row in others.iterrows()
        if row["largest pixel difference"] >= same_below
    ]
    return (
        f"At {layer}: the same map as Grad-CAM: {', '.join(same) or 'no method'}; a different map: "
        f"{', '.join(differ) or 'no method'}."
    )


def read_method_checks(similarity: dict[str, float], reference: str = "gradcam") -> str:
    """One sentence reading the randomization check of several methods (``{method: mean
    absolute Spearman similarity}``, e.g. :func:`sanity_check` per method): which methods
    give ``reference``'s similarity (at two decimals, as printed) and which method passes
    worst, its maps depending least on the randomized weights (the highest similarity)."""
    values = {m: round(float(v), 2) for m, v in similarity.items() if np.isfinite(v)}
    if not values:
        return "No method has a defined similarity (every map constant)."
    ordered = ", ".join(f"{m} {v:.2f}" for m, v in sorted(values.items(), key=lambda mv: mv[1]))
    text = f"Similarity, trained vs randomized, from lowest to highest: {ordered}."
    if reference in values:
        same = [m for m, v in values.items() if m != reference and v == values[reference]]
        text += f" The same as {reference}'s: {', '.join(same) or 'no method'}."
    worst = max(values, key=values.get)  # type: ignore[arg-type]
    return f"{text} The worst pass, whose maps depend least on the randomized weights: {worst} ({values[worst]:.2f})."


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps. A constant map carries no ranking, so it is
    0 against a non-constant one (nothing of the original ordering survives) and ``nan``
    when both are constant."""
    flat_a, flat_b = np.ptp(a) == 0, np.ptp(b) == 0
    if flat_a and flat_b:
        return float("nan")
    if flat_a or flat_b:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def sanity_check(
    model: nn.Module,
    images: torch.Tensor,
    target_classes: Sequence[int] | None = None,
    method: str = "gradcam",
    upto: str = "layer4",
    seed: int = 0,
    trained: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compare CAMs of the trained model with CAMs of the same model after randomizing its
    top layers (down to ``upto``). Returns per-image Spearman rank correlations
    (``spearman``), their mean (``mean_spearman``) and both sets of maps.

    If the maps barely change (absolute correlation near 1), they reflect the input and
    the architecture, not what the model learned: the explanation fails the check. Per
    image, ``spearman`` keeps the sign; ``mean_abs_spearman`` averages the absolute values,
    as Adebayo et al. do. By default
    the maps of the *trained* model's predicted classes are compared (``trained``: those
    maps, when already computed).
    """
    if target_classes is None:
        with torch.no_grad():
            target_classes = model.eval()(images).argmax(dim=1).tolist()
    if trained is None:
        trained = compute_cams(model, images, target_classes, method)
    randomized = compute_cams(randomize_top_layers(model, upto, seed), images, target_classes, method)
    rho = np.array([_spearman(a, b) for a, b in zip(trained, randomized)], dtype=float)
    # Adebayo et al. compare absolute rank correlations: a map turned inside out (rho near
    # -1) still follows the same structure of the image, so it is similar, not dissimilar
    mean = float(np.nanmean(np.abs(rho))) if np.isfinite(rho).any() else float("nan")
    return {"spearman": rho, "mean_abs_spearman": mean, "trained": trained, "randomized": randomized, "upto": upto}


def sanity_cascade(
    model: nn.Module,
    images: torch.Tensor,
    target_classes: Sequence[int] | None = None,
    method: str = "gradcam",
    seed: int = 0,
    depth: int = 4,
) -> dict[str, float]:
    """Mean absolute Spearman similarity after randomizing ``fc``, then ``fc`` + ``layer4``,
    and so on for ``depth`` steps of :data:`TOP_DOWN`: ``{deepest part randomized: similarity}``."""
    if target_classes is None:
        with torch.no_grad():
            target_classes = model.eval()(images).argmax(dim=1).tolist()
    trained = compute_cams(model, images, target_classes, method)
    return {
        part: sanity_check(model, images, target_classes, method, part, seed, trained)["mean_abs_spearman"]
        for part in TOP_DOWN[:depth]
    }


def read_cascade(cascade: dict[str, float]) -> str:
    """One sentence reading :func:`sanity_cascade` along its whole path: the similarity
    after the first randomization, then each run of steps in which it fell, rose or stayed
    (at two decimals, as printed); when it changed direction, where it was lowest."""
    parts = list(cascade)
    values = [round(float(cascade[p]), 2) for p in parts]
    if not all(np.isfinite(values)):
        undefined = ", ".join(p for p, v in zip(parts, values) if not np.isfinite(v))
        return f"Mean absolute Spearman similarity undefined (every map constant) with {undefined} randomized."
    runs: list[tuple[str, int]] = []  # (direction, index of the run's last step)
    for k in range(1, len(values)):
        step = "rose" if values[k] > values[k - 1] else "fell" if values[k] < values[k - 1] else "stayed"
        if runs and runs[-1][0] == step:
            runs[-1] = (step, k)
        else:
            runs.append((step, k))
    lowest = int(np.argmin(values)) if len(runs) > 1 and values.count(min(values)) == 1 else None
    mark = {k: " (its lowest)" if k == lowest else "" for k in range(len(values))}
    text = f"Mean absolute Spearman similarity {values[0]:.2f} with {parts[0]} randomized{mark[0]}"
    moves = [
        f"{'stayed at' if step == 'stayed' else step + ' to'} {values[k]:.2f} with everything down to "
        f"{parts[k]} randomized{mark[k]}"
        for step, k in runs
    ]
    return text + ("; it " + ", then ".join(moves) if moves else "") + "."
