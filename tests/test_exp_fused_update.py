"""Fused and in-place updates: one live gradient and the same weights; what in place saves and breaks
(the ``test`` profile)."""
import pytest

from experiments import fused_update as E
from conftest import test_profile_data


@pytest.fixture(scope="module")
def data():
    return test_profile_data("fused_update")


@pytest.fixture(scope="module")
def summary(data):
    return E.summarize(data)


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_fused_keeps_one_gradient_and_same_weights(data, summary, opt):
    f, s = data["fused"][opt], summary["fused"][opt]
    # Vanilla holds every gradient at once (exactly the parameter bytes); fused at most the largest one.
    assert s["vanilla"]["max_live_grad_bytes"] == summary["predicted_vanilla_grad_bytes"] == data["param_bytes"]
    assert s["fused"]["max_live_grad_bytes"] == summary["predicted_fused_grad_bytes"] == data["largest_param_bytes"]
    assert f["fused"]["peak"]["total_bytes"] < f["vanilla"]["peak"]["total_bytes"]
    assert 0 < s["peak_saving_fraction"] < 1 and s["grad_saving_bytes"] > 0
    # Bit-identical weights after the same steps (same per-tensor arithmetic, foreach=False).
    assert f["max_abs_weight_diff"] == 0.0 and s["weights_identical"]
    # In fused mode no event ever sees two layers' gradients alive at once.
    assert all(len(e["live_grad_bytes_by_layer"]) <= 1 for e in f["fused"]["events"])
    assert f["fused"]["grads_left_after_step"] == 0
    assert f["vanilla"]["grads_left_after_step"] == 0     # zero_grad(set_to_none=True) after the step


def test_inplace_rows(data, summary):
    rows = data["inplace"]
    assert list(rows) == ["relu", "relu_inplace", "relu6", "relu6_inplace"]
    for row in rows.values():
        assert row["grads_equal_out_of_place"]
    # ReLU keeps its output, which the next Linear keeps anyway: one hidden activation per layer.
    hidden = data["hidden_activation_bytes"]
    assert rows["relu"]["saved_bytes"] >= hidden
    # ReLU6 (hardtanh) keeps its input as well: one more hidden activation per layer.
    assert rows["relu6"]["saved_bytes"] - rows["relu"]["saved_bytes"] == hidden
    assert summary["inplace"]["relu6"]["extra_saved_bytes_vs_relu"] == hidden
    # In place changes nothing that autograd saves after a Linear.
    assert summary["inplace"]["relu_inplace"]["saved_bytes_change_from_out_of_place"] == 0
    assert summary["inplace"]["relu"]["memory_equal_out_of_place"]


def test_inplace_differences_by_hand():
    def row(act, inplace, saved, inference):
        return {"activation": act, "inplace": inplace, "saved_bytes": saved,
                "inference_peak_activation_bytes": inference}

    data = {"fused": {}, "param_bytes": 10, "largest_param_bytes": 4, "breakages": {},
            "updates": {"in_place": {"resident_before_bytes": 100, "peak_total_bytes": 100,
                                     "max_abs_diff_in_place": 0.0},
                        "out_of_place": {"resident_before_bytes": 100, "peak_total_bytes": 108,
                                         "max_abs_diff_in_place": 1e-9}},
            "inplace": {"relu": row("relu", False, 100, 50), "relu_inplace": row("relu", True, 100, 40),
                        "relu6": row("relu6", False, 150, 50), "relu6_inplace": row("relu6", True, 130, 40)}}
    s = E.summarize(data)
    assert s["inplace"]["relu_inplace"]["inference_peak_activation_bytes_change_from_out_of_place"] == -10
    assert not s["inplace"]["relu_inplace"]["memory_equal_out_of_place"]
    assert s["inplace"]["relu6_inplace"]["saved_bytes_change_from_out_of_place"] == -20
    assert s["inplace"]["relu6"]["extra_saved_bytes_vs_relu"] == 50
    assert s["inplace"]["relu6_inplace"]["extra_saved_bytes_vs_relu"] == 30
    assert s["updates"]["out_of_place"]["extra_peak_bytes"] == 8
    assert not s["updates"]["out_of_place"]["weights_equal_in_place"]
    assert s["updates"]["in_place"]["weights_equal_in_place"]


def test_inplace_update_and_breakages(data, summary):
    up = summary["updates"]
    # p = p - lr * g allocates lr * g and the new weight: twice the largest parameter at the peak.
    assert up["out_of_place"]["extra_peak_bytes"] == 2 * data["largest_param_bytes"]
    assert up["in_place"]["extra_peak_bytes"] == 0
    cases = data["breakages"]
    assert not cases["segment_no_checkpoint"]["raises"]
    assert cases["checkpoint_non_reentrant"]["raises"]
    assert cases["saved_output_modified"]["raises"]
    assert set(summary["breakages"]) == set(cases)
