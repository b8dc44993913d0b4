# %% [markdown]
"""Sharding, measured: per-rank bytes under DDP, ZeroRedundancyOptimizer and FSDP2, beside the ZeRO rule.

Question: ZeRO (Rajbhandari et al. 2020) says stage 1 divides the optimizer
state by the data-parallel degree N, stage 2 also the gradients, stage 3 also
the weights. What does each rank really hold when PyTorch does it, and what
does a training step peak at?

Method: real ``torch.distributed`` (gloo on CPU, NCCL on CUDA), one process
per rank started with ``torch.multiprocessing``, world sizes 1, 2 and more
where the host has the cores or GPUs. A small MLP whose three equal hidden
layers make whole-tensor partitioning uneven, trained with AdamW in fp32
under four wrappers: ``DistributedDataParallel`` (ZeRO-0),
``ZeroRedundancyOptimizer`` (ZeRO-1), FSDP2 ``fully_shard`` with
``reshard_after_forward=False`` (ZeRO-2-like) and ``True`` (ZeRO-3). Every
rank reads its own parameters, gradients and optimizer state (local shards,
each storage once) and tracks the second step with PyTorch's ``MemTracker``;
the estimator (``experiments.lib.estimator``) predicts the per-rank bytes.
``run`` stores what each rank measured, by world size and wrapper;
``summarize`` puts the rule beside it (so a change to the estimator updates the
page without measuring again) and derives the ratios the page shows.

Run it: ``python -m experiments.sharding --profile quick``.
"""

# %%
from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from torch import nn

from experiments.lib import estimator  # summarize only: run does not reach it
from experiments.lib.host import cores
from experiments.lib.memory import MemoryTracker, tensor_bytes

TIMEOUT_S = 600

MODES = ("ddp", "zero1", "fsdp2_keep", "fsdp2_reshard")  # the wrappers, in the order of the pages' tables


@dataclass(frozen=True)
class Config:
    width: int = 96           # hidden width of the three equal layers
    inputs: int = 32
    outputs: int = 5          # odd, so FSDP2 must pad dim 0 of the head
    batch: int = 16
    world_sizes: tuple = (1, 2)
    lr: float = 1e-3


PROFILES = {
    "test": Config(width=32, inputs=8, outputs=3, batch=4, world_sizes=(1,)),  # one rank: no process to start
    "quick": Config(),
    "full": Config(width=2048, inputs=1024, outputs=1001, batch=64, world_sizes=(1, 2, 4, 8)),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    # On one GPU only world size 1 runs there; 2 runs as CPU gloo ranks, each a fresh interpreter (full: up to 8).
    "gpu": Config(width=1024, inputs=512, outputs=1001, batch=64, world_sizes=(1, 2)),
}

# %% [markdown]
# ## The model and the four wrappers
#
# An MLP: ``inputs -> width``, three ``width x width`` layers, ``width -> outputs``.
# ZeroRedundancyOptimizer gives each parameter whole to one rank (largest
# first, to the rank with the fewest bytes so far), so three equal large
# matrices split 2 : 1 over two ranks. FSDP2 splits every tensor along dim 0,
# padding it to a multiple of the world size.

# %%
def build_model(cfg: Config) -> nn.Sequential:
    layers = [nn.Linear(cfg.inputs, cfg.width), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Linear(cfg.width, cfg.width), nn.ReLU()]
    layers.append(nn.Linear(cfg.width, cfg.outputs))
    return nn.Sequential(*layers)


def tensor_shapes(cfg: Config) -> list[list[int]]:
    return [list(p.shape) for p in build_model_meta(cfg).parameters()]


def build_model_meta(cfg: Config) -> nn.Sequential:
    with torch.device("meta"):
        return build_model(cfg)


def _fully_shard():
    try:
        from torch.distributed.fsdp import fully_shard  # torch >= 2.6
        return fully_shard, "torch.distributed.fsdp"
    except ImportError:
        from torch.distributed._composable.fsdp import fully_shard  # torch 2.4, 2.5
        return fully_shard, "torch.distributed._composable.fsdp"


def local(t: torch.Tensor) -> torch.Tensor:
    """The rank's own piece of a tensor (a DTensor's local shard, else the tensor)."""
    return t.to_local() if hasattr(t, "to_local") else t


def local_bytes(tensors) -> int:
    return tensor_bytes([local(t) for t in tensors if t is not None])


def wrap(mode: str, model: nn.Sequential, cfg: Config, dev: torch.device):
    """(module to call, optimizer, optimizer whose .state this rank holds)."""
    if mode in ("ddp", "zero1"):
        from torch.nn.parallel import DistributedDataParallel as DDP

        # gradient_as_bucket_view: the gradients are views of DDP's buckets (the default keeps both).
        ddp = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None, gradient_as_bucket_view=True)
        if mode == "ddp":
            opt = torch.optim.AdamW(ddp.parameters(), lr=cfg.lr)
            return ddp, opt, opt
        from torch.distributed.optim import ZeroRedundancyOptimizer

        opt = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=torch.optim.AdamW, lr=cfg.lr)
        return ddp, opt, opt.optim
    fully_shard, _ = _fully_shard()
    reshard = mode == "fsdp2_reshard"
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, reshard_after_forward=reshard)
    fully_shard(model, reshard_after_forward=reshard)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    return model, opt, opt

# %% [markdown]
# ## One rank
#
# A warm-up step creates the optimizer state. The second step is measured:
# gradients after backward (before the step), parameters and optimizer state
# at rest after it, the parameters registered on the module right after
# forward (FSDP2 without resharding keeps them whole until backward), and the
# peak of the whole step by category.

# %%
def measure_mode(mode: str, cfg: Config, dev: torch.device, rank: int) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg).to(dev)
    module, opt, holder = wrap(mode, model, cfg, dev)
    g = torch.Generator().manual_seed(1 + rank)
    x = torch.randn(cfg.batch, cfg.inputs, generator=g).to(dev)
    y = torch.randint(0, cfg.outputs, (cfg.batch,), generator=g).to(dev)

    def loss_fn() -> torch.Tensor:
        return nn.functional.cross_entropy(module(x), y)

    loss_fn().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

    tracker = MemoryTracker(dev).track(module, opt if mode != "zero1" else holder)
    with tracker:
        loss = loss_fn()
        after_forward = local_bytes(list(model.parameters()))
        loss.backward()
        grads = local_bytes([p.grad for p in model.parameters()])
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = tracker.peak().as_dict()
    state = [v for s in holder.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    out = {
        "rank": rank,
        "params_bytes": local_bytes(list(model.parameters())),
        "grads_bytes": grads,
        "optimizer_bytes": local_bytes(state),
        "params_after_forward_bytes": after_forward,
        "peak": peak,
        "loss": float(loss.detach()),
    }
    if tracker.cuda_max_allocated_bytes is not None:
        out["cuda_max_allocated_bytes"] = tracker.cuda_max_allocated_bytes
    if mode == "zero1":
        mine = {id(p) for group in holder.param_groups for p in group["params"]}
        out["owned_param_tensors"] = sum(1 for p in model.parameters() if id(p) in mine)
        out["owned_params"] = sum(p.numel() for p in model.parameters() if id(p) in mine)
    del module, opt, holder, model
    return out


def _worker(rank: int, world_size: int, port: int, cfg_dict: dict, device: str, out_dir: str) -> None:
    """One rank: all four wrappers in turn, results to ``out_dir/rank<r>.json``."""
    torch.set_num_threads(1)
    cfg = Config(**cfg_dict)
    dev = torch.device(f"cuda:{rank}") if device.startswith("cuda") else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world_size)
    try:
        results = {}
        for mode in MODES:
            results[mode] = measure_mode(mode, cfg, dev, rank)
            dist.barrier()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as f:
            json.dump(results, f)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_world(cfg: Config, device: str, world_size: int) -> list[dict]:
    """Start ``world_size`` ranks (spawned processes; one rank runs here) and collect each rank's results."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="sharding-") as out_dir:
        args = (world_size, free_port(), asdict(cfg), device, out_dir)
        if world_size == 1:  # one rank: this process (saves starting an interpreter)
            threads = torch.get_num_threads()
            try:
                _worker(0, *args)
            finally:
                torch.set_num_threads(threads)
        else:
            mp.spawn(_worker, args=args, nprocs=world_size, join=True)
        ranks = []
        for r in range(world_size):
            with open(os.path.join(out_dir, f"rank{r}.json"), encoding="utf-8") as f:
                ranks.append(json.load(f))
    return ranks

# %% [markdown]
# ## Run: every world size, the measured ranks beside the prediction

# %%
def cpu_ranks_limit() -> int:
    return max(2, cores())


def possible_world_sizes(cfg: Config, device: str) -> tuple[list[tuple[int, str]], list[int]]:
    """[(world size, device)] to run, and the world sizes this host cannot run.

    On CUDA a world size needs that many GPUs (NCCL: one rank per GPU); one that the GPUs cannot hold runs
    on the CPU with gloo instead, so a single-GPU host still shows sharding across ranks.
    """
    gpus = torch.cuda.device_count() if device.startswith("cuda") and torch.cuda.is_available() else 0
    plan, skipped = [], []
    for ws in cfg.world_sizes:
        if ws <= gpus:
            plan.append((ws, device))
        elif ws <= cpu_ranks_limit():
            plan.append((ws, "cpu"))
        else:
            skipped.append(ws)
    return plan, skipped


def run(cfg: Config, device: str) -> dict:
    torch.manual_seed(0)
    plan, skipped = possible_world_sizes(cfg, device)
    runs = []
    for ws, dev in plan:
        ranks = run_world(cfg, dev, ws)
        runs.append({"world_size": ws, "device": dev, "backend": "nccl" if dev.startswith("cuda") else "gloo",
                     "modes": {mode: {"ranks": [r[mode] for r in ranks]} for mode in MODES}})
    _, fsdp_module = _fully_shard()
    return {
        "optimizer": "adamw",
        "precision": "fp32",
        "backend": "nccl" if device.startswith("cuda") else "gloo",
        "fsdp_module": fsdp_module,
        "tensor_shapes": tensor_shapes(cfg),
        "world_sizes": [ws for ws, _ in plan],
        "skipped_world_sizes": skipped,
        "runs": runs,
    }

# %% [markdown]
# ## Derived at build time: the rule beside each rank, and the ratios
#
# The estimator's per-rank bytes for the matching ZeRO stage, the model state
# of each rank, the busiest rank against the rule, and every wrapper against
# DDP at the largest world size.

# %%
STAGES = {"ddp": 0, "zero1": 1, "fsdp2_keep": 2, "fsdp2_reshard": 3}  # the ZeRO stage each wrapper compares with
LABELS = {
    "ddp": "DDP (ZeRO-0)",
    "zero1": "ZeroRedundancyOptimizer (ZeRO-1)",
    "fsdp2_keep": "FSDP2, reshard_after_forward=False (ZeRO-2-like)",
    "fsdp2_reshard": "FSDP2, reshard_after_forward=True (ZeRO-3)",
}
SHORT = {"ddp": "DDP", "zero1": "ZeRO-1", "fsdp2_keep": "FSDP2\nkeep", "fsdp2_reshard": "FSDP2\nreshard"}


def _rank_row(mode: str, r: dict, predicted_total: int) -> dict:
    state = r["params_bytes"] + r["grads_bytes"] + r["optimizer_bytes"]
    row = {"rank": r["rank"], "params_bytes": r["params_bytes"], "grads_bytes": r["grads_bytes"],
           "optimizer_bytes": r["optimizer_bytes"], "params_after_forward_bytes": r["params_after_forward_bytes"],
           "peak_bytes": r["peak"]["total_bytes"], "state_bytes": state,
           "state_over_predicted_ratio": state / predicted_total}
    if mode == "zero1":  # which parameters each rank's optimizer owns
        row.update(owned_param_tensors=r["owned_param_tensors"], owned_params=r["owned_params"])
    return row


def _mode_summary(mode: str, ranks: list, data: dict, world_size: int) -> dict:
    _, pred = estimator.model_state_bytes(data["tensor_shapes"], data["optimizer"], data["precision"],
                                          STAGES[mode], world_size)
    total = sum(pred.values())
    rows = [_rank_row(mode, r, total) for r in ranks]
    out = {"label": LABELS[mode], "short_label": SHORT[mode], "zero_stage": STAGES[mode],
           "predicted_per_rank": {f"{k}_bytes": v for k, v in pred.items()}, "predicted_total_bytes": total,
           "ranks": rows}
    for key in ("params", "grads", "optimizer"):
        vals = [r[f"{key}_bytes"] for r in rows]
        out[f"{key}_max_over_predicted_ratio"] = max(vals) / pred[key] if pred[key] else 1.0
        out[f"{key}_rank_spread_ratio"] = max(vals) / min(vals) if min(vals) else 1.0
    out["state_max_bytes"] = max(r["state_bytes"] for r in rows)
    out["state_max_over_predicted_ratio"] = out["state_max_bytes"] / total
    out["peak_max_bytes"] = max(r["peak_bytes"] for r in rows)
    out["peak_over_predicted_ratio"] = out["peak_max_bytes"] / total
    return out


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        params = sum(estimator.formulas.numel(s) for s in data["tensor_shapes"])
        return (f"{len(data['tensor_shapes']) // 2}-layer MLP, {params:,} params, "
                f"{' and '.join(str(w) for w in data['world_sizes'])} ranks")
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    full, _ = estimator.model_state_bytes(data["tensor_shapes"], data["optimizer"], data["precision"], 0, 1)
    worlds = [{"world_size": w["world_size"], "device": w["device"], "backend": w["backend"],
               "modes": {mode: _mode_summary(mode, w["modes"][mode]["ranks"], data, w["world_size"])
                         for mode in w["modes"]}}
              for w in data["runs"]]
    largest = max(worlds, key=lambda w: w["world_size"])
    ddp = largest["modes"]["ddp"]
    top = {mode: {**row, "state_vs_ddp_ratio": row["state_max_bytes"] / ddp["state_max_bytes"],
                  "peak_vs_ddp_ratio": row["peak_max_bytes"] / ddp["peak_max_bytes"]}
           for mode, row in largest["modes"].items()}
    return {
        "scale_label": scale_label(data),
        "labels": {mode: LABELS[mode] for mode in largest["modes"]},
        "parameters": sum(estimator.formulas.numel(s) for s in data["tensor_shapes"]),
        "param_bytes": full["params"],
        "world_size": largest["world_size"],
        "backend": largest["backend"],
        "ddp_state_bytes": ddp["state_max_bytes"],
        "worlds": worlds,
        "top": top,  # every wrapper at the largest world size, beside DDP
    }

# %% [markdown]
# ## Figure: each rank's bytes against the rule

# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    colors = {"params": ("#4c72b0", "weights"), "grads": ("#dd8452", "gradients"),
              "optimizer": ("#55a868", "optimizer state")}
    ticks, labels, x = [], [], 0.0
    for row in summary["top"].values():
        bars = [(f"r{r['rank']}", r) for r in row["ranks"]] + [("rule", row["predicted_per_rank"])]
        for name, vals in bars:
            bottom = 0.0
            for key, (color, label) in colors.items():
                v = vals[f"{key}_bytes"] / 2**10
                ax.bar(x, v, 0.8, bottom=bottom, color=color, hatch="//" if name == "rule" else None,
                       edgecolor="white", label=label if not ticks else None)
                bottom += v
            if name != "rule":
                ax.plot(x, vals["peak_bytes"] / 2**10, "k_", ms=14, mew=2,
                        label="peak during the step" if not ticks else None)
            ticks.append(x)
            labels.append(f"{row['short_label']}\n{name}" if name == "r0" else name)
            x += 1
        x += 0.7
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.set_ylabel("KiB per rank")
    ax.set_title(f"AdamW fp32, world size {summary['world_size']} ({summary['backend']}): each rank, "
                 "and the ZeRO rule (hatched)", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, frameon=False)
    fig.tight_layout()
    return fig

# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
