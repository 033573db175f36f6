"""Benchmarks that print numbers (``cxr bench --json``); never used as timed tests.

``train_images_per_s_model``: training steps of the model alone on batches already in
memory. ``train_images_per_s_loader``: the same steps fed by the real loader (cached
pixels, augmentation, collation). ``loader_ratio`` is the second over the first: 1.0
means the input pipeline costs nothing. Both are measured in the same run, alternating,
and the median of the rounds is reported, because a shared CPU is noisy.
"""

from __future__ import annotations

import statistics
import time
import warnings
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
