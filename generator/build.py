"""``handbook build`` and ``handbook serve``: the site and its two PDFs from the results.

A build whose inputs (pages, experiment sources, results, generator code,
mkdocs.yml, the chosen host) are unchanged since the last one is skipped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from generator import pdf
from generator.errors import HandbookError
from generator.runner import REPO


class BuildRefused(HandbookError):
    """The build will not write where it was asked to."""

CACHE = REPO / ".cache"
STAMP = CACHE / "build-stamp.json"
MARKER = ".handbook-site"  # in every site folder the build made; mkdocs' clean step keeps dot files


def check_site_dir(site_dir: Path) -> None:
    """Refuse to build into (and so empty) a folder that the build did not create."""
    if site_dir.exists() and not site_dir.is_dir():
        raise BuildRefused(f"{site_dir}: --site-dir is a file, not a folder")
    earlier_build = (site_dir / "handbook.html").is_file() and (site_dir / "search" / "search_index.json").is_file()
    if site_dir.is_dir() and any(site_dir.iterdir()) and not (site_dir / MARKER).exists() and not earlier_build:
        raise BuildRefused(f"{site_dir}: --site-dir holds files that a handbook build did not write; "
                           f"the build empties its site folder, so it refuses this one (pick a new or empty folder)")


def _inputs_fingerprint(results_dir: Path, host: str | None, site_dir: Path) -> str:
    h = hashlib.sha256(json.dumps([str(results_dir.resolve()), host, str(site_dir.resolve())]).encode())
    roots = [REPO / "docs", REPO / "experiments", REPO / "generator", results_dir]
    files = [REPO / "mkdocs.yml"]
    for root in roots:
        if root.exists():
            files += [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                      and not p.name.startswith(".this-host")]
    for p in sorted(set(files)):
        h.update(str(p).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _settings(results_dir: Path, host: str | None) -> None:
    os.environ["HANDBOOK_RESULTS"] = str(Path(results_dir).resolve())
    if host:
        os.environ["HANDBOOK_HOST"] = host
    else:
        os.environ.pop("HANDBOOK_HOST", None)
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")


def build(results_dir: Path, host: str | None = None, site_dir: Path = Path("site"), pdf_too: bool = True,
          force: bool = False) -> dict[str, Path]:
    """Build the site (and the PDFs) unless nothing changed; return what was written."""
    site_dir = Path(site_dir).resolve()
    check_site_dir(site_dir)
    outputs = {"site": site_dir / "index.html"}
    if pdf_too:
        outputs["handbook"] = site_dir / "handbook.pdf"
        outputs["cheatsheet"] = site_dir / "cheatsheet.pdf"
    key = _inputs_fingerprint(Path(results_dir), host, site_dir)
    stamp = json.loads(STAMP.read_text()) if STAMP.exists() else {}
    if not force and stamp.get("key") == key and all(p.exists() for p in outputs.values()):
        print(f"handbook: nothing changed since the last build; the site is in {site_dir}")
        _report(outputs)
        return outputs

    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    check_results(Path(results_dir), host)
    _settings(Path(results_dir), host)
    _log_warnings()
    old_pdfs = [p for p in (site_dir / "handbook.pdf", site_dir / "cheatsheet.pdf") if p.exists()]
    t0 = time.monotonic()
    config = load_config(str(REPO / "mkdocs.yml"), site_dir=str(site_dir))
    mkdocs_build(config)
    (site_dir / MARKER).write_text("written by handbook build; the next build may empty this folder\n")
    if not pdf_too and old_pdfs:
        print(f"handbook: --no-pdf: the PDFs of the previous build were removed with the old site "
              f"({', '.join(p.name for p in old_pdfs)}); build without --no-pdf to print them again")
    print(f"handbook: site built in {time.monotonic() - t0:.1f} s")
    if pdf_too:
        t0 = time.monotonic()
        css = REPO / "docs" / "assets"
        pdf.print_pdf(site_dir / "handbook.html", outputs["handbook"], CACHE / "pdf",
                      [css / "print-handbook.css", css / "katex" / "katex.min.css"])
        pdf.print_pdf(site_dir / "cheatsheet" / "index.html", outputs["cheatsheet"], CACHE / "pdf",
                      [css / "handbook.css"])
        print(f"handbook: PDFs printed in {time.monotonic() - t0:.1f} s")
    CACHE.mkdir(exist_ok=True)
    STAMP.write_text(json.dumps({"key": key}))
    _report(outputs)
    return outputs


def check_results(results_dir: Path, host: str | None) -> None:
    """Load every result and derive its summary before mkdocs starts: a bad file is one line, ours."""
    from generator.site.results import attach_summaries, load_all, pick_primary

    hosts = load_all(results_dir)
    pick_primary(hosts, results_dir, host)
    attach_summaries(hosts, results_dir)


def _log_warnings() -> None:
    """Show mkdocs' warnings and errors (the strict build fails on them), not its chatter."""
    log = logging.getLogger("mkdocs")
    log.setLevel(logging.WARNING)
    if not any(getattr(h, "_handbook", False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-7s -  %(message)s"))
        handler._handbook = True
        log.addHandler(handler)


def _report(outputs: dict[str, Path]) -> None:
    labels = {"site": "site", "handbook": "handbook PDF", "cheatsheet": "cheat sheet"}
    for name, path in outputs.items():
        print(f"  {labels[name]:<13} {path}")


def serve(results_dir: Path, host: str | None, addr: str) -> None:
    """Serve the site with live reload; the hook also watches the results folder."""
    from mkdocs.commands.serve import serve as mkdocs_serve

    check_results(Path(results_dir), host)
    _settings(Path(results_dir), host)
    _log_warnings()
    print(f"handbook: serving the site on http://{addr}/ (live reload; Ctrl-C stops)", flush=True)
    mkdocs_serve(config_file=str(REPO / "mkdocs.yml"), dev_addr=addr, livereload=True)
