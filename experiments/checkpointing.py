# %%
"""Activation checkpointing: how much memory each policy saves, and what it costs in time and FLOPs.

Question: on a stack of N GPT layers, what do the checkpointing policies buy?
None; every layer (``torch.utils.checkpoint``, ``use_reentrant=False``);
segments of k layers (k = 2 and k ≈ √N, Chen et al. 2016); selective
recomputation of the attention core only (Korthikanti et al. 2022); and a
selective-checkpoint policy (``create_selective_checkpoint_contexts``) that
saves the linear layers' outputs and recomputes the rest. For each: peak
memory of a training step, step time, extra FLOPs, and the largest batch that
fits a memory budget. Also: what ``preserve_rng_state`` costs, and proof that
dropout masks match with it and differ without it.

Method: one small GPT (``experiments.lib.gpt``), the same weights and the
same seed for every policy. Peak memory from ``experiments.lib.memory``
(PyTorch's memory tracker; on CUDA the allocator's own peak as well), time
through ``torch.utils.benchmark``, FLOPs through ``FlopCounterMode``, and
gradients compared with the no-checkpointing run element by element.

Run it: ``python -m experiments.checkpointing --profile quick``.
"""

# %%
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from experiments.lib.flops import count_flops
from experiments.lib.gpt import GPT, CheckpointedCore, LayerShape
from experiments.lib.memory import MemoryTracker
from experiments.lib.threads import cpu_threads
from experiments.lib.timing import interleaved_times

TIMEOUT_S = 900


@dataclass(frozen=True)
class Config:
    layers: int = 9
    hidden: int = 32
    heads: int = 2
    seq: int = 64
    batch: int = 4
    vocab: int = 128
    dropout: float = 0.1
    min_run_time_s: float = 0.15          # timing per policy, spread over interleaved rounds
    budget_bytes_cpu: int = 8 * 2**20      # the memory budget of the batch search on CPU
    cuda_budget_fraction: float = 0.9       # on CUDA: this share of the card's memory
    max_batch: int = 4096
    cpu_threads: int = 1                    # see experiments.lib.threads; 0 leaves torch's default


PROFILES = {
    "test": Config(layers=4, hidden=16, heads=2, seq=16, batch=2, vocab=32, min_run_time_s=0.01,
                   budget_bytes_cpu=450 * 2**10, max_batch=64),
    "quick": Config(),
    "full": Config(layers=16, hidden=1024, heads=16, seq=1024, batch=8, vocab=8192, min_run_time_s=1.0),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    # The batch search measures every batch it tries: under 90 % of a 141 GB card it would step batches in
    # the thousands; 1.5 % (about 2 GB) keeps its answers near 10 (none) to 40 (every layer).
    "gpu": Config(layers=9, hidden=256, heads=4, seq=512, batch=8, vocab=4096, min_run_time_s=0.3,
                  cuda_budget_fraction=0.015),
}

# %% [markdown]
# ## The policies
#
# Every policy runs the same model; only the way the decoder layers are called
# changes. ``segments_k`` checkpoints runs of k consecutive layers: only the
# input of each segment is kept, and during backward one whole segment is
# recomputed at a time, so the peak holds about N/k segment inputs plus the
# activations of k layers, smallest near k = √N.

# %%
def sac_context(policy_ops: tuple) -> Callable:
    """A ``context_fn`` that keeps the outputs of ``policy_ops`` and recomputes everything else."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    def policy(_ctx, op, *_args, **_kwargs):
        return CheckpointPolicy.MUST_SAVE if op in policy_ops else CheckpointPolicy.PREFER_RECOMPUTE

    return functools.partial(create_selective_checkpoint_contexts, policy)


def policies(n_layers: int) -> dict:
    k_sqrt = max(1, round(math.sqrt(n_layers)))
    out = {"none": ("none", 0), "every_layer": ("segments", 1), "segments_k2": ("segments", 2)}
    out[f"segments_k{k_sqrt}"] = ("segments", k_sqrt)
    out["selective_attention_core"] = ("core", 0)
    out["sac_save_matmuls"] = ("sac", 0)
    return out


def build(cfg: Config, device: str, kind: str, preserve_rng_state: bool = True) -> GPT:
    torch.manual_seed(0)
    shape = LayerShape(cfg.hidden, cfg.heads, dropout=cfg.dropout, attn_dropout=cfg.dropout)
    model = GPT(cfg.vocab, cfg.seq, cfg.layers, shape).to(device)
    if kind == "core":
        for layer in model.layers:
            layer.core = CheckpointedCore(layer.core, preserve_rng_state)
    return model


def loss_fn(model: GPT, idx: torch.Tensor, kind: str, k: int, preserve_rng_state: bool = True) -> torch.Tensor:
    if kind in ("none", "core"):
        return model(idx, idx)
    x = model.drop(model.tok(idx) + model.pos(torch.arange(idx.shape[1], device=idx.device)))
    layers = list(model.layers)
    if kind == "segments":
        for start in range(0, len(layers), k):
            seg = layers[start:start + k]
            x = checkpoint(lambda t, seg=seg: functools.reduce(lambda y, m: m(y), seg, t), x,
                           use_reentrant=False, preserve_rng_state=preserve_rng_state)
    elif kind == "sac":
        aten = torch.ops.aten
        ctx = sac_context((aten.mm.default, aten.addmm.default))
        for layer in layers:
            x = checkpoint(layer, x, use_reentrant=False, context_fn=ctx, preserve_rng_state=preserve_rng_state)
    else:
        raise ValueError(f"unknown policy kind {kind!r}")
    logits = model.ln_f(x) @ model.tok.weight.t()
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), idx.flatten())

# %% [markdown]
# ## One measurement per policy

# %%
def tokens(cfg: Config, batch: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, cfg.vocab, (batch, cfg.seq), generator=g).to(device)


def grads_after_step(model: GPT, idx: torch.Tensor, kind: str, k: int, preserve: bool = True) -> list:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # the same dropout stream for every policy
    loss_fn(model, idx, kind, k, preserve).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def max_abs_diff(a: list, b: list) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def peak_bytes(cfg: Config, device: str, kind: str, k: int, batch: int) -> dict:
    """Peak memory of one forward + backward at ``batch`` (after a warm-up step)."""
    model = build(cfg, device, kind)
    idx = tokens(cfg, batch, device)
    loss_fn(model, idx, kind, k).backward()  # warm-up: allocate the gradients
    tracker = MemoryTracker(device).track(model)
    with tracker:
        loss_fn(model, idx, kind, k).backward()
    peak = tracker.peak()
    out = {"peak_bytes": peak.total, "activations_bytes": peak.by_category["activations"],
           "temporaries_bytes": peak.by_category["temporaries"]}
    if tracker.cuda_max_allocated_bytes is not None:
        out["cuda_max_allocated_bytes"] = tracker.cuda_max_allocated_bytes
    del model
    return out


def measure_policy(cfg: Config, device: str, kind: str, k: int, reference_grads: list | None) -> dict:
    model = build(cfg, device, kind)
    idx = tokens(cfg, cfg.batch, device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn(model, idx, kind, k).backward()

    grads = grads_after_step(model, idx, kind, k)
    out = {"kind": kind, "k": k,
           **peak_bytes(cfg, device, kind, k, cfg.batch),
           "flops": count_flops(step),
           "max_abs_grad_diff_vs_none": 0.0 if reference_grads is None else max_abs_diff(grads, reference_grads)}
    return out, step


# %% [markdown]
# ## The largest batch under a memory budget
#
# Peak memory is close to affine in the batch size, so two measured points
# give a first guess; the search then measures around the guess until it has
# the largest batch whose measured peak fits (a peak is always measured, never
# extrapolated, for the answer).

# %%
def measured_peak(cfg: Config, device: str, kind: str, k: int, batch: int) -> int:
    m = peak_bytes(cfg, device, kind, k, batch)
    return m.get("cuda_max_allocated_bytes", m["peak_bytes"])


def largest_batch(cfg: Config, device: str, kind: str, k: int, budget: int, known: dict | None = None) -> dict:
    """The largest batch whose measured peak fits ``budget``; ``known`` holds peaks already measured."""
    probes = dict(known or {})

    def fits(b: int) -> bool:
        if b not in probes:
            try:
                probes[b] = measured_peak(cfg, device, kind, k, b)
            except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError):  # torch.OutOfMemoryError: 2.5+
                probes[b] = budget + 1
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
        return probes[b] <= budget

    if not fits(1):
        return {"max_batch": 0, "peak_at_max_bytes": probes[1], "probes": len(probes), "guess_from_two_points": 0}
    other = max((b for b in probes if b != 1), default=2)  # any second measured point gives the slope
    fits(other)
    slope = max(1, (probes[other] - probes[1]) // (other - 1))
    guess = max(1, min(cfg.max_batch, 1 + (budget - probes[1]) // slope))
    lo, hi = (guess, None) if fits(guess) else (1, guess)  # lo fits; hi (if known) does not
    step = 1
    while hi is None:  # gallop up from a guess that fits: +1, +2, +4, ...
        nxt = min(cfg.max_batch, lo + step)
        if nxt == lo:
            break
        if fits(nxt):
            lo, step = nxt, step * 2
        else:
            hi = nxt
    while hi is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return {"max_batch": lo, "peak_at_max_bytes": probes[lo], "probes": len(probes) - len(known or {}),
            "guess_from_two_points": guess}

# %% [markdown]
# ## preserve_rng_state: the cost, and dropout masks that match

# %%
def rng_check(cfg: Config, device: str, reference_grads: list) -> dict:
    """Every-layer checkpointing with and without ``preserve_rng_state``: gradients, and time in turns."""
    out, steps = {}, {}
    for preserve in (True, False):
        model = build(cfg, device, "segments")
        idx = tokens(cfg, cfg.batch, device)
        grads = grads_after_step(model, idx, "segments", 1, preserve)

        def step(model=model, idx=idx, preserve=preserve) -> None:
            model.zero_grad(set_to_none=True)
            loss_fn(model, idx, "segments", 1, preserve).backward()

        key = "preserve" if preserve else "no_preserve"
        steps[key] = step
        out[key] = {"max_abs_grad_diff_vs_none": max_abs_diff(grads, reference_grads),
                    "grads_equal_to_none": bool(all(torch.equal(a, b) for a, b in zip(grads, reference_grads)))}
    for key, t in interleaved_times(steps, cfg.min_run_time_s).items():
        out[key]["time"] = t
    return out

# %% [markdown]
# ## Run

# %%
def run(cfg: Config, device: str) -> dict:
    with cpu_threads(cfg.cpu_threads, device) as threads:
        return {**_run(cfg, device), "threads": threads}


def _run(cfg: Config, device: str) -> dict:
    torch.manual_seed(0)
    idx = tokens(cfg, cfg.batch, device)
    ref_model = build(cfg, device, "none")
    reference = grads_after_step(ref_model, idx, "none", 0)
    del ref_model
    if device.startswith("cuda"):
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        budget, budget_source = int(total * cfg.cuda_budget_fraction), "cuda_device_memory_fraction"
    else:
        budget, budget_source = cfg.budget_bytes_cpu, "config"
    rows, steps = {}, {}
    for name, (kind, k) in policies(cfg.layers).items():
        row, steps[name] = measure_policy(cfg, device, kind, k, None if name == "none" else reference)
        known = {cfg.batch: row.get("cuda_max_allocated_bytes", row["peak_bytes"])}
        row["largest_batch"] = largest_batch(cfg, device, kind, k, budget, known)
        rows[name] = row
    for name, t in interleaved_times(steps, cfg.min_run_time_s).items():
        rows[name]["time"] = t
    return {
        "model": {"layers": cfg.layers, "hidden": cfg.hidden, "heads": cfg.heads, "seq": cfg.seq,
                  "batch": cfg.batch, "vocab": cfg.vocab, "params": sum(p.numel() for p in build(cfg, device, "none").parameters())},
        "sqrt_k": max(1, round(math.sqrt(cfg.layers))),
        "budget_bytes": budget,
        "budget_source": budget_source,
        "policies": rows,
        "rng": rng_check(cfg, device, reference),
    }

# %% [markdown]
# ## What the pages show, derived from what was measured
#
# At build time, without torch: every ratio against no checkpointing, the
# verdict on time against FLOPs, which k won, the cost of preserving the RNG
# state, the half interquartile ranges the pages print, and the row labels.

# %%
# step-time ratio over FLOP ratio above which a step is called overhead-bound rather than FLOP-bound
TIME_OVER_FLOPS_THRESHOLD = 1.2
# what each policy keeps for backward, and a short name for the cheat sheet
KEPT = {"none": "everything", "every_layer": "each layer's input", "segments_k2": "every 2nd layer's input",
        "selective_attention_core": "all but the attention core", "sac_save_matmuls": "layer inputs and matmul outputs"}
SHORT = {"none": "none", "every_layer": "every layer", "selective_attention_core": "attn core only",
         "sac_save_matmuls": "SAC: keep mm"}


def half_iqr_ms(timing: dict) -> float:
    """Half the interquartile range: the "median ± half IQR" of the pages."""
    return timing["iqr_ms"] / 2


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        m = data["model"]
        return (f"{m['layers']}-layer GPT, hidden {m['hidden']}, {m['params']:,} params, "
                f"seq {m['seq']}, batch {m['batch']}")
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    p = data["policies"]
    base = p["none"]
    derived = {}
    for name, row in p.items():
        time_ratio = row["time"]["median_ms"] / base["time"]["median_ms"]
        flops_ratio = row["flops"] / base["flops"]
        derived[name] = {
            "kept": KEPT.get(name, f"one input per {row['k']}-layer segment"),
            "short_label": SHORT.get(name, name.replace("_", " ")),
            "time_half_iqr_ms": half_iqr_ms(row["time"]),
            "peak_ratio_vs_none": row["peak_bytes"] / base["peak_bytes"],
            "activations_ratio_vs_none": row["activations_bytes"] / max(1, base["activations_bytes"]),
            "time_ratio_vs_none": time_ratio,
            "flops_ratio_vs_none": flops_ratio,
            "time_over_flops_ratio": time_ratio / flops_ratio,
            "time_well_above_flops": time_ratio / flops_ratio > TIME_OVER_FLOPS_THRESHOLD,
            "batch_ratio_vs_none": row["largest_batch"]["max_batch"] / max(1, base["largest_batch"]["max_batch"]),
        }
    sqrt_name = f"segments_k{data['sqrt_k']}"
    sq, full = p[sqrt_name], p["every_layer"]
    pre, nopre = data["rng"]["preserve"]["time"], data["rng"]["no_preserve"]["time"]
    return {
        "scale_label": scale_label(data),
        "policies": derived,
        "sqrt_k_policy": sqrt_name,
        # segments of k = sqrt(N) against checkpointing every layer (k = 1): which peak is higher
        "sqrt_k_peak_above_every_layer": sq["peak_bytes"] > full["peak_bytes"],
        "sqrt_k_peak_below_every_layer": sq["peak_bytes"] < full["peak_bytes"],
        "time_over_flops_threshold": TIME_OVER_FLOPS_THRESHOLD,
        "budget_from_config": data["budget_source"] == "config",
        "rng": {
            "preserve": {"time_half_iqr_ms": half_iqr_ms(pre)},
            "no_preserve": {"time_half_iqr_ms": half_iqr_ms(nopre)},
            "preserve_overhead_ratio": pre["median_ms"] / nopre["median_ms"],
            "overhead_within_spread": abs(pre["median_ms"] - nopre["median_ms"]) <= max(pre["iqr_ms"], nopre["iqr_ms"]),
        },
    }

# %% [markdown]
# ## Figure: the trade-off frontier

# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, row in data["policies"].items():
        t, half = row["time"]["median_ms"], summary["policies"][name]["time_half_iqr_ms"]
        mem = row["peak_bytes"] / 2**20
        ax.errorbar([t], [mem], xerr=[[half], [half]], fmt="o", capsize=3)
        ax.annotate(name.replace("_", " "), (t, mem), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("training step time, median (ms); bars: interquartile range")
    ax.set_ylabel("peak memory of a step (MiB)")
    m = data["model"]
    ax.set_title(f"Checkpointing policies: {m['layers']} layers, h={m['hidden']}, s={m['seq']}, b={m['batch']}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig

# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
