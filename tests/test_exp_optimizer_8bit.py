"""optimizer_8bit: bitsandbytes' 8-bit AdamW state against the estimator, training against fp32 AdamW, the step's
memory seen by two instruments, and a host without bitsandbytes.

The CPU tests read the one shared run of the ``test`` profile (``conftest.test_profile_data``).
"""
from __future__ import annotations

import copy
import sys

import pytest

from conftest import test_profile_data
from experiments import optimizer_8bit as exp
from experiments.lib import estimator


@pytest.fixture(scope="module")
def data() -> dict:
    return test_profile_data("optimizer_8bit")


@pytest.fixture(scope="module")
def summary(data) -> dict:
    return exp.summarize(copy.deepcopy(data))


def test_8bit_state_bytes_are_the_estimators_tensor_by_tensor(data, summary) -> None:
    assert data["bitsandbytes"]["available"], data["bitsandbytes"]["error"]
    eight = data["optimizers"]["adamw-8bit"]["state"]
    shapes = data["model"]["shapes"]
    assert list(eight) == list(shapes)
    for name, t in eight.items():
        n = t["numel"]
        if n >= estimator.BNB_MIN_8BIT_SIZE:  # two uint8 moments and one fp32 absmax per 256-value block each
            assert t["dtypes"] == {"state1": "uint8", "state2": "uint8", "absmax1": "float32", "absmax2": "float32"}
            assert t["state_bytes"] == 2 * n + 2 * 4 * -(-n // 256), name
        else:  # small tensors keep fp32 moments
            assert t["dtypes"] == {"state1": "float32", "state2": "float32"} and t["state_bytes"] == 8 * n, name
        assert t["state_bytes"] == estimator.optimizer_bytes("adamw-8bit", [shapes[name]], 4), name
    assert any(t["numel"] >= estimator.BNB_MIN_8BIT_SIZE for t in eight.values()), "the test model has an 8-bit tensor"
    # the two 256-entry fp32 quantization maps, shared by every tensor, counted once
    assert data["optimizers"]["adamw-8bit"]["shared_state_bytes"] == 2 * 256 * 4
    s = summary["optimizers"]
    assert s["adamw-8bit"]["per_tensor_over_predicted_ratio"] == 1.0 and s["adamw"]["state_over_predicted_ratio"] == 1.0
    assert summary["state_ratio"] < 0.5 and s["adamw-8bit"]["eight_bit_tensors"] >= 1


def test_both_train_from_the_same_start_and_learn(data, summary) -> None:
    a, b = data["optimizers"]["adamw"], data["optimizers"]["adamw-8bit"]
    assert a["losses"][0] == b["losses"][0], "same weights, same first batch"
    assert len(a["losses"]) == len(b["losses"]) == exp.PROFILES["test"].steps
    for s in summary["optimizers"].values():
        assert s["final_train_loss"] < s["first_train_loss"] and 0 < s["test_accuracy"] <= 1
    assert summary["measured"] and 0.5 < summary["final_loss_ratio"] < 2


def test_the_profiler_sees_the_8bit_steps_fp32_copies_the_tracker_does_not(data, summary) -> None:
    """bitsandbytes' CPU update dequantizes both moments of a tensor to fp32 inside one custom operator."""
    eight = data["optimizers"]["adamw-8bit"]
    largest = max(t["numel"] for t in eight["state"].values() if "uint8" in t["dtypes"].values())
    s = summary["optimizers"]["adamw-8bit"]
    assert s["step_added_bytes"] >= 2 * 4 * largest  # at least the two fp32 moments of the largest 8-bit tensor
    assert s["step_unseen_by_tracker_bytes"] >= 2 * 4 * largest
    # fp32 AdamW's step: the tracker and the profiler agree on its highest live bytes within a few hundred bytes
    a = data["optimizers"]["adamw"]["step"]
    assert abs(a["profiler_peak_bytes"] - a["tracker_peak_bytes"]) <= 1024


def test_a_host_without_bitsandbytes_measures_the_fp32_side_and_says_why(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # "import bitsandbytes" raises ImportError
    cfg = exp.Config(widths=(64, 16, 10), batch=8, steps=3, timing_s=0.01)
    data = exp.run(cfg, "cpu")
    assert data["bitsandbytes"]["available"] is False
    assert data["bitsandbytes"]["error"].startswith("ModuleNotFoundError: import of bitsandbytes halted")
    assert data["optimizers"]["adamw-8bit"] is None and data["optimizers"]["adamw"]["state_bytes"] > 0
    s = exp.summarize(data)
    assert s["measured"] is False and s["state_ratio"] is None and s["optimizers"]["adamw-8bit"] is None
    assert s["bitsandbytes_error"] == data["bitsandbytes"]["error"]
