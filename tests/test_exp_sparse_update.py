"""Sparse update: measured costs add up exactly, a bias costs no activation, partial channels help only depthwise
convolutions, and the DP search stays in budget and agrees with exhaustive search (the ``test`` profile)."""
import pytest
import torch

from experiments import sparse_update as E
from experiments.lib.formulas import optimizer_state_bytes
from experiments.lib.mbv2 import FrozenWeightConv2d
from conftest import test_profile_data


@pytest.fixture(scope="module")
def data():
    return test_profile_data("sparse_update")


@pytest.fixture(scope="module")
def summary(data):
    return E.summarize(data)


def test_costs_are_exactly_additive(data, summary):
    # Every configuration's measured bytes (saved tensors + grads + Adam state) equal the sum of per-layer costs.
    assert summary["cost_model_max_rel_error"] == 0.0
    assert summary["layer_cost_model_max_rel_error"] == 0.0
    for unit, row in data["layers"].items():
        for option, o in row["options"].items():
            assert o["measured_total_bytes"] == summary["layers"][unit]["options"][option]["predicted_total_bytes"]
    for p in summary["frontier"].values():
        assert p["measured_bytes"] == p["predicted_bytes"]


def test_bias_costs_no_activation_and_adam_state(data):
    channels = {"stem": 4, "b1.dw": 4, "b1.pw-proj": 4, "b2.pw-exp": 8, "b2.dw": 8, "b2.pw-proj": 8, "head": 8}
    assert list(data["layers"]) == list(channels)
    for name, layer in data["layers"].items():
        bias = layer["options"]["bias"]
        c = channels[name]
        assert bias["saved_bytes"] == 0                  # a bias gradient needs no stored input
        assert bias["grad_bytes"] == 4 * c
        assert bias["optimizer_bytes"] == optimizer_state_bytes("adam", [(c,)])


def test_partial_channels_save_activation_only_for_depthwise(data):
    for name, layer in data["layers"].items():
        half, full = layer["options"]["weight_0.5"]["saved_bytes"], layer["options"]["weight_1"]["saved_bytes"]
        if ".dw" in name:
            assert half * 2 == full
        elif name != "stem":   # stem's input is the batch itself, never counted
            assert half == full > 0
        # Path: ReLU6 keeps its input (batch x channels x H x W fp32); the linear projection keeps nothing.
        assert (layer["path_bytes"] == 0) == name.endswith("pw-proj")


def test_search_and_baselines(data, summary):
    assert summary["all_dp_equal_exhaustive"]
    # The DP ran on the exact grid (the gcd of the costs), so equality with exhaustive search is exact.
    assert all(s["dp_grid_exact"] for s in summary["searches"])
    for s in summary["searches"]:
        assert s["predicted_bytes"] <= s["budget_bytes"]
        assert s["measured_bytes"] == s["predicted_bytes"]
    stock = data["stock_torch_conv"]
    # PyTorch's conv keeps its input even for a bias-only update; the frozen-weight conv does not.
    assert stock["bias_only_bytes"] > summary["stock_torch_conv"]["sparse_bias_only_bytes"]
    assert summary["stock_torch_conv"]["bias_only_over_full_update_fraction"] < 1
    for p in summary["frontier"].values():
        assert p["measured_benefit"] == p["accuracy"] - data["classifier_only_accuracy"]
    frontier = summary["frontier"]
    assert list(frontier)[:4] == ["classifier_only", "full_update", "bias_only", "last_1"]
    assert frontier["last_1"]["k"] == 1 and frontier["full_update"]["k"] is None
    assert frontier["searched_1"]["budget_bytes"] == data["searches"][0]["budget_bytes"]
    assert frontier["bias_only"]["budget_bytes"] is None


def test_summary_of_a_two_layer_network_by_hand():
    def option(saved, grad, opt, acc, total):
        return {"saved_bytes": saved, "grad_bytes": grad, "optimizer_bytes": opt, "accuracy": acc,
                "measured_total_bytes": total}

    def point(choice, measured, acc, **extra):
        return {**extra, "choice": choice, "measured_bytes": measured, "saved_bytes": 0, "grad_bytes": 0,
                "optimizer_bytes": 0, "accuracy": acc}

    data = {"units": ["a", "b"], "options": ["bias", "weight_1"], "classifier_only_accuracy": 0.5, "base_bytes": 100,
            "layers": {"a": {"path_bytes": 40, "options": {"bias": option(0, 4, 8, 0.6, 152),
                                                          "weight_1": option(30, 20, 40, 0.7, 240)}},
                       "b": {"path_bytes": 0, "options": {"bias": option(0, 4, 8, 0.55, 112),
                                                         "weight_1": option(10, 8, 16, 0.65, 134)}}},
            "frontier": {"classifier_only": point({"a": "none", "b": "none"}, 100, 0.5),
                         "full_update": point({"a": "weight_1", "b": "weight_1"}, 264, 0.8),
                         "bias_only": point({"a": "bias", "b": "bias"}, 164, 0.6),
                         "last_1": point({"a": "none", "b": "weight_1"}, 134, 0.66, k=1)},
            "searches": [point({"a": "none", "b": "bias"}, 112, 0.56, budget_fraction=0.1, budget_bytes=116,
                               exhaustive_tail_benefit=0.05, dp_tail_benefit=0.05, dp_quantum_bytes=2,
                               cost_gcd_bytes=2)],
            "stock_torch_conv": {"bias_only_bytes": 200, "full_update_bytes": 400}, "seeds": 1}
    s = E.summarize(data)
    # Costs: saved + grads + Adam state; the step adds backward from the output down to the layer (a: 40 bytes).
    assert s["layers"]["a"]["options"]["weight_1"] == {"cost_bytes": 90, "benefit": pytest.approx(0.2),
                                                       "predicted_total_bytes": 230}
    assert s["frontier"]["full_update"]["predicted_bytes"] == 100 + 90 + 34 + 40
    assert s["frontier"]["full_update"]["predicted_benefit"] == pytest.approx(0.35)
    assert s["frontier"]["full_update"]["measured_benefit"] == pytest.approx(0.3)
    assert s["layer_cost_model_max_rel_error"] == pytest.approx(10 / 230)
    assert s["searches"][0]["choice"] == {"a": "·", "b": "bias"} and s["searches"][0]["dp_equals_exhaustive"]
    assert s["smallest_searched_near_full"] is None          # 0.56 is not within 2 points of 0.8
    assert s["stock_torch_conv"]["bias_only_over_full_update_fraction"] == 0.5
    assert s["stock_torch_conv"]["sparse_bias_only_bytes"] == 164 and not s["seeds_averaged"]


def test_frozen_weight_conv_gradients_match_torch():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 4, 4, dtype=torch.double, requires_grad=True)
    w = torch.randn(4, 1, 3, 3, dtype=torch.double)
    b = torch.randn(4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: FrozenWeightConv2d.apply(x, w, b, (2, 2), (1, 1), 4), (x, b))
