"""Live memory over time, by category: PyTorch's profiler timeline and, on CUDA, the allocator's history.

``torch.profiler.profile(profile_memory=True, record_shapes=True, with_stack=True)`` records every
allocation and free; ``torch.profiler._memory_profiler.MemoryProfile`` then follows each tensor
through the recorded ops and labels it (parameter, gradient, optimizer state, activation,
temporary, input, autograd detail), and ``MemoryProfileTimeline`` turns that into live bytes per
category over time: the code behind ``profile.export_memory_timeline``. It works on CPU tensors
as well as CUDA ones. ``with_stack`` is not optional: without the Python stack the profiler cannot
see ``optimizer.step()`` and files the optimizer state under "unknown".

On CUDA the caching allocator keeps its own history (``torch.cuda.memory._record_memory_history``
and ``_snapshot``): every allocation with its stack, and the segments it reserved from the driver.
That snapshot is what PyTorch's memory visualizer (https://pytorch.org/memory_viz) reads, and its
trace gives allocated and reserved bytes over the step.

These are private APIs (``export_memory_timeline`` is deprecated since torch 2.9 in favour of the
CUDA snapshot, which has no CPU counterpart), so this module is the only place that imports them.
"""
from __future__ import annotations

import base64
import contextlib
import pickle
from typing import Callable, Iterator

import torch

# The profiler's categories, in the order of its timeline (``_memory_profiler._CATEGORY_TO_INDEX``),
# under the names the handbook uses; "unknown" is memory the profiler could not attribute to a tensor.
CATEGORIES = ("params", "optimizer", "inputs", "temporaries", "activations", "grads", "autograd_detail", "unknown")
PHASE_PREFIX = "handbook::"


def _category_names() -> dict:
    from torch.profiler._memory_profiler import _CATEGORY_TO_INDEX, Category

    names = {Category.PARAMETER: "params", Category.OPTIMIZER_STATE: "optimizer", Category.INPUT: "inputs",
             Category.TEMPORARY: "temporaries", Category.ACTIVATION: "activations", Category.GRADIENT: "grads",
             Category.AUTOGRAD_DETAIL: "autograd_detail", None: "unknown"}
    # the coalesced timeline's column of each category: its index in _CATEGORY_TO_INDEX, plus one
    return {names[cat]: index + 1 for cat, index in _CATEGORY_TO_INDEX.items()}


def _device(device: str | torch.device) -> torch.device:
    """The device with its index, as the profiler's tensor keys carry it."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def keep_indices(scores: list[float], max_points: int) -> set[int]:
    """Indices of at most ``max_points`` points: the first, the last, the highest, and the highest of each bucket."""
    n = len(scores)
    if n <= max_points:
        return set(range(n))
    keep = {0, n - 1, max(range(n), key=scores.__getitem__)}
    buckets = max(1, max_points - len(keep))
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        if hi > lo:
            keep.add(max(range(lo, hi), key=scores.__getitem__))
    return keep


class TimelineRecorder:
    """Record live bytes by category on ``device`` while the block runs, with named phases.

    ``with recorder: ... with recorder.phase("forward", step=0): ...``; then ``result()``.
    """

    def __init__(self, device: str | torch.device, max_points: int = 400) -> None:
        self.device = _device(device)
        self.max_points = max_points
        self._prof: torch.profiler.profile | None = None
        self._phase_labels: list[dict] = []

    def __enter__(self) -> "TimelineRecorder":
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        self._prof = profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True)
        self._prof.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._prof is not None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._prof.__exit__(*exc)

    @contextlib.contextmanager
    def phase(self, name: str, **labels: int) -> Iterator[None]:
        """Mark a phase of the step (``labels``: its step and micro-batch numbers)."""
        self._phase_labels.append({"phase": name, **labels})
        with torch.profiler.record_function(f"{PHASE_PREFIX}{len(self._phase_labels) - 1}"):
            yield

    def result(self) -> dict:
        """Times (µs from the first event), live bytes per category at each, and the phases' spans."""
        from torch.profiler._memory_profiler import MemoryProfile, MemoryProfileTimeline

        assert self._prof is not None and self._prof.profiler is not None, "record a block first"
        results = self._prof.profiler.kineto_results
        times, sizes = MemoryProfileTimeline(MemoryProfile(results))._coalesce_timeline(str(self.device))
        columns = _category_names()
        rows = [[int(s[columns[c]]) for c in CATEGORIES] for s in sizes]
        spans = {}

        def walk(events) -> None:
            for e in events:
                if e.name.startswith(PHASE_PREFIX):
                    spans[int(e.name[len(PHASE_PREFIX):])] = (e.start_time_ns // 1000, e.end_time_ns // 1000)
                walk(e.children)

        walk(results.experimental_event_tree())
        if not times:
            raise RuntimeError(f"the profiler recorded no memory on {self.device}: was anything allocated there?")
        t0 = min(times[0], *(s for s, _ in spans.values())) if spans else times[0]
        times = [t - t0 for t in times]
        keep = sorted(keep_indices([sum(r) for r in rows], self.max_points))
        phases = []
        for i, labels in enumerate(self._phase_labels):
            start, end = spans[i][0] - t0, spans[i][1] - t0
            inside = [k for k, t in enumerate(times) if start <= t <= end]
            phases.append({**labels, "start_us": start, "end_us": end,
                           "first_event": inside[0] if inside else None, "last_event": inside[-1] if inside else None})
        return {"event": keep, "time_us": [times[i] for i in keep],
                "bytes": {c: [rows[i][k] for i in keep] for k, c in enumerate(CATEGORIES)},
                "events_count": len(times), "phases": phases}


# ------------------------------------------------------------------------------------------ CUDA only


def cuda_memory_before_tensors(device: str | torch.device) -> dict:
    """Device memory in use before this process allocates a tensor: the CUDA context (and other processes)."""
    dev = _device(device)
    free, total = torch.cuda.mem_get_info(dev)  # creates the context if there is none yet
    reserved = torch.cuda.memory_reserved(dev)
    return {"device_total_bytes": int(total), "device_used_bytes": int(total - free),
            "allocator_reserved_bytes": int(reserved), "outside_allocator_bytes": int(total - free - reserved)}


def _trim_frames(snapshot: dict, frames: int) -> None:
    """Keep the innermost ``frames`` frames of each stack, their strings shared (pickle then stores each once)."""
    strings: dict[str, str] = {}

    def trim(stack: list) -> list:
        return [{k: strings.setdefault(v, v) if isinstance(v, str) else v for k, v in f.items()}
                for f in stack[:frames]]

    for seg in snapshot.get("segments", []):
        for block in seg.get("blocks", []):
            if "frames" in block:
                block["frames"] = trim(block["frames"])
    for trace in snapshot.get("device_traces", []):
        for entry in trace:
            if "frames" in entry:
                entry["frames"] = trim(entry["frames"])


def allocator_series(trace: list[dict], allocated0: int, reserved0: int, max_points: int) -> dict:
    """Allocated and reserved bytes after each event of the allocator's history, from their values at its start.

    Allocated follows ``alloc`` and ``free_completed``; reserved follows ``segment_alloc``/``segment_map``
    and ``segment_free``/``segment_unmap`` (``expandable_segments`` maps and unmaps pages). Thinned to about
    ``max_points``, keeping both peaks.
    """
    allocated, reserved = allocated0, reserved0
    times, rows = [0], [[allocated0, reserved0]]
    t0 = next((e["time_us"] for e in trace if "time_us" in e), 0)
    for i, e in enumerate(trace):
        action, size = e["action"], int(e["size"])
        if action == "alloc":
            allocated += size
        elif action == "free_completed":
            allocated -= size
        elif action in ("segment_alloc", "segment_map"):
            reserved += size
        elif action in ("segment_free", "segment_unmap"):
            reserved -= size
        else:
            continue
        times.append(int(e.get("time_us", t0 + i)) - t0)
        rows.append([allocated, reserved])
    idx = sorted(keep_indices([r[0] for r in rows], max_points // 2)
                 | keep_indices([r[1] for r in rows], max_points // 2))
    return {"time_us": [times[i] for i in idx], "allocated_bytes": [rows[i][0] for i in idx],
            "reserved_bytes": [rows[i][1] for i in idx]}


def record_cuda_history(fn: Callable[[], None], device: str | torch.device, max_entries: int = 20000,
                        frames: int = 8, max_points: int = 400) -> dict:
    """Run ``fn`` under the caching allocator's history; allocated and reserved bytes over it, and the snapshot.

    The allocated series counts ``alloc`` and ``free_completed`` events, the reserved series
    ``segment_alloc``/``segment_map`` and ``segment_free``/``segment_unmap``, each from the counters'
    values when recording began. The snapshot (a pickle, as ``_dump_snapshot`` writes it) is returned
    base64-encoded, its stacks cut to ``frames`` frames.
    """
    dev = _device(device)
    torch.cuda.synchronize(dev)
    allocated0, reserved0 = torch.cuda.memory_allocated(dev), torch.cuda.memory_reserved(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    torch.cuda.memory._record_memory_history(enabled="all", context="all", stacks="python", max_entries=max_entries)
    try:
        fn()
        torch.cuda.synchronize(dev)
        snapshot = torch.cuda.memory._snapshot(dev)
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    max_allocated, max_reserved = torch.cuda.max_memory_allocated(dev), torch.cuda.max_memory_reserved(dev)
    trace = snapshot["device_traces"][dev.index] if len(snapshot["device_traces"]) > dev.index else []
    series = allocator_series(trace, allocated0, reserved0, max_points)
    _trim_frames(snapshot, frames)
    raw = pickle.dumps(snapshot)
    return {
        **series,
        "max_allocated_bytes": int(max_allocated),
        "max_reserved_bytes": int(max_reserved),
        "trace_events_count": len(trace),
        "snapshot_pickle_bytes": len(raw),
        "snapshot_pickle_base64": base64.b64encode(raw).decode("ascii"),
    }


@contextlib.contextmanager
def expandable_segments(device: str | torch.device) -> Iterator[None]:
    """The caching allocator with ``expandable_segments:True`` inside the block (as ``PYTORCH_CUDA_ALLOC_CONF``).

    The cache is emptied on the way in and out, so the block's segments are all of the new kind.
    """
    dev = _device(device)
    torch.cuda.synchronize(dev)
    torch.cuda.empty_cache()
    torch.cuda.memory._set_allocator_settings("expandable_segments:True")
    try:
        yield
    finally:
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.memory._set_allocator_settings("expandable_segments:False")


def peak_allocated_and_reserved(fn: Callable[[], None], device: str | torch.device) -> dict:
    """The allocator's peaks over ``fn``."""
    dev = _device(device)
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    fn()
    torch.cuda.synchronize(dev)
    return {"max_allocated_bytes": int(torch.cuda.max_memory_allocated(dev)),
            "max_reserved_bytes": int(torch.cuda.max_memory_reserved(dev))}


def empty_cache_release(device: str | torch.device) -> dict:
    """Reserved bytes before and after ``torch.cuda.empty_cache()`` (allocated does not change)."""
    dev = _device(device)
    torch.cuda.synchronize(dev)
    before, allocated = torch.cuda.memory_reserved(dev), torch.cuda.memory_allocated(dev)
    torch.cuda.empty_cache()
    return {"allocated_bytes": int(allocated), "reserved_before_bytes": int(before),
            "reserved_after_bytes": int(torch.cuda.memory_reserved(dev))}
