"""The hardware experiment: throughput, bandwidth, training-step accounting, on a tiny config."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from experiments import hardware
from experiments.lib.cli import to_json

REPO = Path(__file__).resolve().parent.parent

TINY = hardware.Config(
    shapes=((32, 32, 32), (16, 16, 16), (64, 48, 32)),
    min_run_time_s=0.01,
    max_call_s=0.5,
    copy_sizes_bytes=(2**16, 2**12),
    train_width=16,
    train_blocks=2,
    train_batch=8,
)


@pytest.fixture(scope="module")
def data() -> dict:
    return hardware.run(TINY, "cpu")


def test_data_is_plain_json(data: dict) -> None:
    assert json.loads(to_json(data)) == data  # to_json refuses NaN and infinity


def test_tf32_is_not_applicable_on_cpu(data: dict) -> None:
    assert data["device_type"] == "cpu"
    assert data["matmul"]["tf32"] == {"status": "not_applicable", "points": [], "skipped_shapes": [],
                                      "shapes_in_sweep": 0}
    assert data["cuda"] == {"measured": False}


def test_matmul_sweep_is_ordered_by_flops_and_keeps_the_best(data: dict) -> None:
    d = data["matmul"]["fp32"]
    assert d["status"] == "measured"
    assert [(p["m"], p["n"], p["k"]) for p in d["points"]] == [(16, 16, 16), (32, 32, 32), (64, 48, 32)]
    assert d["shapes_in_sweep"] == len(TINY.shapes) == len(d["points"]) + len(d["skipped_shapes"])
    for p in d["points"]:
        assert p["flops"] == 2 * p["m"] * p["n"] * p["k"]
        # throughput is the FLOPs over the median time, to float rounding
        assert p["gflop_per_s"] == pytest.approx(p["flops"] / (p["median_ms"] * 1e-3) / 1e9, rel=1e-9)
        assert p["tflop_per_s"] == pytest.approx(p["gflop_per_s"] / 1e3, rel=1e-12)
        # fp32: 4 bytes per element of a, b and c
        elems = p["m"] * p["k"] + p["k"] * p["n"] + p["m"] * p["n"]
        assert p["flop_per_byte"] == pytest.approx(p["flops"] / (4 * elems), rel=1e-12)
    best = max(d["points"], key=lambda p: p["gflop_per_s"])
    assert d["best_gflop_per_s"] == best["gflop_per_s"]
    assert d["best_shape"] == [best["m"], best["n"], best["k"]]
    assert d["largest_share_of_best"] == d["points"][-1]["gflop_per_s"] / best["gflop_per_s"] <= 1.0
    assert data["matmul"]["speedup_vs_fp32"]["fp32"] == 1.0
    measured = [n for n in data["matmul"]["dtypes"] if data["matmul"][n]["status"] == "measured"]
    assert data["matmul"]["best_dtype"] == max(measured, key=lambda n: data["matmul"][n]["best_gflop_per_s"])


def test_flop_counter_agrees_with_2mnk(data: dict) -> None:
    check = data["matmul"]["flop_count_check"]
    assert check["counted_flops"] == check["predicted_flops"] == 2 * check["m"] * check["n"] * check["k"]


def test_accuracy_follows_the_format(data: dict) -> None:
    # Unit roundoff from torch.finfo: 2**-24 for fp32, 2**-8 for bf16, 2**-11 for fp16.
    mm = data["matmul"]
    assert mm["fp32"]["accuracy"]["unit_roundoff"] == 2.0**-24
    assert mm["bf16"]["accuracy"]["unit_roundoff"] == 2.0**-8
    # fp32 inputs are exact; only accumulation over k = 1024 errs: well under sqrt(k) unit roundoffs.
    assert mm["fp32"]["accuracy"]["rel_error_over_unit_roundoff"] < 32
    # 16-bit formats round every input and the output: the error is of the order of one unit
    # roundoff (between a tenth and four), which also proves the product really ran in that format.
    for name in ("bf16", "fp16"):
        assert mm[name]["status"] == "measured"
        assert 0.1 < mm[name]["accuracy"]["rel_error_over_unit_roundoff"] < 4, name


def test_bandwidth_counts_read_and_write(data: dict) -> None:
    bw = data["bandwidth"]
    assert [p["bytes"] for p in bw["points"]] == [2**12, 2**16]
    for p in bw["points"]:
        assert p["moved_bytes"] == 2 * p["bytes"]
        assert p["gb_per_s"] == pytest.approx(p["moved_bytes"] / (p["median_ms"] * 1e-3) / 1e9, rel=1e-9)
    assert bw["largest_copy_bytes"] == 2**16
    assert bw["gb_per_s"] == bw["points"][-1]["gb_per_s"]
    assert bw["best_gb_per_s"] == max(p["gb_per_s"] for p in bw["points"])
    ridge = data["roofline"]["fp32"]["ridge_flop_per_byte"]
    assert ridge == pytest.approx(data["matmul"]["fp32"]["best_gflop_per_s"] / bw["gb_per_s"], rel=1e-12)
    assert "tf32" not in data["roofline"]


def test_train_step_state_matches_the_prediction_exactly(data: dict) -> None:
    t = data["train_step"]
    h, blocks = TINY.train_width, TINY.train_blocks
    params = blocks * (h * 4 * h + 4 * h + 4 * h * h + h)
    assert t["params"] == params
    assert t["predicted"] == {"params_bytes": 4 * params, "grads_bytes": 4 * params,
                              "optimizer_bytes": 8 * params + 4 * 4 * blocks}  # 2 moments + a step per tensor
    assert t["params_bytes"] == t["predicted"]["params_bytes"]
    assert t["grads_bytes"] == t["predicted"]["grads_bytes"]
    assert t["optimizer_state_bytes"] == t["predicted"]["optimizer_bytes"]
    assert t["measured_state_bytes"] == t["predicted_state_bytes"]
    assert t["ratio"] == {"params": 1.0, "grads": 1.0, "optimizer": 1.0, "flops": 1.0}
    # The tracker labels the parameters exactly and its peak holds at least the persistent state.
    assert t["tracker_peak"]["params_bytes"] == t["params_bytes"]
    assert t["tracker_peak"]["total_bytes"] >= t["predicted_state_bytes"]


def test_train_step_flops_match_the_closed_form(data: dict) -> None:
    t = data["train_step"]
    h, blocks, b = TINY.train_width, TINY.train_blocks, TINY.train_batch
    weights = blocks * 8 * h * h
    assert t["counted_flops"] == t["predicted_flops"] == 6 * weights * b - 2 * 4 * h * h * b
    assert t["share_of_best_fp32"] == pytest.approx(
        t["achieved_gflop_per_s"] / data["matmul"]["fp32"]["best_gflop_per_s"], rel=1e-12)
    assert t["share_of_best_fp32"] > 0


def test_a_dtype_over_the_call_limit_stops_its_sweep() -> None:
    cfg = hardware.Config(shapes=((8, 8, 8), (16, 16, 16)), dtypes=("fp32",), min_run_time_s=0.01,
                          max_call_s=0.0, copy_sizes_bytes=(4096,), train_width=8, train_blocks=1, train_batch=2)
    d = hardware.run(cfg, "cpu")
    # The smallest shape always runs; the next exceeds a zero-second limit (predicted and probed).
    assert d["matmul"]["fp32"]["status"] == "measured"
    assert [(p["m"], p["n"], p["k"]) for p in d["matmul"]["fp32"]["points"]] == [(8, 8, 8)]
    assert d["matmul"]["fp32"]["skipped_shapes"] == [[16, 16, 16]]
    assert d["matmul"]["fp32"]["shapes_in_sweep"] == 2   # one run and one skipped
    json.loads(to_json(d))


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="fp8"):
        hardware.run(hardware.Config(shapes=((8, 8, 8),), dtypes=("fp8",)), "cpu")


def test_plot_draws_two_labelled_figures(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = hardware.plot(data)
    try:
        assert set(figs) == {"matmul", "bandwidth"}
        ax = figs["matmul"].axes[0]
        assert "GFLOP/s" in ax.get_ylabel() and ax.get_xlabel()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "fp32" in labels and "tf32: not applicable" in labels
        assert "GB/s" in figs["bandwidth"].axes[0].get_ylabel()
    finally:
        for f in figs.values():
            plt.close(f)


def test_profiles_are_well_formed() -> None:
    for name, cfg in hardware.PROFILES.items():
        assert set(cfg.dtypes) <= set(hardware.DTYPES), name
        assert all(len(s) == 3 and min(s) > 0 for s in cfg.shapes), name
    assert hardware.PROFILES["quick"].train_width < hardware.PROFILES["full"].train_width


def committed_results() -> list[Path]:
    return sorted((REPO / "results").glob("*/hardware.json"))


@pytest.mark.parametrize("path", committed_results(), ids=lambda p: p.parent.name)
def test_committed_result_validates_and_plots(path: Path) -> None:
    """A committed reference result passes the current envelope schema and still renders."""
    from generator import envelope

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = envelope.load(path)
    assert env["schema_version"] == envelope.SCHEMA_VERSION
    assert env["status"] == "ok"
    figs = hardware.plot(env["data"])
    for f in figs.values():
        plt.close(f)
    for name in env["data"]["matmul"]["dtypes"]:
        assert env["data"]["matmul"][name]["status"] in ("measured", "not_applicable", "unsupported")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_memory_figures() -> None:
    d = hardware.run(TINY, "cuda")
    c = d["cuda"]
    assert c["measured"] is True
    assert c["context_bytes"] > 0  # the driver holds memory that no tensor owns
    alloc = d["train_step"]["allocator"]
    assert alloc["reserved_bytes"] >= alloc["allocated_bytes"] > 0
    agree = d["train_step"]["tracker_agreement"]
    # The tracker rounds like the caching allocator; beyond what it cannot see (cuBLAS workspaces)
    # the two peaks agree within 10 %.
    assert 0.9 < agree["ratio_without_untracked"] < 1.1
    mm = d["matmul"]
    if torch.cuda.get_device_capability()[0] >= 8:  # tf32 tensor cores from Ampere on
        assert mm["tf32"]["status"] == "measured"
        assert mm["tf32"]["accuracy"]["rel_error"] > 100 * mm["fp32"]["accuracy"]["rel_error"]
    json.loads(to_json(d))


def test_load_sampler_subtracts_this_process() -> None:
    s = hardware._LoadSampler()
    s.samples = [5, 3, 1]  # runnable tasks; this process accounts for threads + 1 (the sampler)
    out = s.summary(threads=2, cores=2)
    assert out["competing_tasks_mean"] == pytest.approx((2 + 0 + 0) / 3)
    assert out["runnable_max"] == 5
    assert out["busy"] is True  # 2/3 of a task competes for cores that are all in use
    s.samples = [3, 4, 3, 3]  # a quarter of a task on average: quiet enough
    assert s.summary(threads=2, cores=2)["busy"] is False
    s.samples = [5, 5]  # two competing tasks, but this process left two of four cores free
    assert s.summary(threads=2, cores=4)["busy"] is False
    s.samples = [7, 7]  # the same two competing tasks when this process's threads fill all four cores
    assert s.summary(threads=4, cores=4)["busy"] is True
    assert hardware._LoadSampler().summary(threads=2, cores=2) == {"measured": False}


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="needs Linux /proc/loadavg")
def test_run_records_the_cpu_load(data: dict) -> None:
    load = data["cpu_load"]
    assert load["measured"] is True and load["samples"] >= 1 and load["period_ms"] == pytest.approx(50.0)
    assert load["competing_tasks_mean"] >= 0
    spare = max(0, load["cores"] - data["threads"])
    assert load["busy"] == (load["competing_tasks_mean"] > spare + 0.5)


# ---------------------------------------------------------------------------------------------- the page
# Mini sites built with ``mkdocs build --strict`` through the real hook (tests/conftest.py).

PAGE = "hardware.md"
CUDA_HOST = {"slug": "cuda-test-gpu-80gb", "device": "Test GPU", "device_memory_bytes": 80 * 2**30,
             "cpu": "Test CPU", "cores": 16}


def _mini_docs() -> dict[str, str]:
    docs_dir = REPO / "docs"
    return {
        "index.md": "# Mini\n",
        PAGE: (docs_dir / PAGE).read_text(encoding="utf-8"),
        "cheatsheet.md": (docs_dir / "cheatsheet.md").read_text(encoding="utf-8"),
        "_cheatsheet/09-hardware.md": (docs_dir / "_cheatsheet" / "09-hardware.md").read_text(encoding="utf-8"),
        "experiments/hardware.py": "# the notebook link target\n",
    }


def _row(page_html: str, label: str) -> list[str]:
    """The cell texts of the table row whose first cell is ``label``."""
    import html
    import re

    for tr in re.findall(r"<tr>(.*?)</tr>", page_html, re.S):
        cells = [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split())
                 for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, re.S)]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no table row {label!r}")


def _canned_cuda(cpu_data: dict) -> dict:
    """Canned (not measured) CUDA-shaped data: the CPU run's figures plus the CUDA-only fields."""
    d = json.loads(json.dumps(cpu_data))
    d["device_type"] = "cuda"
    d["matmul"]["tf32"] = json.loads(json.dumps(d["matmul"]["fp32"]))
    d["matmul"]["speedup_vs_fp32"]["tf32"] = 1.0
    d["roofline"]["tf32"] = dict(d["roofline"]["fp32"])
    d["train_step"]["allocator"] = {
        "allocated_bytes": 5 * 2**20, "reserved_bytes": 6 * 2**20, "reserved_to_allocated_ratio": 1.2,
        "unused_reserved_bytes": 2**20, "inactive_split_bytes": 2**18, "max_allocated_bytes": 7 * 2**20,
        "max_reserved_bytes": 8 * 2**20}
    d["train_step"]["tracker_agreement"] = {
        "tracker_peak_bytes": 6 * 2**20, "cuda_max_allocated_bytes": 7 * 2**20, "untracked_at_start_bytes": 2**20,
        "ratio": 6 / 7, "ratio_without_untracked": 1.0}
    d["cuda"] = {"measured": True, "fresh_process": True, "device_total_bytes": 80 * 2**30,
                 "used_at_init_bytes": 500 * 2**20, "reserved_at_init_bytes": 0, "context_bytes": 500 * 2**20,
                 "used_after_bytes": 600 * 2**20 + 8 * 2**20, "reserved_after_bytes": 8 * 2**20,
                 "non_allocator_after_bytes": 600 * 2**20, "growth_since_init_bytes": 100 * 2**20,
                 "bf16_reduced_precision_reduction": True, "fp16_reduced_precision_reduction": True,
                 "cudnn_version": 91000, "device_name": "Test GPU"}
    return d


def test_page_sets_hosts_side_by_side_and_flags_stale_results(tmp_path: Path, data: dict) -> None:
    from conftest import TEST_HOST, build_site, make_envelope, site_text, write_result
    from generator.site.formatting import bytes_, num, ratio

    results = tmp_path / "results"
    cuda = _canned_cuda(data)
    write_result(results, make_envelope("hardware", data))  # CPU host, current schema
    # The GPU host's result: an older schema and another torch than its other result.
    write_result(results, make_envelope("hardware", cuda, host=CUDA_HOST, torch="2.11.0", schema=0))
    for other in ("optimizer_state", "qas"):
        write_result(results, make_envelope(other, {"x": 1}, host=CUDA_HOST, torch="2.12.0",
                                            started_at="2026-11-22T09:00:00+00:00"))
    proc = build_site(tmp_path / "out", results, docs=_mini_docs(), host=CUDA_HOST["slug"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (tmp_path / "out" / "site" / "hardware" / "index.html").read_text(encoding="utf-8")
    text = " ".join(site_text(tmp_path / "out" / "site", "hardware/index.html").split())

    assert "cuda-test-gpu-80gb (primary)" in text and TEST_HOST["slug"] in text
    # This host's prose: CUDA context, allocator, and the tracker agreement line.
    assert f"the CUDA context already held {bytes_(cuda['cuda']['context_bytes'])}" in text
    assert "The memory tracker agrees with torch.cuda.max_memory_allocated" in text
    assert ratio(1.0, 4) in text
    # Side by side: both hosts' best fp32 throughput; tf32 only on the GPU host ("—" on the CPU host).
    # Hosts are columns in slug order: the CPU test host, then the GPU.
    assert _row(page, "best tf32 matmul (TFLOP/s)") == ["—", num(cuda["matmul"]["tf32"]["best_tflop_per_s"]) + " †"]
    assert _row(page, "best fp32 matmul (TFLOP/s)") == [num(data["matmul"]["fp32"]["best_tflop_per_s"]),
                                                       num(cuda["matmul"]["fp32"]["best_tflop_per_s"]) + " †"]
    assert _row(page, "CUDA context (bytes)") == ["—", bytes_(cuda["cuda"]["context_bytes"]) + " †"]
    assert _row(page, "torch") == ["2.13.0", "2.11.0"]  # each host's newest result
    # optimizer_state rows appear once any host has it; data without the keys shows "—", not an error.
    assert _row(page, "AdamW state, measured / predicted") == ["—", "—"]
    # Stale: flagged in an admonition and marked (†) in the side-by-side table, never mixed silently.
    assert "Stale results: shown, but not mixed silently" in text
    assert ("cuda-test-gpu-80gb / hardware : schema 0 (current 1); torch 2.11.0 (this host's other results: "
            "2.12.0)") in text


def test_page_renders_the_committed_results(tmp_path: Path) -> None:
    """The committed reference results validate against the current schema and render the page."""
    from conftest import build_site, site_text
    from generator import envelope
    from generator.site.formatting import num

    paths = committed_results()
    assert paths, "results/ holds no hardware result: run 'handbook run' and commit it"
    proc = build_site(tmp_path / "out", REPO / "results", docs=_mini_docs())
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = " ".join(site_text(tmp_path / "out" / "site", "hardware/index.html").split())
    for path in paths:
        d = envelope.load(path)["data"]
        assert num(d["bandwidth"]["gb_per_s"]) in text
        for name in d["matmul"]["dtypes"]:
            if d["matmul"][name]["status"] == "measured":
                assert num(d["matmul"][name]["best_tflop_per_s"]) in text, name
    marker = REPO / "results" / ".this-host"
    primary = REPO / "results" / marker.read_text().strip() / "hardware.json" if marker.exists() else None
    if primary and primary.exists() and not envelope.load(primary)["data"]["cuda"]["measured"]:
        # A CPU primary host: the CUDA-only figures are announced as absent, never invented.
        assert "No CUDA device on this host" in text
        assert "The memory tracker agrees" not in text and "disagree" not in text
