"""Browser test of the built book: open every page in headless Chromium.

    python tests/browser_check.py [BUILD_DIR] [--toc book/_toc.yml] [--chromium PATH]
    python tests/browser_check.py BUILD_DIR --all-pages        # every .html under BUILD_DIR/html

Serves ``BUILD_DIR/html`` (default ``_build/html``) on 127.0.0.1, opens each page of the
table of contents with every request to another host blocked (so the book must render with
no network), waits for its scripts and widgets, saves a full-page screenshot as
``BUILD_DIR/screenshots/<page>.png`` and fails, with one line per problem, on

- an execution error shown on the page (a traceback or error output in a cell);
- a missing image (an ``<img>`` that did not load: ``naturalWidth == 0``);
- an empty widget area (a widget view whose rendered area is missing or has no content);
- formulas left as TeX source (MathJax did not render);
- printed output (a stream or plain-text output) wider than its box, which the theme shows
  with a sideways scroll bar and the rest of each line hidden (``book/static/cxrbook.css``
  wraps it);
- a JavaScript exception thrown while the page loads;
- an absolute local path (the repository, the data folder, a cache, the home folder) in the
  page's text;
- a page of the table of contents that was not built;
- a page heavier than 8 MB (its HTML and the images it loads from the book);
- a static explorer (``cxrlib.widgets.Explorer.static_html``, chapter 6) that does not
  react: the check clicks *next* five times and sets two filters, and fails unless the
  explorer's pixels change at each step, no JavaScript error is logged, and its layout fits
  a 800-px-wide window. Screenshots of each step go to ``BUILD_DIR/screenshots/explorer/``.
  Chapter 6's page must have one.

Requests to other hosts are blocked and listed as notes (they are not problems: the book
must not depend on them). Drives Chromium with ``tests/cdp_browser.py`` (the DevTools
protocol through ``websocket-client``, a dependency of Jupyter Server), no browser download. Exit status: 0 when every page is
fine, 1 when a problem was found, 2 when the check could not run.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import sys
import threading
import time
from pathlib import Path

from cdp_browser import HEIGHT, WIDTH, Browser, changed_pixels, find_chromium, javascript_errors

ROOT = Path(__file__).resolve().parent.parent
NARROW = 800  # px: the static explorer must fit a window this wide
MAX_PAGE_BYTES = 8 * 1024 * 1024
EXPLORER_PAGE = "chapters/06_explorer"
EXPLORER_STEPS = 5
MAX_SHOT_HEIGHT = 16000  # px; longer pages are cut (Chromium's own limit is near 16384)

# Runs in the page once scripts have settled: everything the check needs, as JSON.
PAGE_PROBE = r"""
(() => {
  const text = el => (el.textContent || "").trim();
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  const widgets = views.map((tag, i) => {
    const area = tag.previousElementSibling;
    const rendered = area && area.classList.contains("widget-subarea") ? area : null;
    const box = rendered ? rendered.getBoundingClientRect() : null;
    return {index: i, rendered: !!rendered,
            children: rendered ? rendered.querySelectorAll("*").length : 0,
            width: box ? Math.round(box.width) : 0, height: box ? Math.round(box.height) : 0,
            error: rendered ? text(rendered).includes("Error displaying widget") : false};
  });
  const images = [...document.images].map(img => ({
    src: img.getAttribute("src") || "", complete: img.complete, width: img.naturalWidth,
    inOutput: !!img.closest(".cell_output")}));
  const errors = [...document.querySelectorAll(".cell_output .output.traceback, .cell_output .output.error")]
    .map(el => text(el).split("\n").filter(l => l.trim()).slice(-1)[0] || "(empty error output)");
  for (const out of document.querySelectorAll(".cell_output")) {
    if (text(out).includes("Traceback (most recent call last)") && !out.querySelector(".traceback, .error"))
      errors.push(text(out).split("\n").filter(l => l.trim()).slice(-1)[0]);
  }
  // printed text wider than its output box: the reader sees only the start of each line
  const cutOutputs = [...document.querySelectorAll(".cell_output .output.stream pre, .cell_output .output.text_plain pre")]
    .filter(pre => [pre, pre.parentElement].some(el => el.scrollWidth > el.clientWidth + 1))
    .map(pre => text(pre).split("\n").sort((a, b) => b.length - a.length)[0].slice(0, 80));
  const doc = document.documentElement;
  const formulas = document.querySelectorAll("span.math, div.math").length;
  const typeset = document.querySelectorAll("mjx-container").length;
  return JSON.stringify({title: document.title, widgets, images, errors, cutOutputs, formulas, typeset,
    text: document.body ? document.body.innerText : "",
    stateScripts: document.querySelectorAll('script[type="application/vnd.jupyter.widget-state+json"]').length,
    height: Math.max(doc.scrollHeight, document.body ? document.body.scrollHeight : 0)});
})()
"""

SETTLED = r"""
(() => {
  const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  const pending = [...views].filter(tag => {
    const area = tag.previousElementSibling;
    return !(area && area.classList.contains("widget-subarea") && area.children.length);
  }).length;
  const images = [...document.images].filter(img => !img.complete).length;
  const math = document.querySelectorAll("span.math, div.math").length;
  const typeset = document.querySelectorAll("mjx-container").length;
  return document.readyState === "complete" && pending === 0 && images === 0 && (math === 0 || typeset > 0);
})()
"""


# The static explorer: where it is, and its controls (see cxrlib/widgets.py).
EXPLORER_BOX = r"""
(() => {
  const root = document.querySelector(".cxr-explorer");
  if (!root) return null;
  root.scrollIntoView({block: "start"});
  const r = root.getBoundingClientRect();
  return JSON.stringify({x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width, height: r.height,
    overflow: root.scrollWidth > root.clientWidth + 1 || document.documentElement.scrollWidth > window.innerWidth + 1,
    info: (root.querySelector(".cxr-ex-info") || {}).textContent || ""});
})()
"""
EXPLORER_NEXT = "document.querySelector('.cxr-explorer button[data-step=\"1\"]').click()"
# Set a filter to the first option (after "any"/"all") whose first match is not the image shown.
EXPLORER_FILTER = r"""
((name) => {
  const root = document.querySelector(".cxr-explorer");
  const select = root.querySelector(`select[data-filter="${name}"]`);
  const shown = root.querySelector(".cxr-ex-title").textContent;
  const options = [...select.options].slice(1);
  const choose = (value) => { select.value = value; select.dispatchEvent(new Event("change")); };
  const title = () => root.querySelector(".cxr-ex-title").textContent;
  for (const option of options) {  // an option that shows another image, if one does
    choose(option.value);
    if (title() && title() !== shown) return option.textContent;
  }
  for (const option of options) {  // else one that changes what is shown at all
    choose(option.value);
    if (title() !== shown) return option.textContent;
  }
  return options.length ? options[options.length - 1].textContent : "";
})
"""


def page_weight(html: Path, page: str, image_sources: list[str]) -> int:
    """Bytes of a built page: its HTML and the local images it shows (inline data included)."""
    weight = (html / f"{page}.html").stat().st_size
    folder = (html / page).parent
    for src in set(image_sources):
        if src and not src.startswith(("data:", "http:", "https:")):
            target = (folder / src.split("#")[0].split("?")[0]).resolve()
            if target.is_file():
                weight += target.stat().st_size
    return weight


def drive_explorer(browser: Browser, shots: Path) -> tuple[list[str], list[str]]:
    """Click through the page's static explorer; ``(problems, lines to print)``."""
    problems: list[str] = []
    lines: list[str] = []
    shots.mkdir(parents=True, exist_ok=True)
    browser.events.clear()

    def capture(name: str) -> tuple[bytes, dict]:
        box = json.loads(browser.evaluate(EXPLORER_BOX))
        browser.pump(0.3)  # let the swapped images decode and the layout settle
        data = browser.screenshot(box)
        (shots / f"{name}.png").write_bytes(data)
        return data, box

    previous, box = capture("explorer-0-start")
    lines.append(f"explorer: {box['info']}, {box['width']:.0f} x {box['height']:.0f} px")
    actions = [(f"explorer-{k}-next", EXPLORER_NEXT, f"step {k} (next)") for k in range(1, EXPLORER_STEPS + 1)]
    actions += [
        (f"explorer-{EXPLORER_STEPS + k}-filter-{name}", f"({EXPLORER_FILTER})('{name}')", f"filter {name}")
        for k, name in enumerate(("correct", "true"), start=1)
    ]
    for name, script, label in actions:
        chosen = browser.evaluate(script)
        after, box = capture(name)
        share = changed_pixels(previous, after)
        lines.append(
            f"explorer: {label}{f' = {chosen}' if isinstance(chosen, str) else ''}: {share:.1%} of its "
            f"pixels changed ({box['info']})"
        )
        if share < 0.005:
            problems.append(f"static explorer: {label} did not change the shown image or bars")
        previous = after
    errors, _ = javascript_errors(browser.events, log=False)
    problems += [f"static explorer: {error}" for error in errors]
    # the same explorer, filters reset, in a narrow window
    browser.evaluate(
        "document.querySelectorAll('.cxr-explorer select[data-filter]').forEach(s => "
        "{ s.value = ''; s.dispatchEvent(new Event('change')); })"
    )
    browser.set_window(NARROW, HEIGHT)
    browser.pump(0.5)
    _, box = capture(f"explorer-at-{NARROW}px")
    if box["overflow"]:
        problems.append(f"static explorer: wider than a {NARROW}-px window (horizontal scrolling)")
    lines.append(
        f"explorer: at {NARROW} px wide: {box['width']:.0f} x {box['height']:.0f} px, "
        f"{'overflows' if box['overflow'] else 'fits'}"
    )
    browser.set_window(WIDTH, HEIGHT)
    browser.pump(0.3)
    return problems, lines


# --------------------------------------------------------------------------- pages
def toc_pages(toc: Path) -> list[str]:
    """Document names in table-of-contents order (root, then every file entry)."""
    import yaml

    data = yaml.safe_load(toc.read_text())
    pages = [data["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                pages.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in data.items() if k != "root"})
    return [p.removesuffix(".md").removesuffix(".ipynb") for p in pages]


def shot_name(page: str, taken: set[str]) -> str:
    name = Path(page).name
    if name in taken:
        name = page.replace("/", "-")
    taken.add(name)
    return name


# --------------------------------------------------------------------------- server
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# --------------------------------------------------------------------------- check
def local_paths() -> list[str]:
    """Absolute paths of this machine that a page must never show: the repository, the
    data folder, the caches and the home folder (a reader's copy has other paths)."""
    candidates = [
        str(ROOT),
        os.environ.get("CXR_DATA_DIR", ""),
        os.environ.get("CXR_CACHE_DIR", ""),
        os.environ.get("CXR_RUNS_DIR", ""),
        os.path.expanduser("~"),
    ]
    return sorted({c.rstrip("/") for c in candidates if len(c.rstrip("/")) > 4 and c.startswith("/")})


def check_page(browser: Browser, url: str, shot: Path, wait: float) -> tuple[list[str], dict]:
    problems: list[str] = []
    browser.events.clear()
    browser.blocked = []
    browser.send("Page.navigate", url=url)
    start = time.time()
    loaded = False
    while time.time() - start < wait:
        browser.pump(0.25)
        if not loaded:
            loaded = any(e["method"] == "Page.loadEventFired" for e in browser.events)
            continue
        # Images below the fold may be lazy: make them load now.
        if browser.evaluate(SETTLED) is True:
            browser.pump(0.5)  # let widget layout finish
            break
        browser.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
    else:
        if not loaded:
            problems.append(f"the page did not finish loading in {wait:.0f} s")
    info = json.loads(browser.evaluate(PAGE_PROBE))

    for error in info["errors"]:
        problems.append(f"execution error shown on the page: {error[:200]}")
    for image in info["images"]:
        if image["width"] == 0:
            problems.append(f"missing image: {image['src'] or '(no src)'}")
    for widget in info["widgets"]:
        if not widget["rendered"] or widget["children"] == 0 or widget["height"] == 0:
            problems.append(f"empty widget area (widget view {widget['index'] + 1} of {len(info['widgets'])})")
        elif widget["error"]:
            problems.append(f"widget view {widget['index'] + 1} shows 'Error displaying widget'")
    for line in info["cutOutputs"]:
        problems.append(f"printed output cut off at the right edge of its box (it scrolls sideways): {line!r}")
    if info["formulas"] and not info["typeset"]:
        problems.append(f"{info['formulas']} formula(s) not rendered by MathJax")
    if info["widgets"] and not info["stateScripts"]:
        problems.append("widget views but no embedded widget state")
    for prefix in local_paths():
        if prefix in info["text"]:
            problems.append(f"an absolute local path is shown on the page: {prefix}")
    errors, _ = javascript_errors(browser.events, console=False, log=False)
    problems += errors

    # Full page: make the viewport as tall as the page, let it lay out again, capture it.
    # (captureBeyondViewport shifts this theme's layout sideways.)
    height = min(max(int(info["height"]), HEIGHT), MAX_SHOT_HEIGHT)
    shot.parent.mkdir(parents=True, exist_ok=True)
    browser.set_window(WIDTH, height)
    browser.pump(0.5)
    shot.write_bytes(browser.screenshot())
    browser.set_window(WIDTH, HEIGHT)
    summary = {
        "explorer": bool(browser.evaluate("!!document.querySelector('.cxr-explorer')")),
        "sources": [i["src"] for i in info["images"]],
        "images": sum(1 for i in info["images"] if i["inOutput"]),
        "widgets": len(info["widgets"]),
        "formulas": int(info["formulas"]),
        "blocked": sorted(set(browser.blocked)),
        "height": int(info["height"]),
    }
    return problems, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Open every page of the built book in headless Chromium.")
    parser.add_argument("build", nargs="?", type=Path, default=ROOT / "_build")
    parser.add_argument("--toc", type=Path, default=ROOT / "book" / "_toc.yml")
    parser.add_argument("--all-pages", action="store_true", help="every .html file instead of the toc")
    parser.add_argument("--chromium", help="the browser executable (default: chromium on PATH)")
    parser.add_argument("--screenshots", type=Path, help="default: BUILD/screenshots")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for one page")
    args = parser.parse_args(argv)

    html = args.build / "html"
    shots = args.screenshots or args.build / "screenshots"
    if not html.is_dir():
        print(f"browser check: {html} does not exist: run `make book` first", file=sys.stderr)
        return 2
    executable = find_chromium(args.chromium)
    if executable is None:
        print("browser check: no Chromium found (install Debian's `chromium`, or pass --chromium)", file=sys.stderr)
        return 2
    if args.all_pages:
        pages = sorted(
            p.relative_to(html).with_suffix("").as_posix()
            for p in html.rglob("*.html")
            if p.name not in ("genindex.html", "search.html") and "_static" not in p.parts
        )
    else:
        pages = toc_pages(args.toc)

    server, origin = serve(html)
    try:
        browser = Browser(executable)
    except Exception as err:
        server.shutdown()
        print(f"browser check: {err}", file=sys.stderr)
        return 2
    browser.origin = origin
    problems: list[str] = []
    taken: set[str] = set()
    try:
        browser.send("Page.enable")
        browser.send("Runtime.enable")
        browser.set_window(WIDTH, HEIGHT)
        browser.send("Fetch.enable", patterns=[{"urlPattern": "*"}])
        for page in pages:
            if not (html / f"{page}.html").exists():
                problems.append(f"{page}: page is in the table of contents but was not built")
                continue
            shot = shots / f"{shot_name(page, taken)}.png"
            page_problems, summary = check_page(browser, f"{origin}/{page}.html", shot, args.wait)
            weight = page_weight(html, page, summary["sources"])
            if weight > MAX_PAGE_BYTES:
                page_problems.append(f"the page weighs {weight / 2**20:.1f} MB, over {MAX_PAGE_BYTES / 2**20:.0f} MB")
            explorer_lines: list[str] = []
            if summary["explorer"]:
                explorer_problems, explorer_lines = drive_explorer(browser, shots / "explorer")
                page_problems += explorer_problems
            elif page == EXPLORER_PAGE:
                page_problems.append("no static explorer on the page (Explorer.show)")
            state = "ok" if not page_problems else f"{len(page_problems)} problem(s)"
            print(
                f"browser check: {page}: {summary['images']} output image(s), {summary['widgets']} widget(s), "
                f"{summary['formulas']} formula(s), {summary['height']} px, {weight / 2**20:.2f} MB -> "
                f"{shot.relative_to(args.build.parent) if shot.is_relative_to(args.build.parent) else shot}: {state}"
            )
            for line in explorer_lines:
                print(f"  {line}")
            for url in summary["blocked"]:
                print(f"  note: blocked a request to another host: {url}")
            problems += [f"{page}: {p}" for p in page_problems]
    finally:
        browser.close()
        server.shutdown()
    for line in problems:
        print(f"PROBLEM {line}")
    print(f"browser check: {len(pages)} page(s), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
