"""The pure parts of tests/lab_check.py and the shared tests/cdp_browser.py.

The JupyterLab check itself starts JupyterLab and runs chapter 6 (a minute or more): it is
``make lab-test``, not part of this suite. Here: reading the cells' outputs, the explorer's
view and position line, the JavaScript errors among DevTools events, the kernels a server
started; and, where Chromium is installed, that the shared browser reports a page's
exception and console error.
"""

from __future__ import annotations

import http.server
import io
import os
import shutil
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cdp_browser import Browser, changed_pixels, find_chromium, javascript_errors, process_table
from lab_check import (
    BENIGN_LOG_ERRORS,
    children_of,
    explorer_problems,
    output_problems,
    position,
    stderr_notes,
    step_problems,
)

# What CELLS_PROBE reads from JupyterLab 4 (shapes as seen on a notebook that fails on purpose).
ZERO_DIVISION_TRACEBACK = (
    "\x1b[31m---------------------------------------------------------------------------\x1b[39m\n"
    "\x1b[31mZeroDivisionError\x1b[39m                         Traceback (most recent call last)\n"
    "Cell \x1b[32mIn[4]\x1b[39m\x1b[32m, line 1\x1b[39m\n----> 1 1/0\n\n"
    "\x1b[31mZeroDivisionError\x1b[39m: division by zero"
)


def code_cell(
    index: int,
    source: str,
    count: int | None = 1,
    outputs: list[dict] | None = None,
    stderr: list[str] | None = None,
    widget_errors: list[str] | None = None,
) -> dict:
    return {
        "index": index,
        "source": source,
        "executionCount": count,
        "outputs": outputs or [],
        "stderr": stderr or [],
        "widgetErrors": widget_errors or [],
    }


def test_clean_cells_have_no_problem() -> None:
    cells = [
        code_cell(0, "import numpy as np"),
        code_cell(1, "print(1)", 2, [{"output_type": "stream", "name": "stdout", "text": "1\n"}]),
        code_cell(2, "", None),  # an empty cell never gets a count: not a problem
        code_cell(3, "explorer.show()", 3, [{"output_type": "execute_result", "mimes": ["text/plain"]}]),
    ]
    assert output_problems(cells) == []
    assert stderr_notes(cells) == []


def test_error_output_traceback_on_stderr_and_cells_not_run() -> None:
    cells = [
        code_cell(0, "print('hi')"),
        code_cell(
            1,
            "warn_and_print_a_traceback()",
            2,
            [
                {
                    "output_type": "stream",
                    "name": "stderr",
                    "text": "Traceback (most recent call last):\n  File x\nValueError: printed by hand\n",
                }
            ],
        ),
        code_cell(
            2,
            "1/0",
            3,
            [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero"}],
            stderr=[ZERO_DIVISION_TRACEBACK],
        ),
        code_cell(3, "print('never')", None),
    ]
    problems = output_problems(cells)
    assert problems == [
        "cell 2 ('warn_and_print_a_traceback()'): a traceback on stderr: ValueError: printed by hand",
        "cell 3 ('1/0'): error output: ZeroDivisionError: division by zero",  # once, not again from the page
        "cell 4 (\"print('never')\"): did not run",
    ]
    assert stderr_notes(cells) == ["cell 2 wrote to stderr: ValueError: printed by hand"]


def test_a_traceback_only_the_page_shows_and_a_failed_widget_are_problems() -> None:
    cells = [
        code_cell(
            0,
            "display(thing)",
            1,
            stderr=[ZERO_DIVISION_TRACEBACK],
            widget_errors=["Error displaying widget: model not found"],
        )
    ]
    assert output_problems(cells) == [
        "cell 1 ('display(thing)'): a traceback on stderr: ZeroDivisionError: division by zero",  # ANSI codes gone
        "cell 1 ('display(thing)'): widget not shown: Error displaying widget: model not found",
    ]


def test_a_warning_on_stderr_is_a_note_not_a_problem() -> None:
    cells = [
        code_cell(
            0,
            "train()",
            1,
            [{"output_type": "stream", "name": "stderr", "text": "warning: ImageNet weights could not be loaded\n"}],
        )
    ]
    assert output_problems(cells) == []
    assert stderr_notes(cells) == ["cell 1 wrote to stderr: warning: ImageNet weights could not be loaded"]


LIVE = {
    "widget": True,
    "static": False,
    "controls": {"next": True, "image": True, "true class": True},
    "imageLoaded": True,
    "blank": [],
}


def test_the_live_explorer_passes_and_its_fallbacks_fail() -> None:
    assert explorer_problems(LIVE) == []
    assert explorer_problems(None) == ["no cell calls explorer.show()"]
    static = {**LIVE, "widget": False, "static": True}
    assert explorer_problems(static) == [
        "the explorer shows as its static HTML fallback, not as the live widget",
        "the explorer's cell has no live widget view",
    ]
    broken = {
        **LIVE,
        "controls": {"next": False, "image": True, "true class": False},
        "imageLoaded": False,
        "blank": ["true class", "all/right/wrong"],
    }
    assert explorer_problems(broken) == [
        "the live explorer lacks its next, true class control(s)",
        "the live explorer's image did not load",
        "the live explorer's true class control shows no choice (blank)",
        "the live explorer's all/right/wrong control shows no choice (blank)",
    ]


def test_position_line_after_next_and_after_a_filter() -> None:
    assert position("image 3 of 40 matching") == (3, 40)
    assert position("no image matches") is None
    assert step_problems("image 1 of 40 matching", "image 2 of 40 matching", "next") == []
    # the selection changed under the widget (a later explorer.select() in code)
    assert step_problems("image 1 of 40 matching", "image 2 of 3 matching", "next") == [
        "explorer: next went from 'image 1 of 40 matching' to 'image 2 of 3 matching', "
        "not to the next image of the same selection"
    ]
    assert step_problems("image 1 of 40 matching", "image 1 of 40 matching", "next")  # did not move
    assert step_problems("image 2 of 40 matching", "image 1 of 10 matching", "filter") == []
    assert step_problems("image 2 of 40 matching", "no image matches", "filter") == []
    assert step_problems("image 2 of 40 matching", "image 2 of 10 matching", "filter")


def console(kind: str, *values: str) -> dict:
    return {
        "method": "Runtime.consoleAPICalled",
        "params": {"type": kind, "args": [{"type": "string", "value": v} for v in values]},
    }


def log(level: str, text: str, url: str = "") -> dict:
    return {"method": "Log.entryAdded", "params": {"entry": {"level": level, "text": text, "url": url}}}


def test_javascript_errors_among_events_and_benign_ones_listed_apart() -> None:
    thrown = {
        "method": "Runtime.exceptionThrown",
        "params": {
            "exceptionDetails": {"text": "Uncaught", "exception": {"description": "Error: boom\n    at x.js:1:1"}}
        },
    }
    checkpoint_404 = log(
        "error",
        "Failed to load resource: the server responded with a status of 404 (Not Found)",
        "http://127.0.0.1:1/api/contents/06_explorer.ipynb/checkpoints?1",
    )
    events = [
        {"method": "Page.loadEventFired", "params": {}},
        thrown,
        console("log", "fine"),
        console("warning", "a warning is not an error"),
        console("error", "Failed to render", "x"),
        log("warning", "not an error"),
        log("error", "Failed to load resource: net::ERR_BLOCKED_BY_CLIENT", "https://example.invalid/x.png"),
        checkpoint_404,
        log("error", "Refused to execute inline script", "http://127.0.0.1:1/lab"),
    ]
    errors, ignored = javascript_errors(events, BENIGN_LOG_ERRORS)
    assert errors == [
        "JavaScript exception: Error: boom",
        "console error: Failed to render x",
        "browser log error: Failed to load resource: the server responded with a status of 404 (Not Found) "
        "(http://127.0.0.1:1/api/contents/06_explorer.ipynb/checkpoints?1)",
        "browser log error: Refused to execute inline script (http://127.0.0.1:1/lab)",
    ]
    # only the requests to other hosts that the check blocks itself
    assert ignored == [
        "browser log error: Failed to load resource: net::ERR_BLOCKED_BY_CLIENT (https://example.invalid/x.png)"
    ]
    # nothing ignored unless asked; console and log can be left out (as browser_check.py does)
    assert len(javascript_errors(events)[0]) == 5
    assert javascript_errors(events, console=False, log=False)[0] == ["JavaScript exception: Error: boom"]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_changed_pixels_counts_real_changes_only() -> None:
    base = np.full((20, 30, 3), 100, np.uint8)
    noisy = base.copy()
    noisy[:, :, 0] += 5  # below the threshold: JPEG noise
    changed = base.copy()
    changed[:5] = 200  # a quarter of the rows
    assert changed_pixels(png(base), png(noisy)) == 0.0
    assert changed_pixels(png(base), png(changed)) == pytest.approx(0.25)
    assert changed_pixels(png(base), png(base[:10])) == 1.0  # another size


def test_children_of_finds_a_child_process_by_its_parent() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in children_of(os.getpid())
        assert child.pid not in children_of(child.pid)
    finally:
        child.kill()
        child.wait()


def test_children_of_reads_the_parent_after_a_name_with_spaces(tmp_path: Path) -> None:
    (tmp_path / "41").mkdir()
    (tmp_path / "41" / "stat").write_text("41 (a (strange) name) S 7 40 40 0 -1\n")
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text("42 (python) S 8 42 42 0 -1\n")
    (tmp_path / "self").mkdir()  # not a process id: skipped
    assert children_of(7, tmp_path) == [41] and children_of(8, tmp_path) == [42] and children_of(9, tmp_path) == []
    assert sorted(process_table(tmp_path)) == [(41, 7, 40), (42, 8, 42)]


ERROR_PAGE = """<!doctype html><html><body><p>hi</p><script>
console.error("logged", 42);
setTimeout(() => { throw new Error("thrown later"); }, 10);
</script></body></html>"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium")
def test_the_shared_browser_reports_a_pages_exception_and_console_error(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(ERROR_PAGE)
    handler = partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = Browser(find_chromium())  # type: ignore[arg-type]
    try:
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable")
        browser.send("Page.navigate", url=f"http://127.0.0.1:{server.server_address[1]}/page.html")
        browser.pump(2.0)
        errors, _ = javascript_errors(browser.events)
        assert "console error: logged 42" in errors
        assert "JavaScript exception: Error: thrown later" in errors
        assert any(e.startswith("browser log error:") and "favicon.ico" in e for e in errors)  # a real 404
        assert browser.evaluate("document.querySelector('p').textContent") == "hi"
        profile = browser.profile
    finally:
        browser.close()
        server.shutdown()
    assert not Path(profile).exists() and browser.proc.poll() is not None
    assert not [pid for pid, _, group in process_table() if group == browser.proc.pid]  # no helper left
