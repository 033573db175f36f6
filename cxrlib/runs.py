"""Where a chapter's model comes from, and what its run folder says about it.

Chapters call :func:`ensure_run` so that each one runs on its own in a fresh kernel: the
first chapter that needs a model trains it, later ones (and re-runs) load it. The readings
of a finished run (:func:`describe_outcome`, :func:`describe_learning_curves`) are printed
by chapter 3 and ``cxr train``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import resolve_data_dir, runs_dir, write_json
from .data import data_fingerprint
from .published import fetch_published_run, run_key
from .recipe import TrainConfig
from .train import describe_eval_size, describe_offsets, train


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
    after_training = ""  # the steps that followed training: the prediction size, the class offsets
    if "eval_size" in saved:
        after_training += f" Predicting at {describe_eval_size(saved['eval_size'])}"
    if "class_offsets" in saved:
        after_training += (
            f" Class offsets fitted on the validation split: {describe_offsets(saved['class_offsets'])} "
            f"{_describe_lean(saved['class_offsets']['offsets'])}"
        )
    if stopped == "completed" and done == planned:
        return (
            f"The schedule completed: {done} of {planned} epochs, {done * per_epoch:,} images "
            f"({per_epoch:,} {draws} draws per epoch), in {minutes:.1f} minutes of training.{after_training}"
        )
    if stopped == "time-budget":
        return (
            f"The {saved['train']['max_minutes']:g}-minute time cap stopped this run after {done} of {planned} "
            f"epochs ({done * per_epoch:,} of {planned * per_epoch:,} images): the learning rate had not "
            f"annealed, so this model is weaker than the recipe intends. `cxr train --out {run_dir.name} "
            f"--resume` finishes the schedule.{after_training}"
        )
    return (
        f"Early stopping ended this run after {done} of {planned} epochs: the validation macro AUC had not "
        f"improved for {saved['train'].get('patience')} epochs.{after_training}"
    )


def _describe_lean(offsets: dict[str, float], small: float = 0.1) -> str:
    """Which class the network leaned towards, read from its class offsets: the most negative
    offset takes close calls away from that class. Offsets all within ``small`` of 0: no lean."""
    leaned = min(offsets, key=offsets.__getitem__)
    if offsets[leaned] > -small:
        return f"No offset is below {-small:g}: the network hardly leaned towards any class."
    return (
        f"The most negative offset is {leaned}'s: the network leaned towards {leaned}, and the offsets move "
        f"close calls away from it."
    )


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
    facts = (
        f"Best epoch {best_epoch + 1} of {n} (by validation macro AUC). Over the last {len(late)} epochs the "
        f"training loss changed by {train_change:+.3f} and the validation loss by {valid_change:+.3f}; the "
        f"learning rate ended at {end:.2g}, from the schedule's peak of {peak_lr:.2g}."
    )
    at_end = best_epoch + 1 >= n - max(1, n // 10)
    if valid_change < 0:
        where = "with the best epoch at the end" if at_end else f"though the best epoch was {best_epoch + 1}"
        tail = (
            "; epochs added after this one would train at a learning rate near zero and change little"
            if annealed
            else ""
        )
        reading = (
            f"The validation loss was still falling when the schedule ended, {where}: the model was still "
            f"improving, so a longer schedule (more epochs, annealed over all of them) would likely help"
            f"{tail}."
        )
    elif train_change < 0:
        reading = (
            "The validation loss rose while the training loss kept falling: the model had started to overfit, "
            "and more epochs would not help without more data or stronger augmentation."
        )
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
    download: bool = True,
) -> Path:
    """A finished run of ``config`` named ``name`` under :func:`cxrlib.config.runs_dir`.

    Chapters call this so that each one runs on its own in a fresh kernel. It tries, in order:

    1. a finished local run with the same configuration and data folder;
    2. the book's published run of this configuration and data version
       (:func:`cxrlib.published.fetch_published_run`: keyed by the configuration and
       :func:`cxrlib.data.data_fingerprint`, every file checked against its sha256 before
       it is kept). Not for fast mode's toy models, which train faster than they download,
       and never with ``download=False`` or ``CXR_DOWNLOAD_RUNS=0``;
    3. training, with one line saying why a published run was not used.
    """
    say = log or print
    root = str(resolve_data_dir(data_dir))
    run_dir = runs_dir() / name
    done = run_dir / "done.json"
    wanted = json.loads(json.dumps({"train": config.to_dict(), "data_dir": root}))  # tuples read back as lists
    if done.is_file() and (run_dir / "best.pt").is_file():
        try:
            found = json.loads(done.read_text())
            if {k: found.get(k) for k in wanted} == wanted:
                return run_dir
        except (ValueError, AttributeError):
            pass
    done.unlink(missing_ok=True)  # an interrupted retrain must not look finished
    if download and not config.fast_subset:
        key = run_key(config.to_dict(), data_fingerprint(root))
        if fetch_published_run(name, key, run_dir, progress=progress, say=say) is not None:
            write_json(done, {**wanted, "published": key})
            say(f"Downloaded the book's published run {name} (every file matched its sha256): no training needed.")
            return run_dir
    train(config, run_dir, data_dir=root, overwrite=True, progress=progress, log=log)
    write_json(done, wanted)
    return run_dir
