"""The experiment contract, as checks the contract test and the canned-data tests share."""
from __future__ import annotations

import math

MEASURE_WORDS = {"peak", "memory", "time", "duration", "latency", "bandwidth", "footprint", "allocated",
                 "reserved", "elapsed", "overhead", "throughput"}
UNIT_WORDS = {"bytes", "ms", "s", "us", "ns", "ratio", "share", "fraction", "pct", "flops", "flop", "count", "gib",
              "mib", "gb", "tflops", "tokens", "steps", "elements", "params"}


def non_finite(value: object, path: str = "data") -> list[str]:
    """Paths of NaN or infinite floats."""
    if isinstance(value, float) and not math.isfinite(value):
        return [path]
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += non_finite(v, f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out += non_finite(v, f"{path}[{i}]")
    return out


def unitless_measures(value: object, path: str = "data", key: str = "") -> list[str]:
    """Numbers whose key names a measured quantity (peak, time, memory, ...) but no unit."""
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += unitless_measures(v, f"{path}.{k}", str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out += unitless_measures(v, f"{path}[{i}]", key)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        tokens = set(key.lower().split("_"))
        if tokens & MEASURE_WORDS and not tokens & UNIT_WORDS:
            out.append(path)
    return out
