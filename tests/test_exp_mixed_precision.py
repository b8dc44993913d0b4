"""mixed_precision on a tiny config: format limits, loss scaling, autocast dtypes, GradScaler skips."""
import json

import pytest
import torch

from experiments import mixed_precision as mp
from experiments.lib.cli import to_json

TINY = mp.Config(layers=1, hidden=16, heads=2, seq=16, batch=4, vocab=32, train_steps=3,
                 scale_exponents=(0, 8, 16, 24), min_run_time_s=0.01, scaler_steps=8, scaler_init_exp=30,
                 scaler_growth_interval=2)


@pytest.fixture(scope="module")
def data():
    return json.loads(to_json(mp.run(TINY, "cpu")))


def test_formats_closed_forms(data):
    f = data["formats"]
    # IEEE 754 binary16 / binary32 and bfloat16: smallest subnormal 2^(emin - mantissa bits)
    assert f["fp16"]["smallest_subnormal"] == 2.0 ** -24 and f["fp16"]["max"] == (2 - 2 ** -10) * 2 ** 15
    assert f["fp32"]["smallest_subnormal"] == 2.0 ** -149
    assert f["bf16"]["smallest_subnormal"] == 2.0 ** -133
    assert f["fp16"]["formula_matches_format"] and f["bf16"]["formula_matches_format"]
    if "fp8_e4m3fn" in f:  # OCP FP8: E4M3 max 448, smallest subnormal 2^-9
        assert f["fp8_e4m3fn"]["max"] == 448.0 and f["fp8_e4m3fn"]["smallest_subnormal"] == 2.0 ** -9


def test_smallest_positive_search():
    assert mp.smallest_positive(torch.float16, torch.finfo(torch.float16).smallest_normal) == 2.0 ** -24


def test_loss_scaling(data):
    for pop in ("params", "activations"):
        ls = data["loss_scaling"][pop]
        rows = ls["fp16"]
        assert rows[0]["scale"] == 1.0
        # scaling moves values out of the subnormal range
        assert rows[2]["subnormal_fraction"] <= rows[0]["subnormal_fraction"]
        assert rows[2]["zero_fraction"] <= rows[0]["zero_fraction"]
        # bf16 has fp32's exponent range: nothing flushes or overflows at any of these scales
        assert all(r["zero_fraction"] == 0 and r["overflow_fraction"] == 0 for r in ls["bf16"])
        for r in rows + ls["bf16"]:
            assert r["any_overflow"] is (r["overflow_fraction"] > 0)
    # at 2^24 the largest parameter gradients exceed fp16's max
    top = data["loss_scaling"]["params"]
    assert (top["fp16"][-1]["overflow_fraction"] > 0) == (top["abs_max"] * 2.0 ** 24 > 65504)


def test_autocast(data):
    dt = data["autocast_dtypes"]["autocast_bf16"]
    assert dt["linear"] == "bfloat16" and dt["matmul"] == "bfloat16"
    assert dt["layer_norm"] == "float32" and dt["cross_entropy"] == "float32"
    sc = data["step_costs"]
    assert sc["autocast_bf16"]["param_dtype"] == "float32"  # autocast keeps fp32 weights
    assert sc["autocast_bf16"]["saved_bytes"] < sc["fp32"]["saved_bytes"]
    for row in sc.values():
        assert row["time"]["half_iqr_ms"] == row["time"]["iqr_ms"] / 2


def test_grad_scaler(data):
    gs = data["grad_scaler"]
    assert gs["supported"] is True
    assert gs["skipped_steps"] >= 1  # starting at 2^30 overflows fp16
    assert gs["steps"][0]["skipped"] is True
    assert gs["skipped_steps_left_weights_unchanged"] and gs["applied_steps_changed_weights"]
    for r in gs["steps"]:
        if r["skipped"]:
            assert r["next_scale"] == r["scale"] * gs["backoff_factor"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run():
    d = json.loads(to_json(mp.run(TINY, "cuda")))
    assert "autocast_fp16" in d["step_costs"] and "autocast_fp16" in d["autocast_dtypes"]
    assert d["autocast_dtypes"]["autocast_fp16"]["linear"] == "float16"
    assert d["grad_scaler"]["supported"] is True
