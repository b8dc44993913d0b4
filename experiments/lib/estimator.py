"""Will it fit? Per-device training memory of a transformer, from its shape.

Pure Python (no torch, no numpy): ``handbook estimate`` imports this and
answers in a fraction of a second, and ``docs/assets/calculator.js`` repeats
the same integer arithmetic in the browser (a test compares the two).

The model, term by term (every number an integer count of bytes):

* parameters: every tensor of the architecture (``model_shapes.parameter_shapes``);
* weights and gradients: parameters x bytes per element of the precision regime;
* optimizer state: ``formulas.optimizer_state_bytes`` on the real tensor shapes
  (the update rules of torch.optim; Adafactor's factored moments), or the
  bitsandbytes 8-bit layout for ``adamw-8bit``;
* activations: the per-layer saved tensors of Korthikanti et al. 2022
  (section 4.1), generalised to the layer's MLP width, key/value heads,
  activation dtype and dropout; selective
  checkpointing drops the attention-score terms (their section 5) but one
  layer's scores are rebuilt during backward, full checkpointing keeps each
  layer's input and one layer recomputed; then the
  embedding, the final norm and the loss's fp32 log-probabilities;
* ZeRO (Rajbhandari et al. 2020): stage 1 divides optimizer state by the
  data-parallel degree, stage 2 also gradients, stage 3 also weights
  (``formulas.zero_bytes_per_device``), rounded up to whole bytes.

The total is the sum of the terms: the usual sizing rule, which ignores the
allocator's fragmentation, the CUDA context, temporary buffers and
communication buckets.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from experiments.lib import formulas
from experiments.lib.model_shapes import BUILTIN, ModelShape, parameter_shapes

OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw", "adam-amsgrad", "adafactor", "adamw-8bit")

# Bytes per element: (weights, gradients, optimizer state, activations).
# "bf16-mixed"/"fp16-mixed" are torch.autocast with fp32 weights (PyTorch AMP
# docs; Lightning's precision names): fp32 weights, grads and optimizer state,
# 16-bit activations. "bf16" keeps everything in bf16; torch.optim then keeps
# its state in the parameters' dtype too.
PRECISIONS: dict[str, tuple[int, int, int, int]] = {
    "fp32": (4, 4, 4, 4),
    "bf16-mixed": (4, 4, 4, 2),
    "fp16-mixed": (4, 4, 4, 2),
    "bf16": (2, 2, 2, 2),
}
CHECKPOINTING = ("none", "selective", "full")
ZERO_STAGES = (0, 1, 2, 3)

# bitsandbytes 8-bit blockwise optimizers (Dettmers et al. 2022, "8-bit
# Optimizers via Block-wise Quantization"; bitsandbytes optim/optimizer.py,
# Optimizer2State.init_state): tensors with at least MIN_8BIT_SIZE elements
# keep two uint8 states plus one float32 absmax per block of BNB_BLOCK
# elements for each state; smaller tensors keep two float32 states. The step
# count is a Python int.
BNB_MIN_8BIT_SIZE = 4096
BNB_BLOCK = 256

# Memory of common accelerators, in bytes (decimal GB as the vendor
# datasheets state them):
GPUS: tuple[tuple[str, int, str], ...] = (
    ("T4 16 GB", 16 * 10**9, "NVIDIA T4 datasheet"),
    ("V100 16 GB", 16 * 10**9, "NVIDIA V100 Tensor Core GPU datasheet"),
    ("RTX 4090 24 GB", 24 * 10**9, "NVIDIA GeForce RTX 4090 specifications"),
    ("L4 24 GB", 24 * 10**9, "NVIDIA L4 Tensor Core GPU datasheet"),
    ("V100 32 GB", 32 * 10**9, "NVIDIA V100 Tensor Core GPU datasheet"),
    ("A100 40 GB", 40 * 10**9, "NVIDIA A100 Tensor Core GPU datasheet"),
    ("L40S 48 GB", 48 * 10**9, "NVIDIA L40S datasheet"),
    ("A100 80 GB", 80 * 10**9, "NVIDIA A100 Tensor Core GPU datasheet"),
    ("H100 80 GB", 80 * 10**9, "NVIDIA H100 Tensor Core GPU datasheet"),
    ("H200 141 GB", 141 * 10**9, "NVIDIA H200 Tensor Core GPU datasheet"),
)


class EstimateError(ValueError):
    """Input the estimator cannot use; the message names the offending field."""


# Inputs beyond these are refused: they describe no real run, and the printed table (floats) and the
# calculator (JavaScript numbers) would overflow or lose exactness long before Python's integers do.
MAX_SIZE = 10**9           # batch, sequence, data-parallel degree, and each dimension of a shape
MAX_PARAMS = 10**15        # parameters given as a count


@dataclass(frozen=True)
class Setup:
    optimizer: str = "adamw"
    precision: str = "bf16-mixed"
    batch: int = 1               # micro-batch per device
    seq: int = 1024
    checkpointing: str = "none"
    zero: int = 0
    gpus: int = 1                # data-parallel degree

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise EstimateError(f"unknown optimizer {self.optimizer!r} (one of {', '.join(OPTIMIZERS)})")
        if self.precision not in PRECISIONS:
            raise EstimateError(f"unknown precision {self.precision!r} (one of {', '.join(PRECISIONS)})")
        if self.checkpointing not in CHECKPOINTING:
            raise EstimateError(f"unknown checkpointing {self.checkpointing!r} (one of {', '.join(CHECKPOINTING)})")
        for key in ("batch", "seq", "gpus"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EstimateError(f"{key} must be a positive integer, not {value!r}")
            if value > MAX_SIZE:
                raise EstimateError(f"{key} (a {len(str(value))}-digit number) is beyond any training run "
                                    f"(at most {MAX_SIZE:,})")
        if self.zero not in ZERO_STAGES:
            raise EstimateError(f"zero must be 0, 1, 2 or 3, not {self.zero!r}")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def tensor_shapes(shape: ModelShape) -> list[tuple[int, ...]]:
    return [s for _, s in parameter_shapes(shape)]


def parameter_count(shape: ModelShape) -> int:
    return sum(formulas.numel(s) for s in tensor_shapes(shape))


def optimizer_bytes(optimizer: str, shapes: Sequence[Sequence[int]], state_elem_bytes: int) -> int:
    """Bytes of optimizer state for parameter tensors of ``shapes`` (unsharded)."""
    if optimizer == "adamw-8bit":
        total = 0
        for s in shapes:
            n = formulas.numel(s)
            total += 2 * n + 2 * 4 * ceil_div(n, BNB_BLOCK) if n >= BNB_MIN_8BIT_SIZE else 2 * 4 * n
        return total
    key = {"adafactor": "adafactor"}.get(optimizer, optimizer)
    return formulas.optimizer_state_bytes(key, shapes, bytes_per_elem=state_elem_bytes)


def layer_activation_terms(m: ModelShape, s: int, b: int, e: int, mask_bytes: int = 1) -> dict[str, int]:
    """Bytes one transformer layer saves for backward (no checkpointing).

    Korthikanti et al. 2022, section 4.1, with 16-bit activations (e = 2),
    multi-head attention, a 4h MLP and dropout gives sbh(34 + 5as/h). Here:
    ``e`` bytes per activation element, 1-byte dropout masks, the MLP width
    ``I`` and ``kv`` key/value heads of ``a``:

    * norms: the input and output of both norms, 4e*sbh (the output feeds
      the QKV projection and the MLP);
    * attention: Q, K and V and the attention output, e*sbh*(2 + 2kv/a);
    * scores: softmax output e*as^2b, with dropout its 1-byte mask and the
      dropped-out copy (1 + e)*as^2b;
    * MLP: GELU (GPT-2, BERT) saves its input and output, 2e*sbI; SwiGLU
      (Llama) the gate output, its SiLU, the up projection and their product,
      4e*sbI;
    * dropout masks after the attention projection and the MLP: 2sbh.

    ``mask_bytes`` is 1 on CUDA (a bool mask); torch's CPU dropout keeps its
    mask in the activation dtype, so a CPU measurement passes ``e``.
    """
    h, a, I = m.hidden, m.heads, m.d_ff
    sbh, sbI, as2b = s * b * h, s * b * I, a * s * s * b
    d = 1 if m.dropout else 0
    qkv = e * sbh + 2 * e * s * b * m.n_kv_heads * m.d_head   # Q (a heads) + K, V (kv heads)
    return {
        "norm_bytes": 4 * e * sbh,                          # two norms: input and output each
        "attention_bytes": qkv + e * s * b * a * m.d_head,  # Q, K, V and the attention output
        "scores_bytes": e * as2b + d * (mask_bytes + e) * as2b,
        "mlp_bytes": (4 if m.family == "llama" else 2) * e * sbI,
        "dropout_masks_bytes": d * 2 * mask_bytes * sbh,
    }


def activation_terms(m: ModelShape, setup: Setup, mask_bytes: int = 1) -> dict[str, int]:
    """Per-device activation bytes saved for backward, by term.

    Beyond the layers: the embedding's dropout mask (and BERT's embedding
    LayerNorm input), the final norm's input and output (for BERT: the last
    hidden state and the output projection's input), and the fp32
    log-probabilities that cross-entropy saves (4 bytes x s x b x vocab; the
    logits themselves are freed unless the caller keeps them).
    """
    e = PRECISIONS[setup.precision][3]
    s, b, h = setup.seq, setup.batch, m.hidden
    layer = layer_activation_terms(m, s, b, e, mask_bytes)
    per_layer = sum(layer.values())
    if setup.checkpointing == "none":
        recompute = 0
        layers = m.layers * per_layer
    elif setup.checkpointing == "selective":  # no attention scores kept; one layer's recomputed in backward
        recompute = layer["scores_bytes"]
        layers = m.layers * (per_layer - recompute) + recompute
    else:  # full: each layer's input, plus one layer recomputed during backward
        recompute = per_layer
        layers = m.layers * e * s * b * h + recompute
    embedding = (mask_bytes if m.dropout else 0) * s * b * h + (e * s * b * h if m.family == "bert" else 0)
    head = 2 * e * s * b * h
    logits = 4 * s * b * m.vocab
    return {"layers_bytes": layers, "embedding_bytes": embedding, "head_bytes": head, "logits_bytes": logits,
            "per_layer_bytes": per_layer, "recompute_bytes": recompute,
            "total_bytes": layers + embedding + head + logits}


def model_state_bytes(shapes: Sequence[Sequence[int]], optimizer: str, precision: str, zero: int,
                      gpus: int) -> tuple[dict[str, int], dict[str, int]]:
    """(unsharded, per-device) bytes of weights, gradients and optimizer state for tensors of ``shapes``.

    Per device follows ZeRO (``formulas.zero_bytes_per_device``), each sharded
    term rounded up to a whole byte.
    """
    n = sum(formulas.numel(s) for s in shapes)
    w, g, o, _ = PRECISIONS[precision]
    full = {"params": n * w, "grads": n * g, "optimizer": optimizer_bytes(optimizer, shapes, o)}
    rule = formulas.zero_bytes_per_device(1, zero, gpus, weight_bytes=full["params"], grad_bytes=full["grads"],
                                          optimizer_bytes=full["optimizer"])
    per_device = {
        "params": ceil_div(full["params"], gpus) if zero >= 3 else full["params"],
        "grads": ceil_div(full["grads"], gpus) if zero >= 2 else full["grads"],
        "optimizer": ceil_div(full["optimizer"], gpus) if zero >= 1 else full["optimizer"],
    }
    for key in per_device:  # the integer split is the published rule, rounded up
        assert 0 <= per_device[key] - rule[f"{key}_bytes"] < 1 + 1e-9 * rule[f"{key}_bytes"], key
    return full, per_device


def fits(total_bytes: int) -> list[dict]:
    return [{"gpu": name, "capacity_bytes": cap, "fits": total_bytes <= cap, "source": src} for name, cap, src in GPUS]


def estimate(setup: Setup, shape: ModelShape | None = None, params: int | None = None) -> dict:
    """Per-device bytes of weights, gradients, optimizer state and activations.

    Give a ``shape`` (parameter count, optimizer state on real tensor shapes,
    activations) or only ``params`` (one flat tensor; no activations).
    """
    if shape is None and params is None:
        raise EstimateError("give a model shape or a parameter count")
    if shape is not None and params is not None:
        raise EstimateError("give a model shape or a parameter count, not both")
    if shape is not None and shape.positions and setup.seq > shape.positions:
        raise EstimateError(f"seq {setup.seq} exceeds the model's {shape.positions} learned positions")
    # Rotary models (Llama) could run longer sequences, but not as configured: a longer context is a
    # different config (rope scaling, a larger max_position_embeddings), so the estimate refuses it.
    if shape is not None and shape.context and setup.seq > shape.context:
        raise EstimateError(f"seq {setup.seq} exceeds the model's context of {shape.context} positions "
                            f"(max_position_embeddings)")
    if shape is not None:
        shapes = tensor_shapes(shape)
        n_params = sum(formulas.numel(x) for x in shapes)
    else:
        if not isinstance(params, int) or isinstance(params, bool) or params < 1:
            raise EstimateError(f"params must be a positive integer, not {params!r}")
        if params > MAX_PARAMS:
            raise EstimateError(f"params (a {len(str(params))}-digit number) is beyond any model "
                                f"(at most {MAX_PARAMS:.0e})")
        if setup.optimizer == "adafactor":
            raise EstimateError("optimizer adafactor needs the tensor shapes: give a model or a config, not --params")
        shapes = [(params,)]
        n_params = params
    full, per_device = model_state_bytes(shapes, setup.optimizer, setup.precision, setup.zero, setup.gpus)
    acts = activation_terms(shape, setup) if shape is not None else None
    per_device["activations"] = acts["total_bytes"] if acts else 0
    per_device["total"] = sum(per_device.values())
    return {
        "model": (shape.name or None) if shape is not None else None,
        "shape": shape.as_dict() if shape is not None else None,
        "parameters": n_params,
        "setup": asdict(setup),
        "per_device_bytes": per_device,
        "unsharded_bytes": full,
        "activation_terms_bytes": acts,
        "activations_estimated": acts is not None,
        "fits": fits(per_device["total"]),
    }


def calculator_inputs() -> dict:
    """Everything the in-browser calculator needs, read at build time (one source of truth, no measurement)."""
    return {
        "shapes": {k: {**m.as_dict(), "parameters": parameter_count(m)} for k, m in BUILTIN.items()},
        "precisions": {k: list(v) for k, v in PRECISIONS.items()},
        "optimizers": list(OPTIMIZERS),
        "checkpointing": list(CHECKPOINTING),
        "state_tensors_per_param": {k: v for k, v in formulas.STATE_TENSORS_PER_PARAM.items()
                                    if k in OPTIMIZERS},
        "has_step_tensor": {k: formulas.HAS_STEP_TENSOR[k] for k in OPTIMIZERS
                            if k in formulas.HAS_STEP_TENSOR},
        "step_tensor_bytes": formulas.STEP_TENSOR_BYTES,
        "bnb_min_8bit_size": BNB_MIN_8BIT_SIZE,
        "bnb_block": BNB_BLOCK,
        "gpus": [{"name": n, "capacity_bytes": c, "source": s} for n, c, s in GPUS],
    }
