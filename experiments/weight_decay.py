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
    "quick": Config(),
    "full": Config(lr=2e-4, steps=2000, params_per_scale=16384, noise_scales=(1e-4, 1e-3, 1e-2, 1e-1, 1.0),
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
# Each function below returns ``θ₁`` computed by hand (in float64) from the
# update rule in the ``torch.optim`` documentation, for ``θ₀`` and gradient ``g``.

# %%
def by_hand(kind: str, theta: float, grads: list[float], cfg: Config) -> list[float]:
    """``θ`` after each step, iterating the update rule in float64 for the gradients ``grads``."""
    lr, lam, b1, b2, eps = cfg.lr, cfg.weight_decay, cfg.beta1, cfg.beta2, cfg.eps
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
            measured = float(theta.detach())
            expected = by_hand(kind, 1.0, [g], cfg)[-1]
            rows[kind] = {"grad": g, "available": True, "theta_measured": measured, "theta_by_hand": expected,
                          "abs_diff": abs(measured - expected), "shrink": 1.0 - measured}
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
    zero_grad_by_hand: dict[str, list[float]] = {}
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
        rule = [1.0] + by_hand(kind, 1.0, [0.0] * cfg.steps, cfg)
        zero_grad_by_hand[kind] = [rule[t] for t in steps_kept]
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
        mean_paths = torch.stack(kept_means, dim=1).tolist()  # [scale][kept step]
        final_mean = w.detach().mean(dim=1)
        theta_bar = (running_mean / cfg.steps)
        finals[kind] = w.detach().clone()
        nominal = cfg.lr * cfg.weight_decay
        rows = []
        for i, sigma in enumerate(cfg.noise_scales):
            m = float(final_mean[i])
            rate = -math.log(m) / cfg.steps if m > 0 else None
            if kind in ("adam_l2",):
                predicted = 1.0 / math.sqrt(sigma ** 2 + (cfg.weight_decay * float(theta_bar[i])) ** 2)
            else:
                predicted = 1.0  # SGD-L2 and decoupled forms: the decay is exactly ηλθ per step
            effective = (rate / nominal) if rate is not None else None
            rows.append({"noise_scale": float(sigma), "mean_theta_final": m,
                         "decay_rate_per_step": rate,
                         "effective_over_nominal": effective,
                         "predicted_effective_over_nominal": predicted,
                         "measured_over_predicted_ratio": (effective / predicted) if effective is not None else None})
        measured = [r["effective_over_nominal"] for r in rows if r["effective_over_nominal"] is not None]
        noisy[kind] = {"rows": rows, "mean_theta_by_scale": mean_paths,
                       # the range over the noise scales where mean θ stayed positive (None if at none)
                       "effective_over_nominal_min": min(measured) if measured else None,
                       "effective_over_nominal_max": max(measured) if measured else None}
    return {
        "momentum": momentum_decay(cfg, device),
        "steps_kept": steps_kept,
        "zero_grad_theta": zero_grad_paths,
        "zero_grad_theta_by_hand": zero_grad_by_hand,
        "zero_grad_max_abs_diff_vs_rule": max(abs(a - b) for k in zero_grad_paths
                                              for a, b in zip(zero_grad_paths[k], zero_grad_by_hand[k])),
        "noisy": noisy,
        "sgd_l2_vs_decoupled_max_abs_diff": float((finals["sgd_l2"] - finals["sgd_decoupled"]).abs().max()),
        "adam_l2_vs_adamw_max_abs_diff": float((finals["adam_l2"] - finals["adamw"]).abs().max()),
        "adam_decoupled_vs_adamw_max_abs_diff": (
            float((finals["adam_decoupled"] - finals["adamw"]).abs().max()) if "adam_decoupled" in finals else None),
        "nominal_decay_per_step": cfg.lr * cfg.weight_decay,
        # closed forms: decoupled decay alone is geometric; Adam-L2's first step moves θ by η whatever λ is
        "adamw_zero_grad_closed_form_final": (1 - cfg.lr * cfg.weight_decay) ** cfg.steps,
    }


def momentum_decay(cfg: Config, device: str) -> dict:
    """Zero gradient, SGD with momentum: the L2 term accumulates in the momentum buffer, decoupled decay does not.

    In steady state the buffer holds ``λθ/(1 − μ)``, so L2 decays ``1/(1 − μ)`` times faster than the same
    ``λ`` applied decoupled: the two agree only after rescaling ``λ``.
    """
    nominal = cfg.lr * cfg.weight_decay
    out = {"momentum": cfg.momentum}
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
        final = float(theta.detach())
        out[kind] = {"final_theta": final,
                     "effective_over_nominal": -math.log(final) / cfg.steps / nominal,
                     "predicted_effective_over_nominal": 1.0 / (1.0 - cfg.momentum) if kind == "l2" else 1.0}
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
    decay_params = sum(p.numel() for p in groups[0]["params"])
    no_decay_params = sum(p.numel() for p in groups[1]["params"])
    return {
        "total_params": total,
        "decay_params": decay_params,
        "no_decay_params": no_decay_params,
        "decay_params_fraction": decay_params / total,
        "no_decay_params_fraction": no_decay_params / total,
        "decay_tensors": len(groups[0]["params"]),
        "no_decay_tensors": len(groups[1]["params"]),
        # names outside blocks 1.. (the other blocks repeat block 0)
        "no_decay_names_shown": [n for n in groups[1]["names"]
                                 if not n.startswith("blocks.") or n.startswith("blocks.0.")],
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
                      "eps": cfg.eps, "steps": cfg.steps},
            "one_step": one_step_proofs(cfg, device),
            "trajectories": trajectories(cfg, device),
            "groups": parameter_groups(cfg, device),
        }


# %%
LABELS = {"sgd_l2": "SGD, weight_decay (L2)", "sgd_decoupled": "SGD, decay by hand",
          "adam_l2": "Adam, weight_decay (L2)", "adam_decoupled": "Adam, decoupled_weight_decay",
          "adamw": "AdamW"}
STYLES = {"sgd_l2": ("C0", "-"), "sgd_decoupled": ("C1", ":"), "adam_l2": ("C3", "-"),
          "adam_decoupled": ("C2", "--"), "adamw": ("C4", ":")}


def plot(data: dict) -> dict:
    import matplotlib.pyplot as plt

    tr = data["trajectories"]
    steps = tr["steps_kept"]
    traj, (ax0, ax1) = plt.subplots(1, 2, figsize=(9.5, 3.8), constrained_layout=True)
    for kind, path in tr["zero_grad_theta"].items():
        color, ls = STYLES[kind]
        ax0.plot(steps, path, color=color, linestyle=ls, label=LABELS[kind], linewidth=2)
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
        rows = [r for r in tr["noisy"][kind]["rows"] if r["effective_over_nominal"] is not None]
        color, ls = STYLES[kind]
        ax.plot([r["noise_scale"] for r in rows], [r["effective_over_nominal"] for r in rows], linestyle="none",
                color=color, label=f"{LABELS[kind]}: measured", **markers[kind])
        ax.plot([r["noise_scale"] for r in rows], [r["predicted_effective_over_nominal"] for r in rows],
                color=color, linestyle="--", linewidth=1, label=f"{LABELS[kind]}: predicted")
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
