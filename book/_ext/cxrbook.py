"""Sphinx extension of the book (loaded through ``sphinx.local_extensions`` in _config.yml).

- Execution times: myst-nb keeps, per document, the result of its execution (run time,
  success, error) in the Sphinx environment. At the end of the build they are written, in
  table-of-contents order, to ``<outdir>/../execution-times.json``
  (``_build/execution-times.json``), which ``tools/book_report.py`` prints after
  ``make book``.
- One copy of each script per page: Sphinx 7.4 adds inline scripts registered by
  extensions twice (once with ``filename=None``, once with ``''``); sphinx-thebe's
  ``const THEBE_JS_URL = ...`` then throws "Identifier has already been declared" in the
  browser on every page. Duplicates are dropped from each page's ``script_files``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx


def _toc_order(app: Sphinx) -> list[str]:
    site_map = getattr(app.config, "external_site_map", None)
    if site_map is None:
        return []
    order: list[str] = []

    def walk(docname: str) -> None:
        if docname in order:
            return
        order.append(docname)
        for tree in site_map[docname].subtrees:
            for item in tree.items:
                if isinstance(item, str):
                    walk(item)

    walk(site_map.root.docname)
    return order


def write_times(app: Sphinx, exception: Exception | None) -> None:
    if app.env is None:
        return
    metadata: dict[str, dict[str, Any]] = getattr(app.env, "nb_metadata", {}) or {}
    order = _toc_order(app)
    docs = sorted(metadata, key=lambda d: (order.index(d) if d in order else len(order), d))
    rows = []
    for docname in docs:
        data = metadata[docname].get("exec_data")
        if not data:
            continue
        title = app.env.titles.get(docname)
        rows.append(
            {
                "docname": docname,
                "title": title.astext() if title is not None else docname,
                "seconds": round(float(data.get("runtime") or 0.0), 2),
                "succeeded": bool(data.get("succeeded")),
                "error": data.get("error"),
            }
        )
    out = Path(app.outdir).parent / "execution-times.json"
    out.write_text(json.dumps({"notebooks": rows, "build_failed": exception is not None}, indent=1) + "\n")


def one_copy_of_each_script(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", str(script)) or "", json.dumps(attributes, sort_keys=True, default=str))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("build-finished", write_times)
    app.connect("html-page-context", one_copy_of_each_script)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
