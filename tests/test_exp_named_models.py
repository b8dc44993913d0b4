"""The named-models experiment: estimator breakdown for the built-in models and its check on this host."""
from __future__ import annotations

import json

import pytest

from experiments import named_models
from experiments.lib import estimator
from experiments.lib.cli import to_json
from experiments.lib.model_shapes import BUILTIN

TINY = named_models.Config(models=("bert-base", "llama-2-7b"), vocab=64, v_seq=32, v_batch=2, layers=2, hidden=32,
                           heads=4)


@pytest.fixture(scope="module")
def data() -> dict:
    return named_models.run(TINY, "cpu")


def test_json_and_breakdown_is_the_estimator(data: dict) -> None:
    assert json.loads(to_json(data)) == data
    m = {x["name"]: x for x in data["models"]}
    llama = m["llama-2-7b"]["setups"]
    want = estimator.estimate(estimator.Setup("adamw", "bf16-mixed", 1, 2048, "full", 3, 8), shape=BUILTIN["llama-2-7b"])
    assert llama["zero3"]["per_device_bytes"] == want["per_device_bytes"]
    assert m["bert-base"]["seq"] == 512                       # clipped to BERT's 512 positions
    totals = [llama[k]["per_device_bytes"]["total"] for k in m["llama-2-7b"]["setup_order"]]
    assert totals == sorted(totals, reverse=True)             # each set-up saves memory
    assert set(data["calculator"]["shapes"]) == set(BUILTIN)


def test_validation_on_this_host(data: dict) -> None:
    """Model state exactly; activations after forward within 3 % (LayerNorm statistics are not in the formula)."""
    for c in ("none", "selective", "full"):
        v = data["validation"][c]
        assert v["parameters"] == v["measured_parameters"]
        for term in ("params", "grads", "optimizer"):
            assert v["terms"][term]["measured_bytes"] == v["terms"][term]["predicted_bytes"]
        assert v["terms"]["activations"]["ratio"] == pytest.approx(1.0, abs=0.03)
    none, full = data["validation"]["none"], data["validation"]["full"]
    assert none["saved_bytes"] == pytest.approx(none["terms"]["activations"]["predicted_bytes"], rel=0.03)
    assert full["terms"]["activations"]["measured_bytes"] < none["terms"]["activations"]["measured_bytes"] / 3
    # the sum of the terms sizes the step's peak: at most 10 % under it, at most 20 % over it (the sum counts
    # activations and gradients at full size together, and backward frees activations as gradients arrive)
    sel = data["validation"]["selective"]
    assert full["terms"]["activations"]["measured_bytes"] < sel["terms"]["activations"]["measured_bytes"] < \
        none["terms"]["activations"]["measured_bytes"]
    for v in (none, sel, full):
        assert 1 / 1.2 <= v["peak_over_predicted_ratio"] <= 1.1


def test_autocast_validation(data: dict) -> None:
    """bf16 autocast: fp32 model state exactly; activations above the 16-bit estimate (fp32 norms, saved
    weight casts) but within 1.5x of it on this tiny model."""
    v = data["validation"]["autocast"]
    assert v["precision"] == "bf16-mixed"
    for term in ("params", "grads", "optimizer"):
        assert v["terms"][term]["measured_bytes"] == v["terms"][term]["predicted_bytes"]
    assert 1.0 < v["terms"]["activations"]["ratio"] < 1.5
