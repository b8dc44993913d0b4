"""Saved-for-backward bytes over a whole step: the total saved and the most alive at once.

``experiments.lib.saved`` counts what one forward pass saves. A pipeline
schedule runs several micro-batches' forwards and backwards interleaved, so
what matters there is how many bytes are saved *and not yet released* at the
worst moment: 1F1B keeps fewer micro-batches in flight than GPipe
(Narayanan et al. 2021). This counter follows each saved storage from the pack
hook of ``torch.autograd.graph.saved_tensors_hooks`` until autograd drops the
packed object (after the node's backward), and records the live maximum.

DTensors (tensor parallelism) are counted by their local shard: that is what
the rank holds. Parameters' storages are model state, not activations, and
are skipped: those given as ``exclude``, and those that ``parameters_now()``
returns when a tensor is saved (FSDP2 registers each unit's all-gathered
weights on the module while it runs, and autograd saves them).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch


def local(t: torch.Tensor) -> torch.Tensor:
    """The rank's own piece of a tensor: a DTensor's local shard, else the tensor itself.

    DTensor keeps the shard in ``_local_tensor``; ``to_local()`` returns a view of it through a dispatched
    op, which inside a pack hook (and under MemTracker's dispatch mode) costs milliseconds per call.
    """
    shard = getattr(t, "_local_tensor", None)
    if isinstance(shard, torch.Tensor):
        return shard
    if hasattr(t, "to_local"):
        with torch.no_grad():
            return t.to_local()
    return t


def storage_key(t: torch.Tensor) -> tuple:
    st = local(t).untyped_storage()
    return (t.device.type, t.device.index, st.data_ptr(), st.nbytes())


class _Packed:
    """What autograd keeps instead of the tensor; releasing it releases the count."""

    __slots__ = ("tensor", "key", "counter")

    def __init__(self, tensor: torch.Tensor, key: tuple | None, counter: "LiveSavedCounter") -> None:
        self.tensor, self.key, self.counter = tensor, key, counter

    def __del__(self) -> None:
        if self.key is not None:
            self.counter._release(self.key)


class LiveSavedCounter:
    """``with LiveSavedCounter(exclude=params) as c: ...forward and backward...``; then read
    ``c.total_bytes`` (every distinct storage saved), ``c.peak_live_bytes`` (the most alive at one time),
    ``c.live_bytes`` (still held) and ``c.pack_calls``."""

    def __init__(self, exclude: Iterable[torch.Tensor] = (),
                 parameters_now: Callable[[], Iterable[torch.Tensor]] | None = None) -> None:
        self._excluded = {storage_key(t) for t in exclude}
        self._parameters_now = parameters_now
        self._refs: dict[tuple, int] = {}
        self._hooks = None
        self.total_bytes = 0
        self.live_bytes = 0
        self.peak_live_bytes = 0
        self.pack_calls = 0

    def _pack(self, t: torch.Tensor) -> _Packed:
        self.pack_calls += 1
        key = storage_key(t)
        if key in self._excluded or (self._parameters_now is not None
                                     and key in {storage_key(p) for p in self._parameters_now()}):
            return _Packed(t, None, self)
        if key not in self._refs:
            self._refs[key] = 0
            self.total_bytes += key[3]
            self.live_bytes += key[3]
            self.peak_live_bytes = max(self.peak_live_bytes, self.live_bytes)
        self._refs[key] += 1
        return _Packed(t, key, self)

    def _release(self, key: tuple) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live_bytes -= key[3]

    def __enter__(self) -> "LiveSavedCounter":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda p: p.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
