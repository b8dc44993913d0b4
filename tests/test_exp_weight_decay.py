"""weight_decay: the one-step proofs against closed forms, the L2/decoupled (in)equivalence, parameter groups."""

import pytest

from experiments import weight_decay as E
from conftest import test_profile_data

TINY = E.PROFILES["test"]


@pytest.fixture(scope="module")
def data():
    return test_profile_data("weight_decay")


@pytest.fixture(scope="module")
def summary(data):
    return E.summarize(data)


def closed_form(kind: str, g: float, cfg: E.Config) -> float:
    """θ₁ from θ₀ = 1 in closed form: on the first step Adam's m̂/(√v̂+ε) is g/(|g|+ε)."""
    lr, lam, eps = cfg.lr, cfg.weight_decay, cfg.eps
    if kind in ("sgd_l2", "sgd_decoupled"):
        return 1 - lr * (g + lam)
    if kind == "adam_l2":
        geff = g + lam
        return 1 - lr * geff / (abs(geff) + eps)
    return (1 - lr * lam) - lr * g / (abs(g) + eps)


def test_one_step_matches_closed_form(data, summary):
    rows = [(label, kind, r) for label in ("zero_grad", "nonzero_grad")
            for kind, r in data["one_step"][label].items() if r["available"]]
    assert len(rows) >= 2 * 4
    assert data["one_step"]["nonzero_grad"]["adamw"]["grad"] == TINY.grad
    for label, kind, r in rows:
        # float32 parameters: agreement to 1e-6 absolute on a value near 1 (a few ulps of float32)
        assert r["theta_measured"] == pytest.approx(closed_form(kind, r["grad"], TINY), abs=1e-6)
        derived = summary["one_step"][label][kind]
        # the rule iterated by hand in float64 is the closed form (to float64 rounding)
        assert derived["theta_by_hand"] == pytest.approx(closed_form(kind, r["grad"], TINY), abs=1e-12)
        assert derived["abs_diff"] < 1e-6


def test_adam_l2_ignores_lambda_under_zero_gradient(summary):
    """With g = 0, Adam's L2 step is η (normalised away), AdamW's is ηλ."""
    by = summary["one_step"]["zero_grad"]
    # shrink = 1 - θ₁ is a difference of float32 values near 1: absolute tolerance 1e-7 (~1 ulp at 1.0)
    assert by["adam_l2"]["shrink"] == pytest.approx(TINY.lr, abs=1e-7)
    assert by["adamw"]["shrink"] == pytest.approx(TINY.lr * TINY.weight_decay, abs=1e-7)
    assert by["adam_l2"]["shrink"] > 9 * by["adamw"]["shrink"]


def test_decoupled_adam_detected():
    import inspect

    import torch
    assert E.has_decoupled_adam() == ("decoupled_weight_decay" in inspect.signature(torch.optim.Adam).parameters)


def test_trajectories(data, summary):
    tr, st = data["trajectories"], summary["trajectories"]
    # every zero-gradient trajectory follows its update rule iterated in float64 (float32 drift over 200 steps)
    assert st["zero_grad_max_abs_diff_vs_rule"] < 1e-5
    assert st["zero_grad_max_abs_diff_vs_rule"] > 0.0  # float32 measured against float64 by hand: not identical
    assert tr["sgd_l2_vs_decoupled_max_abs_diff"] < 1e-5        # SGD: the same update up to rounding
    assert tr["adam_l2_vs_adamw_max_abs_diff"] > 0.05           # Adam: not the same at all
    if data["decoupled_adam_available"]:
        assert tr["adam_decoupled_vs_adamw_max_abs_diff"] == 0.0
    else:
        assert tr["adam_decoupled_vs_adamw_max_abs_diff"] is None
    assert tr["zero_grad_theta"]["adamw"][-1] == pytest.approx(st["adamw_zero_grad_closed_form_final"], abs=1e-5)
    assert st["adamw_zero_grad_closed_form_final"] == (1 - TINY.lr * TINY.weight_decay) ** TINY.steps
    # SGD with momentum: the L2 term is amplified by 1/(1 - μ) in steady state (within 5 % after 200 steps)
    mom = st["momentum"]
    assert mom["l2"]["predicted_effective_over_nominal"] == pytest.approx(1 / (1 - TINY.momentum), rel=1e-12)
    assert mom["l2"]["effective_over_nominal"] == pytest.approx(1 / (1 - TINY.momentum), rel=0.05)
    assert mom["decoupled"]["effective_over_nominal"] == pytest.approx(1.0, rel=1e-3)
    rows = {r["noise_scale"]: r for r in st["noisy"]["adam_l2"]["rows"]}
    adamw = {r["noise_scale"]: r for r in st["noisy"]["adamw"]["rows"]}
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
    for kind, block in st["noisy"].items():
        measured = [r["effective_over_nominal"] for r in block["rows"] if r["effective_over_nominal"] is not None]
        assert block["effective_over_nominal_min"] == min(measured), kind
        assert block["effective_over_nominal_max"] == max(measured), kind
    adamw_range = st["noisy"]["adamw"]
    assert 0.9 < adamw_range["effective_over_nominal_min"] <= adamw_range["effective_over_nominal_max"] < 1.1


def test_a_mean_that_crossed_zero_has_no_rate():
    hyper = {"lr": 1e-3, "weight_decay": 0.1, "steps": 10}
    block = {"rows": [{"noise_scale": 1.0, "mean_theta_final": -0.5, "mean_theta_over_run": 0.2},
                      {"noise_scale": 0.1, "mean_theta_final": 0.99, "mean_theta_over_run": 0.995}]}
    out = E.summarize_noisy("adam_l2", block, hyper)
    assert out["rows"][0]["effective_over_nominal"] is None and out["rows"][0]["measured_over_predicted_ratio"] is None
    only = out["rows"][1]["effective_over_nominal"]
    assert out["effective_over_nominal_min"] == out["effective_over_nominal_max"] == only
    assert E.summarize_noisy("adam_l2", {"rows": block["rows"][:1]}, hyper)["effective_over_nominal_min"] is None


def test_groups_by_module_type(data, summary):
    g, gs = data["groups"], summary["groups"]
    assert g["decay_params"] + g["no_decay_params"] == g["total_params"]
    assert gs["decay_params_fraction"] + gs["no_decay_params_fraction"] == pytest.approx(1.0, abs=1e-12)
    # shown: the no-decay tensors outside the blocks and those of block 0 (the other blocks repeat it)
    assert "ln_f.weight" in gs["no_decay_names_shown"] and "blocks.0.norm1.weight" in gs["no_decay_names_shown"]
    assert not any(n.startswith("blocks.1.") for n in gs["no_decay_names_shown"])
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
