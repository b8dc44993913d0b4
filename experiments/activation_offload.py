# %%
"""Activation offload: saved activations moved off the device between forward and backward.

Question: what does moving the saved activations elsewhere buy, and what does
it cost? On a CUDA host, ``torch.autograd.graph.save_on_cpu(pin_memory=True)``
copies every saved tensor to pinned host memory and back: device bytes saved,
step time, and the bytes moved per step against the host-device bandwidth
measured here. On a CPU host, where "offload to the CPU" moves nothing, the
saved activations go to memory-mapped files on disk through
``torch.autograd.graph.saved_tensors_hooks``: resident bytes saved, step time
and disk bytes written. Offloading is lossless: the gradients must equal the
plain step's bit for bit.

Method: the handbook's small GPT (``experiments.lib.gpt``), one training step
(forward and backward) per variant, the same weights and dropout stream.
Live and peak bytes from ``experiments.lib.memory`` (PyTorch's memory
tracker; on CUDA the allocator's peak as well), the bytes each hook packed
from ``experiments.lib.saved_hooks``, times through ``torch.utils.benchmark``
in interleaved rounds. On CUDA, the host-device bandwidth is timed on a
pinned buffer as large as what one step moves.

Run it: ``python -m experiments.activation_offload --profile quick``.
"""

# %%
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from experiments.lib.gpt import GPT, LayerShape
from experiments.lib.memory import MemoryTracker
from experiments.lib.saved_hooks import MmapOffload, pack_call_bytes, save_on_cpu
from experiments.lib.threads import cpu_threads
from experiments.lib.timing import interleaved_times, time_fn

TIMEOUT_S = 600


@dataclass(frozen=True)
class Config:
    layers: int = 4
    hidden: int = 64
    heads: int = 4
    seq: int = 64
    batch: int = 8
    vocab: int = 256
    dropout: float = 0.1
    offload_min_bytes: int = 1024      # smaller saved tensors stay where they are (not worth a file)
    min_run_time_s: float = 0.2        # timing per variant, spread over interleaved rounds
    cpu_threads: int = 1               # see experiments.lib.threads; 0 leaves torch's default


PROFILES = {
    "test": Config(layers=2, hidden=16, heads=2, seq=16, batch=2, vocab=32, min_run_time_s=0.01),
    "quick": Config(),
    "full": Config(layers=8, hidden=512, heads=8, seq=512, batch=8, vocab=8192, min_run_time_s=1.0),
    # gpu: ~3 GB of saved activations a step (counted: 375 MB per sample), so that the copies, not the launch
    # overheads, set the time, and the GPU plan's 30 s hold (generator/gpu_plan.py; 8 layers at seq 1024 save ~16 GB)
    "gpu": Config(layers=4, hidden=1024, heads=16, seq=512, batch=8, vocab=8192, min_run_time_s=0.5),
}

# %% [markdown]
# ## The variants
#
# ``none`` keeps the saved activations where they were made. ``mmap_files``
# writes each one (1 KiB or larger, parameters aside) to its own file through
# a shared mapping and reads it back in backward. ``save_on_cpu_pinned`` (CUDA
# only) is PyTorch's own offload to pinned host memory; it packs every saved
# tensor, the weights that matmuls save included.

# %%
def build(cfg: Config, device: str) -> GPT:
    torch.manual_seed(0)
    shape = LayerShape(cfg.hidden, cfg.heads, dropout=cfg.dropout, attn_dropout=cfg.dropout)
    return GPT(cfg.vocab, cfg.seq, cfg.layers, shape).to(device)


def tokens(cfg: Config, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=g).to(device)


def variants(device: str) -> tuple[str, ...]:
    return ("none", "mmap_files") + (("save_on_cpu_pinned",) if device.startswith("cuda") else ())


def hooks_for(name: str, cfg: Config, model: GPT):
    if name == "none":
        return contextlib.nullcontext()
    if name == "mmap_files":
        return MmapOffload(exclude=[model], min_bytes=cfg.offload_min_bytes)
    if name == "save_on_cpu_pinned":
        return save_on_cpu(pin_memory=True)
    raise ValueError(f"unknown offload variant {name!r}")


def step(model: GPT, idx: torch.Tensor, hooks) -> torch.Tensor:
    """One forward and backward under ``hooks`` (backward inside: the offload files live that long)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # the same dropout masks for every variant
    with hooks:
        loss = model(idx, idx)
        loss.backward()
    return loss.detach()


def measure_variant(cfg: Config, device: str, name: str, reference: list | None) -> dict:
    model = build(cfg, device)
    idx = tokens(cfg, device)
    step(model, idx, hooks_for(name, cfg, model))  # warm-up: gradients allocated
    tracker = MemoryTracker(device).track(model)
    hooks = hooks_for(name, cfg, model)
    model.zero_grad(set_to_none=False)
    torch.manual_seed(123)
    with tracker:
        with hooks:
            loss = model(idx, idx)
            after_forward = tracker.current()
            disk = hooks.disk_bytes() if isinstance(hooks, MmapOffload) else 0
            loss.backward()
    peak = tracker.peak()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    out = {
        "activations_after_forward_bytes": after_forward.by_category["activations"],
        "live_after_forward_bytes": after_forward.total,
        "peak_bytes": peak.total,
        "max_abs_grad_diff_vs_none": 0.0 if reference is None else
        max(float((a - b).abs().max()) for a, b in zip(grads, reference)),
        "disk_written_bytes": disk,
    }
    if isinstance(hooks, MmapOffload):
        out.update({"offloaded_bytes": hooks.stats.original_bytes, "offloaded_count": hooks.stats.packed_count,
                    "files_written_count": hooks.stats.files_written, "left_in_place_count": hooks.stats.kept_count,
                    "left_in_place_bytes": hooks.stats.kept_bytes})
    if tracker.cuda_max_allocated_bytes is not None:
        out["cuda_max_allocated_bytes"] = tracker.cuda_max_allocated_bytes
    return out, grads


# %% [markdown]
# ## CUDA: the bytes moved against the bandwidth
#
# ``save_on_cpu`` copies each saved tensor to the host in forward and back in
# backward: twice the bytes packed per step. At the measured pinned bandwidth
# that is a lower bound on the time the copies add (they are synchronous with
# the compute stream unless overlapped).

# %%
def pinned_bandwidth(nbytes: int, device: str) -> dict:
    """Host-to-device and device-to-host bytes per second of one pinned copy of ``nbytes``."""
    n = max(1, nbytes // 4)
    host = torch.empty(n, dtype=torch.float32, pin_memory=True)
    dev = torch.empty(n, dtype=torch.float32, device=device)
    h2d = time_fn(lambda: dev.copy_(host, non_blocking=True), 0.2)
    d2h = time_fn(lambda: host.copy_(dev, non_blocking=True), 0.2)
    return {"copy_bytes": 4 * n, "h2d_bytes_per_s": 4 * n / (h2d["median_ms"] / 1e3),
            "d2h_bytes_per_s": 4 * n / (d2h["median_ms"] / 1e3)}


def cuda_transfer(cfg: Config, device: str) -> dict:
    model = build(cfg, device)
    idx = tokens(cfg, device)
    moved = pack_call_bytes(lambda: model(idx, idx), device)  # what save_on_cpu would copy, per pack call
    bw = pinned_bandwidth(moved, device)
    return {"packed_per_step_bytes": moved, "moved_per_step_bytes": 2 * moved, **bw}

# %% [markdown]
# ## Run

# %%
def run(cfg: Config, device: str) -> dict:
    with cpu_threads(cfg.cpu_threads, device) as threads:
        return {**_run(cfg, device), "threads": threads}


def _run(cfg: Config, device: str) -> dict:
    rows, steps, reference = {}, {}, None
    for name in variants(device):
        rows[name], grads = measure_variant(cfg, device, name, reference)
        if name == "none":
            reference = grads
        model, idx = build(cfg, device), tokens(cfg, device)
        steps[name] = lambda model=model, idx=idx, name=name: step(model, idx, hooks_for(name, cfg, model))
    for name, t in interleaved_times(steps, cfg.min_run_time_s).items():
        rows[name]["time"] = t
    return {
        "model": {"layers": cfg.layers, "hidden": cfg.hidden, "heads": cfg.heads, "seq": cfg.seq,
                  "batch": cfg.batch, "vocab": cfg.vocab,
                  "params": sum(p.numel() for p in build(cfg, "cpu").parameters())},
        "device_type": torch.device(device).type,
        "offload_min_bytes": cfg.offload_min_bytes,
        "variants": rows,
        "cuda_transfer": cuda_transfer(cfg, device) if device.startswith("cuda") else None,
    }

# %% [markdown]
# ## What the pages show, derived from what was measured

# %%
LABELS = {"none": "keep in place", "mmap_files": "memory-mapped files",
          "save_on_cpu_pinned": "pinned host memory (save_on_cpu)"}


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
    v = data["variants"]
    base = v["none"]
    cuda = data["device_type"] == "cuda"
    derived = {}
    for name, row in v.items():
        derived[name] = {
            "label": LABELS.get(name, name),
            "time_half_iqr_ms": row["time"]["iqr_ms"] / 2,
            "time_ratio_vs_none": row["time"]["median_ms"] / base["time"]["median_ms"],
            "extra_time_ms": row["time"]["median_ms"] - base["time"]["median_ms"],
            "activations_ratio_vs_none": row["activations_after_forward_bytes"]
            / max(1, base["activations_after_forward_bytes"]),
            "resident_saved_bytes": base["activations_after_forward_bytes"] - row["activations_after_forward_bytes"],
            "peak_ratio_vs_none": row["peak_bytes"] / base["peak_bytes"],
            "lossless": row["max_abs_grad_diff_vs_none"] == 0.0,
        }
    shown = "save_on_cpu_pinned" if cuda else "mmap_files"
    out = {"variants": derived, "shown_variant": shown, "shown_label": LABELS[shown], "cuda": cuda,
           "shown": derived[shown],  # the host's own offload, for tables that read one path on every host
           "mmap_disk_bytes_per_s": v["mmap_files"]["disk_written_bytes"]
           / max(1e-9, derived["mmap_files"]["extra_time_ms"] / 1e3) if derived["mmap_files"]["extra_time_ms"] > 0
           else None}
    tr = data["cuda_transfer"]
    if tr is not None:
        predicted_ms = 1e3 * (tr["packed_per_step_bytes"] / tr["d2h_bytes_per_s"]
                              + tr["packed_per_step_bytes"] / tr["h2d_bytes_per_s"])
        out["cuda_transfer"] = {"predicted_copy_ms": predicted_ms,
                                "measured_extra_ms": derived["save_on_cpu_pinned"]["extra_time_ms"],
                                "measured_over_predicted_ratio": derived["save_on_cpu_pinned"]["extra_time_ms"]
                                / max(1e-9, predicted_ms)}
    else:
        out["cuda_transfer"] = None
    out["scale_label"] = scale_label(data)
    return out

# %% [markdown]
# ## Figure: resident activations and step time per variant

# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    names = list(data["variants"])
    rows = data["variants"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.4))
    a1.bar(names, [rows[n]["activations_after_forward_bytes"] / 2**20 for n in names], color="tab:blue")
    a1.set_ylabel("activations live after forward (MiB)")
    a2.bar(names, [rows[n]["time"]["median_ms"] for n in names],
           yerr=[summary["variants"][n]["time_half_iqr_ms"] for n in names], color="tab:orange", capsize=3)
    a2.set_ylabel("step time, median (ms)")
    for ax in (a1, a2):
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    m = data["model"]
    fig.suptitle(f"Activation offload: {m['layers']} layers, h={m['hidden']}, s={m['seq']}, b={m['batch']}")
    fig.tight_layout()
    return fig

# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
