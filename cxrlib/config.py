"""Where the data and caches live, and what fast mode changes.

Everything here is read from the environment *when a function is called*, never at
import time, so a notebook can set ``os.environ["CXR_FAST"] = "1"`` and then call
:func:`get_settings`.

Environment variables
---------------------
``CXR_DATA_DIR``
    Folder holding the COVID-19 Radiography Database (any supported layout).
``CXR_CACHE_DIR``
    Where decoded, resized images and scan indexes are cached
    (default: the user cache folder, e.g. ``~/.cache/cxrlib``).
``CXR_FAST``
    ``1`` selects fast mode: a small stratified subset and small images, for CI.
``CXR_RUNS_DIR``
    Where chapters keep their training runs (default: ``<cache>/runs``).
``CXR_KAGGLE_HANDLE``
    Overrides the pinned kagglehub handle (default :data:`KAGGLE_HANDLE`).
``KAGGLEHUB_CACHE``
    kagglehub's own cache folder; a copy downloaded once is found there offline.
``CXR_DOWNLOAD_RUNS``
    ``0`` (or ``false``, ``no``, ``off``) turns off downloading the book's published runs
    (:mod:`cxrlib.published`): a chapter then trains every model it needs itself.
``CXR_RUNS_URL``
    Where published runs are downloaded from (default :data:`BOOK_URL`, the published book;
    runs are under ``<url>runs/<name>/``), e.g. a mirror or a local ``http.server``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

#: The four classes of the database, in the order used for labels everywhere.
CLASS_NAMES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")

#: A *versioned* handle: kagglehub finds a versioned copy in its cache without any
#: network call, while an unversioned handle always asks Kaggle for the latest version.
KAGGLE_HANDLE = "tawsifurrahman/covid19-radiography-database/versions/5"

#: The published book (GitHub Pages). The publishing workflow puts the runs the chapters
#: trained beside its HTML, under ``<BOOK_URL>runs/<name>/`` (:mod:`cxrlib.published`). The same
#: URL is ``html.baseurl`` in ``_config.yml``; it is repeated here because cxrlib is installed
#: without ``_config.yml`` (pip, Colab), and tests/test_published.py keeps the two equal.
BOOK_URL = "https://cxr-book.github.io/cxr-book/"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class CXRError(Exception):
    """An error whose message is meant for the user as it is (no traceback needed)."""


class DataNotFoundError(CXRError):
    """No dataset could be located."""


def is_fast() -> bool:
    """True when ``CXR_FAST`` asks for fast mode (CI, quick previews)."""
    return os.environ.get("CXR_FAST", "").strip().lower() in _TRUE


@dataclass(frozen=True)
class Settings:
    """Sizes that depend on fast mode. Chapters read these instead of hard-coding.

    In normal mode the split is the reference protocol: 400 validation and
    400 test images, equal counts per class. Fast mode keeps ``per_class_limit``
    images of each class and a 10-per-class validation and test set.
    """

    fast: bool
    img_size: int
    per_class_limit: int | None
    valid_size: int
    test_size: int
    seed: int = 0


def get_settings(fast: bool | None = None) -> Settings:
    """Settings for the current mode (``fast=None`` reads ``CXR_FAST``)."""
    if fast is None:
        fast = is_fast()
    if fast:
        return Settings(fast=True, img_size=64, per_class_limit=60, valid_size=40, test_size=40)
    return Settings(fast=False, img_size=224, per_class_limit=None, valid_size=400, test_size=400)


def cache_dir() -> Path:
    """The cache root: ``CXR_CACHE_DIR`` or the platform's user cache folder."""
    env = os.environ.get("CXR_CACHE_DIR")
    path = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("cxrlib"))
    return path


def runs_dir() -> Path:
    """Where chapters store training runs: ``CXR_RUNS_DIR`` or ``<cache_dir>/runs``."""
    env = os.environ.get("CXR_RUNS_DIR")
    return Path(env).expanduser() if env else cache_dir() / "runs"


def downloads_enabled() -> bool:
    """False when ``CXR_DOWNLOAD_RUNS`` is ``0``, ``false``, ``no`` or ``off``: the reader has
    opted out of downloading published runs. Unset (or any other value) allows them."""
    return os.environ.get("CXR_DOWNLOAD_RUNS", "").strip().lower() not in _FALSE


def runs_url() -> str:
    """Where published runs are downloaded from: ``CXR_RUNS_URL``, else :data:`BOOK_URL`;
    always with one trailing slash, so ``runs_url() + "runs/..."`` is a valid address."""
    url = os.environ.get("CXR_RUNS_URL", "").strip() or BOOK_URL
    return url.rstrip("/") + "/"


NO_DATA_HELP = (
    "No chest X-ray data found. Either point CXR_DATA_DIR at the unpacked Kaggle "
    "'COVID-19 Radiography Database' (the folder holding COVID/, Normal/, Lung_Opacity/, "
    "'Viral Pneumonia/', or the COVID-19_Radiography_Dataset folder around them), e.g. "
    "`export CXR_DATA_DIR=~/data/COVID-19_Radiography_Dataset`, or pass --data DIR; "
    "or let kagglehub download it once: create a Kaggle API token (kaggle.com > Settings > "
    "API), put it in ~/.kaggle/kaggle.json or set KAGGLE_USERNAME and KAGGLE_KEY, and run "
    "`python -c \"import kagglehub; kagglehub.dataset_download('{handle}')\"` "
    "(about 800 MB; later runs find it offline in KAGGLEHUB_CACHE)."
)


def kaggle_handle() -> str:
    """The kagglehub handle to use (pinned version unless overridden)."""
    return os.environ.get("CXR_KAGGLE_HANDLE", KAGGLE_HANDLE)


def _kagglehub_path(handle: str) -> Path | None:
    """The dataset folder from kagglehub: the offline cache first, then a download."""
    try:
        import kagglehub  # imported lazily: it is only needed on this path
    except ImportError:  # pragma: no cover - kagglehub is a dependency
        return None
    try:
        return Path(kagglehub.dataset_download(handle))
    except Exception:  # network, authentication, unknown handle: all mean "not here"
        return None


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None, *, use_kagglehub: bool = True) -> Path:
    """Find the dataset folder.

    Order: ``explicit`` argument, then ``CXR_DATA_DIR``, then kagglehub with the pinned
    handle (found offline when it is in ``KAGGLEHUB_CACHE``). An explicit or environment
    path that does not exist is an error, not a reason to look elsewhere.

    Raises:
        DataNotFoundError: with one paragraph saying how to provide the data.
    """
    for source, value in (("argument", explicit), ("CXR_DATA_DIR", os.environ.get("CXR_DATA_DIR"))):
        if value:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise DataNotFoundError(f"data folder not found ({source}): {path}")
            return path.resolve()
    if use_kagglehub:
        path = _kagglehub_path(kaggle_handle())
        if path is not None and path.is_dir():
            return path.resolve()
    raise DataNotFoundError(NO_DATA_HELP.format(handle=kaggle_handle()))
