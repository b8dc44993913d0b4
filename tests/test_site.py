"""The site side on mini sites: numbers rendered, errors named, input escaped, failures shown."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TEST_HOST, build_site, make_envelope, site_text, write_result

DATA = {"model": {"parameters": 1234567, "state_bytes": 3 * 2**20}, "ratio": 1.0, "series": [1.5, 2.5]}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    res = tmp_path / "results"
    write_result(res, make_envelope("optimizer_state", DATA))
    return res


def test_numbers_from_the_json_reach_the_page(tmp_path: Path, results: Path) -> None:
    page = ("# Numbers\n\n## Against $K$\n\nParams {{ r.optimizer_state.model.parameters | grouped }}, state "
            "{{ r.optimizer_state.model.state_bytes | bytes }}, ratio {{ r.optimizer_state.ratio | ratio }}.\n\n"
            "{% for x in r.optimizer_state.series %}- {{ x | num }}\n{% endfor %}\n"
            "Inline $a^2$ and\n\n$$\n\\frac{a}{b}\n$$\n")
    proc = build_site(tmp_path, results, {"index.md": page})
    assert proc.returncode == 0, proc.stderr
    text = site_text(tmp_path / "site", "index.html")
    assert "Params 1,234,567, state 3.00 MiB, ratio 1.00×." in " ".join(text.split())
    assert "1.50" in text and "2.50" in text
    raw = (tmp_path / "site" / "index.html").read_text()
    assert 'class="katex-display"' in raw and 'class="katex"' in raw, "math is rendered at build time"
    assert "arithmatex" not in raw
    assert "Against K" in raw and "Against \\(K\\)" not in raw, "math in a heading reads plainly in the contents"
    # provenance of the experiment the page read
    assert "Measured on" in text and TEST_HOST["slug"] in text and "2.13.0" in text and "abc123def456" in text
    assert "2026-11-22T10:00:00+00:00" in text


def test_missing_key_fails_naming_page_line_and_key(tmp_path: Path, results: Path) -> None:
    page = "# Oops\n\nfine\n\n{{ r.optimizer_state.model.no_such_key }}\n"
    proc = build_site(tmp_path, results, {"oops.md": page, "index.md": "# Home\n"})
    assert proc.returncode != 0
    assert "docs/oops.md line 5" in proc.stderr and "'no_such_key'" in proc.stderr
    assert "parameters" in proc.stderr, "the error lists the keys that do exist"


def test_unknown_experiment_fails_the_build(tmp_path: Path, results: Path) -> None:
    proc = build_site(tmp_path, results, {"index.md": "{{ r.no_such_experiment.x }}"})
    assert proc.returncode != 0 and "no experiment named 'no_such_experiment'" in proc.stderr


def test_device_name_is_escaped(tmp_path: Path) -> None:
    res = tmp_path / "results"
    host = dict(TEST_HOST, device="<script>alert(1)</script> GPU")
    write_result(res, make_envelope("optimizer_state", DATA, host=host))
    proc = build_site(tmp_path, res, {"index.md": "# X\n\nOn {{ host.device }}: {{ r.optimizer_state.ratio }}\n"})
    assert proc.returncode == 0, proc.stderr
    raw = (tmp_path / "site" / "index.html").read_text()
    assert "<script>alert(1)</script>" not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt; GPU" in raw


def test_failed_experiment_shows_a_notice_not_numbers(tmp_path: Path) -> None:
    res = tmp_path / "results"
    write_result(res, make_envelope("optimizer_state", None, status="failed",
                                    error="RuntimeError: CUDA out of memory"), failed=True)
    proc = build_site(tmp_path, res, {"index.md": "# Chapter\n\n{{ r.optimizer_state.model.parameters }}\n"})
    assert proc.returncode == 0, proc.stderr
    text = " ".join(site_text(tmp_path / "site", "index.html").split())
    assert "No result for optimizer_state on this host" in text and "CUDA out of memory" in text


def test_stale_results_are_flagged(tmp_path: Path) -> None:
    res = tmp_path / "results"
    write_result(res, make_envelope("optimizer_state", DATA, torch="2.11.0"))
    for name in ("weight_decay", "hardware"):
        write_result(res, make_envelope(name, {"x": 1}, torch="2.13.0"))
    write_result(res, make_envelope("grad_accumulation", {"x": 1}, schema=0))
    page = "# P\n\n{{ r.optimizer_state.ratio }} {{ r.grad_accumulation.x }} {{ r.weight_decay.x }}\n"
    proc = build_site(tmp_path, res, {"index.md": page})
    assert proc.returncode == 0, proc.stderr
    text = " ".join(site_text(tmp_path / "site", "index.html").split())
    assert "not current" in text
    assert "optimizer_state : torch 2.11.0 (this host's other results: 2.13.0)" in text
    assert "grad_accumulation : schema 0 (current 1)" in text


def test_corrupted_result_fails_the_build_naming_the_file(tmp_path: Path) -> None:
    res = tmp_path / "results"
    bad = write_result(res, make_envelope("optimizer_state", DATA))
    bad.write_text("{not json")
    proc = build_site(tmp_path, res, {"index.md": "# X\n"})
    assert proc.returncode != 0 and f"{bad}: not valid JSON" in proc.stderr


def test_primary_host_is_chosen_and_can_be_picked(tmp_path: Path) -> None:
    res = tmp_path / "results"
    other = dict(TEST_HOST, slug="cuda-h100-80gb", device="NVIDIA H100")
    write_result(res, make_envelope("optimizer_state", DATA))
    write_result(res, make_envelope("optimizer_state", dict(DATA, ratio=2.0), host=other))
    (res / ".this-host").write_text(TEST_HOST["slug"] + "\n")
    page = "# P\n\nratio {{ r.optimizer_state.ratio }} on {{ host.device }}; {{ hosts | length }} hosts\n"
    proc = build_site(tmp_path / "a", res, {"index.md": page})
    assert proc.returncode == 0, proc.stderr
    assert "ratio 1.0 on Test CPU; 2 hosts" in site_text(tmp_path / "a" / "site", "index.html")
    proc = build_site(tmp_path / "b", res, {"index.md": page}, host="cuda-h100-80gb")
    assert proc.returncode == 0, proc.stderr
    assert "ratio 2.0 on NVIDIA H100; 2 hosts" in site_text(tmp_path / "b" / "site", "index.html")
    (res / ".this-host").unlink()  # a clone that has run nothing: the accelerator host writes the prose
    proc = build_site(tmp_path / "d", res, {"index.md": page})
    assert proc.returncode == 0, proc.stderr
    assert "ratio 2.0 on NVIDIA H100" in site_text(tmp_path / "d" / "site", "index.html")
    proc = build_site(tmp_path / "c", res, {"index.md": page}, host="nope")
    assert proc.returncode != 0 and "no results for host 'nope'" in proc.stderr
