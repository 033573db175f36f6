"""A trained model on disk and back: checkpoints, the device, and the one prediction path.

A checkpoint (``best.pt``, ``last.pt`` of a run folder) is written to a temporary file and
renamed, holds only tensors and plain Python values (it loads with
``torch.load(weights_only=True)``: a file that would need pickled code is refused), and
carries the class names and preprocessing, so a checkpoint alone can predict.

Every prediction in the book (``cxr evaluate``, ``cxr predict``, chapter 4's metrics, the
explorer, Grad-CAM's choice of class) goes through :func:`predict_images` /
:func:`predict_proba` on a :class:`LoadedModel`, so they all see the same probabilities.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import CXRError
from .data import CXRDataset
from .models import build_model
from .recipe import TrainConfig
from .transforms import Preprocessing, eval_transform

CHECKPOINT_FORMAT = 1


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA, then Apple MPS, then CPU (or ``requested`` as given)."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", local % torch.cuda.device_count())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """Write ``obj`` with ``torch.save`` to a temporary file, then rename it: a run killed
    mid-write leaves the previous checkpoint whole."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``).

    Raises:
        CXRError: the file is missing, not a checkpoint, or would need pickle code
            execution to load (refused: it could run arbitrary code).
    """
    path = Path(path)
    if not path.is_file():
        raise CXRError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported content"
        raise CXRError(
            f"refusing to load {path}: it is not a plain-weights checkpoint and loading it would run "
            f"pickled code ({first[:160]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CXRError(f"{path} is not a readable checkpoint ({str(err).splitlines()[0][:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt:
        raise CXRError(f"{path} is not a cxrlib checkpoint")
    return ckpt


@dataclass
class LoadedModel:
    """A model ready to predict, with what it needs to prepare an image."""

    model: nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    config: TrainConfig
    epoch: int
    metrics: dict[str, Any]

    @property
    def transform(self) -> Callable[..., Any]:
        return eval_transform(self.preprocessing.normalization)

    def at_size(self, img_size: int) -> LoadedModel:
        """The same model, given its images at ``img_size`` px instead of its own size."""
        return replace(self, preprocessing=replace(self.preprocessing, img_size=img_size))


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network of a checkpoint (a run folder means its ``best.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    return model_from_checkpoint(load_checkpoint(path), device)


def model_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> LoadedModel:
    """The :class:`LoadedModel` of a checkpoint already read by :func:`load_checkpoint`."""
    config = TrainConfig.from_dict(ckpt["config"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = build_model(config.arch, len(ckpt["classes"]), pretrained="no")
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return LoadedModel(
        model,
        list(ckpt["classes"]),
        Preprocessing.from_dict(ckpt["preprocessing"]),
        config,
        int(ckpt["epoch"]),
        dict(ckpt.get("metrics", {})),
    )


@torch.no_grad()
def predict_proba(
    model: nn.Module, loader: DataLoader, device: torch.device, *, progress: bool = False, desc: str = "predicting"
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and labels over a loader (model put in eval mode)."""
    model.eval()
    probs, labels = [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images, target = batch[0], batch[1]
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(images)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(torch.as_tensor(target))
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def predict_images(
    loaded: LoadedModel, images: np.ndarray, *, device: str | None = None, batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """Softmax probabilities for ``uint8`` images ``(n, size, size)`` at the model's size,
    through the checkpoint's eval transform (the code path of validation in training)."""
    if len(images) == 0:
        return np.zeros((0, len(loaded.classes)), np.float32)
    size = loaded.preprocessing.img_size
    if tuple(images.shape[1:]) != (size, size):
        raise CXRError(f"images are {images.shape[1]}x{images.shape[2]} px, the model expects {size}x{size}")
    dataset = CXRDataset(images, np.zeros(len(images), np.int64), transform=loaded.transform, classes=loaded.classes)
    dev = pick_device(device)
    before = next(loaded.model.parameters()).device
    loaded.model.to(dev)
    try:
        probs, _ = predict_proba(
            loaded.model, DataLoader(dataset, batch_size=batch_size, shuffle=False), dev, progress=progress
        )
    finally:
        loaded.model.to(before)  # the caller's model stays where the caller put it
    return probs


def model_input(loaded: LoadedModel, images: np.ndarray) -> torch.Tensor:
    """``uint8`` images ``(n, size, size)`` as the normalized float tensor ``(n, 1, size, size)``."""
    batch = torch.from_numpy(np.array(images, dtype=np.uint8))[:, None]  # a copy: the cache is read-only
    return loaded.transform(batch).as_subclass(torch.Tensor).float()


def cpu_model(model: nn.Module) -> nn.Module:
    """``model`` on the CPU in eval mode, without moving or switching the caller's: the
    model itself when it already is on the CPU in eval mode, else a copy (Grad-CAM and the
    explorer work on the CPU, and a caller training on a GPU must find its model as it
    left it)."""
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if on_cpu and not model.training:
        return model
    return copy.deepcopy(model).cpu().eval()


def run_data_dir(run_dir: str | os.PathLike[str] | None) -> str | None:
    """The data folder a run folder belongs to on this machine, or ``None``: ``done.json``'s
    (written by :func:`cxrlib.runs.ensure_run`, also for a run downloaded from the published
    book, whose ``config.json`` names the folder of the machine that trained it), else
    ``config.json``'s."""
    if run_dir is None:
        return None
    for name in ("done.json", "config.json"):
        try:
            found = json.loads((Path(run_dir) / name).read_text()).get("data_dir")
        except (OSError, ValueError, AttributeError):
            continue
        if found:
            return str(found)
    return None
