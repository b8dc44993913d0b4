"""Timing through ``torch.utils.benchmark``: warm-up, median and spread, CUDA synchronised."""
from __future__ import annotations

from typing import Callable

import torch
import torch.utils.benchmark as benchmark


def time_fn(fn: Callable[[], object], min_run_time_s: float = 0.2, label: str = "") -> dict:
    """Median and interquartile range of ``fn()`` in milliseconds.

    ``Timer.blocked_autorange`` runs a warm-up, picks a block size, and
    synchronises CUDA around each block, so the figures are wall-clock times of
    finished work.
    """
    fn()  # warm-up outside the measurement (allocator, lazy init, autotuning)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, label=label, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time_s)
    return {
        "median_ms": float(m.median * 1e3),
        "iqr_ms": float(m.iqr * 1e3),
        "runs": int(len(m.times)),
    }
