"""``make bench``: test-suite and whole-build timings on this machine, and what each experiment costs.

0. the whole test suite (``make test``'s pytest, target 90 s) and its fast tier (``-m fast``, 30 s);
1. a cold ``handbook build``: empty results folder, no caches;
2. the same build again with nothing changed;
3. the build after one page's text changed (the page is restored afterwards);
then each experiment's run time from its result, grouped by the page that reads it, and the
response time of ``handbook estimate``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from generator.runner import REPO

TARGETS_S = {"cold": 90.0, "nothing changed": 5.0, "one page changed": 10.0}
SUITE_TARGETS_S = {"whole test suite": 90.0, "fast tier (-m fast)": 30.0}
PAGE = REPO / "docs" / "01-where-the-memory-goes.md"


def _build(results: Path, site: Path) -> float:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "generator", "build", "--plain", "--results", str(results),
                           "--site-dir", str(site)], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n", file=sys.stderr)
        print(f"(the build exited with status {proc.returncode}; its time is still reported)", file=sys.stderr)
    return seconds


def _pages_reading(names: list[str]) -> dict[str, list[str]]:
    pages: dict[str, list[str]] = {}
    for page in sorted((REPO / "docs").glob("*.md")):
        used = sorted(set(re.findall(r"\br\.([a-z_][a-z0-9_]*)", page.read_text(encoding="utf-8"))) & set(names))
        if used:
            pages[page.name] = used
    return pages


def _suite(args: list[str]) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "auto",
                           "--dist", "loadfile", *args], cwd=REPO,
                          capture_output=True, text=True, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    seconds = time.monotonic() - t0
    lines = proc.stdout.strip().splitlines()
    return seconds, lines[-1] if lines else f"exit status {proc.returncode}"


def main() -> int:
    suites = {"whole test suite": _suite([]), "fast tier (-m fast)": _suite(["-m", "fast"])}
    print("Test suite timings on this machine:")
    for name, (seconds, last) in suites.items():
        verdict = "ok" if seconds <= SUITE_TARGETS_S[name] else "OVER TARGET"
        print(f"  {name:<20} {seconds:6.1f} s   (target <= {SUITE_TARGETS_S[name]:.0f} s: {verdict})  {last}")
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="handbook-bench-") as tmp:
        results, site = Path(tmp) / "results", Path(tmp) / "site"
        shutil.rmtree(REPO / ".cache", ignore_errors=True)
        timings["cold"] = _build(results, site)
        timings["nothing changed"] = _build(results, site)
        original = PAGE.read_text(encoding="utf-8")
        try:
            PAGE.write_text(original + "\n<!-- bench: one page changed -->\n", encoding="utf-8")
            timings["one page changed"] = _build(results, site)
        finally:
            PAGE.write_text(original, encoding="utf-8")
        durations = {p.stem: json.loads(p.read_text())["duration_s"] for p in results.glob("*/*.json")
                     if not p.name.endswith(".failed.json")}
        failed = sorted(p.name for p in results.glob("*/*.failed.json"))

    print("\nWhole-build timings on this machine (2 cores here):")
    for name, seconds in timings.items():
        verdict = "ok" if seconds <= TARGETS_S[name] else "OVER TARGET"
        print(f"  {name:<18} {seconds:6.1f} s   (target <= {TARGETS_S[name]:.0f} s: {verdict})")
    print("\nQuick-profile run time per experiment, by the page that reads it:")
    for page, names in _pages_reading(sorted(durations)).items():
        total = sum(durations[n] for n in names)
        parts = ", ".join(f"{n} {durations[n]:.1f} s" for n in names)
        print(f"  {page:<38} {total:6.1f} s  ({parts})")
    print(f"  {'all experiments':<38} {sum(durations.values()):6.1f} s")
    if failed:
        print(f"  failed: {', '.join(failed)}")
    if (REPO / "generator" / "estimate.py").exists():
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "generator", "estimate", "--model", "llama-2-7b", "--optimizer",
                        "adamw", "--json"], cwd=REPO, capture_output=True, check=False)
        print(f"\nhandbook estimate (whole process): {time.monotonic() - t0:.2f} s (target < 0.3 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
