"""The book's trained models, published beside its HTML and downloaded instead of retrained.

The publishing workflow (``.github/workflows/pages.yml``, ``tools/publish_runs.py``) copies
each run the chapters trained to ``<book>/runs/<name>/`` with a ``manifest.json``::

    {"format": 1, "name": "ch03-cpu", "key": "<run_key>",
     "files": {"best.pt": {"sha256": "...", "bytes": 11234567}, "config.json": {...}, ...}}

A reader's copy of the book then fetches the run whose *key* matches the configuration it
would train and the data it would train on (:func:`run_key`), instead of spending up to 15
minutes per model on a laptop. The key, not the name, decides: a name says which chapter's
model it is, the key that it is the same recipe on the same images.

Downloads are never trusted: every file is checked against the manifest's byte count and
sha256 before it is moved into place, and any problem (no network, HTTP error, timeout,
truncated file, wrong hash, another key, a malformed manifest) is one line saying why and
``None``, so the caller trains instead. A file that fails its check is deleted, never
loaded. Readers opt out with ``CXR_DOWNLOAD_RUNS=0`` (or ``download=False``); ``CXR_RUNS_URL``
points at another copy of the book (:func:`cxrlib.config.runs_url`).

This module reads and writes files only; it imports no training code, so the module that
decides where a chapter's model comes from can import it without a cycle.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tqdm.auto import tqdm

from .config import CXRError, downloads_enabled, runs_url, write_json

#: Version of the manifest's layout; a manifest of another format is not read.
FORMAT = 1

#: The files of a published run: the weights, the configuration and outcome, the learning
#: curves (chapter 3 draws them, :func:`cxrlib.runs.describe_outcome` reads them) and the split.
PUBLISHED_FILES = ("best.pt", "config.json", "history.json", "split.csv")

MANIFEST = "manifest.json"

#: Seconds without a byte from the server before a download is given up.
DEFAULT_TIMEOUT = 30.0

_CHUNK = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _NotUsed(Exception):
    """Why a published run cannot be used, as the end of the one line that says so."""


def run_key(config_dict: dict[str, Any], data_version: str) -> str:
    """16 hex digits naming a trained run by what made it: the training configuration
    (``TrainConfig.to_dict()``, or the ``train`` entry of a run's ``done.json``) and the data
    version (:func:`cxrlib.data.data_fingerprint`).

    The hash is of canonical JSON (sorted keys, no spaces; tuples and lists alike), so the
    same configuration gives the same key on every machine and whether it was built in
    memory or read back from JSON.
    """
    canonical = json.dumps(
        {"train": config_dict, "data": data_version}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def file_digest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"sha256": hex, "bytes": n}`` of a file, read in chunks (checkpoints can be large)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "bytes": size}


def _check_name(name: str) -> None:
    """Run names become folder names and URL path segments: letters, digits, ``._-`` only."""
    if not _NAME.match(name):
        raise CXRError(f"not a run name: {name!r} (letters, digits, '.', '_' and '-' only)")


@contextlib.contextmanager
def _staging_dir(target: Path) -> Iterator[Path]:
    """A new hidden folder beside ``target`` (same file system, so it can be renamed onto
    it), removed with whatever it holds unless it was moved into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the complete ``staging`` folder to ``target``. An existing ``target`` is first
    renamed aside and deleted only once the new folder is in place (put back if the second
    rename fails), so ``target`` holds the old folder or the new one, never a mixture."""
    if not target.exists():
        os.rename(staging, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_published_run(run_dir: str | os.PathLike[str], out_root: str | os.PathLike[str], name: str, key: str) -> Path:
    """Copy a finished run's :data:`PUBLISHED_FILES` to ``<out_root>/runs/<name>/`` with a
    ``manifest.json`` giving each file's sha256 and size, and the run's ``key``
    (:func:`run_key`). Returns that folder.

    The copy is assembled in a hidden folder beside it and renamed into place, so a reader
    of ``out_root`` (or a publication cut short) never sees files that disagree with the
    manifest. The hashes are computed from the copies, not the originals.

    Raises:
        CXRError: a bad name, a file missing from ``run_dir``, or the folder cannot be written.
    """
    _check_name(name)
    run_dir = Path(run_dir)
    missing = [f for f in PUBLISHED_FILES if not (run_dir / f).is_file()]
    if missing:
        raise CXRError(f"run {run_dir} has no {', '.join(missing)}: not a finished run, nothing published")
    target = Path(out_root) / "runs" / name
    try:
        with _staging_dir(target) as staging:
            files = {}
            for fname in PUBLISHED_FILES:
                shutil.copyfile(run_dir / fname, staging / fname)
                files[fname] = file_digest(staging / fname)
            write_json(staging / MANIFEST, {"format": FORMAT, "name": name, "key": key, "files": files})
            _move_into_place(staging, target)
    except OSError as err:
        raise CXRError(f"cannot publish run {name} to {target}: {err.strerror or err}") from None
    return target


def _describe_url_error(url: str, err: Exception, timeout: float) -> str:
    """One clause on why ``url`` could not be read."""
    if isinstance(err, urllib.error.HTTPError):
        return f"{url} answered HTTP {err.code} ({err.reason})"
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, TimeoutError):
        return f"{url} sent nothing for {timeout:g} s"
    if isinstance(err, http.client.IncompleteRead):
        return f"the connection to {url} closed early"
    if isinstance(err, http.client.HTTPException):
        return f"{url} gave a broken HTTP answer ({type(err).__name__})"
    host = urllib.parse.urlsplit(url).netloc
    detail = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return f"{host} could not be reached ({detail})"


def _open(url: str, timeout: float) -> Any:
    """The response to a GET of ``url``, or :class:`_NotUsed` saying why there is none."""
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts are OSErrors
        if isinstance(err, urllib.error.HTTPError):
            err.close()  # an HTTP error carries the open response
        raise _NotUsed(_describe_url_error(url, err, timeout)) from None


def _read_manifest(url: str, name: str, key: str, timeout: float) -> dict[str, dict[str, Any]]:
    """The ``files`` entry of the manifest at ``url``, checked: format, name, key, and for
    each of :data:`PUBLISHED_FILES` a sha256 and a byte count (no other file names, so a
    manifest can never direct a write outside the run's folder)."""
    try:
        with _open(url, timeout) as response:
            manifest = json.loads(response.read(_CHUNK).decode("utf-8"))
    except (OSError, http.client.HTTPException) as err:
        raise _NotUsed(_describe_url_error(url, err, timeout)) from None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise _NotUsed("its manifest is not valid JSON") from None
    if not isinstance(manifest, dict):
        raise _NotUsed("its manifest is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise _NotUsed(f"its manifest has format {manifest.get('format')!r}, and this cxrlib reads format {FORMAT}")
    if manifest.get("key") != key:
        raise _NotUsed(
            f"the published run is for another configuration or data (key {manifest.get('key')!r}, "
            f"this book needs {key})"
        )
    if manifest.get("name") != name:
        raise _NotUsed(f"its manifest names another run ({manifest.get('name')!r})")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(PUBLISHED_FILES):
        listed = sorted(files) if isinstance(files, dict) else files
        raise _NotUsed(f"its manifest lists {listed!r}, not the files of a run ({', '.join(PUBLISHED_FILES)})")
    for fname, entry in files.items():
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and _SHA256.match(entry["sha256"])
            and isinstance(entry.get("bytes"), int)
            and entry["bytes"] >= 0
        )
        if not ok:
            raise _NotUsed(f"its manifest has no valid sha256 and byte count for {fname}")
    return files


def _download(url: str, fname: str, entry: dict[str, Any], out: BinaryIO, timeout: float, progress: bool) -> None:
    """Stream ``url`` into ``out``, hashing as it comes; :class:`_NotUsed` unless exactly the
    manifest's bytes with the manifest's sha256 arrived. Reads at most one byte more than
    announced, so a wrong or hostile server cannot fill the disk. An error writing ``out``
    (a local problem, not the server's) propagates as :class:`OSError`."""
    expected = int(entry["bytes"])
    digest, got = hashlib.sha256(), 0
    with (
        _open(url, timeout) as response,
        tqdm(total=expected, unit="B", unit_scale=True, desc=fname, leave=False, disable=not progress) as bar,
    ):
        while got <= expected:
            try:
                chunk = response.read(min(_CHUNK, expected + 1 - got))
            except http.client.IncompleteRead as err:  # the server announced more than it sent
                got += len(err.partial)
                break
            except (OSError, http.client.HTTPException) as err:  # timeout, connection reset
                raise _NotUsed(_describe_url_error(url, err, timeout)) from None
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            got += len(chunk)
            bar.update(len(chunk))
    if got < expected:
        raise _NotUsed(f"{fname} was cut short ({got:,} of {expected:,} bytes)")
    if got > expected:
        raise _NotUsed(f"{fname} is longer than its manifest says ({expected:,} bytes)")
    if digest.hexdigest() != entry["sha256"]:
        raise _NotUsed(f"{fname} failed its sha256 check")


def fetch_published_run(
    name: str,
    key: str,
    dest: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    download: bool = True,
    timeout: float | None = None,
    progress: bool = False,
    say: Callable[[str], None] = print,
) -> Path | None:
    """Download the book's published run ``name`` into ``dest`` if it is the run of ``key``
    (:func:`run_key`); ``dest`` on success, else ``None`` and one line through ``say``.

    ``base_url`` defaults to :func:`cxrlib.config.runs_url` (``CXR_RUNS_URL``, else the
    published book). Nothing is requested when ``download`` is false (no line: the caller
    chose) or when ``CXR_DOWNLOAD_RUNS`` opts out (one line saying so).

    The manifest is read first (its format, name and key must match; a run for another
    configuration or data is not downloaded). The files stream into a hidden folder beside
    ``dest``; each must have exactly the manifest's byte count and sha256. Only when all of
    them do is the folder renamed to ``dest`` (an existing ``dest``, a stale or unfinished
    run, is replaced as a whole), so ``dest`` ends up with :data:`PUBLISHED_FILES` and the
    manifest, or as it was. A partial or failed download leaves no file behind.

    ``timeout`` (seconds a connection may stay silent) defaults to :data:`DEFAULT_TIMEOUT`.
    Never raises for network, server or disk problems: those mean "train instead".
    """
    _check_name(name)
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    if not download:
        return None
    if not downloads_enabled():
        say(
            f"published run {name} not downloaded: CXR_DOWNLOAD_RUNS={os.environ.get('CXR_DOWNLOAD_RUNS')} "
            "turns downloads off; training instead."
        )
        return None
    base = runs_url() if base_url is None else base_url.rstrip("/") + "/"
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        say(f"published run {name} not used: {base} is not an http(s) address; training instead.")
        return None
    folder_url = f"{base}runs/{name}/"
    dest = Path(dest)
    try:
        files = _read_manifest(folder_url + MANIFEST, name, key, timeout)
        try:
            with _staging_dir(dest) as staging:
                for fname in PUBLISHED_FILES:
                    with open(staging / fname, "wb") as out:
                        _download(folder_url + fname, fname, files[fname], out, timeout, progress)
                write_json(staging / MANIFEST, {"format": FORMAT, "name": name, "key": key, "files": files})
                _move_into_place(staging, dest)
        except OSError as err:  # the local side: cannot create, write or rename the folder
            raise _NotUsed(f"cannot write {dest}: {err.strerror or err}") from None
    except _NotUsed as why:
        say(f"published run {name} not used: {why}; training instead.")
        return None
    return dest


def verify_published_run(run_dir: str | os.PathLike[str]) -> str | None:
    """``None`` when ``run_dir`` holds every file its ``manifest.json`` lists, with the
    listed size and sha256; else why not, in a few words. For a caller that wants to
    re-check a downloaded run before loading it (a file edited or cut short since)."""
    run_dir = Path(run_dir)
    try:
        files = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))["files"]
        for fname, entry in files.items():
            if not _NAME.match(fname):
                return f"{MANIFEST} lists a file outside the run: {fname!r}"
            if file_digest(run_dir / fname) != {"sha256": entry["sha256"], "bytes": entry["bytes"]}:
                return f"{fname} does not match {MANIFEST}"
    except FileNotFoundError as err:
        return f"{Path(err.filename).name if err.filename else 'a file'} is missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{MANIFEST} cannot be read ({type(err).__name__})"
    return None
