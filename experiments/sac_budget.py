# %%
"""Checkpointing chosen under a budget: what torch.compile's activation-memory budget picks, and how close it comes.

Question: PyTorch can choose what to recompute for a memory budget instead of
a hand-written policy. How close does the chosen policy's saved memory come
to what the budget asked for, and what does it cost in step time? Of the
tools torch offers, ``torch.distributed._tools``' SAC estimator needs CUDA
for both of its runtime modes and its ILP needs the ``pulp`` package; the
one that runs on every host is ``torch.compile``'s partitioner with
``torch._functorch.config.activation_memory_budget`` (a 0-1 knapsack over the
forward's values: recompute the cheapest by FLOPs until the saved bytes fit).

Method: the handbook's small GPT (``experiments.lib.gpt``, dropout off),
compiled with the ``aot_eager_decomp_partition`` backend (AOTAutograd's
partitioner, eager kernels; ``experiments.lib.compile_budget``) once per
budget. Per budget: the bytes the compiled graph saved for backward (read off
the graph, parameters aside), on CUDA the allocator's peak of the step, the
step time through ``torch.utils.benchmark`` (interleaved), the compile time,
and the gradients against the eager model's. The budget's promise is
interpolated from the two ends (budget 0: only the region's inputs kept;
budget 1: the default choice): saved <= saved(0) + budget x (saved(1) - saved(0)).
Eager (uncompiled) saved bytes are measured the same way for reference, and
the checkpointing chapter's hand-written policies (every layer checkpointed;
the selective policy that keeps matmul outputs) compiled at the default
budget, so that all of them are counted alike.

Run it: ``python -m experiments.sac_budget --profile quick``.
"""

# %%
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from experiments.lib.compile_budget import BACKEND, budget_supported, compile_under_budget, graph_saved_bytes
from experiments.lib.gpt import GPT, LayerShape
from experiments.lib.threads import cpu_threads
from experiments.lib.timing import interleaved_times

TIMEOUT_S = 900


@dataclass(frozen=True)
class Config:
    layers: int = 2
    hidden: int = 64
    heads: int = 2
    seq: int = 64
    batch: int = 4
    vocab: int = 128
    budgets: tuple = (1.0, 0.5, 0.0)
    hand_picked: tuple = ("every_layer", "sac_save_matmuls")   # the checkpointing chapter's policies, compiled
    min_run_time_s: float = 0.1
    cpu_threads: int = 1               # see experiments.lib.threads; 0 leaves torch's default


PROFILES = {
    "test": Config(layers=1, hidden=16, heads=2, seq=16, batch=2, vocab=32, budgets=(1.0, 0.0), hand_picked=(),
                   min_run_time_s=0.01),
    "quick": Config(),
    "full": Config(layers=6, hidden=256, heads=4, seq=256, batch=8, vocab=4096, budgets=(1.0, 0.75, 0.5, 0.25, 0.0),
                   min_run_time_s=0.5),
    # gpu: each budget is a torch.compile of the model (Python on the host's CPU, 3-6 s each for quick's two
    # layers here), so few budgets and layers keep it in the GPU plan's 44 s (generator/gpu_plan.py)
    "gpu": Config(layers=4, hidden=512, heads=8, seq=512, batch=8, vocab=8192, budgets=(1.0, 0.5, 0.0),
                  min_run_time_s=0.3),
}

# %%
def build(cfg: Config, device: str) -> GPT:
    torch.manual_seed(0)
    shape = LayerShape(cfg.hidden, cfg.heads, dropout=0.0, attn_dropout=0.0)
    return GPT(cfg.vocab, cfg.seq, cfg.layers, shape).to(device)


def tokens(cfg: Config, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=g).to(device)


def sac_context():
    """The checkpointing chapter's selective policy: keep the outputs of the matmuls, recompute the rest."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    keep = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default)

    def policy(_ctx, op, *_args, **_kwargs):
        return CheckpointPolicy.MUST_SAVE if op in keep else CheckpointPolicy.PREFER_RECOMPUTE

    return functools.partial(create_selective_checkpoint_contexts, policy)


def hand_picked_wrapper(name: str):
    """A ``GPT.layer_wrapper`` running each layer under the named hand-written policy."""
    if name == "every_layer":
        return lambda _i, layer, x: checkpoint(layer, x, use_reentrant=False)
    if name == "sac_save_matmuls":
        return lambda _i, layer, x: checkpoint(layer, x, use_reentrant=False, context_fn=sac_context())
    raise ValueError(f"unknown hand-picked policy {name!r} (every_layer, sac_save_matmuls)")


def key(budget: float) -> str:
    return f"budget_{budget:.2f}"


def measure(cfg: Config, device: str, forward, model: GPT, idx: torch.Tensor, reference: list | None) -> dict:
    model.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    loss = forward(idx, idx)
    saved = graph_saved_bytes(loss, exclude=[model])
    loss.backward()
    out = {"saved_bytes": saved}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        out["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    grads = [p.grad.detach().clone() for p in model.parameters()]
    if reference is not None:
        out["max_abs_grad_diff_vs_eager"] = max(float((a - b).abs().max()) for a, b in zip(grads, reference))
    return out, grads


# %% [markdown]
# ## Run

# %%
def run(cfg: Config, device: str) -> dict:
    with cpu_threads(cfg.cpu_threads, device) as threads:
        return {**_run(cfg, device), "threads": threads}


def _run(cfg: Config, device: str) -> dict:
    if not budget_supported():
        raise RuntimeError(f"torch {torch.__version__} has no torch._functorch.config.activation_memory_budget "
                           f"(torch 2.4 and newer)")
    idx = tokens(cfg, device)
    eager_model = build(cfg, device)
    eager, reference = measure(cfg, device, eager_model, eager_model, idx, None)
    rows, steps = {}, {}

    def step_of(fn, model):
        def step():
            model.zero_grad(set_to_none=True)
            fn(idx, idx).backward()
        return step

    steps["eager"] = step_of(eager_model, eager_model)
    for budget in cfg.budgets:
        model = build(cfg, device)
        fn = compile_under_budget(model, budget)
        t0 = time.perf_counter()
        fn(idx, idx).backward()    # compiles forward and backward
        compile_s = time.perf_counter() - t0
        row, _ = measure(cfg, device, fn, model, idx, reference)
        rows[key(budget)] = {"budget": budget, "compile_time_s": compile_s, **row}
        steps[key(budget)] = step_of(fn, model)
    hand = {}
    for name in cfg.hand_picked:   # compiled at the default budget: the policy decides what is recomputed
        model = build(cfg, device)
        model.layer_wrapper = hand_picked_wrapper(name)
        fn = compile_under_budget(model, 1.0)
        t0 = time.perf_counter()
        fn(idx, idx).backward()
        compile_s = time.perf_counter() - t0
        row, _ = measure(cfg, device, fn, model, idx, reference)
        hand[name] = {"compile_time_s": compile_s, **row}
        steps[name] = step_of(fn, model)
    times = interleaved_times(steps, cfg.min_run_time_s)
    for name, row in [*rows.items(), *hand.items()]:
        row["time"] = times[name]
    eager["time"] = times["eager"]
    return {
        "model": {"layers": cfg.layers, "hidden": cfg.hidden, "heads": cfg.heads, "seq": cfg.seq, "batch": cfg.batch,
                  "vocab": cfg.vocab, "params": sum(p.numel() for p in eager_model.parameters())},
        "backend": BACKEND,
        "tools": {"sac_estimator_needs_cuda": True, "sac_ilp_needs_pulp": True,
                  "compile_budget_available": True},
        "eager": eager,
        "budgets": rows,
        "hand_picked": hand,
    }

# %% [markdown]
# ## What the pages show, derived from what was measured
#
# The promise of a budget b: at most saved(0) + b (saved(1) - saved(0)) bytes,
# with saved(0) and saved(1) the measured ends. The ratio measured/promised
# says how close the knapsack came (1.0: it used the whole budget; below 1:
# it saved less than allowed, recomputing more than it had to).

# %%
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
    b = data["budgets"]
    lo, hi = b[key(0.0)]["saved_bytes"], b[key(1.0)]["saved_bytes"]
    eager = data["eager"]
    out = {}
    for name, row in b.items():
        promised = lo + row["budget"] * (hi - lo)
        out[name] = {
            "label": f"budget {row['budget']:.2f}",
            "promised_bytes": promised,
            "measured_over_promised_ratio": row["saved_bytes"] / promised if promised else 1.0,
            "within_promise": row["saved_bytes"] <= promised * 1.001 + 64,
            "saved_ratio_vs_eager": row["saved_bytes"] / max(1, eager["saved_bytes"]),
            "time_ratio_vs_eager": row["time"]["median_ms"] / eager["time"]["median_ms"],
            "time_half_iqr_ms": row["time"]["iqr_ms"] / 2,
        }
    hand = {}
    for name, row in data["hand_picked"].items():
        nearest = min(b, key=lambda k: abs(b[k]["saved_bytes"] - row["saved_bytes"]))
        hand[name] = {"label": HAND_LABELS.get(name, name),
                      "saved_ratio_vs_eager": row["saved_bytes"] / max(1, eager["saved_bytes"]),
                      "time_ratio_vs_eager": row["time"]["median_ms"] / eager["time"]["median_ms"],
                      "time_half_iqr_ms": row["time"]["iqr_ms"] / 2,
                      "nearest_budget_key": nearest, "nearest_budget_label": out[nearest]["label"],
                      "saved_ratio_vs_nearest_budget": row["saved_bytes"] / max(1, b[nearest]["saved_bytes"])}
    middle = min(b, key=lambda k: abs(b[k]["budget"] - 0.5))   # the budget the page quotes: nearest 0.5
    cuda = "cuda_max_allocated_bytes" in eager   # the allocator's peak of the step: CUDA hosts only
    if cuda:
        for name, row in [*b.items(), *data["hand_picked"].items()]:
            (out.get(name) or hand[name])["peak_ratio_vs_eager"] = \
                row["cuda_max_allocated_bytes"] / eager["cuda_max_allocated_bytes"]
    return {"scale_label": scale_label(data), "budgets": out, "hand_picked": hand, "middle_key": middle,
            "middle": {**out[middle], "max_abs_grad_diff_vs_eager": b[middle]["max_abs_grad_diff_vs_eager"]},
            "cuda": cuda, "eager_time_half_iqr_ms": eager["time"]["iqr_ms"] / 2,
            "default_saves_less_than_eager": hi < eager["saved_bytes"],
            "all_within_promise": all(r["within_promise"] for r in out.values()),
            "max_grad_diff": max(r["max_abs_grad_diff_vs_eager"] for r in b.values())}

HAND_LABELS = {"every_layer": "every layer checkpointed (compiled)",
               "sac_save_matmuls": "SAC: keep matmul outputs (compiled)"}

# %% [markdown]
# ## Figure: saved bytes against step time per budget

# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    e = data["eager"]
    ax.plot([e["time"]["median_ms"]], [e["saved_bytes"] / 2**20], "ks", label="eager")
    for name, row in data["budgets"].items():
        s = summary["budgets"][name]
        ax.errorbar([row["time"]["median_ms"]], [row["saved_bytes"] / 2**20], xerr=[[s["time_half_iqr_ms"]]] * 2,
                    fmt="o", capsize=3, label=s["label"])
        ax.plot([row["time"]["median_ms"]], [s["promised_bytes"] / 2**20], "x", color="grey")
    for name, row in data["hand_picked"].items():
        ax.plot([row["time"]["median_ms"]], [row["saved_bytes"] / 2**20], "D", label=summary["hand_picked"][name]["label"])
    ax.set_xlabel("step time, median (ms)")
    ax.set_ylabel("saved for backward (MiB); x: the budget's promise")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.set_title("torch.compile's activation-memory budget")
    fig.tight_layout()
    return fig

# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
