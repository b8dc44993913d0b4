# %%
"""The optimizer as a state machine: what it holds, when it creates it, what a checkpoint costs.

The question: an optimizer's memory is not there when you build it, and not
every parameter gets any. What does ``optimizer.state_dict()`` hold after a
step, how many bytes does ``torch.save`` write for it against the bytes it
holds in memory, and what does a parameter whose ``.grad`` is ``None`` do to
the state and to the update?

The method, for each ``torch.optim`` optimizer on a small MLP:

1. Count state entries and bytes before the first step, then after one step:
   the keys, dtypes and shapes of each parameter's state, the in-memory bytes
   (distinct storages) beside the analytic prediction
   (``experiments.lib.formulas.optimizer_state_bytes``), and the size of
   ``torch.save(optimizer.state_dict())``; reload it into a fresh optimizer and
   check that the next step is identical.
2. Lazy state: step once with one layer's gradients left at ``None``: which
   parameters got state, and did weight decay or momentum move them?
3. Step twice, the second time with a layer's gradient ``None`` or all zeros
   (``zero_grad(set_to_none=False)`` leaves zeros): the update each one gets.

``run`` stores what was counted and measured, per optimizer (keyed by name, in table
order); ``summarize`` derives the overheads and ratios of the checkpoints.

Run it: ``python -m experiments.optimizer_lifecycle --profile quick``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from torch import nn

from experiments.lib import formulas
from experiments.lib.threads import single_thread
from experiments.lib.memory import optimizer_state_bytes, param_bytes


# %%
@dataclass(frozen=True)
class Config:
    in_features: int = 256
    hidden: int = 512
    out_features: int = 64
    batch: int = 32
    lr: float = 1e-2
    weight_decay: float = 0.1
    momentum: float = 0.9
    seed: int = 0


PROFILES = {
    "test": Config(in_features=8, hidden=16, out_features=4, batch=4),
    "quick": Config(),
    "full": Config(in_features=4096, hidden=16384, out_features=4096, batch=64),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    "gpu": Config(in_features=1024, hidden=4096, out_features=1024, batch=64),
}
TIMEOUT_S = 300


# name: (constructor, formulas key or None when formulas has no entry)
def optimizers(cfg: Config) -> dict:
    o = torch.optim
    table = {
        "sgd": (lambda p: o.SGD(p, lr=cfg.lr), "sgd"),
        "sgd-momentum": (lambda p: o.SGD(p, lr=cfg.lr, momentum=cfg.momentum), "sgd-momentum"),
        "adam": (lambda p: o.Adam(p, lr=cfg.lr), "adam"),
        "adamw": (lambda p: o.AdamW(p, lr=cfg.lr, weight_decay=cfg.weight_decay), "adamw"),
        "adam-amsgrad": (lambda p: o.Adam(p, lr=cfg.lr, amsgrad=True), "adam-amsgrad"),
        "adagrad": (lambda p: o.Adagrad(p, lr=cfg.lr), "adagrad"),
        "rmsprop": (lambda p: o.RMSprop(p, lr=cfg.lr), "rmsprop"),
    }
    if hasattr(o, "Adafactor"):  # torch >= 2.5
        table["adafactor"] = (lambda p: o.Adafactor(p, lr=cfg.lr), "adafactor")
    return table


def mlp(cfg: Config) -> nn.Sequential:
    torch.manual_seed(cfg.seed)
    return nn.Sequential(nn.Linear(cfg.in_features, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.out_features))


def loss_of(model: nn.Module, cfg: Config, device: str, step: int = 0) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 1 + step)
    x = torch.randn(cfg.batch, cfg.in_features, generator=gen).to(device)
    return model(x).pow(2).mean()


def saved_bytes(obj: object) -> int:
    return len(serialise(obj))


def serialise(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# %% [markdown]
# ## 1. What the state holds after one step, and what saving it costs

# %%
def describe_state(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> dict[str, dict]:
    """The first parameter's state by key, in the optimizer's order: dtype and shape relative to the parameter."""
    first = params[0]
    out = {}
    for key, value in opt.state.get(first, {}).items():
        if isinstance(value, torch.Tensor):
            if value.shape == first.shape:
                shape = "like param"
            elif value.dim() == 0:
                shape = "scalar"
            else:
                shape = "x".join(str(s) for s in value.shape)
            out[key] = {"dtype": str(value.dtype).replace("torch.", ""), "shape": shape, "device": value.device.type}
        else:
            out[key] = {"dtype": type(value).__name__, "shape": "python object", "device": "none"}
    return out


def state_table(cfg: Config, device: str) -> dict[str, dict]:
    rows = {}
    for name, (make, formula_key) in optimizers(cfg).items():
        model = mlp(cfg).to(device)
        params = list(model.parameters())
        opt = make(params)
        entries_before = len(opt.state)
        bytes_before = optimizer_state_bytes(opt)
        saved_before = saved_bytes(opt.state_dict())
        loss_of(model, cfg, device).backward()
        opt.step()
        sd = opt.state_dict()
        in_memory = optimizer_state_bytes(opt)
        state_tensors = sum(isinstance(v, torch.Tensor) for s in opt.state.values() for v in s.values())
        predicted = formulas.optimizer_state_bytes(formula_key, [tuple(p.shape) for p in params])
        blob = serialise(sd)
        # state_dict() is not a snapshot: its tensors are the live state, updated by the next step
        live = next(iter(opt.state.values()), {})
        aliases = any(isinstance(v, torch.Tensor) and v.data_ptr() == live[k].data_ptr()
                      for k, v in next(iter(sd["state"].values()), {}).items())
        # a checkpoint restores the state exactly: the next step from a reloaded optimizer matches
        model2 = mlp(cfg).to(device)
        model2.load_state_dict(model.state_dict())
        opt2 = make(list(model2.parameters()))
        opt2.load_state_dict(torch.load(io.BytesIO(blob), map_location=device, weights_only=True))
        for m in (model, model2):
            m.zero_grad(set_to_none=True)
            loss_of(m, cfg, device, step=1).backward()
        opt.step()
        opt2.step()
        resume_diff = max(float((a.detach() - b.detach()).abs().max())
                          for a, b in zip(model.parameters(), model2.parameters()))
        rows[name] = {
            "state_entries_before_step": entries_before,
            "state_bytes_before_step": bytes_before,
            "saved_bytes_before_step": saved_before,
            "params": len(params),
            "state_entries_after_step": len(opt.state),
            "state_keys": describe_state(opt, params),
            "state_tensors": state_tensors,
            "state_bytes": in_memory,
            "predicted_state_bytes": predicted,
            "saved_state_dict_bytes": len(blob),
            "param_bytes": param_bytes(model),
            "saved_model_bytes": saved_bytes(model.state_dict()),
            "param_groups_keys": sorted(k for k in sd["param_groups"][0] if k != "params"),
            "resume_max_abs_diff": resume_diff,
            "state_dict_aliases_live_state": aliases,
        }
    return rows


# %% [markdown]
# ## 2. and 3. Parameters whose gradient is ``None``
#
# Layer 0 trains; layer 2's gradient is set to ``None`` (as a frozen layer, or
# a branch the forward never used) or to zeros. ``torch.optim`` skips a
# parameter whose ``.grad`` is ``None``: no state, no weight decay, no momentum.
# Zeros are a real gradient: the state advances and the parameter still moves.

# %%
SEMANTICS_OPTIMIZERS = ("sgd-momentum", "adam", "adamw")


def grad_none_semantics(cfg: Config, device: str) -> dict[str, dict]:
    table = optimizers(cfg)
    rows = {}
    for name in SEMANTICS_OPTIMIZERS:
        if name == "sgd-momentum":  # with weight decay too, to show that decay is skipped as well
            def make(p):
                return torch.optim.SGD(p, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            make = table[name][0]
        # Lazy state: the first step with layer 2's gradient None
        model = mlp(cfg).to(device)
        opt = make(model.parameters())
        skipped = list(model[2].parameters())
        before = [p.detach().clone() for p in skipped]
        loss_of(model, cfg, device).backward()
        for p in skipped:
            p.grad = None
        opt.step()
        first = {
            "state_entries": len(opt.state),
            "params": len(list(model.parameters())),
            "skipped_have_state": any(p in opt.state for p in skipped),
            "skipped_max_abs_change": max(float((p.detach() - b).abs().max()) for p, b in zip(skipped, before)),
        }
        # Second step after a normal first step: None against zeros
        second = {}
        for mode in ("none", "zeros"):
            model = mlp(cfg).to(device)
            opt = make(model.parameters())
            loss_of(model, cfg, device).backward()
            opt.step()
            opt.zero_grad(set_to_none=(mode == "none"))
            loss_of(model, cfg, device, step=1).backward()
            target = model[2].weight
            if mode == "none":
                target.grad = None
                model[2].bias.grad = None
            else:
                target.grad.zero_()
                model[2].bias.grad.zero_()
            w_before = target.detach().clone()
            opt.step()
            step = opt.state[target].get("step") if target in opt.state else None
            second[mode] = {
                "max_abs_update": float((target.detach() - w_before).abs().max()),
                "step_count": None if step is None else float(step),
                "trained_layer_step_count": (float(opt.state[model[0].weight]["step"])
                                             if "step" in opt.state[model[0].weight] else None),
            }
        rows[name] = {"first_step_with_none": first, "second_step": second}
    return rows


# %%
def run(cfg: Config, device: str) -> dict:
    torch.manual_seed(cfg.seed)
    model = mlp(cfg)
    with single_thread(device):  # small tensors: one thread is faster on a small shared CPU
        return {
            "model": {"shapes": [list(p.shape) for p in model.parameters()],
                      "numel": sum(p.numel() for p in model.parameters())},
            "state": state_table(cfg, device),
            "grad_none": grad_none_semantics(cfg, device),
            "hyper": {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "momentum": cfg.momentum},
        }


# %% [markdown]
# ## What the pages show, derived from what was measured

# %%
def summarize_state(x: dict) -> dict:
    """What a checkpoint adds to the state it holds; ratios are null where there is nothing to divide by."""
    saved, held, model = x["saved_state_dict_bytes"], x["state_bytes"], x["saved_model_bytes"]
    return {
        "state_ratio": held / x["predicted_state_bytes"] if x["predicted_state_bytes"] else None,
        "saved_overhead_bytes": saved - held,
        "saved_over_memory_ratio": saved / held if held else None,
        # a checkpoint of model + optimizer, and how many model-only checkpoints that is
        "saved_model_and_state_dict_bytes": model + saved,
        "saved_model_and_state_dict_over_model_ratio": (model + saved) / model,
    }


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        return f"{len(data['model']['shapes']) // 2}-layer MLP, {data['model']['numel']:,} params"
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    state = data["state"]
    return {
        "scale_label": scale_label(data),
        "state": {name: summarize_state(x) for name, x in state.items()},
        # the largest difference after reloading, over every optimizer of the state table
        "resume_max_abs_diff_all_optimizers": max(x["resume_max_abs_diff"] for x in state.values()),
    }


# %% [markdown]
# ## Figures

# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    names = list(data["state"])
    rows = list(data["state"].values())
    mib = 2 ** 20
    fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    xs = range(len(rows))
    w = 0.27
    ax.bar([x - w for x in xs], [r["param_bytes"] / mib for r in rows], w, label="parameters (in memory)")
    ax.bar(list(xs), [r["state_bytes"] / mib for r in rows], w, label="optimizer state (in memory)")
    ax.bar([x + w for x in xs], [r["saved_state_dict_bytes"] / mib for r in rows], w,
           label="torch.save(optimizer.state_dict())")
    ax.set_xticks(list(xs), names, rotation=20)
    ax.set_ylabel("MiB")
    ax.set_title("Optimizer state after one step: in memory and on disk")
    ax.legend(fontsize=8)
    return fig


# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
