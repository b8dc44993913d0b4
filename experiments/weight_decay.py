# %%
"""Weight decay: does Adam's ``weight_decay`` (L2) equal AdamW's decoupled decay?

The question: PyTorch offers weight decay in two forms. ``SGD(weight_decay=λ)``
and ``Adam(weight_decay=λ)`` add ``λθ`` to the gradient (an L2 penalty);
``AdamW`` (and ``Adam(decoupled_weight_decay=True)`` in newer torch) shrink the
weight directly, ``θ ← θ(1 − ηλ)``, outside the adaptive update
(Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization").

The method:

1. One-step proofs on a scalar ``θ = 1``: each optimizer's measured ``θ`` after
   one step beside the value computed by hand from its update rule.
2. Many steps: trajectories under zero gradient, and under zero-mean noisy
   gradients of several scales, from which the *effective* decay rate (how
   fast the mean of ``θ`` shrinks, relative to the nominal ``ηλ``) is measured.
   For plain SGD the two forms are the same update; with momentum the L2 term
   is amplified by ``1/(1 − μ)`` in the buffer; for Adam the L2 term is divided
   by ``√v̂``, so parameters with large gradients are barely decayed.
3. The usual "no decay on biases, norm weights and embeddings" parameter groups,
   built by module type on a small transformer, counted, and checked by one
   AdamW step under zero gradient.

``run`` stores what was measured (θ after each step, the means of θ, the parameter
counts); ``summarize`` derives the rules iterated by hand, the effective decay rates and
their predictions, and the shares of the parameter groups.

Run it: ``python -m experiments.weight_decay --profile quick``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from experiments.lib.threads import single_thread


# %%
@dataclass(frozen=True)
class Config:
    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.9                # for the SGD-with-momentum comparison
    grad: float = 0.5                    # the non-zero gradient of the one-step scalar proofs (and 0)
    steps: int = 500                     # length of the trajectories
    noise_scales: tuple = (1e-3, 1e-2, 1e-1, 1.0)
    params_per_scale: int = 2048         # independent parameters averaged per noise scale
    trajectory_points: int = 51          # points kept per trajectory for the figure
    vocab: int = 512                     # the transformer used for the parameter groups
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 256
    n_layers: int = 2
    seed: int = 0


PROFILES = {
    "test": Config(steps=200, params_per_scale=512, noise_scales=(1e-3, 1e-1, 1.0), trajectory_points=11,
                   vocab=64, d_model=16, n_heads=2, d_ff=32, n_layers=2),
    "quick": Config(),
    "full": Config(lr=2e-4, steps=2000, params_per_scale=16384, noise_scales=(1e-4, 1e-3, 1e-2, 1e-1, 1.0),
                   vocab=32000, d_model=768, n_heads=12, d_ff=3072, n_layers=12),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    "gpu": Config(lr=2e-4, steps=2000, params_per_scale=16384, noise_scales=(1e-4, 1e-3, 1e-2, 1e-1, 1.0),
                  vocab=32000, d_model=768, n_heads=12, d_ff=3072, n_layers=12),
}
TIMEOUT_S = 300


def has_decoupled_adam() -> bool:
    """``Adam(decoupled_weight_decay=True)`` exists from PyTorch 2.7 (pytorch/pytorch#118857)."""
    import inspect

    return "decoupled_weight_decay" in inspect.signature(torch.optim.Adam.__init__).parameters


# %% [markdown]
# ## 1. One step on a scalar, measured against the update rule
#
# ``run`` measures ``θ₁`` for ``θ₀ = 1``; ``summarize`` sets beside it ``θ₁`` computed by
# hand (in float64) from the update rule in the ``torch.optim`` documentation.

# %%
def by_hand(kind: str, theta: float, grads: list[float], hyper: dict) -> list[float]:
    """``θ`` after each step, iterating the update rule in float64 for the gradients ``grads``.

    ``hyper`` holds ``lr``, ``weight_decay``, ``beta1``, ``beta2`` and ``eps`` (``run`` stores them).
    """
    lr, lam, b1, b2, eps = hyper["lr"], hyper["weight_decay"], hyper["beta1"], hyper["beta2"], hyper["eps"]
    m = v = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        if kind == "sgd_l2":  # g ← g + λθ ; θ ← θ − η g
            theta = theta - lr * (g + lam * theta)
        elif kind == "sgd_decoupled":  # θ ← θ(1 − ηλ) − η g
            theta = theta * (1 - lr * lam) - lr * g
        elif kind in ("adam_l2", "adam_decoupled", "adamw"):
            if kind == "adam_l2":
                g = g + lam * theta       # L2: the decay enters the moments
            else:
                theta = theta * (1 - lr * lam)  # decoupled: the decay bypasses them
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            theta = theta - lr * m_hat / (math.sqrt(v_hat) + eps)
        else:
            raise ValueError(kind)
        out.append(theta)
    return out


def make_optimizer(kind: str, params: list, cfg: Config) -> torch.optim.Optimizer | None:
    betas = (cfg.beta1, cfg.beta2)
    if kind == "sgd_l2":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if kind == "sgd_decoupled":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=0.0)
    if kind == "adam_l2":
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if kind == "adam_decoupled":
        if not has_decoupled_adam():
            return None
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                decoupled_weight_decay=True)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    raise ValueError(kind)


def optimizer_step(kind: str, opt: torch.optim.Optimizer, params: list, cfg: Config) -> None:
    """One step; for ``sgd_decoupled`` the decay is applied by hand before the plain SGD step."""
    if kind == "sgd_decoupled":
        with torch.no_grad():
            for p in params:
                p.mul_(1 - cfg.lr * cfg.weight_decay)
    opt.step()


KINDS = ("sgd_l2", "sgd_decoupled", "adam_l2", "adam_decoupled", "adamw")


def one_step_proofs(cfg: Config, device: str) -> dict:
    """``{"zero_grad": {optimizer: row}, "nonzero_grad": {...}}``: θ after one step from θ = 1."""
    out = {}
    for label, g in (("zero_grad", 0.0), ("nonzero_grad", float(cfg.grad))):
        rows = {}
        for kind in KINDS:
            theta = torch.ones((), device=device, requires_grad=True)
            opt = make_optimizer(kind, [theta], cfg)
            if opt is None:
                rows[kind] = {"grad": g, "available": False}
                continue
            theta.grad = torch.full((), g, device=device)
            optimizer_step(kind, opt, [theta], cfg)
            rows[kind] = {"grad": g, "available": True, "theta_measured": float(theta.detach())}
        out[label] = rows
    return out


# %% [markdown]
# ## 2. Many steps: trajectories and the effective decay rate
#
# A tensor of shape ``(scales, n)``: row ``i`` gets zero-mean Gaussian gradients
# of standard deviation ``σᵢ``. Every optimizer sees the same noise. With the
# noise symmetric, the mean of a row moves only through weight decay, so the
# per-step decay rate is ``−ln(mean θ_T)/T``; divided by the nominal ``ηλ`` it is
# 1 for decoupled decay. Adam's L2 term ``λθ`` is divided by ``√v̂ ≈ √(σ² + (λθ)²)``,
# so the predicted ratio is ``1/√(σ² + (λθ̄)²)``, with ``θ̄`` the row's mean over the run.
# ``run`` records the means; ``summarize`` derives the rates and the predictions.

# %%
def trajectories(cfg: Config, device: str) -> dict:
    scales = torch.tensor(cfg.noise_scales, device=device, dtype=torch.float32).unsqueeze(1)
    shape = (len(cfg.noise_scales), cfg.params_per_scale)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    noise = [torch.randn(shape, generator=gen).to(device) * scales for _ in range(cfg.steps)]
    keep = sorted({round(i * cfg.steps / (cfg.trajectory_points - 1)) for i in range(cfg.trajectory_points)})
    steps_kept = [0] + [t for t in range(1, cfg.steps + 1) if t in keep]
    kinds = [k for k in KINDS if not (k == "adam_decoupled" and not has_decoupled_adam())]
    zero_grad_paths: dict[str, list[float]] = {}
    noisy: dict[str, dict] = {}
    finals: dict[str, torch.Tensor] = {}
    for kind in kinds:
        # zero gradient, one scalar
        theta = torch.ones((), device=device, requires_grad=True)
        opt = make_optimizer(kind, [theta], cfg)
        path = [1.0]
        for t in range(1, cfg.steps + 1):
            theta.grad = torch.zeros((), device=device)
            optimizer_step(kind, opt, [theta], cfg)
            if t in keep:
                path.append(float(theta.detach()))
        zero_grad_paths[kind] = path
        # noisy gradients, many parameters per scale
        w = torch.ones(shape, device=device, requires_grad=True)
        opt = make_optimizer(kind, [w], cfg)
        running_mean = torch.zeros(len(cfg.noise_scales), device=device)
        kept_means = [torch.ones(len(cfg.noise_scales), device=device)]
        for t in range(cfg.steps):
            w.grad = noise[t].clone()
            optimizer_step(kind, opt, [w], cfg)
            running_mean += w.detach().mean(dim=1)
            if t + 1 in keep:
                kept_means.append(w.detach().mean(dim=1))
        final_mean = w.detach().mean(dim=1).tolist()
        theta_bar = (running_mean / cfg.steps).tolist()
        finals[kind] = w.detach().clone()
        rows = [{"noise_scale": float(sigma), "mean_theta_final": final_mean[i], "mean_theta_over_run": theta_bar[i]}
                for i, sigma in enumerate(cfg.noise_scales)]
        noisy[kind] = {"rows": rows, "mean_theta_by_scale": torch.stack(kept_means, dim=1).tolist()}  # [scale][kept]
    return {
        "momentum": momentum_decay(cfg, device),
        "steps_kept": steps_kept,
        "zero_grad_theta": zero_grad_paths,
        "noisy": noisy,
        "sgd_l2_vs_decoupled_max_abs_diff": float((finals["sgd_l2"] - finals["sgd_decoupled"]).abs().max()),
        "adam_l2_vs_adamw_max_abs_diff": float((finals["adam_l2"] - finals["adamw"]).abs().max()),
        # null where this torch has no Adam(decoupled_weight_decay=True)
        "adam_decoupled_vs_adamw_max_abs_diff": (
            float((finals["adam_decoupled"] - finals["adamw"]).abs().max()) if "adam_decoupled" in finals else None),
    }


def momentum_decay(cfg: Config, device: str) -> dict:
    """Zero gradient, SGD with momentum: the L2 term accumulates in the momentum buffer, decoupled decay does not.

    In steady state the buffer holds ``λθ/(1 − μ)``, so L2 decays ``1/(1 − μ)`` times faster than the same
    ``λ`` applied decoupled: the two agree only after rescaling ``λ``.
    """
    nominal = cfg.lr * cfg.weight_decay
    out: dict = {"momentum": cfg.momentum}
    for kind in ("l2", "decoupled"):
        theta = torch.ones((), device=device, requires_grad=True)
        opt = torch.optim.SGD([theta], lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay if kind == "l2" else 0.0)
        for _ in range(cfg.steps):
            theta.grad = torch.zeros((), device=device)
            if kind == "decoupled":
                with torch.no_grad():
                    theta.mul_(1 - nominal)
            opt.step()
        out[kind] = {"final_theta": float(theta.detach())}
    return out


# %% [markdown]
# ## 3. Parameter groups by module type on a small transformer
#
# Decay the weight matrices of ``nn.Linear`` and the fused ``in_proj_weight`` that
# ``nn.MultiheadAttention`` holds as its own parameter; exempt every bias, every
# ``LayerNorm`` weight, and the embedding table (minGPT's convention). Two
# name-based rules are compared: substring (``"bias"``/``"norm"`` in the name) and
# "two or more dimensions" (nanoGPT's rule).

# %%
class TinyTransformer(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, dropout=0.0, batch_first=True,
                                       norm_first=True)
            for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)  # named as in GPT-2: no "norm" in the name
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters into decay / no-decay groups by the type of the module that owns them."""
    # Per module type: which of the module's own parameters decay. A parameter not listed raises.
    rules = {
        nn.Linear: {"weight": True, "bias": False},
        nn.MultiheadAttention: {"in_proj_weight": True, "q_proj_weight": True, "k_proj_weight": True,
                                "v_proj_weight": True, "in_proj_bias": False, "bias_k": False, "bias_v": False},
        nn.Embedding: {"weight": False},
        nn.LayerNorm: {"weight": False, "bias": False},
        nn.RMSNorm: {"weight": False},
        nn.GroupNorm: {"weight": False, "bias": False},
        nn.modules.batchnorm._BatchNorm: {"weight": False, "bias": False},
    }
    decay, no_decay = {}, {}
    for module_name, module in model.named_modules():
        rule = next((r for kind, r in rules.items() if isinstance(module, kind)), {})
        for pname, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{pname}" if module_name else pname
            if pname not in rule:
                raise TypeError(f"no decay rule for {type(module).__name__}.{pname}: add it to the rules")
            (decay if rule[pname] else no_decay)[full] = p
    return [{"params": list(decay.values()), "weight_decay": weight_decay, "names": sorted(decay)},
            {"params": list(no_decay.values()), "weight_decay": 0.0, "names": sorted(no_decay)}]


def parameter_groups(cfg: Config, device: str) -> dict:
    torch.manual_seed(cfg.seed)
    model = TinyTransformer(cfg).to(device)
    groups = decay_groups(model, cfg.weight_decay)
    names = dict(model.named_parameters())
    total = sum(p.numel() for p in model.parameters())
    by_type = set(groups[0]["names"])
    substring = {n for n in names if not ("bias" in n or "norm" in n)}
    ndim2 = {n for n, p in names.items() if p.dim() >= 2}

    def disagree(rule: set) -> list[str]:
        return sorted(rule ^ by_type)

    # Proof: one AdamW step with zero gradient must shrink exactly the decay group by (1 − ηλ).
    before = {n: p.detach().clone() for n, p in names.items()}
    opt = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]} for g in groups],
                            lr=cfg.lr)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    worst_decay = max(float((names[n].detach() - before[n] * (1 - cfg.lr * cfg.weight_decay)).abs().max())
                      for n in groups[0]["names"])
    worst_nodecay = max(float((names[n].detach() - before[n]).abs().max()) for n in groups[1]["names"])
    return {
        "total_params": total,
        "decay_params": sum(p.numel() for p in groups[0]["params"]),
        "no_decay_params": sum(p.numel() for p in groups[1]["params"]),
        "decay_tensors": len(groups[0]["params"]),
        "no_decay_tensors": len(groups[1]["params"]),
        "no_decay_names": groups[1]["names"],
        "substring_rule_disagreements": disagree(substring),
        "ndim2_rule_disagreements": disagree(ndim2),
        "zero_grad_step_decay_group_max_abs_err": worst_decay,
        "zero_grad_step_no_decay_group_max_abs_change": worst_nodecay,
        "block_params": sum(p.numel() for p in model.blocks[0].parameters()),
    }


# %%
def run(cfg: Config, device: str) -> dict:
    torch.manual_seed(cfg.seed)
    with single_thread(device):  # scalars and tiny tensors: one thread is faster on a small shared CPU
        return {
            "decoupled_adam_available": has_decoupled_adam(),
            "torch_version": torch.__version__.split("+")[0],
            "hyper": {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "beta1": cfg.beta1, "beta2": cfg.beta2,
                      "eps": cfg.eps, "steps": cfg.steps, "momentum": cfg.momentum},
            "one_step": one_step_proofs(cfg, device),
            "trajectories": trajectories(cfg, device),
            "groups": parameter_groups(cfg, device),
        }


# %% [markdown]
# ## What the pages show, derived from what was measured

# %%
LABELS = {"sgd_l2": "SGD, weight_decay (L2)", "sgd_decoupled": "SGD, decay by hand",
          "adam_l2": "Adam, weight_decay (L2)", "adam_decoupled": "Adam, decoupled_weight_decay",
          "adamw": "AdamW"}


def summarize_one_step(rows: dict, hyper: dict) -> dict:
    """θ₁ by hand beside each measured θ₁, their difference, and how far the step moved θ from 1."""
    out = {}
    for kind, x in rows.items():
        if not x["available"]:
            out[kind] = {"available": False}
            continue
        expected = by_hand(kind, 1.0, [x["grad"]], hyper)[-1]
        out[kind] = {"available": True, "theta_by_hand": expected, "abs_diff": abs(x["theta_measured"] - expected),
                     "shrink": 1.0 - x["theta_measured"]}
    return out


def summarize_noisy(kind: str, block: dict, hyper: dict) -> dict:
    """Effective decay rate per noise scale, relative to the nominal ηλ, beside its first-order prediction.

    The rate is ``−ln(mean θ_T)/T``; where mean θ crossed zero it has none (null). Adam's L2 term is divided
    by ``√v̂ ≈ √(σ² + (λθ̄)²)``; SGD-L2 and the decoupled forms decay by exactly ηλθ per step
    (prediction 1).
    """
    steps, lam = hyper["steps"], hyper["weight_decay"]
    nominal = hyper["lr"] * lam
    rows = []
    for r in block["rows"]:
        m, sigma = r["mean_theta_final"], r["noise_scale"]
        rate = -math.log(m) / steps if m > 0 else None
        predicted = 1.0 / math.sqrt(sigma ** 2 + (lam * r["mean_theta_over_run"]) ** 2) if kind == "adam_l2" else 1.0
        effective = rate / nominal if rate is not None else None
        rows.append({"noise_scale": sigma, "decay_rate_per_step": rate, "effective_over_nominal": effective,
                     "predicted_effective_over_nominal": predicted,
                     "measured_over_predicted_ratio": effective / predicted if effective is not None else None})
    measured = [r["effective_over_nominal"] for r in rows if r["effective_over_nominal"] is not None]
    # the range over the noise scales where mean θ stayed positive (null if at none)
    return {"rows": rows, "effective_over_nominal_min": min(measured) if measured else None,
            "effective_over_nominal_max": max(measured) if measured else None}


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        return (f"single parameters over {data['hyper']['steps']} steps; parameter groups of a "
                f"{data['groups']['total_params']:,}-param transformer")
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    hyper, tr, groups = data["hyper"], data["trajectories"], data["groups"]
    steps, nominal = hyper["steps"], hyper["lr"] * hyper["weight_decay"]
    kept = tr["steps_kept"]
    by_hand_paths = {}
    for kind in tr["zero_grad_theta"]:
        rule = [1.0] + by_hand(kind, 1.0, [0.0] * steps, hyper)
        by_hand_paths[kind] = [rule[t] for t in kept]
    momentum = tr["momentum"]

    def momentum_rate(kind: str) -> float:
        return -math.log(momentum[kind]["final_theta"]) / steps / nominal

    total = groups["total_params"]
    return {
        "scale_label": scale_label(data),
        "labels": {kind: LABELS[kind] for kind in data["one_step"]["zero_grad"]},
        "one_step": {case: summarize_one_step(rows, hyper) for case, rows in data["one_step"].items()},
        "trajectories": {
            "nominal_decay_per_step": nominal,
            "zero_grad_theta_by_hand": by_hand_paths,
            "zero_grad_max_abs_diff_vs_rule": max(abs(a - b) for kind, path in tr["zero_grad_theta"].items()
                                                  for a, b in zip(path, by_hand_paths[kind])),
            # decoupled decay alone is geometric
            "adamw_zero_grad_closed_form_final": (1 - nominal) ** steps,
            "momentum": {
                "l2": {"effective_over_nominal": momentum_rate("l2"),
                       "predicted_effective_over_nominal": 1.0 / (1.0 - momentum["momentum"])},
                "decoupled": {"effective_over_nominal": momentum_rate("decoupled"),
                              "predicted_effective_over_nominal": 1.0},
            },
            "noisy": {kind: summarize_noisy(kind, block, hyper) for kind, block in tr["noisy"].items()},
        },
        "groups": {
            "decay_params_fraction": groups["decay_params"] / total,
            "no_decay_params_fraction": groups["no_decay_params"] / total,
            # outside the blocks, and block 0's (the other blocks repeat it)
            "no_decay_names_shown": [n for n in groups["no_decay_names"]
                                     if not n.startswith("blocks.") or n.startswith("blocks.0.")],
        },
    }


# %% [markdown]
# ## Figures

# %%
STYLES = {"sgd_l2": ("C0", "-"), "sgd_decoupled": ("C1", ":"), "adam_l2": ("C3", "-"),
          "adam_decoupled": ("C2", "--"), "adamw": ("C4", ":")}


def plot(data: dict, summary: dict) -> dict:
    import matplotlib.pyplot as plt

    tr, labels = data["trajectories"], summary["labels"]
    steps = tr["steps_kept"]
    traj, (ax0, ax1) = plt.subplots(1, 2, figsize=(9.5, 3.8), constrained_layout=True)
    for kind, path in tr["zero_grad_theta"].items():
        color, ls = STYLES[kind]
        ax0.plot(steps, path, color=color, linestyle=ls, label=labels[kind], linewidth=2)
    ax0.set_xlabel("optimizer step")
    ax0.set_ylabel("θ (started at 1, gradient 0)")
    ax0.set_title("Zero gradient: decay alone")
    ax0.legend(fontsize=8)
    scales = [r["noise_scale"] for r in tr["noisy"]["adam_l2"]["rows"]]
    shades = plt.cm.viridis([i / max(len(scales) - 1, 1) * 0.85 for i in range(len(scales))])
    for i, sigma in enumerate(scales):
        ax1.plot(steps, tr["noisy"]["adam_l2"]["mean_theta_by_scale"][i], color=shades[i], linewidth=2,
                 label=f"Adam-L2, σ = {sigma:g}")
    for i, sigma in enumerate(scales):
        ax1.plot(steps, tr["noisy"]["adamw"]["mean_theta_by_scale"][i], color=shades[i], linestyle=":",
                 linewidth=1.5, label="AdamW, every σ" if i == 0 else None)
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("mean θ over the parameters")
    ax1.set_title("Noisy gradients: mean θ per noise scale")
    ax1.legend(fontsize=7)

    rates, ax = plt.subplots(figsize=(6.5, 3.8), constrained_layout=True)
    markers = {"adam_l2": dict(marker="o", markersize=7), "adamw": dict(marker="s", markersize=11, fillstyle="none"),
               "sgd_l2": dict(marker="x", markersize=7)}
    for kind in ("adam_l2", "adamw", "sgd_l2"):
        rows = [r for r in summary["trajectories"]["noisy"][kind]["rows"] if r["effective_over_nominal"] is not None]
        color, ls = STYLES[kind]
        ax.plot([r["noise_scale"] for r in rows], [r["effective_over_nominal"] for r in rows], linestyle="none",
                color=color, label=f"{labels[kind]}: measured", **markers[kind])
        ax.plot([r["noise_scale"] for r in rows], [r["predicted_effective_over_nominal"] for r in rows],
                color=color, linestyle="--", linewidth=1, label=f"{labels[kind]}: predicted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gradient noise σ (standard deviation)")
    ax.set_ylabel("effective decay rate / (lr · λ)")
    ax.set_title("How much decay each optimizer really applies")
    ax.legend(fontsize=7)
    return {"trajectories": traj, "rates": rates}


# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
