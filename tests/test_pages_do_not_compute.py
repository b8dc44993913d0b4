"""Pages read results and format them; they never compute (DESIGN.md, "Data flow").

Arithmetic or aggregation inside a page's Jinja would be a second place where a number is made:
derived figures (ratios, sums, halves, maxima) belong in the experiment's data, beside the
measurements they come from.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "experiments" not in p.parts)
EXPRESSION = re.compile(r"\{\{(.*?)\}\}|\{%-?\s*(?:set|if|elif)\b(.*?)-?%\}", re.S)
STRINGS = re.compile(r"\"[^\"]*\"|'[^']*'")
ARITHMETIC = re.compile(r"[\w)\]]\s*(?:[-+*/%]|//|\*\*)\s*[\w(]")
AGGREGATES = re.compile(r"\|\s*(?:max|min|sum|round|abs)\b")


def computations(text: str) -> list[str]:
    found = []
    for match in EXPRESSION.finditer(text):
        expr = STRINGS.sub('""', match.group(1) or match.group(2) or "")
        if ARITHMETIC.search(expr) or AGGREGATES.search(expr):
            found.append(" ".join((match.group(0)).split())[:120])
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_does_not_compute(page: Path) -> None:
    assert computations(page.read_text(encoding="utf-8")) == []


def test_the_check_catches_arithmetic() -> None:
    assert computations("{{ (a.x / a.y) | ratio }}") and computations("{% set n = a.x + 1 %}")
    assert computations("{{ rows | map(attribute='v') | max }}")
    assert not computations("{{ a.x_ratio | ratio }} {{ name | replace('_', ' ') }} {% if a.ok %}")
    assert not computations('{{ "one input per " ~ row.k ~ "-layer segment" }}')


SEARCHES = re.compile(r"\|\s*selectattr\b|\|\s*rejectattr\b")
GUARDS = re.compile(r"""(?:["'][\w.-]+["']|\b[a-z_]\w*)\s+(?:not\s+)?in\s+(?:r|h\.r|h\.runs|[a-z_]\w*)\b(?!\s*\|)""")
LABEL_MAPS = re.compile(r"\{%-?\s*set\s+\w+\s*=\s*\{")


def workarounds(text: str) -> list[str]:
    """Places where a page works around the data: list searches, ``in`` guards, label maps."""
    found = []
    for match in EXPRESSION.finditer(text):
        expr = match.group(1) or match.group(2) or ""
        if SEARCHES.search(expr) or GUARDS.search(STRINGS.sub(lambda m: m.group(0) if re.fullmatch(
                r"""["'][\w.-]+["']""", m.group(0)) else '""', expr)) or LABEL_MAPS.match(match.group(0)):
            found.append(" ".join(match.group(0).split())[:120])
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_reads_the_data_as_it_is(page: Path) -> None:
    """Keyed data and labels in the summary: no searching lists, no ``in`` guards, no label maps."""
    assert workarounds(page.read_text(encoding="utf-8")) == []


def test_the_check_catches_workarounds() -> None:
    assert workarounds('{% set a = rows | selectattr("name", "equalto", "x") | first %}')
    assert workarounds('{% if "hardware" in r %}x{% endif %}')
    assert workarounds('{{ "yes" if "fp32" in h.r.hardware.matmul else "no" }}')
    assert workarounds('{% set labels = {"a": "b"} %}')
    assert not workarounds("{% for name, row in summary.x.rows.items() %}{{ row.label }}{% endfor %}")
    assert not workarounds("{% for h in hosts %}{{ h.slug }}{% endfor %}")
