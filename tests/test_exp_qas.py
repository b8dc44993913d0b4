"""The int8 graph's gradient-to-weight ratio falls by s_W**2, and QAS restores training (the ``test`` profile)."""
import pytest

from experiments import qas as E
from conftest import test_profile_data


@pytest.fixture(scope="module")
def data():
    return test_profile_data("qas")


def test_int8_ratio_mismatch_is_s_squared(data):
    s = E.summarize(data)
    for name in data["layers"]:
        start = data["at_start"][name]
        # The int8 ratio is predicted from the fp32 gradient (dL/dW_bar = s dL/dW, W_bar = W / s) within 5 %
        # (the int8 forward adds rounding noise to the gradient).
        assert start["int8_measured_ratio"] == pytest.approx(start["int8_predicted_ratio"], rel=0.05)
        assert s["at_start"][name]["int8_measured_over_predicted_ratio"] == pytest.approx(1, rel=0.05)
        # ... and it is orders of magnitude below the fp32 ratio (about s**2 ~ 1e-5 smaller).
        assert s["int8_over_fp32_ratio"][name] < 1e-3
        assert s["fp32_over_int8_ratio"][name] > 1e3
        # QAS brings it back to the fp32 order of magnitude.
        assert 0.2 < s["qas_over_fp32_ratio"][name] < 5


def test_qas_trains_and_plain_int8_does_not(data):
    gain = E.summarize(data)["accuracy_gain_over_warmup"]
    # Without QAS the int8 weights barely move at the fp32 learning rate: accuracy stays at the warm start.
    assert abs(gain["int8"]) < 0.03
    assert gain["int8_qas"] > 0.05
    assert gain["fp32"] > 0.05


def test_summary_by_hand():
    ratios = {"fp32": {"a": 1e-2}, "int8": {"a": 1e-7}, "int8_qas": {"a": 2e-2}}
    data = {"layers": ["a"], "warmup_test_accuracy": 0.5,
            "modes": {m: {"ratio_weight": r, "curve": [{"step": 0, "test_accuracy": 0.5},
                                                       {"step": 9, "test_accuracy": acc}]}
                      for (m, r), acc in zip(ratios.items(), (0.9, 0.5, 0.8))},
            "at_start": {"a": {"weight_scale_rms": 3e-3, "int8_measured_ratio": 2.2e-7, "int8_predicted_ratio": 2e-7}}}
    s = E.summarize(data)
    assert s["int8_over_fp32_ratio"]["a"] == pytest.approx(1e-5)
    assert s["fp32_over_int8_ratio"]["a"] == pytest.approx(1e5)
    assert s["qas_over_fp32_min"] == s["qas_over_fp32_max"] == pytest.approx(2.0)
    assert s["final_test_accuracy"] == {"fp32": 0.9, "int8": 0.5, "int8_qas": 0.8}
    assert s["accuracy_gain_over_warmup"]["int8_qas"] == pytest.approx(0.3)
    assert s["at_start"]["a"]["weight_scale_rms_squared"] == pytest.approx(9e-6)
    assert s["at_start"]["a"]["int8_measured_over_predicted_ratio"] == pytest.approx(1.1)
    assert list(s["labels"]) == ["fp32", "int8", "int8_qas"]
