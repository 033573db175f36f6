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

from .config import CXRError, runs_dir
from .models import ARCHITECTURES, build_model, set_backbone_trainable
from .transforms import (
    IMAGENET_NORMALIZATION,
    REGIONS,
    AugmentConfig,
    Normalization,
    Preprocessing,
    data_normalization,
    eval_transform,
    train_transform,
)

CHECKPOINT_FORMAT = 1


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
    patience: int | None = None  # epochs without a better validation macro AUC before stopping
    max_minutes: float | None = None  # stop before an epoch that would end past this budget
    seed: int = 0
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
    "fast": TrainConfig(preset="fast", img_size=64, epochs=2, batch_size=32, lr=2e-3, fast_subset=True,
                        valid_size=40, test_size=40, warmup_fraction=0.3),  # fmt: skip
    # The laptop recipe: 2 CPU cores, at most 15 minutes, no pretrained weights needed.
    # Chosen on the sample's validation split (see the closing note of the training issue):
    # 112 px x 12 epochs fits 2 cores in about 13 minutes; max_minutes is the safety net.
    "cpu": TrainConfig(preset="cpu", img_size=112, epochs=12, batch_size=32, lr=2e-3, max_minutes=14.0),
    # GPU, the whole database, 224 px, ImageNet weights.
    "full": TrainConfig(preset="full", img_size=224, epochs=20, batch_size=64, lr=1e-3, pretrained="auto",
                        patience=6, workers=4),  # fmt: skip
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
    ckpt = load_checkpoint(path)
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
    from .evaluate import macro_auc  # evaluate imports this module: import on use

    acc = float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")
    return {"accuracy": acc, "macro_auc": macro_auc(probs, labels)}


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_epoch: int
    best_metrics: dict[str, Any]
    stopped: str  # "completed", "early-stopping", "time-budget"
    pretrained_used: bool


def _seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed every generator for this epoch and return the one that shuffles."""
    mixed = seed * 1_000_003 + epoch
    torch.manual_seed(mixed)
    random.seed(mixed)
    np.random.seed(mixed % (2**32))
    return torch.Generator().manual_seed(mixed)


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
    from .data import CXRData, read_split_csv

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
    data = CXRData.load(data_dir, fast=config.fast_subset, seed=config.seed, valid_size=config.valid_size,
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

    from .data import CXRDataset

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
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    per_rank = math.ceil(len(train_set) / world)
    steps_per_epoch = max(1, math.ceil(per_rank / config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=steps_per_epoch * config.epochs,
        pct_start=config.warmup_fraction, anneal_strategy="cos", div_factor=20.0, final_div_factor=200.0,
    )  # fmt: skip
    class_weight = None
    if config.class_weighting:
        counts = np.bincount(labels[train_idx], minlength=len(classes)).astype(np.float64)
        class_weight = torch.tensor(counts.sum() / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32, device=dev)
    criterion = nn.CrossEntropyLoss(weight=class_weight, label_smoothing=config.label_smoothing)
    use_amp = dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    history: list[dict[str, Any]] = []
    start_epoch, best_auc, best_epoch, best_metrics = 0, -1.0, -1, {}
    if resume:
        ckpt = load_checkpoint(run_dir / "last.pt", map_location=dev)
        model.load_state_dict(ckpt["model"])
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
        ddp_model: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    else:
        ddp_model = model

    if main_process and not resume:
        _write_json(run_dir / "config.json", {
            "train": config.to_dict(), "data_dir": str(data.root), "classes": classes,
            "preprocessing": preprocessing.to_dict(), "pretrained_used": pretrained_used,
            "device": str(dev), "world_size": world, "torch": torch.__version__,
            "counts": {s: int(len(data.indices(s))) for s in ("train", "valid", "test")},
        })  # fmt: skip

    budget_s = config.max_minutes * 60 if config.max_minutes else None
    started = time.monotonic()
    stopped = "completed"
    epoch_times: list[float] = []
    epochs_bar = tqdm(range(start_epoch, config.epochs), initial=start_epoch, total=config.epochs, desc="epochs",
                      unit="epoch", disable=not (progress and main_process))  # fmt: skip
    for epoch in epochs_bar:
        if budget_s is not None and epoch_times and time.monotonic() - started + max(epoch_times) > budget_s:
            stopped = "time-budget"
            say(f"stopping before epoch {epoch + 1}: the next epoch would pass the {config.max_minutes:g}-minute budget")
            break
        t0 = time.monotonic()
        generator = _seed_epoch(config.seed, epoch)
        if world > 1:
            sampler: Any = torch.utils.data.DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                                                seed=config.seed, drop_last=False)  # fmt: skip
            sampler.set_epoch(epoch)
            loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers,
                                generator=generator, pin_memory=dev.type == "cuda")  # fmt: skip
        else:
            loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, num_workers=config.workers,
                                generator=generator, pin_memory=dev.type == "cuda",
                                persistent_workers=False)  # fmt: skip
        ddp_model.train()
        total_loss, total_correct, seen = 0.0, 0, 0
        for images, target in tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, unit="batch",
                                   disable=not (progress and main_process)):  # fmt: skip
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
            total_loss += float(loss.detach()) * len(target)
            total_correct += int((logits.argmax(1) == target).sum())
            seen += len(target)
        valid_loader = DataLoader(valid_set, batch_size=max(64, config.batch_size), shuffle=False,
                                  num_workers=config.workers)  # fmt: skip
        probs, valid_labels = predict_proba(model, valid_loader, dev)
        metrics = basic_metrics(probs, valid_labels)
        valid_loss = float(nn.functional.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-8)),
                                                  torch.from_numpy(valid_labels)))  # fmt: skip
        epoch_time = time.monotonic() - t0
        epoch_times.append(epoch_time)
        entry = {
            "epoch": epoch, "train_loss": total_loss / max(seen, 1), "train_accuracy": total_correct / max(seen, 1),
            "valid_loss": valid_loss, "valid_accuracy": metrics["accuracy"], "valid_macro_auc": metrics["macro_auc"],
            "lr": float(scheduler.get_last_lr()[0]), "seconds": round(epoch_time, 2),
        }  # fmt: skip
        history.append(entry)
        improved = metrics["macro_auc"] > best_auc + 1e-6 or best_epoch < 0
        if improved:
            best_auc, best_epoch = metrics["macro_auc"], epoch
            best_metrics = {"valid_accuracy": metrics["accuracy"], "valid_macro_auc": metrics["macro_auc"],
                            "valid_loss": valid_loss, "epoch": epoch}  # fmt: skip
        if main_process:
            ckpt = {
                "format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "epoch": epoch, "rng": _rng_state(), "config": config.to_dict(), "classes": classes,
                "preprocessing": preprocessing.to_dict(), "metrics": best_metrics if improved else entry,
                "best_auc": best_auc, "best_epoch": best_epoch, "best_metrics": best_metrics, "history": history,
            }  # fmt: skip
            if improved:  # best.pt is for predicting: weights and metadata, no optimizer state
                slim = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "scaler", "rng", "history")}
                _atomic_save({**slim, "metrics": best_metrics}, run_dir / "best.pt")
            _atomic_save(ckpt, run_dir / "last.pt")
            _write_json(run_dir / "history.json", history)
            epochs_bar.set_postfix(loss=f"{entry['train_loss']:.3f}", acc=f"{metrics['accuracy']:.3f}",
                                   auc=f"{metrics['macro_auc']:.4f}")  # fmt: skip
            say(f"epoch {epoch + 1}/{config.epochs}: train loss {entry['train_loss']:.4f}, valid accuracy "
                f"{metrics['accuracy']:.4f}, valid macro AUC {metrics['macro_auc']:.4f} ({epoch_time:.1f} s)")  # fmt: skip
        if config.patience is not None and epoch - best_epoch >= config.patience:
            stopped = "early-stopping"
            say(f"early stopping: no better validation macro AUC for {config.patience} epochs")
            break
    epochs_bar.close()
    if world > 1:
        dist.barrier()
    return TrainResult(run_dir, history, best_epoch, best_metrics, stopped, pretrained_used)


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
    from .config import resolve_data_dir

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
