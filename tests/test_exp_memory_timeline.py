"""memory_timeline: the profiler's timeline against the memory tracker, what each set-up changes, the panels,
the page on a mini site, and the CUDA-only allocator measurements (skipped without CUDA).

Every CPU test reads the one shared run of the ``test`` profile (``conftest.test_profile_data``).
"""
from __future__ import annotations

import copy
import hashlib
import pickle
import re

import pytest
import torch

from conftest import NEEDS_CUDA, TEST_HOST, build_chapter_site, make_envelope, site_text, test_profile_data, write_result
from experiments import memory_timeline as exp
from experiments.lib import timeline

PAGE = "01b-memory-over-one-step.md"
PART = "_cheatsheet/01b-memory-over-one-step.md"
STUBS = {p: f"# {p}\n" for p in ("01-where-the-memory-goes.md", "03-activations.md", "04-checkpointing.md",
                                 "07-will-it-fit.md", "09-error-ledger.md")}


@pytest.fixture(scope="module")
def data() -> dict:
    return test_profile_data("memory_timeline")


@pytest.fixture(scope="module")
def summary(data) -> dict:
    return exp.summarize(copy.deepcopy(data))


def test_timeline_peak_agrees_with_the_memory_tracker(data, summary) -> None:
    """The category bytes at the timeline's peak against MemTracker's peak over the same step."""
    assert set(data["setups"]) == set(exp.PROFILES["test"].setups)
    for name in data["setups"]:
        a = summary["setups"][name]["agreement"]
        tracker_total = data["setups"][name]["tracker"]["peak_bytes"]
        allowed = max(exp.AGREEMENT_TOLERANCE_RATIO * tracker_total, exp.AGREEMENT_TOLERANCE_BYTES)
        # parameters, gradients and optimizer state carry the same meaning in both: equal to the byte
        for group in ("params", "grads", "optimizer"):
            assert a["groups"][group]["difference_bytes"] == 0, (name, group, a["groups"][group])
        assert abs(a["groups"]["transient"]["difference_bytes"]) <= allowed, (name, a["groups"]["transient"])
        assert abs(summary["setups"][name]["peak"]["total_bytes"] - tracker_total) <= allowed, name
        assert a["within_tolerance"], (name, a)
    assert summary["all_within_tolerance"]


def test_the_peak_point_and_what_each_setup_changes(data, summary) -> None:
    s = summary["setups"]
    plain, full, acc, zeros = (s[n] for n in ("plain", "full_checkpointing", "accumulation", "zero_grad_zeros"))
    params = data["model"]["params_bytes"]
    for name, x in s.items():
        if x is None:
            assert name not in data["setups"]  # the page's set-ups that this profile did not record
            continue
        peak = x["peak"]
        assert peak["total_bytes"] == sum(peak["by_category_bytes"].values())
        assert peak["holder_bytes"] == max(peak["by_category_bytes"].values())
        assert peak["phase"] in exp.PHASE_LABELS and peak["by_category_bytes"]["params"] == params
        assert x["end_bytes"] < peak["total_bytes"]
    assert plain["peak"]["phase"] == "backward"
    # checkpointing keeps far fewer activations; accumulation keeps one micro-batch's
    assert full["peak"]["by_category_bytes"]["activations"] < plain["peak"]["by_category_bytes"]["activations"] / 4
    assert summary["accumulation_activations_ratio"] < 0.5 and acc["peak"]["by_category_bytes"]["grads"] == params
    # set_to_none=False: the gradients are live before the step starts; True: none are
    assert zeros["start_by_category_bytes"]["grads"] == params and plain["start_by_category_bytes"]["grads"] == 0
    assert zeros["peak"]["total_bytes"] > plain["peak"]["total_bytes"]
    # the phases were marked in order, step by step
    steps = exp.PROFILES["test"].zero_grad_steps
    assert [p["step"] for p in data["setups"]["zero_grad_zeros"]["timeline"]["phases"]][-1] == steps - 1
    assert data["setups"]["zero_grad_zeros"]["steps"] == steps
    assert plain["estimator"]["peak_phase"] == "backward" and 0.5 < plain["estimator"]["ratio"] < 2


def test_thinning_keeps_the_peak_the_first_and_the_last_point() -> None:
    scores = [0, 5, 1, 9, 2, 9.5, 3, 1, 0, 4] * 50
    keep = timeline.keep_indices(scores, 20)
    assert {0, len(scores) - 1, scores.index(9.5)} <= keep and len(keep) <= 23
    assert timeline.keep_indices([1, 2, 3], 20) == {0, 1, 2}


def test_the_allocator_history_replays_to_allocated_and_reserved() -> None:
    """The CUDA history's trace, as ``_snapshot()`` returns it, replayed (a canned trace: no GPU needed)."""
    trace = [{"action": "segment_alloc", "size": 2048, "time_us": 100}, {"action": "alloc", "size": 512, "time_us": 101},
             {"action": "alloc", "size": 1024, "time_us": 102}, {"action": "free_requested", "size": 512, "time_us": 103},
             {"action": "free_completed", "size": 512, "time_us": 103}, {"action": "segment_map", "size": 4096},
             {"action": "segment_unmap", "size": 4096}, {"action": "snapshot", "size": 0}]
    s = timeline.allocator_series(trace, allocated0=256, reserved0=1024, max_points=400)
    assert s["allocated_bytes"] == [256, 256, 768, 1792, 1280, 1280, 1280]
    assert s["reserved_bytes"] == [1024, 3072, 3072, 3072, 3072, 7168, 3072]
    assert s["time_us"][:5] == [0, 0, 1, 2, 3]
    snap = {"segments": [], "device_traces": [[{"action": "alloc", "size": 1,
                                                "frames": [{"filename": "f.py", "line": i, "name": "g"} for i in range(30)]}]]}
    timeline._trim_frames(snap, 8)
    assert [f["line"] for f in snap["device_traces"][0][0]["frames"]] == list(range(8))


MIB = 2**20
SNAPSHOT = pickle.dumps({"segments": [], "device_traces": [[]]})  # a stand-in for the allocator's snapshot
# What measure_cuda returns, canned (the measurement itself needs a GPU; see the CUDA tests below)
CANNED_CUDA = {
    "context": {"device_total_bytes": 1000 * MIB, "device_used_bytes": 600 * MIB, "allocator_reserved_bytes": 0,
                "outside_allocator_bytes": 600 * MIB},
    "history": {"time_us": [0, 1, 2, 3], "allocated_bytes": [10 * MIB, 40 * MIB, 30 * MIB, 10 * MIB],
                "reserved_bytes": [20 * MIB, 64 * MIB, 64 * MIB, 64 * MIB], "max_allocated_bytes": 40 * MIB,
                "max_reserved_bytes": 64 * MIB, "trace_events_count": 4, "snapshot_pickle_bytes": len(SNAPSHOT),
                "snapshot_file": exp.SNAPSHOT_FILE},
    "default_segments": {"max_allocated_bytes": 40 * MIB, "max_reserved_bytes": 64 * MIB},
    "expandable_segments": {"max_allocated_bytes": 40 * MIB, "max_reserved_bytes": 48 * MIB},
    "empty_cache": {"allocated_bytes": 10 * MIB, "reserved_before_bytes": 64 * MIB, "reserved_after_bytes": 20 * MIB},
}


def test_the_allocator_figures_derive_from_a_cuda_result(data) -> None:
    """The CUDA part's derivations, on canned numbers."""
    c = exp.summarize({**copy.deepcopy(data), "cuda": copy.deepcopy(CANNED_CUDA)})["cuda"]
    assert c["context_bytes"] == 600 * MIB and c["fragmentation_at_peak_bytes"] == 24 * MIB
    assert c["expandable_saves_bytes"] == 16 * MIB and c["empty_cache_released_bytes"] == 44 * MIB
    assert c["reserved_over_allocated_at_peak_ratio"] == 64 / 40


@pytest.fixture(scope="module")
def page_site(tmp_path_factory, data):
    """The chapter and its cheat-sheet part on a mini site over the test profile's run, as if measured on CUDA.

    The CPU run's timelines with the canned allocator part: the page's CUDA branch (the allocator's numbers,
    its figure, the snapshot download) is built nowhere else, since the GPU host has no mkdocs. The snapshot
    lies beside the result as the runner keeps it (``<name>.files/``, listed in the result's ``artifacts``).
    """
    root = tmp_path_factory.mktemp("timeline")
    env = make_envelope("memory_timeline", {**data, "cuda": CANNED_CUDA})
    env["artifacts"] = {exp.SNAPSHOT_FILE: {"bytes": len(SNAPSHOT), "sha256": hashlib.sha256(SNAPSHOT).hexdigest()}}
    files = write_result(root / "results", env).with_name("memory_timeline.files")
    files.mkdir()
    (files / exp.SNAPSHOT_FILE).write_bytes(SNAPSHOT)
    stubs = {**STUBS, "experiments/memory_timeline.py": "# the notebook link target\n"}
    return build_chapter_site(root, {"optimizer_state": test_profile_data("optimizer_state")}, (PAGE,), (PART,),
                              stubs=stubs)


def test_the_page_renders_this_hosts_timeline(page_site, data, summary) -> None:
    from generator.site.formatting import bytes_, pct, ratio

    out, opt = page_site, test_profile_data("optimizer_state")

    text = re.sub(r"\s+", " ", site_text(out, "01b-memory-over-one-step/index.html"))
    s = summary["setups"]
    for expected in (
        bytes_(s["plain"]["peak"]["total_bytes"]), bytes_(data["setups"]["plain"]["tracker"]["peak_bytes"]),
        ratio(s["plain"]["agreement"]["total_ratio"], 4), bytes_(s["plain"]["estimator"]["peak_bytes"]),
        bytes_(opt["optimizers"]["adamw"]["foreach"]["peak_bytes"]),
        bytes_(s["accumulation"]["peak"]["by_category_bytes"]["activations"]),
        ratio(summary["accumulation_activations_ratio"]), bytes_(s["full_checkpointing"]["peak"]["total_bytes"]),
        bytes_(s["zero_grad_zeros"]["start_by_category_bytes"]["grads"]),
        "Where is the peak of gradient accumulation, and which category holds it?",
        # the allocator, from the canned CUDA part
        "The CUDA context used 600 MiB", "reserved minus allocated (fragmentation and cache) was 24.0 MiB",
        # MemTracker's per-module table of the plain step
        f"GPT.layers.0 {bytes_(data['setups']['plain']['modules']['GPT.layers.0']['parameters_bytes'])}",
        f"The root's row is the step's peak ({bytes_(summary['modules']['root_peak_bytes'])}",
        "reserved 48.0 MiB against 64.0 MiB by default", "returned 44.0 MiB to the driver",
    ):
        assert expected in text, expected
    html = (out / "01b-memory-over-one-step/index.html").read_text(encoding="utf-8")
    # the snapshot is a file of the site, linked from the page: a download, nothing fetched, nothing inlined
    href = f"../files/{TEST_HOST['slug']}/memory_timeline/{exp.SNAPSHOT_FILE}"
    assert f'<a download href="{href}">{exp.SNAPSHOT_FILE}</a>' in html and "base64," not in html
    assert (page_site / "01b-memory-over-one-step" / href).resolve().read_bytes() == SNAPSHOT
    assert ">The caching allocator over the plain step<" in html  # its figure
    assert "No CUDA device on this host" not in text
    sheet = re.sub(r"\s+", " ", site_text(out, "cheatsheet/index.html"))
    pk = s["plain"]["peak"]
    assert f"Peak {bytes_(pk['total_bytes'])} in {pk['phase_label']} (largest: {pk['holder_label']}, " \
           f"{pct(pk['holder_share'], 0)})" in sheet
    assert "bf16 autocast" not in text  # a set-up this profile did not record is left out, not faked


def test_the_plot_draws_one_panel_per_setup(page_site, data, summary) -> None:
    """The page's figure (drawn by ``plot`` at build time): one titled panel per recorded set-up, the legend once."""
    html = (page_site / "01b-memory-over-one-step/index.html").read_text(encoding="utf-8")
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    panels = next(svg for svg in svgs if "allocation and free events" in svg and "zero_grad (shading)" in svg)
    titles = [summary["setups"][n]["label"] for n in data["setups"]]
    assert all(panels.count(f">{t}<") == 1 for t in titles), titles
    assert panels.count(">MiB<") == len(titles)  # one y axis per panel, none for the hidden spare axes
    assert ">parameters<" in panels and panels.count(">optimizer state<") == 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=f"{NEEDS_CUDA}: the caching allocator's history")
def test_cuda_allocator_history_snapshot_and_expandable_segments(tmp_path, monkeypatch) -> None:
    from experiments.lib import artifacts

    monkeypatch.setenv(artifacts.ENV, str(tmp_path))  # as the runner's child has it: the snapshot becomes a file
    cfg = exp.PROFILES["test"]
    before = timeline.cuda_memory_before_tensors("cuda")
    c = exp.measure_cuda(cfg, "cuda", before)
    h = c["history"]
    assert h["snapshot_file"] == exp.SNAPSHOT_FILE and "snapshot_pickle_base64" not in h
    raw = (tmp_path / exp.SNAPSHOT_FILE).read_bytes()
    assert len(raw) == h["snapshot_pickle_bytes"]
    snap = pickle.loads(raw)
    assert "segments" in snap and "device_traces" in snap and h["trace_events_count"] > 0
    assert 0 < h["max_allocated_bytes"] <= h["max_reserved_bytes"]
    assert max(h["allocated_bytes"]) <= max(h["reserved_bytes"])
    assert c["expandable_segments"]["max_allocated_bytes"] > 0
    assert c["empty_cache"]["reserved_after_bytes"] <= c["empty_cache"]["reserved_before_bytes"]
    assert exp.summarize_cuda(c)["fragmentation_at_peak_bytes"] >= 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=f"{NEEDS_CUDA}: the profiler's timeline of CUDA tensors")
def test_cuda_timeline_labels_the_step() -> None:
    x = exp.measure_setup(exp.PROFILES["test"], "cuda", "plain")
    params = sum(p.numel() * 4 for p in exp.build(exp.PROFILES["test"], "cpu", "none").parameters())
    assert max(x["timeline"]["bytes"]["params"]) == params
    assert max(x["timeline"]["bytes"]["optimizer"]) > 0 and x["tracker"]["peak_bytes"] > 0


def test_the_plain_steps_modules_from_memtracker(data, summary) -> None:
    """MemTracker's per-module statistics of the plain step: the root is the whole step, its parts add up."""
    mods = data["setups"]["plain"]["modules"]
    assert all(data["setups"][n]["modules"] is None for n in data["setups"] if n != "plain")
    names = list(mods)
    assert names[0] == "GPT" and all(n.startswith("GPT.") for n in names[1:])
    assert "GPT.layers.0" in names and all(n.count(".") < exp.PROFILES["test"].module_depth for n in names)
    root = mods["GPT"]
    assert root["parameters_bytes"] == data["model"]["params_bytes"]
    # the direct children own every parameter once (the layers' own entries sit one level below "GPT.layers")
    direct = [m for n, m in mods.items() if n.count(".") == 1 or n.startswith("GPT.layers.")]
    assert sum(m["parameters_bytes"] for m in direct) == root["parameters_bytes"]
    # each peak is everything live then: the root's backward peak is the tracker's peak, no module's is higher
    assert root["backward_peak"]["total_bytes"] == data["setups"]["plain"]["tracker"]["peak_bytes"]
    for m in mods.values():
        for phase in ("forward_peak", "backward_peak"):
            assert sum(m[phase]["by_category_bytes"].values()) == m[phase]["total_bytes"]
            assert m[phase]["total_bytes"] <= root["backward_peak"]["total_bytes"]
            assert m[phase]["by_category_bytes"]["params"] == root["parameters_bytes"]
    s = summary["modules"]
    assert s["root"] == "GPT" and s["root_over_tracker_ratio"] == 1.0 and s["top_child"] != "GPT"
    assert s["top_child_peak_bytes"] == max(r["peak_bytes"] for n, r in s["rows"].items() if n != "GPT")
