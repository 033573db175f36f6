"""Benchmarks that print numbers (``cxr bench --json``); never used as timed tests.

``train_images_per_s_model``: training steps of the model alone on batches already in
memory. ``train_images_per_s_loader``: the same steps fed by the real loader (cached
pixels, augmentation, collation). ``loader_ratio`` is the second over the first: 1.0
means the input pipeline costs nothing. Both are measured in the same run, alternating,
and the median of the rounds is reported, because a shared CPU is noisy.

``explorer_ms_p50`` / ``explorer_ms_p95``: one step of the prediction explorer
(:meth:`cxrlib.widgets.Explorer.step`: prediction lookup, a Grad-CAM never computed
before, drawing into the reused figure and PNG encoding), for an untrained ResNet-18 on
the data's test images at 224 px, on the CPU, after a few warm-up steps.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .models import build_model
from .transforms import AugmentConfig, data_normalization, train_transform


def _train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Any, steps: int) -> tuple[int, float]:
    criterion = nn.CrossEntropyLoss()
    model.train()
    seen = 0
    t0 = time.perf_counter()
    for step, (images, target) in enumerate(batches):
        if step >= steps:
            break
        loss = criterion(model(images), torch.as_tensor(target))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(target)
    return seen, time.perf_counter() - t0


def bench_training(data: Any, *, img_size: int = 128, batch_size: int = 32, steps: int = 8, rounds: int = 3,
                   workers: int = 0, arch: str = "resnet18") -> dict[str, Any]:  # fmt: skip
    """Model-only vs real-loader training throughput (images per second)."""
    from .data import CXRDataset

    torch.manual_seed(0)
    pixels = data.pixels(img_size, progress=False)
    train_idx = data.indices("train")
    norm = data_normalization(pixels, train_idx)
    dataset = CXRDataset(pixels, data.labels(), train_idx, transform=train_transform(norm, AugmentConfig()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = build_model(arch, len(data.classes), pretrained="no")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fixed = [(torch.randn(batch_size, 1, img_size, img_size), torch.randint(0, len(data.classes), (batch_size,)))
             for _ in range(steps)]  # fmt: skip
    _train_steps(model, optimizer, fixed, 2)  # warm-up: allocator, kernels
    model_rates, loader_rates = [], []
    for _ in range(rounds):
        n, dt = _train_steps(model, optimizer, fixed, steps)
        model_rates.append(n / dt)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
        n, dt = _train_steps(model, optimizer, iter(loader), steps)
        loader_rates.append(n / dt)
    model_rate, loader_rate = statistics.median(model_rates), statistics.median(loader_rates)
    return {
        "train_images_per_s_loader": round(loader_rate, 2),
        "train_images_per_s_model": round(model_rate, 2),
        "loader_ratio": round(loader_rate / model_rate, 3),
        "img_size": img_size, "batch_size": batch_size, "steps": steps, "rounds": rounds, "workers": workers,
        "arch": arch, "threads": torch.get_num_threads(),
    }  # fmt: skip


def time_explorer_steps(explorer: Any, indices: Sequence[int]) -> list[float]:
    """Milliseconds of each ``explorer.step(i)`` for ``i`` in ``indices``; the CAM cache is
    cleared before every step, so each one computes its map as a new image would."""
    times = []
    for index in indices:
        explorer.clear_cache()
        start = time.perf_counter()
        explorer.step(int(index))
        times.append((time.perf_counter() - start) * 1000)
    return times


#: Milliseconds within which an explorer step feels instant (chapter 6, ``cxr bench``).
STEP_TARGET_MS = 150


def describe_steps(times: Sequence[float], size: int, warmup: int = 2) -> str:
    """One sentence reading :func:`time_explorer_steps`: median and slowest step after
    ``warmup`` steps, and whether the median is within :data:`STEP_TARGET_MS`."""
    timed = list(times)[warmup:]
    median, slowest = float(statistics.median(timed)), float(max(timed))
    verdict = "within" if median <= STEP_TARGET_MS else "over"
    return (f"per step at {size} px: median {median:.0f} ms, slowest {slowest:.0f} ms (after {warmup} warm-up "
            f"steps): the median is {verdict} the {STEP_TARGET_MS} ms a step should take")  # fmt: skip


def bench_explorer(data: Any, *, img_size: int = 224, steps: int = 30, warmup: int = 3, arch: str = "resnet18",
                   method: str = "gradcam") -> dict[str, Any]:  # fmt: skip
    """Milliseconds per explorer step (median and 95th percentile over ``steps``)."""
    import numpy as np

    from .evaluate import Predictions, predict_images
    from .train import LoadedModel, TrainConfig
    from .transforms import Preprocessing
    from .widgets import Explorer

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = build_model(arch, len(data.classes), pretrained="no")
    from .data import PixelCache

    chosen = data.indices("test")
    if len(chosen) == 0:
        chosen = data.indices("all")
    chosen = np.sort(chosen[: warmup + steps])
    # decode only these images (not the whole database) at the explorer's size
    images = np.asarray(PixelCache(data.root, [data.records[i] for i in chosen], img_size).load(progress=False))
    loaded = LoadedModel(model.eval(), list(data.classes), Preprocessing(img_size, data_normalization(images)),
                         TrainConfig(arch=arch, img_size=img_size, pretrained="no"), 0, {})  # fmt: skip
    probs = predict_images(loaded, images, device="cpu")
    labels = data.labels()[chosen]
    paths = [data.records[i].path for i in chosen]
    explorer = Explorer(loaded, Predictions(probs, labels, list(data.classes), paths, str(data.root), images),
                        method=method)  # fmt: skip
    times = time_explorer_steps(explorer, [k % len(images) for k in range(warmup + steps)])[warmup:]
    explorer.close()
    return {
        "explorer_ms_p50": round(float(np.percentile(times, 50)), 1),
        "explorer_ms_p95": round(float(np.percentile(times, 95)), 1),
        "explorer_img_size": img_size, "explorer_steps": steps, "explorer_method": method,
    }  # fmt: skip
