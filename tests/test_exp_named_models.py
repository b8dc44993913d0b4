"""The named-models experiment: the estimator's breakdown of the built-in models (derived at build time)
and the estimator checked against a small GPT measured on this host."""
from __future__ import annotations

import pytest

from experiments import named_models
from experiments.lib import estimator
from experiments.lib.model_shapes import BUILTIN


@pytest.fixture(scope="module")
def data() -> dict:
    from conftest import test_profile_data

    return test_profile_data("named_models")  # the test profile's run, as stored (measured once per session)


@pytest.fixture(scope="module")
def summary(data: dict) -> dict:
    return named_models.summarize(data)


def test_breakdown_is_the_estimator_keyed_by_model_in_table_order(summary: dict) -> None:
    assert list(summary["models"]) == list(named_models.MODELS)
    llama = summary["models"]["llama-2-7b"]["setups"]
    assert list(llama) == ["fp32", "bf16_mixed", "checkpointing", "zero3"] == list(summary["setups"])
    want = estimator.estimate(estimator.Setup("adamw", "bf16-mixed", 1, 2048, "full", 3, 8), shape=BUILTIN["llama-2-7b"])
    assert llama["zero3"]["per_device_bytes"] == want["per_device_bytes"]
    assert llama["zero3"]["label"] == "+ ZeRO-3 over 8 GPUs" == summary["setups"]["zero3"]
    assert summary["models"]["bert-base"]["seq"] == 512                # clipped to BERT's 512 positions
    totals = [x["per_device_bytes"]["total"] for x in llama.values()]
    assert totals == sorted(totals, reverse=True)                      # each set-up saves memory
    fitting = [f for f in llama["zero3"]["fits"] if f["fits"]]
    assert llama["zero3"]["smallest_fit"] == min(fitting, key=lambda f: f["capacity_bytes"])["gpu"]
    fp32_70b = summary["models"]["llama-2-70b"]["setups"]["fp32"]
    assert fp32_70b["smallest_fit"] is None and fp32_70b["smallest_fit_label"] == "none listed"
    assert [g["name"] for g in summary["gpus"]] == [name for name, _, _ in estimator.GPUS]


def test_breakdown_follows_the_estimator_without_a_new_run(data: dict, summary: dict, monkeypatch) -> None:
    """The breakdown is arithmetic, derived at build time: a changed estimator changes it, the measured check stays."""
    real = estimator.estimate

    def more(*args, **kwargs):
        est = real(*args, **kwargs)
        return {**est, "per_device_bytes": {k: v + 1 for k, v in est["per_device_bytes"].items()}}

    monkeypatch.setattr(estimator, "estimate", more)
    again = named_models.summarize(data)
    before = summary["models"]["gpt2-xl"]["setups"]["fp32"]["per_device_bytes"]["total"]
    assert again["models"]["gpt2-xl"]["setups"]["fp32"]["per_device_bytes"]["total"] == before + 1
    assert again["validation"] == summary["validation"]


def test_validation_on_this_host(data: dict, summary: dict) -> None:
    """Model state exactly; activations after forward within 3 % (LayerNorm statistics are not in the formula)."""
    assert list(summary["validation"]) == ["none", "selective", "full", "autocast"]
    for c in ("none", "selective", "full"):
        run, v = data["runs"][c], summary["validation"][c]
        assert run["parameters"] == run["measured_parameters"]
        for term in ("params", "grads", "optimizer"):
            assert v["terms"][term]["measured_bytes"] == v["terms"][term]["predicted_bytes"]
        assert v["terms"]["activations"]["ratio"] == pytest.approx(1.0, abs=0.03)
    none, sel, full = (summary["validation"][c]["terms"]["activations"] for c in ("none", "selective", "full"))
    assert data["runs"]["none"]["saved_bytes"] == pytest.approx(none["predicted_bytes"], rel=0.03)
    assert full["measured_bytes"] < sel["measured_bytes"] < none["measured_bytes"]
    assert full["measured_bytes"] < none["measured_bytes"] / 3
    # the sum of the terms sizes the step's peak: at most 10 % under it, at most 20 % over it (the sum counts
    # activations and gradients at full size together, and backward frees activations as gradients arrive)
    for c in ("none", "selective", "full"):
        v = summary["validation"][c]
        assert v["predicted_total_bytes"] == sum(t["predicted_bytes"] for t in v["terms"].values()) + \
            data["runs"][c]["recompute_bytes"]
        assert 1 / 1.2 <= v["peak_over_predicted_ratio"] <= 1.1


def test_autocast_validation(summary: dict) -> None:
    """bf16 autocast: fp32 model state exactly; activations above the 16-bit estimate (fp32 norms, saved
    weight casts) but within 1.5x of it on this tiny model."""
    v = summary["validation"]["autocast"]
    assert v["precision"] == "bf16-mixed" and v["label"] == "bf16 autocast"
    for term in ("params", "grads", "optimizer"):
        assert v["terms"][term]["measured_bytes"] == v["terms"][term]["predicted_bytes"]
    assert 1.0 < v["terms"]["activations"]["ratio"] < 1.5


def test_peak_verdicts_and_the_zero_paper_case(summary: dict) -> None:
    """Verdicts use the peak and the cards' reported totals; the ZeRO paper's figure 1 is reproduced."""
    zp = summary["zero_paper"]
    assert [(x["paper_gb"], x["estimator_gb"]) for x in zp["stages"].values()] == \
        [(120.0, 120.0), (31.4, 31.4), (16.6, 16.6), (1.9, 1.9)] and zp["all_match"]
    gpus = {g["name"]: g for g in summary["gpus"]}
    for m in summary["models"].values():
        for x in m["setups"].values():
            assert x["peak_bytes"] == max(x["phases_bytes"].values())
            for f in x["fits"]:
                assert f["fits"] == (f["dtype_ok"] and x["peak_bytes"] + x["headroom_bytes"] <= f["capacity_bytes"])
                assert f["dtype_ok"] == (("fp32" if x["setup"]["precision"] == "fp32" else "bf16")
                                         in gpus[f["gpu"]]["dtypes"])
    # no bf16 on a T4: the bf16-mixed set-ups never name it, however small the model
    assert all(m["setups"][k]["smallest_fit"] not in ("T4 16 GB", "V100 16 GB")
               for m in summary["models"].values() for k in ("bf16_mixed", "checkpointing", "zero3"))


def test_verdicts_use_the_context_measured_on_a_gpu_host(data: dict, summary: dict) -> None:
    # a CPU host records no context: the cited figure stands
    assert data["cuda_context_bytes"] is None and not summary["headroom_measured"]
    assert summary["headroom_bytes"] == estimator.CUDA_CONTEXT_BYTES
    # a GPU host's result carries its own: every verdict, and the usable capacity, subtract that one
    gpu = named_models.summarize({**data, "device": "cuda:0", "cuda_context_bytes": 500 * estimator.MIB})
    assert gpu["headroom_measured"] and gpu["headroom_bytes"] == 500 * estimator.MIB
    assert "measured on this host" in gpu["headroom_source"]
    card = gpu["gpus"][0]
    assert card["usable_bytes"] == card["capacity_bytes"] - 500 * estimator.MIB
    setup = gpu["models"]["llama-2-7b"]["setups"]["zero3"]
    assert setup["headroom_bytes"] == 500 * estimator.MIB
    assert all(f["spare_bytes"] == f["capacity_bytes"] - setup["peak_bytes"] - 500 * estimator.MIB
               for f in setup["fits"])
