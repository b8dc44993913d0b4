# %% [markdown]
"""Parallelism beyond data parallel, measured: per-rank bytes under tensor, sequence and pipeline parallelism.

Question: tensor parallelism (Megatron-LM, Shoeybi et al. 2019) splits each
layer's matrices over t ranks; sequence parallelism (Korthikanti et al. 2022)
also splits the norms' activations; pipeline parallelism (Narayanan et al.
2021) gives each rank a run of layers and several micro-batches in flight.
What does each rank really hold when PyTorch's own APIs do it: weights,
gradients, optimizer state, saved activations and the step's peak?

Method: real ``torch.distributed`` (gloo on CPU, NCCL where each rank has its
own GPU), one process per rank started with ``torch.multiprocessing`` (forked on
the CPU, see ``experiments.lib.ranks``; a 4-rank world runs even on 2 cores,
its ranks sharing them). A small
GPT-2-shaped model (learned positions, pre-LayerNorm blocks, separate Q, K, V
projections, GELU MLP, an untied output head; no dropout) whose tensors are
exactly those of a ``ModelShape`` the estimator reads. Cases, world size 2:
``torch.distributed.tensor.parallel`` with ColwiseParallel / RowwiseParallel
on attention, MLP, the vocabulary-sharded embedding and head (the plan of
PyTorch's TP tutorial and torchtitan), then with SequenceParallel on the norms;
``torch.distributed.pipelining`` with 2 stages and several micro-batches under
``ScheduleGPipe``, ``Schedule1F1B`` and ``ScheduleInterleaved1F1B`` (two virtual
stages per rank); and at world size 4 (a 2 x 2 mesh) FSDP2 ``fully_shard``
over the data-parallel dimension composed with tensor parallelism. Each rank
takes a warm-up step, then measures a second one with AdamW in fp32: local
shards of parameters, gradients and optimizer state (DTensor ``to_local``),
bytes saved for backward (``saved_tensors_hooks``, total and most alive at
once), and the step's peak by category (PyTorch's ``MemTracker``). A case that
an API refuses on this torch or backend is stored with its error, not faked.
``run`` stores the estimator's inputs beside each case; ``summarize`` asks the
torch-free estimator (``experiments.lib.estimator``) for its per-rank bytes at
build time and says which field it lacks when it cannot answer.

Run it: ``python -m experiments.parallelism --profile quick``.
"""

# %%
from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from experiments.lib import estimator  # summarize only: run does not reach it
from experiments.lib.host import cores
from experiments.lib.live_saved import LiveSavedCounter, local
from experiments.lib.memory import MemoryTracker, tensor_bytes
from experiments.lib.model_shapes import ModelShape
from experiments.lib.ranks import run_world

TIMEOUT_S = 600

# The cases, in the order of the page's tables: (world size, what runs).
CASES = {
    "tp": 2,              # tensor parallel: Colwise/Rowwise on attention, MLP, embedding and head
    "tp_sp": 2,           # ... plus SequenceParallel on the norms (activations sharded along the sequence)
    "pp_gpipe": 2,        # 2 pipeline stages, ScheduleGPipe: every micro-batch's forward, then every backward
    "pp_1f1b": 2,         # 2 stages, Schedule1F1B: at most pp micro-batches in flight on the first stage
    "pp_interleaved": 2,  # 4 stages, 2 per rank (looped), ScheduleInterleaved1F1B
    "fsdp_tp": 4,         # FSDP2 over dp=2 composed with TP over tp=2: a 2 x 2 mesh
}


@dataclass(frozen=True)
class Config:
    hidden: int = 128
    heads: int = 4
    layers: int = 4           # a multiple of 4: the interleaved schedule puts one layer or more on each of 4 stages
    vocab: int = 1024
    seq: int = 128
    batch: int = 8            # samples a rank's step sees (each TP rank the same ones; PP splits them into micro-batches)
    microbatches: int = 4
    cases: tuple = tuple(CASES)
    lr: float = 1e-3


PROFILES = {
    # the world-size-2 cases in one start of two interpreters (~2 s each, importing torch); no 4-rank world
    "test": Config(hidden=32, heads=2, layers=4, vocab=64, seq=8, batch=4, microbatches=4,
                   cases=("tp", "tp_sp", "pp_gpipe", "pp_1f1b", "pp_interleaved")),
    "quick": Config(),
    "full": Config(hidden=768, heads=12, layers=8, vocab=8192, seq=512, batch=8, microbatches=8),
    # gpu: the GPU plan's profile (generator/gpu_plan.py, STEPS), whose table is nearly full. One GPU cannot
    # hold two NCCL ranks, so the worlds run as CPU gloo ranks there as here; only the one-device reference
    # runs on the GPU. Small, and without the 4-rank world, to fit the plan's seconds.
    "gpu": Config(hidden=64, heads=2, layers=4, vocab=256, seq=32, batch=4, microbatches=4,
                  cases=("tp", "tp_sp", "pp_gpipe", "pp_1f1b", "pp_interleaved")),
}

# %% [markdown]
# ## The model: a GPT-2 shape the estimator knows
#
# ``model_shape`` is the estimator's description of the same tensors (GPT-2 with
# an untied head: ``wte``, ``wpe``, per block two LayerNorms, Q/K/V (the
# ``c_attn`` columns), the attention projection, the MLP, ``ln_f`` and
# ``lm_head``). Attention is ``scaled_dot_product_attention`` on the heads a
# rank holds, so the same code runs whole or tensor-parallel.

# %%
def model_shape(cfg: Config) -> ModelShape:
    return ModelShape(family="gpt2", hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, vocab=cfg.vocab,
                      positions=cfg.seq, tied_embeddings=False, dropout=False, name="parallelism GPT")


class Embeddings(nn.Module):
    """Token plus learned position embeddings. Under sequence parallelism the token embedding returns this
    rank's slice of the sequence, and ``pos_offset`` says where it starts."""

    def __init__(self, vocab: int, positions: int, hidden: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(positions, hidden)
        self.pos_offset = 0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx)
        x = x.to_local() if hasattr(x, "to_local") else x
        pos = torch.arange(self.pos_offset, self.pos_offset + x.shape[1], device=x.device)
        return x + self.pos(pos)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.head_dim = hidden // heads
        self.q, self.k, self.v = (nn.Linear(hidden, hidden) for _ in range(3))
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = (m(x).view(b, s, -1, self.head_dim).transpose(1, 2) for m in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # the heads this rank holds
        return self.proj(y.transpose(1, 2).reshape(b, s, -1))


class MLP(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, 4 * hidden)
        self.gelu = nn.GELU()
        self.proj = nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden)
        self.attn = Attention(hidden, heads)
        self.ln_2 = nn.LayerNorm(hidden)
        self.mlp = MLP(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Head(nn.Module):
    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.ln_f = nn.LayerNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.ln_f(x))


class GPT(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.emb = Embeddings(cfg.vocab, cfg.seq, cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg.hidden, cfg.heads) for _ in range(cfg.layers))
        self.head = Head(cfg.hidden, cfg.vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def build(cfg: Config) -> GPT:
    torch.manual_seed(0)
    return GPT(cfg)


def tensor_shapes(cfg: Config) -> list[list[int]]:
    with torch.device("meta"):
        return [list(p.shape) for p in GPT(cfg).parameters()]

# %% [markdown]
# ## Tensor and sequence parallelism: the plan
#
# Column-wise: Q, K, V and the MLP's first layer (weights and biases split by
# output rows), the head (split by vocabulary, logits gathered). Row-wise: the
# attention projection and the MLP's second layer (weights split by input
# columns, biases replicated), the token embedding (split by vocabulary).
# Without sequence parallelism the norms and the position embedding are
# ordinary replicated tensors; with it the norms become replicated DTensors
# that run on this rank's slice of the sequence, and the row-wise layers
# reduce-scatter into that slice instead of all-reducing.

# %%
def tp_plan(sp: bool) -> tuple[dict, dict]:
    """(the plan for each block, the plan for the model's ends), as ``parallelize_module`` takes them."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, RowwiseParallel,
                                                   SequenceParallel)

    seq = Shard(1)
    block = {"attn.q": ColwiseParallel(), "attn.k": ColwiseParallel(), "attn.v": ColwiseParallel(),
             "attn.proj": RowwiseParallel(output_layouts=seq) if sp else RowwiseParallel(),
             "mlp.fc": ColwiseParallel(),
             "mlp.proj": RowwiseParallel(output_layouts=seq) if sp else RowwiseParallel()}
    ends = {"emb.tok": RowwiseParallel(input_layouts=Replicate(), output_layouts=seq if sp else Replicate()),
            "head.lm_head": ColwiseParallel(input_layouts=seq if sp else Replicate(), output_layouts=Replicate())}
    if sp:
        gather = PrepareModuleInput(input_layouts=(seq,), desired_input_layouts=(Replicate(),))
        block.update({"ln_1": SequenceParallel(), "attn": gather, "ln_2": SequenceParallel(), "mlp": gather})
        ends["head.ln_f"] = SequenceParallel()
    return block, ends


def parallelize_tp(model: GPT, mesh, sp: bool) -> GPT:
    from torch.distributed.tensor.parallel import parallelize_module

    block_plan, ends_plan = tp_plan(sp)
    for block in model.blocks:
        parallelize_module(block, mesh, block_plan)
    parallelize_module(model, mesh, ends_plan)
    if sp:
        model.emb.pos_offset = mesh.get_local_rank() * (model.emb.pos.num_embeddings // mesh.size())
    return model

# %% [markdown]
# ## One measured step, whatever the parallelism
#
# ``step()`` runs forward and backward (a pipeline schedule does both); the
# warm-up creates the optimizer state, the second step is measured.

# %%
def local_bytes(tensors) -> int:
    return tensor_bytes([local(t) for t in tensors if t is not None])


def optimizer_state_tensors(opt: torch.optim.Optimizer) -> list:
    return [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]


def placement(t: torch.Tensor) -> str:
    return ", ".join(map(str, t.placements)) if hasattr(t, "placements") else "plain tensor"


def grads_unlike_params(named: list[tuple[str, torch.Tensor]]) -> dict:
    """Parameters whose gradient this rank holds in a different size from the parameter's own shard
    (a DTensor gradient placed unlike its parameter), by name: both sizes and both placements."""
    out = {}
    for name, p in named:
        if p.grad is None:
            continue
        pb, gb = (local(t).numel() * local(t).element_size() for t in (p, p.grad))  # FSDP2 grads share a buffer
        if pb != gb:
            out[name] = {"param_bytes": pb, "grad_bytes": gb, "param_placement": placement(p),
                         "grad_placement": placement(p.grad)}
    return out


def measure(modules: list[nn.Module], step, dev: torch.device, cfg: Config, fsdp: bool = False) -> dict:
    named = [(f"{i}.{n}" if len(modules) > 1 else n, p) for i, m in enumerate(modules) for n, p in m.named_parameters()]
    params = [p for _, p in named]
    # the for-loop AdamW on every device: the foreach kernels refuse a list mixing DTensors with the plain
    # tensors a plan leaves unsharded ("got mixed torch.Tensor and DTensor"), and CUDA would default to them
    opt = torch.optim.AdamW(params, lr=cfg.lr, foreach=False)
    step()
    opt.step()
    opt.zero_grad(set_to_none=True)
    tracker = MemoryTracker(dev).track(*modules, opt)
    with tracker:
        # FSDP2 swaps each unit's all-gathered weights onto the module while it runs: weights, not activations
        now = (lambda: [p for m in modules for p in m.parameters()]) if fsdp else None
        with LiveSavedCounter(exclude=params, parameters_now=now) as saved:
            loss = step()
        grads = local_bytes([p.grad for p in params])
        unlike = grads_unlike_params(named)
        opt.step()
        opt.zero_grad(set_to_none=True)
    out = {"params_bytes": local_bytes(params), "grads_bytes": grads,
           "optimizer_bytes": local_bytes(optimizer_state_tensors(opt)),
           "grads_unlike_params": unlike, "saved_total_bytes": saved.total_bytes, "saved_peak_bytes": saved.peak_live_bytes,
           "peak": tracker.peak().as_dict(), "loss": None if loss is None else float(loss.detach())}
    if tracker.cuda_max_allocated_bytes is not None:
        out["cuda_max_allocated_bytes"] = tracker.cuda_max_allocated_bytes
    return out


def batch(cfg: Config, seed: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq + 1), generator=g)
    return idx[:, :-1].to(dev), idx[:, 1:].to(dev)

# %% [markdown]
# ## The cases

# %%
@functools.lru_cache(maxsize=None)
def tp_mesh(device_type: str):
    """One 1-D mesh over the world for both TP cases: DTensor caches its sharding decisions per mesh, so the
    second case reuses what the first one worked out (each first call of an op costs milliseconds)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device_type, (dist.get_world_size(),), mesh_dim_names=("tp",))


def case_tp(cfg: Config, dev: torch.device, rank: int, sp: bool) -> dict:
    mesh = tp_mesh(dev.type)
    model = parallelize_tp(build(cfg).to(dev), mesh, sp)
    x, y = batch(cfg, 1, dev)   # every TP rank sees the same batch

    def step():
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss.detach()

    out = {"role": f"tp rank {mesh.get_local_rank()}", **measure([model], step, dev, cfg)}
    out["foreach_adamw_error"] = foreach_probe(model, step, cfg)
    return out


def foreach_probe(model: nn.Module, step, cfg: Config) -> str | None:
    """One step of AdamW with ``foreach=True`` (the default on CUDA) on the parallelized model: the
    error it raises on this torch, or None if it runs."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, foreach=True)
    step()
    try:
        opt.step()
        return None
    except (RuntimeError, NotImplementedError) as exc:
        return first_line(exc)
    finally:
        opt.zero_grad(set_to_none=True)


def stage_modules(model: GPT, n_stages: int) -> list[nn.Sequential]:
    """The model cut into ``n_stages`` runs of equal numbers of blocks: the embedding goes with the first,
    the final norm and head with the last."""
    per = len(model.blocks) // n_stages
    out = []
    for i in range(n_stages):
        parts = ([model.emb] if i == 0 else []) + list(model.blocks[i * per:(i + 1) * per]) \
            + ([model.head] if i == n_stages - 1 else [])
        out.append(nn.Sequential(*parts))
    return out


def case_pp(cfg: Config, dev: torch.device, rank: int, schedule: str) -> dict:
    from torch.distributed import pipelining as pl

    world = dist.get_world_size()
    virtual = 2 if schedule == "interleaved" else 1
    n_stages = world * virtual
    chunks = stage_modules(build(cfg).to(dev), n_stages)
    mine = [rank + world * v for v in range(virtual)]  # looped placement: rank r holds stages r, r + world
    stages = [pl.PipelineStage(chunks[i], i, n_stages, dev) for i in mine]
    if schedule == "interleaved":
        sched = pl.ScheduleInterleaved1F1B(stages, n_microbatches=cfg.microbatches, loss_fn=loss_fn)
    else:
        kind = {"gpipe": pl.ScheduleGPipe, "1f1b": pl.Schedule1F1B}[schedule]
        sched = kind(stages[0], n_microbatches=cfg.microbatches, loss_fn=loss_fn)
    x, y = batch(cfg, 1, dev)
    first, last = 0 in mine, n_stages - 1 in mine

    def step():
        losses = [] if last else None
        args = (x,) if first else ()
        sched.step(*args, target=y if last else None, losses=losses)
        return torch.stack(losses).mean() if last else None

    return {"role": "stages " + ", ".join(map(str, mine)), "stages": mine,
            **measure([chunks[i] for i in mine], step, dev, cfg)}


def case_fsdp_tp(cfg: Config, dev: torch.device, rank: int) -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(dev.type, (2, dist.get_world_size() // 2), mesh_dim_names=("dp", "tp"))
    model = parallelize_tp(build(cfg).to(dev), mesh["tp"], sp=False)
    for block in model.blocks:
        fully_shard(block, mesh=mesh["dp"])
    fully_shard(model, mesh=mesh["dp"])
    dp_rank = mesh["dp"].get_local_rank()
    x, y = batch(cfg, 1 + dp_rank, dev)  # each data-parallel group its own batch

    def step():
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss.detach()

    return {"role": f"dp {dp_rank}, tp {mesh['tp'].get_local_rank()}", **measure([model], step, dev, cfg, fsdp=True)}


def run_case(name: str, cfg: Config, dev: torch.device, rank: int) -> dict:
    if name in ("tp", "tp_sp"):
        return case_tp(cfg, dev, rank, sp=name == "tp_sp")
    if name.startswith("pp_"):
        return case_pp(cfg, dev, rank, name[3:])
    return case_fsdp_tp(cfg, dev, rank)

# %% [markdown]
# ## Ranks: one spawned process each, every case of the world in turn

# %%
def first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300]


def _worker(rank: int, world_size: int, port: int, cfg_dict: dict, names: list, device: str, out_dir: str) -> None:
    """One rank: every case of ``names`` in turn, results to ``out_dir/rank<r>.json``."""
    torch.set_num_threads(1)
    cfg = Config(**cfg_dict)
    dev = torch.device(f"cuda:{rank}") if device.startswith("cuda") else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world_size, timeout=timedelta(seconds=120))
    results = {}
    try:
        for i, name in enumerate(names):
            start = time.perf_counter()
            try:
                results[name] = {"ok": True, "rank": rank, **run_case(name, cfg, dev, rank)}
            except Exception as exc:  # an API this torch or backend refuses: a finding, stored with its error
                results[name] = {"ok": False, "rank": rank, "error": first_line(exc)}
            results[name]["case_s"] = time.perf_counter() - start
            try:
                dist.barrier()
            except Exception as exc:  # the world broke (a rank gone, a timeout): the cases left cannot run
                for rest in names[i + 1:]:
                    results[rest] = {"ok": False, "rank": rank, "case_s": 0.0,
                                     "error": f"not run: the world failed after {name} ({first_line(exc)})"}
                break
    finally:
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as f:
            json.dump(results, f)
        dist.destroy_process_group()


def import_parallel_apis() -> None:
    """Import the parallel packages once, here: forked ranks inherit them (see experiments.lib.ranks)."""
    import torch.distributed.fsdp  # noqa: F401
    import torch.distributed.pipelining  # noqa: F401
    import torch.distributed.tensor.parallel  # noqa: F401

# %% [markdown]
# ## Run: the single-device reference, then each world's cases, and the estimator's inputs

# %%
def estimator_inputs(name: str, cfg: Config, device: str) -> dict:
    """What the estimator needs to size this case per rank (``Setup`` fields by their names)."""
    base = {"optimizer": "adamw", "precision": "fp32", "optimizer_impl": "for-loop", "batch": cfg.batch,
            "seq": cfg.seq, "device": "cuda" if device.startswith("cuda") else "cpu", "attention": "sdpa",
            "zero": 0, "gpus": 1}
    if name == "single":
        return base
    if name in ("tp", "tp_sp"):
        return {**base, "tp": 2, "sequence_parallel": name == "tp_sp"}
    if name == "fsdp_tp":
        return {**base, "tp": 2, "zero": 3, "gpus": 2}
    schedule = name[3:]   # "gpipe", "1f1b", "interleaved": the estimator says which it does not model
    return {**base, "batch": cfg.batch // cfg.microbatches, "pp": 2, "microbatches": cfg.microbatches,
            "schedule": schedule, "virtual_stages": 2 if schedule == "interleaved" else 1}


def single(cfg: Config, device: str) -> dict:
    dev = torch.device(device)
    model = build(cfg).to(dev)
    x, y = batch(cfg, 1, dev)

    def step():
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss.detach()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {"ok": True, "rank": 0, "role": "one device", **measure([model], step, dev, cfg)}
    finally:
        torch.set_num_threads(threads)


def check(cfg: Config) -> None:
    unknown = [c for c in cfg.cases if c not in CASES]
    if unknown:
        raise ValueError(f"Config.cases: unknown case {unknown[0]!r} (one of {', '.join(CASES)})")
    if cfg.layers % 4 or cfg.hidden % cfg.heads or (cfg.heads % 2) or cfg.seq % 2 or cfg.vocab % 2:
        raise ValueError("Config: layers must be a multiple of 4, and heads, seq and vocab even (two TP ranks)")
    if cfg.batch % cfg.microbatches:
        raise ValueError(f"Config.microbatches ({cfg.microbatches}) must divide Config.batch ({cfg.batch})")


def run(cfg: Config, device: str) -> dict:
    check(cfg)
    cases, skipped = {}, {}
    gpus = torch.cuda.device_count() if device.startswith("cuda") and torch.cuda.is_available() else 0
    # gloo ranks time-share the cores: the small models keep a 4-rank world (the 2 x 2 mesh) to seconds on 2 cores
    limit = max(4, cores())
    for ws in sorted({CASES[c] for c in cfg.cases}):
        names = [c for c in cfg.cases if CASES[c] == ws]
        dev = device if ws <= gpus else "cpu"
        if dev == "cpu" and ws > limit:
            for c in names:
                skipped[c] = f"needs {ws} ranks; this host has {cores()} cores"
            continue
        import_parallel_apis()
        ranks = run_world(_worker, (asdict(cfg), names, dev), ws, dev, prefix="parallelism-")
        for c in names:
            cases[c] = {"world_size": ws, "backend": "nccl" if dev.startswith("cuda") else "gloo",
                        "device": dev, "ranks": [r[c] for r in ranks]}
    # after the worlds: a CUDA context in this process would not survive the fork that starts CPU ranks
    cases["single"] = {"world_size": 1, "backend": None, "device": device, "ranks": [single(cfg, device)]}
    for c in cases:
        cases[c]["estimator_inputs"] = estimator_inputs(c, cfg, cases[c]["device"])
    return {
        "optimizer": "adamw", "precision": "fp32",
        "shape": model_shape(cfg).as_dict(),
        "tensor_shapes": tensor_shapes(cfg),
        "batch": cfg.batch, "seq": cfg.seq, "microbatches": cfg.microbatches,
        "cases": {c: cases[c] for c in ["single", *cfg.cases] if c in cases},
        "skipped": skipped,
    }

# %% [markdown]
# ## Derived at build time: each case's busiest rank, the rules, the estimator's answer
#
# For every case: each rank's state (weights + gradients + optimizer state),
# saved activations (the most alive at once) and peak, the busiest rank
# against the single device, and the estimator's per-rank prediction with
# the measured/predicted ratio, or why there is none. For the pipeline
# schedules, the micro-batches in flight on each rank: the most saved bytes
# alive at once over one micro-batch's share of everything the stage saved,
# beside the schedules' rule. For sequence parallelism, what it saved
# beside what sharding the norms' four sbh terms would save.

# %%
LABELS = {
    "single": "one device (no parallelism)",
    "tp": "tensor parallel, t = 2 (Colwise/Rowwise)",
    "tp_sp": "tensor + sequence parallel, t = 2",
    "pp_gpipe": "pipeline, 2 stages, GPipe",
    "pp_1f1b": "pipeline, 2 stages, 1F1B",
    "pp_interleaved": "pipeline, 2 ranks x 2 virtual stages, interleaved 1F1B",
    "fsdp_tp": "FSDP2 (dp = 2) x tensor parallel (t = 2)",
}
SHORT = {"single": "1 device", "tp": "TP", "tp_sp": "TP+SP", "pp_gpipe": "PP GPipe", "pp_1f1b": "PP 1F1B",
         "pp_interleaved": "PP interl.", "fsdp_tp": "FSDP2xTP"}
QUANTITIES = ("params", "grads", "optimizer", "activations")
SETUP_FIELDS = ("tp", "sequence_parallel", "pp", "microbatches", "schedule", "virtual_stages")


def predict(inputs: dict, shape: dict) -> dict:
    """The estimator's per-rank bytes for one case, or why it has none (a field its Setup lacks, or a refusal)."""
    import dataclasses as dc

    fields = {f.name for f in dc.fields(estimator.Setup)}
    missing = [k for k in inputs if k not in fields]
    if missing:
        return {"available": False, "reason": f"no prediction: the estimator lacks {missing[0]}"}
    try:
        setup = estimator.Setup(**inputs)
        est = estimator.estimate(setup, shape=estimator.ModelShape(**shape))
    except TypeError as exc:
        return {"available": False, "reason": f"no prediction: the estimator lacks {str(exc).split()[-1].strip(chr(39))}"}
    except ValueError as exc:  # EstimateError, ShapeError: one line naming the field
        return {"available": False, "reason": f"no prediction: {str(exc).splitlines()[0]}"}
    per = est["per_device_bytes"]
    out = {"available": True, "reason": None, **{f"{k}_bytes": int(per.get(k, 0)) for k in QUANTITIES},
           "peak_bytes": int(est.get("peak_bytes", per.get("total", 0)))}
    out["state_bytes"] = out["params_bytes"] + out["grads_bytes"] + out["optimizer_bytes"]
    return out


def in_flight_rule(case: str, stage_rank: int, pp: int, microbatches: int, virtual: int) -> float:
    """Micro-batches whose activations a rank holds at once, in units of one micro-batch through its stages.

    GPipe: every micro-batch's forward runs before any backward (Huang et al. 2019), so all M.
    1F1B: rank i of p runs p - i warm-up forwards before its first backward (Narayanan et al. 2021,
    section 2.2, PipeDream-Flush), so at most min(p - i, M). Interleaved with v virtual stages per rank:
    the first rank holds p(1 + (p - 1)/(p v)) stages' worth (Korthikanti et al. 2022, section 4.2.3,
    from Narayanan et al. 2021's schedule), the last as 1F1B's.
    """
    if case == "pp_gpipe":
        return float(microbatches)
    if case == "pp_1f1b":
        return float(min(pp - stage_rank, microbatches))
    if stage_rank == 0:
        return min(pp * (1 + (pp - 1) / (pp * virtual)), float(microbatches))
    return None


def _row(r: dict) -> dict:
    state = r["params_bytes"] + r["grads_bytes"] + r["optimizer_bytes"]
    return {"rank": r["rank"], "role": r["role"], "params_bytes": r["params_bytes"], "grads_bytes": r["grads_bytes"],
            "optimizer_bytes": r["optimizer_bytes"], "state_bytes": state,
            "activations_bytes": r["saved_peak_bytes"], "saved_total_bytes": r["saved_total_bytes"],
            "peak_bytes": r["peak"]["total_bytes"], "peak_activations_bytes": r["peak"]["activations_bytes"],
            "grads_unlike_params": r.get("grads_unlike_params", {})}


def _case_summary(name: str, case: dict, data: dict, alone: dict | None) -> dict:
    ranks = case["ranks"]
    out = {"label": LABELS[name], "short_label": SHORT[name], "world_size": case["world_size"],
           "backend": case["backend"], "ok": all(r["ok"] for r in ranks), "ran": True}
    if not out["ok"]:
        bad = next(r for r in ranks if not r["ok"])
        out.update(error=bad["error"], ranks=[], in_flight=[],
                   prediction={"available": False, "reason": "did not run here"})
        return out
    rows = [_row(r) for r in ranks]
    top = {f"{k}_bytes": max(r[f"{k}_bytes"] for r in rows) for k in ("params", "grads", "optimizer", "state",
                                                                        "activations", "peak")}
    busiest = max(rows, key=lambda r: r["peak_bytes"])
    out.update(ranks=rows, max=top, busiest_rank=busiest["rank"], busiest_role=busiest["role"])
    pred = predict(case["estimator_inputs"], data["shape"])
    if pred["available"]:
        for k in ("params", "grads", "optimizer", "state", "activations", "peak"):
            p = pred[f"{k}_bytes"]
            pred[f"{k}_measured_over_predicted_ratio"] = top[f"{k}_bytes"] / p if p else None
    out["prediction"] = pred
    if alone is not None:
        out["vs_single"] = {f"{k}_ratio": top[f"{k}_bytes"] / alone["max"][f"{k}_bytes"]
                            for k in ("params", "grads", "optimizer", "state", "activations", "peak")}
    out["in_flight"] = []
    if name.startswith("pp_"):
        m, pp = data["microbatches"], 2
        virtual = 2 if name == "pp_interleaved" else 1
        flight = []
        for i, r in enumerate(rows):   # rank i holds stage i (and i + p when interleaved)
            measured = r["activations_bytes"] / (r["saved_total_bytes"] / m)
            rule = in_flight_rule(name, i, pp, m, virtual)
            flight.append({"rank": r["rank"], "measured": measured, "rule": rule,
                           "measured_over_rule_ratio": measured / rule if rule else None})
        out["in_flight"] = flight
    unlike = {}
    for r in rows:
        for pname, v in r["grads_unlike_params"].items():
            unlike.setdefault(pname, v)
    out["grads_unlike_params"] = unlike
    probed = [r for r in ranks if "foreach_adamw_error" in r]   # the TP case tries foreach AdamW once
    out["foreach_adamw"] = {"probed": bool(probed),
                            "error": next((r["foreach_adamw_error"] for r in probed if r["foreach_adamw_error"]), None)}
    out["grads_over_params_ratio"] = top["grads_bytes"] / top["params_bytes"]
    return out


def sp_rule(data: dict) -> dict:
    """What sequence parallelism should save per rank by the rule: the norms' 4 sbh per layer (input and
    output of both) and the final norm's 2 sbh, each now split over t (Korthikanti et al. 2022, 4.2.2)."""
    shape, t, e = data["shape"], 2, 4   # fp32
    sbh = data["seq"] * data["batch"] * shape["hidden"]
    return {"rule_saving_bytes": (4 * shape["layers"] + 2) * e * sbh * (t - 1) // t,
            "inputs_only_saving_bytes": (2 * shape["layers"] + 1) * e * sbh * (t - 1) // t}


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size."""
    s = data["shape"]
    params = sum(estimator.formulas.numel(x) for x in data["tensor_shapes"])
    worlds = sorted({c["world_size"] for c in data["cases"].values() if c["world_size"] > 1})
    return (f"{s['layers']}-layer GPT-2-shaped model, hidden {s['hidden']}, {params:,} params, batch {data['batch']} "
            f"x seq {data['seq']}, AdamW fp32, {' and '.join(map(str, worlds))} gloo ranks")


def takeaway(out: dict) -> dict:
    """The few figures the chapter opens with (None where their case did not run here)."""
    def pick(case: str, *path):
        if not out[case]["ok"]:
            return None
        value = out[case]
        for key in path:
            value = value[key]
        return value

    return {"tp_state_ratio": pick("tp", "vs_single", "state_ratio"),
            "tp_activations_ratio": pick("tp", "vs_single", "activations_ratio"),
            "sp_activations_ratio": pick("tp_sp", "vs_single", "activations_ratio"),
            "tp_peak_ratio": pick("tp", "vs_single", "peak_ratio"),
            "gpipe_in_flight": pick("pp_gpipe", "in_flight", 0, "measured"),
            "onef1b_in_flight": pick("pp_1f1b", "in_flight", 0, "measured"),
            "interleaved_in_flight": pick("pp_interleaved", "in_flight", 0, "measured"),
            "onef1b_activations_ratio": pick("pp_1f1b", "vs_single", "activations_ratio"),
            "gpipe_activations_ratio": pick("pp_gpipe", "vs_single", "activations_ratio"),
            "fsdp_tp_state_ratio": pick("fsdp_tp", "vs_single", "state_ratio")}


def summarize(data: dict) -> dict:
    cases = data["cases"]
    alone = _case_summary("single", cases["single"], data, None)
    out = {"single": alone}
    for name, world in CASES.items():   # every case, in table order; one that did not run says why
        if name in cases:
            out[name] = _case_summary(name, cases[name], data, alone)
        else:
            why = data["skipped"].get(name, "not in this profile")
            out[name] = {"label": LABELS[name], "short_label": SHORT[name], "world_size": world, "backend": None,
                         "ok": False, "ran": False, "error": f"not run here: {why}", "ranks": [], "in_flight": [],
                         "prediction": {"available": False, "reason": "did not run here"}}
    findings = {name: c["error"] for name, c in out.items() if not c["ok"]}
    n = sum(estimator.formulas.numel(s) for s in data["tensor_shapes"])
    summary = {"scale_label": scale_label(data), "labels": {k: LABELS[k] for k in out}, "cases": out,
               "findings": findings,
               "parameters": n, "param_bytes": 4 * n,
               "predictions_available": sum(1 for c in out.values() if c["prediction"]["available"]),
               "prediction_reasons": sorted({c["prediction"]["reason"] for c in out.values()
                                             if not c["prediction"]["available"]})}
    summary["takeaway"] = takeaway(out)
    summary["sequence_parallel"] = None
    if out["tp"]["ok"] and out["tp_sp"]["ok"]:
        rule = sp_rule(data)
        saved = out["tp"]["max"]["activations_bytes"] - out["tp_sp"]["max"]["activations_bytes"]
        summary["sequence_parallel"] = {**rule, "measured_saving_bytes": saved,
                                        "measured_over_rule_ratio": saved / rule["rule_saving_bytes"],
                                        "measured_over_inputs_only_ratio": saved / rule["inputs_only_saving_bytes"]}
    return summary

# %% [markdown]
# ## Figure: the busiest rank of each case, by kind of bytes

# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    colors = {"params": ("#4c72b0", "weights"), "grads": ("#dd8452", "gradients"),
              "optimizer": ("#55a868", "optimizer state"), "activations": ("#c44e52", "saved activations (most alive)")}
    names = [n for n, c in summary["cases"].items() if c["ok"]]
    for x, name in enumerate(names):
        case = summary["cases"][name]
        row = next(r for r in case["ranks"] if r["rank"] == case["busiest_rank"])
        bottom = 0.0
        for key, (color, label) in colors.items():
            v = row[f"{key}_bytes"] / 2**20
            ax.bar(x, v, 0.7, bottom=bottom, color=color, label=label if x == 0 else None)
            bottom += v
        ax.plot(x, row["peak_bytes"] / 2**20, "k_", ms=16, mew=2, label="peak during the step" if x == 0 else None)
        pred = case["prediction"]
        if pred["available"]:
            ax.plot(x + 0.42, pred["peak_bytes"] / 2**20, "v", color="#8172b3", ms=7,
                    label="estimator's peak" if not any(summary["cases"][m]["prediction"]["available"]
                                                       for m in names[:x]) else None)
    ax.set_xticks(range(len(names)), [summary["cases"][n]["short_label"] for n in names], fontsize=8)
    ax.set_ylabel("MiB on the busiest rank")
    ax.set_title(f"AdamW fp32, {summary['parameters'] / 1e6:.2f} M-param GPT-2-shaped model: the busiest rank "
                 "of each layout", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    fig.tight_layout()
    return fig

# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
