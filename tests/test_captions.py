"""Every table and figure of every chapter says where, and at what scale, its numbers were measured.

The numbers in this handbook come from small models on whatever host ran them (a 2-core CPU for the
committed results), and ratios such as a time overhead do not carry to a GPU at full size. So each
caption on the built pages names the host and the model and scale its experiment measured
(``scale_label`` in the experiment's summary); a table of formulas or cited figures says it is not
measured and names its source instead.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from generator.site.results import load_all, pick_primary
from generator.site.summaries import load_experiment, summarize

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p.stem for p in (REPO / "docs").glob("*.md") if p.stem not in ("index", "calculator", "cheatsheet"))
TABLE = re.compile(r"<table>(.*?)</table>(\s*<p>\s*<span class=\"hb-caption ([^\"]*)\">(.*?)</span>\s*</p>)?", re.S)
FIGURE = re.compile(r'<figure class="hb-figure">.*?</figure>', re.S)
CAPTION = re.compile(r"<figcaption>(.*?)</figcaption>", re.S)
TAGS = re.compile(r"<[^>]+>")


def _text(fragment: str) -> str:
    return " ".join(html.unescape(TAGS.sub(" ", fragment)).split())


@pytest.fixture(scope="module")
def primary(built_site: Path) -> dict:
    """The host the built pages speak for, and the scale label of each of its experiments."""
    results = built_site.parent / "results"
    hosts = load_all(results)
    host = hosts[pick_primary(hosts, Path("/nonexistent"), None)]
    scales = {}
    for name, run in host.runs.items():
        if run.ok:  # the summary's scale_label; an experiment's own scale_label() where it has one is the same, faster
            label = getattr(load_experiment(name), "scale_label", None)
            data = run.good["data"]
            scales[name] = label(data) if label else summarize(name, data, name)["scale_label"]
    return {"host": host.host, "scales": scales}


def _article(built_site: Path, chapter: str) -> str:
    """The chapter's own content: the page's article without the provenance footer."""
    page = (built_site / chapter / "index.html").read_text(encoding="utf-8")
    article = page[page.index('<article class="md-content__inner'):page.index("</article>")]
    return article.split('<div class="hb-provenance">')[0]


def _names_host_and_scale(text: str, primary: dict) -> bool:
    return primary["host"]["device"] in text and any(label in text for label in primary["scales"].values())


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_table_and_figure_names_host_and_scale(built_site: Path, primary: dict, chapter: str) -> None:
    article = _article(built_site, chapter)
    tables, figures = TABLE.findall(article), FIGURE.findall(article)
    assert tables or figures, f"{chapter}: no table or figure found (did the page change its markup?)"
    assert len(tables) == article.count("<table>"), f"{chapter}: a table the check did not parse"
    leaked = [_text(p) for p in re.findall(r"<p>(.*?)</p>", article, re.S) if _text(p).endswith(" |")]
    assert not leaked, f"{chapter}: a table row printed as text (a line break inside a row?): {leaked[0][:120]!r}"
    for i, (body, caption, kind, text) in enumerate(tables):
        head = _text(body.split("</tr>")[0])[:80]
        assert caption, f"{chapter}: table {i} ({head}) has no caption right after it"
        text = _text(text)
        if "hb-caption-source" in kind:
            assert text.startswith("From ") and text.endswith("not measured here."), (chapter, head, text)
        else:
            assert _names_host_and_scale(text, primary), f"{chapter}: table {i} ({head}): {text!r}"
    for i, fig in enumerate(figures):
        caption = CAPTION.search(fig)
        assert caption, f"{chapter}: figure {i} has no caption"
        assert _names_host_and_scale(_text(caption.group(1)), primary), f"{chapter}: figure {i}: {caption.group(1)!r}"


def test_a_caption_names_its_own_experiment_scale(built_site: Path, primary: dict) -> None:
    """The checkpointing chapter's figure names the checkpointing model (its layers and parameters)."""
    fig = FIGURE.search(_article(built_site, "04-checkpointing")).group(0)
    data = json.loads(next((built_site.parent / "results").glob("*/checkpointing.json")).read_text())["data"]
    text = _text(CAPTION.search(fig).group(1))
    assert primary["scales"]["checkpointing"] in text
    assert f"{data['model']['layers']}-layer" in text and f"{data['model']['params']:,} params" in text


def test_every_experiment_summary_has_a_scale_label(primary: dict) -> None:
    for name, label in primary["scales"].items():
        assert isinstance(label, str) and any(ch.isdigit() for ch in label), f"{name}: scale_label {label!r}"
        assert "not recorded" not in label, f"{name}: its committed result lacks what scale_label reads"


def test_the_check_catches_a_table_without_a_caption() -> None:
    page = "<table><tr><th>a</th></tr></table>\n<p>text</p><table><tr><th>b</th></tr></table>\n<p><span " \
           'class="hb-caption hb-caption-measured">Measured on X</span></p>'
    found = TABLE.findall(page)
    assert [bool(c) for _, c, _, _ in found] == [False, True]
