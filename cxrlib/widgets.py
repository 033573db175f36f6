"""An explorer of test predictions: filter, step through images, look at what the model looked at.

>>> explorer = Explorer.from_run(run_dir)      # predictions computed once, then cached
>>> explorer.widget()                           # in a notebook
>>> explorer.render(0)                          # one step without widgets (a Matplotlib figure)

What is computed when:

* **predictions** of the whole split once (:func:`cxrlib.evaluate.cached_predictions`:
  an ``.npz`` beside the run, keyed by the checkpoint and the split), so opening the
  explorer again costs nothing;
* **CAMs** on demand, for the image shown and the method chosen, and kept in memory
  per ``(image, method)``;
* **drawing** reuses one figure: a step only replaces the pixel data of two images, the
  lengths of the probability bars and the title, then renders with Agg into a JPEG for an
  ``ipywidgets.Image``. No figure is created per step, and no pyplot figure is left open;
  the axes, ticks and labels are rendered once and restored from a saved background
  (blitting), so a step draws only the two images, the bars and the titles.

A step (:meth:`Explorer.step`) is prediction lookup + CAM + drawing; ``cxr bench``
reports its median and 95th percentile.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import CXRError
from .evaluate import Predictions, cached_predictions, model_input
from .explain import CAM_METHODS, CamExplainer, overlay
from .train import LoadedModel, load_model
from .viz import CLASS_COLORS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


class _StepArtists:
    """The artists of one explorer step on three axes: X-ray, CAM overlay, probabilities.
    Created once; :meth:`update` only changes their data."""

    def __init__(self, axes: Any, classes: list[str], size: int) -> None:
        ax_image, ax_cam, ax_bar = axes
        blank = np.zeros((size, size), np.uint8)
        # one image per axes (the overlay is blended here, not by Matplotlib): cheaper to draw
        self.image = ax_image.imshow(blank, cmap="gray", vmin=0, vmax=255, interpolation="bilinear")
        self.cam = ax_cam.imshow(np.zeros((size, size, 3), np.float32), interpolation="bilinear")
        for ax in (ax_image, ax_cam):
            ax.set_xticks([])
            ax.set_yticks([])
        self.titles = [ax.set_title("", fontsize=9) for ax in axes]
        y = np.arange(len(classes))
        self.bars = ax_bar.barh(y, np.zeros(len(classes)), color=[CLASS_COLORS.get(c, "#7f7f7f") for c in classes])
        self.values = [ax_bar.text(0.0, k, "", va="center", fontsize=8) for k in y]
        ax_bar.set_yticks(y, [c.replace(" ", "\n") if len(c) > 12 else c for c in classes], fontsize=8)
        ax_bar.invert_yaxis()
        ax_bar.set_xlim(0, 1.3)
        ax_bar.set_xticks([0, 0.5, 1])
        ax_bar.tick_params(axis="x", labelsize=8)
        for side in ("top", "right"):
            ax_bar.spines[side].set_visible(False)
        self.classes = classes

    def dynamic(self) -> list[Any]:
        """The artists a step changes (for blitting)."""
        return [self.image, self.cam, *self.bars, *self.values, *self.titles]

    def update(self, image: np.ndarray | None, cam: np.ndarray | None, probs: np.ndarray | None,
               true: int | None, titles: tuple[str, str, str]) -> None:  # fmt: skip
        empty = image is None
        pixels = np.zeros(self.image.get_array().shape, np.uint8) if empty else image
        self.image.set_data(pixels)
        self.cam.set_data(np.zeros((*pixels.shape, 3), np.float32) if cam is None else overlay(pixels, cam))
        for artist, title in zip(self.titles, titles):
            artist.set_text(title)
        for k, (bar, text) in enumerate(zip(self.bars, self.values)):
            p = 0.0 if probs is None else float(probs[k])
            bar.set_width(p)
            bar.set_edgecolor("black" if k == true else "none")
            bar.set_linewidth(1.5 if k == true else 0)
            text.set_x(p + 0.02)
            text.set_text("" if probs is None else f"{p:.2f}" + ("  (true)" if k == true else ""))


class Explorer:
    """Browse a split's predictions with their CAMs. See the module docstring."""

    def __init__(self, model: LoadedModel, predictions: Predictions, *, method: str = "gradcam",
                 dpi: int = 80) -> None:  # fmt: skip
        if predictions.images is None:
            raise CXRError("the explorer needs the images: use cached_predictions() or predict_split(keep_images=True)")
        if method not in CAM_METHODS:
            raise CXRError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")
        self.loaded = model
        self.model = model.model.cpu().eval()
        self.pred = predictions
        self.method = method
        self.dpi = dpi
        self.selection = np.arange(len(predictions))
        self.position = 0
        self.controls: dict[str, Any] = {}
        self._cams: dict[tuple[int, str], np.ndarray] = {}
        self._explainer: CamExplainer | None = None
        self._fig: Figure | None = None
        self._artists: _StepArtists | None = None
        self._busy = False

    @classmethod
    def from_run(cls, run: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, *,
                 split: str = "test", method: str = "gradcam", progress: bool = False) -> Explorer:  # fmt: skip
        """An explorer of one split of a run's data (predictions from the cache when possible)."""
        predictions = cached_predictions(run, data_dir, split=split, progress=progress)
        return cls(load_model(run), predictions, method=method)

    # -------------------------------------------------------------- selection

    def select(self, *, true: str | None = None, predicted: str | None = None, correct: bool | None = None,
               confidence: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:  # fmt: skip
        """Keep the images matching every filter given (``None``: no filter); returns and
        stores their indices in :attr:`selection`, and goes back to the first one."""
        classes = self.pred.classes
        keep = np.ones(len(self.pred), dtype=bool)
        for name, values in (("true", self.pred.labels), ("predicted", self.pred.predicted)):
            wanted = true if name == "true" else predicted
            if wanted is not None:
                if wanted not in classes:
                    raise CXRError(f"unknown class {wanted!r}; the model knows {', '.join(classes)}")
                keep &= values == classes.index(wanted)
        if correct is not None:
            keep &= self.pred.correct == bool(correct)
        lo, hi = confidence
        keep &= (self.pred.confidence >= lo - 1e-9) & (self.pred.confidence <= hi + 1e-9)
        self.selection = np.flatnonzero(keep)
        self.position = 0
        return self.selection

    # -------------------------------------------------------------- CAMs

    def _get_explainer(self, method: str) -> CamExplainer:
        if self._explainer is None or self._explainer.method != method:
            if self._explainer is not None:  # one set of hooks at a time on the model
                self._explainer.close()
            self._explainer = CamExplainer(self.model, method)
        return self._explainer

    def cam(self, index: int, method: str | None = None) -> np.ndarray:
        """The CAM of image ``index`` for its predicted class (computed once per method)."""
        method = method or self.method
        key = (int(index), method)
        if key not in self._cams:
            explainer = self._get_explainer(method)
            x = model_input(self.loaded, self.pred.images[index : index + 1])  # type: ignore[index]
            self._cams[key] = explainer(x, [int(self.pred.predicted[index])])[0]
        return self._cams[key]

    def clear_cache(self) -> None:
        """Forget the CAMs computed so far."""
        self._cams.clear()

    def close(self) -> None:
        """Remove the CAM hooks from the model."""
        if self._explainer is not None:
            self._explainer.close()
            self._explainer = None

    # -------------------------------------------------------------- drawing

    def describe(self, index: int) -> str:
        """One line about image ``index``: file, true and predicted class, confidence."""
        p, classes = self.pred, self.pred.classes
        true, guess = classes[int(p.labels[index])], classes[int(p.predicted[index])]
        verdict = "right" if true == guess else "wrong"
        name = os.path.basename(p.paths[index])
        return f"{name}: true {true}, predicted {guess} ({p.confidence[index]:.0%}), {verdict}"

    def _figure(self) -> tuple[Figure, _StepArtists]:
        if self._fig is None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            fig = Figure(figsize=(9.0, 3.1), dpi=self.dpi)  # not a pyplot figure: never shown twice
            FigureCanvasAgg(fig)
            # fixed rectangles (left, bottom, width, height): no layout engine to run per step
            axes = [fig.add_axes((0.01, 0.04, 0.28, 0.78)), fig.add_axes((0.31, 0.04, 0.28, 0.78)),
                    fig.add_axes((0.73, 0.1, 0.22, 0.72))]  # fmt: skip
            self._artists = _StepArtists(axes, self.pred.classes, self.pred.images.shape[-1])  # type: ignore[union-attr]
            self._title = fig.suptitle("", fontsize=10)
            # blitting: everything that never changes (axes, ticks, labels) is rendered once
            # into a background; a step restores it and draws only the changing artists
            self._dynamic = [*self._artists.dynamic(), self._title]
            for artist in self._dynamic:
                artist.set_animated(True)
            fig.canvas.draw()
            self._background = fig.canvas.copy_from_bbox(fig.bbox)
            self._fig = fig
        return self._fig, self._artists  # type: ignore[return-value]

    def render(self, index: int | None, method: str | None = None) -> Figure:
        """Draw one step (image ``index``, or an empty panel for ``None``) into the
        explorer's figure and render it; returns the figure (its Agg canvas holds the
        pixels: ``fig.canvas.buffer_rgba()``)."""
        fig, artists = self._figure()
        method = method or self.method
        if index is None:
            artists.update(None, None, None, None, ("", "", ""))
            self._title.set_text("no image matches the filters")
        else:
            p = self.pred
            artists.update(p.images[index], self.cam(index, method), p.probs[index], int(p.labels[index]),  # type: ignore[index]
                           ("X-ray", f"{method}: {p.classes[int(p.predicted[index])]}", "probabilities"))  # fmt: skip
            self._title.set_text(self.describe(index))
        fig.canvas.restore_region(self._background)
        for artist in self._dynamic:
            fig.draw_artist(artist)
        return fig

    def step(self, index: int | None, method: str | None = None) -> bytes:
        """One explorer step as JPEG bytes (what the widget shows): prediction lookup, CAM,
        drawing and encoding (JPEG encodes about ten times faster than PNG)."""
        from PIL import Image

        fig = self.render(index, method)
        buf = io.BytesIO()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]  # type: ignore[attr-defined]
        Image.fromarray(rgb).save(buf, format="jpeg", quality=92)
        return buf.getvalue()

    def static_figure(self, indices: list[int], method: str | None = None) -> Figure:
        """Several steps stacked in one (pyplot) figure, for a page without a kernel."""
        import matplotlib.pyplot as plt

        method = method or self.method
        fig, axes = plt.subplots(len(indices), 3, figsize=(9.0, 2.7 * len(indices)), squeeze=False,
                                 gridspec_kw={"width_ratios": [1, 1, 1.15]})  # fmt: skip
        p = self.pred
        for row, index in zip(axes, indices):
            artists = _StepArtists(row, p.classes, p.images.shape[-1])  # type: ignore[union-attr]
            true, guess = p.classes[int(p.labels[index])], p.classes[int(p.predicted[index])]
            name = os.path.basename(p.paths[index])
            titles = (name if len(name) <= 30 else name[:27] + "...", f"{method} map of {guess}",
                      f"true {true}: {'right' if true == guess else 'wrong'} ({p.confidence[index]:.0%})")  # fmt: skip
            artists.update(p.images[index], self.cam(index, method), p.probs[index], int(p.labels[index]),  # type: ignore[index]
                           titles)
        fig.tight_layout()
        return fig

    # -------------------------------------------------------------- widget

    def widget(self) -> Any:
        """The interactive explorer (ipywidgets). Its controls are in :attr:`controls`."""
        import ipywidgets as w

        classes = [self.pred.classes[c] for c in sorted(set(self.pred.present) | set(np.unique(self.pred.predicted).tolist()))]
        c = self.controls
        c["true"] = w.Dropdown(options=[("any", None)] + [(k, k) for k in classes], description="true")
        c["predicted"] = w.Dropdown(options=[("any", None)] + [(k, k) for k in classes], description="predicted")
        c["correct"] = w.ToggleButtons(options=[("all", None), ("right", True), ("wrong", False)], value=None,
                                       style={"button_width": "60px"})  # fmt: skip
        c["confidence"] = w.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.01, description="confidence",
                                             readout_format=".2f", continuous_update=False)  # fmt: skip
        c["method"] = w.Dropdown(options=list(CAM_METHODS), value=self.method, description="CAM")
        c["previous"] = w.Button(description="◀ previous", layout=w.Layout(width="110px"))
        c["next"] = w.Button(description="next ▶", layout=w.Layout(width="110px"))
        c["position"] = w.IntSlider(min=0, max=max(0, len(self.selection) - 1), value=0, description="image",
                                    continuous_update=False)  # fmt: skip
        c["info"] = w.HTML()
        c["image"] = w.Image(format="jpeg", layout=w.Layout(width="720px"))

        def refilter(_change: Any = None) -> None:
            self.select(true=c["true"].value, predicted=c["predicted"].value, correct=c["correct"].value,
                        confidence=tuple(c["confidence"].value))  # fmt: skip
            self._busy = True
            try:
                c["position"].value = 0
                c["position"].max = max(0, len(self.selection) - 1)
            finally:
                self._busy = False
            show()

        def show(_change: Any = None) -> None:
            if self._busy:
                return
            self.method = c["method"].value
            n = len(self.selection)
            self.position = min(c["position"].value, max(0, n - 1))
            index = int(self.selection[self.position]) if n else None
            c["image"].value = self.step(index)
            c["info"].value = f"image {self.position + 1} of {n} matching" if n else "<b>no image matches</b>"
            c["previous"].disabled = self.position <= 0
            c["next"].disabled = self.position >= n - 1

        def move(delta: int) -> None:
            n = len(self.selection)
            if n:
                c["position"].value = int(np.clip(c["position"].value + delta, 0, n - 1))

        for name in ("true", "predicted", "correct", "confidence"):
            c[name].observe(refilter, names="value")
        c["method"].observe(show, names="value")
        c["position"].observe(show, names="value")
        c["previous"].on_click(lambda _b: move(-1))
        c["next"].on_click(lambda _b: move(+1))
        refilter()
        filters = w.HBox([c["true"], c["predicted"], c["correct"]])
        navigation = w.HBox([c["previous"], c["next"], c["position"], c["info"]])
        return w.VBox([filters, w.HBox([c["confidence"], c["method"]]), navigation, c["image"]])
