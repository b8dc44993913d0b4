import json

import pytest
import torch

from experiments import sparse_update as E
from experiments.lib.cli import to_json
from experiments.lib.formulas import optimizer_state_bytes
from experiments.lib.mbv2 import Arch, FrozenWeightConv2d

TINY = E.Config(arch=Arch(stem=4, blocks=((1, 4, 1), (2, 8, 2)), head=8), pretrain_steps=20, finetune_steps=3,
                batch=16, budget_fractions=(0.3, 0.7), last_k=(1,), exhaustive_units=3)


@pytest.fixture(scope="module")
def data():
    return E.run(TINY, "cpu")


def test_json_and_plot(data):
    json.loads(to_json(data))
    assert set(E.plot(data)) == {"costs", "frontier"}


def test_costs_are_exactly_additive(data):
    # Every configuration's measured bytes (saved tensors + grads + Adam state) equal the sum of per-layer costs.
    assert data["cost_model_max_rel_error"] == 0.0
    for layer in data["layers"]:
        for o in layer["options"]:
            assert o["measured_total_bytes"] == o["predicted_total_bytes"]


def test_bias_costs_no_activation_and_adam_state(data):
    channels = {"stem": 4, "b1.dw": 4, "b1.pw-proj": 4, "b2.pw-exp": 8, "b2.dw": 8, "b2.pw-proj": 8, "head": 8}
    for layer in data["layers"]:
        bias = layer["options"][0]
        c = channels[layer["name"]]
        assert bias["saved_bytes"] == 0                  # a bias gradient needs no stored input
        assert bias["grad_bytes"] == 4 * c
        assert bias["optimizer_bytes"] == optimizer_state_bytes("adam", [(c,)])


def test_partial_channels_save_activation_only_for_depthwise(data):
    for layer in data["layers"]:
        half, full = layer["options"][1]["saved_bytes"], layer["options"][2]["saved_bytes"]
        if ".dw" in layer["name"]:
            assert half * 2 == full
        elif layer["name"] != "stem":   # stem's input is the batch itself, never counted
            assert half == full > 0
        # Path: ReLU6 keeps its input (batch x channels x H x W fp32); the linear projection keeps nothing.
        assert (layer["path_bytes"] == 0) == layer["name"].endswith("pw-proj")


def test_search_and_baselines(data):
    assert data["all_dp_equal_exhaustive"]
    # The DP ran on the exact grid (the gcd of the costs), so equality with exhaustive search is exact.
    assert all(s["dp_quantum_bytes"] == s["cost_gcd_bytes"] for s in data["searches"])
    for s in data["searches"]:
        assert s["cost_bytes"] <= s["budget_bytes"]
        assert s["measured_bytes"] == s["cost_bytes"]
    stock = data["stock_torch_conv"]
    # PyTorch's conv keeps its input even for a bias-only update; the frozen-weight conv does not.
    assert stock["bias_only_bytes"] > stock["sparse_bias_only_bytes"]
    assert stock["bias_only_over_full_update_fraction"] == stock["bias_only_bytes"] / stock["full_update_bytes"]
    for p in data["frontier"]:
        assert p["measured_benefit"] == p["accuracy"] - data["classifier_only_accuracy"]
    kinds = {p["kind"] for p in data["frontier"]}
    assert {"classifier only", "full update", "bias only", "last-k", "searched"} <= kinds


def test_frozen_weight_conv_gradients_match_torch():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5, dtype=torch.double, requires_grad=True)
    w = torch.randn(4, 1, 3, 3, dtype=torch.double)
    b = torch.randn(4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: FrozenWeightConv2d.apply(x, w, b, (2, 2), (1, 1), 4), (x, b))
