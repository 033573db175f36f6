"""The prediction explorer: filters, stepping, CAM cache, drawing, and the widget headless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlib.config import CXRError
from cxrlib.evaluate import Predictions
from cxrlib.models import build_model
from cxrlib.train import LoadedModel, TrainConfig
from cxrlib.transforms import Normalization, Preprocessing
from cxrlib.widgets import Explorer

from conftest import pattern
from tinyrun import tiny_run

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]

# six images: true labels, and probabilities whose arg-max and confidence are known
LABELS = np.array([0, 0, 1, 2, 3, 3])
PROBS = np.array([
    [0.90, 0.05, 0.03, 0.02],  # COVID right, 0.90
    [0.20, 0.10, 0.60, 0.10],  # COVID -> Normal, wrong, 0.60
    [0.10, 0.70, 0.10, 0.10],  # Lung_Opacity right, 0.70
    [0.40, 0.10, 0.45, 0.05],  # Normal right, 0.45
    [0.30, 0.30, 0.05, 0.35],  # Viral Pneumonia right, 0.35
    [0.50, 0.20, 0.20, 0.10],  # Viral Pneumonia -> COVID, wrong, 0.50
])  # fmt: skip


@pytest.fixture
def explorer() -> Explorer:
    torch.manual_seed(0)
    net, _ = build_model("resnet18", 4, pretrained="no")  # "no" never warns
    loaded = LoadedModel(net.eval(), CLASSES, Preprocessing(32, Normalization(0.5, 0.25)),
                         TrainConfig(img_size=32, pretrained="no"), 0, {})  # fmt: skip
    images = np.stack([pattern(i, 32) for i in range(6)])
    pred = Predictions(PROBS, LABELS, CLASSES, [f"c/img{i}.png" for i in range(6)], "/data", images)
    exp = Explorer(loaded, pred)
    yield exp
    exp.close()


def test_filters(explorer: Explorer) -> None:
    assert explorer.select().tolist() == [0, 1, 2, 3, 4, 5]
    assert explorer.select(true="COVID").tolist() == [0, 1]
    assert explorer.select(predicted="COVID").tolist() == [0, 5]
    assert explorer.select(correct=False).tolist() == [1, 5]
    assert explorer.select(correct=True, confidence=(0.4, 0.75)).tolist() == [2, 3]
    assert explorer.select(true="Viral Pneumonia", predicted="COVID", correct=False).tolist() == [5]
    assert explorer.select(true="Normal", correct=False).tolist() == []
    with pytest.raises(CXRError):
        explorer.select(true="Cat")


def test_render_reuses_one_figure_and_caches_cams(explorer: Explorer, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    fig = explorer.render(0)
    assert explorer.render(1) is fig and explorer.render(None) is fig
    assert plt.get_fignums() == open_before  # no pyplot figure left behind
    png = explorer.step(2)
    assert png.startswith(b"\xff\xd8")
    cam = explorer.cam(2)
    assert cam.shape == (32, 32) and 0 <= cam.min() and cam.max() <= 1
    calls = []
    real = explorer._get_explainer
    monkeypatch.setattr(explorer, "_get_explainer", lambda m: calls.append(m) or real(m))
    explorer.step(2)
    assert calls == []  # the CAM of image 2 came from the cache
    explorer.step(2, "gradcam++")
    assert calls == ["gradcam++"] and (2, "gradcam++") in explorer._cams
    assert "img2.png" in explorer.describe(2) and "right" in explorer.describe(2)


def test_steps_leave_no_trace(explorer: Explorer) -> None:
    """Blitting restores the background: a step after another looks like a step alone."""
    explorer.render(0)
    after = np.asarray(explorer.render(3).canvas.buffer_rgba()).copy()
    fresh = Explorer(explorer.loaded, explorer.pred)
    alone = np.asarray(fresh.render(3).canvas.buffer_rgba())
    assert np.array_equal(after, alone)
    fresh.close()


def test_widget_headless(explorer: Explorer) -> None:
    ui = explorer.widget()
    c = explorer.controls
    assert ui is not None and bytes(c["image"].value).startswith(b"\xff\xd8")
    assert c["position"].max == 5 and c["previous"].disabled
    c["next"].click()
    c["next"].click()
    assert explorer.position == 2 and c["position"].value == 2
    c["previous"].click()
    assert explorer.position == 1
    c["correct"].value = False
    assert explorer.selection.tolist() == [1, 5] and explorer.position == 0 and c["position"].max == 1
    c["next"].click()
    c["next"].click()  # already at the last one: stays
    assert explorer.position == 1 and c["next"].disabled
    c["method"].value = "eigencam"
    assert (5, "eigencam") in explorer._cams
    c["true"].value = "Normal"  # right/wrong still "wrong": nothing matches
    assert explorer.selection.tolist() == [] and "no image" in c["info"].value
    c["next"].click()  # nothing happens, nothing breaks
    c["correct"].value = None
    c["confidence"].value = (0.4, 0.5)
    assert explorer.selection.tolist() == [3]


def test_static_figure(explorer: Explorer) -> None:
    import matplotlib.pyplot as plt

    fig = explorer.static_figure([0, 1, 5], method="hirescam")
    assert len(fig.axes) == 9
    plt.close(fig)


def test_needs_images(explorer: Explorer) -> None:
    bare = Predictions(PROBS, LABELS, CLASSES, ["x"] * 6)
    with pytest.raises(CXRError, match="needs the images"):
        Explorer(explorer.loaded, bare)


def test_from_run_and_bench(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run_dir, data = tiny_run(tmp_path_factory)
    exp = Explorer.from_run(run_dir, data)
    assert len(exp.pred) == 8 and (run_dir / "predictions-test.npz").is_file()
    assert exp.step(0).startswith(b"\xff\xd8")
    exp.close()

    from cxrlib.bench import bench_explorer
    from cxrlib.data import CXRData

    numbers = bench_explorer(CXRData.load(data, progress=False), img_size=64, steps=3, warmup=1)
    assert numbers["explorer_ms_p50"] > 0 and numbers["explorer_ms_p95"] >= numbers["explorer_ms_p50"]
