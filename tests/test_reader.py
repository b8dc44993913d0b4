"""Real readers: headless Chromium on the built site, and the two PDFs."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from generator.site.formatting import bytes_, num

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGES = ["", "01-where-the-memory-goes/", "hardware/", "cheatsheet/"]


@pytest.fixture(scope="module")
def server(built_site: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(built_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        pytest.fail("Chromium is not installed ('make setup' installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                               "--disable-background-networking"])
        yield b
        b.close()


def primary_run(name: str):
    """The committed result the site's prose uses (the host with most results, as the site picks)."""
    from generator.site.results import attach_summaries, load_all, pick_primary

    hosts = load_all(REPO / "results")
    attach_summaries(hosts, REPO / "results")
    slug = pick_primary(hosts, Path("/nonexistent"), None)
    return hosts[slug].runs[name]


def primary_data(name: str) -> dict:
    return primary_run(name).good["data"]


def primary_summary(name: str) -> dict:
    return primary_run(name).summary


@pytest.mark.parametrize("path", PAGES)
def test_page_loads_cleanly_and_offline(browser, server: str, path: str) -> None:
    page = browser.new_page()
    errors, outside, failed = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((server, "data:", "blob:")) else None)
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(server + path, wait_until="networkidle")
    assert errors == [], f"console errors on /{path}: {errors}"
    assert outside == [], f"requests that leave the site from /{path}: {outside}"
    assert failed == [], f"failed requests on /{path}: {failed}"
    broken = page.eval_on_selector_all("img", "els => els.filter(e => !e.complete || e.naturalWidth === 0)"
                                              ".map(e => e.src)")
    assert broken == [], f"images that did not load on /{path}: {broken}"
    page.close()


def test_chapter_shows_figures_math_and_numbers(browser, server: str) -> None:
    page = browser.new_page()
    page.goto(server + "01-where-the-memory-goes/", wait_until="networkidle")
    assert page.locator(".hb-figure svg").count() >= 2
    assert page.locator(".katex").count() > 0
    adam = primary_data("optimizer_state")["optimizers"]["adam"]["foreach"]
    assert bytes_(adam["state_bytes"]) in page.inner_text("article")
    assert "Measured on" in page.inner_text(".hb-provenance")
    page.close()


def test_search_dark_mode_and_copy_buttons(browser, server: str) -> None:
    page = browser.new_page()
    page.goto(server, wait_until="networkidle")
    assert page.locator("button[data-md-type='copy']").count() > 0, "code blocks have copy buttons"
    scheme = page.get_attribute("body", "data-md-color-scheme")
    page.locator("label.md-header__button[for^='__palette']").first.click()
    assert page.get_attribute("body", "data-md-color-scheme") != scheme, "the palette toggle switches the scheme"
    search = page.locator("input.md-search__input")
    search.click()
    search.press_sequentially("optimizer", delay=30)  # the search listens to key events
    page.wait_for_selector(".md-search-result__item", timeout=15000)
    assert "matching documents" in page.inner_text(".md-search-result__meta")
    page.close()


def _pdf(path: Path) -> tuple[dict, str]:
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    return {k.strip(): v.strip() for k, v in fields.items()}, " ".join(text.split())


def test_handbook_pdf(built_site: Path) -> None:
    info, text = _pdf(built_site / "handbook.pdf")
    assert int(info["Pages"]) >= 8, "cover, contents and every chapter"
    assert "The Training Memory Handbook" in text and "Contents" in text
    data = primary_data("optimizer_state")
    assert bytes_(data["optimizers"]["adam"]["foreach"]["state_bytes"]) in text
    assert f"{data['model']['parameters']:,}" in text
    assert "Drills" in text and "Measured on" in text


def test_cheatsheet_pdf_fits_two_landscape_pages(built_site: Path) -> None:
    info, text = _pdf(built_site / "cheatsheet.pdf")
    assert int(info["Pages"]) <= 2, f"the cheat sheet has {info['Pages']} pages"
    width, _, height = info["Page size"].split()[:3]
    assert float(width) > float(height), "landscape"
    assert "A4" in info["Page size"]
    regimes = primary_summary("optimizer_state")["precision"]
    assert num(regimes["pure-bf16"]["total_bytes_per_param"]) in text
    assert "Cheat sheet" in text


def test_notebook_pages_are_downloadable(built_site: Path) -> None:
    nb = built_site / "experiments" / "optimizer_state" / "optimizer_state.ipynb"
    cells = json.loads(nb.read_text())["cells"]
    assert any("def run(" in "".join(c["source"]) for c in cells)
    assert (built_site / "experiments" / "optimizer_state" / "index.html").exists()
    chapter = built_site / "01-where-the-memory-goes" / "index.html"
    import re

    href = re.search(r'href="([^"]*optimizer_state\.ipynb)"', chapter.read_text()).group(1)
    assert (chapter.parent / href).resolve() == nb.resolve(), "the chapter links to the downloadable notebook"
