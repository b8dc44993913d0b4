"""Unit choices for labels in summaries and figures (standard library only, no torch).

The pages format numbers with the site's filters; an experiment's ``summarize``
and ``plot`` use these for the labels they make themselves (axis ticks, row
labels), so both sides speak the same units.
"""
from __future__ import annotations

IEC = ("B", "KiB", "MiB", "GiB", "TiB")


def iec_bytes(n: float) -> str:
    """A byte count in binary units, without trailing zeros: 65536 -> "64 KiB", 1536 -> "1.5 KiB"."""
    value = float(n)
    for unit in IEC:
        if abs(value) < 1024 or unit == IEC[-1]:
            return f"{value:g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def gpt_scale_label(data: dict) -> str:
    """The caption's scale for a result that records its reference GPT under ``data["model"]`` (layers, d_model,
    parameters, seq, batch); a result from older code without those fields says so instead of failing."""
    try:
        m = data["model"]
        return (f"{m['layers']}-layer GPT, d_model {m['d_model']}, {m['parameters']:,} params, "
                f"seq {m['seq']}, batch {m['batch']}")
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"
