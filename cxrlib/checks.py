"""Self-checks for exercises: each says what is wrong with an answer, in words.

One check per chapter at least, each called by the chapter right after its exercise:
:func:`check_black_shares` (chapter 1), :func:`check_augmentation` (2),
:func:`check_trained_parameters` (3), :func:`check_sample_size` (4), :func:`check_cams` (5),
:func:`check_confusion_table` (6) and :func:`check_shift_table` (7).

A check returns a :class:`CheckReport` (it prints as a short list of findings) and never
raises on a wrong answer, so a student sees every problem at once. ``report.passed``
tells whether everything was fine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors

from .models import n_weights


@dataclass
class CheckReport:
    """Findings of a check: problems (the answer is wrong) and notes (worth a look)."""

    name: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"{self.name}: {'all checks passed' if self.passed else f'{len(self.problems)} problem(s)'}"
        lines = [head] + [f"  ✗ {p}" for p in self.problems] + [f"  • {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython display
        printer.text(str(self))


def _test_image(size: int = 64) -> tv_tensors.Image:
    """A synthetic, asymmetric 'chest': two lungs of different size and a heart on one side."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 0.55 + 0.3 * yy - 0.45 * np.exp(-(((xx - 0.3) / 0.18) ** 2 + ((yy - 0.45) / 0.32) ** 2))
    image -= 0.35 * np.exp(-(((xx - 0.72) / 0.15) ** 2 + ((yy - 0.42) / 0.28) ** 2))
    image += 0.3 * np.exp(-(((xx - 0.6) / 0.14) ** 2 + ((yy - 0.68) / 0.14) ** 2))  # heart, off-centre
    pixels = np.clip(image * 255, 0, 255).astype(np.uint8)
    return tv_tensors.Image(torch.from_numpy(pixels)[None])


def _as_float(output: Any) -> np.ndarray:
    array = np.asarray(output.detach().cpu() if hasattr(output, "detach") else output, dtype=np.float64).squeeze()
    return array / 255.0 if array.max() > 1.5 else array


def check_augmentation(fn: Callable[[Any], Any], *, trials: int = 12) -> CheckReport:
    """Check an augmentation ``fn(image) -> image`` for chest X-rays.

    ``image`` is a ``uint8`` ``tv_tensors.Image`` of shape ``(1, H, W)``; the result may be
    ``uint8`` or float in 0..1, of the same shape. Checked: it runs, keeps the shape, stays
    in range, is random (not the same every call), changes the image (but not beyond
    recognition), does not mirror the anatomy and does not invert intensities.
    """
    report = CheckReport("check_augmentation")
    image = _test_image()
    original = _as_float(image)
    outputs = []
    for trial in range(trials):
        torch.manual_seed(trial)
        try:
            out = fn(image.clone())
        except NotImplementedError:
            report.problems.append("the function is not written yet (it raises NotImplementedError)")
            return report
        except Exception as err:  # a student's bug: report it, do not crash the notebook
            report.problems.append(f"calling it raised {type(err).__name__}: {err}")
            return report
        if not isinstance(out, torch.Tensor):
            report.problems.append(f"it must return a tensor, not {type(out).__name__}")
            return report
        if tuple(out.shape) != tuple(image.shape):
            report.problems.append(f"shape changed from {tuple(image.shape)} to {tuple(out.shape)}")
            return report
        outputs.append(_as_float(out))
    lows, highs = min(o.min() for o in outputs), max(o.max() for o in outputs)
    if lows < -1e-6 or highs > 1 + 1e-6:
        report.problems.append(f"values leave the 0..1 range ({lows:.2f}..{highs:.2f}): clip, or normalize later")
    if all(np.allclose(outputs[0], o, atol=1e-6) for o in outputs[1:]):
        report.problems.append("every call gives the same image: an augmentation must be random")
    diffs = [float(np.abs(o - original).mean()) for o in outputs]
    if max(diffs) < 1e-3:
        report.problems.append("the image is unchanged: nothing is augmented")
    flipped = original[:, ::-1]
    corr = [float(np.corrcoef(o.ravel(), original.ravel())[0, 1]) for o in outputs]
    corr_flip = [float(np.corrcoef(o.ravel(), flipped.ravel())[0, 1]) for o in outputs]
    upside = original[::-1, :]
    corr_up = [float(np.corrcoef(o.ravel(), upside.ravel())[0, 1]) for o in outputs]
    if sum(cf > max(c, 0.3) for c, cf in zip(corr, corr_flip)) > trials // 4:
        report.problems.append("it mirrors the image left-right: the heart would be on the wrong side")
    if sum(cu > max(c, 0.3) for c, cu in zip(corr, corr_up)) > trials // 4:
        report.problems.append("it turns the image upside down: no radiograph is taken that way")
    if np.median(corr) < -0.3:
        report.problems.append("it inverts intensities: bone would turn dark and air bright")
    elif np.median(corr) < 0.5:
        report.problems.append(
            f"the images barely resemble the original (median correlation {np.median(corr):.2f}): "
            "too strong to be a plausible radiograph"
        )
    if report.passed:
        report.notes.append(f"mean absolute change per pixel: {np.mean(diffs):.3f} (0..1 scale)")
    return report


# --------------------------------------------------------------------------- one check per chapter


def _not_written(report: CheckReport, err: NotImplementedError) -> CheckReport:
    report.problems.append(str(err) or "the answer is not written yet")
    return report


def check_black_shares(medians: Mapping[str, float], data: Any, *, level: int = 10) -> CheckReport:
    """Chapter 1 (exercise on black backgrounds): ``medians`` maps each class to the median,
    over its images, of the share of pixels below ``level`` in ``data.pixels(64)``."""
    report = CheckReport("check_black_shares")
    try:
        answer = {str(k): float(v) for k, v in dict(medians).items()}
    except NotImplementedError as err:
        return _not_written(report, err)
    except (TypeError, ValueError):
        report.problems.append("give a dict {class name: median share}, e.g. {'COVID': 0.02, ...}")
        return report
    pixels = np.asarray(data.pixels(64, progress=False))
    labels = data.labels()
    share = (pixels < level).mean(axis=(1, 2))
    expected = {name: float(np.median(share[labels == k])) for k, name in enumerate(data.classes)}
    missing = sorted(set(expected) - set(answer))
    if missing:
        report.problems.append(f"classes missing: {', '.join(missing)}")
    for name, value in answer.items():
        if name not in expected:
            report.problems.append(f"{name!r} is not a class of this data ({', '.join(expected)})")
        elif not 0 <= value <= 1:
            report.problems.append(f"{name}: {value:.2f} is not a share between 0 and 1")
        elif abs(value - expected[name]) > 0.02:
            report.problems.append(
                f"{name}: {value:.3f}, expected about {expected[name]:.3f}: the share of pixels "
                f"below {level} per image, then the median over the class's images"
            )
    if report.passed:
        report.notes.append(f"the blackest class: {max(expected, key=expected.get)}")
    return report


def check_trained_parameters(n_trained: int, model: torch.nn.Module) -> CheckReport:
    """Chapter 3 (frozen backbone): ``n_trained`` is the number of weights that still train
    in ``model`` once its backbone is frozen: those of the classifier ``fc`` only."""
    report = CheckReport("check_trained_parameters")
    try:
        n = int(n_trained)
        head = n_weights(model.fc)
        total = n_weights(model)
        trainable = n_weights(model, trainable_only=True)
    except NotImplementedError as err:
        return _not_written(report, err)
    if trainable != head:
        still = [name for name, p in model.named_parameters() if p.requires_grad and not name.startswith("fc.")]
        report.problems.append(
            f"the backbone is not frozen: {len(still)} tensors outside fc still train "
            f"(first: {still[0]}); use set_backbone_trainable(model, False)"
            if still
            else "the classifier fc is frozen too: nothing would learn"
        )
    if n == total:
        report.problems.append(f"{n:,} is every weight of the model: count only those with requires_grad")
    elif n != head:
        report.problems.append(f"{n:,} weights, but the classifier fc has {head:,} (its weight matrix and its bias)")
    if report.passed:
        report.notes.append(f"{head:,} of {total:,} weights train ({head / total:.2%})")
    return report


def check_sample_size(n: int, *, accuracy: float = 0.90, half_width: float = 0.01, classes: int = 4) -> CheckReport:
    """Chapter 4 (test-set size): ``n`` test images give a 95 % interval of about
    ``± half_width`` around ``accuracy`` (normal approximation), in equal classes."""
    report = CheckReport("check_sample_size")
    try:
        n = int(n)
    except NotImplementedError as err:
        return _not_written(report, err)
    if n <= 0:
        report.problems.append("a test set needs at least one image")
        return report
    reached = 1.96 * np.sqrt(accuracy * (1 - accuracy) / n)
    if n % classes:
        report.problems.append(f"{n} images cannot be split into {classes} equal classes")
    if abs(reached - half_width) > 0.05 * half_width:
        report.problems.append(
            f"n = {n} gives ± {reached:.2%}, not ± {half_width:.0%}: solve "
            f"1.96 * sqrt(p (1 - p) / n) = {half_width} for n"
        )
    if report.passed:
        report.notes.append(f"± {reached:.2%} with {n} images")
    return report


def check_cams(cams: Any, n: int, size: int) -> CheckReport:
    """Chapter 5 (maps of the true class): ``cams`` holds ``n`` maps of ``size x size``
    pixels, finite, scaled to 0..1."""
    report = CheckReport("check_cams")
    try:
        maps = np.asarray(cams, dtype=np.float64)
    except NotImplementedError as err:
        return _not_written(report, err)
    if maps.shape != (n, size, size):
        report.problems.append(f"expected {n} maps of {size} x {size}, got an array of shape {maps.shape}")
        return report
    if not np.isfinite(maps).all():
        report.problems.append("some values are not finite (nan or inf)")
    elif maps.min() < -1e-6 or maps.max() > 1 + 1e-6:
        report.problems.append(f"values from {maps.min():.2f} to {maps.max():.2f}: maps are scaled to 0..1")
    empty = int((maps.reshape(n, -1).max(axis=1) <= 0).sum()) if n else 0
    if report.passed and empty:
        report.notes.append(f"{empty} of {n} maps are all zero: nothing in those images spoke for that class")
    return report


def check_confusion_table(table: Any, frame: Any) -> CheckReport:
    """Chapter 6 (dominant confusions): ``table`` has one row per (true, predicted) pair of
    the mistakes in ``frame`` (``explorer.pred.to_frame()``), a ``count`` column, sorted by
    count, most frequent first."""
    report = CheckReport("check_confusion_table")
    try:
        counts = table["count"]
        errors = frame[~frame["correct"]]
    except NotImplementedError as err:
        return _not_written(report, err)
    except (KeyError, TypeError):
        report.problems.append("expected a table with a 'count' column, indexed by (true, predicted)")
        return report
    truth = errors.groupby(["true", "predicted"]).size()
    got = {tuple(k): int(v) for k, v in counts.items()}
    if got != {tuple(k): int(v) for k, v in truth.items()}:
        report.problems.append(
            f"the counts differ from the mistakes of the frame ({int(truth.sum())} mistakes "
            f"in {len(truth)} pairs): count the rows where correct is False"
        )
    if list(counts) != sorted(counts, reverse=True):
        report.problems.append("sort the pairs by count, most frequent first")
    if report.passed and len(truth):
        top = counts.index[0]
        report.notes.append(f"most frequent: {top[0]} -> {top[1]} ({int(counts.iloc[0])})")
    return report


def check_shift_table(shift: Any, classes: Sequence[str]) -> CheckReport:
    """Chapter 7 (lungs hidden at prediction time): ``shift`` is a table of shares, rows
    ``("before" | "after", true class)``, one column per class, each row summing to 1."""
    report = CheckReport("check_shift_table")
    try:
        whens = list(dict.fromkeys(shift.index.get_level_values(0)))
    except NotImplementedError as err:
        return _not_written(report, err)
    except AttributeError:
        report.problems.append("expected the table of trust.blackout_shift (rows: before/after x true class)")
        return report
    if whens != ["before", "after"]:
        report.problems.append(f"rows should come as 'before' then 'after', not {whens}")
    missing = [c for c in classes if c not in shift.columns]
    if missing:
        report.problems.append(f"columns missing: {', '.join(missing)}")
    sums = shift[[c for c in classes if c in shift.columns]].sum(axis=1).to_numpy(dtype=float)
    if not np.allclose(sums, 1.0, atol=1e-6):
        report.problems.append("each row should sum to 1 (shares of the images of one true class)")
    return report
