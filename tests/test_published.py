"""Published runs (cxrlib.published): downloaded from a real HTTP server on 127.0.0.1.

The server serves a tiny run (a few hundred bytes of "weights", a config, learning curves
and a split) the way GitHub Pages serves the book's: ``/runs/<name>/<file>``. Each way a
download can go wrong (wrong hash, truncated file, 404, a server that stops answering, an
address nobody listens on, a run for another key, a malformed manifest) must give ``None``,
exactly one line saying why, and no file left behind; downloads switched off must make no
request at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

import cxrlib.published
import cxrlib.runs
from cxrlib import config as cxr_config
from cxrlib.checkpoint import load_model, run_data_dir
from cxrlib.config import BOOK_URL, CXRError, downloads_enabled, runs_url
from cxrlib.data import data_fingerprint
from cxrlib.published import (
    MANIFEST,
    PUBLISHED_FILES,
    fetch_published_run,
    file_digest,
    run_key,
    verify_published_run,
    write_published_run,
)
from cxrlib.recipe import TrainConfig, preset
from cxrlib.runs import describe_outcome, ensure_run

from conftest import CANONICAL, build_dataset
from tinyrun import TINY, tiny_run

ROOT = Path(__file__).resolve().parent.parent
NAME = "ch03-test"
KEY = "0123456789abcdef"
TIMEOUT = 0.5  # seconds; the stalling handler waits far longer


# --------------------------------------------------------------------------- the server


@dataclass
class Response:
    """What the server answers for one path: ``body`` with ``status``; ``length`` overrides
    the Content-Length header (a larger one, then a closed connection: a truncated download);
    ``stall`` sends the headers and half the body, then waits until the test ends."""

    body: bytes
    status: int = 200
    length: int | None = None
    stall: bool = False


@dataclass
class Site:
    url: str
    routes: dict[str, Response] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def serve_run(self, files: dict[str, bytes], name: str = NAME, key: str = KEY) -> dict[str, object]:
        """Serve ``files`` and their manifest as run ``name``; the manifest, to alter."""
        manifest: dict[str, object] = {
            "format": 1,
            "name": name,
            "key": key,
            "files": {f: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for f, b in files.items()},
        }
        for fname, body in files.items():
            self.routes[f"/runs/{name}/{fname}"] = Response(body)
        self.set_manifest(manifest, name)
        return manifest

    def set_manifest(self, manifest: dict[str, object], name: str = NAME) -> None:
        self.routes[f"/runs/{name}/{MANIFEST}"] = Response(json.dumps(manifest).encode())

    def serve_folder(self, folder: Path) -> None:
        """Serve every file under ``folder`` at its relative path (a published book)."""
        for path in folder.rglob("*"):
            if path.is_file():
                self.routes["/" + path.relative_to(folder).as_posix()] = Response(path.read_bytes())


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            site.requests.append(self.path)
            answer = site.routes.get(self.path, Response(b"not found", status=404))
            self.send_response(answer.status)
            self.send_header("Content-Length", str(answer.length if answer.length is not None else len(answer.body)))
            self.end_headers()
            if answer.stall:
                self.wfile.write(answer.body[: len(answer.body) // 2])
                self.wfile.flush()
                site.release.wait(30)
                return
            self.wfile.write(answer.body)
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            pass

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (the timeout test) breaks the pipe; that is expected


@pytest.fixture(autouse=True)
def direct_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads on, to the given address, without a proxy of the machine running the tests."""
    for var in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "CXR_DOWNLOAD_RUNS",
        "CXR_RUNS_URL",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def site() -> Iterator[Site]:
    site = Site(url="")
    server = _QuietServer(("127.0.0.1", 0), _handler(site))
    site.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


# --------------------------------------------------------------------------- a tiny run


TINY_FILES = {
    "best.pt": bytes(range(256)) * 3,
    "config.json": b'{"train": {"preset": "test"}, "data_dir": "/ci/data"}\n',
    "history.json": b'[{"epoch": 1, "seconds": 1.0}]\n',
    "split.csv": b"path,class,split\nCOVID/images/COVID-1.png,COVID,train\n",
}


@dataclass
class Fetch:
    result: Path | None
    lines: list[str]
    dest: Path


def fetch(site: Site, tmp_path: Path, **kwargs: object) -> Fetch:
    lines: list[str] = []
    dest = tmp_path / "runs" / NAME
    say: Callable[[str], None] = lines.append
    options = {"base_url": site.url, "timeout": TIMEOUT, "say": say, **kwargs}
    result = fetch_published_run(NAME, KEY, dest, **options)  # type: ignore[arg-type]
    return Fetch(result, lines, dest)


def assert_failed(outcome: Fetch, reason: str) -> None:
    """None, one line naming the run and ``reason``, and nothing written: no run folder, no
    hidden partial folder beside it."""
    assert outcome.result is None
    assert len(outcome.lines) == 1, outcome.lines
    line = outcome.lines[0]
    assert line.startswith(f"published run {NAME} not used: ") and line.endswith("; training instead."), line
    assert reason in line, line
    assert not outcome.dest.exists()
    parent = outcome.dest.parent
    assert not parent.exists() or list(parent.iterdir()) == []


# --------------------------------------------------------------------------- fetch


def test_fetch_success_lands_every_file_with_its_hash(site: Site, tmp_path: Path) -> None:
    manifest = site.serve_run(TINY_FILES)
    outcome = fetch(site, tmp_path)
    assert outcome.result == outcome.dest
    assert outcome.lines == []
    assert sorted(p.name for p in outcome.dest.iterdir()) == sorted([*PUBLISHED_FILES, MANIFEST])
    for fname, body in TINY_FILES.items():
        assert (outcome.dest / fname).read_bytes() == body
        assert file_digest(outcome.dest / fname) == manifest["files"][fname]  # type: ignore[index]
    saved = json.loads((outcome.dest / MANIFEST).read_text())
    assert (saved["name"], saved["key"], saved["format"]) == (NAME, KEY, 1)
    assert verify_published_run(outcome.dest) is None
    assert list(outcome.dest.parent.iterdir()) == [outcome.dest]  # no partial folder left


def test_wrong_hash_is_never_kept(site: Site, tmp_path: Path) -> None:
    manifest = site.serve_run(TINY_FILES)
    manifest["files"]["best.pt"]["sha256"] = hashlib.sha256(b"other weights").hexdigest()  # type: ignore[index]
    site.set_manifest(manifest)
    assert_failed(fetch(site, tmp_path), "best.pt failed its sha256 check")


def test_truncated_download_content_length_larger_than_body(site: Site, tmp_path: Path) -> None:
    site.serve_run(TINY_FILES)
    body = TINY_FILES["best.pt"]
    site.routes[f"/runs/{NAME}/best.pt"] = Response(body[:100], length=len(body))  # announces all, sends 100
    assert_failed(fetch(site, tmp_path), f"best.pt was cut short (100 of {len(body):,} bytes)")


def test_truncated_file_fewer_bytes_than_manifest(site: Site, tmp_path: Path) -> None:
    site.serve_run(TINY_FILES)
    site.routes[f"/runs/{NAME}/split.csv"] = Response(TINY_FILES["split.csv"][:10])  # a consistent, short answer
    assert_failed(fetch(site, tmp_path), f"split.csv was cut short (10 of {len(TINY_FILES['split.csv'])} bytes)")


def test_file_longer_than_manifest(site: Site, tmp_path: Path) -> None:
    site.serve_run(TINY_FILES)
    site.routes[f"/runs/{NAME}/history.json"] = Response(TINY_FILES["history.json"] + b" " * 50)
    assert_failed(fetch(site, tmp_path), "history.json is longer than its manifest says")


def test_no_published_run_404(site: Site, tmp_path: Path) -> None:
    assert_failed(fetch(site, tmp_path), f"{site.url}runs/{NAME}/{MANIFEST} answered HTTP 404")
    assert site.requests == [f"/runs/{NAME}/{MANIFEST}"]


def test_404_on_a_file_removes_the_files_already_downloaded(site: Site, tmp_path: Path) -> None:
    site.serve_run(TINY_FILES)
    del site.routes[f"/runs/{NAME}/split.csv"]  # the last file: the others are downloaded first
    assert_failed(fetch(site, tmp_path), f"{site.url}runs/{NAME}/split.csv answered HTTP 404")
    assert site.requests[-1] == f"/runs/{NAME}/split.csv" and len(site.requests) == 1 + len(PUBLISHED_FILES)


@pytest.mark.parametrize("stalled", [MANIFEST, "best.pt"])
def test_server_that_stops_answering_times_out(site: Site, tmp_path: Path, stalled: str) -> None:
    site.serve_run(TINY_FILES)
    site.routes[f"/runs/{NAME}/{stalled}"].stall = True  # headers and half the body, then silence
    assert_failed(fetch(site, tmp_path), f"{site.url}runs/{NAME}/{stalled} sent nothing for 0.5 s")


def test_unreachable_site(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = fetch(Site(url=f"http://127.0.0.1:{port}/"), tmp_path)
    assert_failed(outcome, f"127.0.0.1:{port} could not be reached")


def test_key_mismatch_downloads_nothing(site: Site, tmp_path: Path) -> None:
    site.serve_run(TINY_FILES, key="fedcba9876543210")
    outcome = fetch(site, tmp_path)
    assert_failed(outcome, "the published run is for another configuration or data")
    assert "fedcba9876543210" in outcome.lines[0] and KEY in outcome.lines[0]
    assert site.requests == [f"/runs/{NAME}/{MANIFEST}"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>not json</html>", "its manifest is not valid JSON"),
        (b"[1, 2]", "its manifest is not a JSON object"),
        (json.dumps({"format": 2, "name": NAME, "key": KEY, "files": {}}).encode(), "format 2"),
        (json.dumps({"format": 1, "name": "ch07-other", "key": KEY, "files": {}}).encode(), "names another run"),
    ],
)
def test_malformed_manifest(site: Site, tmp_path: Path, body: bytes, reason: str) -> None:
    site.serve_run(TINY_FILES)
    site.routes[f"/runs/{NAME}/{MANIFEST}"] = Response(body)
    assert_failed(fetch(site, tmp_path), reason)
    assert site.requests == [f"/runs/{NAME}/{MANIFEST}"]


def test_manifest_cannot_name_files_outside_the_run(site: Site, tmp_path: Path) -> None:
    files = {**TINY_FILES, "../escaped.txt": b"written outside dest"}
    site.serve_run(files)
    assert_failed(fetch(site, tmp_path), "not the files of a run")
    assert not (tmp_path / "runs" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    manifest = site.serve_run(TINY_FILES)
    manifest["files"]["best.pt"]["bytes"] = "many"  # type: ignore[index]
    site.set_manifest(manifest)
    assert_failed(fetch(site, tmp_path), "no valid sha256 and byte count for best.pt")


def test_downloads_off_by_environment_make_no_request(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.serve_run(TINY_FILES)
    monkeypatch.setenv("CXR_DOWNLOAD_RUNS", "0")
    outcome = fetch(site, tmp_path)
    assert outcome.result is None and site.requests == []
    assert outcome.lines == [
        f"published run {NAME} not downloaded: CXR_DOWNLOAD_RUNS=0 turns downloads off; training instead."
    ]
    assert not outcome.dest.exists()


def test_downloads_off_by_argument_make_no_request_and_no_line(site: Site, tmp_path: Path) -> None:
    site.serve_run(TINY_FILES)
    outcome = fetch(site, tmp_path, download=False)
    assert (outcome.result, outcome.lines, site.requests) == (None, [], [])


def test_runs_url_environment_is_the_default_base(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site.serve_run(TINY_FILES)
    monkeypatch.setenv("CXR_RUNS_URL", site.url.rstrip("/"))  # without the trailing slash
    lines: list[str] = []
    dest = tmp_path / "runs" / NAME
    assert fetch_published_run(NAME, KEY, dest, timeout=TIMEOUT, say=lines.append) == dest
    assert lines == [] and site.requests[0] == f"/runs/{NAME}/{MANIFEST}"


def test_existing_folder_replaced_whole_on_success_untouched_on_failure(site: Site, tmp_path: Path) -> None:
    dest = tmp_path / "runs" / NAME
    dest.mkdir(parents=True)
    (dest / "best.pt").write_bytes(b"stale weights of another recipe")
    (dest / "last.pt").write_bytes(b"stale optimizer state")
    manifest = site.serve_run(TINY_FILES)
    manifest["files"]["split.csv"]["sha256"] = "0" * 64  # type: ignore[index]
    site.set_manifest(manifest)
    lines: list[str] = []
    assert fetch_published_run(NAME, KEY, dest, base_url=site.url, timeout=TIMEOUT, say=lines.append) is None
    assert len(lines) == 1 and "split.csv failed its sha256 check" in lines[0]
    assert sorted(p.name for p in dest.iterdir()) == ["best.pt", "last.pt"]
    assert (dest / "best.pt").read_bytes() == b"stale weights of another recipe"

    site.serve_run(TINY_FILES)
    assert fetch_published_run(NAME, KEY, dest, base_url=site.url, timeout=TIMEOUT, say=lines.append) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted([*PUBLISHED_FILES, MANIFEST])  # no stale last.pt
    assert (dest / "best.pt").read_bytes() == TINY_FILES["best.pt"]
    assert list(dest.parent.iterdir()) == [dest]


def test_not_a_run_name_is_refused() -> None:
    with pytest.raises(CXRError, match="not a run name"):
        fetch_published_run("../etc", KEY, "/tmp/x", base_url="http://127.0.0.1:9/", say=print)


# --------------------------------------------------------------------------- publish, then fetch


def _finished_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for fname, body in TINY_FILES.items():
        (folder / fname).write_bytes(body)
    (folder / "last.pt").write_bytes(b"optimizer state: not published")
    (folder / "done.json").write_text("{}")
    return folder


def test_write_published_run_then_fetch_round_trip(site: Site, tmp_path: Path) -> None:
    run = _finished_run(tmp_path / "trained" / NAME)
    html = tmp_path / "html"
    key = run_key(preset("cpu").to_dict(), "a1b2c3d4e5f60718")
    published = write_published_run(run, html, NAME, key)
    assert published == html / "runs" / NAME
    assert sorted(p.name for p in published.iterdir()) == sorted([*PUBLISHED_FILES, MANIFEST])
    manifest = json.loads((published / MANIFEST).read_text())
    assert manifest == {
        "format": 1,
        "name": NAME,
        "key": key,
        "files": {f: file_digest(run / f) for f in PUBLISHED_FILES},
    }
    assert list((html / "runs").iterdir()) == [published]  # no staging folder left

    site.serve_folder(html)
    lines: list[str] = []
    dest = tmp_path / "reader" / NAME
    assert fetch_published_run(NAME, key, dest, base_url=site.url, timeout=TIMEOUT, say=lines.append) == dest
    assert lines == []
    for fname in PUBLISHED_FILES:
        assert (dest / fname).read_bytes() == (run / fname).read_bytes()
    assert (
        fetch_published_run(
            NAME,
            run_key(preset("fast").to_dict(), "a1b2c3d4e5f60718"),
            tmp_path / "other",
            base_url=site.url,
            timeout=TIMEOUT,
            say=lines.append,
        )
        is None
    )
    assert len(lines) == 1 and "another configuration or data" in lines[0]


def test_a_fetched_trained_run_loads_and_reads_as_the_original(
    site: Site, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The published files are enough for what chapters do with a run: load the model,
    say how training ended (config.json and history.json)."""
    run, data = tiny_run(tmp_path_factory)
    key = run_key(TINY.to_dict(), data_fingerprint(data))
    write_published_run(run, tmp_path / "html", "tiny", key)
    site.serve_folder(tmp_path / "html")
    dest = fetch_published_run("tiny", key, tmp_path / "reader" / "tiny", base_url=site.url, timeout=TIMEOUT)
    assert dest is not None
    original, fetched = load_model(run), load_model(dest)
    assert fetched.classes == original.classes and fetched.metrics == original.metrics
    for name, tensor in original.model.state_dict().items():
        assert fetched.model.state_dict()[name].equal(tensor), name
    assert describe_outcome(dest) == describe_outcome(run)


def test_write_published_run_refuses_an_unfinished_run(tmp_path: Path) -> None:
    run = _finished_run(tmp_path / NAME)
    (run / "best.pt").unlink()
    with pytest.raises(CXRError, match="has no best.pt"):
        write_published_run(run, tmp_path / "html", NAME, KEY)
    assert not (tmp_path / "html" / "runs" / NAME).exists()


def test_verify_published_run_notices_a_changed_file(site: Site, tmp_path: Path) -> None:
    site.serve_run(TINY_FILES)
    dest = fetch(site, tmp_path).dest
    assert verify_published_run(dest) is None
    (dest / "best.pt").write_bytes(b"edited")
    assert verify_published_run(dest) == f"best.pt does not match {MANIFEST}"
    (dest / "split.csv").unlink()
    (dest / "best.pt").write_bytes(TINY_FILES["best.pt"])
    assert verify_published_run(dest) == "split.csv is missing"


# --------------------------------------------------------------------------- the key and the data version


def test_run_key_is_canonical_and_names_config_and_data() -> None:
    config = preset("cpu")
    key = run_key(config.to_dict(), "a1b2c3d4e5f60718")
    assert len(key) == 16 and int(key, 16) >= 0
    read_back = json.loads(json.dumps(config.to_dict()))  # as a done.json holds it: lists, not tuples
    reordered = dict(reversed(list(read_back.items())))
    assert run_key(reordered, "a1b2c3d4e5f60718") == key
    assert run_key(config.to_dict(), "a1b2c3d4e5f60719") != key
    assert run_key(preset("cpu", seed=1).to_dict(), "a1b2c3d4e5f60718") != key
    assert run_key(TrainConfig.from_dict(read_back).to_dict(), "a1b2c3d4e5f60718") == key


def test_data_fingerprint_ignores_location_and_times_not_content(tmp_path: Path) -> None:
    data = build_dataset(tmp_path / "a", dict.fromkeys(CANONICAL, 3))
    fingerprint = data_fingerprint(data.path)
    assert len(fingerprint) == 16
    copy = tmp_path / "elsewhere" / "unwrapped"
    shutil.copytree(data.root, copy)  # another machine: another path, no enclosing folder
    some_image = copy / data.paths[0]
    os.utime(some_image, (1_000_000, 1_000_000))  # and other modification times
    assert data_fingerprint(copy) == fingerprint
    some_image.write_bytes(some_image.read_bytes() + b"\0")  # the same name, other bytes
    assert data_fingerprint(copy) != fingerprint
    shutil.rmtree(copy)
    shutil.copytree(data.root, copy)
    (copy / data.paths[-1]).unlink()  # one image fewer
    assert data_fingerprint(copy) != fingerprint


def test_data_fingerprint_sees_the_masks(tmp_path: Path) -> None:
    plain = build_dataset(tmp_path / "plain", dict.fromkeys(CANONICAL, 3))
    masked = build_dataset(tmp_path / "masked", dict.fromkeys(CANONICAL, 3), masks=True)
    assert data_fingerprint(plain.path) != data_fingerprint(masked.path)


# --------------------------------------------------------------------------- settings


def test_book_url_is_config_yml_baseurl() -> None:
    """cxrlib carries the book's address without _config.yml (pip, Colab): the two must agree."""
    book = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert BOOK_URL == book["html"]["baseurl"]
    assert BOOK_URL.startswith("https://") and BOOK_URL.endswith("/")


def test_download_and_url_settings_read_the_environment_when_called(monkeypatch: pytest.MonkeyPatch) -> None:
    assert downloads_enabled() and runs_url() == BOOK_URL
    for off in ("0", "false", "No", " off "):
        monkeypatch.setenv("CXR_DOWNLOAD_RUNS", off)
        assert not cxr_config.downloads_enabled(), off
    for on in ("1", "yes", ""):
        monkeypatch.setenv("CXR_DOWNLOAD_RUNS", on)
        assert downloads_enabled(), on
    monkeypatch.setenv("CXR_RUNS_URL", "http://mirror.example/book")
    assert runs_url() == "http://mirror.example/book/"


# --------------------------------------------------------------------------- ensure_run: local, published, training


class Trained(Exception):
    """Raised by the stand-in for training: the test only needs to know it was reached."""


@pytest.fixture
def reader(
    site: Site, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> tuple[Site, Path, Path, list[str]]:
    """A reader's machine: their own runs folder, the book's site serving the tiny run as
    ``tiny`` (keyed by TINY and the data's fingerprint), and training replaced by a stand-in
    that raises :class:`Trained`. Returns ``(site, run folder, data folder, printed lines)``."""
    run, data = tiny_run(tmp_path_factory)
    write_published_run(run, tmp_path / "html", "tiny", run_key(TINY.to_dict(), data_fingerprint(data)))
    site.serve_folder(tmp_path / "html")
    monkeypatch.setenv("CXR_RUNS_URL", site.url)
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "reader-runs"))
    monkeypatch.delenv("CXR_DATA_DIR", raising=False)

    def no_training(*args: object, **kwargs: object) -> None:
        raise Trained

    monkeypatch.setattr(cxrlib.runs, "train", no_training)
    monkeypatch.setattr(cxrlib.published, "DEFAULT_TIMEOUT", TIMEOUT)
    return site, run, data, []


def test_ensure_run_downloads_the_published_run_instead_of_training(reader: tuple[Site, Path, Path, list[str]]) -> None:
    site, run, data, lines = reader
    got = ensure_run(TINY, "tiny", data_dir=data, progress=False, log=lines.append)
    assert got.name == "tiny" and lines == [
        "Downloaded the book's published run tiny (every file matched its sha256): no training needed."
    ]
    assert load_model(got).metrics == load_model(run).metrics
    assert run_data_dir(got) == str(data.resolve())  # this machine's data folder, not the trainer's
    requests = len(site.requests)
    assert ensure_run(TINY, "tiny", data_dir=data, progress=False, log=lines.append) == got  # now a local run
    assert len(site.requests) == requests and len(lines) == 1


@pytest.mark.parametrize("fault", ["wrong hash", "truncated", "404", "timeout"])
def test_ensure_run_trains_when_the_published_run_fails(reader: tuple[Site, Path, Path, list[str]], fault: str) -> None:
    site, run, data, lines = reader
    best = "/runs/tiny/best.pt"
    if fault == "wrong hash":
        site.routes[best] = Response(site.routes[best].body[:-1] + b"x")
    elif fault == "truncated":
        site.routes[best] = Response(site.routes[best].body[:100], length=len(site.routes[best].body))
    elif fault == "404":
        del site.routes[best]
    else:
        site.routes[best] = Response(site.routes[best].body, stall=True)
    with pytest.raises(Trained):
        ensure_run(TINY, "tiny", data_dir=data, progress=False, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("published run tiny not used: "), lines
    assert not (Path(os.environ["CXR_RUNS_DIR"]) / "tiny" / "best.pt").exists()  # a failed file is never kept


@pytest.mark.parametrize("how", ["argument", "environment", "fast mode"])
def test_ensure_run_asks_nothing_when_downloads_are_off(
    reader: tuple[Site, Path, Path, list[str]], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    site, run, data, lines = reader
    config, options = TINY, {}
    if how == "argument":
        options = {"download": False}
    elif how == "environment":
        monkeypatch.setenv("CXR_DOWNLOAD_RUNS", "0")
    else:
        config = replace(TINY, fast_subset=True)  # a toy: it trains faster than it downloads
    with pytest.raises(Trained):
        ensure_run(config, "tiny", data_dir=data, progress=False, log=lines.append, **options)
    assert site.requests == []
    off = "published run tiny not downloaded: CXR_DOWNLOAD_RUNS=0 turns downloads off; training instead."
    assert lines == ([off] if how == "environment" else [])
