# %% [markdown]
# # 8-bit optimizer state: bytes, step and training against fp32 AdamW

# %%
"""AdamW with 8-bit state: how many bytes it keeps, what its step costs, and what it does to training.

**Question.** bitsandbytes' `AdamW8bit` keeps AdamW's two moments in 8 bits, in blocks of 256 values
with one fp32 scale each (Dettmers et al. 2022, *8-bit Optimizers via Block-wise Quantization*). How many
bytes of state does it really keep, against the estimator's `adamw-8bit`
(`experiments/lib/estimator.py`), and does a model trained with it learn as with fp32 `torch.optim.AdamW`?

**Method.** An MLP on the handbook's digits (`experiments/lib/digits.py`), trained twice from the same
initial weights over the same batches: `torch.optim.AdamW` (fp32 state) and `bitsandbytes.optim.AdamW8bit`
(same learning rate, betas, eps and weight decay). Each optimizer's state is read tensor by tensor
(`optimizer.state`; the quantization maps bitsandbytes shares across tensors counted once); the loss of
every step and the test accuracy at the end are kept; one optimizer step of each is timed (interleaved,
`torch.utils.benchmark`) and measured by the memory tracker (`experiments/lib/memory.py`). bitsandbytes'
CPU backend runs the 8-bit step (`backends/cpu/ops.py`: dequantize a tensor's states to fp32, update,
quantize back). Where bitsandbytes does not import (the GPU host has no such package), the fp32 side is
still measured and the 8-bit side records the error. `summarize` puts the estimator beside the bytes.

**Run.** `python -m experiments.optimizer_8bit --profile quick` prints the JSON.
"""

# %%
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from experiments.lib import digits, timeline
from experiments.lib.memory import MemoryTracker, tensor_bytes
from experiments.lib.threads import single_thread
from experiments.lib.timing import interleaved_times


@dataclass(frozen=True)
class Config:
    widths: tuple[int, ...] = (64, 256, 256, 10)  # MLP layer widths (input: the 8x8 digits)
    batch: int = 64
    steps: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    timing_s: float = 0.6                         # interleaved timing of one step, both optimizers together


PROFILES = {
    # test: one weight matrix of 4096 elements (bitsandbytes' smallest 8-bit tensor), the others fp32
    "test": Config(widths=(64, 64, 10), batch=32, steps=20, timing_s=0.05),
    "quick": Config(),
    "full": Config(widths=(64, 1024, 1024, 1024, 10), steps=1000, timing_s=2.0),
    # gpu: the GPU plan's profile (generator/gpu_plan.py, STEPS): bitsandbytes is not on the GPU host, so this
    # is the fp32 side and the recorded import error, ~1 s of launch-bound steps
    "gpu": Config(steps=200, timing_s=0.3),
}
TIMEOUT_S = 300

# %% [markdown]
# ## The two optimizers
# The same hyper-parameters; `torch.optim.AdamW` with its default implementation, and bitsandbytes'
# `AdamW8bit` with its defaults (8-bit states for tensors of at least 4096 elements, blocks of 256).

# %%
OPTIMIZERS = ("adamw", "adamw-8bit")
BETAS = (0.9, 0.999)
EPS = 1e-8


def bitsandbytes_module() -> tuple[object | None, dict]:
    """bitsandbytes, or None with the reason (the GPU host and a bare install have no such package)."""
    try:
        import bitsandbytes
    except Exception as exc:  # ImportError, or a broken native library: recorded, not raised
        return None, {"available": False, "version": None, "error": f"{type(exc).__name__}: {exc}"}
    return bitsandbytes, {"available": True, "version": bitsandbytes.__version__, "error": None}


def build(cfg: Config, device: str) -> nn.Sequential:
    torch.manual_seed(cfg.seed)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(cfg.widths, cfg.widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(cfg.widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(device)


def make_optimizer(name: str, model: nn.Module, cfg: Config, bnb) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=BETAS, eps=EPS, weight_decay=cfg.weight_decay)
    return bnb.optim.AdamW8bit(model.parameters(), lr=cfg.lr, betas=BETAS, eps=EPS, weight_decay=cfg.weight_decay)


# %% [markdown]
# ## State, tensor by tensor
# Every tensor in `optimizer.state[p]`, by name, dtype and bytes. bitsandbytes keeps `state1`/`state2`
# (uint8 for an 8-bit tensor, fp32 otherwise), `absmax1`/`absmax2` (one fp32 per block) and
# `qmap1`/`qmap2`, the 256-entry quantization maps, one pair shared by every tensor (counted once,
# apart); its step count is a Python int. `torch.optim.AdamW` keeps `exp_avg`, `exp_avg_sq` and a
# one-element `step` tensor.

# %%
SHARED = ("qmap1", "qmap2")


def state_by_tensor(opt: torch.optim.Optimizer, model: nn.Module) -> tuple[dict, int]:
    """``{parameter name: {shape, numel, state_bytes, dtypes}}``, and the bytes of the shared maps (once)."""
    names = {id(p): n for n, p in model.named_parameters()}
    out, shared = {}, []
    for p, state in opt.state.items():
        own = {k: v for k, v in state.items() if torch.is_tensor(v) and k not in SHARED}
        shared += [v for k, v in state.items() if torch.is_tensor(v) and k in SHARED]
        out[names[id(p)]] = {"shape": list(p.shape), "numel": p.numel(), "state_bytes": tensor_bytes(list(own.values())),
                             "dtypes": {k: str(v.dtype).replace("torch.", "") for k, v in own.items()}}
    ordered = {n: out[n] for n, _ in model.named_parameters() if n in out}
    return ordered, tensor_bytes(shared)


# %% [markdown]
# ## Training, the step's peak, the step's time

# %%
def train(cfg: Config, device: str, name: str, data: dict, bnb) -> tuple[dict, nn.Module, torch.optim.Optimizer]:
    model = build(cfg, device)
    opt = make_optimizer(name, model, cfg, bnb)
    g = torch.Generator().manual_seed(cfg.seed)
    n = data["x_train"].shape[0]
    losses = []
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch,), generator=g).to(device)
        loss = F.cross_entropy(model(data["x_train"][idx]), data["y_train"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        logits = model(data["x_test"])
        test_loss = float(F.cross_entropy(logits, data["y_test"]))
        accuracy = float((logits.argmax(1) == data["y_test"]).float().mean())
    tensors, shared = state_by_tensor(opt, model)
    return {"losses": losses, "test_loss": test_loss, "test_accuracy": accuracy, "train_seconds": seconds,
            "state": tensors, "shared_state_bytes": shared,
            "state_bytes": sum(t["state_bytes"] for t in tensors.values()) + shared}, model, opt


def step_memory(device: str, model: nn.Module, opt: torch.optim.Optimizer, data: dict, batch: int) -> dict:
    """One optimizer step, gradients already computed, under two instruments.

    The memory tracker (``MemTracker``) gives the peak by category, but it sees a custom operator as one
    op: bitsandbytes' 8-bit update (``torch.ops.bitsandbytes.optimizer_update_8bit_blockwise``) allocates
    its fp32 copies of the states inside it, out of its sight. The profiler's memory timeline counts every
    allocation of the CPU allocator, inside custom operators too: its highest live bytes over the step
    minus those at its start are what the step adds.
    """
    loss = F.cross_entropy(model(data["x_train"][:batch]), data["y_train"][:batch])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    tracker = MemoryTracker(device).track(model, opt)
    with tracker:
        opt.step()
    peak = tracker.peak()
    recorder = timeline.TimelineRecorder(device)
    with recorder:
        opt.step()
    series = recorder.result()
    totals = [sum(series["bytes"][c][i] for c in series["bytes"]) for i in range(len(series["event"]))]
    return {"tracker_peak_bytes": peak.total, "tracker_by_category_bytes": dict(peak.by_category),
            "profiler_start_bytes": totals[0], "profiler_peak_bytes": max(totals)}


def run(cfg: Config, device: str) -> dict:
    bnb, info = bitsandbytes_module()
    data = digits.load(device)
    names = [n for n in OPTIMIZERS if n == "adamw" or bnb is not None]
    with single_thread(device):  # small tensors: a second CPU thread only adds waiting; CUDA is unaffected
        runs, steppers = {}, {}
        for name in names:
            x, model, opt = train(cfg, device, name, data, bnb)
            x["step"] = step_memory(device, model, opt, data, cfg.batch)
            runs[name], steppers[name] = x, opt.step
        times = interleaved_times(steppers, cfg.timing_s)
    for name in names:
        runs[name]["step_time_ms"] = times[name]["median_ms"]
        runs[name]["step_time_iqr_ms"] = times[name]["iqr_ms"]
    model = build(cfg, device)
    return {
        "model": {"widths": list(cfg.widths), "parameters": sum(p.numel() for p in model.parameters()),
                  "shapes": {n: list(p.shape) for n, p in model.named_parameters()},
                  "batch": cfg.batch, "steps": cfg.steps, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        "device_type": torch.device(device).type,
        "bitsandbytes": info,
        "optimizers": {n: runs.get(n) for n in OPTIMIZERS},  # null: not run on this host (see bitsandbytes.error)
    }


# %% [markdown]
# ## What the page shows, derived from what was measured
# Bytes against the estimator, tensor by tensor and in all; the loss curves smoothed over windows; the
# final losses and accuracies side by side.

# %%
LABELS = {"adamw": "AdamW, fp32 state (torch.optim)", "adamw-8bit": "AdamW8bit, 8-bit state (bitsandbytes)"}
ESTIMATOR_NAMES = {"adamw": "adamw", "adamw-8bit": "adamw-8bit"}
WINDOW = 20  # steps per point of the smoothed loss, and the final training loss's window


def smoothed(losses: list[float], window: int) -> list[float]:
    return [sum(losses[i:i + window]) / len(losses[i:i + window]) for i in range(0, len(losses), window)]


def summarize_optimizer(name: str, x: dict, params: int) -> dict:
    from experiments.lib import estimator

    shapes = [t["shape"] for t in x["state"].values()]
    predicted = estimator.optimizer_bytes(ESTIMATOR_NAMES[name], shapes, 4)
    tensors = {}
    for pname, t in x["state"].items():
        p = estimator.optimizer_bytes(ESTIMATOR_NAMES[name], [t["shape"]], 4)
        tensors[pname] = {"numel": t["numel"], "state_bytes": t["state_bytes"], "predicted_bytes": p,
                          "difference_bytes": t["state_bytes"] - p,
                          "eight_bit": any(d == "uint8" for d in t["dtypes"].values()),
                          "state_label": "8 bits" if any(d == "uint8" for d in t["dtypes"].values()) else
                          f"fp32 (under {estimator.BNB_MIN_8BIT_SIZE:,} elements)" if name == "adamw-8bit" else "fp32",
                          "bytes_per_param": t["state_bytes"] / t["numel"]}
    own = sum(t["state_bytes"] for t in x["state"].values())
    return {
        "label": LABELS[name],
        "state_bytes": x["state_bytes"],
        "per_tensor_state_bytes": own,
        "shared_state_bytes": x["shared_state_bytes"],
        "predicted_state_bytes": predicted,
        "per_tensor_over_predicted_ratio": own / predicted,
        "state_over_predicted_ratio": x["state_bytes"] / predicted,
        "state_bytes_per_param": x["state_bytes"] / params,
        "tensors": tensors,
        "eight_bit_tensors": sum(t["eight_bit"] for t in tensors.values()),
        "tensors_count": len(tensors),
        "final_train_loss": sum(x["losses"][-WINDOW:]) / len(x["losses"][-WINDOW:]),
        "first_train_loss": x["losses"][0],
        "test_loss": x["test_loss"],
        "test_accuracy": x["test_accuracy"],
        "step_time_ms": x["step_time_ms"],
        "step_tracker_peak_bytes": x["step"]["tracker_peak_bytes"],
        "step_peak_bytes": x["step"]["profiler_peak_bytes"],
        "step_unseen_by_tracker_bytes": x["step"]["profiler_peak_bytes"] - x["step"]["tracker_peak_bytes"],
        # what the step allocates above what was live before it (the profiler sees inside custom operators)
        "step_added_bytes": x["step"]["profiler_peak_bytes"] - x["step"]["profiler_start_bytes"],
        "curve": smoothed(x["losses"], WINDOW),
    }


def summarize(data: dict) -> dict:
    m = data["model"]
    opts = {n: summarize_optimizer(n, x, m["parameters"]) if x else None for n, x in data["optimizers"].items()}
    fp32, eight = opts["adamw"], opts["adamw-8bit"]
    measured = eight is not None
    out = {
        "scale_label": (f"MLP {'-'.join(str(w) for w in m['widths'])}, {m['parameters']:,} params, digits, "
                        f"batch {m['batch']}, {m['steps']} steps"),
        "measured": measured,
        "optimizers": opts,
        "window_steps": WINDOW,
        "bitsandbytes_error": data["bitsandbytes"]["error"],
    }
    if measured:
        out.update({
            "state_ratio": eight["state_bytes"] / fp32["state_bytes"],
            "state_saved_bytes": fp32["state_bytes"] - eight["state_bytes"],
            "final_loss_difference": eight["final_train_loss"] - fp32["final_train_loss"],
            "final_loss_ratio": eight["final_train_loss"] / fp32["final_train_loss"],
            "accuracy_difference": eight["test_accuracy"] - fp32["test_accuracy"],
            "step_time_ratio": eight["step_time_ms"] / fp32["step_time_ms"],
            "step_added_ratio": eight["step_added_bytes"] / max(1, fp32["step_added_bytes"]),
            "step_peak_ratio": eight["step_peak_bytes"] / fp32["step_peak_bytes"],
        })
    else:
        out.update({k: None for k in ("state_ratio", "state_saved_bytes", "final_loss_difference", "final_loss_ratio",
                                      "accuracy_difference", "step_time_ratio", "step_added_ratio", "step_peak_ratio")})
    return out


# %% [markdown]
# ## Figure
# The training loss of both optimizers, smoothed over windows of steps.

# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    w = summary["window_steps"]
    for name, s in summary["optimizers"].items():
        if s:
            ax.plot([w * i + w / 2 for i in range(len(s["curve"]))], s["curve"], label=s["label"])
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (mean of {w} steps)")
    ax.set_yscale("log")
    ax.set_title("fp32 and 8-bit AdamW state on the digits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# %%
if __name__ == "__main__":
    import sys

    from experiments.lib.cli import main

    raise SystemExit(main(sys.modules[__name__]))
