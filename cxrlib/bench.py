"""Benchmarks that print numbers (``cxr bench --json``); never used as timed tests.

``train_images_per_s_model``: training steps of the model alone on batches already in
memory. ``train_images_per_s_loader``: the same steps fed by the real loader (cached
pixels, augmentation, collation). ``loader_ratio`` is the second over the first: 1.0
means the input pipeline costs nothing. Both are measured in the same run, alternating,
and the median of the rounds is reported, because a shared CPU is noisy.

``explorer_ms_p50`` / ``explorer_ms_p95``: one step of the prediction explorer as chapter 6
uses it (:meth:`cxrlib.widgets.Explorer.step`: prediction lookup, a Grad-CAM never computed
before, drawing into the reused figure and JPEG encoding), for a trained run's test images,
at the run's image size and at 224 px, on the CPU, after a few warm-up steps.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .config import CXRError
from .data import CXRDataset
from .models import build_model
from .transforms import AugmentConfig, data_normalization, train_transform
from .widgets import STEP_THREADS, Explorer


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


def bench_training(
    data: Any,
    *,
    img_size: int = 128,
    batch_size: int = 32,
    steps: int = 8,
    rounds: int = 3,
    workers: int = 0,
    arch: str = "resnet18",
) -> dict[str, Any]:
    """Model-only vs real-loader training throughput (images per second)."""
    torch.manual_seed(0)
    pixels = data.pixels(img_size, progress=False)
    train_idx = data.indices("train")
    norm = data_normalization(pixels, train_idx)
    dataset = CXRDataset(pixels, data.labels(), train_idx, transform=train_transform(norm, AugmentConfig()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = build_model(arch, len(data.classes), pretrained="no")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fixed = [
        (torch.randn(batch_size, 1, img_size, img_size), torch.randint(0, len(data.classes), (batch_size,)))
        for _ in range(steps)
    ]
    _train_steps(model, optimizer, fixed, 2)  # warm-up: allocator, kernels
    model_rates, loader_rates = [], []
    for _ in range(rounds):
        n, dt = _train_steps(model, optimizer, fixed, steps)
        model_rates.append(n / dt)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
            generator=torch.Generator().manual_seed(0),
        )
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


#: Milliseconds within which an explorer step feels instant (chapter 6, ``cxr bench``):
#: the median's goal; the 95th percentile's is :data:`STEP_TARGET_P95_MS`.
STEP_TARGET_MS = 150
STEP_TARGET_P95_MS = 250
#: The size at which the goals are set (a reader's model at the book's full 224 px).
STEP_TARGET_SIZE = 224


def bench_explorer(
    run: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    sizes: Sequence[int] | None = None,
    steps: int = 30,
    warmup: int = 3,
    method: str = "gradcam",
) -> dict[str, Any]:
    """Milliseconds per step of the explorer as chapter 6 uses it: :meth:`Explorer.from_run
    <cxrlib.widgets.Explorer.from_run>` on the trained ``run``, each step a test image whose
    CAM was never computed (prediction lookup, CAM, drawing, JPEG encoding), after
    ``warmup`` steps; at the run's own image size and at :data:`STEP_TARGET_SIZE` (default
    ``sizes``). Returns the median and 95th percentile per size; ``explorer_ms_p50`` and
    ``explorer_ms_p95`` are those at the last size."""
    out: dict[str, Any] = {}
    explorer = Explorer.from_run(run, data_dir, split="test", method=method)
    own = int(explorer.pred.images.shape[-1])  # type: ignore[union-attr]
    for size in list(sizes) if sizes is not None else list(dict.fromkeys([own, STEP_TARGET_SIZE])):
        if size != own:
            explorer.close()
            explorer = Explorer.from_run(run, data_dir, split="test", method=method, img_size=size)
        n = len(explorer.pred)
        if n == 0:
            raise CXRError("the run's test split is empty: nothing to time")
        times = time_explorer_steps(explorer, [k % n for k in range(warmup + steps)])[warmup:]
        out[f"explorer_ms_p50_{size}px"] = round(float(np.percentile(times, 50)), 1)
        out[f"explorer_ms_p95_{size}px"] = round(float(np.percentile(times, 95)), 1)
        out["explorer_ms_p50"], out["explorer_ms_p95"] = (
            out[f"explorer_ms_p50_{size}px"],
            out[f"explorer_ms_p95_{size}px"],
        )
        out["explorer_img_size"] = size
    explorer.close()
    out.update(
        {
            "explorer_run": Path(run).name,
            "explorer_steps": steps,
            "explorer_method": method,
            "explorer_threads": STEP_THREADS,
        }
    )
    return out


def describe_explorer_bench(numbers: dict[str, Any]) -> str:
    """One sentence per size measured by :func:`bench_explorer`: median and 95th
    percentile, and whether they are within the goals (:data:`STEP_TARGET_MS`,
    :data:`STEP_TARGET_P95_MS` at :data:`STEP_TARGET_SIZE` px)."""
    sizes = sorted(int(k.split("_")[-1][:-2]) for k in numbers if k.startswith("explorer_ms_p50_"))
    parts = []
    for size in sizes:
        p50, p95 = numbers[f"explorer_ms_p50_{size}px"], numbers[f"explorer_ms_p95_{size}px"]
        text = f"at {size} px: median {p50:.0f} ms, 95th percentile {p95:.0f} ms"
        if size == STEP_TARGET_SIZE:
            met = p50 <= STEP_TARGET_MS and p95 <= STEP_TARGET_P95_MS
            text += (
                f" ({'within' if met else 'not within'} the goals of a median of at most {STEP_TARGET_MS} ms "
                f"and a 95th percentile of at most {STEP_TARGET_P95_MS} ms)"
            )
        parts.append(text)
    threads = numbers["explorer_threads"]
    return (
        f"Explorer step with a new CAM ({numbers['explorer_method']}, {numbers['explorer_steps']} steps, "
        f"{threads} {'thread' if threads == 1 else 'threads'} per CAM): " + "; ".join(parts) + "."
    )
