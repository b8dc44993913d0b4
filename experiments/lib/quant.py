"""Int8 quantization, two ways: simulated in float ("fake") and in integers ("real").

Fake quantization rounds a float tensor to the int8 grid and multiplies back,
so the rest of the graph still runs in float. A real integer graph keeps int8
weights and inputs, accumulates products in an integer accumulator and maps
the accumulator to the int8 output with a fixed-point multiplier and a shift,
as in Jacob et al. 2018 ("Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", section 2.2) and the gemmlowp /
TFLite kernels that implement it (``SaturatingRoundingDoublingHighMul`` and
``RoundingDivideByPOT``). All quantization here is symmetric (zero point 0).

Integer products are computed in float64, which is exact while every partial
sum stays below 2**53; int8 x int8 sums of a few million terms are far below.
That keeps the code the same on CPU and CUDA (CUDA has no int64 matmul).
"""
from __future__ import annotations

import math

import torch

QMIN, QMAX = -128, 127           # int8
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def symmetric_scale(x: torch.Tensor, channel_dim: int | None = None, percentile: float = 100.0,
                    qmax: int = QMAX) -> torch.Tensor:
    """Scale that maps the ``percentile`` of |x| onto ``qmax``.

    ``channel_dim=None`` gives one scale for the tensor (per-tensor);
    otherwise one per slice along ``channel_dim`` (per-channel), shaped to
    broadcast against ``x``. Values beyond the chosen range are clipped.
    """
    a = x.detach().abs().float()
    if channel_dim is None:
        flat = a.reshape(-1)
        r = flat.max() if percentile >= 100 else _nearest_rank(flat.unsqueeze(0), percentile)[0]
        return (r.clamp_min(1e-12) / qmax).reshape(())
    moved = a.movedim(channel_dim, 0).reshape(a.shape[channel_dim], -1)
    r = moved.max(dim=1).values if percentile >= 100 else _nearest_rank(moved, percentile)
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    return (r.clamp_min(1e-12) / qmax).reshape(shape)


def _nearest_rank(rows: torch.Tensor, percentile: float) -> torch.Tensor:
    """The nearest-rank percentile of each row (``torch.quantile`` refuses more than 2**24 elements)."""
    n = rows.shape[1]
    k = min(n, max(1, math.ceil(percentile / 100.0 * n)))
    return rows.kthvalue(k, dim=1).values


def quantize(x: torch.Tensor, scale: torch.Tensor, qmin: int = QMIN, qmax: int = QMAX) -> torch.Tensor:
    """Integer codes ``clamp(round(x / scale))`` as int64 (round half to even, as ``torch.round``)."""
    return torch.clamp(torch.round(x / scale), qmin, qmax).to(torch.int64)


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.to(torch.float32) * scale


def fake_quant(x: torch.Tensor, scale: torch.Tensor, qmin: int = QMIN, qmax: int = QMAX) -> torch.Tensor:
    """Quantize-dequantize in float, with a straight-through gradient inside the range."""
    y = torch.clamp(torch.round(x / scale), qmin, qmax) * scale
    inside = ((x / scale) >= qmin) & ((x / scale) <= qmax)
    # Forward value of y, gradient of x where not clipped (straight-through estimator).
    return x * inside + (y - x * inside).detach()


# --- fixed-point requantization (gemmlowp / TFLite semantics) ---------------------------------

def quantize_multiplier(m: float) -> tuple[int, int]:
    """Write a real multiplier ``0 < m < 1`` as ``m0 * 2**-31 * 2**-right_shift``.

    ``m0`` is an int32 in [2**30, 2**31): the mantissa of ``m`` in Q31. Returns
    ``(m0, right_shift)``; ``right_shift >= 0``.
    """
    if not 0.0 < m < 1.0:
        raise ValueError(f"requantization multiplier must lie in (0, 1), got {m}")
    mantissa, exponent = math.frexp(m)       # m = mantissa * 2**exponent, mantissa in [0.5, 1)
    m0 = int(round(mantissa * 2 ** 31))
    if m0 == 2 ** 31:                        # mantissa rounded up to 1.0
        m0 //= 2
        exponent += 1
    return m0, -exponent


def saturating_rounding_doubling_high_mul(a: torch.Tensor, b: int | torch.Tensor) -> torch.Tensor:
    """High 32 bits of ``2*a*b`` rounded to nearest (ties away from zero), int64 in and out."""
    ab = a.to(torch.int64) * b
    nudge = torch.where(ab >= 0, torch.full_like(ab, 1 << 30), torch.full_like(ab, 1 - (1 << 30)))
    out = torch.div(ab + nudge, 1 << 31, rounding_mode="trunc")
    overflow = (a == INT32_MIN) & (torch.as_tensor(b) == INT32_MIN)
    return torch.where(overflow, torch.full_like(out, INT32_MAX), out)


def rounding_divide_by_pot(x: torch.Tensor, exponent: int | torch.Tensor) -> torch.Tensor:
    """``x / 2**exponent`` rounded to nearest, ties away from zero (arithmetic shift + correction)."""
    exponent = torch.as_tensor(exponent, dtype=torch.int64, device=x.device)
    mask = (torch.ones_like(exponent) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).to(torch.int64)
    return (x >> exponent) + (remainder > threshold).to(torch.int64)


def requantize(acc: torch.Tensor, m0: int | torch.Tensor, right_shift: int | torch.Tensor,
               qmin: int = QMIN, qmax: int = QMAX) -> torch.Tensor:
    """int32 accumulator -> int8 output code: fixed-point multiply, rounding shift, clamp."""
    return torch.clamp(rounding_divide_by_pot(saturating_rounding_doubling_high_mul(acc, m0), right_shift),
                       qmin, qmax)


def multipliers(scale_x: torch.Tensor, scale_w: torch.Tensor, scale_y: torch.Tensor,
                n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel ``(m0, right_shift)`` for ``M = s_x * s_w / s_y`` as int64 tensors."""
    m = (scale_x.double() * scale_w.double().reshape(-1) / scale_y.double()).expand(n_out)
    pairs = [quantize_multiplier(float(v)) for v in m.tolist()]
    return (torch.tensor([p[0] for p in pairs], dtype=torch.int64),
            torch.tensor([p[1] for p in pairs], dtype=torch.int64))


# --- integer layers ---------------------------------------------------------------------------

def int_accumulate_linear(q_x: torch.Tensor, q_w: torch.Tensor, q_bias: torch.Tensor | None) -> torch.Tensor:
    """Exact integer ``q_x @ q_w.T + q_bias`` (int64 result, computed exactly in float64)."""
    acc = torch.round(q_x.double() @ q_w.double().T).to(torch.int64)
    return acc if q_bias is None else acc + q_bias


def int_accumulate_conv2d(q_x: torch.Tensor, q_w: torch.Tensor, q_bias: torch.Tensor | None,
                          stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Exact integer 2-D convolution, accumulator as int64 of shape (N, C_out, H, W)."""
    acc = torch.round(torch.nn.functional.conv2d(q_x.double(), q_w.double(), None, stride, padding)).to(torch.int64)
    return acc if q_bias is None else acc + q_bias.reshape(1, -1, 1, 1)


def saturating_accumulate_linear(q_x: torch.Tensor, q_w: torch.Tensor, bits: int) -> torch.Tensor:
    """``q_x @ q_w.T`` with a ``bits``-wide accumulator that saturates after every addition.

    Runs the reduction term by term, as a DSP's saturating multiply-accumulate
    would; returns the saturated sums as int64.
    """
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    acc = torch.zeros(q_x.shape[0], q_w.shape[0], dtype=torch.int64, device=q_x.device)
    for k in range(q_x.shape[1]):
        acc = torch.clamp(acc + q_x[:, k:k + 1] * q_w[:, k].unsqueeze(0), lo, hi)
    return acc


def channel_view(t: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    """Reshape a per-channel vector to broadcast along ``dim`` of an ``ndim`` tensor."""
    shape = [1] * ndim
    shape[dim] = -1
    return t.reshape(shape)
