"""Jinja filters that turn measured numbers into text. Pages format; they never compute."""
from __future__ import annotations

import math

import jinja2

_IEC = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def _finite(value: float, name: str) -> float:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # names the missing key, as any other use would
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"the {name} filter needs a number, not {type(value).__name__} ({value!r})")
    return float(value)


def num(value: float, sig: int = 3) -> str:
    """``value`` with ``sig`` significant digits, plain notation for everyday magnitudes."""
    v = _finite(value, "num")
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    if mag >= 6 or mag < -3:
        return sci(v, sig - 1)
    decimals = max(sig - 1 - mag, 0)
    return f"{v:,.{decimals}f}"


def grouped(value: float) -> str:
    """An integer with thousands separators: 1,234,567."""
    return f"{int(round(_finite(value, 'grouped'))):,}"


def bytes_(value: float, sig: int = 3) -> str:
    """Bytes in IEC units (1 KiB = 1024 B) with ``sig`` significant digits."""
    v = _finite(value, "bytes")
    if abs(v) < 1024:
        return f"{int(v)} B" if v == int(v) else f"{num(v, sig)} B"
    exp = min(int(math.log(abs(v), 1024)), len(_IEC) - 1)
    return f"{num(v / 1024 ** exp, sig)} {_IEC[exp]}"


def ratio(value: float, sig: int = 3) -> str:
    return f"{num(value, sig)}×"


def pct(value: float, decimals: int = 1) -> str:
    """A fraction as a percentage: 0.123 -> 12.3 %."""
    return f"{_finite(value, 'pct') * 100:.{decimals}f} %"


def ms(value: float, sig: int = 3) -> str:
    return f"{num(value, sig)} ms"


def sci(value: float, decimals: int = 1) -> str:
    return f"{_finite(value, 'sci'):.{decimals}e}"


def signed(value: float, sig: int = 3) -> str:
    v = _finite(value, "signed")
    return ("+" if v > 0 else "") + num(v, sig)


def yesno(value: bool) -> str:
    """A measured yes/no (a boolean in the data) as a word."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if not isinstance(value, bool):
        raise TypeError(f"the yesno filter needs true or false, not {type(value).__name__} ({value!r})")
    return "yes" if value else "no"


FILTERS = {"num": num, "grouped": grouped, "bytes": bytes_, "ratio": ratio, "pct": pct, "ms": ms,
           "sci": sci, "signed": signed, "yesno": yesno}
