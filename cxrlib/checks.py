"""Self-checks for exercises: each says what is wrong with an answer, in words.

A check returns a :class:`CheckReport` (it prints as a short list of findings) and never
raises on a wrong answer, so a student sees every problem at once. ``report.passed``
tells whether everything was fine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors


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
        report.problems.append(f"the images barely resemble the original (median correlation {np.median(corr):.2f}): "
                               "too strong to be a plausible radiograph")  # fmt: skip
    if report.passed:
        report.notes.append(f"mean absolute change per pixel: {np.mean(diffs):.3f} (0..1 scale)")
    return report
