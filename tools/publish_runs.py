"""Publish the runs the chapters trained beside the book's HTML, for readers to download.

The publishing workflow (``.github/workflows/pages.yml``) runs this after ``make book``: each
finished run (one with a ``done.json``) is copied to ``HTML_DIR/runs/<name>/`` with a
``manifest.json`` (:func:`cxrlib.published.write_published_run`), keyed by its training
configuration and the fingerprint of the data it was trained on
(:func:`cxrlib.published.run_key`, :func:`cxrlib.data.data_fingerprint`). A reader's copy of
the book downloads a run only when its own configuration and data give the same key.

The default names are the runs the chapters train in the current mode (``CXR_FAST``),
``pages.chapter_run_names``: chapter 3's model (``pages.chapter_run``), used by chapters 3 to
7, and chapter 7's region variants (``pages.chapter_region_runs``). Chapter 3's toy runs are left out: they train in seconds, faster
than a download of their checkpoints. Usage::

    python tools/publish_runs.py RUNS_DIR HTML_DIR [--names NAME ...] [--data DIR]

A missing or unfinished run is one line on stderr and exit code 1, after the others are
published.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cxrlib.config import CXRError
from cxrlib.data import data_fingerprint
from cxrlib.pages import chapter_config, chapter_run_names
from cxrlib.published import run_key, verify_published_run, write_published_run


def publish(runs_dir: Path, html_dir: Path, name: str, data_dir: str | None = None) -> str:
    """Publish one run; the line that says what was published.

    Raises:
        CXRError: the run is missing or unfinished, its data folder is gone, or the copy failed.
    """
    run_dir = runs_dir / name
    done = run_dir / "done.json"
    if not done.is_file():
        raise CXRError(f"no finished run {name} in {runs_dir} (no done.json): the book build did not train it")
    try:
        finished = json.loads(done.read_text(encoding="utf-8"))
        config, trained_on = finished["train"], finished["data_dir"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CXRError(f"{done} cannot be read ({type(err).__name__})") from None
    try:
        data_version = data_fingerprint(data_dir or trained_on)
    except OSError as err:  # a file vanished or cannot be read while listing
        raise CXRError(f"cannot list the data folder of {name}: {err.strerror or err}") from None
    key = run_key(config, data_version)
    target = write_published_run(run_dir, html_dir, name, key)
    problem = verify_published_run(target)  # what readers will check, checked before it is deployed
    if problem:
        raise CXRError(f"the published copy of {name} does not match its manifest: {problem}")
    size = sum(p.stat().st_size for p in target.iterdir())
    return f"published {name}: key {key}, {size / 1e6:.1f} MB in {target}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path, help="where the book build kept its runs (CXR_RUNS_DIR)")
    parser.add_argument("html_dir", type=Path, help="the built HTML (e.g. _build/html); runs go to HTML_DIR/runs/")
    parser.add_argument("--names", nargs="+", help="runs to publish (default: the chapters' runs in this mode)")
    parser.add_argument("--data", help="data folder the runs were trained on (default: the one done.json names)")
    args = parser.parse_args(argv)
    names = args.names or chapter_run_names(chapter_config().preset)
    failed = 0
    for name in names:
        try:
            print(publish(args.runs_dir, args.html_dir, name, args.data))
        except CXRError as err:
            print(f"publish_runs: {err}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
