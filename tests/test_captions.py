"""Every table and figure of every chapter says where, and at what scale, its numbers were measured.

The numbers in this handbook come from small models on whatever host ran them (a 2-core CPU for the
committed results), and ratios such as a time overhead do not carry to a GPU at full size. So each
caption on the built pages names the host and the model and scale its experiment measured
(``scale_label`` in the experiment's summary); a table of formulas or cited figures says it is not
measured and names its source instead.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from generator.site.results import attach_summaries, load_all, pick_primary

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p.stem for p in (REPO / "docs").glob("*.md") if p.stem not in ("index", "calculator", "cheatsheet"))


@pytest.fixture(scope="module")
def primary(built_site: Path) -> dict:
    """The host the built pages speak for, and every scale label of its experiments."""
    results = built_site.parent / "results"
    hosts = load_all(results)
    attach_summaries(hosts, results)
    slug = pick_primary(hosts, Path("/nonexistent"), None)
    host = hosts[slug]
    scales = {name: run.summary["scale_label"] for name, run in host.runs.items() if run.ok}
    return {"host": host.host, "scales": scales}


def _content(built_site: Path, chapter: str) -> BeautifulSoup:
    html = (built_site / chapter / "index.html").read_text(encoding="utf-8")
    return BeautifulSoup(html, "html.parser").select_one("article.md-content__inner")


def _caption_after(table) -> object | None:
    """The caption a table carries: the paragraph right after it, made of one ``.hb-caption`` span."""
    sibling = table.find_next_sibling()
    if sibling is None or sibling.name != "p":
        return None
    span = sibling.find("span", class_="hb-caption", recursive=False)
    return span if span is not None and " ".join(sibling.get_text(" ").split()) == " ".join(
        span.get_text(" ").split()) else None


def _names_host_and_scale(text: str, primary: dict) -> bool:
    host = primary["host"]
    return host["device"] in text and any(label in text for label in primary["scales"].values())


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_table_and_figure_names_host_and_scale(built_site: Path, primary: dict, chapter: str) -> None:
    article = _content(built_site, chapter)
    tables = [t for t in article.find_all("table") if not t.find_parent(class_="hb-provenance")]
    figures = article.find_all("figure", class_="hb-figure")
    assert tables or figures, f"{chapter}: no table or figure found (did the page change its markup?)"
    for i, table in enumerate(tables):
        caption = _caption_after(table)
        head = " ".join(table.find("tr").get_text(" ").split())[:80]
        assert caption is not None, f"{chapter}: table {i} ({head}) has no caption"
        text = " ".join(caption.get_text(" ").split())
        if "hb-caption-source" in caption["class"]:
            assert text.endswith("not measured here.") and text.startswith("From "), (chapter, head, text)
        else:
            assert _names_host_and_scale(text, primary), f"{chapter}: table {i} ({head}): {text!r}"
    for i, fig in enumerate(figures):
        caption = fig.find("figcaption")
        assert caption is not None, f"{chapter}: figure {i} has no caption"
        text = " ".join(caption.get_text(" ").split())
        assert _names_host_and_scale(text, primary), f"{chapter}: figure {i}: {text!r}"


def test_a_caption_names_its_own_experiment_scale(built_site: Path, primary: dict) -> None:
    """The checkpointing chapter's figure names the checkpointing model (its layers and parameters)."""
    fig = _content(built_site, "04-checkpointing").find("figure", class_="hb-figure")
    data = json.loads(next((built_site.parent / "results").glob("*/checkpointing.json")).read_text())["data"]
    text = " ".join(fig.find("figcaption").get_text(" ").split())
    assert primary["scales"]["checkpointing"] in text
    assert f"{data['model']['layers']}-layer" in text and f"{data['model']['params']:,} params" in text


def test_every_experiment_summary_has_a_scale_label(primary: dict) -> None:
    for name, label in primary["scales"].items():
        assert isinstance(label, str) and any(ch.isdigit() for ch in label), f"{name}: scale_label {label!r}"
