"""JupyterLab check: chapter 6 run live in JupyterLab in headless Chromium, its explorer clicked.

    python tests/lab_check.py [--out build/lab-check] [--chapter chapters/06_explorer.ipynb]
                              [--chromium PATH] [--timeout 1200]

What a reader with a kernel gets, checked end to end: starts JupyterLab on 127.0.0.1 (a free
port, a random token, ``window.jupyterapp`` exposed, every Jupyter and IPython setting folder
a fresh temporary one so no user state leaks in; the environment's lab extensions, the
widget manager among them, stay visible), opens a copy of the chapter in headless Chromium
(requests to other hosts blocked), runs all its cells with JupyterLab's own command
(``notebook:run-all-cells``), waits for the kernel to go idle, then drives the live explorer
of ``cxrlib.widgets.Explorer.widget``: clicks *next* and sets the *true class* filter. It
fails, one line per problem, unless

- every code cell ran and none shows an error output (an ``error`` output in the notebook's
  model, or a traceback on stderr in the rendered page);
- the explorer shows as the live widget (a widget view with its controls), not as the static
  HTML fallback that :class:`cxrlib.widgets.ExplorerView` also carries;
- the shown image changes after the click and after the filter (its ``src`` and at least
  0.5 % of its pixels), and the position line moves as it should ("image 1 of n" to
  "image 2 of n" on *next*, "image 1 of m" after a filter);
- the page logs no JavaScript error (uncaught exception, ``console.error``, error entry of
  the browser's log), except the benign ones in :data:`BENIGN_LOG_ERRORS`, listed as notes.

Screenshots of the explorer before and after the click and after the filter, and of the
whole window at the end, go to ``--out`` (default ``build/lab-check/``). JupyterLab, its
kernel and Chromium are shut down and the temporary folders removed whatever happens,
SIGTERM included. The chapter reads ``CXR_DATA_DIR``, ``CXR_FAST``, ``CXR_CACHE_DIR`` as
usual: chapter 6 trains chapter 3's model on first use (in CI, ``make test`` did already).
Exit status: 0 when everything is fine, 1 when a problem was found, 2 when the check could
not run. The last line says which.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cdp_browser import (
    HEIGHT,
    WIDTH,
    Browser,
    changed_pixels,
    end_group,
    find_chromium,
    javascript_errors,
    kill_pids,
    process_table,
    stop_process,
)

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "chapters" / "06_explorer.ipynb"
#: The ipywidgets manager's JupyterLab plugin: without it the explorer would fall back to HTML.
WIDGET_MANAGER_PLUGIN = "@jupyter-widgets/jupyterlab-manager:plugin"
#: A step must change at least this share of the image's pixels (as browser_check.py's explorer).
MIN_CHANGED = 0.005

#: Browser log errors that are not the chapter's or the explorer's fault: only the failure of a
#: request to another host, which this check itself blocks (the page must need no network;
#: such requests are listed as notes). JupyterLab 4.6 with this check's settings logged no
#: other error in the runs so far, so nothing else is let pass.
BENIGN_LOG_ERRORS = (r"^browser log error: Failed to load resource: net::ERR_BLOCKED_BY_CLIENT",)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------- pure helpers
def _last_line(text: str) -> str:
    lines = [line.strip() for line in ANSI.sub("", text).splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(empty)"


def output_problems(cells: list[dict]) -> list[str]:
    """Problems with the run cells, one line each, from :data:`CELLS_PROBE`'s summary.

    Each cell: ``index`` (0-based), ``source`` (its first line), ``executionCount`` (``None``
    when it did not run), ``outputs`` (``output_type``, ``name`` for streams, ``ename``,
    ``evalue``, ``text`` (a stream's text), ``mimes``), and ``stderr``: the texts of the
    outputs JupyterLab renders as ``application/vnd.jupyter.stderr`` (stderr streams and
    error outputs alike), and ``widgetErrors``: texts of widget views that failed.

    A problem is an ``error`` output, a traceback printed on stderr (a library that catches
    an exception and prints it), a widget that could not be shown, or a code cell that did
    not run (*Run all* stops at the first error, so the cells after it have no count).
    """
    problems: list[str] = []
    for cell in cells:
        where = f"cell {cell['index'] + 1} ({cell.get('source', '')[:60]!r})"
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        for output in errors:
            problems.append(f"{where}: error output: {output.get('ename', '?')}: {output.get('evalue', '')[:200]}")
        if not errors:  # a traceback shown on stderr (from the page, or a stream in the model)
            texts = list(cell.get("stderr", []))
            texts += [o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stderr"]
            for text in texts:
                if "Traceback (most recent call last)" in ANSI.sub("", text):
                    problems.append(f"{where}: a traceback on stderr: {_last_line(text)}")
                    break
        for text in cell.get("widgetErrors", []):
            problems.append(f"{where}: widget not shown: {_last_line(text)}")
        if cell.get("executionCount") is None and cell.get("source", "").strip():
            problems.append(f"{where}: did not run")
    return problems


def stderr_notes(cells: list[dict]) -> list[str]:
    """One note per cell that wrote to stderr without failing (a warning, a progress bar)."""
    notes = []
    for cell in cells:
        texts = [o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stderr"]
        if texts and not any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            notes.append(f"cell {cell['index'] + 1} wrote to stderr: {_last_line(texts[-1])}")
    return notes


def explorer_problems(view: dict | None) -> list[str]:
    """Problems with how the explorer's cell shows, from :data:`EXPLORER_PROBE`'s summary:
    it must be the live widget (a widget view holding the controls and a loaded image), not
    the static HTML fallback, and every filter must show its choice (``blank``: the
    controls that show none)."""
    if view is None:
        return ["no cell calls explorer.show()"]
    problems = []
    if view.get("static"):
        problems.append("the explorer shows as its static HTML fallback, not as the live widget")
    if not view.get("widget"):
        problems.append("the explorer's cell has no live widget view")
    else:
        missing = [name for name in ("next", "image", "true class") if not view.get("controls", {}).get(name)]
        if missing:
            problems.append(f"the live explorer lacks its {', '.join(missing)} control(s)")
        if not view.get("imageLoaded"):
            problems.append("the live explorer's image did not load")
        for control in view.get("blank", []):
            problems.append(f"the live explorer's {control} control shows no choice (blank)")
    return problems


def position(info: str) -> tuple[int, int] | None:
    """``(k, n)`` from the explorer's line "image k of n matching"; ``None`` for anything else
    (e.g. "no image matches")."""
    found = re.search(r"image (\d+) of (\d+) matching", info)
    return (int(found.group(1)), int(found.group(2))) if found else None


def step_problems(before: str, after: str, action: str) -> list[str]:
    """Whether the explorer's position line moved as ``action`` should: *next* goes from
    image k of n to image k + 1 of the same n; a filter starts at image 1 (or says that no
    image matches)."""
    was, now = position(before), position(after)
    if action == "next":
        if was is None or now is None or now != (was[0] + 1, was[1]):
            return [f"explorer: next went from {before!r} to {after!r}, not to the next image of the same selection"]
    elif now is not None and now[0] != 1:
        return [f"explorer: a filter should show the first matching image, it shows {after!r}"]
    return []


def children_of(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """The processes whose parent is ``pid``: the kernels a Jupyter server started (each in
    a session of its own), so they can be ended by id if the server could not end them."""
    return sorted(child for child, parent, _ in process_table(proc) if parent == pid)


# --------------------------------------------------------------------------- JupyterLab
@dataclass
class Lab:
    """A JupyterLab server started for the check, in its own temporary folders."""

    proc: subprocess.Popen
    url: str  # http://127.0.0.1:PORT
    token: str
    home: Path  # every temporary folder of the check is in here
    log: Path
    kernels: set[int] = field(default_factory=set)

    def api(self, path: str, method: str = "GET") -> bytes:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_lab(home: Path, notebook_dir: Path, timeout: float) -> Lab:
    """Start JupyterLab on 127.0.0.1 serving ``notebook_dir``; returns when its API answers."""
    env = dict(os.environ)
    for name in (
        "JUPYTER_CONFIG_DIR",
        "JUPYTER_DATA_DIR",
        "JUPYTER_RUNTIME_DIR",
        "IPYTHONDIR",
        "JUPYTERLAB_SETTINGS_DIR",
        "JUPYTERLAB_WORKSPACES_DIR",
    ):
        folder = home / name.lower()
        folder.mkdir()
        env[name] = str(folder)
    # No news or update toast over the notebook (the server fetches no news either: news_url=None).
    quiet = env["JUPYTERLAB_SETTINGS_DIR"] + "/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
    Path(quiet).parent.mkdir(parents=True)
    Path(quiet).write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env.pop("JUPYTER_PATH", None)  # the environment's share/jupyter (lab extensions) stays on the path
    env.pop("MPLBACKEND", None)  # the chapters draw with the inline backend
    env["PYTHONUNBUFFERED"] = "1"
    token = secrets.token_hex(16)
    port = free_port()
    log = home / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={notebook_dir}",
        f"--IdentityProvider.token={token}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=notebook_dir, start_new_session=True
        )
    lab = Lab(proc, f"http://127.0.0.1:{port}", token, home, log)
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode} on start:\n{lab.log_tail()}")
        try:
            lab.api("/api/status")
            return lab
        except (urllib.error.URLError, OSError):
            if time.time() > deadline:
                stop_lab(lab)
                raise RuntimeError(f"JupyterLab did not answer in {timeout:.0f} s:\n{lab.log_tail()}") from None
            time.sleep(0.3)


def stop_lab(lab: Lab) -> None:
    """Shut the server down through its API (it ends its kernels), then make sure: the server
    is ended by its id, and so is every kernel it had started (noted in :attr:`Lab.kernels`)."""
    if lab.proc.poll() is None:
        lab.kernels.update(children_of(lab.proc.pid))
        try:
            lab.api("/api/shutdown", method="POST")
        except (urllib.error.URLError, OSError):
            pass
        try:
            lab.proc.wait(20)
        except subprocess.TimeoutExpired:
            stop_process(lab.proc)
    end_group(lab.proc.pid)  # anything else the server started in its session
    kill_pids(sorted(lab.kernels))  # only those still there: the shutdown ends kernels


# --------------------------------------------------------------------------- page scripts
# Resolves when JupyterLab has started and restored its layout; says whether the widget
# manager's plugin is there and active.
APP_READY = r"""
(() => {
  const app = window.jupyterapp;
  if (!app) return null;
  if (!window.cxrRestored) { app.restored.then(() => { window.cxrRestored = true; }); return null; }
  const id = "PLUGIN";
  return JSON.stringify({version: app.version, hasWidgets: app.hasPlugin(id), widgetsActive: app.isPluginActivated(id)});
})()
""".replace("PLUGIN", WIDGET_MANAGER_PLUGIN)

# Opens the notebook, waits for its kernel, then runs all cells with JupyterLab's command.
# Not awaited here (it takes minutes): window.cxrRun says where it is, for RUN_STATE.
OPEN_AND_RUN = r"""
((path) => {
  const app = window.jupyterapp;
  window.cxrRun = "opening";
  (async () => {
    const panel = await app.commands.execute("docmanager:open", {path, factory: "Notebook"});
    await panel.context.ready;
    await panel.sessionContext.ready;
    window.cxrPanel = panel;
    app.shell.activateById(panel.id);
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    if (!kernel) { window.cxrRun = "failed: no kernel started (is a Python kernel installed?)"; return; }
    window.cxrRun = "running";
    const ok = await app.commands.execute("notebook:run-all-cells");
    window.cxrRun = ok === false ? "stopped" : "done";
  })().catch((err) => { window.cxrRun = "failed: " + err; });
  return true;
})
"""

# Where the run is: "opening", "running", "done", "stopped" (a cell failed) or "failed: ...",
# the kernel's status and how many cells wait or run ("[*]").
RUN_STATE = r"""
(() => {
  const panel = window.cxrPanel;
  const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
  const pending = panel ? [...panel.content.node.querySelectorAll(".jp-InputPrompt")]
    .filter(p => (p.textContent || "").includes("*")).length : 0;
  return JSON.stringify({run: window.cxrRun, kernel: kernel ? kernel.status : "none", pending});
})()
"""

# Every code cell: its outputs from the notebook's model (no image data), what the page
# renders as stderr, and widget views that failed.
CELLS_PROBE = r"""
(() => {
  const panel = window.cxrPanel;
  const cells = [];
  panel.content.widgets.forEach((cell, index) => {
    if (cell.model.type !== "code") return;
    const model = cell.model.toJSON();
    const source = Array.isArray(model.source) ? model.source.join("") : model.source;
    const outputs = (model.outputs || []).map(o => ({
      output_type: o.output_type, name: o.name, ename: o.ename, evalue: o.evalue,
      text: o.output_type === "stream" ? (Array.isArray(o.text) ? o.text.join("") : o.text).slice(-4000) : undefined,
      mimes: o.data ? Object.keys(o.data) : []}));
    const node = cell.node;
    const stderr = [...node.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(el => (el.textContent || "").slice(-4000));
    const widgetErrors = [...node.querySelectorAll(".jp-OutputArea-output")]
      .map(el => el.textContent || "")
      .filter(t => t.includes("Error displaying widget") || t.includes("Error rendering output item"));
    cells.push({index, source: source.split("\n")[0], executionCount: model.execution_count,
                outputs, stderr, widgetErrors});
  });
  return JSON.stringify(cells);
})()
"""

# The explorer's cell (the one calling explorer.show()): live widget or static fallback, its
# controls, and where the widget and its image are on the page (scrolled into view).
EXPLORER_PROBE = r"""
(() => {
  const panel = window.cxrPanel;
  const cell = panel.content.widgets.find(c => c.model.type === "code" &&
    c.model.sharedModel.getSource().includes("explorer.show("));
  if (!cell) return null;
  const node = cell.node;
  // The live view: ipywidgets' VBox inside the output (JupyterLab puts no data-mime-type on a
  // widget's output, unlike on text and HTML ones); the static one: the .cxr-explorer HTML.
  const root = node.querySelector(".jp-OutputArea-output > .jupyter-widgets.widget-vbox");
  const buttons = root ? [...root.querySelectorAll("button")] : [];
  const next = buttons.find(b => (b.textContent || "").includes("next"));
  const dropdowns = root ? [...root.querySelectorAll(".widget-dropdown")] : [];
  const trueClass = dropdowns.find(d => (d.querySelector("label") || {}).textContent === "true class");
  const image = root && root.querySelector("img.widget-image");
  const html = root ? [...root.querySelectorAll(".widget-html-content")].map(e => e.textContent) : [];
  const blank = [];  // controls that show no choice (a blank dropdown, no active toggle button)
  if (root) {
    root.querySelectorAll(".widget-dropdown").forEach(d => {
      const select = d.querySelector("select");
      if (select && select.selectedIndex < 0) blank.push((d.querySelector("label") || {}).textContent || "dropdown");
    });
    root.querySelectorAll(".widget-toggle-buttons").forEach(t => {
      if (!t.querySelector("button.mod-active"))
        blank.push([...t.querySelectorAll("button")].map(b => b.textContent).join("/"));
    });
  }
  if (root) root.scrollIntoView({block: "start"});
  const box = el => { if (!el) return null; const r = el.getBoundingClientRect();
    return {x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width, height: r.height}; };
  return JSON.stringify({
    widget: !!root, static: !!node.querySelector(".cxr-explorer"),
    mimes: (cell.model.toJSON().outputs || []).flatMap(o => Object.keys(o.data || {})),
    controls: {"next": !!next, "image": !!image, "true class": !!trueClass},
    blank,
    options: trueClass ? [...trueClass.querySelector("select").options].map(o => o.textContent) : [],
    src: image ? image.src : "", imageLoaded: !!(image && image.complete && image.naturalWidth > 0),
    info: html.join(" ").trim(), widgetBox: box(root), imageBox: box(image), nextBox: box(next)});
})()
"""

# Chooses an option of the "true class" dropdown as a reader would (ipywidgets listens to "change").
CHOOSE_TRUE_CLASS = r"""
((label) => {
  const cell = window.cxrPanel.content.widgets.find(c => c.model.type === "code" &&
    c.model.sharedModel.getSource().includes("explorer.show("));
  const dropdown = [...cell.node.querySelectorAll(".widget-dropdown")]
    .find(d => (d.querySelector("label") || {}).textContent === "true class");
  const select = dropdown.querySelector("select");
  const option = [...select.options].find(o => o.textContent === label);
  select.value = option.value;
  select.dispatchEvent(new Event("change", {bubbles: true}));
  return true;
})
"""


# --------------------------------------------------------------------------- the check
class CheckError(Exception):
    """The check could not run (exit status 2)."""


def wait_for(browser: Browser, expression: str, timeout: float, what: str, interval: float = 0.5) -> object:
    """Poll ``expression`` in the page until it is truthy; its value. Raises :class:`CheckError`."""
    deadline = time.time() + timeout
    while True:
        try:
            value = browser.evaluate(expression)
        except RuntimeError:
            value = None
        if value:
            return value
        if time.time() > deadline:
            raise CheckError(f"{what}: nothing after {timeout:.0f} s")
        browser.pump(interval)


def probe_explorer(browser: Browser) -> dict | None:
    text = browser.evaluate(EXPLORER_PROBE)
    browser.pump(0.3)  # let the scroll settle before the caller measures or captures
    text = browser.evaluate(EXPLORER_PROBE) if text else text
    return json.loads(text) if text else None


def wait_kernel_idle(browser: Browser, timeout: float) -> None:
    """Until the kernel has been idle for a second (widget messages answered)."""
    deadline = time.time() + timeout
    idle_since = None
    while time.time() < deadline:
        state = json.loads(browser.evaluate(RUN_STATE))  # type: ignore[arg-type]
        if state["kernel"] == "idle":
            idle_since = idle_since or time.time()
            if time.time() - idle_since >= 1.0:
                return
        else:
            idle_since = None
        browser.pump(0.2)
    raise CheckError(f"the kernel was still busy after {timeout:.0f} s")


def act_and_compare(
    browser: Browser,
    before: dict,
    image_before: bytes,
    action: str,
    label: str,
    out: Path,
    name: str,
    timeout: float = 60.0,
) -> tuple[dict, bytes, list[str], str]:
    """Run ``action`` (a click on *next*, or a script), wait for the explorer's image to
    change and the kernel to go idle, save a screenshot of the widget as ``out/name.png``;
    ``(view after, screenshot of its image, problems, a line to print)``."""
    if action == "click-next":
        box = before["nextBox"]
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        offset = json.loads(browser.evaluate("JSON.stringify([window.scrollX, window.scrollY])"))  # type: ignore[arg-type]
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):  # a real click where the button is drawn
            browser.send(
                "Input.dispatchMouseEvent", type=kind, x=x - offset[0], y=y - offset[1], button="left", clickCount=1
            )
    else:
        browser.evaluate(action)
    deadline = time.time() + timeout
    view = before
    while time.time() < deadline:
        browser.pump(0.3)
        view = probe_explorer(browser) or before
        if view["src"] != before["src"] and view["imageLoaded"]:
            break
    wait_kernel_idle(browser, timeout)
    view = probe_explorer(browser) or view
    (out / f"{name}.png").write_bytes(browser.screenshot(view["widgetBox"]))
    image_after = browser.screenshot(view["imageBox"])
    image_share = changed_pixels(image_before, image_after)
    problems = step_problems(before["info"], view["info"], "next" if action == "click-next" else "filter")
    if view["src"] == before["src"]:
        problems.append(f"explorer: {label} did not change the shown image (same src after {timeout:.0f} s)")
    elif image_share < MIN_CHANGED:
        problems.append(f"explorer: {label} changed the image's src but only {image_share:.2%} of its pixels")
    line = f"explorer: {label}: {image_share:.1%} of the image's pixels changed ({view['info']}) -> {name}.png"
    return view, image_after, problems, line


def run_check(args: argparse.Namespace, home: Path) -> tuple[list[str], list[str]]:
    """Everything between starting JupyterLab and its shutdown; ``(problems, notes)``."""
    problems: list[str] = []
    notes: list[str] = []
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("lab-*.png"):
        old.unlink()
    notebooks = home / "notebooks"
    notebooks.mkdir()
    shutil.copy2(args.chapter, notebooks / args.chapter.name)  # the repository's copy is never touched

    started = time.time()
    executable = find_chromium(args.chromium)
    if executable is None:
        raise CheckError("no Chromium found (install Debian's `chromium`, or pass --chromium)")
    lab = start_lab(home, notebooks, timeout=120)
    browser = None
    try:
        print(f"lab check: JupyterLab up at {lab.url} in {time.time() - started:.0f} s", flush=True)
        try:
            browser = Browser(executable)
        except Exception as err:
            raise CheckError(str(err)) from err
        browser.origin = lab.url
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable")
        browser.set_window(WIDTH, HEIGHT)
        browser.send("Fetch.enable", patterns=[{"urlPattern": "*"}])
        browser.send("Page.navigate", url=f"{lab.url}/lab?reset&token={lab.token}")
        app = json.loads(wait_for(browser, APP_READY, 120, "JupyterLab did not start in the browser"))  # type: ignore[arg-type]
        if not (app["hasWidgets"] and app["widgetsActive"]):
            problems.append(
                f"the widget manager ({WIDGET_MANAGER_PLUGIN}) is not loaded in JupyterLab {app['version']}"
            )
        print(
            f"lab check: JupyterLab {app['version']} running in Chromium, widget manager "
            f"{'active' if app['widgetsActive'] else 'MISSING'} ({time.time() - started:.0f} s)",
            flush=True,
        )

        run_started = time.time()
        browser.evaluate(f"({OPEN_AND_RUN})({json.dumps(args.chapter.name)})")
        deadline = run_started + args.timeout
        state: dict = {}
        last_report = time.time()
        while True:
            browser.pump(1.0)
            state = json.loads(browser.evaluate(RUN_STATE))  # type: ignore[arg-type]
            if state["run"].startswith("failed"):
                raise CheckError(f"could not run the notebook: {state['run']}")
            if state["run"] in ("done", "stopped"):
                break
            if time.time() > deadline:
                problems.append(f"run all did not finish in {args.timeout:.0f} s ({state['pending']} cell(s) pending)")
                break
            if time.time() - last_report > 60:
                print(f"lab check: running the cells ({time.time() - run_started:.0f} s)...", flush=True)
                last_report = time.time()
        wait_kernel_idle(browser, 60)
        lab.kernels.update(children_of(lab.proc.pid))
        cells = json.loads(browser.evaluate(CELLS_PROBE))  # type: ignore[arg-type]
        ran = sum(1 for c in cells if c["executionCount"] is not None)
        print(
            f"lab check: run all {state['run']}: {ran} of {len(cells)} code cells ran in "
            f"{time.time() - run_started:.0f} s",
            flush=True,
        )
        problems += output_problems(cells)
        notes += stderr_notes(cells)

        view = probe_explorer(browser)
        problems += explorer_problems(view)
        if view and view["widget"] and all(view["controls"].values()):  # drivable, even if it has problems
            print(
                f"lab check: the explorer is the live widget ({view['info']}; output types: "
                f"{', '.join(view['mimes'])})",
                flush=True,
            )
            (out / "lab-1-before.png").write_bytes(browser.screenshot(view["widgetBox"]))
            image = browser.screenshot(view["imageBox"])
            view2, image2, found, line = act_and_compare(
                browser, view, image, "click-next", "click on next", out, "lab-2-after-next"
            )
            problems += found
            print(f"lab check: {line}", flush=True)
            # a class whose first image is not the one shown: try them in turn
            options = [o for o in view2["options"] if o != "any"]
            found3: list[str] = ["explorer: the true class filter has no class to choose"]
            for option in reversed(options):  # the test split is sorted by class: the last differs most
                script = f"({CHOOSE_TRUE_CLASS})({json.dumps(option)})"
                _, _, found3, line = act_and_compare(
                    browser, view2, image2, script, f"true class = {option}", out, "lab-3-after-filter", timeout=20
                )
                if not found3:
                    break
            problems += found3
            print(f"lab check: {line}", flush=True)
        browser.pump(1.0)  # events still on their way (a late exception)
        (out / "lab-4-window.png").write_bytes(browser.screenshot())
        errors, ignored = javascript_errors(browser.events, BENIGN_LOG_ERRORS)
        problems += errors
        notes += [f"ignored (benign): {line}" for line in sorted(set(ignored))]
        notes += [f"blocked a request to another host: {url}" for url in sorted(set(browser.blocked))]
    finally:
        if browser is not None:
            browser.close()
        stop_lab(lab)
    return problems, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run chapter 6 in JupyterLab in headless Chromium, click its explorer."
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "build" / "lab-check", help="screenshots (default: %(default)s)"
    )
    parser.add_argument("--chapter", type=Path, default=CHAPTER, help="the notebook (default: chapter 6)")
    parser.add_argument("--chromium", help="the browser executable (default: chromium on PATH)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds for running all cells")
    args = parser.parse_args(argv)
    if not args.chapter.is_file():
        print(f"lab check: {args.chapter} does not exist", file=sys.stderr)
        return 2

    # SIGTERM (a CI timeout, make interrupted) unwinds like Ctrl-C, so JupyterLab is shut
    # down and the temporary folders removed.
    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(f"lab check: stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    started = time.time()
    home = Path(tempfile.mkdtemp(prefix="cxr-lab-check-"))
    try:
        problems, notes = run_check(args, home)
    except (CheckError, RuntimeError) as err:  # RuntimeError: JupyterLab or Chromium would not start
        print(f"lab check: could not run: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # the browser connection broke, a probe found no page: one line, no traceback
        print(f"lab check: could not run: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(home, ignore_errors=True)
    for note in notes:
        print(f"  note: {note}")
    for problem in problems:
        print(f"PROBLEM {problem}")
    out = args.out.resolve()
    shots = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"lab check: screenshots in {shots}/")
    seconds = time.time() - started
    if problems:
        print(f"lab check: FAILED in {seconds:.0f} s: {len(problems)} problem(s), the first: {problems[0]}")
        return 1
    print(f"lab check: ok in {seconds:.0f} s: chapter 6 ran in JupyterLab with no error and its live explorer reacts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
