"""The printed cheat sheet: two full A4 landscape pages that carry what a reader sizes a run with.

Chromium prints ``site/cheatsheet/index.html`` with the page's own print CSS, so a reader who prints the
page from a browser gets the same two pages. Page 1 holds the rules and measurements; page 2 the
when-to-use table, will-it-fit on the peak, card capacities and ZeRO. Checked on the PDF itself
(``pdftotext`` page by page, ``-bbox`` for where the text starts).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from generator.site.formatting import bytes_, grouped
from generator.site.results import load_all, pick_primary
from generator.site.summaries import summarize

MM = 72 / 25.4  # PDF points per millimetre


def _page_text(pdf: Path, page: int, layout: bool = False) -> str:
    """The text of one page, whitespace collapsed; ``layout`` keeps a table's row on one line."""
    out = subprocess.run(["pdftotext", *(["-layout"] if layout else []), "-f", str(page), "-l", str(page), str(pdf),
                          "-"], capture_output=True, text=True, check=True).stdout
    return " ".join(out.split())


def _pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))


@pytest.fixture(scope="module")
def summaries(built_site: Path) -> dict:
    """The summaries of the two experiments these checks read, from the results the sheet was built from."""
    hosts = load_all(built_site.parent / "results")
    runs = hosts[pick_primary(hosts, Path("/nonexistent"), None)].runs
    return {n: summarize(n, runs[n].good["data"], n) for n in ("optimizer_state", "named_models")}


@pytest.fixture(scope="module")
def sheet(built_site: Path) -> dict:
    pdf = built_site / "cheatsheet.pdf"
    pages = _pages(pdf)
    return {"pdf": pdf, "pages": pages, "text": [_page_text(pdf, i) for i in range(1, pages + 1)],
            "html": (built_site / "cheatsheet" / "index.html").read_text(encoding="utf-8")}


def test_two_full_balanced_pages(sheet: dict) -> None:
    assert sheet["pages"] == 2, f"the cheat sheet printed on {sheet['pages']} pages"
    one, two = (len(t) for t in sheet["text"])
    assert two >= one / 2, f"page 2 carries {two} characters of text against page 1's {one}"


def test_no_blank_band_above_the_title_and_no_web_only_line(sheet: dict) -> None:
    words = subprocess.run(["pdftotext", "-bbox", "-f", "1", "-l", "1", str(sheet["pdf"]), "-"], capture_output=True,
                           text=True, check=True).stdout
    first = re.search(r'<word xMin="[\d.]+" yMin="([\d.]+)"[^>]*>([^<]*)</word>', words)
    assert first.group(2) == "Cheat", "the sheet starts with its title"
    assert float(first.group(1)) < 12 * MM, f"the title starts {float(first.group(1)) / MM:.1f} mm below the top"
    assert "Print this page" in sheet["html"], "the web page still says how to print it"
    assert "Print this page" not in " ".join(sheet["text"]), "the web-only line is not printed"


def test_one_amp_loop(sheet: dict) -> None:
    text = " ".join(sheet["text"])
    assert text.count("scaler.scale(loss).backward()") == 1, "the accumulation and AMP loops are one block"
    assert "scaler.unscale_(optimizer)" in text and "/ k" in text


def test_page_one_says_where_and_at_what_scale(sheet: dict, summaries: dict) -> None:
    ref = summaries["optimizer_state"]["scale_label"]
    first = sheet["text"][0]
    assert "Measured on" in first and ref in first
    assert "time ratios were measured at this scale only" in first


def test_page_one_carries_the_rules(sheet: dict, summaries: dict) -> None:
    first = sheet["text"][0]
    for heading in ("Update rules", "Gradient accumulation and the AMP loop", "Bytes per parameter",
                    "The peak rule", "Activations per layer", "Checkpointing", "Number formats"):
        assert heading in first, heading
    regimes = summaries["optimizer_state"]["precision"]
    assert "amp-autocast" in first and "mixed-master" in first and "pure-bf16" in first
    assert f"{regimes['mixed-master']['total_bytes_per_param']:.1f}" in first


def test_page_two_carries_the_sizing(sheet: dict, summaries: dict) -> None:
    second = sheet["text"][1]
    assert "When to use what" in second and "when it is the right choice" in second
    for technique in ("gradient accumulation", "selective checkpointing", "full checkpointing", "autocast (bf16)",
                      "master weights", "8-bit optimizer state", "ZeRO-1", "ZeRO-2", "ZeRO-3", "activation offload",
                      "LoRA"):
        assert technique in second, technique
    n = summaries["named_models"]
    assert "Will it fit?" in second and bytes_(n["models"]["llama-2-7b"]["setups"]["zero3"]["peak_bytes"]) in second
    rows = _page_text(sheet["pdf"], 2, layout=True)
    for g in n["gpus"]:  # card capacities as the driver reports them, and what is left after the context
        assert f"{g['name']} {grouped(g['capacity_mib'])} MiB {bytes_(g['usable_bytes'])}" in rows, g["name"]
    assert bytes_(n["headroom_bytes"]) in second
    assert "ZeRO per device" in second
