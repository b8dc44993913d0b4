"""The print edition: one HTML page holding the whole handbook, for Chromium to print.

The chapters' rendered HTML (math and figures already in) is set after a
cover and a table of contents, each chapter on a new page. No JavaScript is
needed to print it.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

from markupsafe import Markup

HEADING = re.compile(r"<h([12])[^>]*>(.*?)</h\1>", re.S)
TAGS = re.compile(r"<[^>]+>")
OPEN_DETAILS = re.compile(r"<details(?![^>]*\bopen\b)")  # drills print with their answers
PERMALINK = re.compile(r'<a class="headerlink"[^>]*>.*?</a>', re.S)
CHAPTER_NUMBER = re.compile(r"^(\d+)-")  # docs/01-where-the-memory-goes.md is chapter 01, as on the site


def _text(fragment: str) -> str:
    return html.unescape(TAGS.sub("", PERMALINK.sub("", fragment))).strip()


def write_handbook_html(site_dir: Path, pages: list, snippets, cover: dict) -> Path:
    """Write ``site/handbook.html`` from the printed pages, in nav order, after the cover.

    The contents number a chapter as its file does (``01-...md`` is 01), so the print edition and the
    site agree; pages without a number (home, calculator, hardware) are listed unnumbered.
    """
    chapters = []
    for page in pages:
        body = OPEN_DETAILS.sub("<details open", PERMALINK.sub("", page.html))
        heads = [(int(level), _text(text)) for level, text in HEADING.findall(body)]
        title = next((t for lvl, t in heads if lvl == 1), page.title)
        numbered = CHAPTER_NUMBER.match(page.src_uri)
        chapters.append({"title": title, "number": numbered.group(1) if numbered else None,
                         "subs": [t for lvl, t in heads if lvl == 2], "body": Markup(body)})
    out = site_dir / "handbook.html"
    out.write_text(snippets.get_template("handbook.html.j2").render(chapters=chapters, **cover), encoding="utf-8")
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
