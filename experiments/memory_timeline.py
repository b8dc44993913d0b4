# %% [markdown]
# # Memory over one step: live bytes by category, phase by phase

# %%
"""Memory over one training step: what is live at each moment, by category, and where the peak is.

**Question.** Over one training step of the chapters' reference transformer, how do parameters,
gradients, optimizer state, activations and temporaries rise and fall, where is the peak, and which
category holds it? How do full and selective checkpointing, gradient accumulation, the `foreach` and
for-loop optimizer steps, `zero_grad(set_to_none=...)` and bf16 autocast change the picture?

**Method.** The shared GPT (`experiments/lib/gpt.py`), one fresh copy per set-up, AdamW. Each set-up
takes one warm-up step (the optimizer state exists, as in training), then one step (two for the
`zero_grad` set-ups) is recorded by PyTorch's profiler with `profile_memory=True`: its memory
timeline (`experiments/lib/timeline.py`) gives live bytes per category at every allocation and free,
with the phases (forward, backward, optimizer step, zero_grad) marked. The same steps are then run
again under the memory tracker that measures every other chapter (`experiments/lib/memory.py`,
PyTorch's `MemTracker`), whose peak by category is stored beside the timeline; for the plain step the
tracker also keeps MemTracker's per-module statistics (each module's own parameters, and the live
memory by category at its peak in forward and in backward). On CUDA also: the
CUDA context's bytes before any tensor, the allocator's history of the plain step (allocated and
reserved over it, and the snapshot pickle that PyTorch's memory visualizer opens, kept as a file beside
the result: `experiments/lib/artifacts.py`), the same step
with `expandable_segments:True`, and what `torch.cuda.empty_cache()` gives back. `run` stores the
series; `summarize` finds each peak, its phase and category, and puts the tracker and the estimator
(`experiments/lib/estimator.py`) beside it.

**Run.** `python -m experiments.memory_timeline --profile quick` prints the JSON (add `--artifacts DIR` to keep
the CUDA snapshot pickle in DIR).
"""

# %%
from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from experiments.lib import artifacts, timeline
from experiments.lib.gpt import GPT, CheckpointedCore, LayerShape
from experiments.lib.memory import MemoryTracker, param_bytes
from experiments.lib.threads import single_thread
from experiments.lib.units import gpt_scale_label

# The set-ups, in the order of the page's panels: (checkpointing, optimizer implementation,
# micro-batches (0: Config.micro_batches), set_to_none, autocast, recorded steps (0: Config.zero_grad_steps)).
SETUPS = {
    "plain": ("none", "foreach", 1, True, False, 1),
    "full_checkpointing": ("full", "foreach", 1, True, False, 1),
    "selective_checkpointing": ("selective", "foreach", 1, True, False, 1),
    "accumulation": ("none", "foreach", 0, True, False, 1),
    "for_loop": ("none", "for-loop", 1, True, False, 1),
    "zero_grad_none": ("none", "foreach", 1, True, False, 0),
    "zero_grad_zeros": ("none", "foreach", 1, False, False, 0),
    "autocast_bf16": ("none", "foreach", 1, True, True, 1),
}


@dataclass(frozen=True)
class Config:
    vocab: int = 512
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    seq: int = 64
    batch: int = 8
    micro_batches: int = 4              # the accumulation set-up: batch / micro_batches per backward
    zero_grad_steps: int = 2            # steps recorded by the zero_grad set-ups (after the warm-up step)
    setups: tuple[str, ...] = tuple(SETUPS)
    max_points: int = 300               # per timeline; the peak point is always kept (lib/timeline.py)
    snapshot_max_entries: int = 20000   # CUDA: the allocator's history of the plain step
    module_depth: int = 3               # the plain step's per-module table: names of up to 3 parts (GPT.layers.0)


PROFILES = {
    # test: four set-ups (every recorded step costs ~0.25 s of the profiler's analysis, Python, even this small)
    "test": Config(vocab=32, d_model=16, layers=1, heads=2, seq=8, batch=4, max_points=120, zero_grad_steps=1,
                   setups=("plain", "full_checkpointing", "accumulation", "zero_grad_zeros")),
    # quick, full and gpu: the model of the optimizer chapter (experiments/optimizer_state.py) at the same
    # profile, so that its plain step is that chapter's AdamW foreach step
    "quick": Config(),
    "full": Config(vocab=32000, d_model=1024, layers=8, heads=16, seq=512, batch=8),
    # gpu: the GPU plan's profile (generator/gpu_plan.py), ~12 s predicted: 8 set-ups of a 10.5 M-param GPT (the
    # optimizer chapter's width, 2 layers); the profiler's analysis is Python on the host's CPU and grows with the
    # op count (2 layers: quick's op count; quick takes 7.6 s of CPU here, 2 s of it imports), plus the CUDA history
    "gpu": Config(vocab=8192, d_model=512, layers=2, heads=8, seq=256, batch=8),
}
TIMEOUT_S = 600
SNAPSHOT_FILE = "memory_timeline_snapshot.pickle"  # CUDA: the plain step's allocator snapshot, beside the result

# %% [markdown]
# ## One set-up
# A fresh model with the same seed, AdamW, and the step written out with its phases marked.
# Full checkpointing recomputes every layer in backward (`layer_wrapper`, as the checkpointing
# chapter's "every layer"); selective checkpointing recomputes the attention core only
# (`CheckpointedCore`). Accumulation runs the batch as `micro_batches` forward and backward passes,
# each loss divided by their number, then one optimizer step.

# %%
LR = 1e-3


def build(cfg: Config, device: str, checkpointing: str) -> GPT:
    torch.manual_seed(0)
    shape = LayerShape(cfg.d_model, cfg.heads, dropout=0.0, attn_dropout=0.0)
    model = GPT(cfg.vocab, cfg.seq, cfg.layers, shape).to(device)
    if checkpointing == "full":
        model.layer_wrapper = lambda i, layer, x: checkpoint(layer, x, use_reentrant=False)
    elif checkpointing == "selective":
        for layer in model.layers:
            layer.core = CheckpointedCore(layer.core)
    return model


def lm_batch(vocab: int, batch: int, seq: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens and their next-token targets."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, seq + 1), generator=g)
    return tokens[:, :-1].to(device), tokens[:, 1:].to(device)


class NoPhases:
    """The phase marks of an unrecorded step: nothing."""

    def phase(self, name: str, **labels: int) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def make_step(cfg: Config, device: str, setup: str) -> tuple[nn.Module, torch.optim.Optimizer, Callable]:
    """The model, its optimizer, and ``step(marks, step_index)``: one training step with its phases marked."""
    checkpointing, impl, micro, set_to_none, autocast, _ = SETUPS[setup]
    micro = micro or cfg.micro_batches
    model = build(cfg, device, checkpointing)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01, foreach=impl == "foreach")
    x, y = lm_batch(cfg.vocab, cfg.batch, cfg.seq, device)
    chunks = list(zip(x.chunk(micro), y.chunk(micro)))
    dev_type = torch.device(device).type

    def step(marks, k: int) -> None:
        for m, (xi, yi) in enumerate(chunks):
            with marks.phase("forward", step=k, micro=m):
                if autocast:
                    with torch.autocast(device_type=dev_type, dtype=torch.bfloat16):
                        loss = model(xi, yi)
                else:
                    loss = model(xi, yi)
                if micro > 1:
                    loss = loss / micro
            with marks.phase("backward", step=k, micro=m):
                loss.backward()
            del loss
        with marks.phase("optimizer_step", step=k, micro=0):
            opt.step()
        with marks.phase("zero_grad", step=k, micro=0):
            opt.zero_grad(set_to_none=set_to_none)

    return model, opt, step


def measure_setup(cfg: Config, device: str, setup: str) -> dict:
    """The profiler's timeline of the recorded steps, then the memory tracker's peak over the same steps."""
    steps = SETUPS[setup][5] or cfg.zero_grad_steps
    model, opt, step = make_step(cfg, device, setup)
    step(NoPhases(), -1)  # warm-up: the optimizer state exists from here on
    recorder = timeline.TimelineRecorder(device, cfg.max_points)
    with recorder:
        for k in range(steps):
            step(recorder, k)
    series = recorder.result()
    # the plain step (one forward per step): MemTracker's per-module statistics as well, same global peak
    per_module = setup == "plain" and steps == 1
    tracker = MemoryTracker(device, per_module=per_module).track(model, opt)
    with tracker:
        for k in range(steps):
            step(NoPhases(), k)
    peak = tracker.peak()
    return {
        "steps": steps,
        "timeline": series,
        "tracker": {"peak_bytes": peak.total,
                    "by_category_bytes": {c: peak.by_category[c] for c in peak.by_category}},
        "modules": tracker.module_peaks(cfg.module_depth) if per_module else None,
    }


# %% [markdown]
# ## CUDA only: the allocator
# The context's bytes before any tensor; the plain step under the allocator's history (allocated,
# reserved, and the snapshot for PyTorch's memory visualizer); the same step with expandable
# segments; and what `empty_cache()` returns to the driver.

# %%
def measure_cuda(cfg: Config, device: str, before_tensors: dict) -> dict:
    model, opt, step = make_step(cfg, device, "plain")
    step(NoPhases(), -1)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    history = timeline.record_cuda_history(lambda: step(NoPhases(), 0), device, cfg.snapshot_max_entries)
    # the pickle goes beside the result as a file (None where this run keeps no files), not into the JSON
    history["snapshot_file"] = artifacts.write(SNAPSHOT_FILE, base64.b64decode(history.pop("snapshot_pickle_base64")))
    default = timeline.peak_allocated_and_reserved(lambda: step(NoPhases(), 1), device)
    released = timeline.empty_cache_release(device)
    del model, opt, step
    with timeline.expandable_segments(device):
        model, opt, step = make_step(cfg, device, "plain")
        step(NoPhases(), -1)
        expandable = timeline.peak_allocated_and_reserved(lambda: step(NoPhases(), 0), device)
        del model, opt, step
    return {"context": before_tensors, "history": history, "default_segments": default,
            "expandable_segments": expandable, "empty_cache": released}


# %%
def run(cfg: Config, device: str) -> dict:
    before = timeline.cuda_memory_before_tensors(device) if torch.device(device).type == "cuda" else None
    with single_thread(device):  # small tensors: a second CPU thread only adds waiting; CUDA is unaffected
        model = build(cfg, device, "none")
        out = {
            "model": {"parameters": sum(p.numel() for p in model.parameters()), "params_bytes": param_bytes(model),
                      "vocab": cfg.vocab, "d_model": cfg.d_model, "layers": cfg.layers, "heads": cfg.heads,
                      "seq": cfg.seq, "batch": cfg.batch, "micro_batches": cfg.micro_batches},
            "device_type": torch.device(device).type,
            "setups": {name: measure_setup(cfg, device, name) for name in cfg.setups},
        }
        del model
        out["cuda"] = measure_cuda(cfg, device, before) if before is not None else None
    return out


# %% [markdown]
# ## What the pages show, derived from what was measured
# The peak of each timeline: its moment, the phase it falls in, the category that holds most of it
# and every category's bytes there; the tracker's peak beside it; the estimator's prediction of the
# same set-up beside both.

# %%
CATEGORIES = ("params", "optimizer", "inputs", "temporaries", "activations", "grads", "autograd_detail", "unknown")
LABELS = {"params": "parameters", "optimizer": "optimizer state", "inputs": "inputs and buffers",
          "temporaries": "temporaries", "activations": "activations", "grads": "gradients",
          "autograd_detail": "autograd detail", "unknown": "unattributed"}
# the handbook's colours (experiments/named_models.py, sharding.py) for the terms they share
COLORS = {"params": "#4c72b0", "grads": "#dd8452", "optimizer": "#55a868", "activations": "#c44e52",
          "temporaries": "#8172b3", "autograd_detail": "#b39ddb", "inputs": "#937860", "unknown": "#8c8c8c"}
SETUP_LABELS = {"plain": "plain fp32 AdamW (foreach)", "full_checkpointing": "full checkpointing (every layer)",
                "selective_checkpointing": "selective checkpointing (attention core)",
                "accumulation": "gradient accumulation", "for_loop": "for-loop optimizer step",
                "zero_grad_none": "zero_grad(set_to_none=True)",
                "zero_grad_zeros": "zero_grad(set_to_none=False)", "autocast_bf16": "bf16 autocast"}
PHASE_LABELS = {"forward": "forward", "backward": "backward", "optimizer_step": "optimizer step",
                "zero_grad": "zero_grad", "between": "between phases"}
# The groups in which the two instruments' labels mean the same thing. The tracker calls everything
# allocated during backward a temporary and everything else outside parameters, gradients and state an
# activation; the profiler follows each tensor's data flow (activations are what backward reads;
# autograd detail and temporaries what it makes and frees). Their sum is the step's transient memory.
GROUPS = {"params": (("params",), ("params",)), "grads": (("grads",), ("grads",)),
          "optimizer": (("optimizer",), ("optimizer",)),
          "transient": (("activations", "temporaries", "autograd_detail", "unknown"), ("activations", "temporaries")),
          "inputs": (("inputs",), ("buffers", "other"))}
# Agreement of the timeline's peak with the tracker's: total and each group within this share of the total, or
# within a few KiB on the test profile's tiny model (the profiler also sees the 5,056-byte CPU RNG state that
# checkpointing saves, which no tensor of the tracker owns).
AGREEMENT_TOLERANCE_RATIO = 0.05
AGREEMENT_TOLERANCE_BYTES = 8 * 1024
TRANSIENT = GROUPS["transient"][0]  # the timeline's categories that live only within the step
ESTIMATOR_SETUPS = {  # the estimator's Setup fields of each set-up (experiments/lib/estimator.py)
    "plain": {}, "full_checkpointing": {"checkpointing": "full"}, "selective_checkpointing": {"checkpointing": "selective"},
    "accumulation": {"micro": True}, "for_loop": {"optimizer_impl": "for-loop"}, "zero_grad_none": {},
    "zero_grad_zeros": {"set_to_none": False}, "autocast_bf16": {"precision": "bf16-mixed"},
}


def phase_of(series: dict, event: int) -> dict | None:
    """The marked phase whose allocations and frees include ``event`` (None: between phases)."""
    return next((p for p in series["phases"] if p["first_event"] is not None
                 and p["first_event"] <= event <= p["last_event"]), None)


def peak_point(series: dict) -> dict:
    """The highest point of a timeline: its event, time, total, bytes by category, the phase it falls in."""
    totals = [sum(series["bytes"][c][i] for c in CATEGORIES) for i in range(len(series["event"]))]
    i = max(range(len(totals)), key=totals.__getitem__)
    t = series["time_us"][i]
    phase = phase_of(series, series["event"][i])
    by_cat = {c: series["bytes"][c][i] for c in CATEGORIES}
    holder = max(CATEGORIES, key=by_cat.__getitem__)
    return {"event": series["event"][i], "time_us": t, "total_bytes": totals[i], "by_category_bytes": by_cat,
            "phase": phase["phase"] if phase else "between", "step": phase["step"] if phase else None,
            "micro": phase["micro"] if phase else None, "holder": holder, "holder_label": LABELS[holder],
            "holder_bytes": by_cat[holder],
            "holder_share": by_cat[holder] / totals[i] if totals[i] else 0.0}


def agreement(peak: dict, tracker: dict) -> dict:
    """The timeline's peak against the tracker's, group by group, as shares of the tracker's total."""
    total = tracker["peak_bytes"]
    groups = {}
    for name, (ours, theirs) in GROUPS.items():
        a = sum(peak["by_category_bytes"][c] for c in ours)
        b = sum(tracker["by_category_bytes"].get(c, 0) for c in theirs)
        groups[name] = {"timeline_bytes": a, "tracker_bytes": b, "difference_bytes": a - b,
                        "difference_share": abs(a - b) / total if total else 0.0}
    worst = max(groups, key=lambda g: groups[g]["difference_share"] if g != "inputs" else -1.0)
    ratio = peak["total_bytes"] / total if total else 1.0
    allowed = max(AGREEMENT_TOLERANCE_RATIO * total, AGREEMENT_TOLERANCE_BYTES)
    return {"total_ratio": ratio, "groups": groups, "worst_group": worst,
            "worst_share": groups[worst]["difference_share"],
            "within_tolerance": abs(peak["total_bytes"] - total) <= allowed
            and abs(groups[worst]["difference_bytes"]) <= allowed}


def estimated(model: dict, setup: str, device_type: str) -> dict:
    """The estimator's peak and phase for the set-up (torch-free; experiments/lib/estimator.py)."""
    from experiments.lib import estimator
    from experiments.lib.model_shapes import ModelShape

    shape = ModelShape(family="gpt2", hidden=model["d_model"], layers=model["layers"], heads=model["heads"],
                       vocab=model["vocab"], positions=model["seq"], dropout=False, name="reference GPT")
    fields = dict(ESTIMATOR_SETUPS[setup])
    micro = fields.pop("micro", False)
    batch = model["batch"] // model["micro_batches"] if micro else model["batch"]
    if micro:   # accumulation: the earlier micro-batches' gradients are live through the later ones
        fields["microbatches"] = model["micro_batches"]
    fields.setdefault("optimizer_impl", "foreach")
    est = estimator.estimate(estimator.Setup(optimizer="adamw", precision=fields.pop("precision", "fp32"),
                                             batch=batch, seq=model["seq"], attention="eager", device=device_type,
                                             **fields), shape=shape)
    return {"peak_bytes": est["peak_bytes"], "peak_phase": est["peak_phase"],
            "peak_phase_label": est["phases"][est["peak_phase"]]["label"]}


def phase_peaks(series: dict) -> dict:
    """The highest recorded point inside each kind of phase (every step and micro-batch together)."""
    out = {}
    for i, event in enumerate(series["event"]):
        p = phase_of(series, event)
        if p is not None:
            by_cat = {c: series["bytes"][c][i] for c in CATEGORIES}
            total = sum(by_cat.values())
            if p["phase"] not in out or total > out[p["phase"]]["total_bytes"]:
                out[p["phase"]] = {"label": PHASE_LABELS[p["phase"]], "total_bytes": total, "by_category_bytes": by_cat,
                                   "transient_bytes": sum(by_cat[c] for c in TRANSIENT)}
    return {ph: out[ph] for ph in PHASE_LABELS if ph in out}


def summarize_setup(name: str, x: dict, model: dict, device_type: str, plain: dict | None) -> dict:
    series = x["timeline"]
    peak = peak_point(series)
    first = {c: series["bytes"][c][0] for c in CATEGORIES}
    last = {c: series["bytes"][c][-1] for c in CATEGORIES}
    est = estimated(model, name, device_type)
    return {
        "label": SETUP_LABELS.get(name, name.replace("_", " ")),
        "peak": {**peak, "phase_label": PHASE_LABELS[peak["phase"]]},
        "phase_peaks": phase_peaks(series),
        "peak_over_plain_ratio": peak["total_bytes"] / plain["total_bytes"] if plain else None,
        "start_bytes": sum(first.values()),
        "start_by_category_bytes": first,
        "end_bytes": sum(last.values()),
        "peak_transient_bytes": sum(peak["by_category_bytes"][c] for c in TRANSIENT),
        "peak_above_start_bytes": peak["total_bytes"] - sum(first.values()),
        "agreement": agreement(peak, x["tracker"]),
        "estimator": {**est, "ratio": est["peak_bytes"] / peak["total_bytes"]},
        "points_count": len(series["time_us"]),
    }


def summarize_cuda(c: dict) -> dict:
    h = c["history"]
    i = max(range(len(h["allocated_bytes"])), key=h["allocated_bytes"].__getitem__)
    d, e = c["default_segments"], c["expandable_segments"]
    return {
        "context_bytes": c["context"]["outside_allocator_bytes"],
        "fragmentation_at_peak_bytes": h["reserved_bytes"][i] - h["allocated_bytes"][i],
        "reserved_over_allocated_at_peak_ratio": h["reserved_bytes"][i] / max(1, h["allocated_bytes"][i]),
        "default_reserved_over_allocated_ratio": d["max_reserved_bytes"] / max(1, d["max_allocated_bytes"]),
        "expandable_reserved_over_allocated_ratio": e["max_reserved_bytes"] / max(1, e["max_allocated_bytes"]),
        "expandable_saves_bytes": d["max_reserved_bytes"] - e["max_reserved_bytes"],
        "empty_cache_released_bytes": c["empty_cache"]["reserved_before_bytes"] - c["empty_cache"]["reserved_after_bytes"],
    }


TRACKER_LABELS = {"params": "parameters", "buffers": "buffers", "grads": "gradients", "activations": "activations",
                  "temporaries": "temporaries", "optimizer": "optimizer state", "other": "other"}


def summarize_modules(x: dict) -> dict | None:
    """The plain step's per-module table: each module's higher peak (forward or backward) and what held it.

    Each peak is everything live at that moment (MemTracker's snapshot), so a module's row reads "while
    this module ran, memory reached ... ": the root's is the step's peak; its children's are lower.
    """
    modules = x.get("modules")
    if not modules:
        return None
    rows = {}
    for name, m in modules.items():
        peaks = {ph: m[f"{ph}_peak"] for ph in ("forward", "backward") if m[f"{ph}_peak"]}
        phase = max(peaks, key=lambda ph: peaks[ph]["total_bytes"])
        by = peaks[phase]["by_category_bytes"]
        holder = max(by, key=by.__getitem__)
        rows[name] = {"depth": name.count("."), "parameters_bytes": m["parameters_bytes"],
                      "outputs_bytes": m["outputs_bytes"], "peak_phase": phase, "peak_phase_label": PHASE_LABELS[phase],
                      "peak_bytes": peaks[phase]["total_bytes"], "by_category_bytes": by,
                      "holder_label": TRACKER_LABELS[holder],
                      "forward_peak_bytes": m["forward_peak"]["total_bytes"] if m["forward_peak"] else None,
                      "backward_peak_bytes": m["backward_peak"]["total_bytes"] if m["backward_peak"] else None}
    root = next(iter(rows))
    children = [n for n in rows if n != root]
    top_child = max(children, key=lambda n: rows[n]["peak_bytes"]) if children else None
    return {"rows": rows, "root": root, "root_peak_bytes": rows[root]["peak_bytes"],
            "root_over_tracker_ratio": rows[root]["peak_bytes"] / x["tracker"]["peak_bytes"],
            "top_child": top_child, "top_child_peak_bytes": rows[top_child]["peak_bytes"] if top_child else None,
            "top_child_phase_label": rows[top_child]["peak_phase_label"] if top_child else None}


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size."""
    return gpt_scale_label(data)


def summarize(data: dict) -> dict:
    model, dev = data["model"], data["device_type"]
    measured = data["setups"]
    plain = peak_point(measured["plain"]["timeline"]) if "plain" in measured else None
    # every set-up the page knows, null where this result did not record it (the test profile records four)
    names = list(SETUPS) + [n for n in measured if n not in SETUPS]
    setups = {n: summarize_setup(n, measured[n], model, dev, plain) if n in measured else None for n in names}
    agree = [s["agreement"] for s in setups.values() if s]
    worst_total = max(agree, key=lambda a: abs(a["total_ratio"] - 1))
    worst_group = max(agree, key=lambda a: a["worst_share"])
    plain_s, accumulation = setups.get("plain"), setups.get("accumulation")
    return {
        "scale_label": scale_label(data),
        "setups": setups,
        "categories": {c: {"label": LABELS[c], "color": COLORS[c]} for c in CATEGORIES},
        "tolerance_ratio": AGREEMENT_TOLERANCE_RATIO,
        "tolerance_bytes": AGREEMENT_TOLERANCE_BYTES,
        "all_within_tolerance": all(a["within_tolerance"] for a in agree),
        "worst_total_ratio": worst_total["total_ratio"],
        "worst_total_difference_share": abs(worst_total["total_ratio"] - 1),
        "worst_group_share": worst_group["worst_share"],
        "worst_group": worst_group["worst_group"],
        # accumulation: the activations at its peak over the plain step's (same effective batch)
        "accumulation_activations_ratio": (accumulation["peak"]["by_category_bytes"]["activations"]
                                           / max(1, plain_s["peak"]["by_category_bytes"]["activations"]))
        if plain_s and accumulation else None,
        "cuda": summarize_cuda(data["cuda"]) if data["cuda"] is not None else None,
        "modules": summarize_modules(measured["plain"]) if "plain" in measured else None,
    }


# %% [markdown]
# ## Figures
# One panel per set-up: live bytes stacked by category (the same colours in every panel), the
# phases shaded, the peak marked.

# %%
PHASE_SHADES = {"forward": "#eeeeee", "backward": "#d9d9d9", "optimizer_step": "#fff2cc", "zero_grad": "#dff0f7"}


def draw_timeline(ax, series: dict, peak: dict, title: str, top_bytes: int, mib: float = 2**20,
                  annotate: bool = True) -> None:
    """Live MiB stacked by category against the allocation events (as PyTorch's memory visualizer draws them)."""
    for p in series["phases"]:
        if p["first_event"] is not None:
            ax.axvspan(p["first_event"], p["last_event"], color=PHASE_SHADES[p["phase"]], lw=0)
    stacks = [[v / mib for v in series["bytes"][c]] for c in CATEGORIES]
    ax.stackplot(series["event"], stacks, colors=[COLORS[c] for c in CATEGORIES],
                 labels=[LABELS[c] for c in CATEGORIES], step="post", lw=0)
    ax.plot([peak["event"]], [peak["total_bytes"] / mib], "v", color="black", ms=7)
    if annotate:
        ax.annotate(f"peak {peak['total_bytes'] / mib:.3g} MiB, {peak['phase_label']}",
                    (peak["event"], peak["total_bytes"] / mib), textcoords="offset points", xytext=(6, 2), fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("MiB")
    ax.set_ylim(0, top_bytes / mib)
    ax.set_xlim(0, max(series["event"]))


def plot(data: dict, summary: dict) -> dict:
    import matplotlib.pyplot as plt

    names = [n for n, s in summary["setups"].items() if s]
    cols = 2
    rows = -(-len(names) // cols)
    # one y scale for every panel, so that heights compare across set-ups
    top = 1.2 * max(summary["setups"][n]["peak"]["total_bytes"] for n in names)
    fig, axes = plt.subplots(rows, cols, figsize=(10, 2.6 * rows), sharex=False, squeeze=False)
    for k, name in enumerate(names):
        s = summary["setups"][name]
        draw_timeline(axes[k // cols][k % cols], data["setups"][name]["timeline"], s["peak"], s["label"], top)
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("allocation and free events")
    handles, labels = axes[0][0].get_legend_handles_labels()
    shades = [plt.Rectangle((0, 0), 1, 1, color=c) for c in PHASE_SHADES.values()]
    fig.legend(handles + shades, labels + [f"{PHASE_LABELS[p]} (shading)" for p in PHASE_SHADES],
               loc="upper center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.6 * rows)))
    out = {"setups": fig}
    first = "plain" if "plain" in names else names[0]
    small, ax = plt.subplots(figsize=(4.2, 2.2))
    draw_timeline(ax, data["setups"][first]["timeline"], summary["setups"][first]["peak"],
                  summary["setups"][first]["label"], int(1.7 * summary["setups"][first]["peak"]["total_bytes"]),
                  annotate=False)
    ax.set_xlabel("allocation and free events", fontsize=8)
    shown = [c for c in CATEGORIES if max(data["setups"][first]["timeline"]["bytes"][c]) > 0]
    ax.legend([plt.Rectangle((0, 0), 1, 1, color=COLORS[c]) for c in shown], [LABELS[c] for c in shown],
              fontsize=6, ncol=3, loc="upper right", frameon=False)
    small.tight_layout()
    out["plain"] = small
    if data["cuda"] is not None:
        h = data["cuda"]["history"]
        fig3, ax3 = plt.subplots(figsize=(7, 3))
        t0 = h["time_us"][0]
        ms = [(t - t0) / 1000 for t in h["time_us"]]
        ax3.step(ms, [v / 2**20 for v in h["reserved_bytes"]], where="post", label="reserved")
        ax3.step(ms, [v / 2**20 for v in h["allocated_bytes"]], where="post", label="allocated")
        ax3.set_xlabel("time (ms)")
        ax3.set_ylabel("MiB")
        ax3.set_title("The caching allocator over the plain step")
        ax3.legend(fontsize=8)
        fig3.tight_layout()
        out["allocator"] = fig3
    return out


# %%
if __name__ == "__main__":
    import sys

    from experiments.lib.cli import main

    raise SystemExit(main(sys.modules[__name__]))
