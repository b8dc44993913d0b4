"""Pin the CPU thread count for the duration of a run, and put it back afterwards.

The quick profiles use tensors so small that a second intra-op thread brings
no speed-up, while on a shared machine it makes every op wait for a thread
the scheduler has parked: step times then swing by tens of times. One thread
gives times that mean something. CUDA runs are left alone.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def cpu_threads(n: int, device: str) -> Iterator[int]:
    """Run the block with ``n`` intra-op threads on CPU (``n <= 0`` or a CUDA device: unchanged)."""
    before = torch.get_num_threads()
    if n > 0 and torch.device(device).type == "cpu":
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def single_thread(device: str) -> contextlib.AbstractContextManager[int]:
    """One intra-op thread on CPU for the block: the quick profiles' tiny tensors gain nothing from more."""
    return cpu_threads(1, device)
