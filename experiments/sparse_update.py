# %%
"""Sparse update under a memory budget: which layers, biases and channels to train.

Question: when fine-tuning must fit a small memory budget, which parts of a
network should be updated? Lin et al. 2022 ("On-Device Training Under 256KB
Memory", section 2.2) update only some biases and some weight channels,
chosen by a contribution analysis and a search under the budget. What does
each choice cost, what does it buy, and how close does the searched update
come to a full update for a fraction of its memory?

Method: a small MobileNetV2-like CNN (``experiments/lib/mbv2.py``; its
frozen-weight convolutions keep no activation for backward, unlike
PyTorch's own, which the run also measures) is trained on digits 0-4 of the shipped
UCI digits, then fine-tuned on digits 5-9 with a new classifier (always
trained). Costs are measured on that network: for each layer and each choice
(bias; bias and a fraction of the output channels' weights) the bytes it
adds to training, from autograd's saved tensors (``saved_tensors_hooks``,
distinct storages), the gradients and the Adam state, and the
bytes that running backward *through* each layer keeps. Benefits are
measured by short fine-tuning runs, one per choice (contribution analysis).
Then the best configuration under each budget is found by an exact dynamic
program over the whole network, checked equal to exhaustive search on the
last layers, and every configuration on the accuracy-memory frontier (full
update, last-k layers, bias only, searched) is fine-tuned and measured.

Run: ``python -m experiments.sparse_update --profile quick``
"""

# %%
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from experiments.lib import budget_search as B
from experiments.lib.threads import single_thread
from experiments.lib.digits import load
from experiments.lib.mbv2 import Arch, TinyMobileNetV2
from experiments.lib.memory import optimizer_state_bytes, tensor_bytes


@dataclass(frozen=True)
class Config:
    arch: Arch = Arch()
    pretrain_steps: int = 150
    finetune_steps: int = 25
    batch: int = 64
    lr: float = 0.01                                # Adam, for pre-training and fine-tuning
    weight_fractions: tuple = (0.5, 1.0)            # fractions of output channels whose weights may train
    budget_fractions: tuple = (0.1, 0.2, 0.35, 0.6)   # budgets as fractions of the full update's bytes
    last_k: tuple = (1, 2, 4)
    exhaustive_units: int = 5                       # exhaustive search over this many last layers
    seeds: tuple = (0,)                             # fine-tuning seeds averaged per benefit
    seed: int = 0


PROFILES = {
    "test": Config(arch=Arch(stem=4, blocks=((1, 4, 1), (2, 8, 2)), head=8), pretrain_steps=20, finetune_steps=3,
                   batch=16, budget_fractions=(0.3, 0.7), last_k=(1,), exhaustive_units=3),
    "quick": Config(),
    "full": Config(arch=Arch(stem=32, blocks=((1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 1)), head=128),
                   pretrain_steps=600, finetune_steps=120, weight_fractions=(0.25, 0.5, 1.0),
                   budget_fractions=(0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8), last_k=(1, 2, 3, 4, 6, 8),
                   exhaustive_units=6, seeds=(0, 1, 2)),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    # Thousands of small fine-tuning steps, launch-bound on a GPU: quick's sizes.
    "gpu": Config(),
}
TIMEOUT_S = 900


# %% [markdown]
# ## Measuring what a configuration costs
# A configuration says, per unit, "none", "bias" or "bias + weights of a
# fraction of the output channels"; the new classifier always trains.

# %%
def apply(model: TinyMobileNetV2, choice: dict) -> list[torch.nn.Parameter]:
    """Set what trains; ``choice`` maps unit name -> (bias, weight_fraction). Returns trainable params."""
    model.freeze_all()
    for name, unit in model.units():
        bias, frac = choice.get(name, (False, 0.0))
        unit.set_update(bias, frac)
    for p in model.classifier.parameters():
        p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def measure_step(model: TinyMobileNetV2, choice: dict, x: torch.Tensor, y: torch.Tensor, cfg: Config,
                 input_grad: bool = False) -> dict:
    """One training step; bytes saved for backward per unit, gradients and optimizer state per unit."""
    params = apply(model, choice)
    owner = {}
    for name, unit in model.units():
        for p in unit.parameters():
            owner[id(p)] = name
    for p in model.classifier.parameters():
        owner[id(p)] = "classifier"
    excluded = {_key(p) for p in model.parameters()} | {_key(x)}
    current = ["other"]
    saved: dict[tuple, tuple[int, str]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        k = _key(t)
        if k not in excluded and k not in saved:
            saved[k] = (t.untyped_storage().nbytes(), current[0])
        return t

    handles = []
    for name, mod in [*model.units(), ("classifier", model.classifier)]:
        handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: current.__setitem__(0, n)))
    inp = x.detach().clone().requires_grad_(input_grad)
    excluded.add(_key(inp))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(model(inp), y)
    finally:
        for h in handles:
            h.remove()
    loss.backward()
    opt = torch.optim.Adam(params, lr=cfg.lr)
    opt.step()
    per_unit: dict[str, dict] = {}
    for nbytes, name in saved.values():
        per_unit.setdefault(name, _zero())["saved_bytes"] += nbytes
    for p in params:
        row = per_unit.setdefault(owner[id(p)], _zero())
        row["grad_bytes"] += tensor_bytes(p.grad)
        row["optimizer_bytes"] += tensor_bytes([dict(opt.state[p])])
    total = {k: sum(r[k] for r in per_unit.values()) for k in ("saved_bytes", "grad_bytes", "optimizer_bytes")}
    assert total["optimizer_bytes"] == optimizer_state_bytes(opt)
    model.zero_grad(set_to_none=True)
    return {"per_unit": per_unit, **total, "total_bytes": sum(total.values())}


def _zero() -> dict:
    return {"saved_bytes": 0, "grad_bytes": 0, "optimizer_bytes": 0}


def _key(t: torch.Tensor) -> tuple:
    s = t.untyped_storage()
    return (t.device.type, s.data_ptr(), s.nbytes())


# %% [markdown]
# ## Measuring what a configuration buys: short fine-tuning runs

# %%
def finetune(pretrained: TinyMobileNetV2, choice: dict, data: dict, cfg: Config, seed: int) -> float:
    model = copy.deepcopy(pretrained)
    torch.manual_seed(1000 + seed)
    model.classifier.reset_parameters()
    params = apply(model, choice)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    x, y = data["xt_train"], data["yt_train"]
    for _ in range(cfg.finetune_steps):
        idx = torch.randint(0, x.shape[0], (cfg.batch,), generator=gen).to(x.device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((model(data["xt_test"]).argmax(1) == data["yt_test"]).double().mean())


def mean_accuracy(pretrained, choice, data, cfg) -> float:
    return sum(finetune(pretrained, choice, data, cfg, s) for s in cfg.seeds) / len(cfg.seeds)


# %%
def split(cfg: Config, device: str) -> dict:
    """Source task: digits 0-4; target task: digits 5-9 (labels 0-4)."""
    d = load(device, size=8, seed=cfg.seed)
    out = {}
    for part in ("train", "test"):
        x, y = d[f"x_{part}"], d[f"y_{part}"]
        src, tgt = y < 5, y >= 5
        out[f"xs_{part}"], out[f"ys_{part}"] = x[src], y[src]
        out[f"xt_{part}"], out[f"yt_{part}"] = x[tgt], y[tgt] - 5
    return out


def pretrain(cfg: Config, data: dict, device: str) -> tuple[TinyMobileNetV2, float]:
    torch.manual_seed(cfg.seed)
    model = TinyMobileNetV2(Arch(**{**cfg.arch.__dict__, "classes": 5})).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    x, y = data["xs_train"], data["ys_train"]
    for _ in range(cfg.pretrain_steps):
        idx = torch.randint(0, x.shape[0], (cfg.batch,), generator=gen).to(device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((model(data["xs_test"]).argmax(1) == data["ys_test"]).double().mean())
    return model, acc


def option_list(cfg: Config) -> dict[str, tuple[bool, float]]:
    """Option id -> (bias, fraction of output channels whose weights train), in table order."""
    return {"bias": (True, 0.0), **{f"weight_{f:g}": (True, f) for f in cfg.weight_fractions}}


# %% [markdown]
# ## The search's inputs, from what was measured
# The search runs inside ``run`` (it decides which configurations are fine-tuned and measured);
# ``summarize`` derives the same costs and benefits for the pages with the same two functions.

# %%
def option_cost_bytes(o: dict) -> int:
    """What one option adds to a training step: saved tensors beyond the backward path, gradients, Adam state."""
    return o["saved_bytes"] + o["grad_bytes"] + o["optimizer_bytes"]


def search_options(data: dict) -> tuple[list[list[tuple[int, float]]], list[int]]:
    """Per unit, ``(cost_bytes, benefit)`` of "none" and of every option; and the backward-path bytes."""
    base = data["classifier_only_accuracy"]
    options = [[(0, 0.0)] + [(option_cost_bytes(o), o["accuracy"] - base)
                             for o in data["layers"][u]["options"].values()] for u in data["units"]]
    return options, [data["layers"][u]["path_bytes"] for u in data["units"]]


def choice_indices(data: dict, choice: dict) -> tuple[int, ...]:
    """A configuration ``{unit: option id or "none"}`` as option indices (0: "none") per unit."""
    ids = ["none", *data["options"]]
    return tuple(ids.index(choice[u]) for u in data["units"])


# %%
def run(cfg: Config, device: str) -> dict:
    with single_thread(device):
        return _run(cfg, device)


def _run(cfg: Config, device: str) -> dict:
    data = split(cfg, device)
    pretrained, source_acc = pretrain(cfg, data, device)
    units = [n for n, _ in pretrained.units()]
    xb, yb = data["xt_train"][: cfg.batch], data["yt_train"][: cfg.batch]
    probe = copy.deepcopy(pretrained)
    probe.classifier = torch.nn.Linear(probe.classifier.in_features, 5).to(device)
    opts = option_list(cfg)

    def settings(config: dict) -> dict:
        """``{unit: option id}`` -> ``{unit: (bias, weight_fraction)}`` for ``apply``."""
        return {u: opts[o] for u, o in config.items() if o != "none"}

    # Costs. Path: backward through every unit (input requires grad, no unit trained).
    path_run = measure_step(probe, {}, xb, yb, cfg, input_grad=True)
    path = {n: path_run["per_unit"].get(n, _zero())["saved_bytes"] for n in units}
    base_bytes = measure_step(probe, {}, xb, yb, cfg)["total_bytes"]      # the classifier alone
    base_acc = mean_accuracy(pretrained, {}, data, cfg)
    layers = {}
    for name in units:
        row = {"path_bytes": path[name], "options": {}}
        for label, choice in opts.items():
            m = measure_step(probe, {name: choice}, xb, yb, cfg)
            own = m["per_unit"][name]
            row["options"][label] = {
                "saved_bytes": own["saved_bytes"] - path[name],   # beyond what backward through it keeps
                "grad_bytes": own["grad_bytes"],
                "optimizer_bytes": own["optimizer_bytes"],
                "measured_total_bytes": m["total_bytes"],          # the whole step, for the cost model's check
                # Benefit: contribution analysis, one short fine-tuning run per choice.
                "accuracy": mean_accuracy(pretrained, {name: choice}, data, cfg),
            }
        layers[name] = row
    out = {"units": units, "options": list(opts), "source_test_accuracy": source_acc,
           "classifier_only_accuracy": base_acc, "base_bytes": base_bytes, "layers": layers}

    def measured_point(config: dict, extra: dict | None = None) -> dict:
        config = {u: config.get(u, "none") for u in units}
        m = measure_step(probe, settings(config), xb, yb, cfg)
        return {**(extra or {}), "choice": config, "measured_bytes": m["total_bytes"], "saved_bytes": m["saved_bytes"],
                "grad_bytes": m["grad_bytes"], "optimizer_bytes": m["optimizer_bytes"],
                "accuracy": mean_accuracy(pretrained, settings(config), data, cfg)}

    full = {n: "weight_1" for n in units}
    bias_only = {n: "bias" for n in units}
    frontier = {"classifier_only": measured_point({}), "full_update": measured_point(full),
                "bias_only": measured_point(bias_only)}
    for k in cfg.last_k:
        if k <= len(units):
            frontier[f"last_{k}"] = measured_point({n: "weight_1" for n in units[-k:]}, {"k": k})

    # The same updates with PyTorch's own convolution backward, which keeps every convolution's
    # input once anything about it needs a gradient.
    probe.set_sparse_backward(False)
    stock = {"bias_only_bytes": measure_step(probe, settings(bias_only), xb, yb, cfg)["total_bytes"],
             "full_update_bytes": measure_step(probe, settings(full), xb, yb, cfg)["total_bytes"],
             "bias_only_last_unit_bytes": measure_step(probe, {units[-1]: opts["bias"]}, xb, yb, cfg)["total_bytes"]}
    probe.set_sparse_backward(True)
    stock["sparse_bias_only_last_unit_bytes"] = measure_step(probe, {units[-1]: opts["bias"]}, xb, yb,
                                                             cfg)["total_bytes"]

    options, path_list = search_options(out)
    full_cost = B.config_cost(options, path_list, choice_indices(out, frontier["full_update"]["choice"]))
    searches = []
    tail = cfg.exhaustive_units
    for frac in cfg.budget_fractions:
        budget = int(frac * full_cost)
        dp = B.dynamic_program(options, path_list, budget)
        # Exhaustive over the last ``tail`` layers (earlier ones not updated), and the DP on the same problem.
        ex_tail = B.exhaustive(options[-tail:], path_list[-tail:], budget)
        dp_tail = B.dynamic_program(options[-tail:], path_list[-tail:], budget)
        chosen = {units[i]: out["options"][c - 1] for i, c in enumerate(dp.choice) if c}
        searches.append(measured_point(chosen, {
            "budget_fraction": frac, "budget_bytes": budget + base_bytes,
            "exhaustive_tail_benefit": ex_tail.benefit, "dp_tail_benefit": dp_tail.benefit,
            "dp_quantum_bytes": B.default_quantum(options, path_list, budget),
            "cost_gcd_bytes": B.cost_gcd(options, path_list)}))
    return {**out, "frontier": frontier, "searches": searches, "stock_torch_conv": stock,
            "finetune_steps": cfg.finetune_steps, "seeds": len(cfg.seeds), "exhaustive_units": tail}


# %% [markdown]
# ## Derived at build time: what the pages and figures show

# %%
SAME_BENEFIT = 1e-12        # the DP and exhaustive search agree when their benefits are this close
NEAR_FULL_ACCURACY = 0.02   # "as good as the full update": within this much test accuracy
FIXED_LABELS = {"classifier_only": "classifier only", "full_update": "full update", "bias_only": "bias only"}


NOT_UPDATED_MARK = "·"


def option_labels(option_ids: list[str]) -> dict:
    """Column headers ("weight 0.5") and short cell marks ("W 0.5") of the options, in table order."""
    return {o: {"label": o.replace("_", " "), "short": o.replace("weight_", "W ")} for o in option_ids}


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        return f"MobileNetV2-like CNN, {len(data['units'])} units, on UCI digits"
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    """Costs and benefits per option, the cost model against measurement, the frontier table with labels."""
    options, path_list = search_options(data)
    units, base_bytes = data["units"], data["base_bytes"]
    base_acc = data["classifier_only_accuracy"]
    layers = {}
    for i, u in enumerate(units):
        later = sum(path_list[i:])
        layers[u] = {"path_bytes": path_list[i], "options": {}}
        for o, (cost, benefit) in zip(data["options"], options[i][1:]):
            layers[u]["options"][o] = {
                "cost_bytes": cost, "benefit": benefit,
                # The step predicted: the classifier's step, this option, and backward from the output to here.
                "predicted_total_bytes": base_bytes + cost + later,
            }

    def point(key: str, p: dict, label: str, budget_bytes: int | None) -> dict:
        choice = choice_indices(data, p["choice"])
        return {"label": label, "k": p["k"] if key.startswith("last_") else None, "budget_bytes": budget_bytes,
                "measured_bytes": p["measured_bytes"],
                "predicted_bytes": base_bytes + B.config_cost(options, path_list, choice),
                "accuracy": p["accuracy"], "predicted_benefit": B.config_benefit(options, choice),
                "measured_benefit": p["accuracy"] - base_acc}

    labels = option_labels(data["options"])
    frontier = {}
    for key, p in data["frontier"].items():
        frontier[key] = point(key, p, FIXED_LABELS.get(key, "last-k layers"), None)
    searches = []
    for i, s in enumerate(data["searches"]):
        row = point("searched", s, "searched sparse update", s["budget_bytes"])
        frontier[f"searched_{i + 1}"] = row
        searches.append({
            **row, "budget_fraction": s["budget_fraction"],
            "choice": {u: NOT_UPDATED_MARK if c == "none" else labels[c]["short"] for u, c in s["choice"].items()},
            "dp_quantum_bytes": s["dp_quantum_bytes"], "cost_gcd_bytes": s["cost_gcd_bytes"],
            "dp_equals_exhaustive": abs(s["exhaustive_tail_benefit"] - s["dp_tail_benefit"]) < SAME_BENEFIT,
            # On the costs' own grid the DP is exact; a coarser grid rounds costs up.
            "dp_grid_exact": s["dp_quantum_bytes"] == s["cost_gcd_bytes"],
        })
    all_layer_rows = [o for row in data["layers"].values() for o in row["options"].values()]
    layer_errors = [abs(o["measured_total_bytes"] / d["predicted_total_bytes"] - 1)
                    for o, d in zip(all_layer_rows, [d for row in layers.values() for d in row["options"].values()])]
    point_errors = [abs(p["measured_bytes"] / p["predicted_bytes"] - 1) for p in frontier.values()]
    full = frontier["full_update"]
    near_full = [s for s in searches if s["accuracy"] >= full["accuracy"] - NEAR_FULL_ACCURACY]
    stock = data["stock_torch_conv"]
    return {
        "scale_label": scale_label(data),
        "option_labels": labels,
        "layers": layers,
        "frontier": frontier,
        "searches": searches,
        "largest_budget_search": searches[-1],
        "all_dp_equal_exhaustive": all(s["dp_equals_exhaustive"] for s in searches),
        "cost_model_max_rel_error": max(point_errors),
        "layer_cost_model_max_rel_error": max(layer_errors),
        "smallest_searched_near_full": min(near_full, key=lambda s: s["measured_bytes"]) if near_full else None,
        "seeds_averaged": data["seeds"] > 1,
        # the searched update at the largest budget against the full update: within NEAR_FULL_ACCURACY they
        # match (with one seed, a few test images either way are noise, not a ranking)
        "near_full_accuracy": NEAR_FULL_ACCURACY,
        "largest_search_matches_full": abs(searches[-1]["accuracy"] - full["accuracy"]) <= NEAR_FULL_ACCURACY,
        "stock_torch_conv": {
            "sparse_bias_only_bytes": data["frontier"]["bias_only"]["measured_bytes"],
            "bias_only_over_full_update_fraction": stock["bias_only_bytes"] / stock["full_update_bytes"],
            "bias_only_saving_bytes": stock["bias_only_bytes"] - data["frontier"]["bias_only"]["measured_bytes"],
        },
    }


# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    layers = summary["layers"]
    names = list(layers)
    option_ids = data["options"]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    width = 0.8 / (len(option_ids) + 1)
    pick = data["searches"][len(data["searches"]) // 2]
    for j, option in enumerate(option_ids):
        vals = [layers[n]["options"][option]["cost_bytes"] / 1024 for n in names]
        xs = [i + (j - len(option_ids) / 2) * width for i in range(len(names))]
        ax.bar(xs, vals, width, label=f"update {summary['option_labels'][option]['label']}")
        for i, x in enumerate(xs):
            if pick["choice"][names[i]] == option:
                ax.plot(x, vals[i] * 1.15, "v", color="black", ms=6)
    through = [(i + (len(option_ids) / 2) * width, layers[n]["path_bytes"] / 1024) for i, n in enumerate(names)
               if layers[n]["path_bytes"] > 0]      # a linear projection keeps nothing: no bar
    ax.bar([t[0] for t in through], [t[1] for t in through], width, color="grey", label="backward through it")
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("memory added to training (KiB)")
    ax.set_title(f"Per-layer cost; ▼ = chosen at a budget of {pick['budget_bytes'] / 1024:.0f} KiB", fontsize=10)
    ax.legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.08), frameon=False)
    fig.tight_layout()

    fig2, ax2 = plt.subplots(figsize=(7, 3.8))
    frontier = summary["frontier"]
    for key, style in (("classifier_only", "k*"), ("full_update", "rs"), ("bias_only", "g^")):
        p = frontier[key]
        ax2.plot([p["measured_bytes"] / 1024], [100 * p["accuracy"]], style, ms=9, label=p["label"])
    for label, style in (("last-k layers", "o--"), ("searched sparse update", "D-")):
        p = sorted((q for q in frontier.values() if q["label"] == label), key=lambda q: q["measured_bytes"])
        ax2.plot([q["measured_bytes"] / 1024 for q in p], [100 * q["accuracy"] for q in p], style, label=label)
    ax2.set_xscale("log")
    ax2.set_xlabel("training memory beyond inference (KiB, measured)")
    ax2.set_ylabel("test accuracy after fine-tuning (%)")
    ax2.legend(fontsize=8)
    fig2.tight_layout()
    return {"costs": fig, "frontier": fig2}


# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
