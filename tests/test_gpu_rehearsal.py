"""The rehearsal's second host: a GPU plan's unpacked results join the committed ones under their own slug,
files kept beside a result included."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator import gpu_rehearsal

pytestmark = pytest.mark.fast


def _env(slug: str, name: str) -> dict:
    return {"experiment": name, "host": {"slug": slug}, "data": {}}


def test_second_host_keeps_results_and_their_files(tmp_path: Path) -> None:
    committed = tmp_path / "committed"
    (committed / "cpu-a").mkdir(parents=True)
    (committed / "cpu-a" / "x.json").write_text(json.dumps(_env("cpu-a", "x")))
    unpacked = tmp_path / "unpacked"
    run = unpacked / "results" / "cpu-a"
    (run / "x.files").mkdir(parents=True)
    (run / "x.json").write_text(json.dumps(_env("cpu-a", "x")))
    (run / "x.files" / "snap.pickle").write_bytes(b"\x80\x04snapshot")
    site = tmp_path / "site-results"
    new = gpu_rehearsal.second_host(committed, unpacked, "cpu-a", site)
    assert new == "rehearsal-cpu-a"   # the committed host keeps its slug
    assert json.loads((site / new / "x.json").read_text())["host"]["slug"] == new
    assert (site / new / "x.files" / "snap.pickle").read_bytes() == b"\x80\x04snapshot"
    assert (site / "cpu-a" / "x.json").exists()
