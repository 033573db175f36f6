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
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from scipy.optimize import minimize
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import (
    CHECKPOINT_FORMAT,
    LoadedModel,
    load_checkpoint,
    model_from_checkpoint,
    pick_device,
    predict_proba,
    save_checkpoint,
)
from .config import CXRError, write_json
from .data import CXRData, CXRDataset
from .metrics import basic_metrics
from .models import build_model, set_backbone_trainable
from .recipe import TrainConfig
from .transforms import (
    IMAGENET_NORMALIZATION,
    Normalization,
    Preprocessing,
    cutmix_batch,
    data_normalization,
    eval_transform,
    mixup_batch,
    train_transform,
)

# --------------------------------------------------------------------------- devices


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


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(x) for x in state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- evaluation during training


# --------------------------------------------------------------------------- what an epoch draws


def _stream_slice(members: np.ndarray, start: int, stop: int, key: tuple[int, ...]) -> np.ndarray:
    """Items ``start..stop`` of an endless stream made of successive random permutations of
    ``members`` (permutation ``k`` seeded by ``(*key, k)``): every member is drawn once
    before any is drawn twice, and any slice is computed without the ones before it."""
    n = len(members)
    out = [
        np.random.default_rng([*key, cycle]).permutation(members) for cycle in range(start // n, (stop - 1) // n + 1)
    ]
    offset = (start // n) * n
    return np.concatenate(out)[start - offset : stop - offset]


def epoch_positions(
    labels: np.ndarray,
    epoch_images: int,
    *,
    seed: int,
    epoch: int,
    balanced: bool = True,
    weights: dict[int, float] | None = None,
) -> np.ndarray:
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
        parts = [
            _stream_slice(np.flatnonzero(labels == c), epoch * k, (epoch + 1) * k, (seed, 1, int(c)))
            for c, k in zip(present, share)
            if k
        ]
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
        raise CXRError(
            f"run folder {out} already exists and is not empty; use --resume to continue it or choose another --out"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise CXRError(f"cannot write to run folder {out}: {err.strerror or err}") from None
    return out


@dataclass
class _Run:
    """Everything a training run holds from one epoch to the next (built by :func:`_setup`)."""

    config: TrainConfig
    run_dir: Path
    rank: int
    world: int
    say: Callable[[str], None]
    dev: torch.device
    classes: list[str]
    preprocessing: Preprocessing
    pretrained_used: bool
    model: nn.Module
    ddp_model: nn.Module
    ema: torch.optim.swa_utils.AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    amp_dtype: torch.dtype
    train_set: CXRDataset
    valid_loader: DataLoader
    epoch_images: int
    share_weights: dict[int, float]
    planned: dict[str, int]
    data: CXRData
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    best_auc: float = -1.0
    best_epoch: int = -1
    best_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def main_process(self) -> bool:
        return self.rank == 0

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are validated and saved as the model: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model


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
    """Train (or resume) a run into ``out``. See the module docstring for what is written.

    Three steps: :func:`_setup` (data, model, optimizer, a resumed state), then per epoch
    :func:`_run_epoch` (train on the epoch's draws, validate) and :func:`_save_epoch`
    (checkpoints, history), then the class offsets and the outcome.
    """
    run = _setup(
        config, out, data_dir=data_dir, resume=resume, overwrite=overwrite, device=device, progress=progress, log=log
    )
    config, say = run.config, run.say
    budget_s = config.max_minutes * 60 if config.max_minutes else None
    started = time.monotonic()
    stopped = "completed"
    epoch_times: list[float] = []
    epochs_bar = tqdm(
        range(run.start_epoch, config.epochs),
        initial=run.start_epoch,
        total=config.epochs,
        desc="epochs",
        unit="epoch",
        disable=not (progress and run.main_process),
    )
    for epoch in epochs_bar:
        if (
            budget_s is not None
            and epoch_times
            and time.monotonic() - started + next_epoch_seconds(config, epoch, epoch_times) > budget_s
        ):
            stopped = "time-budget"
            say(
                f"stopping before epoch {epoch + 1}: the next epoch would pass the {config.max_minutes:g}-minute budget"
            )
            break
        entry, improved, epoch_time = _run_epoch(run, epoch, progress)
        epoch_times.append(epoch_time)
        if run.main_process:
            _save_epoch(run, epoch, entry, improved)
            epochs_bar.set_postfix(
                loss=f"{entry['train_loss']:.3f}",
                acc=f"{entry['valid_accuracy']:.3f}",
                auc=f"{entry['valid_macro_auc']:.4f}",
            )
            # short enough for a book page's code column (no clipped log lines)
            say(
                f"epoch {epoch + 1}/{config.epochs}: loss {entry['train_loss']:.3f}, valid acc "
                f"{entry['valid_accuracy']:.3f}, AUC {entry['valid_macro_auc']:.4f} ({epoch_time:.0f} s)"
            )
        if config.patience is not None and epoch - run.best_epoch >= config.patience:
            stopped = "early-stopping"
            say(f"early stopping: no better validation macro AUC for {config.patience} epochs")
            break
    epochs_bar.close()
    if run.main_process and run.best_epoch >= 0:
        valid_loader = run.valid_loader
        if config.eval_size_increase:
            valid_loader = _valid_loader_at(run, config.eval_img_size)
            run.best_metrics = _set_eval_size(run.run_dir, config.eval_img_size, valid_loader, run.dev, say)
        if config.class_offsets:
            run.best_metrics = _fold_class_offsets(run.run_dir, valid_loader, run.dev, say)
    if run.main_process:
        _record_outcome(run.run_dir, stopped, run.history, run.planned, time.monotonic() - started)
    if run.world > 1:
        dist.barrier()
    return TrainResult(run.run_dir, run.history, run.best_epoch, run.best_metrics, stopped, run.pretrained_used)


def next_epoch_seconds(config: TrainConfig, epoch: int, epoch_times: list[float]) -> float:
    """The time cap's guess of how long ``epoch`` will take, from the epochs before it
    (``epoch_times``, ending just before ``epoch``): the slowest of them, each scaled by the
    ratio of the pixels per image, since under progressive resizing a later epoch trains at a
    larger size (:meth:`TrainConfig.img_size_at`) than the ones measured."""
    first = epoch - len(epoch_times)
    size = config.img_size_at(epoch)
    return max(t * (size / config.img_size_at(first + k)) ** 2 for k, t in enumerate(epoch_times))


def _setup(
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None,
    resume: bool,
    overwrite: bool,
    device: str | None,
    progress: bool,
    log: Callable[[str], None] | None,
) -> _Run:
    """The run folder, the split, the cached pixels, the model and its optimizer, and (on
    ``resume``) the state of ``last.pt``; ``config.json`` for a new run."""
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

    data = _load_split(config, run_dir, data_dir, resume=resume, rank=rank, world=world, progress=progress, say=say)
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
    train_set = CXRDataset(
        pixels,
        labels,
        train_idx,
        transform=train_transform(norm, config.augment),
        classes=classes,
        region=config.region,
        lung_regions=regions,
    )

    # channels_last is faster for convolutions on CUDA and on recent CPU builds alike
    model = model.to(dev, memory_format=torch.channels_last)
    if config.freeze_backbone:
        set_backbone_trainable(model, False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, params)
    epoch_images = config.epoch_images or len(train_set)
    unknown = sorted(set(config.class_shares or {}) - set(classes))
    if unknown:
        raise CXRError(f"class_shares names classes the data does not have: {', '.join(unknown)}")
    share_weights = {classes.index(c): float(w) for c, w in (config.class_shares or {}).items()}
    per_rank = math.ceil(epoch_images / world)
    steps_per_epoch = max(1, math.ceil(per_rank / config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        total_steps=steps_per_epoch * config.epochs,
        pct_start=config.warmup_fraction,
        anneal_strategy="cos",
        div_factor=20.0,
        final_div_factor=200.0,
    )
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
    if world > 1:
        ddp_model: nn.Module = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    else:
        ddp_model = model
    planned = {
        "epochs": config.epochs,
        "epoch_images": epoch_images,
        "steps": steps_per_epoch * config.epochs,
        "images": epoch_images * config.epochs,
    }
    valid_loader = _validation_loader(config, pixels, labels, valid_idx, norm, classes, regions)
    run = _Run(
        config,
        run_dir,
        rank,
        world,
        say,
        dev,
        classes,
        preprocessing,
        pretrained_used,
        model,
        ddp_model,
        ema,
        optimizer,
        scheduler,
        scaler,
        criterion,
        amp_dtype,
        train_set,
        valid_loader,
        epoch_images,
        share_weights,
        planned,
        data,
    )

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
        run.start_epoch = int(ckpt["epoch"]) + 1
        run.history = [dict(h) for h in ckpt["history"]]  # the checkpoint's own copy: never ahead or behind
        run.best_auc, run.best_epoch = float(ckpt["best_auc"]), int(ckpt["best_epoch"])
        run.best_metrics = dict(ckpt.get("best_metrics", {}))
        say(f"resuming {run_dir} at epoch {run.start_epoch + 1}/{config.epochs}")

    if main_process and not resume:
        write_json(run_dir / "config.json", {
            "schedule": planned,
            "train": config.to_dict(), "data_dir": str(data.root), "classes": classes,
            "preprocessing": preprocessing.to_dict(), "pretrained_used": pretrained_used,
            "device": str(dev), "world_size": world, "torch": torch.__version__,
            "counts": {s: int(len(data.indices(s))) for s in ("train", "valid", "test")},
        })  # fmt: skip
    return run


def _load_split(
    config: TrainConfig,
    run_dir: Path,
    data_dir: str | os.PathLike[str] | None,
    *,
    resume: bool,
    rank: int,
    world: int,
    progress: bool,
    say: Callable[[str], None],
) -> CXRData:
    """The data and its split: made and written to ``split.csv`` by a new run's main process,
    read back from it on ``resume`` and by the other processes of a torchrun."""
    main_process = rank == 0
    split_file = run_dir / "split.csv"
    data = CXRData.load(
        data_dir,
        **config.split_options(),
        split_file=split_file if (resume or not main_process) else None,
        progress=progress and main_process,
    )
    if main_process and not resume:
        data.write_split(split_file)
    if world > 1:
        dist.barrier()
    for note in data.split.notes:
        say(f"note: {note}")
    return data


def _run_epoch(run: _Run, epoch: int, progress: bool) -> tuple[dict[str, Any], bool, float]:
    """Train on one epoch's draws, then validate: ``(history entry, improved, seconds)``.
    The entry is appended to ``run.history`` and the best epoch updated."""
    config, dev, world = run.config, run.dev, run.world
    t0 = time.monotonic()
    _seed_epoch(config.seed, epoch)  # the augmentations' randomness
    positions = epoch_positions(
        run.train_set.targets,
        run.epoch_images,
        seed=config.seed,
        epoch=epoch,
        balanced=config.balanced,
        weights=run.share_weights,
    )
    positions = positions[: len(positions) - len(positions) % world]  # the same number of steps on every rank
    loader = DataLoader(
        run.train_set,
        batch_size=config.batch_size,
        sampler=positions[run.rank :: world].tolist(),
        num_workers=config.workers,
        pin_memory=dev.type == "cuda",
    )
    run.ddp_model.train()
    use_amp = dev.type == "cuda"
    total_loss, total_correct, seen = 0.0, 0, 0
    # mixup's (or CutMix's) own draws, so that switching it on leaves the augmentations' randomness alone
    mix_rng = np.random.default_rng((config.seed, epoch, run.rank)) if config.mixup or config.cutmix else None
    size = config.img_size_at(epoch)
    # the per-batch bar only in a terminal: in a notebook each epoch's bar would stay on
    # the page as an empty widget (blank space in the rendered book); the epochs bar stays
    for images, target in tqdm(
        loader,
        desc=f"epoch {epoch + 1}",
        leave=False,
        unit="batch",
        disable=not (progress and run.main_process and sys.stderr.isatty()),
    ):
        images = images.to(dev, non_blocking=True)
        target = torch.as_tensor(target).to(dev, non_blocking=True)
        if size != images.shape[-1]:  # progressive resizing: the pixels are cached at img_size
            images = nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        partner = None
        if config.mixup:
            images, partner, lam = mixup_batch(images, config.mixup, mix_rng)
        elif mix_rng is not None and mix_rng.random() < config.cutmix:
            images, partner, lam = cutmix_batch(images, 1.0, mix_rng)  # Beta(1, 1), as in the paper
        images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=run.amp_dtype, enabled=use_amp):
            logits = run.ddp_model(images)
            loss = run.criterion(logits.float(), target)
            if partner is not None:
                loss = lam * loss + (1.0 - lam) * run.criterion(logits.float(), target[partner])
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        total_loss += float(loss.detach()) * len(target)
        total_correct += int((logits.argmax(1) == target).sum())
        seen += len(target)
    probs, valid_labels = predict_proba(run.evaluated, run.valid_loader, dev)
    metrics = basic_metrics(probs, valid_labels)
    last_epoch = epoch == config.epochs - 1
    raw = (
        basic_metrics(*predict_proba(run.model, run.valid_loader, dev)) if run.ema is not None and last_epoch else None
    )
    valid_loss = float(
        nn.functional.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-8)), torch.from_numpy(valid_labels))
    )
    epoch_time = time.monotonic() - t0
    entry = {
        "epoch": epoch, "train_loss": total_loss / max(seen, 1), "train_accuracy": total_correct / max(seen, 1),
        "valid_loss": valid_loss, "valid_accuracy": metrics["accuracy"], "valid_macro_auc": metrics["macro_auc"],
        "lr": float(run.scheduler.get_last_lr()[0]), "seconds": round(epoch_time, 2),
    }  # fmt: skip
    if config.start_img_size is not None:
        entry["img_size"] = size
    if raw is not None:
        entry.update(valid_accuracy_raw=raw["accuracy"], valid_macro_auc_raw=raw["macro_auc"])
    run.history.append(entry)
    improved = metrics["macro_auc"] > run.best_auc + 1e-6 or run.best_epoch < 0
    if improved:
        run.best_auc, run.best_epoch = metrics["macro_auc"], epoch
        run.best_metrics = {
            "valid_accuracy": metrics["accuracy"],
            "valid_macro_auc": metrics["macro_auc"],
            "valid_loss": valid_loss,
            "epoch": epoch,
        }
    return entry, improved, epoch_time


def _save_epoch(run: _Run, epoch: int, entry: dict[str, Any], improved: bool) -> None:
    """``last.pt`` (everything a resume needs), ``best.pt`` when the epoch improved
    (weights and metadata only), and ``history.json``."""
    ckpt = {
        "format": CHECKPOINT_FORMAT, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        **({"ema": run.ema.state_dict()} if run.ema is not None else {}),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else {},
        "epoch": epoch, "rng": _rng_state(), "config": run.config.to_dict(), "classes": run.classes,
        "preprocessing": run.preprocessing.to_dict(), "metrics": run.best_metrics if improved else entry,
        "best_auc": run.best_auc, "best_epoch": run.best_epoch, "best_metrics": run.best_metrics,
        "history": run.history,
    }  # fmt: skip
    if improved:  # best.pt is for predicting: weights and metadata, no optimizer state
        slim = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "scaler", "rng", "history", "ema")}
        save_checkpoint(
            {**slim, "model": run.evaluated.state_dict(), "metrics": run.best_metrics}, run.run_dir / "best.pt"
        )
    save_checkpoint(ckpt, run.run_dir / "last.pt")
    write_json(run.run_dir / "history.json", run.history)


def _validation_loader(
    config: TrainConfig,
    pixels: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray | None,
    normalization: Normalization,
    classes: list[str],
    regions: np.ndarray | None,
) -> DataLoader:
    """The validation images (``indices`` of ``pixels``; ``None``: all of them) through the
    eval transform, in the run's region, in a fixed order."""
    valid_set = CXRDataset(
        pixels,
        labels,
        indices,
        transform=eval_transform(normalization),
        classes=classes,
        region=config.region,
        lung_regions=regions,
    )
    return DataLoader(valid_set, batch_size=max(64, config.batch_size), shuffle=False, num_workers=config.workers)


def _valid_loader_at(run: _Run, size: int) -> DataLoader:
    """The validation split at another size than training's, from a pixel cache of its own
    (only these images: on the whole database, a second cache of every image would cost
    minutes of the training budget)."""
    data, config = run.data, run.config
    valid_idx = data.indices("valid")
    pixels = data.pixels(size, indices=valid_idx, progress=False)
    regions = data.lung_regions(size, indices=valid_idx, progress=False) if config.region != "full" else None
    labels = data.labels()[valid_idx]
    return _validation_loader(config, pixels, labels, None, run.preprocessing.normalization, run.classes, regions)


def _set_eval_size(
    run_dir: Path, size: int, valid_loader: DataLoader, dev: torch.device, say: Callable[[str], None]
) -> dict[str, Any]:
    """Make ``best.pt`` predict at ``size`` px (its preprocessing's ``img_size``, which every
    prediction path reads) and say so, with the validation accuracy at both sizes, in
    ``best.pt`` and ``config.json``. Returns the new best metrics."""
    best, loaded = _best_before(run_dir, "eval_size", dev)
    if loaded is None:
        return dict(best["metrics"])
    probs, valid_labels = predict_proba(loaded.model, valid_loader, dev)
    after = basic_metrics(probs, valid_labels)
    trained = int(best["preprocessing"]["img_size"])
    record = {
        "trained_img_size": trained,
        "eval_img_size": size,
        "valid_accuracy_trained_size": best["metrics"].get("valid_accuracy"),
        "valid_accuracy_eval_size": after["accuracy"],
    }
    metrics = _with_validation(best["metrics"], after)
    preprocessing = {**best["preprocessing"], "img_size": size}
    _save_step(run_dir, best, "eval_size", record, {"preprocessing": preprocessing, "metrics": metrics})
    say(f"predicting at {describe_eval_size(record)}")
    return metrics


def _best_before(run_dir: Path, key: str, dev: torch.device) -> tuple[dict[str, Any], LoadedModel | None]:
    """``best.pt`` and its model for a step that follows training (recorded under ``key``);
    the model is ``None`` when the step is already done (a resumed run that had finished)."""
    best = load_checkpoint(run_dir / "best.pt")
    return best, None if key in best else model_from_checkpoint(best, device=dev)


def _with_validation(metrics: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's best metrics with the validation accuracy and macro AUC measured anew."""
    return {**metrics, "valid_accuracy": measured["accuracy"], "valid_macro_auc": measured["macro_auc"]}


def _save_step(run_dir: Path, best: dict[str, Any], key: str, record: dict[str, Any], changes: dict[str, Any]) -> None:
    """Rewrite ``best.pt`` after a step that follows training (the prediction size, the class
    offsets): its ``changes`` and the step's ``record`` under ``key``, also written to
    ``config.json`` (with the new ``preprocessing``, when the step changed it)."""
    save_checkpoint({**best, **changes, key: record}, run_dir / "best.pt")
    config_path = run_dir / "config.json"
    saved = json.loads(config_path.read_text())
    if "preprocessing" in changes:
        saved["preprocessing"] = changes["preprocessing"]
    write_json(config_path, {**saved, key: record})


def describe_eval_size(record: dict[str, Any]) -> str:
    """One phrase on a run's prediction size (``config.json``'s ``eval_size``)."""
    before = record["valid_accuracy_trained_size"]
    return (
        f"{record['eval_img_size']} px, trained at {record['trained_img_size']} px: validation accuracy "
        f"{before:.3f} at {record['trained_img_size']} px, {record['valid_accuracy_eval_size']:.3f} "
        f"at {record['eval_img_size']} px."
    )


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


def _fold_class_offsets(
    run_dir: Path, valid_loader: DataLoader, dev: torch.device, say: Callable[[str], None]
) -> dict[str, Any]:
    """Fit :func:`fit_class_offsets` on the validation split with ``best.pt``'s weights, add
    them to its classifier's bias (so every prediction path sees them) and say so in
    ``best.pt`` and ``config.json``. Returns the new best metrics."""
    best, loaded = _best_before(run_dir, "class_offsets", dev)
    if loaded is None:
        return dict(best["metrics"])
    before_probs, valid_labels = predict_proba(loaded.model, valid_loader, dev)
    offsets = fit_class_offsets(before_probs, valid_labels)
    with torch.no_grad():
        loaded.model.fc.bias += torch.as_tensor(offsets, dtype=loaded.model.fc.bias.dtype, device=dev)  # type: ignore[operator]
    after_probs, _ = predict_proba(loaded.model, valid_loader, dev)
    before, after = basic_metrics(before_probs, valid_labels), basic_metrics(after_probs, valid_labels)
    record = {
        "offsets": dict(zip(loaded.classes, np.round(offsets, 4).tolist())),
        "valid_accuracy_before": before["accuracy"],
        "valid_accuracy_after": after["accuracy"],
    }
    metrics = _with_validation(best["metrics"], after)
    state = {k: v.cpu() for k, v in loaded.model.state_dict().items()}
    _save_step(run_dir, best, "class_offsets", record, {"model": state, "metrics": metrics})
    say(f"class offsets fitted on the validation split: {describe_offsets(record)}")
    return metrics


def describe_offsets(record: dict[str, Any]) -> str:
    """One sentence on a run's class offsets (``config.json``'s ``class_offsets``)."""
    offsets = record["offsets"]
    parts = ", ".join(f"{c} {v:+.2f}" for c, v in offsets.items())
    return (
        f"{parts} (added to the logits); validation accuracy {record['valid_accuracy_before']:.3f} before, "
        f"{record['valid_accuracy_after']:.3f} after."
    )


def _record_outcome(
    run_dir: Path, stopped: str, history: list[dict[str, Any]], planned: dict[str, int], seconds: float
) -> None:
    """Say how the run ended in ``config.json`` (``outcome``) and on the last entry of
    ``history.json`` (``stopped``), so a run cut by the time cap can never pass for a
    finished schedule."""
    outcome = {
        "stopped": stopped,
        "epochs_done": len(history),
        "epochs_planned": planned["epochs"],
        "schedule_completed": stopped == "completed" and len(history) == planned["epochs"],
        "seconds_this_session": round(seconds, 1),
    }
    config_path = run_dir / "config.json"
    if config_path.is_file():
        write_json(config_path, {**json.loads(config_path.read_text()), "outcome": outcome})
    if history:
        history[-1]["stopped"] = stopped
        write_json(run_dir / "history.json", history)
