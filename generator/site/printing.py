"""The print edition: one HTML page holding the whole handbook, for Chromium to print.

The chapters' rendered HTML (math and figures already in) is set after a
cover and a table of contents, each chapter on a new page. No JavaScript is
needed to print it.
"""
from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path

HEADING = re.compile(r"<h([12])[^>]*>(.*?)</h\1>", re.S)
TAGS = re.compile(r"<[^>]+>")
OPEN_DETAILS = re.compile(r"<details(?![^>]*\bopen\b)")  # drills print with their answers
PERMALINK = re.compile(r'<a class="headerlink"[^>]*>.*?</a>', re.S)


def _text(fragment: str) -> str:
    return html.unescape(TAGS.sub("", PERMALINK.sub("", fragment))).strip()


def write_handbook_html(site_dir: Path, pages: list, primary) -> Path:
    """Write ``site/handbook.html`` from the printed pages, in nav order."""
    chapters, toc = [], []
    for i, page in enumerate(pages, 1):
        body = OPEN_DETAILS.sub("<details open", PERMALINK.sub("", page.html))
        heads = [(int(level), _text(text)) for level, text in HEADING.findall(body)]
        title = next((t for lvl, t in heads if lvl == 1), page.title)
        subs = "".join(f"<li>{html.escape(t)}</li>" for lvl, t in heads if lvl == 2)
        toc.append(f'<li><a href="#chapter-{i}">{html.escape(title)}</a>'
                   + (f"<ol class=\"hb-toc-sub\">{subs}</ol>" if subs else "") + "</li>")
        chapters.append(f'<article class="hb-chapter md-typeset" id="chapter-{i}">{body}</article>')
    if primary is not None:
        h, newest = primary.host, primary.newest or {}
        env = newest.get("env", {})
        measured = (f"Measured on {html.escape(h['device'])} ({h['cores']} cores, host "
                    f"<code>{html.escape(h['slug'])}</code>) with torch {html.escape(env.get('torch', '?'))}, "
                    f"latest result {html.escape(newest.get('started_at', '?'))}, "
                    f"commit {html.escape(env.get('git_sha') or 'unknown')}.")
    else:
        measured = "No results yet: run <code>handbook run</code>."
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>The Training Memory Handbook</title>
<link rel="stylesheet" href="assets/katex/katex.min.css">
<link rel="stylesheet" href="assets/print-handbook.css">
</head><body>
<section class="hb-cover">
<h1>The Training Memory Handbook</h1>
<p class="hb-subtitle">Where memory and time go when you train neural networks in PyTorch &mdash;
every number measured on the reader's own hardware.</p>
<p class="hb-measured">{measured}</p>
<p class="hb-built">Printed {dt.date.today().isoformat()}.</p>
</section>
<nav class="hb-toc"><h2>Contents</h2><ol>{''.join(toc)}</ol></nav>
{''.join(chapters)}
</body></html>
"""
    out = site_dir / "handbook.html"
    out.write_text(doc, encoding="utf-8")
    return out


def write_notebooks(site_dir: Path, experiments_dir: Path) -> None:
    """Write each experiment as ``.ipynb`` beside its notebook page, for download."""
    import jupytext

    for src in sorted(experiments_dir.glob("*.py")):
        if src.name.startswith("_"):
            continue
        target = site_dir / "experiments" / src.stem / f"{src.stem}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        jupytext.write(jupytext.read(src, fmt="py:percent"), target, fmt="ipynb")
