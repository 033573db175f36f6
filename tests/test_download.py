"""Downloading the database without a Kaggle account: ``config.download_database``,
``cxr download``, ``resolve_data_dir(download=True)`` and the chapters' first-cell helper
``config.download_if_hosted``.

No test reaches the network. The anonymous path runs the real kagglehub (client, download
with its progress bar, unzip into ``KAGGLEHUB_CACHE``) against a fake Kaggle answer put in
place of ``requests.Session.send``; the failure paths feed it the errors kagglehub raises
(no network, HTTP 403, 429, 404, 500, a full disk, a corrupted download).
"""

from __future__ import annotations

import errno
import io
import json
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import kagglehub
import pytest
import requests
from kagglehub.exceptions import DataCorruptionError, KaggleApiHTTPError

from cxrlib import cli, config
from cxrlib.config import DataNotFoundError, DownloadError, download_database, resolve_data_dir
from cxrlib.data import scan

from conftest import CANONICAL, WRAPPER, build_dataset, kagglehub_dataset_dir, unset_for_the_test

HANDLE = config.KAGGLE_HANDLE
DOWNLOAD_URL_END = "/v1/datasets.DatasetApiService/DownloadDataset"


# --------------------------------------------------------------------------- a fake Kaggle


def _zipped_dataset(tmp: Path) -> bytes:
    """The database's zip as Kaggle serves it, in small: COVID-19_Radiography_Dataset/<Class>/images/*.png."""
    ds = build_dataset(tmp / "to-zip", dict.fromkeys(CANONICAL, 3), masks=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(ds.path.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(ds.path).as_posix())
    return buffer.getvalue()


def _response(request: requests.PreparedRequest, status: int, body: bytes, content_type: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers["Content-Type"] = content_type
    response.headers["Content-Length"] = str(len(body))
    response.raw = io.BytesIO(body)
    response.url = request.url
    response.request = request
    return response


class FakeKaggle:
    """Answers kagglehub's requests in place of ``requests.Session.send``: the zip, or an error status."""

    def __init__(self, body: bytes = b"", status: int = 200, events: list[str] | None = None) -> None:
        self.body, self.status = body, status
        self.requests: list[requests.PreparedRequest] = []
        self.events = events if events is not None else []

    def send(self, session: requests.Session, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        self.requests.append(request)
        self.events.append("request")
        if self.status != 200:
            body = json.dumps({"code": self.status, "message": f"error {self.status}"}).encode()
            return _response(request, self.status, body, "application/json")
        return _response(request, 200, self.body, "application/zip")


@pytest.fixture
def no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Kaggle credentials anywhere kagglehub looks (variables, ~/.kaggle, a login)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("KAGGLE_CONFIG_DIR", "KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert kagglehub.config.get_kaggle_credentials() is None


@pytest.fixture
def fake_kaggle(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeKaggle]:
    def install(**kwargs: object) -> FakeKaggle:
        fake = FakeKaggle(**kwargs)  # type: ignore[arg-type]

        def send(session: requests.Session, request: requests.PreparedRequest, **settings: object) -> requests.Response:
            return fake.send(session, request, **settings)

        monkeypatch.setattr(requests.Session, "send", send)
        return fake

    return install


# --------------------------------------------------------------------------- the anonymous download


def test_anonymous_download_states_its_size_shows_progress_and_returns_the_folder(
    tmp_path: Path,
    no_token: None,
    fake_kaggle: Callable[..., FakeKaggle],
    isolated_env,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events: list[str] = []
    fake = fake_kaggle(body=_zipped_dataset(tmp_path), events=events)
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        events.append("log")

    folder = download_database(log=log)

    # the size is stated before anything is asked of Kaggle, and says no account is needed
    assert events[0] == "log" and "request" in events
    assert f"about {config.DOWNLOAD_SIZE_MB} MB" in lines[0] and "No Kaggle account needed" in lines[0]
    # one request, without credentials, for the pinned version
    [request] = fake.requests
    assert request.url.endswith(DOWNLOAD_URL_END)
    assert "Authorization" not in request.headers
    asked = json.loads(request.body)
    assert (asked["ownerSlug"], asked["datasetSlug"], asked["datasetVersionNumber"]) == (
        "tawsifurrahman",
        "covid19-radiography-database",
        5,
    )
    # kagglehub's own progress bar (tqdm, on stderr) ran to the end
    assert "100%" in capsys.readouterr().err
    # unpacked where the offline lookup finds it, and readable as the database
    expected, marker = kagglehub_dataset_dir(isolated_env.kagglehub, HANDLE)
    assert folder == expected.resolve() and marker.is_file()
    assert lines[-1] == f"Downloaded: {expected}"
    result = scan(folder, progress=False)
    assert result.root == (expected / WRAPPER).resolve()
    assert result.counts == dict.fromkeys(CANONICAL, 3) and result.has_masks


def test_after_the_download_everything_finds_it_offline(
    tmp_path: Path, no_token: None, fake_kaggle: Callable[..., FakeKaggle], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_kaggle(body=_zipped_dataset(tmp_path))
    folder = download_database(log=lambda line: None)
    monkeypatch.setattr(requests.Session, "send", _refuse_network)
    assert resolve_data_dir() == folder
    lines: list[str] = []
    assert download_database(log=lines.append) == folder  # a second call downloads nothing
    assert lines == [f"Already downloaded ({HANDLE}): {folder}"]
    assert len(fake.requests) == 1


def _refuse_network(session: requests.Session, request: requests.PreparedRequest, **kwargs: object) -> None:
    raise AssertionError(f"unexpected request: {request.url}")


def test_a_token_is_used_when_set(
    tmp_path: Path, no_token: None, fake_kaggle: Callable[..., FakeKaggle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token stays an option (rate limits, refusals): kagglehub sends it when it is set."""
    monkeypatch.setenv("KAGGLE_USERNAME", "reader")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    fake = fake_kaggle(body=_zipped_dataset(tmp_path))
    download_database(log=lambda line: None)
    assert fake.requests[0].headers["Authorization"].startswith("Basic ")


# --------------------------------------------------------------------------- failures: one line that says what to do


def _raising(error: BaseException) -> Callable[..., str]:
    """A stand-in for ``kagglehub.dataset_download`` that fails with ``error``."""

    def download(handle: str, *args: object, **kwargs: object) -> str:
        raise error

    return download


def _http_error(status: int) -> KaggleApiHTTPError:
    response = requests.Response()
    response.status_code = status
    return KaggleApiHTTPError(f"{status} Client Error.\n\nYou don't have permission ...", response=response)


FAILURES: dict[str, tuple[Callable[[], Exception], list[str]]] = {
    "no network": (
        lambda: requests.ConnectionError("Failed to resolve 'api.kaggle.com'"),
        ["could not be reached", "check the network"],
    ),
    "timeout": (lambda: requests.ReadTimeout("read timed out"), ["could not be reached"]),
    "403": (lambda: _http_error(403), ["refused", "HTTP 403", "KAGGLE_API_TOKEN", "KAGGLE_USERNAME and KAGGLE_KEY"]),
    "401": (lambda: _http_error(401), ["refused", "HTTP 401", "KAGGLE_API_TOKEN"]),
    "429": (lambda: _http_error(429), ["rate-limiting", "HTTP 429", "wait", "KAGGLE_API_TOKEN"]),
    "404": (lambda: _http_error(404), ["HTTP 404", "CXR_KAGGLE_HANDLE"]),
    "500": (lambda: _http_error(500), ["HTTP 500", "again later"]),
    "disk full": (
        lambda: OSError(errno.ENOSPC, "No space left on device"),
        ["disk", "is full", f"{2 * config.DOWNLOAD_SIZE_MB} MB", "KAGGLEHUB_CACHE"],
    ),
    "corrupted": (
        lambda: DataCorruptionError("The X-Goog-Hash header indicated a MD5 checksum of:\n\n  abc\n"),
        ["DataCorruptionError", "MD5 checksum", "run it again"],
    ),
}


@pytest.mark.parametrize("case", FAILURES)
def test_a_failed_download_is_one_line_saying_what_to_do(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_error, expected = FAILURES[case]
    monkeypatch.setattr(kagglehub, "dataset_download", _raising(make_error()))
    with pytest.raises(DownloadError) as info:
        download_database(log=lambda line: None)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback to show
    for words in expected:
        assert words in message, (words, message)
    # every failure also names the way around kagglehub
    assert "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database" in message
    assert "CXR_DATA_DIR" in message and HANDLE in message


@pytest.mark.parametrize("status", [403, 429])
def test_refusal_and_rate_limit_from_the_real_client(
    status: int, no_token: None, fake_kaggle: Callable[..., FakeKaggle]
) -> None:
    """The statuses arrive through kagglehub's own error handling as the messages expect."""
    fake_kaggle(status=status)
    with pytest.raises(DownloadError, match=f"HTTP {status}.*KAGGLE_API_TOKEN"):
        download_database(log=lambda line: None)


def test_no_network_with_the_real_client(no_token: None) -> None:
    """The test suite refuses outgoing connections (conftest): kagglehub fails, one line results."""
    with pytest.raises(DownloadError, match="could not be reached") as info:
        download_database(log=lambda line: None)
    assert "\n" not in str(info.value)


def test_an_interrupt_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kagglehub, "dataset_download", _raising(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        download_database(log=lambda line: None)


# --------------------------------------------------------------------------- cxr download


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cxr_download_prints_the_folder(
    tmp_path: Path,
    no_token: None,
    fake_kaggle: Callable[..., FakeKaggle],
    isolated_env,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_kaggle(body=_zipped_dataset(tmp_path))
    code, out, err = _cli(["download"], capsys)
    expected, _ = kagglehub_dataset_dir(isolated_env.kagglehub, HANDLE)
    assert code == 0
    assert out.splitlines()[-1] == str(expected.resolve())
    assert f"about {config.DOWNLOAD_SIZE_MB} MB" in err and "Traceback" not in err
    # and `cxr data` then finds it with no argument and no network
    code, out, err = _cli(["data", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["total"] == 12


def test_cxr_download_failure_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(kagglehub, "dataset_download", _raising(_http_error(429)))
    code, out, err = _cli(["download"], capsys)
    assert (code, out) == (2, "")
    notice, error = err.split("\n", 1)
    assert "No Kaggle account needed" in notice
    assert error.count("\n") == 1 and error.startswith("cxr: error: could not download")
    assert "HTTP 429" in error and "Traceback" not in err


def test_cxr_download_respects_the_handle_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[str] = []
    target = tmp_path / "elsewhere"
    target.mkdir()

    def download(handle: str, *args: object, **kwargs: object) -> str:
        asked.append(handle)
        return str(target)

    monkeypatch.setattr(kagglehub, "dataset_download", download)
    monkeypatch.setenv("CXR_KAGGLE_HANDLE", "someone/other-copy")
    code, out, _ = _cli(["download"], capsys)
    assert (code, out.strip(), asked) == (0, str(target.resolve()), ["someone/other-copy"])


# --------------------------------------------------------------------------- resolve_data_dir and the first cell


def _fake_download(monkeypatch: pytest.MonkeyPatch, folder: Path) -> list[str]:
    calls: list[str] = []

    def download(handle: str, *args: object, **kwargs: object) -> str:
        calls.append(handle)
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    monkeypatch.setattr(kagglehub, "dataset_download", download)
    return calls


def test_resolve_downloads_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_download(monkeypatch, tmp_path / "downloaded")
    with pytest.raises(DataNotFoundError):
        resolve_data_dir()
    assert calls == []
    assert resolve_data_dir(download=True) == (tmp_path / "downloaded").resolve()
    assert calls == [HANDLE]
    # an explicit folder or CXR_DATA_DIR still comes first: nothing downloaded then
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(download=True) == tmp_path.resolve()
    assert calls == [HANDLE]
    # use_kagglehub=False means no kagglehub at all, download or not
    monkeypatch.delenv("CXR_DATA_DIR")
    with pytest.raises(DataNotFoundError):
        resolve_data_dir(use_kagglehub=False, download=True)
    assert calls == [HANDLE]


def test_first_cell_does_nothing_off_hosted_notebooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_download(monkeypatch, tmp_path / "downloaded")
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("CXR_DOWNLOAD", raising=False)
    assert not config.is_hosted_notebook()
    assert config.download_if_hosted() is None
    monkeypatch.setenv("CXR_DOWNLOAD", "0")
    assert config.download_if_hosted() is None
    assert calls == [] and "CXR_DATA_DIR" not in os.environ


@pytest.mark.parametrize("where", ["colab", "CXR_DOWNLOAD=1"])
def test_first_cell_downloads_on_hosted_notebooks(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Colab (or where CXR_DOWNLOAD=1, as binder/start sets) the folder is fetched and
    CXR_DATA_DIR points at it, so the chapter finds it even outside kagglehub's cache (Colab mounts)."""
    mounted = tmp_path / "kaggle" / "input" / "covid19-radiography-database"
    calls = _fake_download(monkeypatch, mounted)
    if where == "colab":
        monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    else:
        monkeypatch.setenv("CXR_DOWNLOAD", "1")
    monkeypatch.delenv("CXR_DATA_DIR", raising=False)
    assert config.download_if_hosted() == mounted.resolve()
    assert calls == [HANDLE]
    assert os.environ["CXR_DATA_DIR"] == str(mounted.resolve())
    assert resolve_data_dir() == mounted.resolve()
    monkeypatch.delenv("CXR_DATA_DIR")


def test_a_data_folder_the_first_cell_sets_does_not_outlive_the_test() -> None:
    """The test above checks the folder the cell sets. Afterwards the variable must be as it
    was before the test's isolation (here: unset), or the notebooks pytest runs next read it."""
    assert "CXR_DATA_DIR" not in os.environ
    patch = pytest.MonkeyPatch()
    unset_for_the_test(patch)
    os.environ["CXR_DATA_DIR"] = "/set/by/the/first/cell"
    patch.undo()
    assert "CXR_DATA_DIR" not in os.environ


def test_first_cell_failure_is_one_printed_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CXR_DOWNLOAD", "1")
    monkeypatch.setattr(kagglehub, "dataset_download", _raising(_http_error(403)))
    assert config.download_if_hosted() is None
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.startswith("cxr: error: could not download") and "KAGGLE_API_TOKEN" in out
    assert "Traceback" not in out + err
    assert "No Kaggle account needed" in err  # the size was stated first


def test_no_data_message_names_the_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_kagglehub_path", lambda handle: None)
    with pytest.raises(DataNotFoundError) as info:
        resolve_data_dir()
    message = str(info.value)
    assert "cxr download" in message and f"about {config.DOWNLOAD_SIZE_MB} MB" in message
    assert "no Kaggle account needed" in message and "token" not in message.lower()
    assert "CXR_DATA_DIR" in message and HANDLE in message and "\n" not in message
