"""Headless Chromium driven over the DevTools protocol (CDP), shared by the browser checks.

``tests/browser_check.py`` (the built book) and ``tests/lab_check.py`` (chapter 6 live in
JupyterLab) both open pages in one headless Chromium tab, block requests to other hosts,
take screenshots and read what the page logged. This module holds what they share, so a
change of Chromium flags or of the protocol handling is made once. It needs no browser
download: Debian's ``chromium`` (or Chrome) and ``websocket-client`` (a dependency of
Jupyter Server).

The parts that are pure data handling (:func:`javascript_errors`, :func:`changed_pixels`)
are unit-tested in ``tests/test_lab_check.py``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import websocket  # websocket-client
from PIL import Image

#: The window every check starts with (px).
WIDTH, HEIGHT = 1280, 900


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium (or Chrome) executable: ``explicit``, ``$CHROMIUM``, or the first one on PATH."""
    for candidate in [
        explicit,
        os.environ.get("CHROMIUM"),
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]:
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def process_table(proc: Path = Path("/proc")) -> Iterator[tuple[int, int, int]]:
    """``(pid, parent pid, process group)`` of every process, read from ``/proc/*/stat``
    (Linux; nothing where there is no ``/proc``). The checks use it to find the processes
    they started (Chromium's helpers, a Jupyter server's kernels) and end them by id."""
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        fields = text[text.rfind(")") + 2 :].split()  # after "pid (name) ": state, ppid, pgrp, ...
        if len(fields) > 2:
            yield int(stat.parent.name), int(fields[1]), int(fields[2])


def kill_pids(pids: list[int]) -> None:
    """SIGKILL each process of ``pids`` that is still there (one already gone is fine)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """End ``proc`` if it still runs: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


def end_group(pgid: int, grace: float = 5.0) -> None:
    """Wait up to ``grace`` seconds for the processes of group ``pgid`` (one this module
    started, in its own session) to end, then end those left, one by one by their id."""
    deadline = time.time() + grace
    while True:
        left = [pid for pid, _, group in process_table() if group == pgid]
        if not left:
            return
        if time.time() > deadline:
            kill_pids(left)
            return
        time.sleep(0.1)


def changed_pixels(before: bytes, after: bytes) -> float:
    """Share of pixels that differ (by more than 8 of 255 in any channel, so JPEG noise and
    anti-aliasing do not count) between two PNG screenshots of the same area; 1.0 when
    their sizes differ."""
    a = np.asarray(Image.open(io.BytesIO(before)).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(after)).convert("RGB"), dtype=np.int16)
    if a.shape != b.shape:
        return 1.0
    return float((np.abs(a - b).max(axis=2) > 8).mean())


def _console_text(params: dict) -> str:
    """The text of a ``Runtime.consoleAPICalled`` event: its arguments joined, as the console shows them."""
    parts = []
    for arg in params.get("args", []):
        value = arg.get("value")
        parts.append(str(value) if value is not None else str(arg.get("description") or arg.get("type", "")))
    return " ".join(parts).strip()


def javascript_errors(
    events: Iterable[dict], ignore: Iterable[str] = (), *, console: bool = True, log: bool = True
) -> tuple[list[str], list[str]]:
    """The JavaScript errors among CDP events, one line each: ``(errors, ignored)``.

    Counts an uncaught exception (``Runtime.exceptionThrown``), a ``console.error`` call
    (``Runtime.consoleAPICalled`` of type ``error``, when ``console``) and an error entry of
    the browser's own log (``Log.entryAdded`` of level ``error``: failed requests, CSP
    violations; when ``log``). A line matching one of the ``ignore`` regular expressions is
    returned in ``ignored`` instead, so that a caller can print what it let pass.
    """
    patterns = [re.compile(p) for p in ignore]
    errors: list[str] = []
    ignored: list[str] = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            message = details.get("exception", {}).get("description") or details.get("text", "")
            line = f"JavaScript exception: {(message.splitlines() or [''])[0][:200]}"
        elif method == "Runtime.consoleAPICalled" and console and params.get("type") == "error":
            line = f"console error: {(_console_text(params).splitlines() or [''])[0][:200]}"
        elif method == "Log.entryAdded" and log and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            where = f" ({entry['url']})" if entry.get("url") and entry["url"] not in entry.get("text", "") else ""
            line = f"browser log error: {(entry.get('text', '').splitlines() or [''])[0][:200]}{where}"
        else:
            continue
        (ignored if any(p.search(line) for p in patterns) else errors).append(line)
    return errors, ignored


class Browser:
    """One headless Chromium with one tab, driven over the DevTools protocol.

    Requests the tab makes to an origin other than :attr:`origin` (and not ``data:`` or
    ``blob:``) are blocked once ``Fetch.enable`` was sent, and listed in :attr:`blocked`:
    a check must show that its pages need no network. Every event received is kept in
    :attr:`events` (callers clear it between steps).
    """

    def __init__(self, executable: str, timeout: float = 30.0, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.profile = tempfile.mkdtemp(prefix="cxr-chromium-")
        self.proc = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-allow-origins=*",
                f"--window-size={width},{height}",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port_file = Path(self.profile) / "DevToolsActivePort"
            deadline = time.time() + timeout
            while not (port_file.exists() and port_file.read_text().strip()):
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"Chromium did not start ({executable})")
                time.sleep(0.1)
            port = port_file.read_text().split()[0]
            targets: list[dict] = []
            while not targets:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                    targets = [t for t in json.load(response) if t.get("type") == "page"]
                if not targets:
                    if time.time() > deadline:
                        raise RuntimeError("Chromium has no page to drive")
                    time.sleep(0.1)
            self.ws = websocket.create_connection(
                targets[0]["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True, enable_multithread=False
            )
        except BaseException:
            self.close()
            raise
        self.next_id = 0
        self.events: list[dict] = []
        self.origin = ""  # requests to other origins are blocked
        self.blocked: list[str] = []

    def send(self, method: str, **params: object) -> dict:
        """Call a protocol method and return its result (events arriving meanwhile are handled)."""
        self.next_id += 1
        call_id = self.next_id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.on_event(message)

    def pump(self, seconds: float) -> None:
        """Handle events for a while (requests to allow or block, exceptions)."""
        end = time.time() + seconds
        self.ws.settimeout(0.05)
        try:
            while time.time() < end:
                try:
                    message = json.loads(self.ws.recv())
                except Exception:  # timeout: nothing arrived
                    continue
                if "method" in message:
                    self.on_event(message)
        finally:
            self.ws.settimeout(30)

    def on_event(self, message: dict) -> None:
        self.events.append(message)
        if message["method"] == "Fetch.requestPaused":
            params = message["params"]
            url = params["request"]["url"]
            if url.startswith(self.origin) or url.startswith("data:") or url.startswith("blob:"):
                self._reply("Fetch.continueRequest", requestId=params["requestId"])
            else:
                self.blocked.append(url)
                self._reply("Fetch.failRequest", requestId=params["requestId"], errorReason="BlockedByClient")

    def _reply(self, method: str, **params: object) -> None:
        # Fire and forget: the answer (matched by id) is skipped by send()/pump().
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"probe failed: {str(text).splitlines()[0] if text else text}")
        return result["result"].get("value")

    def set_window(self, width: int, height: int) -> None:
        """Lay the page out for a window of this size (device scale 1)."""
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def screenshot(self, clip: dict | None = None) -> bytes:
        """PNG bytes of the viewport, or of ``clip`` (``x``, ``y``, ``width``, ``height`` in
        page coordinates)."""
        params: dict[str, object] = {"format": "png"}
        if clip is not None:
            params["clip"] = {
                "x": clip["x"],
                "y": clip["y"],
                "width": max(clip["width"], 1),
                "height": max(clip["height"], 1),
                "scale": 1,
            }
        return base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])

    def close(self) -> None:
        """Close the connection, end Chromium (its helper processes too: they are in the
        process group it leads) and remove its profile folder."""
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        stop_process(self.proc)
        end_group(self.proc.pid)  # helpers (network service, renderers) write into the profile until they end
        shutil.rmtree(self.profile, ignore_errors=True)
