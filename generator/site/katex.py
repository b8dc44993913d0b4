"""Math rendered to HTML at build time with the vendored KaTeX, run inside quickjs.

pymdownx.arithmatex (generic mode) leaves ``\\(...\\)`` and ``\\[...\\]`` in
marked spans and divs; this replaces them with KaTeX's HTML, so neither the
site nor the PDF needs JavaScript for math.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

KATEX_JS = Path(__file__).resolve().parents[2] / "docs" / "assets" / "katex" / "katex.min.js"
INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
DISPLAY = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


class MathError(ValueError):
    pass


class Katex:
    def __init__(self) -> None:
        import quickjs

        self._ctx = quickjs.Context()
        self._ctx.eval(KATEX_JS.read_text(encoding="utf-8"))
        self._render = self._ctx.eval(
            "(function (tex, display) { return katex.renderToString(tex, "
            "{displayMode: display, throwOnError: true, output: 'htmlAndMathml'}); })")
        self._cache: dict[tuple[str, bool], str] = {}

    def render(self, tex: str, display: bool) -> str:
        key = (tex, display)
        if key not in self._cache:
            try:
                self._cache[key] = self._render(tex, display)
            except Exception as exc:  # quickjs.JSException: KaTeX's parse error
                raise MathError(f"cannot render {tex!r}: {exc}") from None
        return self._cache[key]

    def render_html(self, page_html: str) -> str:
        page_html = DISPLAY.sub(lambda m: self.render(html.unescape(m.group(1)).strip(), True), page_html)
        return INLINE.sub(lambda m: self.render(html.unescape(m.group(1)).strip(), False), page_html)
