"""What a chapter page is built with, said on the page.

Every chapter runs in one of two modes (:func:`cxrlib.config.is_fast`): fast mode, a toy
model on a small subset that CI builds in minutes, or full mode, the ``cpu`` recipe on the
whole data folder. A reader must know which one made the numbers in front of them, so each
chapter calls :func:`chapter_config` for its recipe and shows :func:`build_note` at the top.

Numbers that the prose of a page (or of another page, such as the model card) states are
*glued* (:func:`glue`): computed where they are shown, never typed.
"""

from __future__ import annotations

import html
from typing import Any

from .config import CXRError, get_settings, resolve_data_dir
from .train import TrainConfig, preset


def chapter_config() -> TrainConfig:
    """The recipe of the chapters' model in the current mode: ``fast`` or ``cpu``."""
    return preset("fast") if get_settings().fast else preset("cpu")


def build_note_text(config: TrainConfig, data_name: str | None = None) -> tuple[str, str]:
    """``(title, sentence)`` saying which mode, recipe and data made this page's numbers."""
    where = f" on the data folder `{data_name}`" if data_name else ""
    budget = (f"{config.epochs} epochs of {config.epoch_images:,} images" if config.epoch_images
              else f"{config.epochs} passes over the training split")  # fmt: skip
    if config.fast_subset:
        settings = get_settings(fast=True)
        per_class = settings.valid_size // 4
        return ("Fast mode", f"This page was built with a toy model: the `{config.preset}` recipe, "
                f"{config.img_size}-px images, at most {settings.per_class_limit} images per class{where} "
                f"({per_class} per class for validation and for test), {budget}. Its numbers teach the "
                "mechanics, not the results: they say nothing about what the method achieves. Unset "
                "`CXR_FAST` to rebuild it in full mode.")  # fmt: skip
    return ("Full mode", f"This page was built with the `{config.preset}` recipe: {config.arch}, "
            f"{config.img_size}-px images, {budget}{where}.")  # fmt: skip


def _data_name() -> str | None:
    try:
        return resolve_data_dir().name  # the folder the chapter is about to read
    except CXRError:  # no data folder yet: the note still says the mode and the recipe
        return None


def describe_build(config: TrainConfig | None = None) -> str:
    """The build note as one plain sentence ("Fast mode: ..."), e.g. for the model card."""
    title, sentence = build_note_text(config or chapter_config(), _data_name())
    return f"{title}: {sentence.replace('`', '')}"


def build_note(config: TrainConfig | None = None) -> Any:
    """An HTML note (an admonition on the rendered page) saying how this page was built."""
    from IPython.display import HTML

    config = config or chapter_config()
    title, sentence = build_note_text(config, _data_name())
    body = html.escape(sentence).replace("`", "")
    kind = "warning" if config.fast_subset else "note"
    return HTML(f'<div class="admonition {kind}"><p class="admonition-title">{title}</p><p>{body}</p></div>')


def glue(name: str, value: Any) -> None:
    """Store ``value`` under ``name`` for the book's text to paste (MyST-NB's ``glue``,
    shown nowhere by itself). Outside a book build without MyST-NB (Colab, say), it does
    nothing: the cell still runs."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    myst_glue(name, value, display=False)


def with_interval(value: float, interval: Any, digits: int = 3) -> str:
    """``0.950 [0.924, 0.969]``: an estimate and its interval, as the text shows them."""
    lo, hi = interval
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
