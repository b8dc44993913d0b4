"""Timing through ``torch.utils.benchmark``: warm-up, median and spread, CUDA synchronised.

``time_fn`` times one function. ``interleaved_times`` times several in turns: comparing two
functions timed a few seconds apart on a shared machine compares the load as much as the code,
so each gets a share of every round and the per-block times of all rounds are pooled.
"""
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


def interleaved_times(fns: dict[str, Callable[[], object]], min_run_time_s: float, rounds: int = 3) -> dict:
    """``{name: {"median_ms", "iqr_ms", "runs"}}``; each function gets ``min_run_time_s`` in all."""
    pooled: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up outside the measurement
    for _ in range(rounds):
        for name, fn in fns.items():
            timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
            pooled[name].extend(timer.blocked_autorange(min_run_time=min_run_time_s / rounds).times)
    out = {}
    for name, times in pooled.items():
        t = torch.tensor(times, dtype=torch.float64) * 1e3
        q1, med, q3 = (float(torch.quantile(t, q)) for q in (0.25, 0.5, 0.75))
        out[name] = {"median_ms": med, "iqr_ms": q3 - q1, "runs": len(times)}
    return out
