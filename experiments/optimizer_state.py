# %% [markdown]
# # Where the memory goes: parameters, gradients, optimizer state, and the step itself

# %%
"""Where the memory of a training step goes: parameters, gradients, optimizer state, temporaries.

**Question.** How many bytes does each `torch.optim` optimizer keep per parameter, what does
one training step peak at, and how much do the `foreach` and `fused` implementations add in
temporaries that the usual "bytes per parameter" tables leave out?

**Method.** A small transformer language model with many parameter tensors of mixed shapes.
For each optimizer and implementation: one step to create the lazy state, then a second step
measured by PyTorch's `MemTracker` (every storage labelled as parameter, gradient, activation,
optimizer state or temporary). State bytes are read off `optimizer.state` and compared with the
exact prediction from the update rules (`experiments/lib/formulas.py`). Then
`zero_grad(set_to_none=...)`, and the bytes of four precision regimes, built for real.
`run` stores what was measured; `summarize` derives the ratios, the step temporaries and the
bytes per parameter that the pages show.

**Run.** `python -m experiments.optimizer_state --profile quick` prints the JSON.
"""

# %%
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from experiments.lib import formulas
from experiments.lib.memory import MemoryTracker, grad_bytes, optimizer_state_bytes, param_bytes, tensor_bytes
from experiments.lib.gpt import GPT, LayerShape
from experiments.lib.threads import single_thread
from experiments.lib.units import gpt_scale_label


@dataclass(frozen=True)
class Config:
    vocab: int = 512
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    seq: int = 64
    batch: int = 8
    optimizers: tuple[str, ...] = ("sgd", "sgd-momentum", "sgd-nesterov", "adam", "adamw", "adam-amsgrad",
                                   "adagrad", "rmsprop", "adafactor")
    implementations: tuple[str, ...] = ("foreach", "for-loop", "fused")


PROFILES = {
    "test": Config(vocab=32, d_model=16, layers=1, heads=2, seq=8, batch=1),
    "quick": Config(),
    "full": Config(vocab=32000, d_model=1024, layers=8, heads=16, seq=512, batch=8),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    # 27 models are built on the CPU (one per optimizer and implementation): 17 M parameters each, not 134 M.
    "gpu": Config(vocab=8192, d_model=512, layers=4, heads=8, seq=256, batch=8),
}
TIMEOUT_S = 900

# %% [markdown]
# ## The optimizers, as `torch.optim` builds them
# `implementation` picks the kernel: `foreach` (multi-tensor ops over lists), `for-loop` (one
# parameter at a time) or `fused` (one kernel; not every optimizer or device has it).

# %%
LR = 1e-3


def make_optimizer(name: str, params, implementation: str) -> torch.optim.Optimizer:
    impl = {"foreach": {"foreach": True}, "for-loop": {"foreach": False}, "fused": {"fused": True}}[implementation]
    if name == "sgd":
        return torch.optim.SGD(params, lr=LR, **impl)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=LR, momentum=0.9, **impl)
    if name == "sgd-nesterov":
        return torch.optim.SGD(params, lr=LR, momentum=0.9, nesterov=True, **impl)
    if name == "adam":
        return torch.optim.Adam(params, lr=LR, **impl)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=LR, weight_decay=0.01, **impl)
    if name == "adam-amsgrad":
        return torch.optim.Adam(params, lr=LR, amsgrad=True, **impl)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=LR, **impl)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=LR, **impl)
    if name == "adafactor":
        return torch.optim.Adafactor(params, lr=LR, **impl)
    raise ValueError(f"unknown optimizer {name!r}")


def build(cfg: Config, device: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    shape = LayerShape(cfg.d_model, cfg.heads, dropout=0.0, attn_dropout=0.0)
    return GPT(cfg.vocab, cfg.seq, cfg.layers, shape).to(device=device, dtype=dtype)


def lm_batch(vocab: int, batch: int, seq: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens and their next-token targets."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, seq + 1), generator=g)
    return tokens[:, :-1].to(device), tokens[:, 1:].to(device)


def lm_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return model(inputs, targets)


# %% [markdown]
# ## One optimizer, one implementation
# Step 1 creates the state; step 2 is measured twice: the whole step (forward, backward,
# `step`, `zero_grad`), and `optimizer.step()` alone, whose peak above the persistent terms is
# the implementation's temporaries.

# %%
def measure_optimizer(cfg: Config, device: str, name: str, implementation: str) -> dict:
    model = build(cfg, device)
    try:
        opt = make_optimizer(name, model.parameters(), implementation)
    except (RuntimeError, ValueError, TypeError) as exc:
        return {"supported": False, "reason": str(exc).splitlines()[0]}
    x, y = lm_batch(cfg.vocab, cfg.batch, cfg.seq, device)
    try:
        lm_loss(model, x, y).backward()
        opt.step()
    except (RuntimeError, ValueError, TypeError) as exc:
        return {"supported": False, "reason": str(exc).splitlines()[0]}
    opt.zero_grad(set_to_none=True)

    whole = MemoryTracker(device).track(model, opt)
    with whole:
        lm_loss(model, x, y).backward()
        grads = grad_bytes(model)
        step_only = MemoryTracker(device).track(model, opt)
        with step_only:
            opt.step()
        opt.zero_grad(set_to_none=True)
    shapes = [tuple(p.shape) for p in model.parameters()]
    peak = whole.peak()
    return {
        "supported": True,
        "params_bytes": param_bytes(model),
        "grads_bytes": grads,
        "state_bytes": optimizer_state_bytes(opt),
        "predicted_state_bytes": formulas.optimizer_state_bytes(name, shapes),
        "step_tensor_bytes": tensor_bytes([s["step"] for s in opt.state.values() if "step" in s]),
        "step_peak_bytes": step_only.peak().total,
        "peak_bytes": peak.total,
        "peak_activations_bytes": peak.by_category["activations"],
        "cuda_max_allocated_bytes": whole.cuda_max_allocated_bytes,
    }


# %% [markdown]
# ## `zero_grad(set_to_none=True)` against `False`
# A parameter that takes no part in a step: with `None` gradients the optimizer skips it; with
# zero-filled gradients Adam still moves it (its moments are not zero), and the gradient
# buffers stay allocated between steps.

# %%
def measure_zero_grad(cfg: Config, device: str) -> dict:
    out = {}
    for set_to_none in (True, False):
        model = build(cfg, device)
        extra = nn.Linear(cfg.d_model, cfg.d_model).to(device)  # used in step 1 only
        params = list(model.parameters()) + list(extra.parameters())
        opt = torch.optim.Adam(params, lr=LR)
        x, y = lm_batch(cfg.vocab, cfg.batch, cfg.seq, device)
        (lm_loss(model, x, y) + extra(model.tok(x)).pow(2).mean()).backward()
        opt.step()
        opt.zero_grad(set_to_none=set_to_none)
        held = tensor_bytes([p.grad for p in params if p.grad is not None])
        before = extra.weight.detach().clone()
        lm_loss(model, x, y).backward()
        opt.step()
        out["none" if set_to_none else "zeros"] = {
            "grad_bytes_between_steps": held,
            "unused_param_max_change": float((extra.weight.detach() - before).abs().max()),
        }
    return out


# %% [markdown]
# ## Bytes per parameter in four precision regimes, built for real
# `fp32`: everything fp32. `amp-autocast`: `torch.autocast` over fp32 weights (the casts are
# transient). `mixed-master`: 16-bit weights and gradients plus an fp32 master copy that the
# optimizer updates (the 2 + 2 + 12 accounting). `pure-bf16`: weights, gradients and Adam moments
# all bf16.

# %%
def measure_precision(cfg: Config, device: str) -> dict:
    low = torch.bfloat16
    x, y = lm_batch(cfg.vocab, cfg.batch, cfg.seq, device)
    out = {}
    for regime in formulas.PRECISION_REGIMES:
        dtype = low if regime in ("mixed-master", "pure-bf16") else torch.float32
        model = build(cfg, device, dtype)
        n = sum(p.numel() for p in model.parameters())
        master = [p.detach().float().requires_grad_(True) for p in model.parameters()] \
            if regime == "mixed-master" else []
        opt = torch.optim.AdamW(master or model.parameters(), lr=LR, foreach=True)
        for _ in range(2):
            if regime == "amp-autocast":
                with torch.autocast(device_type=torch.device(device).type, dtype=low):
                    loss = lm_loss(model, x, y)
            else:
                loss = lm_loss(model, x, y)
            loss.backward()
            if master:
                for m, p in zip(master, model.parameters()):
                    m.grad = p.grad.float()
            opt.step()
            if master:
                with torch.no_grad():
                    for m, p in zip(master, model.parameters()):
                        p.copy_(m)
                        m.grad = None
        out[regime] = {
            "parameters": n,
            "weights_bytes": param_bytes(model),
            "grads_bytes": grad_bytes(model),
            "master_bytes": tensor_bytes(master),
            # the moments only: the step scalars are per tensor, not per parameter
            "optimizer_bytes": optimizer_state_bytes(opt) - tensor_bytes([s["step"] for s in opt.state.values()]),
            "grad_dtype": str(next(model.parameters()).grad.dtype).replace("torch.", ""),
        }
    return out


# %%
def run(cfg: Config, device: str) -> dict:
    with single_thread(device):  # small tensors: a second CPU thread only adds waiting; CUDA is unaffected
        return measure_all(cfg, device)


def measure_all(cfg: Config, device: str) -> dict:
    model = build(cfg, device)
    optimizers = {name: {impl: measure_optimizer(cfg, device, name, impl) for impl in cfg.implementations}
                  for name in cfg.optimizers}
    return {
        "model": {
            "parameters": sum(p.numel() for p in model.parameters()),
            "parameter_tensors": len(list(model.parameters())),
            "params_bytes": param_bytes(model),
            "batch": cfg.batch, "seq": cfg.seq, "d_model": cfg.d_model, "layers": cfg.layers,
        },
        "optimizers": optimizers,
        "zero_grad": measure_zero_grad(cfg, device),
        "precision": measure_precision(cfg, device),
    }


# %% [markdown]
# ## What the pages show, derived from what was measured
# The step's temporaries are what `optimizer.step()` peaked at above parameters, gradients and
# state; the "persistent" prediction is the folklore table: weights + gradients + predicted state.

# %%
IMPLEMENTATIONS = ("for-loop", "foreach", "fused")  # the order of the pages' columns
BYTES_PER_PARAM_PARTS = ("weights", "grads", "master", "optimizer")


def model_buffer_bytes(model: dict) -> int:
    """The model's buffers: one bool causal mask of ``seq x seq`` per layer (``experiments.lib.gpt``).

    They are live through ``optimizer.step()`` without being parameters, gradients or state, so the
    step's peak holds them: without subtracting them, SGD's step (which allocates nothing) showed
    2 x 64 x 64 B = 8 KiB of "temporaries" on the quick model.
    """
    return model["layers"] * model["seq"] ** 2


def summarize_step(x: dict, buffers_bytes: int = 0) -> dict:
    """Ratios and temporaries of one optimizer and implementation (``supported: False``: nothing to derive)."""
    if not x["supported"]:
        return {"supported": False}
    params, grads, state, predicted = x["params_bytes"], x["grads_bytes"], x["state_bytes"], x["predicted_state_bytes"]
    temporaries = max(x["step_peak_bytes"] - (params + grads + state + buffers_bytes), 0)
    persistent = params + params + predicted
    return {
        "supported": True,
        "state_ratio": state / predicted if predicted else 1.0,  # SGD: 0 bytes predicted, 0 held
        "state_over_params_ratio": state / params,
        "step_temporaries_bytes": temporaries,
        "temporaries_over_params_ratio": temporaries / params,
        "predicted_persistent_bytes": persistent,
        "peak_over_predicted_persistent_ratio": x["peak_bytes"] / persistent,
    }


def summarize_precision(regime: str, x: dict) -> dict:
    """Bytes per parameter of one precision regime, beside the accounting of ``formulas.PRECISION_REGIMES``."""
    n = x["parameters"]
    measured = {part: x[f"{part}_bytes"] / n for part in BYTES_PER_PARAM_PARTS}
    predicted = dict(zip(BYTES_PER_PARAM_PARTS, formulas.PRECISION_REGIMES[regime]))
    total, predicted_total = sum(measured.values()), sum(predicted.values())
    return {"measured_bytes_per_param": measured, "predicted_bytes_per_param": predicted,
            "total_bytes_per_param": total, "predicted_total_bytes_per_param": predicted_total,
            "ratio": total / predicted_total}


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size."""
    return gpt_scale_label(data)


def summarize(data: dict) -> dict:
    optimizers = data["optimizers"]
    first = next(iter(optimizers.values()))
    buffers = model_buffer_bytes(data["model"])
    zeros = data["zero_grad"]["zeros"]["grad_bytes_between_steps"]
    return {
        "scale_label": scale_label(data),
        "implementations": [impl for impl in IMPLEMENTATIONS if impl in first],
        "buffers_bytes": buffers,
        "optimizers": {name: {impl: summarize_step(x, buffers) for impl, x in impls.items()}
                       for name, impls in optimizers.items()},
        "zero_grad": {mode: {"unused_param_updated": z["unused_param_max_change"] > 0.0}
                      for mode, z in data["zero_grad"].items()},
        # the zero_grad test's model is the chapter's plus one unused Linear(d_model, d_model): its gradient
        # buffers exceed the chapter model's parameter bytes by that layer's
        "zero_grad_extra_layer_bytes": zeros - data["model"]["params_bytes"],
        "precision": {regime: summarize_precision(regime, x) for regime, x in data["precision"].items()},
    }


# %% [markdown]
# ## Figures

# %%
def plot(data: dict, summary: dict) -> dict:
    import matplotlib.pyplot as plt

    mib = 2**20
    names = [n for n, v in data["optimizers"].items() if v["foreach"]["supported"]]
    rows = [{**data["optimizers"][n]["foreach"], **summary["optimizers"][n]["foreach"]} for n in names]
    parts = [("params_bytes", "parameters"), ("grads_bytes", "gradients"), ("state_bytes", "optimizer state"),
             ("step_temporaries_bytes", "step temporaries (foreach)")]
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(rows)
    for key, label in parts:
        vals = [r[key] / mib for r in rows]
        ax.bar(names, vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("MiB")
    ax.set_title(f"Persistent memory and step temporaries, {data['model']['parameters']:,} parameters")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)

    impls = summary["implementations"]
    fig2, ax2 = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(impls)
    for i, impl in enumerate(impls):
        steps = [summary["optimizers"][n][impl] for n in names]
        vals = [x["step_temporaries_bytes"] / mib if x["supported"] else 0 for x in steps]
        ax2.bar([j + (i - (len(impls) - 1) / 2) * width for j in range(len(names))], vals, width, label=impl)
    ax2.set_xticks(range(len(names)), names, rotation=30)
    ax2.set_ylabel("MiB above params + grads + state")
    ax2.set_title("Temporaries of optimizer.step() by implementation (0: none, or not supported)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig2.tight_layout()
    return {"breakdown": fig, "implementations": fig2}


# %%
if __name__ == "__main__":
    import sys

    from experiments.lib.cli import main

    raise SystemExit(main(sys.modules[__name__]))
