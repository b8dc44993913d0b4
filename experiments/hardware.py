# %%
"""What can this host do at best? Achievable matmul throughput, memory bandwidth, and (on CUDA) memory overheads.

Question: every other chapter reports times and bytes; what scale do they
have on this host? How fast can a matrix multiply run in each format, how fast
does memory move, and what does CUDA hold that no tensor owns?

Method: on the device it is given, the experiment measures

- **Matrix-multiply throughput** for fp32, tf32, bf16 and fp16 over a sweep of
  shapes, in the spirit of Stas Bekman's "maximum achievable matmul FLOPS"
  (MAMF) finder: a datasheet peak is not what a real kernel reaches, and the
  best shape is not necessarily the biggest. FLOPs of one ``(m, k) @ (k, n)``
  product are ``2 m n k``; a FlopCounterMode count checks that figure. tf32 is
  a CUDA tensor-core mode (``torch.set_float32_matmul_precision("high")``); on
  a CPU it is recorded as not applicable. Shapes run smallest first; a dtype
  whose single call takes longer than ``max_call_s`` (fp16 on most CPUs) stops
  its sweep there and lists the shapes it skipped. Beside the speed, the
  relative error of one product against float64 shows what each format costs
  in accuracy, next to its unit roundoff.
- **Memory bandwidth**: ``dst.copy_(src)`` over a sweep of sizes; each copy
  reads and writes the buffer, so the bytes moved are twice its size. The
  largest size, far beyond any cache, is the device's bandwidth. The best
  matmul rate over it is the roofline's ridge point (FLOPs per byte).
- **A training step** of a small MLP with AdamW: its time and FLOPs (so a step
  can be read as a share of the best fp32 matmul), and the memory tracker's
  peak by category beside the predicted persistent state (parameters,
  gradients, AdamW moments).
- **On CUDA only**: the memory the CUDA context takes before any tensor
  exists (``torch.cuda.mem_get_info`` in a fresh process, minus what the
  caching allocator reserved), the allocator's reserved against allocated bytes
  after the training step, and the agreement between the handbook's memory
  tracker and ``torch.cuda.max_memory_allocated`` on that step.
- **How busy the CPU was**: a background thread counts the runnable tasks
  (``experiments.lib.load``), so figures measured on a shared machine are
  flagged as lower bounds.

``run`` stores what was measured; ``summarize`` picks the best shapes, the
speed-ups, ridge points, ratios, verdicts and units the page shows.

Run it: ``python -m experiments.hardware --profile quick`` (CPU, seconds) or
``--profile full`` on a GPU host. The runner starts each experiment in a fresh
process, so the CUDA context figure is measured before anything else touched
the GPU.
"""

# %%
from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Callable

import torch

from experiments.lib.flops import count_flops
from experiments.lib.formulas import DTYPE_BYTES, optimizer_state_bytes as predicted_optimizer_state_bytes
from experiments.lib.host import cores
from experiments.lib.load import LoadSampler
from experiments.lib.load import busy  # summarize only: a separate import keeps it out of the cache key
from experiments.lib.memory import MemoryTracker, grad_bytes, optimizer_state_bytes, param_bytes
from experiments.lib.timing import time_fn
from experiments.lib.units import iec_bytes  # summarize only

DTYPES = ("fp32", "tf32", "bf16", "fp16")
TORCH_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

ACCURACY_SHAPE = (128, 128, 1024)  # (m, n, k) of the product whose error against float64 is measured

TIMEOUT_S = 900


@dataclass(frozen=True)
class Config:
    shapes: tuple[tuple[int, int, int], ...]  # (m, n, k) of each matmul, any order (swept by FLOPs)
    dtypes: tuple[str, ...] = DTYPES
    min_run_time_s: float = 0.2  # torch.utils.benchmark time per shape
    max_call_s: float = 1.0  # a dtype whose single call takes longer stops its sweep
    copy_sizes_bytes: tuple[int, ...] = (2**20, 2**26)
    train_width: int = 256  # MLP width h; each block is Linear(h, 4h), GELU, Linear(4h, h)
    train_blocks: int = 2
    train_batch: int = 64
    seed: int = 0


def _squares(*sizes: int) -> tuple[tuple[int, int, int], ...]:
    return tuple((s, s, s) for s in sizes)


# Squares from small to large, plus misaligned neighbours (8191, 8193) and rectangular shapes of
# transformer layers (QKV, MLP up and down projections).
FULL_SHAPES = (_squares(512, 1024, 2048, 3072, 4096, 6144, 8192, 8191, 8193, 10240, 12288, 16384)
               + ((16384, 4096, 4096), (16384, 12288, 4096), (16384, 16384, 4096), (16384, 4096, 16384),
                  (8192, 11008, 4096), (8192, 4096, 11008)))

PROFILES = {
    "test": Config(
        shapes=((32, 32, 32), (16, 16, 16), (64, 48, 32)),
        min_run_time_s=0.01,
        max_call_s=0.5,
        copy_sizes_bytes=(2**16, 2**12),
        train_width=16,
        train_blocks=2,
        train_batch=8,
    ),
    "quick": Config(
        shapes=_squares(64, 128, 256, 500, 512, 1024),
        min_run_time_s=0.03,
        max_call_s=0.05,
        copy_sizes_bytes=(2**16, 2**20, 2**23, 2**26),
        train_width=128,
        train_blocks=2,
        train_batch=64,
    ),
    "full": Config(
        shapes=FULL_SHAPES,
        min_run_time_s=0.2,
        max_call_s=2.0,
        copy_sizes_bytes=(2**20, 2**22, 2**24, 2**26, 2**28, 2**30, 2**32),
        train_width=2048,
        train_blocks=8,
        train_batch=4096,
    ),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    # Full's shapes, copies and training step (the bf16 best and the tracker's agreement need them), timed
    # 0.1 s a point instead of 0.2.
    "gpu": Config(
        shapes=FULL_SHAPES,
        min_run_time_s=0.1,
        max_call_s=1.0,
        copy_sizes_bytes=(2**20, 2**22, 2**24, 2**26, 2**28, 2**30, 2**32),
        train_width=2048,
        train_blocks=8,
        train_batch=4096,
    ),
}


# %% [markdown]
# ## Helpers: synchronising clocks and the fp32 matmul precision

# %%
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _matmul_precision:
    """Set ``torch.set_float32_matmul_precision`` inside a block, restore it after.

    "highest" keeps fp32 matmuls in full fp32; "high" lets CUDA tensor cores run
    them in tf32 (PyTorch docs, "TensorFloat-32 (TF32) on Ampere (and later)
    devices"). It is the public API in every torch from 1.12 on.
    """

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.previous = "highest"

    def __enter__(self) -> None:
        self.previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(self.precision)

    def __exit__(self, *exc: object) -> None:
        torch.set_float32_matmul_precision(self.previous)


def _by_flops(shapes: tuple[tuple[int, int, int], ...]) -> list[tuple[int, int, int]]:
    return sorted({tuple(int(x) for x in s) for s in shapes}, key=lambda s: (s[0] * s[1] * s[2], s))


# %% [markdown]
# ## Matmul throughput over a sweep of shapes

# %%
def _one_shape(m: int, n: int, k: int, name: str, device: torch.device, cfg: Config,
               best_gflop_per_s: float) -> dict | None:
    """Time ``a @ b`` into a preallocated output; None when one call would exceed ``max_call_s``.

    A shape predicted (at the best rate so far) to take over twenty times the
    limit is not even tried; otherwise one probe call decides. The probe, not
    the prediction, has the last word: on a busy CPU a small matmul can be
    slow for reasons that do not grow with its size (a preempted thread).
    """
    dtype = TORCH_DTYPES[name]
    flops = 2 * m * n * k
    if best_gflop_per_s > 0 and flops / (best_gflop_per_s * 1e9) > 20 * cfg.max_call_s:
        return None
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    a = torch.randn(m, k, generator=gen, device=device, dtype=torch.float32).to(dtype)
    b = torch.randn(k, n, generator=gen, device=device, dtype=torch.float32).to(dtype)
    c = torch.empty(m, n, device=device, dtype=dtype)
    fn: Callable[[], object] = lambda: torch.mm(a, b, out=c)  # noqa: E731
    fn()  # first call: kernel selection, library load
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    if best_gflop_per_s > 0 and time.perf_counter() - t0 > cfg.max_call_s:
        return None  # the smallest shape always runs, so every measured dtype has a point
    t = time_fn(fn, min_run_time_s=cfg.min_run_time_s)
    return {"m": m, "n": n, "k": k, "flops": flops, **t, "gflop_per_s": flops / (t["median_ms"] * 1e-3) / 1e9}


def _sweep_dtype(name: str, device: torch.device, cfg: Config) -> dict:
    """Every shape from small to large until one call is too slow: that stops the sweep (larger ones are slower)."""
    if name == "tf32" and device.type != "cuda":
        return {"status": "not_applicable", "points": [], "skipped_shapes": []}
    dtype = TORCH_DTYPES[name]
    points: list[dict] = []
    skipped: list[list[int]] = []
    shapes = _by_flops(cfg.shapes)
    with _matmul_precision("high" if name == "tf32" else "highest"):
        for i, (m, n, k) in enumerate(shapes):
            best_rate = max((p["gflop_per_s"] for p in points), default=0.0)
            try:
                point = _one_shape(m, n, k, name, device, cfg, best_rate)
            except (RuntimeError, NotImplementedError) as exc:  # e.g. bf16 on a GPU without it
                if points:
                    raise
                return {"status": "unsupported", "error_type": type(exc).__name__, "points": [],
                        "skipped_shapes": [list(s) for s in shapes]}
            if point is None:  # too slow: larger shapes would be slower still
                skipped = [list(s) for s in shapes[i:]]
                break
            points.append(point)
        accuracy = _accuracy(dtype, name, device, cfg)
    return {"status": "measured", "accuracy": accuracy, "points": points, "skipped_shapes": skipped}


def unit_roundoff(name: str) -> float:
    """Half the machine epsilon of the format: the largest relative error of rounding one number.

    tf32 has no torch dtype; it keeps fp16's 10 explicit mantissa bits (NVIDIA,
    "TensorFloat-32 in the A100 GPU"), so its unit roundoff is fp16's.
    """
    return float(torch.finfo(torch.float16 if name == "tf32" else TORCH_DTYPES[name]).eps) / 2


def _accuracy(dtype: torch.dtype, name: str, device: torch.device, cfg: Config) -> dict:
    """Relative error of one product against float64, inputs drawn in fp32 and rounded to ``dtype``.

    It shows what the speed costs, and on CUDA that tf32 really was in effect
    (its error is far above fp32's).
    """
    m, n, k = ACCURACY_SHAPE
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    a = torch.randn(m, k, generator=gen, device=device)
    b = torch.randn(k, n, generator=gen, device=device)
    ref = a.double() @ b.double()
    got = (a.to(dtype) @ b.to(dtype)).double()
    rel = float((got - ref).norm() / ref.norm())
    return {"m": m, "n": n, "k": k, "rel_error": rel, "unit_roundoff": unit_roundoff(name)}


def _flop_count_check(device: torch.device) -> dict:
    """FlopCounterMode's count of one small matmul against the closed form 2mnk."""
    m, n, k = 48, 40, 32
    a = torch.ones(m, k, device=device)
    b = torch.ones(k, n, device=device)
    return {"m": m, "n": n, "k": k, "predicted_flops": 2 * m * n * k, "counted_flops": count_flops(lambda: a @ b)}


def measure_matmul(device: torch.device, cfg: Config) -> dict:
    out: dict = {"dtypes": list(cfg.dtypes)}
    for name in cfg.dtypes:
        out[name] = _sweep_dtype(name, device, cfg)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out["flop_count_check"] = _flop_count_check(device)
    return out


# %% [markdown]
# ## Memory bandwidth: a copy reads and writes every byte

# %%
def measure_bandwidth(device: torch.device, cfg: Config) -> dict:
    points = []
    for size in sorted(set(cfg.copy_sizes_bytes)):
        src = torch.ones(size // 4, device=device, dtype=torch.float32)
        dst = torch.empty_like(src)
        t = time_fn(lambda: dst.copy_(src), min_run_time_s=cfg.min_run_time_s)
        moved = 2 * src.nbytes
        points.append({"bytes": src.nbytes, "moved_bytes": moved, **t,
                       "gb_per_s": moved / (t["median_ms"] * 1e-3) / 1e9})
        del src, dst
    return {"points": points}


# %% [markdown]
# ## A training step: its time and FLOPs, memory by category against the prediction

# %%
def _model(cfg: Config, device: torch.device) -> torch.nn.Module:
    h = cfg.train_width
    blocks = []
    for _ in range(cfg.train_blocks):
        blocks += [torch.nn.Linear(h, 4 * h), torch.nn.GELU(), torch.nn.Linear(4 * h, h)]
    return torch.nn.Sequential(*blocks).to(device)


def _cuda_allocator(device: torch.device) -> dict:
    stats = torch.cuda.memory_stats(device)
    return {
        "allocated_bytes": int(torch.cuda.memory_allocated(device)),
        "reserved_bytes": int(torch.cuda.memory_reserved(device)),
        "inactive_split_bytes": int(stats.get("inactive_split_bytes.all.current", 0)),
        "max_allocated_bytes": int(torch.cuda.max_memory_allocated(device)),
        "max_reserved_bytes": int(torch.cuda.max_memory_reserved(device)),
    }


def measure_train_step(device: torch.device, cfg: Config) -> dict:
    torch.manual_seed(cfg.seed)
    is_cuda = device.type == "cuda"
    gc.collect()
    if is_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    model = _model(cfg, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    h, b = cfg.train_width, cfg.train_batch
    x = torch.randn(b, h, device=device)
    target = torch.randn(b, h, device=device)

    def forward_backward() -> None:
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()

    def step() -> None:
        forward_backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # creates the AdamW state
    shapes = [tuple(p.shape) for p in model.parameters()]
    n_params = sum(p.numel() for p in model.parameters())
    weights = sum(p.numel() for p in model.parameters() if p.dim() == 2)
    predicted_state = {
        "params_bytes": n_params * DTYPE_BYTES["fp32"],
        "grads_bytes": n_params * DTYPE_BYTES["fp32"],
        "optimizer_bytes": predicted_optimizer_state_bytes("adamw", shapes),
    }
    # Forward 2 and backward 4 FLOPs per weight and sample, less the first layer's
    # input gradient (2 per weight and sample): x does not require grad.
    first = cfg.train_width * 4 * cfg.train_width
    flops_predicted = 6 * weights * b - 2 * first * b
    flops_counted = count_flops(forward_backward)
    opt.zero_grad(set_to_none=True)
    timing = time_fn(step, min_run_time_s=cfg.min_run_time_s)

    # The measured step: tracked from a clean state (grads freed, AdamW state present).
    if is_cuda:
        torch.cuda.synchronize(device)
    with MemoryTracker(device).track(model, opt, x, target) as mt:
        # Allocated bytes the tracker cannot see: tensors that exist but were not handed to
        # it, chiefly the cuBLAS workspaces (one per handle and stream; backward runs on its
        # own thread, so it has its own).
        untracked = int(torch.cuda.memory_allocated(device)) - mt.current().total if is_cuda else 0
        forward_backward()
        opt.step()
        grads_after = grad_bytes(model)  # before zero_grad: the step's gradients still exist
        allocator = _cuda_allocator(device) if is_cuda else None
        opt.zero_grad(set_to_none=True)
    peak = mt.peak()
    out = {
        "width": h, "blocks": cfg.train_blocks, "batch": b,
        "params": n_params,
        "params_bytes": param_bytes(model),
        "grads_bytes": grads_after,
        "optimizer_state_bytes": optimizer_state_bytes(opt),
        "predicted": predicted_state,
        "tracker_peak": peak.as_dict(),
        "predicted_flops": flops_predicted,
        "counted_flops": flops_counted,
        **{f"step_{k}": v for k, v in timing.items()},
    }
    if is_cuda:
        out["allocator"] = allocator
        out["tracker_agreement"] = {
            "tracker_peak_bytes": peak.total,
            "cuda_max_allocated_bytes": int(mt.cuda_max_allocated_bytes or 0),
            "untracked_at_start_bytes": untracked,
        }
    del model, opt, x, target
    return out


# %% [markdown]
# ## CUDA only: the context's memory, before any tensor exists

# %%
def measure_cuda_context(device: torch.device, fresh: bool) -> dict:
    """Device memory in use right after CUDA initialises, and what the caching allocator reserved by then.

    ``mem_get_info`` reports the whole device, so other processes on the GPU
    would be counted too; ``fresh`` says whether this process had not touched
    CUDA before (the runner's subprocess has not).
    """
    torch.cuda.init()
    with torch.cuda.device(device):
        free, total = torch.cuda.mem_get_info(device)
    return {
        "fresh_process": fresh,
        "device_total_bytes": int(total),
        "used_at_init_bytes": int(total - free),
        "reserved_at_init_bytes": int(torch.cuda.memory_reserved(device)),
    }


def measure_cuda_after(device: torch.device) -> dict:
    """Device memory in use after all the work, and the caching allocator's reservation then."""
    free, total = torch.cuda.mem_get_info(device)
    return {"used_after_bytes": int(total - free), "reserved_after_bytes": int(torch.cuda.memory_reserved(device))}


# %% [markdown]
# ## The experiment

# %%
def _cuda_settings() -> dict:
    m = torch.backends.cuda.matmul
    return {
        "bf16_reduced_precision_reduction": bool(m.allow_bf16_reduced_precision_reduction),
        "fp16_reduced_precision_reduction": bool(m.allow_fp16_reduced_precision_reduction),
        "cudnn_version": int(torch.backends.cudnn.version() or 0),
    }


def run(cfg: Config, device: str) -> dict:
    unknown = sorted(set(cfg.dtypes) - set(DTYPES))
    if unknown:
        raise ValueError(f"unknown dtype(s) {unknown}; known: {list(DTYPES)}")
    dev = torch.device(device)
    context = None
    if dev.type == "cuda":  # first, before any tensor (and before current_device() initialises CUDA)
        fresh = not torch.cuda.is_initialized()
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        context = measure_cuda_context(dev, fresh)
    torch.manual_seed(cfg.seed)

    threads = torch.get_num_threads()
    with LoadSampler() as load:
        data: dict = {
            "device_type": dev.type,
            "threads": threads,
            "matmul": measure_matmul(dev, cfg),
            "bandwidth": measure_bandwidth(dev, cfg),
            "train_step": measure_train_step(dev, cfg),
        }
    data["cpu_load"] = load.figures(threads, cores())
    if dev.type == "cuda":
        assert context is not None
        data["cuda"] = {"measured": True, **context, **measure_cuda_after(dev), **_cuda_settings(),
                        "device_name": torch.cuda.get_device_name(dev)}
    else:
        data["cuda"] = {"measured": False}
    return data


# %% [markdown]
# ## Derived at build time: best shapes, speed-ups, ridge points, ratios, verdicts and units
#
# Pure Python over the stored data: changing a threshold or a unit here never
# measures again.

# %%
STATUS_LABELS = {"measured": "measured", "not_applicable": "not applicable", "unsupported": "unsupported",
                 "not_run": "not in this run"}
LOW_PRECISION = ("bf16", "fp16")
TFLOP_FROM_GFLOP_PER_S = 1e3  # from 1 TFLOP/s on, rates read in TFLOP/s
SIZE_DECIDES_SHARE = 0.9  # the largest shape under 90 % of the best: size alone does not decide
TRACKER_AGREEMENT = 0.05  # the tracker's peak within 5 % of torch.cuda.max_memory_allocated


def _shape_label(m: int, n: int, k: int) -> str:
    return f"{m}×{n}×{k}"


def _best_gflop_per_s(d: dict) -> float | None:
    return max(p["gflop_per_s"] for p in d["points"]) if d["status"] == "measured" else None


def _matmul_summary(name: str, d: dict | None, scale: float, fp32_best: float | None,
                    bandwidth_gb_per_s: float) -> dict:
    """One dtype's row; every figure null where the dtype was not measured."""
    status = d["status"] if d is not None else "not_run"
    out = {"label": name, "status": status, "status_label": STATUS_LABELS[status], "measured": status == "measured"}
    figures = ("best_gflop_per_s", "best_tflop_per_s", "best_rate", "best_shape", "best_median_ms", "best_is_largest",
               "best_not_largest", "largest_shape", "largest_rate", "largest_share_of_best", "smallest_shape",
               "smallest_rate", "speedup_vs_fp32", "rel_error", "unit_roundoff", "rel_error_over_unit_roundoff",
               "ridge_flop_per_byte")
    if status != "measured":
        return {**out, **dict.fromkeys(figures), "shapes_run_count": 0,
                "shapes_in_sweep_count": len(d["skipped_shapes"]) if d is not None else 0,
                "rates": [], "flop_per_byte": []}
    points = d["points"]
    best = max(points, key=lambda p: p["gflop_per_s"])
    small, large = points[0], points[-1]
    acc = d["accuracy"]
    elem = DTYPE_BYTES[name]
    share = large["gflop_per_s"] / best["gflop_per_s"]
    return {
        **out,
        "best_gflop_per_s": best["gflop_per_s"],
        "best_tflop_per_s": best["gflop_per_s"] / 1e3,
        "best_rate": best["gflop_per_s"] / scale,
        "best_shape": _shape_label(best["m"], best["n"], best["k"]),
        "best_median_ms": best["median_ms"],
        "best_is_largest": best is large,
        "best_not_largest": share < SIZE_DECIDES_SHARE,
        "largest_shape": _shape_label(large["m"], large["n"], large["k"]),
        "largest_rate": large["gflop_per_s"] / scale,
        "largest_share_of_best": share,  # below 1 when size alone does not decide
        "smallest_shape": _shape_label(small["m"], small["n"], small["k"]),
        "smallest_rate": small["gflop_per_s"] / scale,
        "speedup_vs_fp32": best["gflop_per_s"] / fp32_best if fp32_best else None,
        "rel_error": acc["rel_error"],
        "unit_roundoff": acc["unit_roundoff"],
        "rel_error_over_unit_roundoff": acc["rel_error"] / acc["unit_roundoff"],
        # Roofline ridge point (Williams et al. 2009): below this many FLOPs per byte moved,
        # an operation is bound by memory bandwidth rather than by matmul throughput.
        "ridge_flop_per_byte": best["gflop_per_s"] / bandwidth_gb_per_s,
        "shapes_run_count": len(points),
        "shapes_in_sweep_count": len(points) + len(d["skipped_shapes"]),
        "rates": [p["gflop_per_s"] / scale for p in points],
        # arithmetic intensity if each operand crossed memory once (the roofline's x axis)
        "flop_per_byte": [p["flops"] / ((p["m"] * p["k"] + p["k"] * p["n"] + p["m"] * p["n"]) * elem)
                          for p in points],
    }


def _cuda_summary(data: dict) -> dict:
    """The CUDA-only figures; null on a host without CUDA, so a page and a cross-host table read them alike."""
    keys = ("context_bytes", "device_total_bytes", "fresh_process", "non_allocator_after_bytes",
            "growth_since_init_bytes", "allocated_bytes", "reserved_bytes", "unused_reserved_bytes",
            "inactive_split_bytes", "max_allocated_bytes", "max_reserved_bytes", "reserved_to_allocated_ratio",
            "tracker_peak_bytes", "cuda_max_allocated_bytes", "untracked_at_start_bytes", "tracker_ratio",
            "tracker_ratio_without_untracked", "tracker_agrees")
    c = data["cuda"]
    if not c["measured"]:
        return {"measured": False, **dict.fromkeys(keys)}
    al, ag = data["train_step"]["allocator"], data["train_step"]["tracker_agreement"]
    context = c["used_at_init_bytes"] - c["reserved_at_init_bytes"]
    non_allocator = c["used_after_bytes"] - c["reserved_after_bytes"]  # context, lazily loaded kernels, handles
    cuda_max, untracked = ag["cuda_max_allocated_bytes"], ag["untracked_at_start_bytes"]
    without = ag["tracker_peak_bytes"] / (cuda_max - untracked) if cuda_max > untracked else None
    return {
        "measured": True,
        "context_bytes": context,
        "device_total_bytes": c["device_total_bytes"],
        "fresh_process": c["fresh_process"],
        "non_allocator_after_bytes": non_allocator,
        "growth_since_init_bytes": non_allocator - context,
        "allocated_bytes": al["allocated_bytes"],
        "reserved_bytes": al["reserved_bytes"],
        "unused_reserved_bytes": al["reserved_bytes"] - al["allocated_bytes"],
        "inactive_split_bytes": al["inactive_split_bytes"],
        "max_allocated_bytes": al["max_allocated_bytes"],
        "max_reserved_bytes": al["max_reserved_bytes"],
        "reserved_to_allocated_ratio": al["reserved_bytes"] / al["allocated_bytes"] if al["allocated_bytes"] else None,
        "tracker_peak_bytes": ag["tracker_peak_bytes"],
        "cuda_max_allocated_bytes": cuda_max,
        "untracked_at_start_bytes": untracked,
        "tracker_ratio": ag["tracker_peak_bytes"] / cuda_max if cuda_max else None,
        "tracker_ratio_without_untracked": without,
        "tracker_agrees": without is not None and abs(without - 1) <= TRACKER_AGREEMENT,
    }


def _cpu_load_summary(data: dict) -> dict:
    load = data["cpu_load"]
    if not load["measured"]:
        return {"measured": False, "competing_tasks_mean": None, "runnable_max": None, "period_ms": None,
                "cores": None, "busy": None, "busy_label": None}
    is_busy = busy(load["competing_tasks_mean"], data["threads"], load["cores"])
    return {"measured": True, "competing_tasks_mean": load["competing_tasks_mean"],
            "runnable_max": load["runnable_max"], "period_ms": load["period_ms"], "cores": load["cores"],
            "busy": is_busy, "busy_label": "yes" if is_busy else "no"}


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        largest = data["matmul"]["fp32"]["points"][-1] if data["matmul"]["fp32"].get("points") else None
        step = data["train_step"]
        shape = f"matmuls up to {largest['m']}×{largest['n']}×{largest['k']}, " if largest else ""
        return f"{shape}a {step['blocks']}-block MLP step, width {step['width']}, {step['params']:,} params"
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    mm, bw, ts = data["matmul"], data["bandwidth"]["points"], data["train_step"]
    largest_bw = bw[-1]
    best_rates = {n: _best_gflop_per_s(mm[n]) for n in mm["dtypes"]}
    measured = {n: r for n, r in best_rates.items() if r is not None}
    tera = any(r >= TFLOP_FROM_GFLOP_PER_S for r in measured.values())
    scale = 1e3 if tera else 1.0
    fp32_best = measured.get("fp32")
    matmul = {n: _matmul_summary(n, mm[n] if n in mm["dtypes"] else None, scale, fp32_best, largest_bw["gb_per_s"])
              for n in DTYPES}
    best_dtype = max(measured, key=measured.__getitem__)
    acc = mm[best_dtype]["accuracy"]
    pred = ts["predicted"]
    achieved = ts["counted_flops"] / (ts["step_median_ms"] * 1e-3) / 1e9
    predicted_state = pred["params_bytes"] + pred["grads_bytes"] + pred["optimizer_bytes"]
    return {
        "scale_label": scale_label(data),
        "rate_unit": "TFLOP/s" if tera else "GFLOP/s",
        "best_dtype": best_dtype,
        "best": matmul[best_dtype],
        "fp32_measured": fp32_best is not None,
        "low_precision_slower": any(matmul[n]["speedup_vs_fp32"] is not None and matmul[n]["speedup_vs_fp32"] < 1
                                    for n in LOW_PRECISION),
        "accuracy_shape": _shape_label(acc["m"], acc["n"], acc["k"]),
        "matmul": matmul,
        "roofline": {n: matmul[n]["ridge_flop_per_byte"] for n in DTYPES if matmul[n]["measured"]},
        "flop_count_matches": mm["flop_count_check"]["counted_flops"] == mm["flop_count_check"]["predicted_flops"],
        "bandwidth": {
            "largest_copy_bytes": largest_bw["bytes"],
            "gb_per_s": largest_bw["gb_per_s"],  # the copy far exceeds any cache
            # On a CPU the copy runs on the threads torch was given: it measures what they can stream, which
            # on a host with few cores is below the DRAM's bandwidth (the ridge points inherit this figure).
            # A GPU's copy kernel fills the device, so there it is the memory's achievable bandwidth.
            "limited_by_threads": data["device_type"] == "cpu",
            "threads": data["threads"],
            "best_gb_per_s": max(p["gb_per_s"] for p in bw),
            "cache_faster": max(p["gb_per_s"] for p in bw) > largest_bw["gb_per_s"],
            "size_labels": [iec_bytes(p["bytes"]) for p in bw],
        },
        "train_step": {
            "predicted_state_bytes": predicted_state,
            "measured_state_bytes": ts["params_bytes"] + ts["grads_bytes"] + ts["optimizer_state_bytes"],
            "ratio": {  # measured over predicted
                "params": ts["params_bytes"] / pred["params_bytes"],
                "grads": ts["grads_bytes"] / pred["grads_bytes"],
                "optimizer": ts["optimizer_state_bytes"] / pred["optimizer_bytes"],
                "flops": ts["counted_flops"] / ts["predicted_flops"],
            },
            "achieved_gflop_per_s": achieved,
            "share_of_best_fp32": achieved / fp32_best if fp32_best else None,
            "activations_freed_at_peak": ts["tracker_peak"]["activations_bytes"] == 0,
        },
        "cpu_load": _cpu_load_summary(data),
        "cuda": _cuda_summary(data),
    }


# %% [markdown]
# ## Figures: throughput by dtype against matmul size, bandwidth against copy size

# %%
def plot(data: dict, summary: dict) -> dict:
    import matplotlib.pyplot as plt

    unit = summary["rate_unit"]
    fig_mm, ax = plt.subplots(figsize=(7.2, 4.2), layout="constrained")
    for name, s in summary["matmul"].items():
        if not s["measured"]:
            ax.plot([], [], " ", label=f"{name}: {s['status_label']}")
            continue
        flops = [p["flops"] for p in data["matmul"][name]["points"]]
        line, = ax.plot(flops, s["rates"], "o-", ms=3, label=name)
        best = max(range(len(flops)), key=lambda i: s["rates"][i])
        ax.plot([flops[best]], [s["best_rate"]], "*", ms=12, color=line.get_color())
        ax.annotate(s["best_shape"], (flops[best], s["best_rate"]), textcoords="offset points", xytext=(-6, 6),
                    fontsize=8, color=line.get_color(), ha="right")
    ax.set_xscale("log")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.12)  # room for the labels of the best shapes
    ax.set_xlabel("FLOPs of one matmul (2·m·n·k)")
    ax.set_ylabel(f"achieved throughput ({unit})")
    ax.set_title(f"Matmul throughput by dtype on {data['device_type']} (★ best shape, m×n×k)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)

    bw = data["bandwidth"]["points"]
    fig_bw, ax2 = plt.subplots(figsize=(7.2, 3.4), layout="constrained")
    ax2.plot([p["bytes"] for p in bw], [p["gb_per_s"] for p in bw], "o-")
    ax2.set_xscale("log", base=2)
    ax2.set_xticks([p["bytes"] for p in bw], summary["bandwidth"]["size_labels"])
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("buffer size (the copy reads and writes it: moves twice this)")
    ax2.set_ylabel("copy bandwidth (GB/s)")
    ax2.set_title("Memory bandwidth: dst.copy_(src) by buffer size")
    ax2.grid(True, which="both", alpha=0.3)
    return {"matmul": fig_mm, "bandwidth": fig_bw}


# %%
if __name__ == "__main__":
    import sys

    from experiments.lib.cli import main

    raise SystemExit(main(sys.modules[__name__]))
