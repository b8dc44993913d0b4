# %%
"""Fake against real int8 quantization: where a float simulation and an integer graph disagree.

Question: fake quantization (quantize-dequantize in float) is how int8 models
are usually trained and evaluated in PyTorch; an on-device integer graph
computes with int8 inputs and weights, an integer accumulator and a
fixed-point requantization instead. How far apart are their outputs, and what
makes them differ?

Method: a linear layer fed with real digit images (64 pixels) and a 3x3
convolution fed with the feature maps of a first conv, each computed in fp32,
with fake quantization (int8 weights per tensor or per output channel, int8
activations per tensor), and as an integer graph (exact integer accumulation,
int32 bias, fixed-point multiplier ``m0 * 2**-31 * 2**-shift`` as in
Jacob et al. 2018). Then two sweeps: the conv's input clipping range (which
percentile of |x| maps to 127) and the accumulator (exact int32 against
narrower saturating ones, and fake quantization's fp32 sums) as the reduction
length grows.

Run: ``python -m experiments.quantized_graph --profile quick``
"""

# %%
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from experiments.lib import quant as Q
from experiments.lib.threads import single_thread
from experiments.lib.digits import PIXEL_MAX, load, load_arrays


@dataclass(frozen=True)
class Config:
    batch: int = 256                  # images per evaluation
    linear_out: int = 32              # output features of the linear layer
    conv_in: int = 8                  # channels produced by the first (fp32) conv
    conv_out: int = 16
    image_size: int = 16              # digits upsampled to this size for the conv
    clip_percentiles: tuple = (100.0, 99.99, 99.95, 99.9, 99.8, 99.5, 99.0, 98.0, 95.0)
    accumulator_sizes: tuple = (8, 16, 32)   # image sizes -> reduction length = size**2
    accumulator_batch: int = 64
    accumulator_bits: tuple = (16, 18, 20, 22, 24)
    seed: int = 0


PROFILES = {
    "test": Config(batch=32, linear_out=8, conv_in=4, conv_out=4, image_size=8,
                   clip_percentiles=(100.0, 99.0, 90.0), accumulator_sizes=(8, 16), accumulator_batch=16,
                   accumulator_bits=(16, 20, 24)),
    "quick": Config(),
    "full": Config(batch=1797, linear_out=128, conv_in=16, conv_out=64, image_size=32,
                   accumulator_sizes=(8, 16, 32, 64), accumulator_batch=256),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    # The integer emulation runs on the CPU whatever the device: the GPU host measures quick's sizes.
    "gpu": Config(),
}
TIMEOUT_S = 600


# %% [markdown]
# ## One layer in three arithmetics

# %%
def _compare(y_fp: torch.Tensor, y_fake: torch.Tensor, code_fake: torch.Tensor, code_real: torch.Tensor,
             scale_y: torch.Tensor) -> dict:
    """Errors against fp32 and the agreement between fake and real output codes."""
    y_real = Q.dequantize(code_real, scale_y)
    ref = y_fp.pow(2).mean().sqrt()
    diff = (code_fake - code_real).abs()
    return {
        "fake_vs_fp32_rel_rms": float((y_fake - y_fp).pow(2).mean().sqrt() / ref),
        "real_vs_fp32_rel_rms": float((y_real - y_fp).pow(2).mean().sqrt() / ref),
        "fake_vs_fp32_max_abs": float((y_fake - y_fp).abs().max()),
        "output_lsb": float(scale_y),
        "codes_equal_fraction": float((diff == 0).double().mean()),
        "codes_off_by_one_fraction": float((diff == 1).double().mean()),
        "codes_max_diff_lsb": int(diff.max()),
        "outputs": int(diff.numel()),
    }


def linear_three_ways(x: torch.Tensor, layer: torch.nn.Linear, per_channel: bool,
                      x_percentile: float = 100.0) -> dict:
    """fp32, fake-quantized and integer outputs of one linear layer, compared."""
    w, b = layer.weight.detach(), layer.bias.detach()
    y_fp = x @ w.T + b
    s_x = Q.symmetric_scale(x, percentile=x_percentile)
    s_w = Q.symmetric_scale(w, channel_dim=0 if per_channel else None)
    s_y = Q.symmetric_scale(y_fp)
    s_b = (s_x * s_w).reshape(-1)
    # Fake: float weights and inputs on the int8 grid, bias on its int32 grid, float sum, output rounded.
    y_fake_pre = Q.fake_quant(x, s_x) @ Q.fake_quant(w, s_w).T + torch.round(b / s_b) * s_b
    code_fake = Q.quantize(y_fake_pre, s_y)
    y_fake = Q.dequantize(code_fake, s_y)
    # Real: int8 codes, exact integer accumulation, fixed-point requantization.
    q_b = torch.round(b / s_b).to(torch.int64)
    acc = Q.int_accumulate_linear(Q.quantize(x, s_x), Q.quantize(w, s_w), q_b)
    m0, shift = Q.multipliers(s_x, s_w, s_y, w.shape[0])
    code_real = Q.requantize(acc, m0, shift)
    out = _compare(y_fp, y_fake, code_fake, code_real, s_y)
    out["input_clipped_fraction"] = float(((x / s_x).round().abs() > Q.QMAX).double().mean())
    out["max_abs_accumulator"] = int(acc.abs().max())
    return out


def conv_three_ways(x: torch.Tensor, layer: torch.nn.Conv2d, per_channel: bool,
                    x_percentile: float = 100.0) -> dict:
    w, b = layer.weight.detach(), layer.bias.detach()
    conv = torch.nn.functional.conv2d
    y_fp = conv(x, w, b, padding=1)
    s_x = Q.symmetric_scale(x, percentile=x_percentile)
    s_w = Q.symmetric_scale(w, channel_dim=0 if per_channel else None)
    s_y = Q.symmetric_scale(y_fp)
    s_b = (s_x * s_w).reshape(-1)
    y_fake_pre = conv(Q.fake_quant(x, s_x), Q.fake_quant(w, s_w), torch.round(b / s_b) * s_b, padding=1)
    code_fake = Q.quantize(y_fake_pre, s_y)
    y_fake = Q.dequantize(code_fake, s_y)
    q_b = torch.round(b / s_b).to(torch.int64)
    acc = Q.int_accumulate_conv2d(Q.quantize(x, s_x), Q.quantize(w, s_w), q_b, padding=1)
    m0, shift = Q.multipliers(s_x, s_w, s_y, w.shape[0])
    code_real = Q.requantize(acc, Q.channel_view(m0, 1, 4), Q.channel_view(shift, 1, 4))
    out = _compare(y_fp, y_fake, code_fake, code_real, s_y)
    out["input_clipped_fraction"] = float(((x / s_x).round().abs() > Q.QMAX).double().mean())
    out["max_abs_accumulator"] = int(acc.abs().max())
    return out


# %% [markdown]
# ## Accumulator width: exact int32, narrower saturating accumulators, and fake quantization's fp32 sums

# %%
def accumulator_sweep(cfg: Config, images: torch.Tensor) -> list[dict]:
    rows = []
    for size in cfg.accumulator_sizes:
        torch.manual_seed(cfg.seed + size)
        x = torch.nn.functional.interpolate(images[: cfg.accumulator_batch], size=(size, size),
                                            mode="bilinear", align_corners=False).flatten(1).clamp_min(0)
        k = x.shape[1]
        layer = torch.nn.Linear(k, cfg.linear_out)
        w = layer.weight.detach()
        s_x, s_w = Q.symmetric_scale(x), Q.symmetric_scale(w, channel_dim=0)
        q_x, q_w = Q.quantize(x, s_x), Q.quantize(w, s_w)
        acc32 = Q.int_accumulate_linear(q_x, q_w, None)
        y_fp = x @ w.T
        s_y = Q.symmetric_scale(y_fp)
        m0, shift = Q.multipliers(s_x, s_w, s_y, w.shape[0])
        code32 = Q.requantize(acc32, m0, shift)
        code_fake = Q.quantize(Q.dequantize(q_x, s_x) @ Q.dequantize(q_w, s_w).T, s_y)
        by_bits = []
        for bits in cfg.accumulator_bits:
            acc_n = Q.saturating_accumulate_linear(q_x, q_w, bits=bits)
            by_bits.append({"bits": bits,
                            "saturated_fraction": float((acc_n != acc32).double().mean()),
                            "codes_wrong_fraction": float((Q.requantize(acc_n, m0, shift) != code32).double().mean())})
        rows.append({
            "reduction_length": k,
            "max_abs_accumulator": int(acc32.abs().max()),
            "by_bits": by_bits,
            "fake_fp32_codes_differ_fraction": float((code_fake != code32).double().mean()),
        })
    return rows


# %%
def run(cfg: Config, device: str) -> dict:
    with single_thread(device):  # pins CPU runs only; on a GPU host the emulation's CPU is otherwise idle
        return _run(cfg, device)


def _run(cfg: Config, device: str) -> dict:
    # Integer emulation uses float64 and per-channel Python loops: run on CPU whatever the device.
    torch.manual_seed(cfg.seed)
    data = load("cpu", size=cfg.image_size, seed=cfg.seed)
    raw = load("cpu", size=8, seed=cfg.seed)
    x_lin = raw["x_train"][: cfg.batch].flatten(1)
    lin = torch.nn.Linear(64, cfg.linear_out)
    first = torch.nn.Conv2d(1, cfg.conv_in, 3, padding=1)
    conv = torch.nn.Conv2d(cfg.conv_in, cfg.conv_out, 3, padding=1)
    with torch.no_grad():
        x_conv = torch.relu(first(data["x_train"][: cfg.batch]))
        layers = {
            "linear": {g: linear_three_ways(x_lin, lin, g == "per_channel") for g in ("per_tensor", "per_channel")},
            "conv": {g: conv_three_ways(x_conv, conv, g == "per_channel") for g in ("per_tensor", "per_channel")},
        }
        clipping = []
        for p in cfg.clip_percentiles:
            row = conv_three_ways(x_conv, conv, True, x_percentile=p)
            clipping.append({"percentile": p, "input_clipped_fraction": row["input_clipped_fraction"],
                             "real_vs_fp32_rel_rms": row["real_vs_fp32_rel_rms"],
                             "fake_vs_fp32_rel_rms": row["fake_vs_fp32_rel_rms"],
                             "codes_equal_fraction": row["codes_equal_fraction"]})
        # Raw pixel intensities are >= 0, like post-ReLU activations: the worst case for the sums.
        accumulators = accumulator_sweep(cfg, _raw_images(cfg.seed))
    return {
        "layers": layers,
        "linear_reduction_length": 64,
        "conv_reduction_length": cfg.conv_in * 9,
        "int8_max": Q.QMAX,
        "clipping": clipping,
        "accumulator": accumulators,
        "measured_on": "cpu",
    }


def _raw_images(seed: int) -> torch.Tensor:
    """Images in [0, 1], not standardised, in a seeded order."""
    images, labels = load_arrays()
    order = np.random.default_rng(seed).permutation(len(labels))
    return torch.from_numpy(images[order] / PIXEL_MAX).unsqueeze(1)


# %% [markdown]
# ## Derived at build time: what the pages and figures show

# %%
LABELS = {"linear": "linear", "conv": "3×3 conv", "per_tensor": "per tensor", "per_channel": "per output channel"}


def bits_for(value: int) -> int:
    """Bits of a signed accumulator that holds ``±value``: the magnitude's bits and a sign bit."""
    return int(value).bit_length() + 1


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        return (f"one linear layer (reduction {data['linear_reduction_length']}) and one conv layer "
                f"(reduction {data['conv_reduction_length']})")
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    """The best clipping range, the accumulator bits needed and predicted, int32's capacity, labels."""
    qmax = data["int8_max"]
    # int8 is two's complement: codes run from -(qmax + 1) to qmax, so the largest product is (-128)**2
    worst_product = (qmax + 1) ** 2
    clipping = data["clipping"]
    best = min(clipping, key=lambda r: r["real_vs_fp32_rel_rms"])
    widest = max(clipping, key=lambda r: r["percentile"])
    accumulator = []
    for row in data["accumulator"]:
        narrowest = min(row["by_bits"], key=lambda b: b["bits"])
        accumulator.append({
            "reduction_length": row["reduction_length"],
            "max_abs_accumulator": row["max_abs_accumulator"],
            "fake_fp32_codes_differ_fraction": row["fake_fp32_codes_differ_fraction"],
            "bits_needed": bits_for(row["max_abs_accumulator"]),
            # The worst case: every product at (-128) * (-128) with the same sign.
            "predicted_worst_case_bits": bits_for(row["reduction_length"] * worst_product),
            "narrowest_bits": narrowest["bits"],
            "narrowest_codes_wrong_fraction": narrowest["codes_wrong_fraction"],
        })
    by_length = sorted(accumulator, key=lambda r: r["reduction_length"])
    rows = [x for per_layer in data["layers"].values() for x in per_layer.values()]
    return {
        "scale_label": scale_label(data),
        "labels": LABELS,
        # How many worst-case int8 products ((-128)**2 = 2**14 each) an int32 accumulator holds: its largest
        # value is 2**31 - 1, so 2**17 - 1 of them.
        "int32_max_products": (2 ** 31 - 1) // worst_product,
        "int8_min": -(qmax + 1),
        "worst_product": worst_product,
        "best_clip_percentile": best["percentile"],
        "best_clip_rel_rms": best["real_vs_fp32_rel_rms"],
        "no_clip_percentile": widest["percentile"],
        "no_clip_rel_rms": widest["real_vs_fp32_rel_rms"],
        "accumulator": accumulator,
        "narrowest_accumulator_bits": min(r["narrowest_bits"] for r in accumulator),
        "smallest_accumulator": by_length[0],
        "largest_accumulator": by_length[-1],
        "fake_and_real_within_one_lsb": all(x["codes_max_diff_lsb"] <= 1 for x in rows),
    }


# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    figs = {}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    rows = data["clipping"]
    xs = list(range(len(rows)))
    ax.plot(xs, [r["real_vs_fp32_rel_rms"] for r in rows], "o-", label="integer graph vs fp32")
    ax.plot(xs, [r["fake_vs_fp32_rel_rms"] for r in rows], "x--", label="fake quantization vs fp32")
    ax.set_xticks(xs, [f"{r['percentile']:g}" for r in rows])
    ax.set_xlabel("input range set at this percentile of |x| (%)")
    ax.set_ylabel("relative RMS output error")
    ax2 = ax.twinx()
    ax2.bar(xs, [100 * r["input_clipped_fraction"] for r in rows], alpha=0.2, color="tab:red")
    ax2.set_ylabel("inputs clipped (%)", color="tab:red")
    ax.legend(loc="upper center")
    ax.set_title("3x3 conv on digit feature maps: rounding against clipping")
    fig.tight_layout()
    figs["clipping"] = fig

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for row, derived in zip(data["accumulator"], summary["accumulator"]):
        bits = [b["bits"] for b in row["by_bits"]]
        ax.plot(bits, [100 * b["codes_wrong_fraction"] for b in row["by_bits"]], "o-",
                label=f"{row['reduction_length']} products (needs {derived['bits_needed']} bits)")
    ax.set_xlabel("accumulator width (bits, saturating)")
    ax.set_ylabel("int8 outputs that differ\nfrom exact int32 (%)")
    ax.legend()
    ax.set_title("Linear layer on digit images: accumulator width")
    fig.tight_layout()
    figs["accumulator"] = fig
    return figs


# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
