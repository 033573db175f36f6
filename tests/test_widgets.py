"""The prediction explorer: filters, stepping, CAM cache, drawing, and the widget headless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlib.checkpoint import LoadedModel, cpu_model
from cxrlib.config import CXRError
from cxrlib.evaluate import Predictions
from cxrlib.models import build_model
from cxrlib.recipe import TrainConfig
from cxrlib.transforms import Normalization, Preprocessing
from cxrlib.widgets import NO_FILTER, Explorer

from conftest import pattern
from tinyrun import tiny_run

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]

# six images: true labels, and probabilities whose arg-max and confidence are known
LABELS = np.array([0, 0, 1, 2, 3, 3])
PROBS = np.array(
    [
        [0.90, 0.05, 0.03, 0.02],  # COVID right, 0.90
        [0.20, 0.10, 0.60, 0.10],  # COVID -> Normal, wrong, 0.60
        [0.10, 0.70, 0.10, 0.10],  # Lung_Opacity right, 0.70
        [0.40, 0.10, 0.45, 0.05],  # Normal right, 0.45
        [0.30, 0.30, 0.05, 0.35],  # Viral Pneumonia right, 0.35
        [0.50, 0.20, 0.20, 0.10],  # Viral Pneumonia -> COVID, wrong, 0.50
    ]
)


@pytest.fixture
def explorer() -> Explorer:
    torch.manual_seed(0)
    net, _ = build_model("resnet18", 4, pretrained="no")  # "no" never warns
    loaded = LoadedModel(
        net.eval(),
        CLASSES,
        Preprocessing(32, Normalization(0.5, 0.25)),
        TrainConfig(img_size=32, pretrained="no"),
        0,
        {},
    )
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


def test_widget_filters_show_their_choice(explorer: Explorer) -> None:
    """The choices "any" and "all" show as chosen: ipywidgets shows a blank for the value None."""
    explorer.widget()
    c = explorer.controls
    assert (c["true"].label, c["predicted"].label, c["correct"].label) == ("any", "any", "all")
    c["true"].value = "COVID"
    c["correct"].value = False
    assert explorer.selection.tolist() == [1]
    c["true"].value = NO_FILTER  # back to "any": still shown, and no filter again
    c["correct"].value = NO_FILTER
    assert (c["true"].label, c["correct"].label) == ("any", "all") and len(explorer.selection) == 6


def test_widget_keeps_its_filters_when_code_selects(explorer: Explorer) -> None:
    """A later cell's explorer.select(...) does not change what the widget steps through:
    its controls still say "any", so *next* goes to the second of all six images."""
    explorer.widget()
    c = explorer.controls
    first = bytes(c["image"].value)
    assert explorer.select(correct=False).tolist() == [1, 5]  # as chapter 6's exercise does
    c["next"].click()
    assert c["info"].value == "image 2 of 6 matching" and c["position"].max == 5
    assert bytes(c["image"].value) == explorer.step(1) != first  # image 1, not image 5
    c["next"].click()
    assert c["info"].value == "image 3 of 6 matching"


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

    from cxrlib.bench import bench_explorer, describe_explorer_bench

    # as chapter 6 uses it: the trained run, at two sizes
    numbers = bench_explorer(run_dir, data, sizes=[40, 56], steps=3, warmup=1)
    for size in (40, 56):
        assert 0 < numbers[f"explorer_ms_p50_{size}px"] <= numbers[f"explorer_ms_p95_{size}px"]
    assert numbers["explorer_ms_p50"] == numbers["explorer_ms_p50_56px"] and numbers["explorer_img_size"] == 56
    sentence = describe_explorer_bench(numbers)
    assert "at 40 px: median" in sentence and "at 56 px" in sentence and "goal" not in sentence
    at_goal_size = {**numbers, "explorer_ms_p50_224px": 90.0, "explorer_ms_p95_224px": 300.0}
    goals = "the goals of a median of at most 150 ms and a 95th percentile of at most 250 ms)"
    assert f"(not within {goals}" in describe_explorer_bench(at_goal_size)
    at_goal_size["explorer_ms_p95_224px"] = 200.0
    assert f"(within {goals}" in describe_explorer_bench(at_goal_size) and "1 thread per CAM" in sentence


def test_from_run_at_another_size_predicts_and_maps_at_that_size(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir, data = tiny_run(tmp_path_factory)
    exp = Explorer.from_run(run_dir, data, img_size=56)
    assert exp.pred.images.shape[-1] == 56 and exp.cam(0).shape == (56, 56)
    assert np.allclose(exp.pred.probs.sum(axis=1), 1.0, atol=1e-5)
    exp.close()


def _static_items(page: str) -> dict:
    import json
    import re

    payload = re.search(r'<script type="application/json" class="cxr-ex-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(payload)


def test_static_explorer_holds_every_image_when_few(explorer: Explorer) -> None:
    page = explorer.static_html()
    data = _static_items(page)
    assert data["classes"] == CLASSES and len(data["items"]) == 6
    assert [item["true"] for item in data["items"]] == LABELS.tolist()
    assert [item["predicted"] for item in data["items"]] == PROBS.argmax(1).tolist()
    first = data["items"][0]
    assert first["probs"] == [0.9, 0.05, 0.03, 0.02] and first["xray"] != first["cam"]
    # no network: every image is inline, and the page loads nothing from elsewhere
    assert "http" not in page and "src=" not in page.split("<script>")[0]
    assert 'data-filter="true"' in page and 'data-filter="predicted"' in page and 'data-filter="correct"' in page
    assert "Drawn when this page was built: all 6 test images (2 of them wrong)" in page


def test_static_explorer_keeps_every_error_and_samples_the_rest(explorer: Explorer) -> None:
    chosen = explorer.static_indices(limit=4)
    assert {1, 5} <= set(chosen.tolist()) and len(chosen) == 4  # both errors, two correct ones
    right = [i for i in chosen.tolist() if i not in (1, 5)]
    assert len({int(LABELS[i]) for i in right}) == 2  # from two different true classes
    assert explorer.static_indices(limit=1).tolist() == [1]  # the more confident error (0.60 > 0.50)
    data = _static_items(explorer.static_html(limit=4))
    assert len(data["items"]) == 4 and "4 of the 6 test images (2 of them wrong" in explorer.static_html(limit=4)


def test_show_carries_the_live_widget_and_the_static_page(explorer: Explorer) -> None:
    view = explorer.show()
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "cxr-explorer" in bundle["text/html"]
    assert "text/html" not in explorer.show(static=False)._repr_mimebundle_()


def test_batched_cams_equal_one_by_one(explorer: Explorer) -> None:
    together = explorer.cams([0, 3, 5], batch_size=2)
    explorer.clear_cache()
    alone = np.stack([explorer.cam(i) for i in (0, 3, 5)])
    assert np.allclose(together, alone, atol=1e-5)


def test_cxr_bench_times_the_explorer_on_a_trained_run(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from cxrlib.cli import main

    run_dir, data = tiny_run(tmp_path_factory)
    args = [
        "bench",
        "--data",
        str(data),
        "--run",
        str(run_dir),
        "--img-size",
        "32",
        "--steps",
        "1",
        "--rounds",
        "1",
        "--explorer-steps",
        "2",
        "--explorer-size",
        "48",
        "--json",
    ]
    assert main(args) == 0
    numbers = json.loads(capsys.readouterr().out)
    assert numbers["explorer_run"] == run_dir.name and numbers["explorer_img_size"] == 48
    own = json.loads((run_dir / "config.json").read_text())["train"]["img_size"]
    assert {f"explorer_ms_p50_{own}px", "explorer_ms_p50_48px"} <= set(numbers)  # the run's own size, and the one asked
    assert main([*args[:3], "--run", str(data), *args[5:]]) == 2  # not a run folder: a one-line error
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("cxr: error: not a run folder") and err.count("\n") == 1


def test_one_image_cam_runs_on_one_thread_and_restores(explorer: Explorer, monkeypatch: pytest.MonkeyPatch) -> None:
    from cxrlib import widgets

    seen = []
    real = widgets.CamExplainer.__call__

    def spy(self, images, targets=None):  # type: ignore[no-untyped-def]
        seen.append(torch.get_num_threads())
        return real(self, images, targets)

    monkeypatch.setattr(widgets.CamExplainer, "__call__", spy)
    torch.set_num_threads(2)
    explorer.cam(0)
    assert seen == [widgets.STEP_THREADS] and torch.get_num_threads() == 2


def test_explorer_leaves_the_callers_model_as_it_was() -> None:
    """The explorer works on the CPU in eval mode; a model in training mode (or on a GPU)
    is copied, not switched, so the caller finds it as it left it."""
    torch.manual_seed(0)
    net, _ = build_model("resnet18", 4, pretrained="no")
    net.train()
    loaded = LoadedModel(
        net, CLASSES, Preprocessing(32, Normalization(0.5, 0.25)), TrainConfig(img_size=32, pretrained="no"), 0, {}
    )
    images = np.stack([pattern(i, 32) for i in range(6)])
    exp = Explorer(loaded, Predictions(PROBS, LABELS, CLASSES, [f"c/img{i}.png" for i in range(6)], "/data", images))
    try:
        assert net.training and exp.model is not net and not exp.model.training
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), exp.model.state_dict().values()))
        net.eval()
        assert cpu_model(net) is net  # already on the CPU in eval mode: no copy
    finally:
        exp.close()
