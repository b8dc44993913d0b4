"""Where the bytes are: live and peak memory by category, on any device.

PyTorch's ``MemTracker`` (``torch.distributed._tools.mem_tracker``) follows
every storage through a ``TorchDispatchMode`` and labels it as parameter,
buffer, gradient, activation, temporary or optimizer state. It works on CPU as
well as CUDA, which is why the handbook can measure on any host. It is a
private API, so this module is the only place that imports it.
On CUDA the allocator's own ``max_memory_allocated`` is recorded beside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import torch

CATEGORIES = ("params", "buffers", "grads", "activations", "temporaries", "optimizer", "other")


def _category_names() -> dict:
    from torch.distributed._tools.mem_tracker import _MemRefType

    return {
        _MemRefType.PARAM: "params",
        _MemRefType.BUFFER: "buffers",
        _MemRefType.GRAD: "grads",
        _MemRefType.ACT: "activations",
        _MemRefType.TEMP: "temporaries",
        _MemRefType.OPT: "optimizer",
        _MemRefType.OTH: "other",
    }


@dataclass
class Snapshot:
    """Bytes per category on one device, and their total."""

    by_category: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def as_dict(self) -> dict:
        return {**{f"{k}_bytes": v for k, v in self.by_category.items()}, "total_bytes": self.total}


def _global_tracker():
    """A ``MemTracker`` that keeps only global peaks, not per-module statistics.

    Per-module statistics refuse a module that runs twice in one tracked region
    (gradient accumulation, checkpoint recomputation) and cost a deep copy per
    op. Without them, storages are still labelled: parameter, buffer, gradient
    and optimizer state by registration and the optimizer hook; anything else
    allocated in backward counts as a temporary (checkpoint recomputation
    included), anything allocated outside backward as an activation.
    """
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError as exc:
        raise ImportError(f"the memory tracker needs torch 2.5 or newer with torch.distributed "
                          f"(this is torch {torch.__version__}): {exc}") from exc

    class GlobalMemTracker(MemTracker):
        def _pre_fw_hook(self, *args, **kwargs) -> None:
            pass

        def _post_fw_hook(self, *args, **kwargs) -> None:
            pass

        def _pre_bw_hook(self, *args, **kwargs) -> None:
            pass

        def _post_bw_hook(self, *args, **kwargs) -> None:
            pass

    return GlobalMemTracker()


def _module_tracker():
    """PyTorch's ``MemTracker`` with its per-module statistics (``memory_tracking``)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    return MemTracker()


class MemoryTracker:
    """Track live and peak bytes of everything torch allocates on ``device``.

    Use as a context manager around the code to measure; register the model and
    optimizer first with ``track`` so their tensors are labelled. ``per_module=True``
    also keeps MemTracker's statistics of each module (``module_peaks``); it refuses
    a root module that runs twice inside the block (a second step, accumulation).
    """

    def __init__(self, device: str | torch.device, per_module: bool = False) -> None:
        self.device = torch.device(device)
        self.per_module = per_module
        self._tracker = _module_tracker() if per_module else _global_tracker()
        self._names = _category_names()
        self.cuda_max_allocated_bytes: int | None = None
        self._modules: list[torch.nn.Module] = []

    def track(self, *objects: object) -> "MemoryTracker":
        """Label the tensors of modules and optimizers that exist before tracking starts."""
        self._tracker.track_external(*objects)
        self._modules.extend(o for o in objects if isinstance(o, torch.nn.Module))
        return self

    def __enter__(self) -> "MemoryTracker":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._tracker.__enter__()
        for module in self._modules:  # label gradients as they are created (hooks removed on exit)
            self._tracker._track_module_params_and_buffers(module, install_grad_hooks=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._tracker.__exit__(*exc)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.cuda_max_allocated_bytes = int(torch.cuda.max_memory_allocated(self.device))

    def reset_peak(self) -> None:
        """Forget the peak so far (for example after a warm-up step): the peak becomes what is live now."""
        snap = self._tracker.get_tracker_snapshot()
        self._tracker._peak_mem_snap = snap
        self._tracker._peak_mem = {dev: cats["Total"] for dev, cats in snap.items()}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def _snapshot(self, kind: str) -> Snapshot:
        return self._convert(self._tracker.get_tracker_snapshot(kind))

    def _convert(self, raw: dict) -> Snapshot:
        """MemTracker's ``{device: {reference type: bytes, "Total": bytes}}``, on this tracker's device."""
        per_device = {}
        for dev, cats in raw.items():
            if torch.device(dev).type == self.device.type:
                per_device = cats
        out = Snapshot()
        for ref, name in self._names.items():
            out.by_category[name] = int(per_device.get(ref, 0))
        out.total = int(per_device.get("Total", sum(out.by_category.values())))
        return out

    def peak(self) -> Snapshot:
        return self._snapshot("peak")

    def current(self) -> Snapshot:
        return self._snapshot("current")

    def module_peaks(self, max_depth: int = 3) -> dict[str, dict]:
        """Each module's statistics from MemTracker (``per_module=True``), in the order they first ran.

        Keyed by the module's name (the root's class name, then attribute paths: ``GPT.layers.0``),
        names of at most ``max_depth`` dotted parts. Per module: the bytes of its own parameters, of its inputs and
        outputs (first call), and the highest live memory while it ran in forward and in backward
        (``None`` where it did not run), as ``{"total_bytes", "by_category_bytes"}`` of everything
        live then, not only the module's own tensors: MemTracker's ``Peak-Forward`` and
        ``Peak-Backward`` snapshots, what ``display_modulewise_snapshots`` prints.
        """
        if not self.per_module:
            raise RuntimeError("module_peaks() needs MemoryTracker(device, per_module=True)")
        from torch.distributed._tools.mem_tracker import _ModState

        out = {}
        for stats in self._tracker.memory_tracking.values():
            if stats.mod_fqn.count(".") >= max_depth:
                continue
            entry = {"parameters_bytes": int(stats.parameter_mem), "inputs_bytes": int(stats.input_mem),
                     "outputs_bytes": int(getattr(stats, "output_mem", 0))}
            for phase, state in (("forward", _ModState.PEAK_FW), ("backward", _ModState.PEAK_BW)):
                snaps = [self._convert(s) for s in stats.snapshots.get(state, [])]
                best = max(snaps, key=lambda s: s.total) if snaps else None
                entry[f"{phase}_peak"] = {"total_bytes": best.total, "by_category_bytes": dict(best.by_category)} \
                    if best is not None else None
            out[stats.mod_fqn] = entry
        return out


def close_phase(tracker: MemoryTracker) -> dict:
    """One phase of a step just ended (forward, backward, the optimizer step): its peak, what is live at its end
    (by category) and, on CUDA, ``max_memory_allocated``; then the tracker's peak starts over for the next phase."""
    cuda = tracker.device.type == "cuda"
    out = {"peak": tracker.peak().as_dict(), "end": tracker.current().as_dict(),
           "cuda_max_allocated_bytes": int(torch.cuda.max_memory_allocated(tracker.device)) if cuda else None}
    tracker.reset_peak()
    return out


def tensor_bytes(tensors: object) -> int:
    """Bytes of the distinct storages behind ``tensors`` (each storage counted once).

    Accepts a tensor, or any nesting of lists, tuples and dicts holding tensors.
    """
    seen: dict[tuple, int] = {}

    def visit(obj: object) -> None:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            seen[(obj.device.type, obj.device.index, storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        elif isinstance(obj, dict):
            for v in obj.values():
                visit(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v)

    visit(tensors)
    return sum(seen.values())


def param_bytes(module: torch.nn.Module) -> int:
    return tensor_bytes(list(module.parameters()))


def grad_bytes(module: torch.nn.Module) -> int:
    return tensor_bytes([p.grad for p in module.parameters() if p.grad is not None])


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in ``optimizer.state``, including the small ``step`` tensors."""
    return tensor_bytes([dict(s) for s in optimizer.state.values()])
