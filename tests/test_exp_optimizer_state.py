"""optimizer_state on a tiny model: exact state bytes, step temporaries, zero_grad semantics, precision regimes."""
from __future__ import annotations


import pytest
import torch

from experiments import optimizer_state as exp
from experiments.lib import formulas
from conftest import test_profile_data

TINY = exp.PROFILES["test"]


@pytest.fixture(scope="module")
def data() -> dict:
    return test_profile_data("optimizer_state")


@pytest.fixture(scope="module")
def summary(data: dict) -> dict:
    return exp.summarize(data)


def test_state_bytes_match_the_formula_exactly(data: dict, summary: dict) -> None:
    model = exp.build(TINY, "cpu")
    shapes = [tuple(p.shape) for p in model.parameters()]
    n = sum(p.numel() for p in model.parameters())
    for name, impls in data["optimizers"].items():
        for impl, x in impls.items():
            if not x["supported"]:
                continue
            assert x["state_bytes"] == x["predicted_state_bytes"] == formulas.optimizer_state_bytes(name, shapes), \
                (name, impl)
            assert summary["optimizers"][name][impl]["state_ratio"] == 1.0
    adam = data["optimizers"]["adam"]["foreach"]
    assert adam["state_bytes"] == 2 * 4 * n + 4 * len(shapes)  # two fp32 moments + a float32 step per tensor
    assert adam["step_tensor_bytes"] == 4 * len(shapes)
    assert data["optimizers"]["sgd"]["foreach"]["state_bytes"] == 0
    assert data["optimizers"]["adam-amsgrad"]["foreach"]["state_bytes"] == 3 * 4 * n + 4 * len(shapes)
    assert data["optimizers"]["adafactor"]["foreach"]["state_bytes"] < adam["state_bytes"] / 4


def test_summary_derives_from_the_measured_terms() -> None:
    x = {"supported": True, "params_bytes": 100, "grads_bytes": 100, "state_bytes": 200,
         "predicted_state_bytes": 200, "step_peak_bytes": 450, "peak_bytes": 1000}
    s = exp.summarize_step(x)
    assert s["step_temporaries_bytes"] == 50 and s["temporaries_over_params_ratio"] == 0.5
    assert s["state_over_params_ratio"] == 2.0 and s["state_ratio"] == 1.0
    assert s["predicted_persistent_bytes"] == 400 and s["peak_over_predicted_persistent_ratio"] == 2.5
    # a step that peaks below the persistent terms (freed gradients) has no temporaries, not negative ones
    assert exp.summarize_step({**x, "step_peak_bytes": 300})["step_temporaries_bytes"] == 0
    assert exp.summarize_step({"supported": False, "reason": "no fused kernel"}) == {"supported": False}


def test_foreach_step_allocates_temporaries_the_for_loop_avoids(data: dict, summary: dict) -> None:
    adam = summary["optimizers"]["adam"]
    assert adam["foreach"]["step_temporaries_bytes"] > adam["for-loop"]["step_temporaries_bytes"] > 0
    # the whole step peaks above the persistent terms: activations are not in the folklore table
    assert data["optimizers"]["adam"]["foreach"]["peak_bytes"] > adam["foreach"]["predicted_persistent_bytes"]
    assert summary["implementations"] == ["for-loop", "foreach", "fused"]


def test_zero_grad_semantics(data: dict, summary: dict) -> None:
    z = data["zero_grad"]
    assert z["none"]["grad_bytes_between_steps"] == 0
    assert z["zeros"]["grad_bytes_between_steps"] > 0
    assert z["none"]["unused_param_max_change"] == 0.0 and summary["zero_grad"]["none"]["unused_param_updated"] is False
    assert z["zeros"]["unused_param_max_change"] > 0.0 and summary["zero_grad"]["zeros"]["unused_param_updated"] is True


def test_precision_regimes_match_the_accounting(data: dict, summary: dict) -> None:
    p, measured = summary["precision"], data["precision"]
    assert list(p) == list(formulas.PRECISION_REGIMES)
    assert p["fp32"]["total_bytes_per_param"] == 16.0
    assert p["amp-autocast"]["total_bytes_per_param"] == 16.0 and measured["amp-autocast"]["grad_dtype"] == "float32"
    assert p["mixed-master"]["total_bytes_per_param"] == 16.0 and measured["mixed-master"]["grad_dtype"] == "bfloat16"
    assert p["mixed-master"]["measured_bytes_per_param"] == {"weights": 2.0, "grads": 2.0, "master": 4.0,
                                                             "optimizer": 8.0}
    assert p["pure-bf16"]["total_bytes_per_param"] == 8.0
    for regime in p.values():
        assert regime["ratio"] == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tracker_agrees_with_cuda_allocator() -> None:
    x = exp.measure_optimizer(TINY, "cuda", "adam", "foreach")
    assert x["cuda_max_allocated_bytes"] >= x["peak_bytes"] * 0.9
