"""The training engine: one loop for notebooks, the ``cxr train`` command and torchrun.

A run folder holds

* ``config.json``: the :class:`TrainConfig` and where the data came from;
* ``split.csv``: the split used (reused on ``--resume``);
* ``history.json``: one entry per epoch (loss, accuracy, macro AUC, learning rate, time);
* ``last.pt`` every epoch and ``best.pt`` when validation macro AUC improves.

Checkpoints are written to a temporary file and renamed, hold only tensors and plain
Python values (they load with ``torch.load(weights_only=True)``), and carry the class
names and preprocessing, so a checkpoint alone can predict.

Reproducibility: every epoch reseeds the shuffling and the augmentation from
``(seed, epoch)``, so an epoch is a pure function of the weights and optimizer state at
its start. A run killed at any moment and resumed from ``last.pt`` therefore ends with
the same numbers as an uninterrupted one (on CPU; GPU kernels may differ in the last bits).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import CXRError, resolve_data_dir, runs_dir
from .data import CXRData, CXRDataset
from .metrics import macro_auc
from .models import ARCHITECTURES, build_model, set_backbone_trainable
from .regions import REGIONS
from .transforms import (
    IMAGENET_NORMALIZATION,
    AugmentConfig,
    Preprocessing,
    data_normalization,
    eval_transform,
    train_transform,
)

CHECKPOINT_FORMAT = 1
OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Presets are in :data:`PRESETS`."""

    preset: str = "custom"
    arch: str = "resnet18"
    img_size: int = 128
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.05
    class_weighting: bool = False
    pretrained: str = "auto"
    freeze_backbone: bool = False
    #: images drawn per epoch; ``None``: as many as the training split holds. A preset fixes
    #: this, so its budget (``epochs * epoch_images``) and its schedule do not depend on the
    #: size of the data: a larger training split gives more distinct images, not more steps.
    epoch_images: int | None = None
    #: draw each epoch's images with equal numbers per class (see :func:`epoch_positions`)
    balanced: bool = True
    #: with ``balanced``: relative weights of some classes' draws (a class not named weighs
    #: 1), e.g. ``{"Lung_Opacity": 0.5}`` spends half as many draws on that class
    class_shares: dict[str, float] | None = None
    #: after training, fit one offset per class to the logits on the validation split
    #: (minimum log-loss) and fold it into the classifier's bias (see :func:`fit_class_offsets`)
    class_offsets: bool = False
    optimizer: str = "adamw"  # "adamw", or "sgd" (Nesterov momentum 0.9)
    #: decay of an exponential moving average of the weights (``None``: off); when on, the
    #: average is what is validated and saved in ``best.pt``
    ema_decay: float | None = None
    patience: int | None = None  # epochs without a better validation macro AUC before stopping
    #: a safety net, not a schedule: stop before an epoch that would end past this budget
    max_minutes: float | None = None
    seed: int = 0  # initial weights, augmentation, the order of the draws
    #: the train/valid/test split: fixed, so runs with other ``seed`` values are measured on
    #: the same validation images and never see the test images of the book's run
    split_seed: int = 0
    fast_subset: bool = False  # keep a small stratified subset of the data (CI)
    valid_size: int = 400
    test_size: int = 400
    region: str = "full"
    workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["augment"] = self.augment.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        values["augment"] = AugmentConfig.from_dict(values.get("augment", {}))
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def validate(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise CXRError(f"unknown architecture {self.arch!r}; choose from {', '.join(ARCHITECTURES)}")
        if self.pretrained not in ("auto", "yes", "no"):
            raise CXRError(f"--pretrained must be auto, yes or no, not {self.pretrained!r}")
        if self.optimizer not in OPTIMIZERS:
            raise CXRError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if self.epoch_images is not None and self.epoch_images < 1:
            raise CXRError("--epoch-images must be at least 1")
        if self.class_shares is not None and any(not (w > 0) for w in self.class_shares.values()):
            raise CXRError("class_shares must be positive weights, e.g. {'Lung_Opacity': 0.5}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise CXRError("ema_decay must be between 0 and 1")
        if self.region not in REGIONS:
            raise CXRError(f"--region must be one of {', '.join(REGIONS)}, not {self.region!r}")
        for name in ("img_size", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise CXRError(f"--{name.replace('_', '-')} must be at least 1")
        if self.img_size < 32:
            raise CXRError("--img-size must be at least 32 (a ResNet downsamples 32 times)")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise CXRError("--max-minutes must be positive")


PRESETS: dict[str, TrainConfig] = {
    # CI: a few seconds of real training on the fast subset.
    "fast": TrainConfig(
        preset="fast",
        img_size=64,
        epochs=2,
        batch_size=32,
        lr=2e-3,
        fast_subset=True,
        valid_size=40,
        test_size=40,
        warmup_fraction=0.3,
    ),  # fmt: skip
    # The laptop recipe: 2 CPU cores, at most 15 minutes, no pretrained weights needed. A
    # budget of 22 x 2,000 class-balanced images, whatever the size of the data; each choice
    # was measured on the sample's validation split with two seeds (cxrlib/recipe_runs.csv,
    # chapter 3). max_minutes is only the safety net for a slower machine.
    # Noise and blur are off: the one change that was ahead of the starting recipe at both
    # seeds (by 9 and 7 images of 400; McNemar p 0.08 and 0.14, so a lead, not a proof).
    # Class offsets: the network sends doubtful COVID images to Normal; offsets fitted on the
    # validation split balance the two (cross-fitted on validation: recipe_posthoc.json).
    "cpu": TrainConfig(
        preset="cpu",
        arch="resnet18-w32",
        img_size=160,
        epochs=22,
        epoch_images=2000,
        batch_size=32,
        lr=2e-3,
        ema_decay=0.997,
        max_minutes=14.5,
        augment=AugmentConfig(noise=0.0, blur=0.0),
        class_offsets=True,
    ),  # fmt: skip
    # GPU, the whole database, 224 px, ImageNet weights.
    "full": TrainConfig(
        preset="full", img_size=224, epochs=20, batch_size=64, lr=1e-3, pretrained="auto", patience=6, workers=4
    ),  # fmt: skip
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A preset with some fields changed, e.g. ``preset("cpu", epochs=3)``."""
    if name not in PRESETS:
        raise CXRError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    cfg = replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    cfg.validate()
    return cfg


# --------------------------------------------------------------------------- devices


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


def _distributed() -> tuple[int, int]:
    """``(rank, world_size)``; initializes the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


# --------------------------------------------------------------------------- checkpoints


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(x) for x in state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    return LoadedModel(model, list(ckpt["classes"]), Preprocessing.from_dict(ckpt["preprocessing"]), config,
                       int(ckpt["epoch"]), dict(ckpt.get("metrics", {})))  # fmt: skip


# --------------------------------------------------------------------------- evaluation during training


@torch.no_grad()
def predict_proba(model: nn.Module, loader: DataLoader, device: torch.device, *, progress: bool = False,
                  desc: str = "predicting") -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
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


def basic_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and macro one-vs-rest AUC (over the classes present in ``labels``)."""
    acc = float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")
    return {"accuracy": acc, "macro_auc": macro_auc(probs, labels)}


# --------------------------------------------------------------------------- what an epoch draws


def _stream_slice(members: np.ndarray, start: int, stop: int, key: tuple[int, ...]) -> np.ndarray:
    """Items ``start..stop`` of an endless stream made of successive random permutations of
    ``members`` (permutation ``k`` seeded by ``(*key, k)``): every member is drawn once
    before any is drawn twice, and any slice is computed without the ones before it."""
    n = len(members)
    out = [np.random.default_rng([*key, cycle]).permutation(members)
           for cycle in range(start // n, (stop - 1) // n + 1)]  # fmt: skip
    offset = (start // n) * n
    return np.concatenate(out)[start - offset : stop - offset]


def epoch_positions(labels: np.ndarray, epoch_images: int, *, seed: int, epoch: int, balanced: bool = True,
                    weights: dict[int, float] | None = None) -> np.ndarray:  # fmt: skip
    """The training items (positions into ``labels``) that epoch ``epoch`` shows, in order.

    ``balanced``: each class gets ``epoch_images / n_classes`` draws (the remainder goes to
    the first classes), so a class with 6,000 images and one with 1,300 weigh the same, and
    a small class repeats (with fresh augmentation) rather than being outweighed.
    ``weights`` (label -> relative weight, 1 for a label not given) tilts those shares, e.g.
    away from a class the network learns in its first epoch. Within a
    class, draws walk through random permutations of its images, continuing from epoch to
    epoch, so every image is shown once before any is shown twice: on a large split, later
    epochs see new images instead of the same subset again.

    Not balanced: the same walk over all images together (``epoch_images`` equal to the
    split's size gives the usual "one shuffled pass per epoch").

    A pure function of its arguments, so a resumed run draws exactly what the uninterrupted
    run would have drawn.
    """
    labels = np.asarray(labels)
    if epoch_images < 1 or len(labels) == 0:
        raise CXRError("an epoch needs at least one image and a non-empty training split")
    if balanced:
        present = np.unique(labels)
        weight = np.array([(weights or {}).get(int(c), 1.0) for c in present], dtype=np.float64)
        share = np.floor(epoch_images * weight / weight.sum()).astype(np.int64)
        share[: epoch_images - share.sum()] += 1
        parts = [_stream_slice(np.flatnonzero(labels == c), epoch * k, (epoch + 1) * k, (seed, 1, int(c)))
                 for c, k in zip(present, share) if k]  # fmt: skip
        drawn = np.concatenate(parts)
    else:
        drawn = _stream_slice(np.arange(len(labels)), epoch * epoch_images, (epoch + 1) * epoch_images, (seed, 2))
    return np.random.default_rng([seed, 3, epoch]).permutation(drawn)


def ema_model(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights and BatchNorm buffers.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the
    average does not drag the random initial weights along for the first thousand steps.
    """

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        if averaged[0].is_floating_point():  # AveragedModel calls this once per dtype
            torch._foreach_lerp_(averaged, current, weight)
        else:  # BatchNorm's batch counters: copied, not averaged
            torch._foreach_copy_(averaged, current)

    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum 0.9, at ``config.lr`` (the schedule's peak)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_epoch: int
    best_metrics: dict[str, Any]
    stopped: str  # "completed", "early-stopping", "time-budget"
    pretrained_used: bool


def _seed_epoch(seed: int, epoch: int) -> None:
    """Seed every global generator for this epoch (the augmentations draw from them)."""
    mixed = seed * 1_000_003 + epoch
    torch.manual_seed(mixed)
    random.seed(mixed)
    np.random.seed(mixed % (2**32))


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def prepare_run_dir(out: str | os.PathLike[str], *, resume: bool, overwrite: bool = False) -> Path:
    """Create (or check) a run folder. An existing run is never silently overwritten."""
    out = Path(out).expanduser()
    if resume:
        if not (out / "last.pt").is_file():
            raise CXRError(f"cannot resume: {out / 'last.pt'} does not exist")
        return out
    if out.exists() and not out.is_dir():
        raise CXRError(f"output path exists and is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CXRError(f"run folder {out} already exists and is not empty; use --resume to continue it "
                       "or choose another --out")  # fmt: skip
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise CXRError(f"cannot write to run folder {out}: {err.strerror or err}") from None
    return out


def train(
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume) a run into ``out``. See the module docstring for what is written."""
    config.validate()
    rank, world = _distributed()
    main_process = rank == 0
    say = (log or print) if main_process else (lambda _msg: None)
    run_dir = Path(out).expanduser()
    if main_process:
        run_dir = prepare_run_dir(out, resume=resume, overwrite=overwrite)
    if world > 1:
        dist.barrier()
    if resume:
        saved = json.loads((run_dir / "config.json").read_text())
        config = TrainConfig.from_dict(saved["train"])
        data_dir = data_dir or saved.get("data_dir")
    dev = pick_device(device)

    split_file = run_dir / "split.csv"
    data = CXRData.load(data_dir, fast=config.fast_subset, seed=config.split_seed, valid_size=config.valid_size,
                        test_size=config.test_size, split_file=split_file if (resume or not main_process) else None,
                        progress=progress and main_process)  # fmt: skip
    if main_process and not resume:
        data.write_split(split_file)
    if world > 1:
        dist.barrier()
    for note in data.split.notes:
        say(f"note: {note}")
    classes = data.classes
    pixels = data.pixels(config.img_size, progress=progress and main_process)
    train_idx, valid_idx = data.indices("train"), data.indices("valid")

    torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, pretrained_used = build_model(config.arch, len(classes), pretrained=config.pretrained)  # type: ignore[arg-type]
    for w in caught:
        say(f"warning: {w.message}")
    # the lung region (chapter 7): the data's masks, else the central-chest box
    region_source = data.region_source if config.region != "full" else None
    regions = data.lung_regions(config.img_size, progress=False) if region_source else None
    if pretrained_used:
        norm = IMAGENET_NORMALIZATION
    else:
        norm = data_normalization(pixels, train_idx, region=config.region, lung_regions=regions)
    preprocessing = Preprocessing(config.img_size, norm, config.region, region_source)
    if region_source:
        say(f"region: {config.region}, lung region from the {region_source}")

    labels = data.labels()
    train_set = CXRDataset(pixels, labels, train_idx, transform=train_transform(norm, config.augment), classes=classes,
                           region=config.region, lung_regions=regions)  # fmt: skip
    valid_set = CXRDataset(pixels, labels, valid_idx, transform=eval_transform(norm), classes=classes,
                           region=config.region, lung_regions=regions)  # fmt: skip

    # channels_last is faster for convolutions on CUDA and on recent CPU builds alike
    model = model.to(dev, memory_format=torch.channels_last)
    if config.freeze_backbone:
        set_backbone_trainable(model, False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, params)
    epoch_images = config.epoch_images or len(train_set)
    train_labels = train_set.targets
    unknown = sorted(set(config.class_shares or {}) - set(classes))
    if unknown:
        raise CXRError(f"class_shares names classes the data does not have: {', '.join(unknown)}")
    share_weights = {classes.index(c): float(w) for c, w in (config.class_shares or {}).items()}
    per_rank = math.ceil(epoch_images / world)
    steps_per_epoch = max(1, math.ceil(per_rank / config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=steps_per_epoch * config.epochs,
        pct_start=config.warmup_fraction, anneal_strategy="cos", div_factor=20.0, final_div_factor=200.0,
    )  # fmt: skip
    class_weight = None
    if config.class_weighting:
        counts = np.bincount(labels[train_idx], minlength=len(classes)).astype(np.float64)
        class_weight = torch.tensor(
            counts.sum() / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32, device=dev
        )
    criterion = nn.CrossEntropyLoss(weight=class_weight, label_smoothing=config.label_smoothing)
    use_amp = dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    # the EMA (if any) is what is validated and saved as the model; the raw weights are
    # validated too at the last epoch, for the record (history's *_raw fields)
    ema = ema_model(model, config.ema_decay) if config.ema_decay else None
    evaluated = ema.module if ema is not None else model

    history: list[dict[str, Any]] = []
    start_epoch, best_auc, best_epoch, best_metrics = 0, -1.0, -1, {}
    if resume:
        ckpt = load_checkpoint(run_dir / "last.pt", map_location=dev)
        model.load_state_dict(ckpt["model"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"]) + 1
        history = [dict(h) for h in ckpt["history"]]  # the checkpoint's own copy: never ahead or behind
        best_auc, best_epoch = float(ckpt["best_auc"]), int(ckpt["best_epoch"])
        best_metrics = dict(ckpt.get("best_metrics", {}))
        say(f"resuming {run_dir} at epoch {start_epoch + 1}/{config.epochs}")

    if world > 1:
        ddp_model: nn.Module = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    else:
        ddp_model = model

    planned = {"epochs": config.epochs, "epoch_images": epoch_images, "steps": steps_per_epoch * config.epochs,
               "images": epoch_images * config.epochs}  # fmt: skip
    if main_process and not resume:
        _write_json(run_dir / "config.json", {
            "schedule": planned,
            "train": config.to_dict(), "data_dir": str(data.root), "classes": classes,
            "preprocessing": preprocessing.to_dict(), "pretrained_used": pretrained_used,
            "device": str(dev), "world_size": world, "torch": torch.__version__,
            "counts": {s: int(len(data.indices(s))) for s in ("train", "valid", "test")},
        })  # fmt: skip

    valid_loader = DataLoader(valid_set, batch_size=max(64, config.batch_size), shuffle=False,
                              num_workers=config.workers)  # fmt: skip
    budget_s = config.max_minutes * 60 if config.max_minutes else None
    started = time.monotonic()
    stopped = "completed"
    epoch_times: list[float] = []
    epochs_bar = tqdm(range(start_epoch, config.epochs), initial=start_epoch, total=config.epochs, desc="epochs",
                      unit="epoch", disable=not (progress and main_process))  # fmt: skip
    for epoch in epochs_bar:
        if budget_s is not None and epoch_times and time.monotonic() - started + max(epoch_times) > budget_s:
            stopped = "time-budget"
            say(
                f"stopping before epoch {epoch + 1}: the next epoch would pass the {config.max_minutes:g}-minute budget"
            )
            break
        t0 = time.monotonic()
        _seed_epoch(config.seed, epoch)  # the augmentations' randomness
        positions = epoch_positions(train_labels, epoch_images, seed=config.seed, epoch=epoch, balanced=config.balanced,
                                    weights=share_weights)  # fmt: skip
        positions = positions[: len(positions) - len(positions) % world]  # the same number of steps on every rank
        loader = DataLoader(train_set, batch_size=config.batch_size, sampler=positions[rank::world].tolist(),
                            num_workers=config.workers, pin_memory=dev.type == "cuda")  # fmt: skip
        ddp_model.train()
        total_loss, total_correct, seen = 0.0, 0, 0
        # the per-batch bar only in a terminal: in a notebook each epoch's bar would stay on
        # the page as an empty widget (blank space in the rendered book); the epochs bar stays
        for images, target in tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, unit="batch",
                                   disable=not (progress and main_process and sys.stderr.isatty())):  # fmt: skip
            images = images.to(dev, non_blocking=True)
            target = torch.as_tensor(target).to(dev, non_blocking=True)
            images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                logits = ddp_model(images)
                loss = criterion(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            total_loss += float(loss.detach()) * len(target)
            total_correct += int((logits.argmax(1) == target).sum())
            seen += len(target)
        probs, valid_labels = predict_proba(evaluated, valid_loader, dev)
        metrics = basic_metrics(probs, valid_labels)
        last_epoch = epoch == config.epochs - 1
        raw = basic_metrics(*predict_proba(model, valid_loader, dev)) if ema is not None and last_epoch else None
        valid_loss = float(nn.functional.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-8)),
                                                  torch.from_numpy(valid_labels)))  # fmt: skip
        epoch_time = time.monotonic() - t0
        epoch_times.append(epoch_time)
        entry = {
            "epoch": epoch, "train_loss": total_loss / max(seen, 1), "train_accuracy": total_correct / max(seen, 1),
            "valid_loss": valid_loss, "valid_accuracy": metrics["accuracy"], "valid_macro_auc": metrics["macro_auc"],
            "lr": float(scheduler.get_last_lr()[0]), "seconds": round(epoch_time, 2),
        }  # fmt: skip
        if raw is not None:
            entry.update(valid_accuracy_raw=raw["accuracy"], valid_macro_auc_raw=raw["macro_auc"])
        history.append(entry)
        improved = metrics["macro_auc"] > best_auc + 1e-6 or best_epoch < 0
        if improved:
            best_auc, best_epoch = metrics["macro_auc"], epoch
            best_metrics = {"valid_accuracy": metrics["accuracy"], "valid_macro_auc": metrics["macro_auc"],
                            "valid_loss": valid_loss, "epoch": epoch}  # fmt: skip
        if main_process:
            ckpt = {
                "format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                **({"ema": ema.state_dict()} if ema is not None else {}),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "epoch": epoch, "rng": _rng_state(), "config": config.to_dict(), "classes": classes,
                "preprocessing": preprocessing.to_dict(), "metrics": best_metrics if improved else entry,
                "best_auc": best_auc, "best_epoch": best_epoch, "best_metrics": best_metrics, "history": history,
            }  # fmt: skip
            if improved:  # best.pt is for predicting: weights and metadata, no optimizer state
                slim = {
                    k: v
                    for k, v in ckpt.items()
                    if k not in ("optimizer", "scheduler", "scaler", "rng", "history", "ema")
                }
                _atomic_save({**slim, "model": evaluated.state_dict(), "metrics": best_metrics}, run_dir / "best.pt")
            _atomic_save(ckpt, run_dir / "last.pt")
            _write_json(run_dir / "history.json", history)
            epochs_bar.set_postfix(loss=f"{entry['train_loss']:.3f}", acc=f"{metrics['accuracy']:.3f}",
                                   auc=f"{metrics['macro_auc']:.4f}")  # fmt: skip
            # short enough for a book page's code column (no clipped log lines)
            say(f"epoch {epoch + 1}/{config.epochs}: loss {entry['train_loss']:.3f}, valid acc "
                f"{metrics['accuracy']:.3f}, AUC {metrics['macro_auc']:.4f} ({epoch_time:.0f} s)")  # fmt: skip
        if config.patience is not None and epoch - best_epoch >= config.patience:
            stopped = "early-stopping"
            say(f"early stopping: no better validation macro AUC for {config.patience} epochs")
            break
    epochs_bar.close()
    if main_process and config.class_offsets and best_epoch >= 0:
        best_metrics = _fold_class_offsets(run_dir, valid_loader, dev, say)
    if main_process:
        _record_outcome(run_dir, stopped, history, planned, time.monotonic() - started)
    if world > 1:
        dist.barrier()
    return TrainResult(run_dir, history, best_epoch, best_metrics, stopped, pretrained_used)


def fit_class_offsets(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One offset per class, added to the logits, that minimizes the log-loss on these
    images (use the validation split); the offsets sum to zero.

    A network trained on class-balanced draws can still lean towards one class (here it
    sends doubtful images to Normal). Shifting every logit of a class by the same amount
    moves that class's share of the decisions. It leaves each logit's ranking of the images
    unchanged, but not quite the one-vs-rest AUCs, which rank the softmax probability: an
    image's p(c) depends on the other classes' offsets too, so AUCs move a little. This is the
    bias part of "bias-corrected temperature scaling" (Alexandari, Kundaje and Shrikumar,
    ICML 2020); the temperature stays chapter 4's lesson.
    """
    from scipy.optimize import minimize

    log_p = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    counts = np.bincount(labels, minlength=log_p.shape[1])
    # a class with no validation image cannot be fitted (its offset would run off to minus
    # infinity): it keeps offset 0, and the first present class is the fixed reference
    free = np.flatnonzero(counts)[1:]

    def loss_and_grad(values: np.ndarray) -> tuple[float, np.ndarray]:
        offsets = np.zeros(log_p.shape[1])
        offsets[free] = values
        shifted = log_p + offsets
        shifted -= shifted.max(axis=1, keepdims=True)
        p = np.exp(shifted)
        p /= p.sum(axis=1, keepdims=True)
        loss = -np.log(np.clip(p[rows, labels], 1e-300, None)).mean()
        grad = p.mean(axis=0) - counts / len(labels)
        return float(loss), grad[free]

    found = minimize(loss_and_grad, np.zeros(len(free)), jac=True, method="L-BFGS-B", bounds=[(-5.0, 5.0)] * len(free))
    offsets = np.zeros(log_p.shape[1])
    offsets[free] = found.x
    present = counts > 0
    offsets[present] -= offsets[present].mean()
    return offsets


def _fold_class_offsets(run_dir: Path, valid_loader: DataLoader, dev: torch.device,
                        say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Fit :func:`fit_class_offsets` on the validation split with ``best.pt``'s weights, add
    them to its classifier's bias (so every prediction path sees them) and say so in
    ``best.pt`` and ``config.json``. Returns the new best metrics."""
    best = load_checkpoint(run_dir / "best.pt")
    if "class_offsets" in best:  # a resumed run that had finished: already folded
        return dict(best["metrics"])
    loaded = model_from_checkpoint(best, device=dev)
    before_probs, valid_labels = predict_proba(loaded.model, valid_loader, dev)
    offsets = fit_class_offsets(before_probs, valid_labels)
    with torch.no_grad():
        loaded.model.fc.bias += torch.as_tensor(offsets, dtype=loaded.model.fc.bias.dtype, device=dev)  # type: ignore[operator]
    after_probs, _ = predict_proba(loaded.model, valid_loader, dev)
    before, after = basic_metrics(before_probs, valid_labels), basic_metrics(after_probs, valid_labels)
    record = {"offsets": dict(zip(loaded.classes, np.round(offsets, 4).tolist())),
              "valid_accuracy_before": before["accuracy"], "valid_accuracy_after": after["accuracy"]}  # fmt: skip
    metrics = {**best["metrics"], "valid_accuracy": after["accuracy"], "valid_macro_auc": after["macro_auc"]}
    state = {k: v.cpu() for k, v in loaded.model.state_dict().items()}
    _atomic_save({**best, "model": state, "metrics": metrics, "class_offsets": record}, run_dir / "best.pt")
    config_path = run_dir / "config.json"
    _write_json(config_path, {**json.loads(config_path.read_text()), "class_offsets": record})
    say(f"class offsets fitted on the validation split: {describe_offsets(record)}")
    return metrics


def describe_offsets(record: dict[str, Any]) -> str:
    """One sentence on a run's class offsets (``config.json``'s ``class_offsets``)."""
    offsets = record["offsets"]
    parts = ", ".join(f"{c} {v:+.2f}" for c, v in offsets.items())
    return (f"{parts} (added to the logits); validation accuracy {record['valid_accuracy_before']:.3f} before, "
            f"{record['valid_accuracy_after']:.3f} after.")  # fmt: skip


def _record_outcome(run_dir: Path, stopped: str, history: list[dict[str, Any]], planned: dict[str, int],
                    seconds: float) -> None:  # fmt: skip
    """Say how the run ended in ``config.json`` (``outcome``) and on the last entry of
    ``history.json`` (``stopped``), so a run cut by the time cap can never pass for a
    finished schedule."""
    outcome = {"stopped": stopped, "epochs_done": len(history), "epochs_planned": planned["epochs"],
               "schedule_completed": stopped == "completed" and len(history) == planned["epochs"],
               "seconds_this_session": round(seconds, 1)}  # fmt: skip
    config_path = run_dir / "config.json"
    if config_path.is_file():
        _write_json(config_path, {**json.loads(config_path.read_text()), "outcome": outcome})
    if history:
        history[-1]["stopped"] = stopped
        _write_json(run_dir / "history.json", history)


def run_outcome(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """How a run ended (``config.json``'s ``outcome``), e.g. ``{"stopped": "time-budget", ...}``."""
    return dict(json.loads((Path(run_dir) / "config.json").read_text()).get("outcome", {}))


def describe_outcome(run_dir: str | os.PathLike[str]) -> str:
    """One sentence on how a run ended, for chapters and logs: the schedule completed, or
    what cut it short and what that means for the model."""
    run_dir = Path(run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    outcome, schedule = saved.get("outcome", {}), saved.get("schedule", {})
    planned, done = schedule.get("epochs", len(history)), len(history)
    per_epoch = schedule.get("epoch_images", 0)
    minutes = sum(h["seconds"] for h in history) / 60
    draws = "class-balanced" if saved["train"].get("balanced", True) else "shuffled"
    stopped = outcome.get("stopped", "completed")
    offsets = ""
    if "class_offsets" in saved:
        offsets = (f" Class offsets fitted on the validation split: {describe_offsets(saved['class_offsets'])} "
                   f"{_describe_lean(saved['class_offsets']['offsets'])}")  # fmt: skip
    if stopped == "completed" and done == planned:
        return (f"The schedule completed: {done} of {planned} epochs, {done * per_epoch:,} images "
                f"({per_epoch:,} {draws} draws per epoch), in {minutes:.1f} minutes of training.{offsets}")  # fmt: skip
    if stopped == "time-budget":
        return (f"The {saved['train']['max_minutes']:g}-minute time cap stopped this run after {done} of {planned} "
                f"epochs ({done * per_epoch:,} of {planned * per_epoch:,} images): the learning rate had not "
                f"annealed, so this model is weaker than the recipe intends. `cxr train --out {run_dir.name} "
                f"--resume` finishes the schedule.{offsets}")  # fmt: skip
    return (f"Early stopping ended this run after {done} of {planned} epochs: the validation macro AUC had not "
            f"improved for {saved['train'].get('patience')} epochs.{offsets}")  # fmt: skip


def _describe_lean(offsets: dict[str, float], small: float = 0.1) -> str:
    """Which class the network leaned towards, read from its class offsets: the most negative
    offset takes close calls away from that class. Offsets all within ``small`` of 0: no lean."""
    leaned = min(offsets, key=offsets.__getitem__)
    if offsets[leaned] > -small:
        return f"No offset is below {-small:g}: the network hardly leaned towards any class."
    return (f"The most negative offset is {leaned}'s: the network leaned towards {leaned}, and the offsets move "
            f"close calls away from it.")  # fmt: skip


def describe_learning_curves(history: list[dict[str, Any]], best_epoch: int, peak_lr: float) -> str:
    """What a run's learning curves say about training longer (chapter 3's exercise).

    ``history`` is a run's ``history.json``; ``best_epoch`` the 0-based epoch that
    ``best.pt`` holds; ``peak_lr`` the schedule's peak, the run's ``TrainConfig.lr`` (the
    history stores the learning rate at the end of each epoch, which misses a peak reached
    within an epoch). Reads the best epoch against the last, the change of the training and
    validation losses over the last quarter of the epochs (at least 3), and the learning
    rate at the end against the peak: a validation loss still falling says a longer schedule
    would likely help, a validation loss rising while the training loss falls says the model
    had started to overfit. The schedule (warm-up, then cosine) anneals the learning rate to
    about zero, so the help would come from a longer schedule, not from epochs added after it.
    """
    n = len(history)
    if n < 2:
        return f"One epoch only ({n} in the history): the curves cannot say whether more epochs would help."
    late = history[-min(n, max(3, n // 4)) :]
    valid_change = late[-1]["valid_loss"] - late[0]["valid_loss"]
    train_change = late[-1]["train_loss"] - late[0]["train_loss"]
    end = history[-1]["lr"]
    annealed = end <= 0.05 * peak_lr
    facts = (f"Best epoch {best_epoch + 1} of {n} (by validation macro AUC). Over the last {len(late)} epochs the "
             f"training loss changed by {train_change:+.3f} and the validation loss by {valid_change:+.3f}; the "
             f"learning rate ended at {end:.2g}, from the schedule's peak of {peak_lr:.2g}.")  # fmt: skip
    at_end = best_epoch + 1 >= n - max(1, n // 10)
    if valid_change < 0:
        where = "with the best epoch at the end" if at_end else f"though the best epoch was {best_epoch + 1}"
        tail = ("; epochs added after this one would train at a learning rate near zero and change little"
                if annealed else "")  # fmt: skip
        reading = (f"The validation loss was still falling when the schedule ended, {where}: the model was still "
                   f"improving, so a longer schedule (more epochs, annealed over all of them) would likely help"
                   f"{tail}.")  # fmt: skip
    elif train_change < 0:
        reading = ("The validation loss rose while the training loss kept falling: the model had started to overfit, "
                   "and more epochs would not help without more data or stronger augmentation.")  # fmt: skip
    else:
        reading = "Neither loss was still falling: more epochs alone are unlikely to help."
    return f"{facts} {reading}"


def ensure_run(
    config: TrainConfig,
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """A finished run of ``config`` under :func:`cxrlib.config.runs_dir`, trained if needed.

    Chapters call this so that each one runs on its own in a fresh kernel: the first
    chapter that needs a model trains it, later ones (and re-runs) load it. A run is
    reused only when its configuration and data folder match and it finished.
    """
    root = str(resolve_data_dir(data_dir))
    run_dir = runs_dir() / name
    done = run_dir / "done.json"
    wanted = json.loads(json.dumps({"train": config.to_dict(), "data_dir": root}))  # tuples read back as lists
    if done.is_file() and (run_dir / "best.pt").is_file():
        try:
            if json.loads(done.read_text()) == wanted:
                return run_dir
        except ValueError:
            pass
    done.unlink(missing_ok=True)  # an interrupted retrain must not look finished
    train(config, run_dir, data_dir=root, overwrite=True, progress=progress, log=log)
    _write_json(done, wanted)
    return run_dir
