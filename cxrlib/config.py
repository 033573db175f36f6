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
``CXR_DOWNLOAD``
    ``1`` makes :func:`download_if_hosted` (the first cell of every chapter) download the
    database where it is missing, as on Google Colab; ``binder/start`` sets it on Binder.
``KAGGLE_API_TOKEN``, or ``KAGGLE_USERNAME`` and ``KAGGLE_KEY``
    Optional: kagglehub downloads the public database without an account; a Kaggle API token
    helps only where Kaggle refuses or rate-limits anonymous downloads.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
#: Approximate size of the download, in MB: the zip that Kaggle serves for version 5. An
#: estimate, not a measurement made here: the 2,548-image sample in shared/ holds 77 MB of
#: PNGs, which scales to about 640 MB for the database's 21,165 images, plus their lung masks
#: and metadata sheets. kagglehub's progress bar shows the exact byte count (the server's
#: Content-Length) once the download starts. kagglehub unpacks the zip next to itself and then
#: deletes it, so the disk needs about twice this much free while it unpacks.
DOWNLOAD_SIZE_MB = 800

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class CXRError(Exception):
    """An error whose message is meant for the user as it is (no traceback needed)."""


class DataNotFoundError(CXRError):
    """No dataset could be located."""


class DownloadError(CXRError):
    """The database could not be downloaded; the message is one line saying why and what to do."""


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


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically: through a temporary file beside ``path``
    and a rename, so an interrupted run never leaves half a ``config.json`` or manifest."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
    "No chest X-ray data found. Download the Kaggle 'COVID-19 Radiography Database' once with "
    "`cxr download` (or `python -m cxrlib download`): about {size_mb} MB, no Kaggle account needed, "
    "kagglehub handle {handle}; later runs find it offline in kagglehub's cache (KAGGLEHUB_CACHE). "
    "Or point CXR_DATA_DIR at an unpacked copy (the folder holding COVID/, Normal/, Lung_Opacity/, "
    "'Viral Pneumonia/', or the COVID-19_Radiography_Dataset folder around them), e.g. "
    "`export CXR_DATA_DIR=~/data/COVID-19_Radiography_Dataset`, or pass --data DIR."
)


def kaggle_handle() -> str:
    """The kagglehub handle to use (pinned version unless overridden)."""
    return os.environ.get("CXR_KAGGLE_HANDLE", KAGGLE_HANDLE)


def _kagglehub_path(handle: str) -> Path | None:
    """The dataset folder of ``handle`` in kagglehub's cache, found without any network call.

    A versioned handle names one fixed copy, so a complete copy in the cache is the answer;
    an unversioned one would need Kaggle to say which version is current, so it is only
    found by a download. The lookup is kagglehub's own (``kagglehub.cache.Cache``, there since
    kagglehub 1.0), so it follows kagglehub's cache layout and ``KAGGLEHUB_CACHE``.
    """
    try:
        from kagglehub.cache import Cache  # imported lazily: only this path needs kagglehub
        from kagglehub.handle import parse_dataset_handle

        parsed = parse_dataset_handle(handle)
        if not parsed.is_versioned():
            return None
        found = Cache().load_from_cache(parsed)
    except Exception:  # no kagglehub, another layout, a malformed handle: all mean "not here"
        return None
    return Path(found) if found else None


def _dataset_page(handle: str) -> str:
    """The Kaggle page of ``handle``, where the database can also be downloaded by hand."""
    owner, _, rest = handle.partition("/")
    return f"https://www.kaggle.com/datasets/{owner}/{rest.split('/')[0]}"


def _kagglehub_cache_folder() -> str:
    """Where kagglehub stores downloads (for messages only)."""
    return os.environ.get("KAGGLEHUB_CACHE") or "~/.cache/kagglehub"


def _download_failure(err: Exception, handle: str) -> str:
    """One line: why the download of ``handle`` failed, and what the reader can do about it.

    kagglehub's own messages span several lines and speak of resources and consent; the
    reader needs the cause (network, refusal, rate limit, disk) and the next step.
    """
    token = (
        "set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, from a Kaggle API token (kaggle.com > Settings > API)"
    )
    status = getattr(getattr(err, "response", None), "status_code", None)
    network = type(err).__module__.split(".")[0] in ("requests", "urllib3")
    if status in (401, 403):
        why = f"Kaggle refused the download (HTTP {status})"
        what = f"{token} and run it again"
    elif status == 429:
        why = "Kaggle is rate-limiting downloads (HTTP 429)"
        what = f"wait a few minutes, or {token}, and run it again"
    elif status == 404:
        why = f"Kaggle has no dataset {handle} (HTTP 404)"
        what = "check CXR_KAGGLE_HANDLE, or unset it to use the pinned handle"
    elif status is not None:
        why = f"Kaggle answered HTTP {status}"
        what = "run it again later"
    elif network:
        why = f"Kaggle could not be reached ({type(err).__name__}: no network, or the connection dropped)"
        what = "check the network and run it again"
    elif isinstance(err, OSError) and err.errno == errno.ENOSPC:
        why = f"the disk under {_kagglehub_cache_folder()} is full"
        what = (
            f"free about {2 * DOWNLOAD_SIZE_MB} MB there, or point KAGGLEHUB_CACHE at a larger disk, and run it again"
        )
    else:
        detail = " ".join(str(err).split())[:200]
        why = f"{type(err).__name__}{': ' + detail if detail else ''}"
        what = "run it again"
    return (
        f"could not download the COVID-19 Radiography Database ({handle}): {why}. To fix: {what}; "
        f"or download it by hand from {_dataset_page(handle)}, unzip it and set CXR_DATA_DIR to its folder."
    )


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def download_database(handle: str | None = None, *, log: Callable[[str], None] = _to_stderr) -> Path:
    """The database's folder, downloaded with kagglehub first unless already in its cache.

    No Kaggle account is needed: kagglehub (1.0 and later) asks Kaggle without credentials
    when none are set, and this database is public. A token (``KAGGLE_API_TOKEN``, or
    ``KAGGLE_USERNAME`` and ``KAGGLE_KEY``) is used when set, which helps where Kaggle
    refuses or rate-limits anonymous downloads. The size is stated before the download
    starts; kagglehub then shows a progress bar (tqdm, on stderr) while the zip arrives.

    Raises:
        DownloadError: one line saying why (network, refusal, rate limit, full disk) and
            what to do. Ctrl-C is not caught: kagglehub keeps the partial zip and continues
            it on the next call where the server allows.
    """
    handle = handle or kaggle_handle()
    cached = _kagglehub_path(handle)
    if cached is not None and cached.is_dir():
        log(f"Already downloaded ({handle}): {cached}")
        return cached.resolve()
    log(
        f"Downloading the COVID-19 Radiography Database ({handle}) with kagglehub into "
        f"{_kagglehub_cache_folder()}: about {DOWNLOAD_SIZE_MB} MB, once (about twice that on disk "
        "while it unpacks). No Kaggle account needed."
    )
    try:
        import kagglehub  # imported lazily: only this path needs kagglehub

        folder = Path(kagglehub.dataset_download(handle))
    except Exception as err:  # network, refusal, rate limit, disk: one line, no traceback
        raise DownloadError(_download_failure(err, handle)) from None
    if not folder.is_dir():
        raise DownloadError(f"kagglehub reported {folder} for {handle}, but it is not a folder; run it again.")
    log(f"Downloaded: {folder}")
    return folder.resolve()


def resolve_data_dir(
    explicit: str | os.PathLike[str] | None = None, *, use_kagglehub: bool = True, download: bool = False
) -> Path:
    """Find the dataset folder.

    Order: ``explicit`` argument, then ``CXR_DATA_DIR``, then kagglehub's cache with the
    pinned handle (found offline, without any network call). An explicit or environment
    path that does not exist is an error, not a reason to look elsewhere. Nothing is
    downloaded unless ``download`` is true: 800 MB should never arrive as a side effect
    of looking for a folder (a page's build note, ``cxr data`` with no argument).

    Raises:
        DataNotFoundError: with one paragraph saying how to provide the data.
        DownloadError: when ``download`` is true and the download fails.
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
        if download:
            return download_database(kaggle_handle())
    raise DataNotFoundError(NO_DATA_HELP.format(handle=kaggle_handle(), size_mb=DOWNLOAD_SIZE_MB))


def is_hosted_notebook() -> bool:
    """True on Google Colab, or wherever ``CXR_DOWNLOAD`` asks for the download (Binder's
    ``binder/start`` sets it): places where a chapter starts with no data and may fetch it."""
    return "google.colab" in sys.modules or os.environ.get("CXR_DOWNLOAD", "").strip().lower() in _TRUE


def download_if_hosted() -> Path | None:
    """What the first cell of every chapter calls: on a hosted notebook (see
    :func:`is_hosted_notebook`), find or download the database and point ``CXR_DATA_DIR``
    at it for this kernel; anywhere else, do nothing and return None.

    ``CXR_DATA_DIR`` is set because kagglehub on Colab may mount the dataset outside its
    cache, where the offline lookup of :func:`resolve_data_dir` would not find it. A failure
    prints one line (what to do) instead of raising, so the cell shows no traceback; the
    chapter's own data step then reports the missing data again.
    """
    if not is_hosted_notebook():
        return None
    try:
        folder = resolve_data_dir(download=True)
    except CXRError as err:
        print(f"cxr: error: {' '.join(str(err).split())}")
        return None
    os.environ["CXR_DATA_DIR"] = str(folder)
    return folder
