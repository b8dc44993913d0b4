"""The when-to-use table (``generator/site/when_to_use.py``): cells from results, or cited sources, never made up."""
from __future__ import annotations

import copy
import re

import pytest

from generator.errors import PageError
from generator.site import when_to_use as W
from generator.site.formatting import pct, ratio, sci

from generator.site.results import load_all, pick_primary
from generator.site.summaries import summarize

from conftest import REPO

NAMES = sorted({n for row in W.ROWS for n in row["experiments"]})


@pytest.fixture(scope="module")
def results() -> dict:
    """The committed results of every experiment the table reads (finetune_memory only where it has one)."""
    hosts = load_all(REPO / "results")
    runs = hosts[pick_primary(hosts, REPO / "nonexistent", None)].runs
    return {n: {"data": runs[n].good["data"], "summary": summarize(n, runs[n].good["data"], n)}
            for n in NAMES if n in runs and runs[n].ok}


def _row(rows: list[dict], technique: str) -> dict:
    return next(r for r in rows if r["technique"].startswith(technique))


def test_rows_cover_the_techniques_the_issue_names() -> None:
    techniques = " ".join(r["technique"] for r in W.ROWS)
    for t in ("gradient accumulation", "no checkpointing", "selective checkpointing", "full checkpointing", "autocast",
              "master weights", "8-bit optimizer state", "ZeRO-1", "ZeRO-2", "ZeRO-3", "offload", "LoRA"):
        assert t in techniques, t


def test_measured_cells_come_from_the_summaries(results: dict) -> None:
    rows = W.rows(results, "test")
    ck = results["checkpointing"]["summary"]["policies"]
    full = _row(rows, "full checkpointing")
    assert full["measured"] and full["saves"] == f"peak {ratio(ck['every_layer']['peak_ratio_vs_none'])}"
    assert ratio(ck["every_layer"]["time_ratio_vs_none"]) in full["costs"]
    ga = results["grad_accumulation"]["summary"]
    acc = _row(rows, "gradient accumulation")
    assert f"({ga['most_accumulated']['k']} micro-batches)" in acc["technique"]
    assert ratio(ga["most_accumulated"]["peak_ratio_vs_one_batch"]) in acc["saves"]
    assert sci(ga["max_rel_diff"]["fp32"]) in acc["changes"]
    pack = _row(rows, "packing")
    assert pct(results["token_budget"]["summary"]["pad_vs_pack"]["packed_waste_share"]) in pack["saves"]
    for row in rows:
        for col in ("technique", *W.COLUMNS):
            assert "{" not in row[col] and "}" not in row[col], (row["technique"], col, row[col])


def test_rows_without_a_result_show_their_source_or_a_dash() -> None:
    rows = W.rows({}, "test")
    for row, declared in zip(rows, W.ROWS, strict=True):
        if not declared["experiments"]:  # cited only: shown as written, with its source
            assert re.search(r"et al\. 20\d\d", row["saves"] + row["costs"]), row["technique"]
            continue
        assert not row["measured"]
        for col in W.COLUMNS:
            if W.PLACEHOLDER.search(declared[col]):
                assert row[col] == declared.get("unmeasured", {}).get(col, "—"), (row["technique"], col)
    lora = _row(rows, "LoRA")
    assert "Hu et al. 2021" in lora["saves"] and "350 GB" in lora["saves"]
    assert _row(rows, "full checkpointing")["saves"] == "—"


def test_a_null_value_shows_na_and_a_missing_field_drops_to_the_source(results: dict) -> None:
    broken = copy.deepcopy(results)
    broken["checkpointing"]["summary"]["policies"]["every_layer"]["peak_ratio_vs_none"] = None
    assert _row(W.rows(broken, "test"), "full checkpointing")["saves"] == "peak n/a"
    del broken["checkpointing"]["summary"]["policies"]["every_layer"]["peak_ratio_vs_none"]
    full = _row(W.rows(broken, "docs/x.md"), "full checkpointing")
    assert not full["measured"] and full["saves"] == "—" and "every_layer.peak_ratio_vs_none" in full["missing"]


def test_every_row_with_a_committed_result_is_measured(results: dict) -> None:
    for row in W.rows(results, "test"):
        if row["experiments"] and all(n in results for n in row["experiments"]):
            assert row["measured"], f"{row['technique']}: {row['missing']}"


def test_a_row_must_declare_what_it_reads(monkeypatch) -> None:
    bad = [{"technique": "t", "experiments": [], "saves": "{summary.checkpointing.x|ratio}", "costs": "",
            "changes": "", "when": ""}]
    monkeypatch.setattr(W, "ROWS", bad)
    with pytest.raises(PageError, match="without declaring"):
        W.rows({}, "docs/x.md")
