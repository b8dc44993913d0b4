# %%
"""What can this host do at best? Achievable matmul throughput, memory bandwidth, and (on CUDA) memory overheads.

Every other chapter reports times and bytes; this experiment gives them a
scale. It measures, on the device it is given:

- **Matrix-multiply throughput** for fp32, tf32, bf16 and fp16 over a sweep of
  shapes, and keeps the best figure and the shape that reached it, in the
  spirit of Stas Bekman's "maximum achievable matmul FLOPS" (MAMF) finder: a
  datasheet peak is not what a real kernel reaches, and the best shape is
  not necessarily the biggest. FLOPs of one ``(m, k) @ (k, n)`` product are
  ``2 m n k``; a FlopCounterMode count checks that figure. tf32 is a CUDA
  tensor-core mode (``torch.set_float32_matmul_precision("high")``); on a CPU
  it is recorded as not applicable. Shapes run smallest first; a dtype whose
  single call takes longer than ``max_call_s`` (fp16 on most CPUs) stops its
  sweep there and lists the shapes it skipped. Beside the speed, the relative
  error of one product against float64 shows what each format costs in
  accuracy, next to its unit roundoff.
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
- **How busy the CPU was**: a background thread counts the runnable tasks, so
  figures measured on a shared machine are flagged as lower bounds.

Run it: ``python -m experiments.hardware --profile quick`` (CPU, seconds) or
``--profile full`` on a GPU host. The runner starts each experiment in a fresh
process, so the CUDA context figure is measured before anything else touched
the GPU.
"""

# %%
from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from experiments.lib.flops import count_flops
from experiments.lib.formulas import DTYPE_BYTES, optimizer_state_bytes as predicted_optimizer_state_bytes
from experiments.lib.memory import MemoryTracker, grad_bytes, optimizer_state_bytes, param_bytes
from experiments.lib.timing import time_fn

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


PROFILES = {
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
        # Squares from small to large, plus misaligned neighbours (8191, 8193) and
        # rectangular shapes of transformer layers (QKV, MLP up and down projections).
        shapes=_squares(512, 1024, 2048, 3072, 4096, 6144, 8192, 8191, 8193, 10240, 12288, 16384)
        + ((16384, 4096, 4096), (16384, 12288, 4096), (16384, 16384, 4096), (16384, 4096, 16384),
           (8192, 11008, 4096), (8192, 4096, 11008)),
        min_run_time_s=0.2,
        max_call_s=2.0,
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


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _LoadSampler:
    """Counts the tasks competing for the CPU while the measurements run.

    A throughput measured on a busy machine is a lower bound, and on a shared
    CPU an OpenMP kernel whose worker thread is descheduled can be slower by
    orders of magnitude. A background thread reads the kernel's count of
    runnable tasks (``/proc/loadavg``, Linux only) every ``period_s``; this
    process's own compute threads and the sampler are subtracted.
    """

    def __init__(self, period_s: float = 0.05) -> None:
        self.period_s = period_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._path = Path("/proc/loadavg")

    def _read(self) -> int | None:
        try:
            return int(self._path.read_text(encoding="ascii").split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            n = self._read()
            if n is None:
                return
            self.samples.append(n)
            self._stop.wait(self.period_s)

    def __enter__(self) -> "_LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self, threads: int, cores: int) -> dict:
        if not self.samples:
            return {"measured": False}
        own = threads + 1  # this process's compute threads and the sampler itself
        competing = [max(0, n - own) for n in self.samples]
        mean = sum(competing) / len(competing)
        return {
            "measured": True,
            "period_ms": self.period_s * 1e3,
            "samples": len(self.samples),
            "runnable_mean": sum(self.samples) / len(self.samples),
            "runnable_max": max(self.samples),
            "competing_tasks_mean": mean,  # at least this many other tasks wanted a core, on average
            "cores": cores,
            # Busy when, on average, more than half a core's worth of other work wanted the cores that
            # this process's threads did not use. With every core in use (threads == cores), even one
            # competing task halves a multi-threaded kernel: each parallel region waits for its slowest thread.
            "busy": mean > max(0, cores - threads) + 0.5,
        }


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
    gflop_per_s = flops / (t["median_ms"] * 1e-3) / 1e9
    # Arithmetic intensity if each operand crossed memory once (the roofline's x axis).
    min_bytes = (m * k + k * n + m * n) * DTYPE_BYTES[name]
    return {"m": m, "n": n, "k": k, "flops": flops, **t, "gflop_per_s": gflop_per_s,
            "tflop_per_s": gflop_per_s / 1e3, "flop_per_byte": flops / min_bytes}


def _sweep_dtype(name: str, device: torch.device, cfg: Config) -> dict:
    if name == "tf32" and device.type != "cuda":
        return {"status": "not_applicable", "points": [], "skipped_shapes": [], "shapes_in_sweep": 0}
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
                        "skipped_shapes": [list(s) for s in shapes], "shapes_in_sweep": len(shapes)}
            if point is None:  # too slow: larger shapes would be slower still
                skipped = [list(s) for s in shapes[i:]]
                break
            points.append(point)
        accuracy = _accuracy(dtype, name, device, cfg)
    best = max(points, key=lambda p: p["gflop_per_s"])
    return {
        "status": "measured",
        "accuracy": accuracy,
        "best_gflop_per_s": best["gflop_per_s"],
        "best_tflop_per_s": best["tflop_per_s"],
        "best_shape": [best["m"], best["n"], best["k"]],
        "best_median_ms": best["median_ms"],
        # the largest shape run against the best: below 1 when size alone does not decide
        "largest_share_of_best": points[-1]["gflop_per_s"] / best["gflop_per_s"],
        "points": points,
        "skipped_shapes": skipped,
        "shapes_in_sweep": len(points) + len(skipped),   # run and skipped: the shapes in the sweep
    }


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
    u = unit_roundoff(name)
    return {"m": m, "n": n, "k": k, "rel_error": rel, "unit_roundoff": u, "rel_error_over_unit_roundoff": rel / u}


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
    measured = {n: out[n] for n in cfg.dtypes if out[n]["status"] == "measured"}
    if measured:
        out["best_dtype"] = max(measured, key=lambda n: measured[n]["best_gflop_per_s"])
    if "fp32" in measured:
        base = measured["fp32"]["best_gflop_per_s"]
        out["speedup_vs_fp32"] = {n: d["best_gflop_per_s"] / base for n, d in measured.items()}
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
    largest = points[-1]
    return {
        "points": points,
        "largest_copy_bytes": largest["bytes"],
        "gb_per_s": largest["gb_per_s"],  # the device's bandwidth: the copy far exceeds any cache
        "best_gb_per_s": max(p["gb_per_s"] for p in points),
    }


# %% [markdown]
# ## A training step: time as a share of the best matmul, memory by category

# %%
def _model(cfg: Config, device: torch.device) -> torch.nn.Module:
    h = cfg.train_width
    blocks = []
    for _ in range(cfg.train_blocks):
        blocks += [torch.nn.Linear(h, 4 * h), torch.nn.GELU(), torch.nn.Linear(4 * h, h)]
    return torch.nn.Sequential(*blocks).to(device)


def _cuda_allocator(device: torch.device) -> dict:
    stats = torch.cuda.memory_stats(device)
    allocated = int(torch.cuda.memory_allocated(device))
    reserved = int(torch.cuda.memory_reserved(device))
    return {
        "allocated_bytes": allocated,
        "reserved_bytes": reserved,
        "reserved_to_allocated_ratio": reserved / allocated if allocated else 0.0,
        "unused_reserved_bytes": reserved - allocated,
        "inactive_split_bytes": int(stats.get("inactive_split_bytes.all.current", 0)),
        "max_allocated_bytes": int(torch.cuda.max_memory_allocated(device)),
        "max_reserved_bytes": int(torch.cuda.max_memory_reserved(device)),
    }


def measure_train_step(device: torch.device, cfg: Config, best_fp32_gflop_per_s: float | None) -> dict:
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
    weights = sum(p.numel() for p in model.parameters() if p.dim() == 2)
    params_b = param_bytes(model)
    predicted_state = {
        "params_bytes": sum(p.numel() for p in model.parameters()) * DTYPE_BYTES["fp32"],
        "grads_bytes": sum(p.numel() for p in model.parameters()) * DTYPE_BYTES["fp32"],
        "optimizer_bytes": predicted_optimizer_state_bytes("adamw", shapes),
    }
    # Forward 2 and backward 4 FLOPs per weight and sample, less the first layer's
    # input gradient (2 per weight and sample): x does not require grad.
    first = cfg.train_width * 4 * cfg.train_width
    flops_predicted = 6 * weights * b - 2 * first * b
    flops_counted = count_flops(forward_backward)
    opt.zero_grad(set_to_none=True)
    timing = time_fn(step, min_run_time_s=cfg.min_run_time_s)
    achieved = flops_counted / (timing["median_ms"] * 1e-3) / 1e9

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
        "params": sum(p.numel() for p in model.parameters()),
        "params_bytes": params_b,
        "grads_bytes": grads_after,
        "optimizer_state_bytes": optimizer_state_bytes(opt),
        "predicted": predicted_state,
        "predicted_state_bytes": sum(predicted_state.values()),
        "measured_state_bytes": params_b + grads_after + optimizer_state_bytes(opt),
        "tracker_peak": peak.as_dict(),
        "predicted_flops": flops_predicted,
        "counted_flops": flops_counted,
        "ratio": {  # measured over predicted
            "params": params_b / predicted_state["params_bytes"],
            "grads": grads_after / predicted_state["grads_bytes"],
            "optimizer": optimizer_state_bytes(opt) / predicted_state["optimizer_bytes"],
            "flops": flops_counted / flops_predicted,
        },
        **{f"step_{k}": v for k, v in timing.items()},
        "achieved_gflop_per_s": achieved,
    }
    if best_fp32_gflop_per_s:
        out["share_of_best_fp32"] = achieved / best_fp32_gflop_per_s
    if is_cuda:
        cuda_max = int(mt.cuda_max_allocated_bytes or 0)
        out["allocator"] = allocator
        out["tracker_agreement"] = {
            "tracker_peak_bytes": peak.total,
            "cuda_max_allocated_bytes": cuda_max,
            "untracked_at_start_bytes": untracked,
            "ratio": peak.total / cuda_max if cuda_max else 0.0,
            "ratio_without_untracked": peak.total / (cuda_max - untracked) if cuda_max > untracked else 0.0,
        }
    del model, opt, x, target
    return out


# %% [markdown]
# ## CUDA only: the context's memory, before any tensor exists

# %%
def measure_cuda_context(device: torch.device, fresh: bool) -> dict:
    """Device memory in use right after CUDA initialises, minus the allocator's reservation.

    ``mem_get_info`` reports the whole device, so other processes on the GPU
    would be counted too; ``fresh`` says whether this process had not touched
    CUDA before (the runner's subprocess has not).
    """
    torch.cuda.init()
    with torch.cuda.device(device):
        free, total = torch.cuda.mem_get_info(device)
    reserved = int(torch.cuda.memory_reserved(device))
    return {
        "fresh_process": fresh,
        "device_total_bytes": int(total),
        "used_at_init_bytes": int(total - free),
        "reserved_at_init_bytes": reserved,
        "context_bytes": int(total - free) - reserved,
    }


def measure_cuda_after(device: torch.device, before: dict) -> dict:
    """What the driver holds after all the work, beyond the caching allocator's reservation."""
    free, total = torch.cuda.mem_get_info(device)
    reserved = int(torch.cuda.memory_reserved(device))
    non_allocator = int(total - free) - reserved
    return {
        "used_after_bytes": int(total - free),
        "reserved_after_bytes": reserved,
        "non_allocator_after_bytes": non_allocator,  # context plus lazily loaded kernels and library handles
        "growth_since_init_bytes": non_allocator - before["context_bytes"],
    }


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

    with _LoadSampler() as load:
        data: dict = {
            "device_type": dev.type,
            "threads": torch.get_num_threads(),
            "matmul": measure_matmul(dev, cfg),
            "bandwidth": measure_bandwidth(dev, cfg),
        }
        fp32 = data["matmul"].get("fp32", {})
        best_fp32 = fp32.get("best_gflop_per_s") if fp32.get("status") == "measured" else None
        data["train_step"] = measure_train_step(dev, cfg, best_fp32)
    # Roofline ridge point (Williams et al. 2009): below this many FLOPs per byte moved,
    # an operation is bound by memory bandwidth rather than by matmul throughput.
    bw = data["bandwidth"]["gb_per_s"]
    data["roofline"] = {n: {"ridge_flop_per_byte": data["matmul"][n]["best_gflop_per_s"] / bw}
                        for n in cfg.dtypes if data["matmul"][n]["status"] == "measured"}
    data["cpu_load"] = load.summary(data["threads"], _cores())
    if dev.type == "cuda":
        assert context is not None
        data["cuda"] = {"measured": True, **context, **measure_cuda_after(dev, context), **_cuda_settings(),
                        "device_name": torch.cuda.get_device_name(dev)}
    else:
        data["cuda"] = {"measured": False}
    return data


# %% [markdown]
# ## Figures: throughput by dtype against matmul size, bandwidth against copy size

# %%
def _iec(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g} {unit}"
        n /= 1024
    return f"{n:g} GiB"


def plot(data: dict) -> dict:
    import matplotlib.pyplot as plt

    mm = data["matmul"]
    tera = any(mm[n]["status"] == "measured" and mm[n]["best_gflop_per_s"] >= 1e4 for n in mm["dtypes"])
    unit, key = ("TFLOP/s", "tflop_per_s") if tera else ("GFLOP/s", "gflop_per_s")
    fig_mm, ax = plt.subplots(figsize=(7.2, 4.2), layout="constrained")
    for name in mm["dtypes"]:
        d = mm[name]
        if d["status"] != "measured":
            ax.plot([], [], " ", label=f"{name}: {d['status'].replace('_', ' ')}")
            continue
        pts = d["points"]
        line, = ax.plot([p["flops"] for p in pts], [p[key] for p in pts], "o-", ms=3, label=name)
        m, n, k = d["best_shape"]
        best = d[f"best_{key}"]
        ax.plot([m * n * k * 2], [best], "*", ms=12, color=line.get_color())
        ax.annotate(f"{m}×{n}×{k}", (m * n * k * 2, best), textcoords="offset points", xytext=(-6, 6), fontsize=8,
                    color=line.get_color(), ha="right")
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
    ax2.set_xticks([p["bytes"] for p in bw], [_iec(p["bytes"]) for p in bw])
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("buffer size (the copy reads and writes it: moves twice this)")
    ax2.set_ylabel("copy bandwidth (GB/s)")
    ax2.set_title("Memory bandwidth: dst.copy_(src) by buffer size")
    ax2.grid(True, which="both", alpha=0.3)
    return {"matmul": fig_mm, "bandwidth": fig_bw}


# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
