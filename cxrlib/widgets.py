"""An explorer of test predictions: filter, step through images, look at what the model looked at.

>>> explorer = Explorer.from_run(run_dir)      # predictions computed once, then cached
>>> explorer.show()                             # live in a kernel, static on the web page
>>> explorer.render(0)                          # one step without widgets (a Matplotlib figure)

:meth:`Explorer.show` is one call for two readers. Its output carries two views of the same
explorer: the live widget (:meth:`Explorer.widget`; JupyterLab shows it, and it computes any
image's map with any method on demand) and a static HTML explorer (:meth:`Explorer.static_html`)
that the rendered book shows instead (``nb_mime_priority_overrides`` in ``_config.yml``). The
static one is drawn at build time (each image's X-ray, its CAM and its four probabilities,
for every test image or for every error plus a stratified sample of the correct ones) and is
driven in the browser by a few lines of JavaScript: filters, previous/next and a slider work
with no kernel and no network.

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

import base64
import html
import io
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .checkpoint import LoadedModel, cpu_model, load_model, model_input, run_data_dir
from .config import CXRError
from .evaluate import Predictions, cached_predictions, predict_split
from .explain import CAM_METHODS, CamExplainer, overlay
from .viz import CLASS_COLORS

#: Intra-op threads for one image's CAM. One image is too little work to share: with two
#: threads, each of the network's many small operations ends at a barrier, and when anything
#: else runs on the machine the thread that was put aside stalls them all. On 2 cores beside a
#: busy 2-thread process, a 64-px step took a median 646 ms with 2 threads and 111 ms with 1;
#: on an idle machine 1 thread costs a few ms more at 224 px (cxr bench, chapter 6).
STEP_THREADS = 1


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads in torch, then restore the number before."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: The value of the widget's "any" and "all" choices (no filter on that control).
NO_FILTER = ""

#: Images on the static explorer of a page at most (every error first): about 25 KB each at
#: 160 px, so a full-mode page stays far below 8 MB.
STATIC_LIMIT = 120


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

    def update(
        self,
        image: np.ndarray | None,
        cam: np.ndarray | None,
        probs: np.ndarray | None,
        true: int | None,
        titles: tuple[str, str, str],
    ) -> None:
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

    def __init__(self, model: LoadedModel, predictions: Predictions, *, method: str = "gradcam", dpi: int = 80) -> None:
        if predictions.images is None:
            raise CXRError("the explorer needs the images: use cached_predictions() or predict_split(keep_images=True)")
        if method not in CAM_METHODS:
            raise CXRError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")
        self.loaded = model
        self.model = cpu_model(model.model)  # the caller's model stays where it is
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
    def from_run(
        cls,
        run: str | os.PathLike[str],
        data_dir: str | os.PathLike[str] | None = None,
        *,
        split: str = "test",
        method: str = "gradcam",
        img_size: int | None = None,
        progress: bool = False,
    ) -> Explorer:
        """An explorer of one split of a run's data (predictions from the cache when possible).

        ``img_size``: show (and predict, and map) the images at another size than the run's
        own, e.g. 224 px for a model trained at 160 (predictions are then not cached)."""
        loaded = load_model(run)
        if img_size is None or img_size == loaded.preprocessing.img_size:
            predictions = cached_predictions(run, data_dir, split=split, progress=progress)
        else:
            loaded = loaded.at_size(img_size)
            predictions = predict_split(
                loaded,
                data_dir if data_dir is not None else run_data_dir(run),
                split=split,
                keep_images=True,
                progress=progress,
            )
        return cls(loaded, predictions, method=method)

    # -------------------------------------------------------------- selection

    def select(
        self,
        *,
        true: str | None = None,
        predicted: str | None = None,
        correct: bool | None = None,
        confidence: tuple[float, float] = (0.0, 1.0),
    ) -> np.ndarray:
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
            with intra_op_threads(STEP_THREADS):
                self._cams[key] = explainer(x, [int(self.pred.predicted[index])])[0]
        return self._cams[key]

    def cams(self, indices: Any, method: str | None = None, batch_size: int = 16) -> np.ndarray:
        """The CAMs of several images, computed in batches (one forward and backward pass per
        batch) for those not yet in the cache; ``(n, size, size)``."""
        method = method or self.method
        indices = [int(i) for i in indices]
        missing = [i for i in indices if (i, method) not in self._cams]
        explainer = self._get_explainer(method) if missing else None
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            x = model_input(self.loaded, self.pred.images[chunk])  # type: ignore[index]
            for i, cam in zip(chunk, explainer(x, [int(self.pred.predicted[i]) for i in chunk])):  # type: ignore[misc]
                self._cams[(i, method)] = cam
        size = self.pred.images.shape[-1]  # type: ignore[union-attr]
        return np.stack([self._cams[(i, method)] for i in indices]) if indices else np.zeros((0, size, size))

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
            fig = Figure(figsize=(9.0, 3.1), dpi=self.dpi)  # not a pyplot figure: never shown twice
            FigureCanvasAgg(fig)
            # fixed rectangles (left, bottom, width, height): no layout engine to run per step
            axes = [
                fig.add_axes((0.01, 0.04, 0.28, 0.78)),
                fig.add_axes((0.31, 0.04, 0.28, 0.78)),
                fig.add_axes((0.73, 0.1, 0.22, 0.72)),
            ]
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
            artists.update(
                p.images[index],
                self.cam(index, method),
                p.probs[index],
                int(p.labels[index]),  # type: ignore[index]
                ("X-ray", f"{method}: {p.classes[int(p.predicted[index])]}", "probabilities"),
            )
            self._title.set_text(self.describe(index))
        fig.canvas.restore_region(self._background)
        for artist in self._dynamic:
            fig.draw_artist(artist)
        return fig

    def step(self, index: int | None, method: str | None = None) -> bytes:
        """One explorer step as JPEG bytes (what the widget shows): prediction lookup, CAM,
        drawing and encoding (JPEG encodes about ten times faster than PNG)."""
        fig = self.render(index, method)
        buf = io.BytesIO()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]  # type: ignore[attr-defined]
        Image.fromarray(rgb).save(buf, format="jpeg", quality=92)
        return buf.getvalue()

    def static_figure(self, indices: list[int], method: str | None = None) -> Figure:
        """Several steps stacked in one (pyplot) figure, for a page without a kernel."""
        method = method or self.method
        fig, axes = plt.subplots(
            len(indices),
            3,
            figsize=(9.0, 2.7 * len(indices)),
            squeeze=False,
            gridspec_kw={"width_ratios": [1, 1, 1.15]},
        )
        p = self.pred
        for row, index in zip(axes, indices):
            artists = _StepArtists(row, p.classes, p.images.shape[-1])  # type: ignore[union-attr]
            true, guess = p.classes[int(p.labels[index])], p.classes[int(p.predicted[index])]
            name = os.path.basename(p.paths[index])
            titles = (
                name if len(name) <= 30 else name[:27] + "...",
                f"{method} map of {guess}",
                f"true {true}: {'right' if true == guess else 'wrong'} ({p.confidence[index]:.0%})",
            )
            artists.update(
                p.images[index],
                self.cam(index, method),
                p.probs[index],
                int(p.labels[index]),  # type: ignore[index]
                titles,
            )
        fig.tight_layout()
        return fig

    # -------------------------------------------------------------- static page

    def static_indices(self, limit: int = STATIC_LIMIT, seed: int = 0) -> np.ndarray:
        """The images of the static explorer: all of them when there are at most ``limit``;
        otherwise every error (the most confident first, if even they are too many) and, for
        the rest of ``limit``, correct ones drawn evenly over the true classes (seeded)."""
        p = self.pred
        if len(p) <= limit:
            return np.arange(len(p))
        wrong = np.flatnonzero(~p.correct)
        wrong = wrong[np.argsort(-p.confidence[wrong], kind="stable")][:limit]
        room = limit - len(wrong)
        rng = np.random.default_rng(seed)
        right_by_class = [rng.permutation(np.flatnonzero(p.correct & (p.labels == k))) for k in np.unique(p.labels)]
        chosen: list[int] = []
        while room > 0 and any(len(r) for r in right_by_class):  # round robin over the classes
            for k, pool in enumerate(right_by_class):
                if room > 0 and len(pool):
                    chosen.append(int(pool[0]))
                    right_by_class[k] = pool[1:]
                    room -= 1
        return np.sort(np.concatenate([wrong, np.asarray(chosen, dtype=int)]).astype(int))

    def static_html(self, indices: Any = None, method: str | None = None, limit: int = STATIC_LIMIT) -> str:
        """A self-contained HTML explorer of ``indices`` (default :meth:`static_indices`):
        each image's X-ray and CAM as small JPEGs, its probabilities as bars, and controls
        (true class, predicted class, right or wrong, previous/next, a slider) driven by
        inline JavaScript. It needs no kernel and no network."""
        method = method or self.method
        p = self.pred
        chosen = self.static_indices(limit) if indices is None else np.asarray(indices, dtype=int)
        maps = self.cams(chosen, method)

        def jpeg(pixels: np.ndarray) -> str:
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="jpeg", quality=85)
            return base64.b64encode(buf.getvalue()).decode("ascii")

        items = []
        for index, cam in zip(chosen, maps):
            image = p.images[index]  # type: ignore[index]
            rgb = (overlay(image, cam) * 255).round().astype(np.uint8)
            items.append(
                {
                    "name": os.path.basename(p.paths[index]),
                    "true": int(p.labels[index]),
                    "predicted": int(p.predicted[index]),
                    "probs": [round(float(v), 3) for v in p.probs[index]],
                    "xray": jpeg(np.asarray(image, dtype=np.uint8)),
                    "cam": jpeg(rgb),
                }
            )
        shown = f"all {len(p)}" if len(chosen) == len(p) else f"{len(chosen)} of the {len(p)}"
        wrong_shown = int((~p.correct[chosen]).sum())
        note = (
            f"Drawn when this page was built: {shown} test images ({wrong_shown} of them wrong"
            + ("" if len(chosen) == len(p) else ": every error, and correct ones drawn evenly over the true classes")
            + f"), {method} maps of the predicted class. In a running notebook the same call is live: any image, "
            "any CAM method."
        )
        data = {
            "classes": list(p.classes),
            "colors": [CLASS_COLORS.get(c, "#7f7f7f") for c in p.classes],
            "method": method,
            "items": items,
        }
        payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
        uid = f"cxr-explorer-{uuid.uuid4().hex[:10]}"
        options = "".join(f'<option value="{k}">{html.escape(c)}</option>' for k, c in enumerate(p.classes))
        return STATIC_TEMPLATE.format(
            uid=uid,
            options=options,
            note=html.escape(note),
            payload=payload,
            method=html.escape(method),
            script=STATIC_SCRIPT.replace("UID", uid),
            style=STATIC_STYLE,
        )

    def show(self, *, static: bool = True) -> ExplorerView:
        """The explorer, for a reader with a kernel and for one without: displays as the live
        widget in JupyterLab, and as :meth:`static_html` on the rendered page (``static=False``
        leaves the static view out and saves the time of drawing it)."""
        return ExplorerView(self.widget(), self.static_html() if static else None)

    # -------------------------------------------------------------- widget

    def widget(self) -> Any:
        """The interactive explorer (ipywidgets). Its controls are in :attr:`controls`."""
        classes = [
            self.pred.classes[c] for c in sorted(set(self.pred.present) | set(np.unique(self.pred.predicted).tolist()))
        ]
        c = self.controls
        label = {"description_width": "initial"}  # labels in full, not cut to the default 90 px
        # "No filter" is the value NO_FILTER, not None: ipywidgets takes the value None for "no
        # option chosen" and would show a blank dropdown and no active button.
        for name, description in (("true", "true class"), ("predicted", "predicted")):
            c[name] = w.Dropdown(
                options=[("any", NO_FILTER)] + [(k, k) for k in classes],
                value=NO_FILTER,
                description=description,
                style=label,
                layout=w.Layout(width="230px"),
            )
        c["correct"] = w.ToggleButtons(
            options=[("all", NO_FILTER), ("right", True), ("wrong", False)],
            value=NO_FILTER,
            style={"button_width": "70px"},
        )
        c["confidence"] = w.FloatRangeSlider(
            value=(0.0, 1.0),
            min=0.0,
            max=1.0,
            step=0.01,
            description="confidence",
            readout_format=".2f",
            continuous_update=False,
            style=label,
        )
        c["method"] = w.Dropdown(
            options=list(CAM_METHODS),
            value=self.method,
            description="CAM method",
            style=label,
            layout=w.Layout(width="230px"),
        )
        c["previous"] = w.Button(description="◀ previous", layout=w.Layout(width="auto"))
        c["next"] = w.Button(description="next ▶", layout=w.Layout(width="auto"))
        c["position"] = w.IntSlider(
            min=0, max=max(0, len(self.selection) - 1), value=0, description="image", continuous_update=False
        )
        c["info"] = w.HTML()
        c["image"] = w.Image(format="jpeg", layout=w.Layout(width="100%", max_width="720px"))
        # The images the widget steps through: those its own filters select. Kept apart from
        # :attr:`selection`, which a later ``explorer.select(...)`` in code replaces: the
        # widget keeps browsing what its controls show (found by tests/lab_check.py).
        shown = {"selection": self.selection}

        def wanted(name: str) -> Any:
            value = c[name].value
            return None if value == NO_FILTER else value

        def refilter(_change: Any = None) -> None:
            shown["selection"] = self.select(
                true=wanted("true"),
                predicted=wanted("predicted"),
                correct=wanted("correct"),
                confidence=tuple(c["confidence"].value),
            )
            self._busy = True
            try:
                c["position"].value = 0
                c["position"].max = max(0, len(shown["selection"]) - 1)
            finally:
                self._busy = False
            show()

        def show(_change: Any = None) -> None:
            if self._busy:
                return
            self.method = c["method"].value
            n = len(shown["selection"])
            self.position = min(c["position"].value, max(0, n - 1))
            index = int(shown["selection"][self.position]) if n else None
            c["image"].value = self.step(index)
            c["info"].value = f"image {self.position + 1} of {n} matching" if n else "<b>no image matches</b>"
            c["previous"].disabled = self.position <= 0
            c["next"].disabled = self.position >= n - 1

        def move(delta: int) -> None:
            n = len(shown["selection"])
            if n:
                c["position"].value = int(np.clip(c["position"].value + delta, 0, n - 1))

        for name in ("true", "predicted", "correct", "confidence"):
            c[name].observe(refilter, names="value")
        c["method"].observe(show, names="value")
        c["position"].observe(show, names="value")
        c["previous"].on_click(lambda _b: move(-1))
        c["next"].on_click(lambda _b: move(+1))
        refilter()
        wrap = w.Layout(flex_flow="row wrap", align_items="center")  # rows wrap on a narrow window
        filters = w.HBox([c["true"], c["predicted"], c["correct"]], layout=wrap)
        navigation = w.HBox([c["previous"], c["next"], c["position"], c["info"]], layout=wrap)
        return w.VBox([filters, w.HBox([c["confidence"], c["method"]], layout=wrap), navigation, c["image"]])


class ExplorerView:
    """What :meth:`Explorer.show` returns: displays as the live widget where a widget manager
    runs (JupyterLab, Colab) and as the static HTML explorer where it does not (the book)."""

    def __init__(self, widget: Any, static: str | None) -> None:
        self.widget = widget
        self.static = static

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(**kwargs))
        if self.static is not None:
            bundle["text/html"] = self.static
        return bundle


STATIC_STYLE = """
.cxr-explorer{font-size:14px;max-width:760px;border:1px solid #ccc;border-radius:6px;padding:10px;margin:8px 0}
.cxr-explorer .cxr-ex-row{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:center;margin-bottom:8px}
.cxr-explorer label{display:inline-flex;gap:6px;align-items:center;white-space:nowrap}
.cxr-explorer select,.cxr-explorer button{font-size:14px;padding:2px 6px}
.cxr-explorer input[type=range]{flex:1 1 140px;min-width:120px}
.cxr-explorer .cxr-ex-view{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.cxr-explorer figure{margin:0;flex:0 1 220px;min-width:150px}
.cxr-explorer figure img{width:100%;height:auto;display:block;image-rendering:auto}
.cxr-explorer figcaption{font-size:12px;text-align:center}
.cxr-explorer .cxr-ex-bars{flex:1 1 220px;min-width:200px}
.cxr-explorer .cxr-ex-bar{display:grid;grid-template-columns:120px 1fr 44px;gap:6px;align-items:center;margin:5px 0;
  font-size:12px}
.cxr-explorer .cxr-ex-track{display:block;background:#eee;height:14px;border-radius:2px;position:relative}
.cxr-explorer .cxr-ex-fill{display:block;height:100%;border-radius:2px}
.cxr-explorer .cxr-ex-true .cxr-ex-track{outline:2px solid #000}
.cxr-explorer .cxr-ex-title{font-weight:600;margin:6px 0 2px 0;overflow-wrap:anywhere}
.cxr-explorer .cxr-ex-note{font-size:12px;color:#555;margin:4px 0 0 0}
"""

STATIC_TEMPLATE = """<div class="cxr-explorer" id="{uid}"><style>{style}</style>
<div class="cxr-ex-row">
<label>true class <select data-filter="true"><option value="">any</option>{options}</select></label>
<label>predicted <select data-filter="predicted"><option value="">any</option>{options}</select></label>
<label>shown <select data-filter="correct"><option value="">all</option><option value="1">right</option>
<option value="0">wrong</option></select></label>
</div>
<div class="cxr-ex-row">
<button type="button" data-step="-1">&#9664; previous</button><button type="button" data-step="1">next &#9654;</button>
<input type="range" min="0" max="0" value="0" aria-label="image"><span class="cxr-ex-info"></span>
</div>
<div class="cxr-ex-view">
<figure><img class="cxr-ex-xray" alt="the X-ray"><figcaption>X-ray</figcaption></figure>
<figure><img class="cxr-ex-cam" alt="the class activation map"><figcaption class="cxr-ex-camcap">{method}</figcaption>
</figure>
<div class="cxr-ex-bars" aria-label="probabilities"></div>
</div>
<p class="cxr-ex-title"></p><p class="cxr-ex-note">{note}</p>
<script type="application/json" class="cxr-ex-data">{payload}</script>
<script>{script}</script>
</div>"""

# Plain DOM code, no library: filters keep the matching items, the buttons and the slider move
# through them, and a step swaps the two images, the bars and the caption.
STATIC_SCRIPT = """(function () {
  var root = document.getElementById("UID");
  if (!root || root.dataset.ready) return;
  root.dataset.ready = "1";
  var data = JSON.parse(root.querySelector(".cxr-ex-data").textContent);
  var q = function (s) { return root.querySelector(s); };
  var filters = root.querySelectorAll("select[data-filter]");
  var slider = q("input[type=range]"), info = q(".cxr-ex-info"), bars = q(".cxr-ex-bars");
  var prev = q("button[data-step='-1']"), next = q("button[data-step='1']");
  var rows = data.classes.map(function (name, k) {
    var row = document.createElement("div"); row.className = "cxr-ex-bar";
    row.innerHTML = "<span></span><span class='cxr-ex-track'><span class='cxr-ex-fill'></span></span><span></span>";
    row.children[0].textContent = name;
    row.querySelector(".cxr-ex-fill").style.background = data.colors[k];
    bars.appendChild(row); return row;
  });
  var matching = [], position = 0;
  function refilter() {
    var want = {};
    filters.forEach(function (s) { want[s.dataset.filter] = s.value; });
    matching = [];
    data.items.forEach(function (item, i) {
      if (want.true !== "" && item.true !== +want.true) return;
      if (want.predicted !== "" && item.predicted !== +want.predicted) return;
      if (want.correct !== "" && (item.true === item.predicted) !== (want.correct === "1")) return;
      matching.push(i);
    });
    position = 0; slider.max = Math.max(0, matching.length - 1); slider.value = 0; show();
  }
  function show() {
    var n = matching.length;
    prev.disabled = position <= 0; next.disabled = position >= n - 1; slider.disabled = n < 2;
    q(".cxr-ex-view").style.display = n ? "" : "none";
    if (!n) {
      info.textContent = "no image matches these filters"; q(".cxr-ex-title").textContent = "";
      return;
    }
    var item = data.items[matching[position]];
    info.textContent = "image " + (position + 1) + " of " + n + " matching";
    q(".cxr-ex-xray").src = "data:image/jpeg;base64," + item.xray;
    q(".cxr-ex-cam").src = "data:image/jpeg;base64," + item.cam;
    q(".cxr-ex-camcap").textContent = data.method + " map of " + data.classes[item.predicted];
    rows.forEach(function (row, k) {
      row.querySelector(".cxr-ex-fill").style.width = (100 * item.probs[k]).toFixed(1) + "%";
      row.children[2].textContent = item.probs[k].toFixed(2);
      row.classList.toggle("cxr-ex-true", k === item.true);
    });
    var right = item.true === item.predicted;
    q(".cxr-ex-title").textContent = item.name + ": true " + data.classes[item.true] + ", predicted " +
      data.classes[item.predicted] + " (" + Math.round(100 * item.probs[item.predicted]) + "%), " +
      (right ? "right" : "wrong");
  }
  filters.forEach(function (s) { s.addEventListener("change", refilter); });
  prev.addEventListener("click", function () { if (position > 0) { position--; slider.value = position; show(); } });
  next.addEventListener("click", function () {
    if (position < matching.length - 1) { position++; slider.value = position; show(); }
  });
  slider.addEventListener("input", function () { position = +slider.value; show(); });
  refilter();
})();"""
