"""FLOP counts through ``torch.utils.flop_counter.FlopCounterMode``."""
from __future__ import annotations

from typing import Callable

from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], object]) -> int:
    """Total FLOPs of the matmul-like ops that ``fn()`` dispatches (forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
