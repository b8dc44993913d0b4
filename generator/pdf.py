"""Print a page of the built site to PDF with headless Chromium.

The print is cached by the content of the page and its stylesheets, so an
unchanged page is not printed again; the PDF is written atomically.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from generator.errors import HandbookError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw"]


class PdfError(HandbookError):
    pass


def chromium() -> str:
    wanted = os.environ.get("HANDBOOK_CHROMIUM")
    for name in ([wanted] if wanted else []) + list(CANDIDATES):
        path = shutil.which(name)
        if path:
            return path
    raise PdfError("Chromium was not found (install Debian's 'chromium', or set HANDBOOK_CHROMIUM); "
                   "'make handbook' installs it")


def _fingerprint(page: Path, extra: list[Path]) -> str:
    h = hashlib.sha256(page.read_bytes())
    for p in extra:
        h.update(p.read_bytes())
    return h.hexdigest()[:24]


def print_pdf(page: Path, out: Path, cache_dir: Path, stylesheets: list[Path] = (), timeout_s: int = 180) -> bool:
    """Print ``page`` to ``out``; return False when a cached print of identical input was reused."""
    if not page.exists():
        raise PdfError(f"{page}: the page to print does not exist (did the site build?)")
    key = _fingerprint(page, [p for p in stylesheets if p.exists()])
    cached = cache_dir / f"{out.stem}-{key}.pdf"
    if cached.exists():
        shutil.copyfile(cached, out)
        return False
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="handbook-chromium-") as profile:
        tmp = cache_dir / f".{out.stem}-{key}.pdf.tmp"
        cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={tmp}", page.resolve().as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            tmp.unlink(missing_ok=True)
            raise PdfError(f"Chromium did not finish printing {page} in {timeout_s} s") from None
        if proc.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
            tmp.unlink(missing_ok=True)
            raise PdfError(f"Chromium could not print {page} (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    for old in cache_dir.glob(f"{out.stem}-*.pdf"):
        old.unlink()
    tmp.replace(cached)
    shutil.copyfile(cached, out)
    return True
