"""The analytic side: predicted bytes, from update rules and published accounting.

Pure Python (no torch, no numpy), so that ``handbook estimate`` answers fast
and the site can import it. Each function names its source. The experiments
put these predictions beside what they measure; a test checks them exactly
where the answer is exact.
"""
from __future__ import annotations

from math import prod
from typing import Iterable, Sequence

Shape = Sequence[int]

# Bytes of one element.
DTYPE_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}

# The per-parameter optimizer state tensors that torch.optim keeps (fp32 params),
# read from the update rules in the torch.optim documentation. The scalar
# ``step`` tensor (float32, one per parameter) is counted separately.
STATE_TENSORS_PER_PARAM = {
    "sgd": 0,            # plain SGD keeps no tensor (momentum_buffer stays None)
    "sgd-momentum": 1,   # momentum_buffer
    "sgd-nesterov": 1,   # momentum_buffer
    "adam": 2,           # exp_avg, exp_avg_sq
    "adamw": 2,          # exp_avg, exp_avg_sq
    "adam-amsgrad": 3,   # + max_exp_avg_sq
    "adagrad": 1,        # sum
    "rmsprop": 1,        # square_avg (+ momentum_buffer with momentum, + grad_avg when centered)
}
HAS_STEP_TENSOR = {"sgd": False, "sgd-momentum": False, "sgd-nesterov": False, "adam": True, "adamw": True,
                   "adam-amsgrad": True, "adagrad": True, "rmsprop": True, "adafactor": True}
STEP_TENSOR_BYTES = 4  # torch keeps ``step`` as a float32 scalar tensor


def numel(shape: Shape) -> int:
    return int(prod(shape)) if len(shape) else 1


def adafactor_state_elems(shape: Shape) -> int:
    """Elements of ``torch.optim.Adafactor`` state for one parameter.

    A tensor with two or more dimensions keeps a row and a column second-moment
    factor over its last two dimensions (shapes ``(..., R, 1)`` and
    ``(..., 1, C)``); a vector or scalar keeps a full ``variance`` (Shazeer &
    Stern 2018; torch.optim.Adafactor).
    """
    if len(shape) >= 2:
        lead = numel(shape[:-2])
        return lead * (shape[-2] + shape[-1])
    return numel(shape)


def optimizer_state_bytes(optimizer: str, shapes: Iterable[Shape], bytes_per_elem: int = 4) -> int:
    """Exact bytes of ``optimizer.state`` after one step, for parameters of ``shapes``."""
    total = 0
    for shape in shapes:
        if optimizer == "adafactor":
            total += adafactor_state_elems(shape) * bytes_per_elem
        else:
            total += STATE_TENSORS_PER_PARAM[optimizer] * numel(shape) * bytes_per_elem
        if HAS_STEP_TENSOR[optimizer]:
            total += STEP_TENSOR_BYTES
    return total


# Bytes per parameter of the persistent training state in common precision
# regimes, as the mixed-precision accounting of Rajbhandari et al. 2020 (ZeRO,
# section 3.1) and Micikevicius et al. 2018 states it for Adam.
PRECISION_REGIMES = {
    # name: (weights, grads, master copy, optimizer state) bytes per parameter
    "fp32": (4, 4, 0, 8),
    "amp-autocast": (4, 4, 0, 8),        # torch.autocast ("bf16-mixed"): weights stay fp32; casts are transient
    "mixed-master": (2, 2, 4, 8),        # "bf16-master": 16-bit weights and grads, fp32 master + moments (2+2+12)
    "pure-bf16": (2, 2, 0, 4),           # "bf16": everything bf16, Adam moments bf16 too
}


# The same layouts as the estimator names them (``estimator.PRECISIONS``), so the optimizer chapter, the
# will-it-fit drill and ``handbook estimate`` speak of one layout each. Autocast's 16-bit weight copies
# (about 2 bytes per matmul parameter, live from forward into backward) are a transient: the estimator's
# peak counts them; this persistent accounting does not.
LAYOUT_OF_REGIME = {"fp32": "fp32", "amp-autocast": "bf16-mixed", "mixed-master": "bf16-master", "pure-bf16": "bf16"}


def bytes_per_param(regime: str) -> int:
    return sum(PRECISION_REGIMES[regime])


def korthikanti_activation_terms(s: int, b: int, h: int, a: int) -> dict[str, int]:
    """Activation bytes one transformer layer saves for backward, 16-bit activations.

    Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
    Transformer Models", section 4.1 (no tensor or sequence parallelism):
    attention block 11sbh + 5as^2b, MLP 19sbh, two LayerNorms 4sbh; in total
    sbh(34 + 5as/h).
    """
    return {
        "attention_bytes": 11 * s * b * h + 5 * a * s * s * b,
        "mlp_bytes": 19 * s * b * h,
        "layernorm_bytes": 4 * s * b * h,
    }


def korthikanti_activation_bytes(s: int, b: int, h: int, a: int) -> int:
    return sum(korthikanti_activation_terms(s, b, h, a).values())


def zero_bytes_per_device(params: int, stage: int, gpus: int, weight_bytes: int = 2, grad_bytes: int = 2,
                          optimizer_bytes: int = 12) -> dict[str, float]:
    """Per-device model-state bytes under ZeRO stage 0-3 (Rajbhandari et al. 2020, figure 1).

    Stage 1 shards the optimizer state, stage 2 also the gradients, stage 3
    also the weights, each over ``gpus`` data-parallel ranks. Defaults are the
    paper's mixed-precision Adam: 2 + 2 + 12 bytes per parameter.
    """
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, not {stage}")
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, not {gpus}")
    shard = lambda x, on: x / gpus if on else x  # noqa: E731
    return {
        "params_bytes": shard(params * weight_bytes, stage >= 3),
        "grads_bytes": shard(params * grad_bytes, stage >= 2),
        "optimizer_bytes": shard(params * optimizer_bytes, stage >= 1),
    }
