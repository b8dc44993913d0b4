"""The hardware experiment: what it measures (throughput, bandwidth, training-step accounting, CPU load),
what summarize derives from it, and the hardware page over canned hosts."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from experiments import hardware
from experiments.lib import host as host_lib
from experiments.lib.load import LoadSampler, busy

REPO = Path(__file__).resolve().parent.parent
TEST = hardware.PROFILES["test"]


@pytest.fixture(scope="module")
def data() -> dict:
    from conftest import test_profile_data

    return test_profile_data("hardware")  # the test profile's run, as stored (measured once per session)


@pytest.fixture(scope="module")
def summary(data: dict) -> dict:
    return hardware.summarize(data)


def test_tf32_does_not_apply_on_cpu_and_its_figures_are_null(data: dict, summary: dict) -> None:
    assert data["device_type"] == "cpu"
    assert data["matmul"]["tf32"] == {"status": "not_applicable", "points": [], "skipped_shapes": []}
    assert data["cuda"] == {"measured": False}
    tf32 = summary["matmul"]["tf32"]
    assert tf32["measured"] is False and tf32["status_label"] == "not applicable"
    assert tf32["best_tflop_per_s"] is None and tf32["speedup_vs_fp32"] is None and "tf32" not in summary["roofline"]
    # CUDA-only figures: explicit nulls, so a cross-host table shows "n/a" instead of failing
    assert summary["cuda"]["measured"] is False
    assert summary["cuda"]["context_bytes"] is None and summary["cuda"]["reserved_to_allocated_ratio"] is None


def test_matmul_sweep_is_ordered_by_flops_and_keeps_the_best(data: dict, summary: dict) -> None:
    d = data["matmul"]["fp32"]
    assert d["status"] == "measured"
    assert [(p["m"], p["n"], p["k"]) for p in d["points"]] == [(16, 16, 16), (32, 32, 32), (64, 48, 32)]
    for p in d["points"]:
        assert p["flops"] == 2 * p["m"] * p["n"] * p["k"]
        # throughput is the FLOPs over the median time, to float rounding
        assert p["gflop_per_s"] == pytest.approx(p["flops"] / (p["median_ms"] * 1e-3) / 1e9, rel=1e-9)
    s = summary["matmul"]["fp32"]
    best = max(d["points"], key=lambda p: p["gflop_per_s"])
    assert s["best_gflop_per_s"] == best["gflop_per_s"] and s["best_tflop_per_s"] == best["gflop_per_s"] / 1e3
    assert s["best_shape"] == f"{best['m']}×{best['n']}×{best['k']}"
    assert s["shapes_run_count"] == s["shapes_in_sweep_count"] == len(TEST.shapes)
    assert s["largest_share_of_best"] == d["points"][-1]["gflop_per_s"] / best["gflop_per_s"] <= 1.0
    assert s["best_is_largest"] == (best is d["points"][-1])
    # fp32 operands: 4 bytes per element of a, b and c
    p = d["points"][0]
    assert s["flop_per_byte"][0] == p["flops"] / (4 * (p["m"] * p["k"] + p["k"] * p["n"] + p["m"] * p["n"]))
    assert s["speedup_vs_fp32"] == 1.0
    measured = [n for n in data["matmul"]["dtypes"] if data["matmul"][n]["status"] == "measured"]
    best_dtype = max(measured, key=lambda n: summary["matmul"][n]["best_gflop_per_s"])
    assert summary["best_dtype"] == best_dtype and summary["best"] == summary["matmul"][best_dtype]
    # CPU rates here are far below 1 TFLOP/s: the page reads them in GFLOP/s
    assert summary["rate_unit"] == "GFLOP/s" and s["best_rate"] == s["best_gflop_per_s"]


def test_rate_unit_follows_the_magnitude(data: dict) -> None:
    fast = json.loads(json.dumps(data))
    for p in fast["matmul"]["bf16"]["points"]:
        p["gflop_per_s"] *= 1e5  # a GPU's tensor cores
    s = hardware.summarize(fast)
    assert s["rate_unit"] == "TFLOP/s" and s["best_dtype"] == "bf16"
    assert s["matmul"]["bf16"]["best_rate"] == s["matmul"]["bf16"]["best_tflop_per_s"]
    assert s["matmul"]["fp32"]["best_rate"] == s["matmul"]["fp32"]["best_gflop_per_s"] / 1e3
    assert s["low_precision_slower"] is (s["matmul"]["fp16"]["speedup_vs_fp32"] < 1)


def test_flop_counter_agrees_with_2mnk(data: dict, summary: dict) -> None:
    check = data["matmul"]["flop_count_check"]
    assert check["counted_flops"] == check["predicted_flops"] == 2 * check["m"] * check["n"] * check["k"]
    assert summary["flop_count_matches"] is True


def test_accuracy_follows_the_format(data: dict, summary: dict) -> None:
    # Unit roundoff from torch.finfo: 2**-24 for fp32, 2**-8 for bf16, 2**-11 for fp16.
    mm = data["matmul"]
    assert mm["fp32"]["accuracy"]["unit_roundoff"] == 2.0**-24
    assert mm["bf16"]["accuracy"]["unit_roundoff"] == 2.0**-8
    assert mm["fp16"]["accuracy"]["unit_roundoff"] == 2.0**-11
    s = summary["matmul"]
    # fp32 inputs are exact; only accumulation over k = 1024 errs: well under sqrt(k) unit roundoffs.
    assert s["fp32"]["rel_error_over_unit_roundoff"] < 32
    # 16-bit formats round every input and the output: the error is of the order of one unit
    # roundoff (between a tenth and four), which also proves the product really ran in that format.
    for name in ("bf16", "fp16"):
        assert mm[name]["status"] == "measured"
        assert 0.1 < s[name]["rel_error_over_unit_roundoff"] < 4, name
    assert summary["accuracy_shape"] == "128×128×1024"


def test_bandwidth_counts_read_and_write(data: dict, summary: dict) -> None:
    points = data["bandwidth"]["points"]
    assert [p["bytes"] for p in points] == [2**12, 2**16]
    for p in points:
        assert p["moved_bytes"] == 2 * p["bytes"]
        assert p["gb_per_s"] == pytest.approx(p["moved_bytes"] / (p["median_ms"] * 1e-3) / 1e9, rel=1e-9)
    bw = summary["bandwidth"]
    assert bw["largest_copy_bytes"] == 2**16 and bw["gb_per_s"] == points[-1]["gb_per_s"]
    assert bw["best_gb_per_s"] == max(p["gb_per_s"] for p in points)
    assert bw["cache_faster"] == (points[0]["gb_per_s"] > points[-1]["gb_per_s"])
    assert bw["size_labels"] == ["4 KiB", "64 KiB"]
    ridge = summary["roofline"]["fp32"]
    assert ridge == summary["matmul"]["fp32"]["ridge_flop_per_byte"] == \
        summary["matmul"]["fp32"]["best_gflop_per_s"] / bw["gb_per_s"]


def test_train_step_state_matches_the_prediction_exactly(data: dict, summary: dict) -> None:
    t = data["train_step"]
    h, blocks = TEST.train_width, TEST.train_blocks
    params = blocks * (h * 4 * h + 4 * h + 4 * h * h + h)
    assert t["params"] == params
    assert t["predicted"] == {"params_bytes": 4 * params, "grads_bytes": 4 * params,
                              "optimizer_bytes": 8 * params + 4 * 4 * blocks}  # 2 moments + a step per tensor
    assert t["params_bytes"] == t["predicted"]["params_bytes"]
    assert t["grads_bytes"] == t["predicted"]["grads_bytes"]
    assert t["optimizer_state_bytes"] == t["predicted"]["optimizer_bytes"]
    s = summary["train_step"]
    assert s["measured_state_bytes"] == s["predicted_state_bytes"] == 16 * params + 16 * blocks
    assert s["ratio"] == {"params": 1.0, "grads": 1.0, "optimizer": 1.0, "flops": 1.0}
    # The tracker labels the parameters exactly and its peak holds at least the persistent state.
    assert t["tracker_peak"]["params_bytes"] == t["params_bytes"]
    assert t["tracker_peak"]["total_bytes"] >= s["predicted_state_bytes"]


def test_train_step_flops_match_the_closed_form(data: dict, summary: dict) -> None:
    t = data["train_step"]
    h, blocks, b = TEST.train_width, TEST.train_blocks, TEST.train_batch
    weights = blocks * 8 * h * h
    assert t["counted_flops"] == t["predicted_flops"] == 6 * weights * b - 2 * 4 * h * h * b
    s = summary["train_step"]
    assert s["achieved_gflop_per_s"] == t["counted_flops"] / (t["step_median_ms"] * 1e-3) / 1e9
    assert s["share_of_best_fp32"] == s["achieved_gflop_per_s"] / summary["matmul"]["fp32"]["best_gflop_per_s"]


def test_a_too_slow_shape_stops_the_sweep_instead_of_skipping_it(monkeypatch) -> None:
    """The middle shape is too slow; the largest would be fast, but a stop means it is never tried."""
    calls: list[tuple[int, int, int]] = []
    real = hardware._one_shape

    def one_shape(m: int, n: int, k: int, *args) -> dict | None:
        calls.append((m, n, k))
        return None if (m, n, k) == (16, 16, 16) else real(m, n, k, *args)

    monkeypatch.setattr(hardware, "_one_shape", one_shape)
    cfg = hardware.Config(shapes=((32, 32, 32), (8, 8, 8), (16, 16, 16)), dtypes=("fp32",))
    d = hardware._sweep_dtype("fp32", torch.device("cpu"), cfg)
    assert calls == [(8, 8, 8), (16, 16, 16)]  # 32³ was never timed
    assert d["status"] == "measured" and [(p["m"], p["n"], p["k"]) for p in d["points"]] == [(8, 8, 8)]
    assert d["skipped_shapes"] == [[16, 16, 16], [32, 32, 32]]


def test_the_call_limit_stops_a_real_sweep() -> None:
    """A zero-second limit: the smallest shape always runs, the next one is over the limit (predicted and probed)."""
    cfg = hardware.Config(shapes=((8, 8, 8), (16, 16, 16)), dtypes=("fp32",), min_run_time_s=0.01, max_call_s=0.0)
    d = hardware._sweep_dtype("fp32", torch.device("cpu"), cfg)
    assert [(p["m"], p["n"], p["k"]) for p in d["points"]] == [(8, 8, 8)]
    assert d["skipped_shapes"] == [[16, 16, 16]]


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="fp8"):
        hardware.run(hardware.Config(shapes=((8, 8, 8),), dtypes=("fp8",)), "cpu")


def test_a_dtype_left_out_of_the_run_is_null_in_the_summary(data: dict) -> None:
    fewer = json.loads(json.dumps(data))
    fewer["matmul"]["dtypes"] = ["fp32", "tf32"]
    del fewer["matmul"]["bf16"], fewer["matmul"]["fp16"]
    s = hardware.summarize(fewer)
    assert list(s["matmul"]) == list(hardware.DTYPES)  # every row a table may read
    assert s["matmul"]["fp16"]["status_label"] == "not in this run" and s["matmul"]["fp16"]["best_tflop_per_s"] is None
    assert s["low_precision_slower"] is False


def test_plot_labels_units_and_statuses(data: dict, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = hardware.plot(data, summary)
    try:
        ax = figs["matmul"].axes[0]
        assert "GFLOP/s" in ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "fp32" in labels and "tf32: not applicable" in labels
        assert [t.get_text() for t in figs["bandwidth"].axes[0].get_xticklabels()] == ["4 KiB", "64 KiB"]
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
def test_committed_result_summarizes_and_plots(path: Path) -> None:
    """A committed reference result passes the current envelope schema, and summarize and plot still read it."""
    from generator import envelope
    from generator.site.summaries import summarize

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = envelope.load(path)
    assert env["schema_version"] == envelope.SCHEMA_VERSION and env["status"] == "ok"
    s = summarize("hardware", env["data"], str(path))
    for f in hardware.plot(env["data"], s).values():
        plt.close(f)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_memory_figures() -> None:
    d = json.loads(json.dumps(hardware.run(TEST, "cuda")))
    s = hardware.summarize(d)["cuda"]
    assert s["measured"] is True
    assert s["context_bytes"] > 0  # the driver holds memory that no tensor owns
    assert s["reserved_bytes"] >= s["allocated_bytes"] > 0
    # The tracker rounds like the caching allocator; beyond what it cannot see (cuBLAS workspaces)
    # the two peaks agree within 10 %.
    assert 0.9 < s["tracker_ratio_without_untracked"] < 1.1
    mm = hardware.summarize(d)["matmul"]
    if torch.cuda.get_device_capability()[0] >= 8:  # tf32 tensor cores from Ampere on
        assert mm["tf32"]["measured"] is True
        assert mm["tf32"]["rel_error"] > 100 * mm["fp32"]["rel_error"]


# ------------------------------------------------------------------------------------------- CPU load


def _loadavg(tmp_path: Path, running: int) -> Path:
    path = tmp_path / "loadavg"
    path.write_text(f"0.52 0.58 0.59 {running}/1234 56789\n", encoding="ascii")
    return path


def test_load_sampler_reads_the_runnable_count_and_subtracts_this_process(tmp_path: Path) -> None:
    with LoadSampler(period_s=0.001, path=str(_loadavg(tmp_path, 9))) as s:
        while len(s.samples) < 3:
            pass
    out = s.figures(threads=2, cores=4)
    assert set(s.samples) == {9} and out["samples"] == len(s.samples)
    assert out["runnable_mean"] == 9 and out["runnable_max"] == 9
    assert out["competing_tasks_mean"] == 6  # 9 runnable, less 2 compute threads and the sampler
    assert out["cores"] == 4 and out["period_ms"] == 1.0


def test_load_sampler_clips_each_sample_before_averaging() -> None:
    s = LoadSampler()
    s.samples = [5, 3, 1]  # this process accounts for threads + 1 = 3 of each
    out = s.figures(threads=2, cores=2)
    assert out["competing_tasks_mean"] == pytest.approx(2 / 3)  # (2 + 0 + 0) / 3, not (2 + 0 - 2) / 3
    assert out["runnable_max"] == 5


def test_load_sampler_without_loadavg_measures_nothing(tmp_path: Path) -> None:
    with LoadSampler(period_s=0.001, path=str(tmp_path / "missing")) as s:
        pass
    assert s.figures(threads=2, cores=2) == {"measured": False, "cores": 2}


def test_busy_counts_only_the_cores_this_process_leaves_free() -> None:
    assert busy(2 / 3, threads=2, cores=2) is True  # every core in use: 2/3 of a task competes
    assert busy(0.25, threads=2, cores=2) is False  # a quarter of a task: quiet enough
    assert busy(2.0, threads=2, cores=4) is False  # two competing tasks, two free cores
    assert busy(2.0, threads=4, cores=4) is True  # the same two when this process fills all four


def test_run_records_the_load_it_ran_under(tmp_path: Path, monkeypatch) -> None:
    """run samples the CPU load with its own thread count and the host's cores; summarize flags a busy host."""
    monkeypatch.setattr(hardware, "LoadSampler", functools.partial(LoadSampler, period_s=0.001,
                                                                   path=str(_loadavg(tmp_path, 40))))
    cfg = hardware.Config(shapes=((8, 8, 8),), dtypes=("fp32",), min_run_time_s=0.001, copy_sizes_bytes=(4096,),
                          train_width=8, train_blocks=1, train_batch=2)
    d = hardware.run(cfg, "cpu")
    load = d["cpu_load"]
    assert load["measured"] is True and load["cores"] == host_lib.cores()
    assert load["competing_tasks_mean"] == 40 - (d["threads"] + 1)
    s = hardware.summarize(d)["cpu_load"]
    assert s["busy"] is (40 - (d["threads"] + 1) > max(0, load["cores"] - d["threads"]) + 0.5)
    assert s["busy_label"] == ("yes" if s["busy"] else "no")


def test_an_unmeasured_load_is_null_in_the_summary(data: dict) -> None:
    quiet = json.loads(json.dumps(data))
    quiet["cpu_load"] = {"measured": False, "cores": 2}
    s = hardware.summarize(quiet)["cpu_load"]
    assert s == {"measured": False, "competing_tasks_mean": None, "runnable_max": None, "period_ms": None,
                 "cores": None, "busy": None, "busy_label": None}


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
    d["train_step"]["allocator"] = {
        "allocated_bytes": 5 * 2**20, "reserved_bytes": 6 * 2**20, "inactive_split_bytes": 2**18,
        "max_allocated_bytes": 7 * 2**20, "max_reserved_bytes": 8 * 2**20}
    d["train_step"]["tracker_agreement"] = {
        "tracker_peak_bytes": 6 * 2**20, "cuda_max_allocated_bytes": 7 * 2**20, "untracked_at_start_bytes": 2**20}
    d["cuda"] = {"measured": True, "fresh_process": True, "device_total_bytes": 80 * 2**30,
                 "used_at_init_bytes": 500 * 2**20, "reserved_at_init_bytes": 0,
                 "used_after_bytes": 608 * 2**20, "reserved_after_bytes": 8 * 2**20,
                 "bf16_reduced_precision_reduction": True, "fp16_reduced_precision_reduction": True,
                 "cudnn_version": 91000, "device_name": "Test GPU"}
    return d


def _canned_optimizer_state(regimes: tuple[str, ...] = ("mixed-master",)) -> dict:
    """The fields of an optimizer_state result that its summarize reads for the side-by-side rows."""
    step = {"supported": True, "params_bytes": 4000, "grads_bytes": 4000, "state_bytes": 8064,
            "predicted_state_bytes": 8064, "step_peak_bytes": 17000, "peak_bytes": 18000}
    return {"optimizers": {"adamw": {"foreach": step, "fused": {**step, "supported": False}}},
            "model": {"layers": 1, "seq": 8, "params_bytes": 4000},
            "zero_grad": {"zeros": {"grad_bytes_between_steps": 4000, "unused_param_max_change": 0.0}},
            "precision": {r: {"parameters": 1000, "weights_bytes": 2000, "grads_bytes": 2000, "master_bytes": 4000,
                              "optimizer_bytes": 8000} for r in regimes}}


def _two_hosts(results: Path, cpu: dict, cuda: dict, optimizer_state: dict) -> None:
    from conftest import make_envelope, write_result

    write_result(results, make_envelope("hardware", cpu))  # the CPU host: current, no optimizer_state result
    # The GPU host: its hardware result has an older schema than the current one.
    write_result(results, make_envelope("hardware", cuda, host=CUDA_HOST, torch="2.11.0", schema=0))
    write_result(results, make_envelope("optimizer_state", optimizer_state, host=CUDA_HOST, torch="2.11.0",
                                        started_at="2026-11-22T09:00:00+00:00"))


def test_page_sets_hosts_side_by_side(tmp_path: Path, data: dict, summary: dict) -> None:
    """"—" where a host has no result of the experiment, "n/a" where its result says the figure does not apply,
    † on a stale result; the GPU host writes the prose."""
    from conftest import TEST_HOST, build_site, site_text
    from generator.site.formatting import bytes_, num, ratio

    cuda = _canned_cuda(data)
    cs = hardware.summarize(cuda)
    _two_hosts(tmp_path / "results", data, cuda, _canned_optimizer_state())
    proc = build_site(tmp_path / "out", tmp_path / "results", docs=_mini_docs(), host=CUDA_HOST["slug"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (tmp_path / "out" / "site" / "hardware" / "index.html").read_text(encoding="utf-8")
    text = " ".join(site_text(tmp_path / "out" / "site", "hardware/index.html").split())

    assert "cuda-test-gpu-80gb (primary)" in text and TEST_HOST["slug"] in text
    # This host's prose: CUDA context, allocator, and the tracker agreement line.
    assert f"the CUDA context already held {bytes_(500 * 2**20)}" in text
    assert "The memory tracker agrees with torch.cuda.max_memory_allocated" in text  # 6 MiB of 7 - 1
    assert ratio(6 / 7, 4) in text and ratio(1.0, 4) in text
    # Hosts are columns in slug order: the CPU test host, then the GPU host (stale: †).
    assert _row(page, "best fp32 matmul (TFLOP/s)") == [num(summary["matmul"]["fp32"]["best_tflop_per_s"]),
                                                       num(cs["matmul"]["fp32"]["best_tflop_per_s"]) + " †"]
    assert _row(page, "best tf32 matmul (TFLOP/s)") == ["n/a", num(cs["matmul"]["tf32"]["best_tflop_per_s"]) + " †"]
    assert _row(page, "CUDA context (bytes)") == ["n/a", bytes_(500 * 2**20) + " †"]
    assert _row(page, "reserved / allocated after a step") == ["n/a", ratio(6 / 5) + " †"]
    assert _row(page, "busy while measuring (figures are lower bounds)")[1] == cs["cpu_load"]["busy_label"] + " †"
    # optimizer_state: only the GPU host has a result; the CPU host shows "—".
    assert _row(page, "AdamW state / parameter bytes") == ["—", ratio(8064 / 4000)]
    assert _row(page, "AdamW state, measured / predicted") == ["—", ratio(1.0)]
    assert _row(page, "bytes per parameter, bf16 weights + fp32 master + AdamW") == ["—", num(16.0)]
    assert _row(page, "fused AdamW available") == ["—", "no"]
    assert _row(page, "torch") == ["2.13.0", "2.11.0"]  # each host's newest result
    # Stale: flagged in an admonition and marked (†) in the side-by-side table, never mixed silently.
    assert "Stale results: shown, but not mixed silently" in text
    assert "cuda-test-gpu-80gb / hardware : schema 0 (current 1)" in text


def test_a_result_without_a_declared_path_fails_the_build(tmp_path: Path, data: dict) -> None:
    """An optimizer_state result whose summary has no mixed-master regime: the side-by-side row cannot read it."""
    from conftest import build_site

    _two_hosts(tmp_path / "results", data, _canned_cuda(data), _canned_optimizer_state(("fp32",)))
    proc = build_site(tmp_path / "out", tmp_path / "results", docs=_mini_docs(), host=CUDA_HOST["slug"])
    assert proc.returncode != 0
    assert ("host cuda-test-gpu-80gb, experiment optimizer_state (summary): has no field "
            "'precision.mixed-master.total_bytes_per_param'") in proc.stderr
