# %%
"""Gradient accumulation: when do K micro-batches reproduce one big batch, and what does it save?

The question: gradients add up in ``.grad`` across ``backward()`` calls, so K
micro-batches of B/K, each loss divided by K, should give the gradient of one
batch of B. How exact is that in fp32 and bf16, what breaks it, and what does
it buy in peak memory and cost in time?

The method, on small MLPs with random data:

1. Correctness: the max absolute difference between the gradient of one batch
   and the gradient accumulated by the canonical loop (``accumulation_step``,
   below) for K = 1, 2, 4, 8, 16; and the same without dividing by K.
2. What breaks equivalence: BatchNorm (statistics per micro-batch), dropout
   (different masks), ``reduction="mean"`` over unequal micro-batches,
   gradient clipping per micro-batch instead of once per cycle.
3. The mixed-precision loop (``amp_accumulation_step``): autocast (bf16 on CPU,
   fp16 + ``GradScaler`` on CUDA; the scaler path is also exercised on CPU
   with fp16), one optimizer step per cycle, unscale before clipping.
4. Why anyone does it: peak memory of one cycle and the time per effective
   batch against micro-batch size at a fixed effective batch.

``run`` stores the measured differences, norms, peaks and times; ``summarize``
derives the relative differences, the ratios, the verdicts (with their tolerances)
and the predicted activations that the pages show.

Run it: ``python -m experiments.grad_accumulation --profile quick``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from experiments.lib.threads import single_thread
from experiments.lib.memory import MemoryTracker
from experiments.lib.timing import time_fn


# %%
@dataclass(frozen=True)
class Config:
    batch: int = 64                      # effective batch B of the correctness runs
    features: int = 64
    hidden: int = 128
    classes: int = 10
    ks: tuple = (1, 2, 4, 8, 16)
    unequal_sizes: tuple = (40, 16, 6, 2)  # micro-batch sizes that sum to B, for the mean-reduction trap
    dropout: float = 0.1
    clip_fraction: float = 0.5           # clip at this fraction of the batch gradient's norm
    amp_cycles: int = 3
    mem_batch: int = 512                 # effective batch of the memory and time runs
    mem_width: int = 128
    mem_depth: int = 4
    mem_micro: tuple = (512, 256, 128, 64, 32)
    min_run_time_s: float = 0.05
    seed: int = 0


PROFILES = {
    "test": Config(batch=32, features=16, hidden=32, ks=(1, 2, 4, 8), unequal_sizes=(20, 8, 3, 1), amp_cycles=2,
                   mem_batch=128, mem_width=64, mem_depth=2, mem_micro=(128, 32), min_run_time_s=0.01),
    "quick": Config(),
    "full": Config(batch=256, features=1024, hidden=4096, mem_batch=8192, mem_width=2048, mem_depth=8,
                   mem_micro=(8192, 4096, 2048, 1024, 512, 256), min_run_time_s=0.5, unequal_sizes=(160, 64, 24, 8)),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    "gpu": Config(batch=256, features=1024, hidden=4096, mem_batch=8192, mem_width=2048, mem_depth=8,
                  mem_micro=(8192, 4096, 2048, 1024, 512, 256), min_run_time_s=0.2, unequal_sizes=(160, 64, 24, 8)),
}
TIMEOUT_S = 300

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# %% [markdown]
# ## The canonical loops
#
# These two functions are what the handbook's page shows, and what this
# experiment runs.

# %%
def accumulation_step(model, optimizer, micro_batches, loss_fn):
    """One optimizer step from K micro-batches: divide each loss by K, step once."""
    k = len(micro_batches)
    for x, y in micro_batches:
        loss = loss_fn(model(x), y) / k  # mean over the cycle, not the sum
        loss.backward()                  # gradients add up in .grad
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def amp_accumulation_step(model, optimizer, micro_batches, loss_fn, amp_dtype, scaler=None, max_norm=1.0):
    """Accumulation under autocast; with a GradScaler (fp16) step and update once per cycle."""
    k = len(micro_batches)
    device_type = next(model.parameters()).device.type
    for x, y in micro_batches:
        with torch.autocast(device_type, dtype=amp_dtype):
            loss = loss_fn(model(x), y) / k
        if scaler is not None:
            scaler.scale(loss).backward()  # scaled, so small fp16 gradients do not flush to zero
        else:
            loss.backward()
    if scaler is not None:
        scaler.unscale_(optimizer)         # true gradients before clipping
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if scaler is not None:
        scaler.step(optimizer)             # skipped if any gradient is inf or NaN
        scaler.update()                    # once per cycle, not per micro-batch
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


# %%
class GradSnapshot(torch.optim.Optimizer):
    """An optimizer whose ``step`` only records the gradients it was given (and counts the steps)."""

    def __init__(self, params) -> None:
        super().__init__(params, {})
        self.grads: list[torch.Tensor] = []
        self.steps = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.grads = [p.grad.detach().float().clone() for g in self.param_groups for p in g["params"]]
        self.steps += 1


def mlp(cfg: Config, norm: str = "none", dropout: float = 0.0) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(cfg.features, cfg.hidden)]
    if norm == "batchnorm":
        layers.append(nn.BatchNorm1d(cfg.hidden))
    layers += [nn.GELU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.classes)]
    return nn.Sequential(*layers)


def random_batch(cfg: Config, device: str, n: int | None = None, dtype=torch.float32):
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    n = n or cfg.batch
    x = torch.randn(n, cfg.features, generator=gen).to(device=device, dtype=dtype)
    y = torch.randint(0, cfg.classes, (n,), generator=gen).to(device)
    return x, y


def split(x: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> list[tuple]:
    return list(zip(torch.split(x, sizes), torch.split(y, sizes)))


def snapshot_grads(model, micro_batches, loss_fn, seed: int | None = None) -> list[torch.Tensor]:
    """The gradients that the canonical loop hands to ``optimizer.step()``."""
    rec = GradSnapshot(model.parameters())
    if seed is not None:
        torch.manual_seed(seed)
    accumulation_step(model, rec, micro_batches, loss_fn)
    return rec.grads


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def max_abs(a: list[torch.Tensor]) -> float:
    return max(float(x.abs().max()) for x in a)


def norm(a: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((x.double() ** 2).sum() for x in a)))


# %% [markdown]
# ## 1. Correctness against K

# %%
def correctness(cfg: Config, device: str) -> list[dict]:
    rows = []
    for dname in ("fp32", "bf16"):
        dtype = DTYPES[dname]
        torch.manual_seed(cfg.seed)
        model = mlp(cfg).to(device=device, dtype=dtype)
        x, y = random_batch(cfg, device, dtype=dtype)
        ref = snapshot_grads(model, [(x, y)], F.cross_entropy)
        for k in cfg.ks:
            mbs = split(x, y, [cfg.batch // k] * k)
            acc = snapshot_grads(model, mbs, F.cross_entropy)
            # the wrong loop: no division by K, so the gradient is the sum of K micro-batch means
            for p in model.parameters():
                p.grad = None
            for xb, yb in mbs:
                F.cross_entropy(model(xb), yb).backward()
            wrong = [p.grad.detach().float().clone() for p in model.parameters()]
            for p in model.parameters():
                p.grad = None
            rows.append({"dtype": dname, "k": k, "micro_batch": cfg.batch // k,
                         "max_abs_diff": max_abs_diff(acc, ref), "max_abs_grad": max_abs(ref),
                         "grad_norm": norm(ref), "no_division_grad_norm": norm(wrong),
                         "no_division_max_abs_diff": max_abs_diff(wrong, ref)})
    return rows


def clipped_cycle(model, micro_batches, max_norm: float, mode: str) -> list[torch.Tensor]:
    """The gradient handed to the optimizer when clipping ``once`` after the cycle (right), after every
    ``backward()`` (``running``: clips the partial sum), or each micro-batch's own gradient (``each``)."""
    k = len(micro_batches)
    params = list(model.parameters())
    for p in params:
        p.grad = None
    for x, y in micro_batches:
        before = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        (F.cross_entropy(model(x), y) / k).backward()
        if mode == "running":
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        elif mode == "each":
            contribution = [p.grad - b for p, b in zip(params, before)]
            coef = min(1.0, max_norm / (norm(contribution) + 1e-6))
            with torch.no_grad():
                for p, b, c in zip(params, before, contribution):
                    p.grad.copy_(b + c * coef)
    if mode == "once":
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad.detach().clone() for p in params]
    for p in params:
        p.grad = None
    return grads


def cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    dot = sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))
    return dot / (norm(a) * norm(b))


# %% [markdown]
# ## 2. What breaks equivalence (fp32, K = 4 unless stated)

# %%
def breakers(cfg: Config, device: str) -> dict:
    k = 4
    x, y = random_batch(cfg, device)
    equal = [cfg.batch // k] * k
    out = {"k": k}

    # BatchNorm normalises each micro-batch with its own statistics.
    torch.manual_seed(cfg.seed)
    model = mlp(cfg, norm="batchnorm").to(device)
    bn = model[1]
    ref = snapshot_grads(model, [(x, y)], F.cross_entropy)
    running_full = bn.running_mean.clone()
    bn.reset_running_stats()
    acc = snapshot_grads(model, split(x, y, equal), F.cross_entropy)
    out["batchnorm"] = {"max_abs_diff": max_abs_diff(acc, ref), "max_abs_grad": max_abs(ref),
                        "running_mean_max_abs_diff": float((bn.running_mean - running_full).abs().max()),
                        "num_batches_tracked": int(bn.num_batches_tracked)}
    # eval-mode BatchNorm uses running statistics: then accumulation is exact again
    model.eval()
    ref = snapshot_grads(model, [(x, y)], F.cross_entropy)
    acc = snapshot_grads(model, split(x, y, equal), F.cross_entropy)
    out["batchnorm_eval"] = {"max_abs_diff": max_abs_diff(acc, ref), "max_abs_grad": max_abs(ref)}

    # Dropout: same seed, but K smaller masks are not one big mask.
    torch.manual_seed(cfg.seed)
    model = mlp(cfg, dropout=cfg.dropout).to(device)
    ref = snapshot_grads(model, [(x, y)], F.cross_entropy, seed=cfg.seed)
    acc = snapshot_grads(model, split(x, y, equal), F.cross_entropy, seed=cfg.seed)
    ref2 = snapshot_grads(model, [(x, y)], F.cross_entropy, seed=cfg.seed + 1)
    out["dropout"] = {"p": cfg.dropout, "max_abs_diff": max_abs_diff(acc, ref), "max_abs_grad": max_abs(ref),
                      "other_seed_max_abs_diff": max_abs_diff(ref2, ref)}

    # reduction="mean" over unequal micro-batches weights each sample by 1/(K * size of its micro-batch).
    torch.manual_seed(cfg.seed)
    model = mlp(cfg).to(device)
    sizes = list(cfg.unequal_sizes)
    if sum(sizes) != cfg.batch:
        raise ValueError(f"unequal_sizes {sizes} must sum to batch {cfg.batch}")
    ref = snapshot_grads(model, [(x, y)], F.cross_entropy)
    acc_mean = snapshot_grads(model, split(x, y, sizes), F.cross_entropy)
    n_total, kk = cfg.batch, len(sizes)

    # the fix: sum over the micro-batch, divided by the cycle's sample count (times K, which the loop divides out)
    def sum_over_total(logits, target):
        return F.cross_entropy(logits, target, reduction="sum") * kk / n_total

    acc_sum = snapshot_grads(model, split(x, y, sizes), sum_over_total)
    out["unequal_mean"] = {"sizes": sizes, "max_abs_grad": max_abs(ref),
                           "mean_max_abs_diff": max_abs_diff(acc_mean, ref),
                           "sum_over_total_max_abs_diff": max_abs_diff(acc_sum, ref)}

    # Clipping: the norm of the summed gradient is not built from the micro-batch norms.
    max_norm = cfg.clip_fraction * norm(ref)
    mbs = split(x, y, equal)
    once = clipped_cycle(model, mbs, max_norm, "once")
    out["clipping"] = {"max_norm": max_norm, "batch_grad_norm": norm(ref), "clipped_once_norm": norm(once),
                       "clipped_once_max_abs": max_abs(once)}
    for mode in ("running", "each"):
        grads = clipped_cycle(model, mbs, max_norm, mode)
        out["clipping"][mode] = {"norm": norm(grads), "max_abs_diff": max_abs_diff(grads, once),
                                 "cosine": cosine(grads, once)}
    # each micro-batch's contribution to the cycle's gradient (its own gradient over K)
    out["clipping"]["micro_contribution_norms"] = [norm(snapshot_grads(model, [mb], F.cross_entropy)) / k
                                                   for mb in mbs]
    return out


# %% [markdown]
# ## 3. The mixed-precision loop, exercised

# %%
def amp_clip_before_unscale(model, optimizer, micro_batches, loss_fn, amp_dtype, scaler, max_norm=1.0):
    """The mistake, for comparison: clipping the still-scaled gradients."""
    k = len(micro_batches)
    device_type = next(model.parameters()).device.type
    for x, y in micro_batches:
        with torch.autocast(device_type, dtype=amp_dtype):
            loss = loss_fn(model(x), y) / k
        scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def amp_checks(cfg: Config, device: str) -> dict[str, dict]:
    """Keyed by the autocast dtype, in the order run (the device's usual dtype first)."""
    k = 4
    x, y = random_batch(cfg, device)
    mbs = split(x, y, [cfg.batch // k] * k)
    torch.manual_seed(cfg.seed)
    model = mlp(cfg).to(device)
    ref = snapshot_grads(model, [(x, y)], F.cross_entropy)
    ref_norm = norm(ref)
    max_norm = cfg.clip_fraction * ref_norm
    ref_clipped = [g * (max_norm / (ref_norm + 1e-6)) for g in ref]
    variants = [("bf16", False), ("fp16", True)] if device.startswith("cpu") else [("fp16", True), ("bf16", False)]
    rows = {}
    for dname, use_scaler in variants:
        dtype = DTYPES[dname]
        device_type = torch.device(device).type
        rec = GradSnapshot(model.parameters())
        scaler = torch.amp.GradScaler(device_type) if use_scaler else None
        norms = [float(amp_accumulation_step(model, rec, mbs, F.cross_entropy, dtype, scaler, max_norm))
                 for _ in range(cfg.amp_cycles)]
        row = {"device_type": device_type, "scaler": use_scaler, "k": k,
               "cycles": cfg.amp_cycles, "optimizer_steps": rec.steps,
               "pre_clip_norm": norms[-1], "fp32_batch_norm": ref_norm, "max_norm": max_norm,
               "clipped_max_abs_diff_vs_fp32": max_abs_diff(rec.grads, ref_clipped),
               "fp32_clipped_max_abs": max_abs(ref_clipped), "clipped_norm": norm(rec.grads),
               "scale_final": None, "clip_before_unscale_norm": None}
        if scaler is not None:
            row["scale_final"] = float(scaler.get_scale())
            wrong = GradSnapshot(model.parameters())
            amp_clip_before_unscale(model, wrong, mbs, F.cross_entropy, dtype,
                                    torch.amp.GradScaler(device_type), max_norm)
            row["clip_before_unscale_norm"] = norm(wrong.grads)
        rows[dname] = row
    return rows


# %% [markdown]
# ## 4. Peak memory and time against micro-batch size, at a fixed effective batch

# %%
def memory_and_time(cfg: Config, device: str) -> list[dict]:
    torch.manual_seed(cfg.seed)
    layers: list[nn.Module] = []
    for _ in range(cfg.mem_depth):
        layers += [nn.Linear(cfg.mem_width, cfg.mem_width), nn.GELU()]
    model = nn.Sequential(*layers, nn.Linear(cfg.mem_width, cfg.classes)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 2)
    x = torch.randn(cfg.mem_batch, cfg.mem_width, generator=gen).to(device)
    y = torch.randint(0, cfg.classes, (cfg.mem_batch,), generator=gen).to(device)
    accumulation_step(model, opt, [(x, y)], F.cross_entropy)  # optimizer state exists from here on
    rows = []
    for micro in cfg.mem_micro:
        k = cfg.mem_batch // micro
        mbs = split(x, y, [micro] * k)
        tracker = MemoryTracker(device).track(model, opt)
        with tracker:
            accumulation_step(model, opt, mbs, F.cross_entropy)
        peak = tracker.peak()
        timing = time_fn(lambda: accumulation_step(model, opt, mbs, F.cross_entropy), cfg.min_run_time_s)
        rows.append({"micro_batch": micro, "k": k, "peak_total_bytes": peak.total,
                     "peak_activations_bytes": peak.by_category["activations"],
                     "peak_grads_bytes": peak.by_category["grads"],
                     "peak_params_bytes": peak.by_category["params"],
                     "peak_optimizer_bytes": peak.by_category["optimizer"],
                     "peak_temporaries_bytes": peak.by_category["temporaries"],
                     "cuda_max_allocated_bytes": tracker.cuda_max_allocated_bytes,
                     "step_time_ms": timing["median_ms"], "step_time_iqr_ms": timing["iqr_ms"]})
    return rows


# %%
def run(cfg: Config, device: str) -> dict:
    torch.manual_seed(cfg.seed)
    with single_thread(device):  # small MLPs: one thread is faster, and steadier, on a small shared CPU
        rows, broken, amp = correctness(cfg, device), breakers(cfg, device), amp_checks(cfg, device)
        memory, threads = memory_and_time(cfg, device), torch.get_num_threads()
    return {
        "batch": cfg.batch,
        "correctness": rows,
        "breakers": broken,
        "amp": amp,
        "memory": memory,
        "cpu_threads": threads if device.startswith("cpu") else None,
        "mem_batch": cfg.mem_batch,
        "mem_model": {"width": cfg.mem_width, "depth": cfg.mem_depth, "classes": cfg.classes},
    }


# %% [markdown]
# ## What the pages show, derived from what was measured
# Differences are relative to the largest entry of the reference gradient. Whether the K small
# dropout masks were the big one is a verdict at a tolerance set here, not in the measurement.

# %%
MATCH_TOLERANCE = 1e-5  # relative difference below which two gradients count as the same


def relative(diff: float, scale: float) -> float:
    """A max absolute difference over the largest entry of the reference gradient."""
    return diff / scale


def predicted_saved_activations_bytes(micro_batch: int, depth: int, width: int, classes: int) -> int:
    """Saved for backward, per sample: the output of every Linear and of every GELU, and the logits (fp32)."""
    return 4 * micro_batch * (2 * depth * width + classes)


def summarize_breakers(b: dict) -> dict:
    c = b["clipping"]
    dropout_rel = relative(b["dropout"]["max_abs_diff"], b["dropout"]["max_abs_grad"])
    micro_max = max(c["micro_contribution_norms"])
    return {
        "batchnorm": {"rel_diff": relative(b["batchnorm"]["max_abs_diff"], b["batchnorm"]["max_abs_grad"])},
        "batchnorm_eval": {"rel_diff": relative(b["batchnorm_eval"]["max_abs_diff"],
                                                b["batchnorm_eval"]["max_abs_grad"])},
        "dropout": {"rel_diff": dropout_rel,
                    "other_seed_rel_diff": relative(b["dropout"]["other_seed_max_abs_diff"],
                                                    b["dropout"]["max_abs_grad"]),
                    # the K small masks drawn in sequence were the big mask (this host, this torch)
                    "masks_match": dropout_rel < MATCH_TOLERANCE, "match_tolerance": MATCH_TOLERANCE},
        "unequal_mean": {"rel_diff_mean": relative(b["unequal_mean"]["mean_max_abs_diff"],
                                                   b["unequal_mean"]["max_abs_grad"]),
                         "rel_diff_sum_over_total": relative(b["unequal_mean"]["sum_over_total_max_abs_diff"],
                                                             b["unequal_mean"]["max_abs_grad"])},
        "clipping": {
            **{mode: {"rel_diff": relative(c[mode]["max_abs_diff"], c["clipped_once_max_abs"])}
               for mode in ("running", "each")},
            "micro_contribution_norm_max": micro_max,
            # all below the limit: clipping each micro-batch's own gradient clips nothing
            "micro_contributions_all_below_max_norm": micro_max < c["max_norm"],
        },
    }


def summarize_amp(x: dict) -> dict:
    wrong = x["clip_before_unscale_norm"]
    return {
        "clipped_rel_diff_vs_fp32": relative(x["clipped_max_abs_diff_vs_fp32"], x["fp32_clipped_max_abs"]),
        # clipping the scaled gradient: the gradient handed to the optimizer comes out this many times too
        # small (null: no scaler). What was measured is that gradient's norm, not the update: SGD's step
        # shrinks by the same factor, Adam's m/sqrt(v) cancels a constant factor until gradients near eps.
        "clip_before_unscale_shrink": x["clipped_norm"] / max(wrong, 1e-30) if wrong is not None else None,
        # the limit against the gradient's norm: below 1, the right loop clips too, and the factor is then the
        # loss scale itself; with a limit above the norm it would be scale * norm / limit, smaller
        "max_norm_over_grad_norm": x["max_norm"] / x["pre_clip_norm"],
        "correct_loop_clips": x["pre_clip_norm"] > x["max_norm"],
    }


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        m = data["mem_model"]
        return (f"{m['depth']}-layer MLP, width {m['width']}, batch {data['mem_batch']} (memory), "
                f"batch {data['batch']} (correctness)")
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    rows = data["correctness"]
    accumulated = [{"dtype": r["dtype"], "k": r["k"], "micro_batch": r["micro_batch"],
                    "rel_diff": relative(r["max_abs_diff"], r["max_abs_grad"]),
                    "no_division_norm_ratio": r["no_division_grad_norm"] / r["grad_norm"],
                    "no_division_predicted_ratio": float(r["k"]),
                    "no_division_rel_diff": relative(r["no_division_max_abs_diff"], r["max_abs_grad"])}
                   for r in rows]
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    mm = data["mem_model"]
    memory = []
    for r in data["memory"]:
        predicted = predicted_saved_activations_bytes(r["micro_batch"], mm["depth"], mm["width"], mm["classes"])
        one = data["memory"][0]  # the whole batch at once (k = 1)
        memory.append({"micro_batch": r["micro_batch"], "k": r["k"], "predicted_saved_activations_bytes": predicted,
                       "activations_over_predicted_ratio": r["peak_activations_bytes"] / predicted,
                       "step_time_half_iqr_ms": r["step_time_iqr_ms"] / 2,
                       "peak_ratio_vs_one_batch": r["peak_total_bytes"] / one["peak_total_bytes"],
                       "time_ratio_vs_one_batch": r["step_time_ms"] / one["step_time_ms"]})
    scaled = [name for name, x in data["amp"].items() if x["scaler"]]
    return {
        "scale_label": scale_label(data),
        "correctness": accumulated,
        "max_rel_diff": {d: max(r["rel_diff"] for r in accumulated if r["dtype"] == d) for d in dtypes},
        "breakers": summarize_breakers(data["breakers"]),
        "amp": {name: summarize_amp(x) for name, x in data["amp"].items()},
        # the autocast dtype run with a GradScaler (fp16 on every device), null if none was
        "amp_scaler_variant": scaled[0] if scaled else None,
        "memory": memory,
        "most_accumulated": memory[-1],  # the most micro-batches per step: what accumulation buys and costs
    }


# %% [markdown]
# ## Figures

# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    rows = data["memory"]
    predicted = [r["predicted_saved_activations_bytes"] for r in summary["memory"]]
    micro = [r["micro_batch"] for r in rows]
    mib = 2 ** 20
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9.5, 3.8), constrained_layout=True)
    bottom = [0.0] * len(rows)
    under_activations = bottom
    for key, label in (("peak_params_bytes", "parameters"), ("peak_optimizer_bytes", "optimizer state"),
                       ("peak_grads_bytes", "gradients"), ("peak_activations_bytes", "activations"),
                       ("peak_temporaries_bytes", "temporaries")):
        if key == "peak_activations_bytes":
            under_activations = bottom
        vals = [r[key] / mib for r in rows]
        ax0.bar([str(m) for m in micro], vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax0.plot([str(m) for m in micro], [u + p / mib for u, p in zip(under_activations, predicted)], "k--",
             marker="o", label="top of predicted activations")
    ax0.set_xlabel(f"micro-batch size (effective batch {data['mem_batch']})")
    ax0.set_ylabel("peak memory during one cycle (MiB)")
    ax0.set_title("Peak memory by category")
    ax0.legend(fontsize=7)
    ax1.errorbar([str(m) for m in micro], [r["step_time_ms"] for r in rows],
                 yerr=[r["step_time_half_iqr_ms"] for r in summary["memory"]], marker="o", capsize=3)
    ax1.set_xlabel(f"micro-batch size (effective batch {data['mem_batch']})")
    ax1.set_ylabel("time per effective batch (ms, median)")
    ax1.set_ylim(bottom=0)
    ax1.set_title("Time per optimizer step")
    return fig


# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
