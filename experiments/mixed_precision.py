# %%
"""Mixed precision: the number formats, loss scaling on real gradients, autocast's memory and time, GradScaler.

Question: what can fp16, bf16 and the fp8 formats represent; what happens to a
real model's gradients when they are cast to fp16, and how does loss scaling
rescue them; what does ``torch.autocast`` change in peak memory and step time,
and what does it keep in fp32; how does ``GradScaler`` move its scale and skip
steps after an overflow?

Method: the format limits are read from ``torch.finfo`` (the smallest
subnormal is computed as ``smallest_normal * eps`` and checked by a round trip
through the format). A small GPT (``experiments.lib.gpt``) is trained for a few
steps on a learnable next-token task; its parameter gradients and the gradients
flowing between its layers are then cast to fp16 after multiplying by scales
1 to 2^16, and to bf16, and the lost values counted. Autocast and fp32 training
steps are compared with PyTorch's memory tracker and ``torch.utils.benchmark``.
A short fp16 run with ``GradScaler`` records its scale step by step.

Run it: ``python -m experiments.mixed_precision --profile quick``.
"""

# %%
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from experiments.lib.gpt import GPT, LayerShape
from experiments.lib.memory import MemoryTracker
from experiments.lib.saved import count_saved
from experiments.lib.threads import cpu_threads
from experiments.lib.timing import interleaved_times

TIMEOUT_S = 600


@dataclass(frozen=True)
class Config:
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    seq: int = 64
    batch: int = 8
    vocab: int = 256
    dropout: float = 0.0
    train_steps: int = 10            # steps before the gradients are taken, so they are mid-training ones
    lr: float = 3e-3
    scale_exponents: tuple = tuple(range(0, 25, 2))
    min_run_time_s: float = 0.15
    scaler_steps: int = 16
    scaler_init_exp: int = 24        # GradScaler starts at 2^24, high enough to overflow fp16 at first
    scaler_growth_interval: int = 4
    cpu_threads: int = 1             # see experiments.lib.threads; 0 leaves torch's default


PROFILES = {
    "test": Config(layers=1, hidden=16, heads=2, seq=16, batch=4, vocab=32, train_steps=3,
                   scale_exponents=(0, 8, 16, 24), min_run_time_s=0.01, scaler_steps=8, scaler_init_exp=30,
                   scaler_growth_interval=2),
    "quick": Config(),
    "full": Config(layers=12, hidden=768, heads=12, seq=1024, batch=8, vocab=50304, train_steps=50,
                   scale_exponents=tuple(range(0, 25, 2)), min_run_time_s=1.0, scaler_steps=200,
                   scaler_init_exp=24, scaler_growth_interval=20),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    "gpu": Config(layers=4, hidden=512, heads=8, seq=512, batch=8, vocab=8192, train_steps=20, min_run_time_s=0.3,
                  scaler_steps=48, scaler_init_exp=24, scaler_growth_interval=8),
}

# %% [markdown]
# ## The formats, from torch.finfo
#
# ``torch.finfo`` gives ``max``, ``smallest_normal`` (also called ``tiny``) and
# ``eps`` (the gap between 1 and the next representable number, 2^-m for m
# mantissa bits). The smallest positive subnormal of an IEEE-style format is
# 2^(e_min - m) = ``smallest_normal * eps``. The table also finds it by
# halving the smallest normal while a round trip through the format keeps the
# value, and says where the two disagree.

# %%
def casts_exactly(value: float, dtype: torch.dtype) -> bool:
    try:
        back = torch.tensor([value], dtype=torch.float64).to(dtype).to(torch.float64).item()
    except (RuntimeError, TypeError):
        return False
    return back == value


def smallest_positive(dtype: torch.dtype, smallest_normal: float) -> float:
    """The smallest positive value of ``dtype``: halve from the smallest normal while the format keeps it."""
    v = smallest_normal
    while v / 2 > 0 and casts_exactly(v / 2, dtype):
        v /= 2
    return v


def format_table() -> dict:
    names = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    for attr in sorted(dir(torch)):
        if attr.startswith("float8_") and isinstance(getattr(torch, attr), torch.dtype):
            names[attr.replace("float8_", "fp8_")] = getattr(torch, attr)
    table = {}
    for name, dt in names.items():
        fi = torch.finfo(dt)
        table[name] = {"dtype": str(dt).replace("torch.", ""), "bits": fi.bits, "max": fi.max,
                       "smallest_normal": fi.smallest_normal, "eps": fi.eps, "resolution": fi.resolution,
                       "smallest_subnormal": smallest_positive(dt, fi.smallest_normal)}
    return table

# %% [markdown]
# ## A small model and a task it can learn
#
# Each sequence follows next = (5·token + 3) mod vocab from a random start, so
# the loss falls and the gradients are those of a model that is learning.

# %%
def batch_of(cfg: Config, device: str, gen: torch.Generator) -> torch.Tensor:
    start = torch.randint(0, cfg.vocab, (cfg.batch, 1), generator=gen)
    seq = [start]
    for _ in range(cfg.seq):
        seq.append((5 * seq[-1] + 3) % cfg.vocab)
    return torch.cat(seq, dim=1).to(device)


def lm_loss(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())


def new_model(cfg: Config, device: str) -> GPT:
    torch.manual_seed(0)
    shape = LayerShape(cfg.hidden, cfg.heads, dropout=cfg.dropout, attn_dropout=cfg.dropout)
    return GPT(cfg.vocab, cfg.seq, cfg.layers, shape).to(device)


def real_gradients(cfg: Config, device: str) -> dict:
    """Train a few fp32 steps, then return the parameter and inter-layer activation gradients (fp32)."""
    model = new_model(cfg, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(cfg.train_steps):
        loss = lm_loss(model, batch_of(cfg, device, gen))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    acts = []

    def keep(i: int, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        x.register_hook(lambda g: acts.append(g.detach().flatten()))
        return layer(x)

    model.layer_wrapper = keep
    loss = lm_loss(model, batch_of(cfg, device, gen))
    loss.backward()
    params = torch.cat([p.grad.detach().flatten() for p in model.parameters()])
    return {"params": params.float(), "activations": torch.cat(acts).float(), "losses": losses}

# %% [markdown]
# ## Loss scaling: what survives a cast to fp16

# %%
def cast_stats(g: torch.Tensor, scale: float, dtype: torch.dtype) -> dict:
    g = g[g != 0].double()
    fi = torch.finfo(dtype)
    small = g.abs() < torch.finfo(torch.float16).smallest_normal  # the values fp16 cannot hold as normals
    cast = (g * scale).to(dtype)
    back = cast.double() / scale
    finite = torch.isfinite(back)
    zero = cast == 0
    sub = (cast != 0) & (cast.double().abs() < fi.smallest_normal)
    ok = finite & ~zero
    rel = ((back[ok] - g[ok]).abs() / g[ok].abs()) if bool(ok.any()) else torch.zeros(1, dtype=torch.float64)
    # the error of the whole vector, with lost values counted as lost (overflow counts as lost)
    err = torch.where(finite, back, torch.zeros_like(back)) - g
    small_rel = (err[small].abs() / g[small].abs()) if bool(small.any()) else torch.zeros(1, dtype=torch.float64)
    return {"scale": scale, "zero_fraction": float(zero.double().mean()),
            "subnormal_fraction": float(sub.double().mean()), "overflow_fraction": float((~finite).double().mean()),
            "small_values_median_relative_error": float(small_rel.median()),
            "median_relative_error": float(rel.median()), "norm_relative_error": float(err.norm() / g.norm())}


def loss_scaling(cfg: Config, grads: dict) -> dict:
    out = {}
    for pop in ("params", "activations"):
        g = grads[pop]
        nz = g[g != 0].abs().double()
        out[pop] = {
            "count": int(g.numel()), "nonzero": int(nz.numel()),
            "abs_min": float(nz.min()), "abs_median": float(nz.median()), "abs_max": float(nz.max()),
            "below_fp16_normal_fraction": float((nz < torch.finfo(torch.float16).smallest_normal).double().mean()),
            "fp16": [cast_stats(g, 2.0 ** e, torch.float16) for e in cfg.scale_exponents],
            "bf16": [cast_stats(g, 2.0 ** e, torch.bfloat16) for e in cfg.scale_exponents],
        }
    return out

# %% [markdown]
# ## Autocast against fp32: one training step

# %%
def amp_modes(device: str) -> list:
    if torch.device(device).type == "cuda":
        modes = [("fp32", None), ("autocast_fp16", torch.float16)]
        if torch.cuda.is_bf16_supported():
            modes.append(("autocast_bf16", torch.bfloat16))
        return modes
    return [("fp32", None), ("autocast_bf16", torch.bfloat16)]


def measure_mode(cfg: Config, device: str, dtype: torch.dtype | None) -> tuple[dict, Callable[[], None]]:
    """Saved bytes and peak of one training step in one precision mode; returns them and the step."""
    dev_type = torch.device(device).type
    model = new_model(cfg, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    tokens = batch_of(cfg, device, torch.Generator().manual_seed(1))
    scaler = torch.amp.GradScaler(dev_type) if dtype == torch.float16 else None

    def forward() -> torch.Tensor:
        with torch.autocast(dev_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return lm_loss(model, tokens)

    def step() -> None:
        loss = forward()
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: optimizer state exists from here on
    loss, saved = count_saved(forward, exclude=[model])
    del loss
    tracker = MemoryTracker(device).track(model, opt)
    with tracker:
        step()
    peak = tracker.peak().as_dict()
    if tracker.cuda_max_allocated_bytes is not None:
        peak["cuda_max_allocated_bytes"] = tracker.cuda_max_allocated_bytes
    row = {"peak": peak, "saved_bytes": saved.total_bytes,
           "param_dtype": str(next(model.parameters()).dtype).replace("torch.", "")}
    return row, step


def training_step_costs(cfg: Config, device: str) -> dict:
    out, steps = {}, {}
    for name, dtype in amp_modes(device):
        out[name], steps[name] = measure_mode(cfg, device, dtype)
    for name, t in interleaved_times(steps, cfg.min_run_time_s).items():  # timed in turns
        out[name]["time"] = t
    return out


def autocast_dtypes(device: str) -> dict:
    """The output dtype of common ops under autocast, from fp32 inputs."""
    dev_type = torch.device(device).type
    x = torch.randn(4, 8, 16, device=device)
    w = torch.randn(16, 16, device=device)
    q = torch.randn(2, 2, 8, 8, device=device)
    target = torch.zeros(32, dtype=torch.long, device=device)
    ops = {
        "linear": lambda: F.linear(x, w), "matmul": lambda: x @ w, "layer_norm": lambda: F.layer_norm(x, (16,)),
        "softmax": lambda: torch.softmax(x, -1), "log_softmax": lambda: torch.log_softmax(x, -1),
        "gelu": lambda: F.gelu(x), "cross_entropy": lambda: F.cross_entropy(x.flatten(0, 1), target),
        "sum": lambda: x.sum(), "exp": lambda: x.exp(),
        "scaled_dot_product_attention": lambda: F.scaled_dot_product_attention(q, q, q),
        "add_fp32_and_linear": lambda: x + F.linear(x, w),
    }
    out = {}
    for mode, dtype in amp_modes(device)[1:]:
        with torch.autocast(dev_type, dtype=dtype):
            out[mode] = {name: str(fn().dtype).replace("torch.", "") for name, fn in ops.items()}
    return out

# %% [markdown]
# ## GradScaler over a short fp16 run
#
# The scaler multiplies the loss by its scale; if any gradient is inf or NaN
# after unscaling it skips ``optimizer.step`` and halves the scale
# (``backoff_factor``), and after ``growth_interval`` clean steps it doubles it.
# Each row records the scale used, whether the step was skipped, and whether
# the weights actually changed.

# %%
def grad_scaler_run(cfg: Config, device: str) -> dict:
    dev_type = torch.device(device).type
    try:
        scaler = torch.amp.GradScaler(dev_type, init_scale=2.0 ** cfg.scaler_init_exp,
                                      growth_interval=cfg.scaler_growth_interval)
    except (AttributeError, RuntimeError, TypeError) as exc:
        return {"supported": False, "reason": type(exc).__name__}
    model = new_model(cfg, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(2)
    watch = model.layers[0].qkv.weight
    rows = []
    for i in range(cfg.scaler_steps):
        tokens = batch_of(cfg, device, gen)
        with torch.autocast(dev_type, dtype=torch.float16):
            loss = lm_loss(model, tokens)
        scale = scaler.get_scale()
        before = watch.detach().clone()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        new_scale = scaler.get_scale()
        rows.append({"step": i, "scale": scale, "next_scale": new_scale, "loss": float(loss.detach()),
                     "weights_changed": not torch.equal(before, watch.detach())})
    return {"supported": True, "init_scale": 2.0 ** cfg.scaler_init_exp,
            "growth_interval": cfg.scaler_growth_interval,
            "backoff_factor": scaler.get_backoff_factor(), "growth_factor": scaler.get_growth_factor(),
            "steps": rows}

# %% [markdown]
# ## Run

# %%
def run(cfg: Config, device: str) -> dict:
    with cpu_threads(cfg.cpu_threads, device):
        torch.manual_seed(0)
        grads = real_gradients(cfg, device)
        return {
            "formats": format_table(),
            "model": {"layers": cfg.layers, "hidden": cfg.hidden, "heads": cfg.heads, "seq": cfg.seq,
                      "batch": cfg.batch, "vocab": cfg.vocab, "train_steps": cfg.train_steps},
            "train_losses": grads["losses"],
            "loss_scaling": loss_scaling(cfg, grads),
            "step_costs": training_step_costs(cfg, device),
            "autocast_dtypes": autocast_dtypes(device),
            "grad_scaler": grad_scaler_run(cfg, device),
        }

# %% [markdown]
# ## What the pages show, derived from what was measured
#
# At build time, without torch: the smallest subnormal by formula and whether
# the format agrees, the range in powers of two, the best loss scale, ratios
# against fp32, which autocast set-up this host measured, and GradScaler's
# skipped steps (a step is skipped when ``update()`` lowered the scale).

# %%
CHEATSHEET_FORMATS = ("fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2")
# the autocast set-up a page quotes, in order of preference: (step_costs key, dtype name)
AUTOCAST_MODES = (("autocast_bf16", "bf16"), ("autocast_fp16", "fp16"))
POPULATION_LABELS = {"params": "parameter gradients", "activations": "gradients between layers"}


def summarize_formats(formats: dict) -> dict:
    out = {}
    for name, x in formats.items():
        formula = x["smallest_normal"] * x["eps"]
        # The format's own spacing at 1.0, 2**-p for p fraction bits, from the measured round trip: the
        # smallest subnormal is 2**(emin - p) and the smallest normal 2**emin (p = 0 without subnormals).
        spacing = x["smallest_subnormal"] / x["smallest_normal"]
        out[name] = {"smallest_subnormal_formula": formula,
                     "formula_matches_format": formula == x["smallest_subnormal"],
                     "has_subnormals": x["smallest_subnormal"] < x["smallest_normal"],
                     "spacing_at_one": spacing,
                     "eps_matches_spacing": spacing == x["eps"],
                     "log2_range": math.log2(x["max"] / x["smallest_subnormal"])}
    return out


def summarize_population(pop: dict) -> dict:
    def cast(rows: list) -> list:
        return [{"scale_log2": math.log2(r["scale"]), "any_overflow": r["overflow_fraction"] > 0,
                 "lost_fraction": r["zero_fraction"] + r["subnormal_fraction"] + r["overflow_fraction"]}
                for r in rows]

    fp16 = cast(pop["fp16"])
    # the smallest scale that loses the fewest values (flushed, subnormal or overflowed)
    lost = [r["lost_fraction"] for r in fp16]
    best = lost.index(min(lost))
    return {"fp16": fp16, "bf16": cast(pop["bf16"]), "best_fp16_scale": pop["fp16"][best]["scale"],
            "best_fp16_scale_log2": fp16[best]["scale_log2"], "best_fp16_lost_fraction": lost[best]}


def summarize_step_costs(sc: dict) -> dict:
    base = sc["fp32"]
    return {name: {"label": name.replace("_", " "),
                   "time_half_iqr_ms": row["time"]["iqr_ms"] / 2,  # the page's "median ± half IQR"
                   "peak_ratio_vs_fp32": row["peak"]["total_bytes"] / base["peak"]["total_bytes"],
                   "saved_ratio_vs_fp32": row["saved_bytes"] / base["saved_bytes"],
                   "time_ratio_vs_fp32": row["time"]["median_ms"] / base["time"]["median_ms"]}
            for name, row in sc.items()}


def summarize_autocast(data: dict) -> dict:
    """The one autocast set-up the pages quote (bf16 where measured, else fp16), and whether fp16 was measured."""
    mode, dtype = next((m, d) for m, d in AUTOCAST_MODES if m in data["step_costs"])
    return {"mode": mode, "dtype": dtype, "label": mode.replace("_", " "),
            "fp16_measured": "autocast_fp16" in data["step_costs"],
            "layer_norm_dtype": data["autocast_dtypes"][mode]["layer_norm"]}


def summarize_grad_scaler(gs: dict) -> dict:
    if not gs["supported"]:
        return {"supported": False}
    steps = [{"skipped": r["next_scale"] < r["scale"], "scale_log2": math.log2(r["scale"])} for r in gs["steps"]]
    skipped = [r for r, s in zip(gs["steps"], steps) if s["skipped"]]
    applied = [r for r, s in zip(gs["steps"], steps) if not s["skipped"]]
    final = gs["steps"][-1]["next_scale"]
    return {"supported": True, "steps": steps, "skipped_steps": len(skipped),
            "init_scale_log2": math.log2(gs["init_scale"]),
            "skipped_steps_left_weights_unchanged": all(not r["weights_changed"] for r in skipped),
            "applied_steps_changed_weights": all(r["weights_changed"] for r in applied),
            "final_scale": final, "final_scale_log2": math.log2(final)}


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        m = data["model"]
        return f"{m['layers']}-layer GPT, hidden {m['hidden']}, seq {m['seq']}, batch {m['batch']}"
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    formats = summarize_formats(data["formats"])
    return {
        "scale_label": scale_label(data),
        "formats": formats,
        "formula_mismatch": [data["formats"][n]["dtype"] for n, x in formats.items() if not x["formula_matches_format"]],
        # formats whose torch.finfo eps is not the spacing of the format at 1.0
        "eps_mismatch": {n: {"dtype": data["formats"][n]["dtype"], "eps": data["formats"][n]["eps"],
                             "spacing_at_one": x["spacing_at_one"]}
                         for n, x in formats.items() if not x["eps_matches_spacing"]},
        "cheatsheet_formats": [n for n in CHEATSHEET_FORMATS if n in data["formats"]],
        "loss_scaling": {pop: {"label": POPULATION_LABELS[pop], **summarize_population(data["loss_scaling"][pop])}
                         for pop in POPULATION_LABELS},
        "step_costs": summarize_step_costs(data["step_costs"]),
        "autocast": summarize_autocast(data),
        "grad_scaler": summarize_grad_scaler(data["grad_scaler"]),
    }

# %% [markdown]
# ## Figures

# %%
def plot(data: dict, summary: dict) -> dict:
    import matplotlib.pyplot as plt

    figs = {}
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.0), sharey=True)
    for ax, pop in zip(axes, ("params", "activations")):
        ls = data["loss_scaling"][pop]
        scales = [r["scale"] for r in ls["fp16"]]
        ax.plot(scales, [100 * r["zero_fraction"] for r in ls["fp16"]], "o-", label="fp16: flushed to zero")
        ax.plot(scales, [100 * r["subnormal_fraction"] for r in ls["fp16"]], "s-", label="fp16: subnormal")
        ax.plot(scales, [100 * r["small_values_median_relative_error"] for r in ls["fp16"]], "^-",
                label="fp16: median rel. error of values < fp16 normal")
        ax.plot(scales, [100 * r["overflow_fraction"] for r in ls["fp16"]], "x-", label="fp16: overflow to inf")
        ax.plot(scales, [100 * r["small_values_median_relative_error"] for r in ls["bf16"]], "k--",
                label="bf16: same error measure")
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1e-3)  # fractions span 0 to tens of percent
        ax.set_xlabel("loss scale")
        ax.set_title(summary["loss_scaling"][pop]["label"])
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("% of nonzero values; errors in % (symlog)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    figs["loss_scaling"] = fig

    gs = data["grad_scaler"]
    if summary["grad_scaler"]["supported"]:
        fig, ax = plt.subplots(figsize=(7, 3))
        steps = [r["step"] for r in gs["steps"]]
        ax.step(steps, [r["scale"] for r in gs["steps"]], where="post", label="scale")
        sk = [r for r, s in zip(gs["steps"], summary["grad_scaler"]["steps"]) if s["skipped"]]
        ax.plot([r["step"] for r in sk], [r["scale"] for r in sk], "rx", ms=9, label="skipped step (inf/NaN)")
        ax.set_yscale("log", base=2)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss scale")
        ax.set_title("GradScaler over a short fp16 run")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        figs["grad_scaler"] = fig
    return figs

# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
