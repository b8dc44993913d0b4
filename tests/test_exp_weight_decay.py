"""weight_decay: the one-step proofs against closed forms, the L2/decoupled (in)equivalence, parameter groups."""
import json

import pytest

from experiments import weight_decay as E
from experiments.lib.cli import to_json

TINY = E.Config(steps=200, params_per_scale=512, noise_scales=(1e-3, 1e-1, 1.0), trajectory_points=11,
                vocab=64, d_model=16, n_heads=2, d_ff=32, n_layers=2)


@pytest.fixture(scope="module")
def data():
    return E.run(TINY, "cpu")


def test_json_and_plot(data):
    json.loads(to_json(data))
    assert set(E.plot(data)) == {"trajectories", "rates"}


def closed_form(kind: str, g: float, cfg: E.Config) -> float:
    """θ₁ from θ₀ = 1 in closed form: on the first step Adam's m̂/(√v̂+ε) is g/(|g|+ε)."""
    lr, lam, eps = cfg.lr, cfg.weight_decay, cfg.eps
    if kind in ("sgd_l2", "sgd_decoupled"):
        return 1 - lr * (g + lam)
    if kind == "adam_l2":
        geff = g + lam
        return 1 - lr * geff / (abs(geff) + eps)
    return (1 - lr * lam) - lr * g / (abs(g) + eps)


def test_one_step_matches_closed_form(data):
    rows = [(kind, r) for label in ("zero_grad", "nonzero_grad") for kind, r in data["one_step"][label].items()
            if r["available"]]
    assert len(rows) >= 2 * 4
    assert data["one_step"]["nonzero_grad"]["adamw"]["grad"] == TINY.grad
    for kind, r in rows:
        # float32 parameters: agreement to 1e-6 absolute on a value near 1 (a few ulps of float32)
        assert r["theta_measured"] == pytest.approx(closed_form(kind, r["grad"], TINY), abs=1e-6)
        assert r["abs_diff"] < 1e-6


def test_adam_l2_ignores_lambda_under_zero_gradient(data):
    """With g = 0, Adam's L2 step is η (normalised away), AdamW's is ηλ."""
    by = data["one_step"]["zero_grad"]
    # shrink = 1 - θ₁ is a difference of float32 values near 1: absolute tolerance 1e-7 (~1 ulp at 1.0)
    assert by["adam_l2"]["shrink"] == pytest.approx(TINY.lr, abs=1e-7)
    assert by["adamw"]["shrink"] == pytest.approx(TINY.lr * TINY.weight_decay, abs=1e-7)
    assert by["adam_l2"]["shrink"] > 9 * by["adamw"]["shrink"]


def test_decoupled_adam_detected():
    import inspect

    import torch
    assert E.has_decoupled_adam() == ("decoupled_weight_decay" in inspect.signature(torch.optim.Adam).parameters)


def test_trajectories(data):
    tr = data["trajectories"]
    # every zero-gradient trajectory follows its update rule iterated in float64 (float32 drift over 200 steps)
    assert tr["zero_grad_max_abs_diff_vs_rule"] < 1e-5
    assert tr["sgd_l2_vs_decoupled_max_abs_diff"] < 1e-5        # SGD: the same update up to rounding
    assert tr["adam_l2_vs_adamw_max_abs_diff"] > 0.05           # Adam: not the same at all
    if data["decoupled_adam_available"]:
        assert tr["adam_decoupled_vs_adamw_max_abs_diff"] == 0.0
    assert tr["zero_grad_theta"]["adamw"][-1] == pytest.approx(tr["adamw_zero_grad_closed_form_final"], abs=1e-5)
    # SGD with momentum: the L2 term is amplified by 1/(1 - μ) in steady state (within 5 % after 200 steps)
    mom = tr["momentum"]
    assert mom["l2"]["effective_over_nominal"] == pytest.approx(1 / (1 - TINY.momentum), rel=0.05)
    assert mom["decoupled"]["effective_over_nominal"] == pytest.approx(1.0, rel=1e-3)
    rows = {r["noise_scale"]: r for r in tr["noisy"]["adam_l2"]["rows"]}
    adamw = {r["noise_scale"]: r for r in tr["noisy"]["adamw"]["rows"]}
    # Adam's L2 decays small-gradient parameters several times faster than the nominal ηλ and large ones
    # no faster than decoupled decay; AdamW stays at the nominal rate (within 10 %: noise of the mean)
    assert rows[1e-3]["effective_over_nominal"] > 5
    assert rows[1e-3]["effective_over_nominal"] > 4 * rows[1.0]["effective_over_nominal"]
    for r in adamw.values():
        assert r["effective_over_nominal"] == pytest.approx(1.0, rel=0.1)
    # the first-order prediction 1/sqrt(σ² + (λθ̄)²) is within 20 %
    for r in rows.values():
        assert r["effective_over_nominal"] == pytest.approx(r["predicted_effective_over_nominal"], rel=0.2)
        assert r["measured_over_predicted_ratio"] == pytest.approx(
            r["effective_over_nominal"] / r["predicted_effective_over_nominal"], rel=1e-12)
    # the range the page quotes for each optimizer is the range of its rows
    for kind, block in tr["noisy"].items():
        measured = [r["effective_over_nominal"] for r in block["rows"] if r["effective_over_nominal"] is not None]
        assert block["effective_over_nominal_min"] == min(measured), kind
        assert block["effective_over_nominal_max"] == max(measured), kind
    assert 0.9 < tr["noisy"]["adamw"]["effective_over_nominal_min"] <= tr["noisy"]["adamw"]["effective_over_nominal_max"] < 1.1


def test_groups_by_module_type(data):
    g = data["groups"]
    assert g["decay_params"] + g["no_decay_params"] == g["total_params"]
    assert g["decay_params_fraction"] == g["decay_params"] / g["total_params"]
    assert g["no_decay_params_fraction"] == g["no_decay_params"] / g["total_params"]
    assert g["decay_params_fraction"] + g["no_decay_params_fraction"] == pytest.approx(1.0, abs=1e-12)
    d, f, v, L = TINY.d_model, TINY.d_ff, TINY.vocab, TINY.n_layers
    # decayed: q,k,v,out projections (4 d²) and the two FFN matrices (2 d f) per block, plus the head (d v)
    assert g["decay_params"] == L * (4 * d * d + 2 * d * f) + d * v
    assert g["zero_grad_step_decay_group_max_abs_err"] < 1e-7     # shrunk by exactly (1 - ηλ)
    assert g["zero_grad_step_no_decay_group_max_abs_change"] == 0.0
    assert "ln_f.weight" in g["substring_rule_disagreements"]      # a LayerNorm without "norm" in its name
    assert g["ndim2_rule_disagreements"] == ["tok.weight"]         # nanoGPT's rule decays the embedding


def test_groups_refuse_an_unknown_module_type():
    import torch
    with pytest.raises(TypeError, match="Conv2d.weight"):
        E.decay_groups(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1)), 0.1)
