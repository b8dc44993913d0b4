"""checkpointing on a tiny config: identical gradients, less memory, more FLOPs, the budget search."""
import json

import pytest
import torch

from experiments import checkpointing as ck
from experiments.lib.cli import to_json
from experiments.lib.threads import cpu_threads

TINY = ck.Config(layers=4, hidden=16, heads=2, seq=16, batch=2, vocab=32, min_run_time_s=0.01,
                 budget_bytes_cpu=3 * 2**20, max_batch=256)


@pytest.fixture(scope="module")
def data():
    return json.loads(to_json(ck.run(TINY, "cpu")))


def test_every_policy_gives_the_gradients_of_none(data):
    assert set(data["policies"]) == {"none", "every_layer", "segments_k2", "selective_attention_core",
                                     "sac_save_matmuls"}  # k = sqrt(4) = 2
    for name, row in data["policies"].items():
        assert row["max_abs_grad_diff_vs_none"] == 0.0, name


def test_memory_down_flops_up(data):
    p = data["policies"]
    for name in ("every_layer", "segments_k2", "selective_attention_core", "sac_save_matmuls"):
        assert p[name]["peak_bytes"] < p["none"]["peak_bytes"], name
        assert p[name]["flops"] >= p["none"]["flops"], name
    # full recomputation adds one forward of the layers: at most 4/3 of forward + backward matmul FLOPs
    assert 1.0 < p["every_layer"]["flops_ratio_vs_none"] <= 4 / 3 + 1e-9
    # the attention core's matmuls are a small part of the layer's
    assert p["selective_attention_core"]["flops_ratio_vs_none"] < p["every_layer"]["flops_ratio_vs_none"]


def test_derived_figures(data):
    p = data["policies"]
    for name, row in p.items():
        assert row["time"]["half_iqr_ms"] == row["time"]["iqr_ms"] / 2, name
        assert row["time_over_flops_ratio"] == pytest.approx(row["time_ratio_vs_none"] / row["flops_ratio_vs_none"])
        assert row["time_well_above_flops"] is (row["time_over_flops_ratio"] > data["time_over_flops_threshold"])
    assert data["time_over_flops_threshold"] == ck.TIME_OVER_FLOPS_THRESHOLD
    sq, full = p[f"segments_k{data['sqrt_k']}"], p["every_layer"]
    assert data["sqrt_k_peak_above_every_layer"] is (sq["peak_bytes"] > full["peak_bytes"])
    assert data["sqrt_k_peak_below_every_layer"] is (sq["peak_bytes"] < full["peak_bytes"])
    for key in ("preserve", "no_preserve"):
        t = data["rng"][key]["time"]
        assert t["half_iqr_ms"] == t["iqr_ms"] / 2


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
            peak = ck.measured_peak(TINY, "cpu", row["kind"], row["k"], row["largest_batch"]["max_batch"] + 1)
        assert peak > budget, name
    assert data["policies"]["every_layer"]["largest_batch"]["max_batch"] > \
        data["policies"]["none"]["largest_batch"]["max_batch"]


def test_selective_sac_same_gradients_as_none_directly():
    idx = ck.tokens(TINY, 2, "cpu")
    ref = ck.grads_after_step(ck.build(TINY, "cpu", "none"), idx, "none", 0)
    for kind in ("sac", "core"):
        got = ck.grads_after_step(ck.build(TINY, "cpu", kind), idx, kind, 0)
        assert all(torch.equal(a, b) for a, b in zip(got, ref)), kind


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run():
    cfg = ck.Config(layers=4, hidden=64, heads=2, seq=64, batch=2, vocab=64, min_run_time_s=0.05,
                    cuda_budget_fraction=0.001, max_batch=64)
    d = json.loads(to_json(ck.run(cfg, "cuda")))
    assert d["budget_source"] == "cuda_device_memory_fraction"
    assert "cuda_max_allocated_bytes" in d["policies"]["none"]
    assert all(row["max_abs_grad_diff_vs_none"] == 0.0 for row in d["policies"].values())
    assert d["rng"]["preserve"]["grads_equal_to_none"] is True
