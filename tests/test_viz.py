"""Plotting functions leave the caller's state alone."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from cxrlib import viz  # noqa: E402


def _noise(image: torch.Tensor) -> torch.Tensor:
    return (image.float() + torch.rand(image.shape) * 10).clamp(0, 255).to(torch.uint8)


def test_augmentation_plots_restore_the_global_random_state() -> None:
    image = torch.from_numpy(np.full((1, 32, 32), 128, np.uint8))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    plt.close(viz.plot_augmentation_gallery(image, {"noise": _noise}, seed=0))
    plt.close(viz.plot_random_augmentations(image, _noise, n=2, seed=0))
    assert torch.equal(torch.rand(3), expected)  # as if the plots had never drawn a random number


def test_augmentation_plots_draw_the_same_images_for_one_seed() -> None:
    image = torch.from_numpy(np.full((1, 32, 32), 128, np.uint8))
    first = viz.plot_random_augmentations(image, _noise, n=2, seed=5)
    second = viz.plot_random_augmentations(image, _noise, n=2, seed=5)
    pixels = [[im.get_array() for ax in fig.axes for im in ax.get_images()] for fig in (first, second)]
    assert all(np.array_equal(a, b) for a, b in zip(*pixels)) and len(pixels[0]) == 2
    plt.close(first)
    plt.close(second)


@pytest.mark.parametrize("plot", ["inside", "dark"])
def test_strip_plots_scatter_the_same_dots_every_build_and_restore_numpy(plot: str) -> None:
    """seaborn jitters strip-plot dots with NumPy's global generator, which a kernel starts in
    a random state: the figures seed it, so a page is the same on every build, and give the
    caller its state back."""
    frame = pd.DataFrame(
        {
            "true": ["COVID", "Normal"] * 20,
            "class": ["COVID", "Normal"] * 20,
            "inside": np.linspace(0.2, 0.9, 40),
            "dark share": np.linspace(0, 1, 40),
        }
    )

    def draw() -> np.ndarray:
        fig = viz.plot_inside_fraction(frame, area=0.5) if plot == "inside" else viz.plot_dark_share(frame, 0.5)
        dots = np.concatenate([c.get_offsets() for ax in fig.axes for c in ax.collections if len(c.get_offsets())])
        plt.close(fig)
        return dots

    np.random.seed(7)
    expected = np.random.random_sample(3)
    np.random.seed(7)
    first = draw()
    assert np.array_equal(np.random.random_sample(3), expected)  # as if the plot had drawn nothing
    np.random.seed(99)
    assert np.array_equal(draw(), first)  # another caller state, the same dots


def test_image_files_are_drawn_when_present_and_skipped_when_not(tmp_path) -> None:
    (tmp_path / "COVID").mkdir()
    Image.fromarray(np.full((20, 20), 90, np.uint8)).save(tmp_path / "COVID" / "a.png")
    fig = viz.plot_image_files(tmp_path, ["COVID/a.png", "COVID/missing.png"], ["first", "second"], cols=3)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    plt.close(fig)
    assert titles == ["first"]  # the missing file is left out, not drawn blank
    assert viz.plot_image_files(tmp_path, ["COVID/missing.png"], ["second"]) is None
