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

``per_device_bytes`` is the sum of those terms (the usual sizing rule). The
prediction a reader acts on is ``peak_bytes``: the live bytes at each phase of
one training step (``phases``: the end of forward, the worst point of
backward, the optimizer step, between steps), with the temporaries the sum
leaves out (autocast's cast weights, the logits and the loss's fp32
temporaries, gradients as they appear, the optimizer's temporaries, ZeRO-3's
gathered layers and reduce-scatter buffers, DDP's gradient buckets), and
their maximum. Card verdicts compare that peak plus a headroom for the CUDA
context with the total memory the driver reports, and never say "fits" for a
dtype the card does not compute. Still left out: allocator fragmentation,
communication library buffers (NCCL), and framework extras.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import NamedTuple, Sequence

from experiments.lib import formulas
from experiments.lib.model_shapes import (BUILTIN, DECODERS, FUSED_FAMILIES, GEMMA_NORM_FAMILIES, MOE_FAMILIES,
                                          QK_NORM_FAMILIES,
                                          SANDWICH_FAMILIES, ModelShape, parameter_shapes)

OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw", "adam-amsgrad", "adafactor", "adamw-8bit")



class Layout(NamedTuple):
    """A precision layout, by what it keeps: bytes per parameter (or per activation element)."""
    weights: int          # the model's parameters
    grads: int            # their .grad
    state: int            # each optimizer state element (torch.optim keeps it in the dtype of what it updates)
    activations: int      # saved activations (the compute dtype)
    master: int = 0       # an fp32 master copy the optimizer updates (0: it updates the weights themselves)
    cast: int = 0         # autocast's 16-bit copies of the weights used by matmuls, live forward to backward
    compute: str = "fp32"  # the dtype the matmuls run in: a card must compute it
    gather: int = 0       # ZeRO-3: bytes per parameter of an all-gathered unit (0: the weights' dtype)
    unit_grad: int = 0    # ZeRO-2/3: bytes per parameter of a unit's unsharded gradient (0: the grads' dtype)
    reduce: int = 0       # ZeRO-2/3: bytes per parameter of the reduce-scatter buffer (0: the grads' dtype)
    zero3_only: bool = False


# The layouts people train with, named by what they keep.
# * fp32: everything fp32.
# * bf16-mixed / fp16-mixed: torch.autocast (PyTorch AMP docs; Lightning's precision names): fp32 weights,
#   gradients and optimizer state; matmuls in 16 bits, whose outputs (the activations) are 16-bit.
#   Autocast casts each fp32 weight a matmul uses to 16 bits and caches the copy for the autocast region
#   (aten/src/ATen/autocast_mode.cpp, ``cached_cast``: leaf tensors that require grad); the matmul saves
#   that copy for backward, so about 2 bytes per matmul parameter stay live from forward into backward.
# * bf16: pure bf16, no master copy; torch.optim keeps its state in bf16 too. Updates smaller than about
#   2^-8 |w| round away (Micikevicius et al. 2018, "Mixed Precision Training", section 3.1).
# * bf16-master / fp16-master: 16-bit weights and gradients, an fp32 master copy and fp32 moments, the
#   layout of DeepSpeed and Megatron-LM and of ZeRO's accounting (Rajbhandari et al. 2020, section 3.1:
#   2 + 2 + K with K = 12 for Adam: master 4 + moments 8). The master copy counts as optimizer state
#   (ZeRO's K), so ZeRO-1 shards it.
# * fsdp2-bf16: FSDP2 (ZeRO-3) with ``MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)``
#   (torch.distributed.fsdp docs): sharded fp32 parameters, gradients and state; each unit is all-gathered
#   in bf16 for compute, its gradient computed in bf16 and reduce-scattered in fp32.
PRECISIONS: dict[str, Layout] = {
    "fp32": Layout(4, 4, 4, 4),
    "bf16-mixed": Layout(4, 4, 4, 2, cast=2, compute="bf16"),
    "fp16-mixed": Layout(4, 4, 4, 2, cast=2, compute="fp16"),
    "bf16": Layout(2, 2, 2, 2, compute="bf16"),
    "bf16-master": Layout(2, 2, 4, 2, master=4, compute="bf16"),
    "fp16-master": Layout(2, 2, 4, 2, master=4, compute="fp16"),
    "fsdp2-bf16": Layout(4, 4, 4, 2, compute="bf16", gather=2, unit_grad=2, reduce=4, zero3_only=True),
}
PRECISION_NOTES = {
    "bf16": "pure bf16 keeps no master copy: updates smaller than about 2^-8 |w| are lost "
            "(Micikevicius et al. 2018, section 3.1)",
}
ATTENTION = ("sdpa", "eager")   # transformers' default: "sdpa" (modeling_utils.py, get_correct_attn_implementation)
DEVICES = ("cuda", "cpu")
OPTIMIZER_IMPLS = ("default", "foreach", "for-loop", "fused")
# torch.optim's default (torch/optim/optimizer.py, ``_default_to_fused_or_foreach``): foreach when every
# parameter is on a device with foreach kernels (``_get_foreach_kernels_supported_devices``: cuda, xpu, ...;
# not cpu), else the for-loop; fused is never the default.
DEFAULT_IMPL = {"cuda": "foreach", "cpu": "for-loop"}
# The optimizer step's temporaries, measured by the optimizer chapter (experiments/optimizer_state.py,
# results/cpu-amd-epyc-2c-24gb/optimizer_state.json, summarize's ``temporaries_over_params_ratio``):
# foreach Adam/AdamW/AMSGrad/Adafactor 1.00x the bytes of the tensors it updates, SGD 0; the for-loop
# one tensor at a time, 0.28x there = 2.04x its largest tensor (Adam's denominator and update); fused
# none. bitsandbytes' 8-bit step is one kernel per tensor (counted as fused).
FOREACH_TEMPORARIES = {"sgd": 0, "sgd-momentum": 0, "adam": 1, "adamw": 1, "adam-amsgrad": 1, "adafactor": 1,
                       "adamw-8bit": 0}
FOR_LOOP_LARGEST_TENSORS = {"sgd": 0, "sgd-momentum": 0, "adam": 2, "adamw": 2, "adam-amsgrad": 2, "adafactor": 2,
                            "adamw-8bit": 0}
NO_FUSED = ("adafactor",)  # torch.optim.Adafactor has no fused implementation
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

MIB = 2**20
# Cards: the total memory the driver reports (nvidia-smi, MiB), the dtypes their tensor cores compute
# (bf16 arrived with Ampere: NVIDIA A100 Tensor Core GPU Architecture whitepaper; T4 (Turing) and V100
# (Volta) compute fp16 but not bf16), and where the figure comes from. A card whose reported total no
# public source gave is left out (the H200 and the V100 32 GB among them).
_MODAL = "nvidia-smi total, modal-labs/modal-client PR #2797"
CARDS: tuple[tuple[str, int, tuple[str, ...], str], ...] = (
    ("T4 16 GB", 15360 * MIB, ("fp32", "fp16"), _MODAL),
    ("V100 16 GB", 16384 * MIB, ("fp32", "fp16"), "nvidia-smi total (V100-SXM2-16GB), 1CatAI/1Cat-vLLM issue #85"),
    ("L4 24 GB", 23034 * MIB, ("fp32", "fp16", "bf16"), _MODAL),
    ("RTX 4090 24 GB", 24564 * MIB, ("fp32", "fp16", "bf16"), "nvidia-smi total, RLinf/RLinf issue #255"),
    ("A100 40 GB", 40960 * MIB, ("fp32", "fp16", "bf16"), _MODAL),
    ("L40S 48 GB", 46068 * MIB, ("fp32", "fp16", "bf16"), _MODAL),
    ("A100 80 GB", 81920 * MIB, ("fp32", "fp16", "bf16"), _MODAL),
    ("H100 80 GB", 81559 * MIB, ("fp32", "fp16", "bf16"), _MODAL + "; NVIDIA/nccl issue #1264"),
)
GPUS: tuple[tuple[str, int, str], ...] = tuple((n, c, src) for n, c, _, src in CARDS)
# Headroom beside the peak: the CUDA context, which nvidia-smi counts and the allocator does not (781 MiB
# after CUDA initialisation in pytorch/pytorch issue #34323). On a GPU host the hardware experiment
# measures this host's context (summary.hardware.cuda.context_bytes). The caching allocator's reserve
# and fragmentation are not predictable from the shapes and stay outside the verdict.
CUDA_CONTEXT_BYTES = 781 * MIB
CUDA_CONTEXT_SOURCE = "pytorch/pytorch issue #34323 (781 MiB after CUDA initialisation)"


# ---- Beyond data parallel, and fine-tuning ----------------------------------------------------------------------
# Tensor parallelism (Megatron-LM; Shoeybi et al. 2019, section 3): the attention's Q, K, V and the MLP's first
# projections are split by output columns, the attention output and the MLP's last projection by input rows, the
# embedding and the output head by vocabulary; norms, the row-split projections' biases and a MoE router stay whole
# on every rank. Expert parallelism (Megatron-core MoE) places each layer's experts on ``ep`` ranks, and splits
# each expert across the tensor-parallel ranks as well (expert tensor parallelism equal to ``tp``, Megatron-core's
# default). Pipeline parallelism (Narayanan et al. 2021) gives each of ``pp`` stages ceil(L / pp) layers (the first
# the embedding, the last the final norm and head: a tied head keeps its own copy of the embedding there). Context
# parallelism splits the sequence across ``cp`` ranks (ring attention; Liu et al. 2023): every per-token tensor is
# s / cp long, the weights are whole.
SCHEDULES = ("1f1b", "interleaved", "gpipe")
# What the model-parallel estimate follows and what it leaves out (the parallelism chapter measures both)
MODEL_PARALLEL_NOTE = ("model parallelism follows Megatron-LM's rules; the peak may be low: it leaves out the "
                       "point-to-point and collective buffers, and torch's own tensor-parallel plan keeps more (an "
                       "all-gathered input under sequence parallelism, a full-size gradient of a vocabulary-split "
                       "embedding): see the parallelism chapter's measured per-rank peaks")
ROW_PARALLEL = ("o_proj", "c_proj", "down_proj", "attention.output.dense", "output.dense")
REPLICATED = ("mlp.gate.weight", "shared_expert_gate")   # MoE routers: every rank routes its tokens
# LoRA (Hu et al. 2021): r x (in + out) adapter weights beside each targeted Linear, A (r, in) and B (out, r).
# PEFT keeps adapters in fp32 even on a 16-bit base (LoraConfig/get_peft_model ``autocast_adapter_dtype=True``,
# its default: "will only cast adapter weights using float16 and bfloat16 to float32").
BASE_QUANT = ("none", "nf4")
# QLoRA (Dettmers et al. 2023, section 3): NF4 stores 4 bits a weight and one quantisation constant per block of
# 64 weights; double quantisation stores those constants in 8 bits, with one fp32 constant per 256 of them:
# 4 + 8/64 + 32/(64 x 256) bits a weight. bitsandbytes quantises every nn.Linear of the base; transformers leaves
# the output head in 16 bits (``llm_int8_skip_modules``: the head is kept), embeddings and norms are not Linear.
NF4_BLOCK, NF4_BLOCK2 = 64, 256
OFFLOAD = ("optimizer", "parameters", "activations")
# PCIe 4.0 x16: 16 GT/s x 16 lanes with 128b/130b encoding, about 31.5 GB/s each way (PCI-SIG, PCI Express Base
# Specification 4.0); an upper bound: the hardware chapter measures a host's real host-to-device bandwidth.
PCIE_GB_S = 31.5
PCIE_SOURCE = "PCIe 4.0 x16 nominal, 31.5 GB/s each way (PCI-SIG PCIe Base Specification 4.0)"


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    for i, p in enumerate(parts[:-1]):
        if p in ("h", "layers", "layer") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def stage_layers(layers: int, pp: int, stage: int) -> range:
    """The layers a pipeline stage holds: ceil(L / pp) each from the first, the last gets what is left."""
    per = ceil_div(layers, pp)
    return range(min(stage * per, layers), min((stage + 1) * per, layers))


def is_lora_target(name: str, targets: Sequence[str]) -> bool:
    """PEFT's matching of ``target_modules`` names: the module's last name component equals a target."""
    parts = name.split(".")
    module = parts[-2] if parts[-1] in ("weight", "bias") else parts[-1]
    return module in targets and parts[-1] == "weight" and "experts" not in parts


def rank_tensors(m: ModelShape, setup: Setup, stage: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, per-rank shape, kind) of every tensor one rank of ``stage`` holds, kind "base" (frozen under LoRA),
    "train" or "adapter". Tensor- and expert-parallel splits divide the split dimension, rounded up."""
    t, pp = setup.tp, setup.pp
    held = stage_layers(m.layers, pp, stage)
    out = []
    for name, shape in parameter_shapes(m):
        layer = _layer_of(name)
        if layer is not None and layer not in held:
            continue
        is_head = name.startswith("lm_head") or name in ("ln_f.weight", "ln_f.bias", "model.norm.weight") \
            or name.startswith("pooler")
        is_emb = layer is None and not is_head
        if pp > 1 and ((is_emb and stage != 0 and not (m.tied_embeddings and stage == pp - 1 and "wte" in name
                                                       or m.tied_embeddings and stage == pp - 1
                                                       and "embed_tokens" in name))
                       or (is_head and stage != pp - 1)):
            continue
        if pp > 1 and is_emb and stage == pp - 1 and stage != 0 and "position" in name:
            continue
        split = shape
        if ".experts." in name:
            split = (ceil_div(shape[0], setup.ep),) + shape[1:]
        if t > 1 and len(shape) >= 1 and not any(k in name for k in NORM_NAMES) and not any(
                k in name for k in REPLICATED) and "position" not in name and "wpe" not in name \
                and "token_type" not in name:
            row = any(f"{k}." in name for k in ROW_PARALLEL)
            if len(split) == 1:
                if not row:
                    split = (ceil_div(split[0], t),)
            else:
                # the split dimension: the output features (column) or the input features (row); stored (out, in)
                # except GPT-2's Conv1D (in, out)
                conv1d = m.family == "gpt2" and len(split) == 2
                col_dim, row_dim = (len(split) - 1, len(split) - 2) if conv1d else (len(split) - 2, len(split) - 1)
                dim = row_dim if row else col_dim
                if "wte" in name or "embed" in name or name.startswith("lm_head"):
                    dim = 0   # vocabulary-parallel
                split = tuple(ceil_div(x, t) if i == dim else x for i, x in enumerate(split))
        kind = "base" if setup.lora_rank else "train"
        out.append((name, split, kind))
        if setup.lora_rank and is_lora_target(name, setup.lora_targets) and len(shape) == 2:
            conv1d = m.family == "gpt2"
            fan_in, fan_out = (split[0], split[1]) if conv1d else (split[1], split[0])
            r = setup.lora_rank
            out += [(name[:-len("weight")] + "lora_A.weight", (r, fan_in), "adapter"),
                    (name[:-len("weight")] + "lora_B.weight", (fan_out, r), "adapter")]
    return out


def nf4_bytes(n: int) -> int:
    """NF4 with double quantisation (Dettmers et al. 2023): 4 bits a weight, an 8-bit constant per 64 weights, an
    fp32 constant per 256 of those."""
    blocks = ceil_div(n, NF4_BLOCK)
    return ceil_div(n, 2) + blocks + 4 * ceil_div(blocks, NF4_BLOCK2)


def _quantised(name: str, shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and not name.startswith("lm_head") and "embed" not in name and "wte" not in name \
        and "wpe" not in name and ".experts." not in name and "lora_" not in name


def finetune_state_bytes(tensors, setup: Setup) -> tuple[dict[str, int], dict[str, int]]:
    """(unsharded, per-device) weights, gradients and optimizer state under LoRA: the base frozen in its layout's
    weight dtype (NF4 under QLoRA: its Linear weights), the adapters trainable in fp32."""
    lay = PRECISIONS[setup.precision]
    base_w = lay.weights if not lay.master else 2
    base = 0
    for name, shape, kind in tensors:
        if kind != "base":
            continue
        n = formulas.numel(shape)
        base += nf4_bytes(n) if setup.base_quant == "nf4" and _quantised(name, shape) else n * base_w
    adapters = [shape for _, shape, kind in tensors if kind == "adapter"]
    na = sum(formulas.numel(x) for x in adapters)
    full = {"params": base + 4 * na, "grads": 4 * na, "optimizer": optimizer_bytes(setup.optimizer, adapters, 4),
            "master": 0}
    N, z = setup.gpus, setup.zero
    per = {"params": ceil_div(full["params"], N) if z >= 3 else full["params"],
           "grads": ceil_div(full["grads"], N) if z >= 2 else full["grads"],
           "optimizer": ceil_div(full["optimizer"], N) if z >= 1 else full["optimizer"]}
    return full, per


def linear_saves(m: ModelShape, setup: Setup) -> dict[str, int] | None:
    """Under LoRA, which Linear layers still keep their input for backward: a frozen Linear needs only its weight
    to pass the gradient on, so it keeps nothing; a targeted one keeps it for its adapter's A (one tensor for
    Q, K and V together when they read it uncast; under autocast one 16-bit cast per adapter)."""
    if not setup.lora_rank:
        return None
    t = set(setup.lora_targets)
    if m.family == "gpt2":
        return {"qkv": int("c_attn" in t), "o": int("c_proj" in t), "mlp_in": int("c_fc" in t),
                "down": int("c_proj" in t)}
    if m.family in FUSED_FAMILIES:
        return {"qkv": int("qkv_proj" in t), "o": int("o_proj" in t), "mlp_in": int("gate_up_proj" in t),
                "down": int("down_proj" in t)}
    if m.family == "bert":
        return {"qkv": len(t & {"query", "key", "value"}), "o": int("dense" in t), "mlp_in": int("dense" in t),
                "down": int("dense" in t)}
    return {"qkv": len(t & {"q_proj", "k_proj", "v_proj"}), "o": int("o_proj" in t),
            "mlp_in": len(t & {"gate_proj", "up_proj"}), "down": int("down_proj" in t)}


def adapter_activation_bytes(m: ModelShape, setup: Setup, s: int, b: int) -> int:
    """What the adapters themselves keep, per layer: A's output (r wide) for B, in the adapter's compute dtype
    (16-bit under autocast; fp32 otherwise: PEFT casts the input to the fp32 adapter, and that fp32 copy of a
    16-bit input is A's saved input)."""
    if not setup.lora_rank:
        return 0
    lay = PRECISIONS[setup.precision]
    a_dt = lay.activations if lay.cast else 4
    r = setup.lora_rank
    total = 0
    for name, shape in parameter_shapes(replace(m, layers=1)):
        if _layer_of(name) == 0 and len(shape) == 2 and is_lora_target(name, setup.lora_targets):
            total += a_dt * s * b * r
            if not lay.cast and lay.activations < 4:
                conv1d = m.family == "gpt2"
                total += 4 * s * b * (shape[0] if conv1d else shape[1])   # the fp32 copy of A's input
    return total


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
    attention: str = "sdpa"      # eager keeps the s^2 scores; sdpa (transformers' default) does not
    device: str = "cuda"         # the kind of device sized: dropout masks and autocast differ (see below)
    optimizer_impl: str = "default"  # for-loop, foreach or fused; default: what torch.optim picks on the device
    set_to_none: bool = True     # zero_grad(set_to_none=True), torch's default: no gradients between steps
    context_bytes: int | None = None  # the CUDA context beside the peak; None: the cited figure (on cuda)
    tp: int = 1                  # tensor-parallel degree
    sequence_parallel: bool = False  # with tp: the norms and dropouts split along the sequence too
    pp: int = 1                  # pipeline stages
    microbatches: int = 1        # micro-batches a step (gradient accumulation, a pipeline's); batch is one
    schedule: str = "1f1b"       # the pipeline schedule: 1f1b, interleaved or gpipe
    virtual_stages: int = 1      # the interleaved schedule's model chunks per stage
    cp: int = 1                  # context-parallel degree: the sequence split across cp ranks
    ep: int = 1                  # expert-parallel degree (a MoE model's experts across ep ranks)
    lora_rank: int = 0           # LoRA's rank r; 0: full training
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # PEFT's target_modules (module names)
    base_quant: str = "none"     # the frozen base under LoRA: none or nf4 (QLoRA)
    offload: tuple[str, ...] = ()  # any of optimizer, parameters, activations: kept in host memory
    pcie_gb_s: float = PCIE_GB_S  # host-device bandwidth for the offload transfer time, GB/s

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise EstimateError(f"unknown optimizer {self.optimizer!r} (one of {', '.join(OPTIMIZERS)})")
        if self.precision not in PRECISIONS:
            raise EstimateError(f"unknown precision {self.precision!r} (one of {', '.join(PRECISIONS)})")
        if self.checkpointing not in CHECKPOINTING:
            raise EstimateError(f"unknown checkpointing {self.checkpointing!r} (one of {', '.join(CHECKPOINTING)})")
        if self.attention not in ATTENTION:
            raise EstimateError(f"unknown attention {self.attention!r} (one of {', '.join(ATTENTION)})")
        if self.device not in DEVICES:
            raise EstimateError(f"unknown device {self.device!r} (one of {', '.join(DEVICES)})")
        if self.optimizer_impl not in OPTIMIZER_IMPLS:
            raise EstimateError(f"unknown optimizer implementation {self.optimizer_impl!r} "
                                f"(one of {', '.join(OPTIMIZER_IMPLS)})")
        if self.context_bytes is not None and (not isinstance(self.context_bytes, int) or isinstance(
                self.context_bytes, bool) or not 0 <= self.context_bytes <= MAX_PARAMS):
            raise EstimateError(f"context_bytes must be a non-negative integer, not {self.context_bytes!r}")
        if not isinstance(self.set_to_none, bool):
            raise EstimateError(f"set_to_none must be true or false, not {self.set_to_none!r}")
        for key in ("batch", "seq", "gpus"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EstimateError(f"{key} must be a positive integer, not {value!r}")
            if value > MAX_SIZE:
                raise EstimateError(f"{key} (a {len(str(value))}-digit number) is beyond any training run "
                                    f"(at most {MAX_SIZE:,})")
        if self.zero not in ZERO_STAGES:
            raise EstimateError(f"zero must be 0, 1, 2 or 3, not {self.zero!r}")
        if PRECISIONS[self.precision].zero3_only and self.zero != 3:
            raise EstimateError(f"precision {self.precision} is FSDP2's MixedPrecisionPolicy: it needs zero 3")
        if self.optimizer_impl == "fused" and self.optimizer in NO_FUSED:
            raise EstimateError(f"optimizer {self.optimizer} has no fused implementation")
        for key in ("tp", "pp", "microbatches", "virtual_stages", "cp", "ep"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SIZE:
                raise EstimateError(f"{key} must be a positive integer, not {value!r}")
        if not isinstance(self.sequence_parallel, bool):
            raise EstimateError(f"sequence_parallel must be true or false, not {self.sequence_parallel!r}")
        if self.sequence_parallel and self.tp == 1:
            raise EstimateError("sequence_parallel needs tensor parallelism (tp of 2 or more)")
        if self.schedule not in SCHEDULES:
            raise EstimateError(f"unknown schedule {self.schedule!r} (one of {', '.join(SCHEDULES)})")
        if self.virtual_stages > 1 and self.schedule != "interleaved":
            raise EstimateError("virtual_stages is for the interleaved schedule")
        if self.schedule == "interleaved" and self.pp > 1 and self.microbatches % self.pp:
            raise EstimateError(f"the interleaved schedule needs microbatches ({self.microbatches}) to be a "
                                f"multiple of pp ({self.pp}) (Megatron-LM's requirement)")
        if self.cp > 1 and self.attention == "eager":
            raise EstimateError("context parallelism needs a fused attention kernel (attention sdpa), not eager")
        if not isinstance(self.lora_rank, int) or isinstance(self.lora_rank, bool) or not 0 <= self.lora_rank <= MAX_SIZE:
            raise EstimateError(f"lora_rank must be a non-negative integer, not {self.lora_rank!r}")
        if not isinstance(self.lora_targets, tuple) or not self.lora_targets or not all(
                isinstance(x, str) and x for x in self.lora_targets):
            raise EstimateError(f"lora_targets must be module names, not {self.lora_targets!r}")
        if self.base_quant not in BASE_QUANT:
            raise EstimateError(f"unknown base_quant {self.base_quant!r} (one of {', '.join(BASE_QUANT)})")
        if self.base_quant != "none" and not self.lora_rank:
            raise EstimateError("base_quant nf4 (QLoRA) needs LoRA adapters: give lora_rank")
        if self.lora_rank and (PRECISIONS[self.precision].master or PRECISIONS[self.precision].zero3_only):
            raise EstimateError(f"precision {self.precision} has no meaning for a frozen base: use fp32, "
                                f"bf16-mixed, fp16-mixed or bf16 with LoRA")
        if not isinstance(self.offload, tuple) or any(x not in OFFLOAD for x in self.offload) \
                or len(set(self.offload)) != len(self.offload):
            raise EstimateError(f"offload must name distinct parts among {', '.join(OFFLOAD)}, not {self.offload!r}")
        if self.offload and self.device != "cuda":
            raise EstimateError("offload moves tensors from a GPU to the host: on a CPU the host is the device")
        if isinstance(self.pcie_gb_s, bool) or not isinstance(self.pcie_gb_s, (int, float)) \
                or not 0 < self.pcie_gb_s <= 10**6:
            raise EstimateError(f"pcie_gb_s must be a positive number of GB/s, not {self.pcie_gb_s!r}")

    @property
    def impl(self) -> str:
        return DEFAULT_IMPL[self.device] if self.optimizer_impl == "default" else self.optimizer_impl


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


def layer_activation_terms(m: ModelShape, s: int, b: int, e: int, mask_bytes: int = 1,
                           routed: bool | None = None, attention: str = "sdpa", r: int | None = None,
                           cast: bool = False, math_sdpa: bool = False,
                           saves: dict[str, int] | None = None, mlp_e: int | None = None) -> dict[str, int]:
    """Bytes one transformer layer saves for backward (no checkpointing).

    Korthikanti et al. 2022, section 4.1, with 16-bit activations (e = 2),
    multi-head attention, a 4h MLP and dropout gives sbh(34 + 5as/h). Here:
    ``e`` bytes per activation element, 1-byte dropout masks, the MLP width
    ``I``, ``kv`` key/value heads of ``a`` and the head width ``d`` (which
    Gemma and Qwen3 set apart from h/a):

    * norms: the input and output of both norms, 4e*sbh (the output feeds
      the QKV projection and the MLP), for GPT-2's and BERT's fused
      LayerNorm. The decoder families' RMSNorm is written out in Python
      (``LlamaRMSNorm.forward`` and its copies in transformers 5.17): ``pow``
      keeps its input and the weight's ``mul`` the normalised tensor, so each
      norm keeps input, normalised and output, 6e*sbh for two; Gemma 2 and 3
      add a pre- and a post-feedforward norm and the two norms before a
      residual add keep no output, 10e*sbh; Qwen3 and Gemma 3 normalise
      queries and keys over d, their input and normalised tensors
      2e*sb(a + kv)d (rotary embedding keeps only cos and sin). Measured on
      transformers' decoder layers (fp32, CPU), the norms' fp32 rsqrt
      (4 bytes per token per norm) and the rotary cos and sin (shared by all
      layers) aside;
    * attention: Q, K and V and the attention output, e*sb*d*(2a + 2kv)
      under SDPA, which takes grouped K and V as they are (transformers 5.17,
      ``integrations/sdpa_attention.py``, ``use_gqa_in_sdpa``: no mask, head
      width <= 256); ``eager_attention_forward`` first repeats K and V to all
      a heads (``repeat_kv``) and its matmuls keep the copies,
      e*sb*d*4a. Under SDPA Phi-3's fused qkv_proj keeps its whole output
      alive through the V view, e*sb*d*(a + kv) more, and its attention
      output is a copy apart from the o_proj input, e*sb*d*a more (eager's
      repeat copies V out of the buffer, so eager keeps what Llama keeps);
    * scores: softmax output e*as^2b, with dropout its 1-byte mask and the
      dropped-out copy (1 + e)*as^2b; Gemma 2's tanh soft-capping of the
      scores keeps the tanh output, e*as^2b more;
    * MLP: GELU (GPT-2, BERT) saves its input and output, 2e*sbI; the gated
      MLPs of the decoder families (SwiGLU; Gemma's GeGLU; Phi-3's fused
      gate_up_proj is the same two halves) the gate output, its activation,
      the up projection and their product, 4e*sbI;
    * dropout masks after the attention projection and the MLP: 2sbh.

    A mixture-of-experts layer (Mixtral, Qwen2-MoE, Qwen3-MoE) routes each of
    its T = s*b tokens to its top k of E experts (Shazeer et al. 2017, section
    2.1; Fedus et al. 2022), so the experts see T*k (token, expert) pairs, each
    through an expert of width W (transformers 5.17, ``MixtralExperts.forward``
    and ``integrations/moe.py``: "S = num_tokens * num_top_k" pairs):

    * experts (in ``mlp_bytes``): per pair the gate_up projection (2W), the
      activation's output (W), the product (W), the gathered input and the
      expert's output kept for its routing weight (2h): e*T*k*(2h + 4W).
      That is transformers' default ``experts_implementation="grouped_mm"``;
      the ``eager`` loop keeps one more h per pair (its weighted copy);
    * Qwen2-MoE's shared expert sees every token: a gated MLP of width S,
      4e*T*S, and its sigmoid gate keeps the expert's output and the gate,
      e*T*(h + 1);
    * router (``router_bytes``): the fp32 softmax over the E experts
      (``softmax(router_logits, dtype=float)``), 4*T*E, Mixtral's fp32
      normalising sum, 4*T, and per pair 41 bytes of bookkeeping: the int64
      expert index (8), the fp32 routing weight and its gathered copy (8),
      the int64 sort and token indices of the dispatch (24) and a bool mask.
    Measured with ``saved_tensors_hooks`` on transformers' blocks (fp32, CPU;
    ``tests/test_model_families.py``), parameters and the block's input aside.

    Which layers are routed follows ``ModelShape.moe_layers``; ``routed``
    picks the kind (None: the larger of the model's layer kinds).

    ``mask_bytes`` is 1 on CUDA (a bool mask); torch's CPU dropout keeps its
    mask in the activation dtype, so a CPU measurement passes ``e``.
    """
    h, a, I, d, kv = m.hidden, m.heads, m.d_ff, m.d_head, m.n_kv_heads
    r = e if r is None else r
    sb = s * b
    sbh, as2b = sb * h, a * s * s * b
    drop = 1 if m.dropout else 0
    if routed is None:
        kinds = [k for k in (True, False) if (m.n_moe_layers if k else m.layers - m.n_moe_layers)]
        return max((layer_activation_terms(m, s, b, e, mask_bytes, k, attention, r, cast, math_sdpa, saves, mlp_e)
                    for k in kinds),
                   key=lambda t: (sum(t.values()), t["router_bytes"]))
    moe = bool(routed and m.family in MOE_FAMILIES)
    qkv_in = 1 if m.family in FUSED_FAMILIES or m.family == "gpt2" else 3
    mlp_in = 1 if m.family in FUSED_FAMILIES or m.family not in DECODERS else 2
    if moe:  # the router's Linear casts; the experts gather the norm's output as it is (counted with them)
        mlp_in = 1 + (3 if m.family == "qwen2_moe" else 0)  # Qwen2-MoE: the shared expert's gate, up and gate
    keep_o = keep_down = 1
    if saves is not None:   # LoRA: a frozen Linear keeps no input (linear_saves)
        qkv_in, keep_o, keep_down = saves["qkv"], saves["o"], saves["down"]
        if not moe:
            mlp_in = saves["mlp_in"]
    fz = saves is not None   # LoRA: the norms' weights are frozen
    if m.family in SANDWICH_FAMILIES:     # two more norms, before residual adds: no Linear reads them
        norm = (norm_bytes(m, e, r, cast, qkv_in, fz) + norm_bytes(m, e, r, cast, mlp_in, fz)
                + 2 * norm_bytes(m, e, r, cast, 0, fz)) * sbh
    else:
        norm = (norm_bytes(m, e, r, cast, qkv_in, fz) + norm_bytes(m, e, r, cast, mlp_in, fz)) * sbh
    if m.family in QK_NORM_FAMILIES:  # over d, on the projections' outputs (dtype e): fp32 copy + normalised
        norm += (8 if m.family in GEMMA_NORM_FAMILIES else 4 + e) * sb * (a + kv) * d
    if attention == "sdpa" and math_sdpa and e < 4:
        # SDPA's math path computes in fp32 from 16-bit inputs: fp32 copies of Q, K, V; the output back in e
        att = 4 * sb * d * (a + 2 * kv) + e * sb * d * a
    else:
        # Q (a heads), K, V (kv heads; eager: repeated to a heads), the attention output
        att = e * sb * d * (2 * a + 2 * (a if attention == "eager" else kv))
    if saves is not None and cast and keep_o:
        # under autocast PEFT hands an adapter its input cast to the adapter's fp32 (``_cast_input_dtype``), and
        # autocast casts that back to 16 bits for A's matmul: a 16-bit copy of the attention output of its own
        att += e * sb * d * a
    if not keep_o and (attention == "eager" or math_sdpa):
        # eager's attention output is kept only by the output projection; a fused SDPA kernel keeps its output
        # for its own backward either way
        att -= e * sb * d * a
    if m.family in FUSED_FAMILIES and attention == "sdpa":
        att += e * sb * d * (2 * a + kv)
    if moe:
        T, k, W = sb, m.top_k, m.d_expert
        ex = r if cast else e   # under autocast the experts' grouped matmuls run in the norm's output dtype
        mlp = ex * T * k * (2 * h + 4 * W)
        if m.family == "qwen2_moe":
            mlp += 4 * e * T * m.shared_intermediate + e * T * (h + 1)
        router = 4 * T * m.experts + 4 * T + 41 * T * k
    else:
        if m.family in DECODERS:
            # the gate's output, its activation, the up projection's output (in what the projections return:
            # mlp_e), and the product, kept only by the down projection (a 16-bit cast of it under autocast)
            mlp = 3 * (e if mlp_e is None else mlp_e) * sb * I + keep_down * e * sb * I
        else:
            mlp = (2 - (1 - keep_down)) * e * sb * I
        router = 0
    if attention == "sdpa" and math_sdpa:
        sm = 4 if e < 4 else e      # fp32 from 16-bit inputs; dropout's mask and output of its dtype
        scores = sm * as2b + drop * 2 * sm * as2b
    else:
        scores = e * as2b + drop * (mask_bytes + e) * as2b
    if m.attn_softcap:
        scores += e * as2b
    return {
        "norm_bytes": norm,
        "attention_bytes": att,
        "scores_bytes": scores,
        "mlp_bytes": mlp,
        "router_bytes": router,
        "dropout_masks_bytes": drop * 2 * mask_bytes * sbh,
    }


def norm_bytes(m: ModelShape, e: int, r: int, cast: bool, readers: int, frozen: bool = False) -> int:
    """Bytes one norm keeps per element of its input: its own saved tensors and its output as its readers keep it.

    * GPT-2's and BERT's LayerNorm (one fused kernel) keeps its input (r, the residual stream's dtype);
    * Llama's RMSNorm (``LlamaRMSNorm.forward`` and its copies) upcasts its input to fp32 (kept by ``pow``, 4),
      keeps the normalised tensor in the input's dtype (``to(input_dtype)``, kept by the weight's ``mul``, r);
    * Gemma's RMSNorm normalises and scales in fp32 (``_norm(x.float()) * (1 + weight.float())``): 4 + 4.
    Its output (r) is kept once by whatever reads it, unless nothing does (Gemma 2's norms before a residual
    add); under autocast each Linear that reads it keeps its own 16-bit copy (autocast casts activations per op;
    only the weights' casts are cached), ``readers`` x e: Q, K and V apart are three.
    A frozen norm weight (LoRA) needs no gradient, so the RMSNorms keep only their fp32 input (the weight's
    ``mul`` keeps the weight, not the normalised tensor); a LayerNorm keeps its input either way.
    """
    if m.family in DECODERS and frozen:
        own = 4
    elif m.family in GEMMA_NORM_FAMILIES:
        own = 8
    elif m.family in DECODERS:
        own = 4 + r
    else:
        own = r
    return own + (0 if readers == 0 else readers * e if cast else r)


def smaller_layers_bytes(m: ModelShape, s: int, b: int, e: int, mask_bytes: int = 1, r: int | None = None,
                         cast: bool = False) -> int:
    """What the model's layers save less than ``layers`` x its largest layer: a MoE model whose dense layers
    (mlp_only_layers, decoder_sparse_step) differ from its routed ones. Only the norms, MLP and router differ."""
    n_moe = m.n_moe_layers
    if m.family not in MOE_FAMILIES or n_moe in (0, m.layers):
        return 0
    routed, dense = (layer_activation_terms(m, s, b, e, mask_bytes, k, r=r, cast=cast) for k in (True, False))
    size = {k: t["norm_bytes"] + t["mlp_bytes"] + t["router_bytes"] for k, t in ((True, routed), (False, dense))}
    big = max(size.values())
    return n_moe * (big - size[True]) + (m.layers - n_moe) * (big - size[False])


def dropout_mask_bytes(setup: Setup) -> int:
    """Bytes per element of a dropout mask: a bool on CUDA; torch's CPU dropout keeps its mask in the
    activation dtype (aten/src/ATen/native/Dropout.cpp: the CPU path multiplies by a mask of the input's dtype)."""
    return 1 if setup.device == "cuda" else PRECISIONS[setup.precision].activations


def sdpa_math_path(m: ModelShape, setup: Setup) -> bool:
    """SDPA on a CPU with attention dropout: the CPU flash kernel has no dropout, so SDPA falls back to its math
    path (aten/src/ATen/native/transformers/attention.cpp, ``_fused_sdp_choice_cpp`` -> math), which keeps the
    scores, and computes in fp32 from 16-bit inputs (``_scaled_dot_product_attention_math``: "Keep query, key,
    value in high precision for accuracy")."""
    return setup.attention == "sdpa" and setup.device == "cpu" and bool(m.dropout)


def attention_scores_bytes(m: ModelShape, s: int, b: int, setup: Setup, layer: dict[str, int]) -> int:
    """One layer's saved attention-score bytes under the attention implementation of ``setup``.

    * sdpa (transformers' default): the fused kernels (flash, memory-efficient, and the CPU flash kernel)
      save no s x s matrix, only the fp32 log-sum-exp of each query row, 4 x a x s x b bytes
      (``_scaled_dot_product_flash_attention`` returns ``logsumexp`` for backward); dropout inside the kernel
      keeps a seed, not a mask. Its math path (``sdpa_math_path``) keeps what the layer's term counts.
    * eager: the softmax keeps its output. The decoder families ask for it in fp32
      (``eager_attention_forward``: ``softmax(..., dtype=torch.float32).to(query.dtype)``); under autocast
      the others get it in fp32 too: adding the causal mask, made in the embeddings' dtype (fp32), promotes
      the scores (GPT-2's ``eager_attention_forward``), and on CUDA ``softmax`` is on autocast's fp32 list
      (torch.amp docs). So with 16-bit activations it keeps 4as^2b, and the matmul after it the 16-bit copy,
      e*as^2b (with dropout: the dropout's mask and output instead). Otherwise the layer's term stands.
    """
    lay = PRECISIONS[setup.precision]
    if setup.attention == "sdpa" and not sdpa_math_path(m, setup):
        return 4 * m.heads * s * b
    e, as2b = lay.activations, m.heads * s * s * b
    # transformers' classes add the causal mask in the embeddings' dtype (fp32 under autocast), which promotes
    # the scores: GPT-2 read from its config (hidden_act gelu_new), BERT; on CUDA autocast's fp32 list does it
    hf_mask = m.family == "bert" or getattr(m, "hidden_act", "") == "gelu_new"
    fp32_softmax = m.family in DECODERS or bool(lay.cast and (setup.device == "cuda" or hf_mask))
    if setup.attention == "sdpa" or not fp32_softmax or e >= 4:
        return layer["scores_bytes"]
    after = (dropout_mask_bytes(setup) + e) * as2b if m.dropout else e * as2b
    return 4 * as2b + after + (e * as2b if m.attn_softcap else 0)


def activation_function_extra_bytes(m: ModelShape, s: int, b: int, setup: Setup) -> int:
    """What the MLP's activation function saves beyond its input and output, as the implementation runs it.

    GPT-2's ``activation_function`` is ``gelu_new`` (GPT2Config's default), transformers' NewGELUActivation
    (transformers/activations.py), written out unfused: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))).
    Autograd keeps x, 0.5x, the tanh and 1 + tanh, and the next matmul the product: three tensors of the
    activation dtype and two of the tanh's. Under CUDA autocast ``pow`` is on the fp32 list, so the tanh and
    1 + tanh are fp32. The layer's formula counts two (input and output); this is the rest, e + 2t per element.
    It applies when the shape names its activation ``hidden_act == "gelu_new"`` (a field model_shapes reads
    from the config); a fused GELU (nn.GELU, ``gelu_pytorch_tanh``) saves only its input.
    """
    if getattr(m, "hidden_act", "") != "gelu_new":
        return 0
    lay = PRECISIONS[setup.precision]
    e = lay.activations
    t = 4 if lay.cast and setup.device == "cuda" else e
    return (e + 2 * t) * s * b * m.d_ff


def activation_terms(m: ModelShape, setup: Setup, mask_bytes: int | None = None, stage: int = 0) -> dict[str, int]:
    """Per-device activation bytes saved for backward, by term.

    Beyond the layers: the token ids the embedding keeps and the labels the loss keeps (int64; GPT-2's
    position ids too), the rotary cos and sin every layer shares (computed in fp32 and cast to the hidden
    states' dtype), the embedding's dropout mask (and BERT's embedding LayerNorm input), the final norm and
    the output head's input (``norm_bytes`` with one reader), and the fp32 log-probabilities that
    cross-entropy saves (4 bytes x s x b x vocab; the logits themselves are freed unless the caller keeps
    them).

    Dtypes: ``e`` is the layout's activation dtype, what matmuls return. Under autocast the residual stream
    stays fp32 (``r`` = 4): embeddings, adds and norms are not autocast ops, so each norm keeps fp32 and
    each Linear that reads an fp32 tensor keeps its own 16-bit cast. Left out: each norm's per-row
    statistics (one or two numbers per token, about 1/h of its other bytes).
    """
    lay = PRECISIONS[setup.precision]
    e = lay.activations
    r = 4 if lay.cast else e
    cast = bool(lay.cast)
    s, b, h = ceil_div(setup.seq, setup.cp), setup.batch, m.hidden   # context parallelism: s / cp tokens a rank
    t, sp = setup.tp, setup.sequence_parallel
    if mask_bytes is None:
        mask_bytes = dropout_mask_bytes(setup)
    lora = setup.lora_rank > 0
    # bitsandbytes' Linear4bit computes in bf16 and returns its output in its input's dtype (``Linear4bit.forward``:
    # ``.to(inp_dtype)``): under autocast the quantised projections' outputs are fp32 (r)
    mlp_e = r if setup.base_quant == "nf4" else None
    layer = layer_activation_terms(m, s, b, e, mask_bytes, attention=setup.attention, r=r, cast=cast,
                                   math_sdpa=sdpa_math_path(m, setup), saves=linear_saves(m, setup), mlp_e=mlp_e)
    layer = {**layer, "scores_bytes": attention_scores_bytes(m, s, b, setup, layer),  # the attention implementation
             "mlp_bytes": layer["mlp_bytes"] + activation_function_extra_bytes(m, s, b, setup)
             + adapter_activation_bytes(m, setup, s, b)}
    if t > 1:
        # Korthikanti et al. 2022, section 4.2: tensor parallelism splits what lies between the column- and
        # row-parallel projections (Q, K, V, the scores, the MLP's inner tensors) across t ranks: sbh(10 + 24/t
        # + 5as/(ht)) for their GPT layer; sequence parallelism splits the rest (the norms' tensors, the dropout
        # masks) along the sequence too: sbh(34/t + 5as/(ht)).
        split = ("attention_bytes", "scores_bytes", "mlp_bytes") + (("norm_bytes", "dropout_masks_bytes",
                                                                      "router_bytes") if sp else ())
        layer = {k: ceil_div(v, t) if k in split else v for k, v in layer.items()}
    per_layer = sum(layer.values())                # the largest layer (a MoE model's routed or dense kind)
    smaller = smaller_layers_bytes(m, s, b, e, mask_bytes, r, cast)   # what its other layers save less
    if t > 1:
        smaller = ceil_div(smaller, t)
    n_layers = len(stage_layers(m.layers, setup.pp, stage))   # the pipeline stage's layers
    if n_layers != m.layers:
        smaller = smaller * n_layers // m.layers
    m = replace(m, layers=n_layers)
    if setup.checkpointing == "none":
        recompute = 0
        layers = m.layers * per_layer - smaller
    elif setup.checkpointing == "selective":  # no attention scores kept; one layer's recomputed in backward
        recompute = layer["scores_bytes"]
        layers = m.layers * (per_layer - recompute) + recompute - smaller
    else:  # full: each layer's input (the residual stream), plus one layer recomputed during backward
        recompute = per_layer
        layers = m.layers * r * s * b * h + recompute
        if m.family == "gpt2" and setup.attention == "eager" and getattr(m, "hidden_act", "") == "gelu_new":
            # transformers' GPT-2 blocks take the additive causal mask positionally, and torch.utils.checkpoint
            # keeps the positional tensor inputs of each checkpointed call (``save_inputs``): one (b, 1, s, s)
            # mask in the embeddings' dtype, shared by every layer (transformers 5.17, modeling_layers.py). Like
            # gelu_new, a detail of transformers' classes: applied to shapes read from a GPT-2 config.
            layers += b * s * s * r
    emb_mask = (1 if setup.device == "cuda" else r) if m.dropout else 0   # the embeddings' output is in r
    # the token ids the embedding keeps for its weight's gradient (none when frozen: LoRA), the loss's labels
    indices = 8 * s * b * ((0 if lora else 1 + (1 if m.type_vocab else 0)) + 1) + (8 * s if m.positions and not lora else 0)
    rotary = 2 * s * m.d_head * r if m.family in DECODERS else 0
    hidden = emb_mask * s * b * h + (r * s * b * h if m.family == "bert" else 0)
    head_readers = 0 if lora and "lm_head" not in setup.lora_targets else 1   # a frozen head keeps no input
    head = norm_bytes(m, e, r, cast, head_readers, lora) * s * b * h
    if lora and stage == 0:
        # the frozen embeddings' output needs no gradient, so the first layer's first norm keeps nothing
        layers -= norm_bytes(m, e, r, cast, 0, True) * s * b * h // (t if t > 1 and sp else 1)
    logits = 4 * s * b * m.vocab
    if m.logit_softcap:  # Gemma 2: tanh(logits / cap) * cap keeps the tanh output, e bytes per logit
        logits += e * s * b * m.vocab
    if t > 1:   # the vocabulary-parallel head and loss split the logits; sequence parallelism the rest
        logits = ceil_div(logits, t)
        if sp:
            hidden, head = ceil_div(hidden, t), ceil_div(head, t)
    embedding = hidden + indices + rotary
    layer_input = r * s * b * h if setup.checkpointing == "full" else 0
    if t > 1 and sp:
        layer_input = ceil_div(layer_input, t)
        if setup.checkpointing == "full":
            layers = ceil_div(layers - recompute, t) + recompute
    inflight = 1
    if setup.pp > 1 and stage == setup.pp - 1:
        # the last stage holds the head and the loss, and runs each micro-batch's backward right after its
        # forward under 1F1B: one in flight; under GPipe all of them (Huang et al. 2019); under the interleaved
        # schedule its warm-up of (v - 1) pp chunk-micro-batches plus one (Megatron-LM's schedules.py,
        # ``num_warmup_microbatches``), (1 + (v - 1) pp) / v micro-batches of its layers
        v = setup.virtual_stages
        if setup.schedule == "gpipe":
            inflight_num, inflight_den = setup.microbatches, 1
        elif setup.schedule == "interleaved":
            inflight_num, inflight_den = min(1 + (v - 1) * setup.pp, setup.microbatches * v), v
        else:
            inflight_num, inflight_den = 1, 1
        indices = 8 * s * b   # the labels the loss keeps
        stored = ceil_div((layers - recompute + head + logits + indices) * inflight_num, inflight_den) + recompute
        return {"layers_bytes": stored - head - logits - indices, "embedding_bytes": indices, "head_bytes": head,
                "logits_bytes": logits, "per_layer_bytes": per_layer, "recompute_bytes": recompute,
                "layer_input_bytes": layer_input, "inflight_microbatches": inflight_num / inflight_den,
                "stage_layers": m.layers, "total_bytes": stored}
    if setup.pp > 1:
        # the first stage holds the most micro-batches in flight: pp under 1F1B (Narayanan et al. 2021, section
        # 2.2.1; Korthikanti et al. 2022, section 4.2.3), and 1 + (pp - 1) / (pp v) times that under the
        # interleaved schedule with v virtual stages (Korthikanti et al. 2022, section 4.2.3); never more than
        # the micro-batches there are. The head and loss sit on the last stage.
        if setup.schedule == "gpipe":   # every micro-batch's forward before any backward (Huang et al. 2019)
            inflight_num, inflight_den = setup.microbatches, 1
        elif setup.schedule == "interleaved":
            v = setup.virtual_stages
            inflight_num = min(setup.pp * setup.pp * v + setup.pp * (setup.pp - 1), setup.microbatches * setup.pp * v)
            inflight_den = setup.pp * v
        else:
            inflight_num, inflight_den = min(setup.pp, setup.microbatches), 1
        stored = ceil_div((layers - recompute + embedding) * inflight_num, inflight_den) + recompute
        inflight = inflight_num / inflight_den
        return {"layers_bytes": stored - embedding, "embedding_bytes": embedding, "head_bytes": 0,
                "logits_bytes": 0, "per_layer_bytes": per_layer, "recompute_bytes": recompute,
                "layer_input_bytes": layer_input, "inflight_microbatches": inflight,
                "stage_layers": m.layers, "total_bytes": stored}
    return {"layers_bytes": layers, "embedding_bytes": embedding, "head_bytes": head, "logits_bytes": logits,
            "per_layer_bytes": per_layer, "recompute_bytes": recompute,
            "layer_input_bytes": layer_input, "inflight_microbatches": inflight, "stage_layers": m.layers,
            "total_bytes": layers + embedding + head + logits}


def model_state_bytes(shapes: Sequence[Sequence[int]], optimizer: str, precision: str, zero: int,
                      gpus: int) -> tuple[dict[str, int], dict[str, int]]:
    """(unsharded, per-device) bytes of weights, gradients and optimizer state for tensors of ``shapes``.

    The optimizer term holds the fp32 master copy of the master layouts (ZeRO's K counts it). Per device
    follows ZeRO (``formulas.zero_bytes_per_device``), each sharded term rounded up to a whole byte.
    """
    n = sum(formulas.numel(s) for s in shapes)
    lay = PRECISIONS[precision]
    master = n * lay.master
    full = {"params": n * lay.weights, "grads": n * lay.grads,
            "optimizer": optimizer_bytes(optimizer, shapes, lay.state) + master, "master": master}
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


def lookup_only_parameters(m: ModelShape) -> int:
    """Parameters used only by embedding lookups (no matmul, so autocast casts none of them): the
    position and token-type tables, and the token embedding unless it is tied to the output head."""
    return (0 if m.tied_embeddings else m.vocab * m.hidden) + m.positions * m.hidden + m.type_vocab * m.hidden


NORM_NAMES = ("norm", "ln_", "LayerNorm")   # the parameter names of norms (model_shapes.parameter_shapes)


def cast_parameters(m: ModelShape) -> tuple[int, int]:
    """(cached, saved): the parameters autocast casts to 16 bits and caches for the autocast region, and
    those of them a matmul saves for backward.

    Autocast casts what its listed ops read (``mm``, ``addmm``, ``matmul``, ...): the weights and biases of
    the Linear layers and a tied output head. Not cast: the embedding lookups, the norms' weights (``mul`` and
    ``layer_norm`` are not lower-precision ops) and a MoE layer's experts, which run through
    ``torch._grouped_mm``, an op with no autocast kernel on CPU or CUDA (on torch 2.13,
    ``torch._C._dispatch_has_kernel_for_dispatch_key("aten::_grouped_mm", "AutocastCUDA")`` is False), so the
    experts compute in their input's dtype. A matmul's backward needs its weight, not its bias: biases are
    cached, not saved."""
    cached = parameter_count(m) - lookup_only_parameters(m)
    saved = cached
    for name, shape in parameter_shapes(m):
        n = formulas.numel(shape)
        if ".experts." in name or (len(shape) == 1 and any(k in name for k in NORM_NAMES)):
            cached -= n
            saved -= n
        elif len(shape) == 1:
            saved -= n
    return cached, saved


def unit_parameters(m: ModelShape) -> tuple[int, int]:
    """(one layer, the rest) in parameters: FSDP2's units when each layer is wrapped and the root holds the
    embeddings, the final norm and the head. Read off the architecture itself (one layer against two)."""
    one = parameter_count(replace(m, layers=1))
    layer = parameter_count(replace(m, layers=2)) - one
    return layer, one - layer


def _impl_temporaries(setup: Setup, update_elems: int, largest_elems: int, update_bytes: int) -> int:
    impl = setup.impl
    if impl == "fused":
        return 0
    if impl == "foreach":
        return FOREACH_TEMPORARIES[setup.optimizer] * update_elems * update_bytes
    return FOR_LOOP_LARGEST_TENSORS[setup.optimizer] * largest_elems * update_bytes


def phases(setup: Setup, shape: ModelShape | None, shapes: Sequence[Sequence[int]], per_device: dict[str, int],
           acts: dict[str, int] | None, rank: dict[str, int] | None = None) -> dict[str, dict]:
    """Live bytes per device at each phase of one training step, term by term (every term an integer).

    * forward: the end of forward: the persistent state, every cast weight in autocast's cache, the saved
      activations (the loss's fp32 log-probabilities among them) and the logits the model returns
      (activation dtype); gradients are not allocated yet unless they persist (set_to_none=False).
    * backward: at its start the cache is gone (only saved cast weights stay) and the loss's two fp32
      logit-sized temporaries appear (the gradients of the log-probabilities and of the upcast logits,
      2 x 4sbV); then the log-probabilities are freed, the head's gradient appears and, under checkpointing,
      the last layer is rebuilt (``recompute_bytes``, which the end of forward does not hold); gradients appear as activations are freed, layer by layer, so the live bytes run
      linearly from the start (all activations, the first gradients: the root unit's, the head) to the end
      (every gradient, the embedding's activations). The worse end counts, with one layer's backward
      working set (the gradient of its input and the MLP's two widest gradients, or eager's two score
      gradients). The logits the model returned are freed by then in the usual loop, which keeps only the
      loss (``loss = model(...).loss``; HF's Trainer); a loop that holds the outputs adds e x sbV.
    * optimizer: weights, gradients, state and the implementation's temporaries; a master layout first
      copies the 16-bit gradients to fp32 (4 bytes per updated parameter) and frees them, so its step holds
      the fp32 gradients and the larger of the 16-bit gradients and the temporaries.
    * between_steps: weights and state (and gradients with set_to_none=False).

    ZeRO: under stage 3 the root unit stays gathered (FSDP2 does not reshard the root after forward) and a
    layer plus the one prefetched is gathered in the compute dtype; under stages 2-3 a unit's unsharded
    gradient and its reduce-scatter buffer are live in backward; under plain data parallelism (stages 0-1,
    more than one GPU) DDP keeps a copy of the gradients in its buckets (gradient_as_bucket_view=False,
    the default; torch DistributedDataParallel docs).
    """
    lay = PRECISIONS[setup.precision]
    N, z = setup.gpus, setup.zero
    n = sum(formulas.numel(x) for x in shapes)
    P, G, O = per_device["params"], per_device["grads"], per_device["optimizer"]
    kept = 0 if setup.set_to_none else G
    # gradient accumulation (and a pipeline's micro-batches): from the second micro-batch on, the gradients of
    # the ones before are live through its forward and backward
    accumulated = G if (not setup.set_to_none or setup.microbatches > 1) else 0
    ddp = n * lay.grads if z < 2 and N > 1 else 0
    if shape is not None:
        layer, root = unit_parameters(shape)
        cached, saved = cast_parameters(shape)
        e, s, b, V = lay.activations, ceil_div(setup.seq, setup.cp), setup.batch, shape.vocab   # s / cp a rank
        logits, loss_tmp = e * s * b * V, 2 * 4 * s * b * V
        as2b = shape.heads * s * s * b
        scores_grad = (4 if lay.cast and setup.device == "cuda" else e) * as2b if setup.attention == "eager" else 0
        mlp_grads = 2 * e * s * b * shape.d_ff
        if shape.family in MOE_FAMILIES and shape.n_moe_layers:  # the experts' (token, expert) pairs, in their dtype
            ex = 4 if lay.cast else e
            mlp_grads = max(mlp_grads, 2 * ex * s * b * shape.top_k * shape.d_expert)
        working = e * s * b * shape.hidden + max(mlp_grads, 2 * scores_grad)
        # what backward rebuilds for one layer exists only in backward; the loss's log-probabilities are freed
        # by the loss's backward, before the first layer is rebuilt
        # at the end of backward the first layer is being differentiated: under checkpointing it was just rebuilt
        # (its saved tensors, and under full checkpointing its kept input, are live with every gradient)
        act = acts["total_bytes"] - acts["recompute_bytes"]
        act_end = acts["embedding_bytes"] + acts["layer_input_bytes"]
        recompute, logprobs = acts["recompute_bytes"], acts["logits_bytes"]
    else:
        layer, root, cached, saved = 0, 0, n, n   # no shape: no units (gathered layers and buffers are not estimated)
        logits = loss_tmp = working = act = act_end = recompute = logprobs = 0
    cast_layer = cast_parameters(replace(shape, layers=2))[0] - cast_parameters(replace(shape, layers=1))[0] \
        if shape is not None else 0
    if rank is not None:  # one rank of a tensor-, pipeline- or expert-parallel run, or a LoRA run (rank_summary)
        n, layer, root = rank["trainable"], rank["layer"], rank["root"]
        cached, saved, cast_layer = rank["cached"], rank["saved"], rank["layer_cached"]
        ddp = n * lay.grads if z < 2 and N > 1 else 0
        if not rank["head"]:
            logits = loss_tmp = logprobs = 0
        elif setup.tp > 1:
            logits, loss_tmp = ceil_div(logits, setup.tp), ceil_div(loss_tmp, setup.tp)
    cast = lay.cast * cached
    # Autocast's cache holds every cast weight until the autocast region ends (the end of forward, loss
    # included); then only the copies saved for backward stay: the matmuls' weights, or under full
    # checkpointing the head's alone (a checkpointed layer saves nothing and casts again when it is recomputed).
    full_ckpt = shape is not None and setup.checkpointing == "full"
    head_cast = ceil_div(shape.vocab * shape.hidden, setup.tp) if full_ckpt and (rank is None or rank["head"]) else 0
    cast_saved = lay.cast * head_cast if full_ckpt else lay.cast * saved
    # a rebuilt layer runs under autocast again (torch.utils.checkpoint restores the autocast state), so its
    # weights are cast again and cached until its backward is done
    cast_rebuilt = lay.cast * cast_layer if full_ckpt and lay.cast else 0
    gather = (lay.gather or lay.weights) * (root + 2 * layer) if z >= 3 else 0
    unit_grad = lay.unit_grad or lay.grads
    root_grad = root * unit_grad if z >= 2 else 0       # the root unit's unsharded gradient, reduced at the end
    reduce = layer * unit_grad + (layer + root) * (lay.reduce or lay.grads) if z >= 2 else 0
    first_grads = G if accumulated else min(root * unit_grad, n * lay.grads)
    fwd = {"params": P, "grads": accumulated, "optimizer": O, "cast_weights": cast, "activations": act,
           "logits": logits, "ddp_buckets": ddp, "gathered_params": gather}
    # the logits the model returned are gone once the caller keeps only the loss (the usual loop, HF's Trainer)
    early = {"params": P, "optimizer": O, "cast_weights": cast_saved, "activations": act,
             "grads": accumulated, "loss_temporaries": 0, "working_set": 0, "ddp_buckets": ddp, "gathered_params": gather,
             "reduce_buffers": reduce}
    # the loss's temporaries come first; the head's gradient, the last layer rebuilt (checkpointing) and its
    # working set after them, once the loss's log-probabilities are freed
    if loss_tmp >= recompute - logprobs + (first_grads - accumulated) + working:
        early["loss_temporaries"] = loss_tmp
    else:
        early["activations"] = act - logprobs + recompute
        early["grads"], early["working_set"] = first_grads, working
        early["cast_weights"] = cast_saved + cast_rebuilt
    late = {"params": P, "optimizer": O, "cast_weights": 0, "activations": act_end,
            "grads": G + root_grad, "working_set": working, "ddp_buckets": ddp, "gathered_params": gather,
            "reduce_buffers": reduce}
    # under checkpointing each layer is rebuilt before its backward: at the first layer's turn its rebuilt
    # tensors are live with every gradient but its own
    layer_grads = (ceil_div(layer * lay.grads, N) if z >= 2 else layer * lay.grads) if recompute else 0
    rebuilt = {**late, "activations": act_end + recompute, "grads": late["grads"] - min(layer_grads, G),
               "cast_weights": cast_rebuilt}
    points = [(early, "start"), (late, "end")] + ([(rebuilt, "first layer rebuilt")] if recompute else [])
    bwd, point = max(points, key=lambda t: sum(t[0].values()))
    update_elems = ceil_div(n, N) if z >= 1 else n
    largest = max((formulas.numel(x) for x in shapes), default=0)
    lora = rank is not None and rank["lora"]
    update_bytes = 4 if lora else lay.master or lay.weights     # LoRA's adapters are fp32, without a master copy
    temps = _impl_temporaries(setup, update_elems, largest, update_bytes)
    if lay.master and not lora:
        master_grads = 4 * update_elems
        opt = {"params": P, "optimizer": O, "master_grads": master_grads, "grads": 0, "temporaries": 0,
               "ddp_buckets": ddp}
        opt["grads" if G >= temps else "temporaries"] = max(G, temps)
    else:
        opt = {"params": P, "grads": G, "optimizer": O, "temporaries": temps, "ddp_buckets": ddp}
    between = {"params": P, "grads": kept, "optimizer": O, "ddp_buckets": ddp}
    out = {}
    for name, terms, note in (("forward", fwd, "end of forward"),
                              ("backward", bwd, f"worst point of backward (its {point})"),
                              ("optimizer", opt, f"optimizer step ({setup.impl})"),
                              ("between_steps", between, "between steps")):
        out[name] = {"label": note, "terms_bytes": terms, "total_bytes": sum(terms.values())}
    out["backward"]["cast_saved_bytes"] = cast_saved   # autocast's copies that forward saved for backward
    return out


LEAVES_OUT = ("allocator fragmentation and reserve", "NCCL and other communication library buffers",
              "the framework's own extras (kernels' workspaces, cuBLAS handles)")


def fits(peak_bytes: int, precision: str = "fp32", headroom_bytes: int = CUDA_CONTEXT_BYTES) -> list[dict]:
    """Each card's verdict: the peak plus the headroom within the reported total, in a dtype it computes."""
    need = PRECISIONS[precision].compute
    out = []
    for name, cap, dtypes, src in CARDS:
        dtype_ok = need in dtypes
        room = peak_bytes + headroom_bytes <= cap
        verdict = ("fits" if room else "does not fit") if dtype_ok else f"no {need}"
        out.append({"gpu": name, "capacity_bytes": cap, "capacity_mib": cap // MIB, "dtypes": list(dtypes),
                    "dtype_ok": dtype_ok, "fits": dtype_ok and room, "verdict": verdict,
                    "spare_bytes": cap - peak_bytes - headroom_bytes, "source": src})
    return out


def estimate(setup: Setup, shape: ModelShape | None = None, params: int | None = None) -> dict:
    """Per-device bytes of weights, gradients, optimizer state and activations, and the peak by phase.

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
    sharded = setup.tp > 1 or setup.pp > 1 or setup.ep > 1 or setup.lora_rank > 0
    if (setup.tp > 1 or setup.pp > 1 or setup.ep > 1 or setup.cp > 1 or setup.lora_rank) and shape is None:
        raise EstimateError("tensor, pipeline, context and expert parallelism and LoRA need the model's shape: give "
                            "a model or a config, not --params")
    rank = None
    trainable = n_params
    if shape is not None:
        check_parallel(shape, setup)
    def one_rank(stage: int) -> tuple:
        rank = None
        if sharded:
            rank = rank_summary(shape, setup, stage)
            tensors = rank["tensors"]
            if setup.lora_rank:
                full, per_device = finetune_state_bytes(tensors, setup)
            else:
                full, per_device = model_state_bytes([x for _, x, _ in tensors], setup.optimizer, setup.precision,
                                                     setup.zero, setup.gpus)
            train_shapes = [x for _, x, kind in tensors if kind != "base"]
        else:
            full, per_device = model_state_bytes(shapes, setup.optimizer, setup.precision, setup.zero, setup.gpus)
            train_shapes = shapes
        acts = activation_terms(shape, setup, stage=stage) if shape is not None else None
        per_device["activations"] = acts["total_bytes"] if acts else 0
        per_device["total"] = sum(per_device.values())
        by_phase = phases(setup, shape, train_shapes, per_device, acts, rank)
        offload = offload_terms(setup, per_device, by_phase, acts, shape, rank) if setup.offload else None
        if offload:
            by_phase = offload["phases"]
        peak_phase = max(by_phase, key=lambda k: by_phase[k]["total_bytes"])
        return (by_phase[peak_phase]["total_bytes"], peak_phase, by_phase, full, per_device, acts, rank, offload,
                train_shapes)

    # the most loaded rank: under pipeline parallelism the first stage (the most micro-batches in flight) or the
    # last (the head, the logits and the loss), whichever peaks higher
    candidates = [one_rank(0)] + ([one_rank(setup.pp - 1)] if setup.pp > 1 else [])
    peak, peak_phase, by_phase, full, per_device, acts, rank, offload, train_shapes = max(
        candidates, key=lambda c: c[0])

    if setup.context_bytes is not None:     # measured on the reader's host (the hardware chapter shows it)
        headroom, headroom_source = setup.context_bytes, "given (--context-mib)"
    elif setup.device == "cuda":
        headroom, headroom_source = CUDA_CONTEXT_BYTES, CUDA_CONTEXT_SOURCE
    else:
        headroom, headroom_source = 0, None
    return {
        "model": (shape.name or None) if shape is not None else None,
        "shape": shape.as_dict() if shape is not None else None,
        "parameters": n_params,
        "setup": {**asdict(setup), "optimizer_impl_used": setup.impl},
        "per_device_bytes": per_device,
        "persistent_sum_bytes": per_device["total"],
        "peak_bytes": peak,
        "peak_phase": peak_phase,
        "phases": by_phase,
        "headroom_bytes": headroom,
        "headroom_source": headroom_source,
        "leaves_out": list(LEAVES_OUT),
        "notes": ([PRECISION_NOTES[setup.precision]] if setup.precision in PRECISION_NOTES else [])
        + ([] if shape is not None else ["no shape: activations, logits, ZeRO's gathered layers and buffers "
                                         "are not estimated"])
        + ([MODEL_PARALLEL_NOTE] if max(setup.tp, setup.pp, setup.cp, setup.ep) > 1 else []),
        "unsharded_bytes": full,
        "trainable_parameters": trainable if not sharded else rank["trainable_total"],
        "rank": None if rank is None else {k: v for k, v in rank.items() if k != "tensors"},
        "offload": None if offload is None else {k: v for k, v in offload.items() if k != "phases"},
        "activation_terms_bytes": acts,
        "activations_estimated": acts is not None,
        "fits": fits(peak, setup.precision, headroom),
    }


def check_parallel(m: ModelShape, setup: Setup) -> None:
    """The splits a model allows: tp divides the heads (and the key/value heads), the MLP and the vocabulary is
    padded (Megatron pads it to a multiple of tp: rounded up here); pp at most the layers; cp divides the
    sequence; ep divides the experts of a MoE model."""
    t = setup.tp
    if t > 1 and (m.heads % t or m.n_kv_heads % t):
        raise EstimateError(f"tp {t} must divide the attention heads ({m.heads}) and key/value heads ({m.n_kv_heads})")
    if setup.pp > m.layers:
        raise EstimateError(f"pp {setup.pp} exceeds the model's {m.layers} layers")
    if setup.schedule == "interleaved" and m.layers % (setup.pp * setup.virtual_stages):
        raise EstimateError(f"the interleaved schedule needs the layers ({m.layers}) to divide into pp x "
                            f"virtual_stages = {setup.pp * setup.virtual_stages} chunks")
    if setup.seq % setup.cp:
        raise EstimateError(f"cp {setup.cp} must divide seq {setup.seq}")
    if setup.ep > 1 and (m.family not in MOE_FAMILIES or m.experts % setup.ep):
        raise EstimateError(f"ep {setup.ep} needs a mixture of experts whose experts it divides"
                            + (f" ({m.experts})" if m.family in MOE_FAMILIES else f", not a {m.family} model"))
    if setup.lora_rank:
        names = {n.split(".")[-2] for n, x in parameter_shapes(replace(m, layers=1))
                 if len(x) == 2 and _layer_of(n) is not None and ".experts." not in n}
        unknown = [t for t in setup.lora_targets if t not in names]
        if unknown:
            raise EstimateError(f"lora_targets {', '.join(unknown)}: no such Linear in a {m.family} model "
                                f"(its Linear modules: {', '.join(sorted(names))})")


def rank_summary(m: ModelShape, setup: Setup, stage: int = 0) -> dict:
    """One rank's tensors (of pipeline ``stage``) and what ``phases`` needs: trainable elements, ZeRO-3 units,
    autocast's cast parameters, whether it holds the head."""
    tensors = rank_tensors(m, setup, stage)
    layers = stage_layers(m.layers, setup.pp, stage)

    def count(pred) -> int:
        return sum(formulas.numel(x) for name, x, kind in tensors if pred(name, x, kind))

    first = layers.start
    in_layer = lambda name: _layer_of(name) == first                       # noqa: E731
    trainable = lambda kind: kind != "base"                               # noqa: E731
    nf4 = setup.base_quant == "nf4"

    def castable(name, x, kind) -> bool:
        if ".experts." in name or (len(x) == 1 and any(k in name for k in NORM_NAMES)):
            return False
        if "wpe" in name or "position" in name or "token_type" in name:
            return False
        if ("wte" in name or "embed" in name) and not m.tied_embeddings:
            return False
        if nf4 and kind == "base" and _quantised(name, x):
            return False   # bitsandbytes dequantises in its own kernels, not through autocast's cache
        return True

    layer_tr = count(lambda n, x, k: in_layer(n) and trainable(k))
    if setup.lora_rank:   # the adapters of the whole model, as PEFT counts its trainable parameters
        whole = rank_tensors(m, replace(setup, tp=1, pp=1, ep=1, sequence_parallel=False), 0)
        all_train = sum(formulas.numel(x) for _, x, kind in whole if kind != "base")
    else:
        all_train = parameter_count(m)
    return {
        "tensors": tensors, "stage": stage, "stage_layers": len(layers), "head": stage == setup.pp - 1,
        "lora": setup.lora_rank > 0,
        "trainable": count(lambda n, x, k: trainable(k)), "trainable_total": all_train,
        "layer": layer_tr if setup.lora_rank else count(lambda n, x, k: in_layer(n)),
        "root": count(lambda n, x, k: _layer_of(n) is None and (trainable(k) or not setup.lora_rank)),
        "cached": count(castable), "saved": count(lambda n, x, k: castable(n, x, k) and len(x) >= 2),
        "layer_cached": count(lambda n, x, k: in_layer(n) and castable(n, x, k)),
        "parameters_held": sum(formulas.numel(x) for _, x, _ in tensors),
    }


def offload_terms(setup: Setup, per: dict[str, int], by_phase: dict, acts: dict | None, m: ModelShape | None,
                  rank: dict | None) -> dict:
    """What offloading moves to the host, per device, and the transfers of one step at ``pcie_gb_s``.

    * optimizer (ZeRO-Offload, Ren et al. 2021, section 4: the fp32 optimizer state and its master copy on the
      host, pinned; each step the gradients go down and the updated 16-bit weights come back up);
    * parameters (FSDP2's ``CPUOffloadPolicy``, pinned by default, and ZeRO-Infinity): the weights, gradients
      and optimizer state on the host; each unit is copied up for forward and again for backward, each gradient
      down;
    * activations (``torch.autograd.graph.save_on_cpu(pin_memory=True)``): every saved tensor goes down as it is
      saved and comes back up in backward; the device keeps one layer's.
    The transfer time assumes the copies do not overlap compute: an upper bound on the time they add.
    """
    lay = PRECISIONS[setup.precision]
    host = pinned = 0
    moved = 0
    out_phases = {k: {**v, "terms_bytes": dict(v["terms_bytes"])} for k, v in by_phase.items()}

    def drop(term: str, amount: int | None = None) -> None:
        for ph in out_phases.values():
            t = ph["terms_bytes"]
            if term in t:
                t[term] = max(0, t[term] - (t[term] if amount is None else amount))

    if "optimizer" in setup.offload or "parameters" in setup.offload:
        host += per["optimizer"]
        pinned += per["optimizer"]
        drop("optimizer")
        drop("temporaries")
        drop("master_grads")
        moved += per["grads"] + per["params"]
    if "parameters" in setup.offload:
        host += per["params"] + per["grads"]
        pinned += per["params"] + per["grads"]
        moved += per["params"]   # a second copy up for backward
        # one layer gathered in compute and the next prefetched (the whole model's layer when nothing is split)
        unit = rank["layer"] if rank else (unit_parameters(m)[0] if m is not None else 0)
        keep = 2 * unit * (lay.gather or lay.weights) if m is not None else 0
        drop("params")
        drop("grads")
        for ph in out_phases.values():
            ph["terms_bytes"]["gathered_units"] = keep
    if "activations" in setup.offload and acts is not None:
        kept = acts["per_layer_bytes"]
        host += acts["total_bytes"]
        pinned += acts["total_bytes"]
        moved += 2 * acts["total_bytes"]
        for ph in out_phases.values():
            t = ph["terms_bytes"]
            if "activations" in t:
                t["activations"] = min(t["activations"], kept)
    for ph in out_phases.values():
        ph["total_bytes"] = sum(ph["terms_bytes"].values())
    return {"parts": list(setup.offload), "host_bytes": host, "pinned_host_bytes": pinned,
            "transfer_bytes_per_step": moved, "pcie_gb_s": setup.pcie_gb_s,
            "transfer_seconds_per_step": moved / (setup.pcie_gb_s * 1e9),
            "bandwidth_source": PCIE_SOURCE if setup.pcie_gb_s == PCIE_GB_S else "given (--pcie-gb-s)",
            "phases": out_phases}


def calculator_inputs() -> dict:
    """Everything the in-browser calculator needs, read at build time (one source of truth, no measurement)."""
    return {
        "shapes": {k: {**m.as_dict(), "parameters": parameter_count(m)} for k, m in BUILTIN.items()},
        "precisions": {k: v._asdict() for k, v in PRECISIONS.items()},
        "precision_notes": PRECISION_NOTES,
        "model_parallel_note": MODEL_PARALLEL_NOTE,
        "optimizers": list(OPTIMIZERS),
        "attention": list(ATTENTION),
        "devices": list(DEVICES),
        "optimizer_impls": list(OPTIMIZER_IMPLS),
        "default_impl": DEFAULT_IMPL,
        "foreach_temporaries": FOREACH_TEMPORARIES,
        "for_loop_largest_tensors": FOR_LOOP_LARGEST_TENSORS,
        "no_fused": list(NO_FUSED),
        "cuda_context_bytes": CUDA_CONTEXT_BYTES,
        "cuda_context_mib": CUDA_CONTEXT_BYTES // MIB,
        "checkpointing": list(CHECKPOINTING),
        "state_tensors_per_param": {k: v for k, v in formulas.STATE_TENSORS_PER_PARAM.items()
                                    if k in OPTIMIZERS},
        "has_step_tensor": {k: formulas.HAS_STEP_TENSOR[k] for k in OPTIMIZERS
                            if k in formulas.HAS_STEP_TENSOR},
        "step_tensor_bytes": formulas.STEP_TENSOR_BYTES,
        "bnb_min_8bit_size": BNB_MIN_8BIT_SIZE,
        "bnb_block": BNB_BLOCK,
        "gpus": [{"name": n, "capacity_bytes": c, "dtypes": list(d), "source": s} for n, c, d, s in CARDS],
    }
