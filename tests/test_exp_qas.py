import json

import pytest

from experiments import qas as E
from experiments.lib.cli import to_json

TINY = E.Config(channels=(4, 8, 8), warmup_steps=60, steps=30, eval_every=10)


@pytest.fixture(scope="module")
def data():
    return E.run(TINY, "cpu")


def test_qas_json_and_plot(data):
    json.loads(to_json(data))
    assert set(E.plot(data)) == {"ratios", "accuracy"}


def test_int8_ratio_mismatch_is_s_squared(data):
    for name in data["layers"]:
        start = data["at_start"][name]
        # The int8 ratio is predicted from the fp32 gradient (dL/dW_bar = s dL/dW, W_bar = W / s) within 5 %
        # (the int8 forward adds rounding noise to the gradient).
        assert start["int8_measured_ratio"] == pytest.approx(start["int8_predicted_ratio"], rel=0.05)
        assert start["int8_measured_over_predicted_ratio"] == pytest.approx(
            start["int8_measured_ratio"] / start["int8_predicted_ratio"], rel=1e-12)
        assert start["weight_scale_rms_squared"] == pytest.approx(start["weight_scale_rms"] ** 2, rel=1e-9)
        assert data["fp32_over_int8_ratio"][name] == pytest.approx(1 / data["int8_over_fp32_ratio"][name], rel=1e-12)
        # ... and it is orders of magnitude below the fp32 ratio (about s**2 ~ 1e-5 smaller).
        assert data["int8_over_fp32_ratio"][name] < 1e-3
        # QAS brings it back to the fp32 order of magnitude.
        assert 0.2 < data["qas_over_fp32_ratio"][name] < 5


def test_qas_trains_and_plain_int8_does_not(data):
    warm = data["warmup_test_accuracy"]
    modes = data["modes"]
    # Without QAS the int8 weights barely move at the fp32 learning rate: accuracy stays at the warm start.
    assert abs(modes["int8"]["final_test_accuracy"] - warm) < 0.03
    assert modes["int8_qas"]["final_test_accuracy"] > warm + 0.05
    assert modes["fp32"]["final_test_accuracy"] > warm + 0.05
