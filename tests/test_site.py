"""The site side on mini sites: numbers rendered, errors named, input escaped, failures shown."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TEST_HOST, TOY_EXPERIMENT, build_site as _build_site, make_envelope, site_text, write_result

DATA = {"model": {"parameters": 1234567, "state_bytes": 3 * 2**20}, "ratio": 1.0, "series": [1.5, 2.5]}
TOYS = {name: TOY_EXPERIMENT for name in ("toy", "other", "third", "fourth")}


def build_site(out: Path, results: Path, docs: dict[str, str], host: str | None = None):
    """A mini site over the toy experiments (their summarize and plot), not the real ones."""
    return _build_site(out, results, docs, host=host, experiments=TOYS)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    res = tmp_path / "results"
    write_result(res, make_envelope("toy", DATA))
    return res


def test_numbers_from_the_json_reach_the_page(tmp_path: Path, results: Path) -> None:
    page = ("# Numbers\n\n## Against $K$\n\nParams {{ r.toy.model.parameters | grouped }}, state "
            "{{ r.toy.model.state_bytes | bytes }}, ratio {{ r.toy.ratio | ratio }}.\n\n"
            "{% for x in r.toy.series %}- {{ x | num }}\n{% endfor %}\n"
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
    page = "# Oops\n\nfine\n\n{{ r.toy.model.no_such_key }}\n"
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
    write_result(res, make_envelope("toy", DATA, host=host))
    proc = build_site(tmp_path, res, {"index.md": "# X\n\nOn {{ host.device }}: {{ r.toy.ratio }}\n"})
    assert proc.returncode == 0, proc.stderr
    raw = (tmp_path / "site" / "index.html").read_text()
    assert "<script>alert(1)</script>" not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt; GPU" in raw


def test_failed_experiment_shows_a_notice_not_numbers(tmp_path: Path) -> None:
    res = tmp_path / "results"
    write_result(res, make_envelope("toy", None, status="failed",
                                    error="RuntimeError: CUDA out of memory"), failed=True)
    proc = build_site(tmp_path, res, {"index.md": "# Chapter\n\n{{ r.toy.model.parameters }}\n"})
    assert proc.returncode == 0, proc.stderr
    text = " ".join(site_text(tmp_path / "site", "index.html").split())
    assert "No result for toy on this host" in text and "CUDA out of memory" in text


def test_stale_results_are_flagged(tmp_path: Path) -> None:
    res = tmp_path / "results"
    write_result(res, make_envelope("toy", DATA, torch="2.11.0"))
    for name in ("other", "third"):
        write_result(res, make_envelope(name, DATA, torch="2.13.0"))
    write_result(res, make_envelope("fourth", DATA, schema=0))
    page = "# P\n\n{{ r.toy.ratio }} {{ r.fourth.ratio }} {{ r.other.ratio }}\n"
    proc = build_site(tmp_path, res, {"index.md": page})
    assert proc.returncode == 0, proc.stderr
    text = " ".join(site_text(tmp_path / "site", "index.html").split())
    assert "not current" in text
    assert "toy : torch 2.11.0 (this host's other results: 2.13.0)" in text
    assert "fourth : schema 0 (current 1)" in text, "older results that carry the fields keep rendering"


def test_corrupted_result_fails_the_build_naming_the_file(tmp_path: Path) -> None:
    res = tmp_path / "results"
    bad = write_result(res, make_envelope("toy", DATA))
    bad.write_text("{not json")
    proc = build_site(tmp_path, res, {"index.md": "# X\n"})
    assert proc.returncode != 0 and f"{bad}: not valid JSON" in proc.stderr


def test_primary_host_is_chosen_and_can_be_picked(tmp_path: Path) -> None:
    res = tmp_path / "results"
    other = dict(TEST_HOST, slug="cuda-h100-80gb", device="NVIDIA H100")
    write_result(res, make_envelope("toy", DATA))
    write_result(res, make_envelope("toy", dict(DATA, ratio=2.0), host=other))
    (res / ".this-host").write_text(TEST_HOST["slug"] + "\n")
    page = "# P\n\nratio {{ r.toy.ratio }} on {{ host.device }}; {{ hosts | length }} hosts\n"
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


def test_summary_reaches_the_page_and_figures(tmp_path: Path, results: Path) -> None:
    page = ("# S\n\n{{ summary.toy.parameters_label }}; {{ summary.toy.state_per_param_bytes | num }} B per "
            "parameter\n\n{{ figure('toy', 'series', caption='A toy figure') }}\n")
    proc = build_site(tmp_path, results, {"index.md": page})
    assert proc.returncode == 0, proc.stderr
    text = " ".join(site_text(tmp_path / "site", "index.html").split())
    assert "1,234,567 parameters; 2.55 B per parameter" in text
    raw = (tmp_path / "site" / "index.html").read_text()
    assert raw.count("<svg") >= 1 and "A toy figure" in raw
    assert "1,234,567 parameters" in raw.split("<svg", 1)[1], "plot() draws from the summary"


def test_a_field_summarize_needs_fails_naming_host_experiment_and_field(tmp_path: Path) -> None:
    res = tmp_path / "results"
    old = {"model": {"parameters": 10}, "ratio": 1.0, "series": [1.0]}  # older code: no state_bytes
    path = write_result(res, make_envelope("toy", old))
    proc = build_site(tmp_path, res, {"index.md": "# X\n"})
    assert proc.returncode != 0
    line = next(ln for ln in proc.stderr.splitlines() if "state_bytes" in ln)
    assert str(path) in line and TEST_HOST["slug"] in line and "experiments/toy.py" in line
    assert "'data.model.state_bytes' is missing" in line
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("call, broken, message", [
    ("{{ figure('toy', 'nope') }}", False, "plot() has no figure named 'nope' (it draws: broken, series)"),
    ("{{ figure('toy', 'broken') }}", True, "plot() failed: KeyError: 'no_such_index_key'"),
])
def test_figure_errors_are_one_line(tmp_path: Path, call: str, broken: bool, message: str) -> None:
    res = tmp_path / "results"
    write_result(res, make_envelope("toy", dict(DATA, broken=broken)))
    proc = build_site(tmp_path, res, {"index.md": f"# F\n\n{call}\n"})
    assert proc.returncode != 0
    assert message in proc.stderr and "docs/index.md" in proc.stderr
    assert "no experiment named" not in proc.stderr and "Traceback" not in proc.stderr
