"""checkpointing on its test profile: identical gradients, less memory, more FLOPs, the budget search; and what
summarize derives from stored timings, FLOPs and peaks."""
import json

import pytest
import torch

from experiments import checkpointing as ck
from experiments.lib.cli import to_json
from experiments.lib.threads import cpu_threads
from conftest import test_profile_data

CFG = ck.PROFILES["test"]


@pytest.fixture(scope="module")
def data():
    return test_profile_data("checkpointing")


@pytest.fixture(scope="module")
def summary(data):
    return ck.summarize(data)


def test_every_policy_gives_the_gradients_of_none(data):
    assert list(data["policies"]) == ["none", "every_layer", "segments_k2", "selective_attention_core",
                                      "sac_save_matmuls"]  # k = sqrt(4) = 2
    for name, row in data["policies"].items():
        assert row["max_abs_grad_diff_vs_none"] == 0.0, name


def test_memory_down_flops_up(data, summary):
    p, sp = data["policies"], summary["policies"]
    for name in ("every_layer", "segments_k2", "selective_attention_core", "sac_save_matmuls"):
        assert p[name]["peak_bytes"] < p["none"]["peak_bytes"], name
        assert p[name]["flops"] >= p["none"]["flops"], name
    # full recomputation adds one forward of the layers: at most 4/3 of forward + backward matmul FLOPs
    assert 1.0 < sp["every_layer"]["flops_ratio_vs_none"] <= 4 / 3 + 1e-9
    # the attention core's matmuls are a small part of the layer's
    assert sp["selective_attention_core"]["flops_ratio_vs_none"] < sp["every_layer"]["flops_ratio_vs_none"]


def test_rng_state(data):
    rng = data["rng"]
    assert rng["preserve"]["grads_equal_to_none"] is True
    assert rng["no_preserve"]["grads_equal_to_none"] is False
    assert rng["no_preserve"]["max_abs_grad_diff_vs_none"] > 0


def test_budget_search_is_tight(data):
    budget = data["budget_bytes"]
    for name, row in data["policies"].items():
        lb = row["largest_batch"]
        assert lb["max_batch"] >= 1 and lb["peak_at_max_bytes"] <= budget, name
    for name in ("none", "every_layer"):  # one more sample no longer fits (measured again here)
        row = data["policies"][name]
        with cpu_threads(1, "cpu"):
            peak = ck.measured_peak(CFG, "cpu", row["kind"], row["k"], row["largest_batch"]["max_batch"] + 1)
        assert peak > budget, name
    assert data["policies"]["every_layer"]["largest_batch"]["max_batch"] > \
        data["policies"]["none"]["largest_batch"]["max_batch"]


def canned_policy(median_ms: float, iqr_ms: float, flops: int, peak: int, max_batch: int, k: int = 0) -> dict:
    return {"kind": "segments" if k else "none", "k": k, "peak_bytes": peak, "activations_bytes": peak // 2,
            "temporaries_bytes": 0, "flops": flops, "max_abs_grad_diff_vs_none": 0.0,
            "largest_batch": {"max_batch": max_batch, "peak_at_max_bytes": peak, "probes": 3,
                              "guess_from_two_points": max_batch},
            "time": {"median_ms": median_ms, "iqr_ms": iqr_ms, "runs": 10}}


def test_summary_from_canned_measurements():
    """Ratios, the time-over-FLOPs verdict, the k = sqrt(N) comparison and the labels, exactly."""
    data = {
        "model": {"layers": 9}, "sqrt_k": 3, "budget_bytes": 1000, "budget_source": "config",
        "policies": {"none": canned_policy(10.0, 2.0, 300, 800, 4),
                     "every_layer": canned_policy(12.0, 1.0, 400, 200, 16, k=1),      # 1.2x time, 1.33x FLOPs
                     "segments_k3": canned_policy(20.0, 4.0, 400, 300, 10, k=3)},    # 2x time: overhead-bound
        "rng": {"preserve": {"time": {"median_ms": 11.0, "iqr_ms": 1.0}},
                "no_preserve": {"time": {"median_ms": 10.0, "iqr_ms": 0.5}}},
    }
    s = ck.summarize(data)
    full, sq = s["policies"]["every_layer"], s["policies"]["segments_k3"]
    assert full["peak_ratio_vs_none"] == 0.25 and full["batch_ratio_vs_none"] == 4.0
    assert full["time_ratio_vs_none"] == 1.2 and full["flops_ratio_vs_none"] == 4 / 3
    assert full["time_well_above_flops"] is False and sq["time_well_above_flops"] is True
    assert s["policies"]["none"]["time_half_iqr_ms"] == 1.0
    assert s["sqrt_k_policy"] == "segments_k3"
    assert s["sqrt_k_peak_above_every_layer"] is True and s["sqrt_k_peak_below_every_layer"] is False
    assert s["budget_from_config"] is True
    assert s["rng"]["preserve_overhead_ratio"] == 1.1
    assert s["rng"]["overhead_within_spread"] is True  # 1 ms apart, IQR 1 ms
    assert full["kept"] == "each layer's input" and sq["kept"] == "one input per 3-layer segment"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run():
    cfg = ck.Config(layers=4, hidden=64, heads=2, seq=64, batch=2, vocab=64, min_run_time_s=0.05,
                    cuda_budget_fraction=0.001, max_batch=64)
    d = json.loads(to_json(ck.run(cfg, "cuda")))
    assert d["budget_source"] == "cuda_device_memory_fraction"
    assert ck.summarize(d)["budget_from_config"] is False
    assert d["policies"]["none"]["cuda_max_allocated_bytes"] > 0
    assert all(row["max_abs_grad_diff_vs_none"] == 0.0 for row in d["policies"].values())
    assert d["rng"]["preserve"]["grads_equal_to_none"] is True
