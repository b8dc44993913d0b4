"""Run small CPU workloads on one thread.

The handbook's on-device experiments use tiny tensors (8x8 images, a few
thousand weights). With intra-op parallelism on a small, shared CPU each op
pays thread wake-up and synchronisation that dwarf the work: on the 2-core
build host a small CNN step took ~80x longer with 2 threads than with 1 when
other processes were busy. ``single_thread`` pins torch to one thread for the
duration of a ``with`` block on CPU and restores the previous setting after;
on CUDA it does nothing.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def single_thread(device: str) -> Iterator[None]:
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
