"""mixed_precision on its test profile: format limits, loss scaling, autocast dtypes, GradScaler skips; and what
summarize derives from them."""
import json
import math

import pytest
import torch

from experiments import mixed_precision as mp
from experiments.lib.cli import to_json
from conftest import test_profile_data

CFG = mp.PROFILES["test"]


@pytest.fixture(scope="module")
def data():
    return test_profile_data("mixed_precision")


@pytest.fixture(scope="module")
def summary(data):
    return mp.summarize(data)


def test_formats_closed_forms(data, summary):
    f, sf = data["formats"], summary["formats"]
    # IEEE 754 binary16 / binary32 and bfloat16: smallest subnormal 2^(emin - mantissa bits)
    assert f["fp16"]["smallest_subnormal"] == 2.0 ** -24 and f["fp16"]["max"] == (2 - 2 ** -10) * 2 ** 15
    assert f["fp32"]["smallest_subnormal"] == 2.0 ** -149
    assert f["bf16"]["smallest_subnormal"] == 2.0 ** -133
    assert sf["fp16"]["formula_matches_format"] and sf["bf16"]["formula_matches_format"]
    assert sf["fp16"]["log2_range"] == pytest.approx(math.log2(65504) + 24)  # 2^-24 .. 65504
    assert sf["fp16"]["has_subnormals"] is True
    if "fp8_e4m3fn" in f:  # OCP FP8: E4M3 max 448, smallest subnormal 2^-9
        assert f["fp8_e4m3fn"]["max"] == 448.0 and f["fp8_e4m3fn"]["smallest_subnormal"] == 2.0 ** -9
    assert summary["cheatsheet_formats"][:3] == ["fp32", "fp16", "bf16"]
    assert summary["formula_mismatch"] == [f[n]["dtype"] for n in f if not sf[n]["formula_matches_format"]]


def test_smallest_positive_search():
    assert mp.smallest_positive(torch.float16, torch.finfo(torch.float16).smallest_normal) == 2.0 ** -24


def test_loss_scaling(data, summary):
    for pop in ("params", "activations"):
        ls = data["loss_scaling"][pop]
        rows = ls["fp16"]
        assert rows[0]["scale"] == 1.0 and summary["loss_scaling"][pop]["fp16"][0]["scale_log2"] == 0
        # scaling moves values out of the subnormal range
        assert rows[2]["subnormal_fraction"] <= rows[0]["subnormal_fraction"]
        assert rows[2]["zero_fraction"] <= rows[0]["zero_fraction"]
        # bf16 has fp32's exponent range: nothing flushes or overflows at any of these scales
        assert all(r["zero_fraction"] == 0 and r["overflow_fraction"] == 0 for r in ls["bf16"])
        # the best scale loses no more than scale 1
        best = summary["loss_scaling"][pop]["best_fp16_lost_fraction"]
        assert best <= summary["loss_scaling"][pop]["fp16"][0]["lost_fraction"]
    # at 2^24 the largest parameter gradients exceed fp16's max
    top = data["loss_scaling"]["params"]
    assert summary["loss_scaling"]["params"]["fp16"][-1]["any_overflow"] == (top["abs_max"] * 2.0 ** 24 > 65504)


def test_autocast(data, summary):
    dt = data["autocast_dtypes"]["autocast_bf16"]
    assert dt["linear"] == "bfloat16" and dt["matmul"] == "bfloat16"
    assert dt["layer_norm"] == "float32" and dt["cross_entropy"] == "float32"
    sc = data["step_costs"]
    assert list(sc) == ["fp32", "autocast_bf16"]
    assert sc["autocast_bf16"]["param_dtype"] == "float32"  # autocast keeps fp32 weights
    assert sc["autocast_bf16"]["saved_bytes"] < sc["fp32"]["saved_bytes"]
    assert summary["step_costs"]["autocast_bf16"]["saved_ratio_vs_fp32"] < 1
    assert summary["autocast"] == {"mode": "autocast_bf16", "dtype": "bf16", "label": "autocast bf16",
                                   "fp16_measured": False, "layer_norm_dtype": "float32"}


def test_grad_scaler(data, summary):
    gs, sgs = data["grad_scaler"], summary["grad_scaler"]
    assert gs["supported"] is True
    assert sgs["skipped_steps"] >= 1  # starting at 2^30 overflows fp16
    assert sgs["steps"][0]["skipped"] is True and sgs["init_scale_log2"] == CFG.scaler_init_exp
    assert sgs["skipped_steps_left_weights_unchanged"] and sgs["applied_steps_changed_weights"]
    for r, s in zip(gs["steps"], sgs["steps"]):
        if s["skipped"]:
            assert r["next_scale"] == r["scale"] * gs["backoff_factor"]


def test_summary_picks_the_autocast_set_up_a_host_measured():
    """bf16 where it was measured, else fp16; the page says which without looking for keys itself."""
    step = {"peak": {"total_bytes": 100}, "saved_bytes": 10, "param_dtype": "float32",
            "time": {"median_ms": 2.0, "iqr_ms": 0.5, "runs": 5}}
    dtypes = {"layer_norm": "float32"}
    fp16_only = {"step_costs": {"fp32": step, "autocast_fp16": step}, "autocast_dtypes": {"autocast_fp16": dtypes}}
    both = {"step_costs": {"fp32": step, "autocast_fp16": step, "autocast_bf16": step},
            "autocast_dtypes": {"autocast_fp16": dtypes, "autocast_bf16": dtypes}}
    assert mp.summarize_autocast(fp16_only)["mode"] == "autocast_fp16"
    assert mp.summarize_autocast(fp16_only)["fp16_measured"] is True
    assert mp.summarize_autocast(both)["dtype"] == "bf16" and mp.summarize_autocast(both)["fp16_measured"] is True
    assert mp.summarize_step_costs(both["step_costs"])["autocast_fp16"]["time_half_iqr_ms"] == 0.25


def test_summary_of_grad_scaler_steps():
    rows = [{"step": 0, "scale": 8.0, "next_scale": 4.0, "loss": 1.0, "weights_changed": False},
            {"step": 1, "scale": 4.0, "next_scale": 4.0, "loss": 1.0, "weights_changed": True},
            {"step": 2, "scale": 4.0, "next_scale": 8.0, "loss": 1.0, "weights_changed": True}]
    s = mp.summarize_grad_scaler({"supported": True, "init_scale": 8.0, "steps": rows})
    assert [r["skipped"] for r in s["steps"]] == [True, False, False]
    assert s["skipped_steps"] == 1 and s["final_scale"] == 8.0 and s["final_scale_log2"] == 3.0
    assert s["skipped_steps_left_weights_unchanged"] and s["applied_steps_changed_weights"]
    rows[0]["weights_changed"] = True  # a skipped step that moved the weights is reported
    assert mp.summarize_grad_scaler({"supported": True, "init_scale": 8.0, "steps": rows})[
        "skipped_steps_left_weights_unchanged"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run():
    d = json.loads(to_json(mp.run(CFG, "cuda")))
    assert "autocast_fp16" in d["step_costs"] and "autocast_fp16" in d["autocast_dtypes"]
    assert d["autocast_dtypes"]["autocast_fp16"]["linear"] == "float16"
    assert d["grad_scaler"]["supported"] is True
    assert mp.summarize(d)["autocast"]["fp16_measured"] is True
