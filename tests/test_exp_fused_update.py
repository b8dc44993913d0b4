import json

import pytest

from experiments import fused_update as E
from experiments.lib.cli import to_json

TINY = E.Config(widths=(64, 96, 128, 10), batch=16, steps=2)


@pytest.fixture(scope="module")
def data():
    return E.run(TINY, "cpu")


def test_json_and_plot(data):
    json.loads(to_json(data))
    assert set(E.plot(data)) == {"grads_timeline", "inplace"}


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_fused_keeps_one_gradient_and_same_weights(data, opt):
    f = data["fused"][opt]
    # Vanilla holds every gradient at once (exactly the parameter bytes); fused at most the largest one.
    assert f["vanilla"]["max_live_grad_bytes"] == f["predicted_vanilla_grad_bytes"] == f["param_bytes"]
    assert f["fused"]["max_live_grad_bytes"] == f["predicted_fused_grad_bytes"] == f["largest_param_bytes"]
    assert f["fused"]["peak"]["total_bytes"] < f["vanilla"]["peak"]["total_bytes"]
    # Bit-identical weights after the same steps (same per-tensor arithmetic, foreach=False).
    assert f["weights_identical"] and f["max_abs_weight_diff"] == 0.0
    # In fused mode no event ever sees two layers' gradients alive at once.
    assert all(len(e["live_grad_bytes_by_layer"]) <= 1 for e in f["fused"]["events"])
    assert f["fused"]["grads_left_after_step"] == 0


def test_inplace_rows(data):
    for row in data["inplace"]:
        assert row["grads_equal_out_of_place"]
    by = {(r["activation"], r["inplace"]): r for r in data["inplace"]}
    # ReLU keeps its output, which the next Linear keeps anyway: one hidden activation per layer.
    hidden = by[("relu", False)]["hidden_activation_bytes"]
    assert by[("relu", False)]["saved_bytes"] >= hidden
    # ReLU6 (hardtanh) keeps its input as well: one more hidden activation per layer.
    assert by[("relu6", False)]["saved_bytes"] - by[("relu", False)]["saved_bytes"] == hidden
    # The differences the page quotes: against the same activation out of place, and against ReLU.
    for (act, inplace), row in by.items():
        base, relu = by[(act, False)], by[("relu", inplace)]
        assert row["saved_bytes_change_from_out_of_place"] == row["saved_bytes"] - base["saved_bytes"]
        assert (row["inference_peak_activation_bytes_change_from_out_of_place"]
                == row["inference_peak_activation_bytes"] - base["inference_peak_activation_bytes"])
        assert row["memory_equal_out_of_place"] == (
            row["saved_bytes"] == base["saved_bytes"]
            and row["inference_peak_activation_bytes"] == base["inference_peak_activation_bytes"])
        assert row["extra_saved_bytes_vs_relu"] == row["saved_bytes"] - relu["saved_bytes"]
    assert by[("relu6", False)]["extra_saved_bytes_vs_relu"] == hidden
    assert by[("relu", False)]["memory_equal_out_of_place"]


def test_inplace_update_and_breakages(data):
    up = {r["update"].split(":")[0]: r for r in data["updates"]}
    # p = p - lr * g allocates lr * g and the new weight: twice the largest parameter at the peak.
    assert up["out of place"]["extra_peak_bytes"] == 2 * up["out of place"]["largest_param_bytes"]
    assert up["in place"]["extra_peak_bytes"] == 0
    cases = {r["case"]: r for r in data["breakages"]}
    assert not cases["in-place on a segment's input, no checkpoint"]["raises"]
    assert cases["the same segment under checkpoint (non-reentrant)"]["raises"]
    assert cases["in-place on a tensor autograd saved (sigmoid output)"]["raises"]
