# %% [markdown]
# # Fine-tuning memory: LoRA and QLoRA, measured with PEFT

# %%
"""Fine-tuning memory: full fine-tuning against LoRA and QLoRA, one AdamW step measured.

**Question.** What does LoRA save in a training step, and what does it not? A frozen base keeps
no gradients and no optimizer state, the adapters keep both; activations still flow through the
frozen base. How do the trainable parameters, the state bytes, the saved activations and the
step's peak compare with full fine-tuning, at two ranks and two sets of target modules? Where
bitsandbytes' 4-bit layers run, how many bytes does the NF4 base take (QLoRA)? And offload?

**Method.** `run` builds transformers' own Llama class from a config (`AutoConfig.for_model`,
`AutoModelForCausalLM.from_config`, randomly initialised, nothing downloaded) and, per case,
wraps it with PEFT (`get_peft_model` with a `LoraConfig` of rank r on the named target modules,
as PEFT names them), or trains all of it (full fine-tuning). The optimizer is
`torch.optim.AdamW(model.parameters())`, over every parameter, as many scripts write it: that
the frozen base gets neither gradients nor optimizer state is measured, not assumed. A first step
creates the state and counts what autograd saves for backward (`saved_tensors_hooks`); a second
runs under PyTorch's `MemTracker` phase by phase (forward, backward, optimizer step). The
trainable parameters are counted off the tensors and by PEFT's own
`get_nb_trainable_parameters()`. QLoRA: every linear layer of the decoder becomes
bitsandbytes' `Linear4bit` (NF4, blocks of 64, double quantisation, bf16 compute: the QLoRA
paper's settings, what transformers' `BitsAndBytesConfig` builds), PEFT wraps it with its 4-bit
LoRA layer, and the step runs under `torch.autocast(bfloat16)`; the stored bytes of the 4-bit
weights and their quantisation constants are read off the layers. Where bitsandbytes is missing
or its 4-bit layers fail on the host, the exact error is stored instead. Offload is measured on
CUDA only (`torch.autograd.graph.save_on_cpu` for activations, AdamW over CPU copies for the
optimizer); on a CPU host the host is the device and the data says so. `run` stores the inputs
the estimator needs (config fields, batch, sequence, precision, LoRA rank and targets, base
quantisation); `summarize` asks the torch-free estimator at build time.

**Run.** `python -m experiments.finetune_memory --profile quick` prints the JSON.
"""

# %%
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass

import torch

from experiments.lib import estimator, model_shapes  # summarize only (torch-free)
from experiments.lib.memory import (MemoryTracker, close_phase, grad_bytes, optimizer_state_bytes, param_bytes,
                                    tensor_bytes)
from experiments.lib.saved import count_saved
from experiments.lib.threads import cpu_threads

TIMEOUT_S = 600

# The linear layers of a Llama decoder layer, as PEFT's target_modules names them (transformers'
# modeling_llama.py: LlamaAttention's q/k/v/o_proj, LlamaMLP's gate/up/down_proj).
TARGET_SETS = {
    "qv": ("q_proj", "v_proj"),  # LoRA's own choice (Hu et al. 2021, section 7.1)
    "all-linear": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),  # QLoRA's
}
NF4_BLOCK = 64         # weights per quantisation block (Dettmers et al. 2023, section 3)
NF4_BLOCK2 = 256       # first-level constants per block of the double quantisation (ibid.)


@dataclass(frozen=True)
class Config:
    batch: int = 2
    seq: int = 128
    hidden: int = 256
    layers: int = 4
    heads: int = 8
    kv_heads: int = 4
    intermediate: int = 704
    vocab: int = 4096
    precision: str = "fp32"               # full and LoRA cases: "fp32" or "bf16-mixed" (autocast over fp32)
    ranks: tuple[int, ...] = (8, 64)
    target_sets: tuple[str, ...] = ("qv", "all-linear")
    qlora: bool = True                    # one QLoRA case: the first rank on all linear layers
    offload: bool = True                  # on CUDA: measure activation and optimizer offload of the full case
    threads: int = 1                      # CPU intra-op threads (0: torch's default)


PROFILES = {
    "test": Config(batch=1, seq=16, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, vocab=64,
                   ranks=(2, 4)),
    "quick": Config(),  # 5.3 M parameters
    # 99 M parameters (hidden 768, 8 layers, a 32 k vocabulary) at sequence 512
    "full": Config(batch=1, seq=512, hidden=768, layers=8, heads=12, kv_heads=4, intermediate=2048, vocab=32000,
                   ranks=(16, 64), threads=0),
    # a GPU host: 74 M parameters at sequence 1024 in bf16-mixed, the offload variants of the full case
    "gpu": Config(batch=4, seq=1024, hidden=768, layers=4, heads=12, kv_heads=4, intermediate=2048, vocab=32000,
                  precision="bf16-mixed", ranks=(16, 64), threads=0),
}

# %% [markdown]
# ## One case: build, wrap, two steps
# The model is transformers' `LlamaForCausalLM`. A LoRA case wraps it with PEFT; a QLoRA case
# first swaps the decoder's linear layers for bitsandbytes' `Linear4bit` (what transformers'
# `replace_with_bnb_linear` does when a checkpoint is loaded with `BitsAndBytesConfig(load_in_4bit=True)`)
# and marks the model `is_loaded_in_4bit`, which makes PEFT pick its 4-bit LoRA layer.

# %%
def hf_config_fields(cfg: Config) -> dict:
    return {"hidden_size": cfg.hidden, "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
            "num_key_value_heads": cfg.kv_heads, "intermediate_size": cfg.intermediate, "vocab_size": cfg.vocab,
            "max_position_embeddings": cfg.seq, "use_cache": False}


def _plain(config_dict: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in config_dict.items() if not k.startswith("_")}, default=str))


def case_key(kind: str, rank: int = 0, targets: str = "") -> str:
    return "full" if kind == "full" else f"{kind}-r{rank}-{targets}"


def cases_of(cfg: Config) -> list[tuple[str, int, str]]:
    """(kind, rank, target set) in table order: full fine-tuning, LoRA per rank and target set, QLoRA."""
    out = [("full", 0, "")]
    out += [("lora", r, t) for r in cfg.ranks for t in cfg.target_sets]
    if cfg.qlora:
        out.append(("qlora", cfg.ranks[0], "all-linear"))
    return out


def quantize_nf4(model: torch.nn.Module, device: str) -> list[int]:
    """Replace the decoder's ``nn.Linear`` layers by bitsandbytes' NF4 ``Linear4bit`` (double quantisation,
    blocks of 64, bf16 compute); the LM head stays as it is, as in transformers' integration. Returns the
    element count of each quantised weight."""
    import bitsandbytes as bnb

    numels = []
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, torch.nn.Linear) or child_name == "lm_head":
                continue
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4")
            q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                         quant_type="nf4", blocksize=NF4_BLOCK)
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(module, child_name, q.to(device))  # the move quantises (bitsandbytes' Params4bit.to)
            numels.append(child.weight.numel())
    model.is_loaded_in_4bit = True  # what transformers sets on a 4-bit model; PEFT dispatches on it
    return numels


def quant_constants(model: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """Every 4-bit weight's quantisation constants (bitsandbytes' ``QuantState``): the absmax per block
    (8-bit with double quantisation) with the second level's fp32 absmax and offset, and the code tables
    (the 16 NF4 values, the 256 values of the second level's 8-bit code)."""
    out: dict[str, list[torch.Tensor]] = {"absmax": [], "code": []}
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        if qs is None:
            continue
        for level in (qs, getattr(qs, "state2", None)):
            if level is not None:
                out["absmax"] += [t for t in (level.absmax,) if isinstance(t, torch.Tensor)]
                out["code"] += [t for t in (level.code,) if isinstance(t, torch.Tensor)]
        if isinstance(getattr(qs, "offset", None), torch.Tensor):
            out["absmax"].append(qs.offset)
    return out


def _build(cfg: Config, device: str, kind: str, rank: int, targets: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    hf_config = AutoConfig.for_model("llama", **hf_config_fields(cfg))
    model = AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa")
    numels: list[int] = []
    if kind == "qlora":
        numels = quantize_nf4(model, device)
    model = model.to(device)
    if kind != "full":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                                                 target_modules=list(TARGET_SETS[targets])))
    model.train()
    return hf_config, model, numels


def measure_case(cfg: Config, device: str, kind: str, rank: int = 0, targets: str = "") -> dict:
    hf_config, model, numels = _build(cfg, device, kind, rank, targets)
    precision = "bf16-mixed" if kind == "qlora" else cfg.precision
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)  # every parameter: the frozen ones included
    dev_type = torch.device(device).type
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=g).to(device)

    def forward() -> torch.Tensor:
        if precision == "bf16-mixed":
            with torch.autocast(dev_type, dtype=torch.bfloat16):
                return model(input_ids=ids, labels=ids).loss
        return model(input_ids=ids, labels=ids).loss

    def step() -> None:
        opt.step()
        opt.zero_grad(set_to_none=True)

    # step 1: create the optimizer state; count what autograd saves for backward
    loss, saved = count_saved(forward, exclude=[model])
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    frozen_with_grad = sum(1 for p in frozen if p.grad is not None)
    grads = grad_bytes(model)
    loss_1 = float(loss.detach())
    del loss
    step()
    saved_bytes: dict[str, int] = {}
    for e in saved.entries:
        saved_bytes[e.dtype] = saved_bytes.get(e.dtype, 0) + e.bytes

    # step 2, measured phase by phase
    # MemTracker hooks the gradient of every parameter of a tracked module, which torch refuses for a
    # frozen one: the trainable parameters are tracked as a module, the frozen ones and the buffers as
    # tensors (labelled "other"; the totals are the same).
    constants = quant_constants(model)
    tracker = MemoryTracker(device).track(torch.nn.ParameterList(trainable), opt, *frozen, *model.buffers(),
                                          *constants["absmax"], *constants["code"])
    phases: dict[str, dict] = {}

    def close(phase: str) -> None:
        phases[phase] = close_phase(tracker)

    with tracker:
        before = tracker.current().as_dict()
        tracker.reset_peak()
        loss = forward()
        close("forward")
        loss.backward()
        del loss
        close("backward")
        step()
        close("optimizer")
    peft_counts = model.get_nb_trainable_parameters() if kind != "full" else (None, None)
    frozen_ids = {id(p) for p in frozen}
    return {
        "kind": kind, "rank": rank, "targets": targets, "target_modules": list(TARGET_SETS.get(targets, ())),
        "precision": precision, "base_quant": "nf4" if kind == "qlora" else "none",
        "model_class": type(model).__name__,
        "hf_config": _plain(hf_config.to_dict()),  # run() keeps one in data["hf_config"]
        "trainable_params": sum(p.numel() for p in trainable),
        "frozen_params": sum(p.numel() for p in frozen),  # a 4-bit weight counts its packed uint8 elements
        "peft_trainable_params": peft_counts[0], "peft_all_params": peft_counts[1],
        "trainable_tensors_count": len(trainable), "frozen_tensors_count": len(frozen),
        "frozen_with_grad_count": frozen_with_grad,
        "state_tensors_count": len(opt.state),
        "frozen_with_state_count": sum(1 for p in opt.state if id(p) in frozen_ids and opt.state[p]),
        "params_bytes": param_bytes(model),
        "trainable_bytes": tensor_bytes(trainable),
        "frozen_bytes": tensor_bytes(frozen),
        "quant_absmax_bytes": tensor_bytes(constants["absmax"]),  # QLoRA: constants per block, and the offset
        "quant_code_bytes": tensor_bytes(constants["code"]),      # QLoRA: the code tables, per weight
        "packed_bytes": tensor_bytes([p for p in model.parameters() if getattr(p, "quant_state", None) is not None]),
        "quantized_elements": numels,  # each 4-bit weight's element count (QLoRA)
        "grads_bytes": grads,
        "optimizer_state_bytes": optimizer_state_bytes(opt),
        "saved_bytes": saved_bytes,  # {dtype: bytes} autograd saved for backward, parameters excluded
        "loss_first_step": loss_1,
        "before_step": before,
        "phases": phases,
    }


def linear_probe(cfg: Config, device: str) -> dict:
    """What one linear layer saves for backward when its input needs a gradient, with its weight trainable
    and frozen (the frozen base of LoRA): the weight's gradient is what needs the input."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(cfg.hidden, cfg.hidden, bias=False).to(device)
    x = torch.randn(cfg.batch, cfg.seq, cfg.hidden, device=device, requires_grad=True)
    out = {"input_bytes": tensor_bytes(x)}
    for name, trainable in (("trainable", True), ("frozen", False)):
        lin.weight.requires_grad_(trainable)
        _, saved = count_saved(lambda: lin(x), exclude=[lin])
        out[f"{name}_weight_saved_bytes"] = saved.total_bytes
    return out

# %% [markdown]
# ## Offload, on CUDA only
# Activations: the forward pass under `torch.autograd.graph.save_on_cpu(pin_memory=True)`, which
# moves every tensor saved for backward to host memory and back. The optimizer: AdamW steps fp32
# copies of the weights held on the CPU; the gradients go down after backward, the weights come
# back after the step. Each variant is the full-fine-tuning case, measured by the device's allocator.

# %%
OFFLOADS = ("none", "activations", "optimizer")


def measure_offload(cfg: Config, device: str, variant: str) -> dict:
    """One full-fine-tuning step with ``variant`` offloaded; peaks per phase on ``device``."""
    _, model, _ = _build(cfg, device, "full", 0, "")
    dev_type = torch.device(device).type
    cuda = dev_type == "cuda"
    host = [torch.nn.Parameter(p.detach().to("cpu", torch.float32)) for p in model.parameters()] \
        if variant == "optimizer" else None
    opt = torch.optim.AdamW(host if host is not None else model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=g).to(device)

    def forward() -> torch.Tensor:
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16-mixed"):
            if variant == "activations":
                with torch.autograd.graph.save_on_cpu(pin_memory=cuda):
                    return model(input_ids=ids, labels=ids).loss
            return model(input_ids=ids, labels=ids).loss

    def step() -> None:
        if host is not None:
            for c, p in zip(host, model.parameters()):
                c.grad = p.grad.to("cpu", torch.float32)
                p.grad = None
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                for c, p in zip(host, model.parameters()):
                    p.copy_(c)
        else:
            opt.step()
            opt.zero_grad(set_to_none=True)

    def one_step(tracker=None) -> dict:
        out = {}

        def close(phase: str) -> None:
            if cuda:
                torch.cuda.synchronize(device)
                out[phase] = {"cuda_max_allocated_bytes": int(torch.cuda.max_memory_allocated(device))}
                torch.cuda.reset_peak_memory_stats(device)
            elif tracker is not None:
                out[phase] = {"cuda_max_allocated_bytes": None, "tracked_peak_bytes": tracker.peak().total}
                tracker.reset_peak()

        loss = forward()
        close("forward")
        loss.backward()
        del loss
        close("backward")
        step()
        close("optimizer")
        return out

    one_step()  # creates the optimizer state
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        phases = one_step()
    else:
        tracker = MemoryTracker(device).track(model, opt)
        with tracker:
            tracker.reset_peak()
            phases = one_step(tracker)
    return {"variant": variant, "phases": phases,
            "device_state_bytes": param_bytes(model) + (optimizer_state_bytes(opt) if host is None else 0),
            "host_state_bytes": (param_bytes(torch.nn.ParameterList(host)) + optimizer_state_bytes(opt))
            if host is not None else 0}


def run(cfg: Config, device: str) -> dict:
    dev_type = torch.device(device).type
    base = {"device": device, "device_kind": dev_type, "batch": cfg.batch, "seq": cfg.seq,
            "precision": cfg.precision, "family": "llama"}
    try:
        import transformers
    except ImportError as exc:
        return {**base, "ran": False, "reason": f"transformers is not installed ({exc})", "transformers": None,
                "peft": None, "peft_error": None, "hf_config": {}, "cases": {},
                "qlora": {"ran": False, "error": None, "bitsandbytes": None, "case": None},
                "offload": {"measured": False, "reason": "transformers is not installed", "variants": {}},
                "linear_probe": None}
    try:
        import peft
        peft_version, peft_error = peft.__version__, None
    except ImportError as exc:  # the LoRA cases are left out; full fine-tuning still runs
        peft_version, peft_error = None, f"{type(exc).__name__}: {exc}"
    cases: dict[str, dict] = {}
    qlora = {"ran": False, "error": None, "bitsandbytes": None, "case": None}
    offload = {"measured": False, "variants": {},
               "reason": "the host is the device: offloading to host memory moves bytes within the same memory"}
    with cpu_threads(cfg.threads, device):
        for kind, rank, targets in cases_of(cfg):
            key = case_key(kind, rank, targets)
            if kind != "full" and peft_error is not None:
                if kind == "qlora":
                    qlora["error"] = f"needs PEFT: {peft_error}"
                continue
            if kind == "qlora":
                try:
                    import bitsandbytes
                    qlora["bitsandbytes"] = bitsandbytes.__version__
                    cases[key] = measure_case(cfg, device, kind, rank, targets)
                    qlora.update(ran=True, case=key)
                except Exception as exc:  # noqa: BLE001 - the error is the finding, stored as data
                    qlora["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
                continue
            cases[key] = measure_case(cfg, device, kind, rank, targets)
        probe = linear_probe(cfg, device)
        if dev_type == "cuda" and cfg.offload:
            offload = {"measured": True, "reason": None,
                       "variants": {v: measure_offload(cfg, device, v) for v in OFFLOADS}}
        elif dev_type == "cuda":
            offload["reason"] = "not asked for (Config.offload is false)"
    hf_config = {}
    for x in cases.values():
        hf_config = x.pop("hf_config")
    return {**base, "ran": True, "reason": None, "transformers": transformers.__version__,
            "peft": peft_version, "peft_error": peft_error, "hf_config": hf_config, "cases": cases,
            "qlora": qlora, "offload": offload, "linear_probe": probe}

# %% [markdown]
# ## Derived at build time
# LoRA's trainable parameters from the config: each targeted linear layer of shape
# (out, in) gains A (r x in) and B (out x r), so r(in + out) parameters (Hu et al. 2021,
# section 4.1). The NF4 rule: 4 bits per weight, one 8-bit constant per block of 64 weights and
# one fp32 constant per 256 of those (Dettmers et al. 2023, section 3: 4 + 8/64 + 32/(64·256)
# bits). The estimator is asked for each case from the stored inputs; an estimator that does not
# yet take a field says so, case by case.

# %%
PHASES = ("forward", "backward", "optimizer")
TERMS = ("params", "grads", "optimizer", "activations")
TERM_LABELS = {"params": "weights", "grads": "gradients", "optimizer": "optimizer state",
               "activations": "saved for backward (autocast's weight copies included)"}
PHASE_LABELS = {"forward": "forward pass", "backward": "backward pass", "optimizer": "optimizer step"}
KIND_LABELS = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}
TARGET_LABELS = {"qv": "q, v", "all-linear": "all linear"}
OFFLOAD_LABELS = {"none": "no offload", "activations": "activations (save_on_cpu)", "optimizer": "optimizer (AdamW on the CPU)",
                  "parameters": "parameters (FSDP2's CPUOffloadPolicy)"}
DRILL_WEIGHTS = 7_000_000_000
ESTIMATE_OFFLOADS = {"none": (), "optimizer": ("optimizer",), "activations": ("activations",),
                     "parameters": ("parameters",)}


def linear_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of one Llama decoder layer, from the config fields."""
    h, a = config["hidden_size"], config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or a
    d = config.get("head_dim") or h // a
    i = config["intermediate_size"]
    return {"q_proj": (h, a * d), "k_proj": (h, kv * d), "v_proj": (h, kv * d), "o_proj": (a * d, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def lora_parameters(config: dict, rank: int, targets: tuple[str, ...] | list[str]) -> int:
    """r(in + out) per targeted linear layer, in every decoder layer."""
    shapes = linear_shapes(config)
    return config["num_hidden_layers"] * sum(rank * sum(shapes[t]) for t in targets)


def nf4_rule_bytes(elements: int) -> float:
    """Dettmers et al. 2023: 4 bits per weight, an 8-bit absmax per 64 weights, an fp32 constant per 256
    blocks (double quantisation): 4 + 8/64 + 32/(64 * 256) bits per weight."""
    return elements * (4 + 8 / NF4_BLOCK + 32 / (NF4_BLOCK * NF4_BLOCK2)) / 8


def estimator_inputs(data: dict, x: dict, offload: tuple[str, ...] = (), device: str | None = None) -> dict:
    """The estimator's Setup fields for one case; the fine-tuning fields only where they differ from
    full fine-tuning without offload (so an estimator without them still sizes the full case)."""
    wanted = {"optimizer": "adamw", "precision": x["precision"], "batch": data["batch"], "seq": data["seq"],
              "checkpointing": "none", "attention": "sdpa", "device": device or data["device_kind"]}
    if x["rank"]:
        wanted.update(lora_rank=x["rank"], lora_targets=tuple(x["target_modules"]))
    if x["base_quant"] != "none":
        wanted["base_quant"] = x["base_quant"]
    if offload:
        wanted["offload"] = tuple(offload)
    return wanted


def predict(data: dict, x: dict, offload: tuple[str, ...] = (), device: str | None = None) -> dict:
    """The estimator's answer for one case, or why it has none (one line)."""
    wanted = estimator_inputs(data, x, offload, device)
    try:
        shape = model_shapes.shape_from_config(data["hf_config"], where="llama config", name="llama")
        est = estimator.estimate(estimator.Setup(**wanted), shape=shape)
    except TypeError as exc:  # a Setup without a fine-tuning field: "... unexpected keyword argument 'lora_rank'"
        named = re.findall(r"keyword argument '(\w+)'", str(exc))
        if not named and dataclasses.is_dataclass(estimator.Setup):
            named = [k for k in wanted if k not in {f.name for f in dataclasses.fields(estimator.Setup)}]
        what = named[0] if named else str(exc).splitlines()[0]
        return {"available": False, "reason": f"no prediction: the estimator lacks {what}"}
    except ValueError as exc:  # ShapeError, EstimateError: one line
        return {"available": False, "reason": f"no prediction: {str(exc).splitlines()[0]}"}
    per_device = est["per_device_bytes"]
    moved = est.get("offload") or {}
    return {"available": True, "reason": None,
            "host_bytes": moved.get("host_bytes"), "pinned_host_bytes": moved.get("pinned_host_bytes"),
            "transfer_bytes_per_step": moved.get("transfer_bytes_per_step"),
            "transfer_s_per_step": moved.get("transfer_seconds_per_step"), "pcie_gb_s": moved.get("pcie_gb_s"),
            # the measurement counts every tensor saved for backward, autocast's 16-bit weight copies among them
            "terms": {**{t: per_device.get(t) for t in TERMS},
                      "activations": per_device.get("activations", 0)
                      + ((est.get("phases") or {}).get("backward") or {}).get("cast_saved_bytes", 0)},
            "trainable_params": est.get("trainable_parameters"),
            "peak_bytes": est.get("peak_bytes", per_device.get("total")), "peak_phase": est.get("peak_phase"),
            "per_device_total_bytes": per_device.get("total")}


def _ratio(pred: float | None, meas: float | None) -> float | None:
    if pred is None or meas is None or (meas == 0 and pred != 0):
        return None
    return pred / meas if meas else 1.0


def measured_terms(x: dict) -> dict[str, int]:
    return {"params": x["params_bytes"] + x["quant_absmax_bytes"] + x["quant_code_bytes"], "grads": x["grads_bytes"], "optimizer": x["optimizer_state_bytes"],
            "activations": sum(x["saved_bytes"].values())}


def measured_peak(x: dict) -> tuple[int, str]:
    phase = max(PHASES, key=lambda p: x["phases"][p]["peak"]["total_bytes"])
    return x["phases"][phase]["peak"]["total_bytes"], phase


def _label(x: dict) -> str:
    if x["kind"] == "full":
        return KIND_LABELS["full"]
    return f"{KIND_LABELS[x['kind']]} r={x['rank']}, {TARGET_LABELS.get(x['targets'], x['targets'])}"


def _case(data: dict, x: dict, full: dict | None) -> dict:
    meas = measured_terms(x)
    peak, phase = measured_peak(x)
    full_terms = measured_terms(full) if full is not None else None
    full_peak = measured_peak(full)[0] if full is not None else None
    formula = lora_parameters(data["hf_config"], x["rank"], x["target_modules"]) if x["rank"] else None
    shapes = linear_shapes(data["hf_config"]) if x["rank"] else {}
    per_layer = {t: {"in": shapes[t][0], "out": shapes[t][1], "params": x["rank"] * sum(shapes[t])}
                 for t in x["target_modules"]}
    p = predict(data, x)
    out = {"label": _label(x), "kind": x["kind"], "rank": x["rank"], "targets_label": TARGET_LABELS.get(
               x["targets"], "every parameter"), "precision": x["precision"], "base_quant": x["base_quant"],
           "trainable_params": x["trainable_params"], "peft_trainable_params": x["peft_trainable_params"],
           "formula_trainable_params": formula, "per_layer_adapters": per_layer,
           "layers": data["hf_config"]["num_hidden_layers"],
           "formula_matches_peft": formula is not None and formula == x["peft_trainable_params"],
           "frozen_with_grad_count": x["frozen_with_grad_count"],
           "frozen_with_state_count": x["frozen_with_state_count"], "frozen_tensors_count": x["frozen_tensors_count"],
           "state_tensors_count": x["state_tensors_count"], "trainable_tensors_count": x["trainable_tensors_count"],
           "frozen_bytes": x["frozen_bytes"], "trainable_bytes": x["trainable_bytes"],
           "measured_peak_bytes": peak, "measured_peak_phase": phase, "measured_peak_phase_label": PHASE_LABELS[phase],
           "peak_vs_full_ratio": _ratio(peak, full_peak),
           "phases": {ph: {"label": PHASE_LABELS[ph], "peak_bytes": x["phases"][ph]["peak"]["total_bytes"],
                           "cuda_max_allocated_bytes": x["phases"][ph]["cuda_max_allocated_bytes"]} for ph in PHASES},
           "predicted": p["available"], "reason": p["reason"],
           "predicted_peak_bytes": p.get("peak_bytes"), "peak_ratio": _ratio(p.get("peak_bytes"), peak),
           "predicted_trainable_params": p.get("trainable_params"),
           "trainable_ratio": _ratio(p.get("trainable_params"), x["trainable_params"])}
    out["trainable_share"] = x["trainable_params"] / full["trainable_params"] if full is not None else None
    # LoRA's B starts at zero (Hu et al. 2021, section 4.1): the first step's loss is the base model's
    out["same_start"] = (x["kind"] == "lora" and full is not None
                         and abs(x["loss_first_step"] - full["loss_first_step"]) <= 1e-5 * abs(full["loss_first_step"]))
    pt = p["terms"] if p["available"] else {}
    out["terms"] = {t: {"label": TERM_LABELS[t], "measured_bytes": m, "predicted_bytes": pt.get(t),
                        "ratio": _ratio(pt.get(t), m),
                        "vs_full_ratio": _ratio(m, full_terms[t]) if full_terms is not None else None}
                    for t, m in meas.items()}
    return out


def _qlora(data: dict, cases: dict, full: dict | None) -> dict:
    q = data["qlora"]
    out = {"ran": q["ran"], "error": q["error"], "bitsandbytes": q["bitsandbytes"], "case": q["case"],
           "block_elements": NF4_BLOCK, "block2_blocks": NF4_BLOCK2,
           "rule_bits_per_weight": 4 + 8 / NF4_BLOCK + 32 / (NF4_BLOCK * NF4_BLOCK2),
           # the drill: a base of 7 billion linear weights, by the rule, against bf16's 2 bytes a weight
           "drill_weights_count": DRILL_WEIGHTS, "drill_nf4_bytes": nf4_rule_bytes(DRILL_WEIGHTS),
           "drill_bf16_bytes": 2 * DRILL_WEIGHTS, "drill_nf4_vs_bf16_ratio": nf4_rule_bytes(DRILL_WEIGHTS) / (2 * DRILL_WEIGHTS)}
    if not q["ran"]:
        return out
    x = data["cases"][q["case"]]
    elements = sum(x["quantized_elements"])
    packed = x["packed_bytes"]
    rule = sum(nf4_rule_bytes(n) for n in x["quantized_elements"])
    blocks = packed + x["quant_absmax_bytes"]  # what the rule counts: 4-bit weights and their block constants
    stored = blocks + x["quant_code_bytes"]
    out.update(quantized_weights_count=len(x["quantized_elements"]), quantized_elements=elements,
               packed_bytes=packed, absmax_bytes=x["quant_absmax_bytes"], code_bytes=x["quant_code_bytes"],
               code_bytes_per_weight=x["quant_code_bytes"] / len(x["quantized_elements"]),
               blocks_bytes=blocks, stored_bytes=stored, rule_bytes=rule, rule_ratio=rule / blocks,
               measured_bits_per_weight=8 * blocks / elements, stored_bits_per_weight=8 * stored / elements,
               bf16_bytes=2 * elements, vs_bf16_ratio=stored / (2 * elements))
    if full is not None:
        out["peak_vs_full_ratio"] = cases[q["case"]]["peak_vs_full_ratio"]
    return out


def _offload(data: dict, full: dict | None) -> dict:
    o = data["offload"]
    out = {"measured": o["measured"], "reason": o["reason"], "variants": {}, "estimates": {}}
    for v, m in o["variants"].items():
        peak_phase = max(PHASES, key=lambda ph: m["phases"][ph]["cuda_max_allocated_bytes"] or 0)
        out["variants"][v] = {"label": OFFLOAD_LABELS[v],
                              "peak_bytes": m["phases"][peak_phase]["cuda_max_allocated_bytes"],
                              "peak_phase_label": PHASE_LABELS[peak_phase],
                              "host_state_bytes": m["host_state_bytes"]}
    base = out["variants"].get("none")
    for v in out["variants"].values():
        v["vs_none_ratio"] = _ratio(v["peak_bytes"], base["peak_bytes"]) if base else None
    if full is not None:  # sized on a CUDA device: offload moves tensors from a GPU to its host
        for name, offload in ESTIMATE_OFFLOADS.items():
            p = predict(data, full, offload, device="cuda")
            out["estimates"][name] = {"label": OFFLOAD_LABELS[name], "predicted": p["available"],
                                      "reason": p["reason"], "peak_bytes": p.get("peak_bytes"),
                                      "peak_phase_label": PHASE_LABELS.get(p.get("peak_phase"), p.get("peak_phase"))
                                      or "—",
                                      "host_bytes": p.get("host_bytes"), "pinned_host_bytes": p.get("pinned_host_bytes"),
                                      "transfer_bytes_per_step": p.get("transfer_bytes_per_step"),
                                      "transfer_ms_per_step": None if p.get("transfer_s_per_step") is None
                                      else 1000 * p["transfer_s_per_step"], "pcie_gb_s": p.get("pcie_gb_s")}
    return out


def scale_label(data: dict) -> str:
    """The model and scale a caption names."""
    full = data["cases"].get("full")
    if not data["ran"] or full is None:
        return "not measured on this host"
    return (f"a {full['trainable_params']:,}-parameter Llama (transformers' LlamaForCausalLM, "
            f"{data['hf_config']['num_hidden_layers']} layers, hidden {data['hf_config']['hidden_size']}), "
            f"seq {data['seq']}, batch {data['batch']}")


def summarize(data: dict) -> dict:
    full = data["cases"].get("full")
    cases = {k: _case(data, x, full) for k, x in data["cases"].items()}
    lora = [c for c in cases.values() if c["kind"] == "lora"]
    predicted = [c for c in cases.values() if c["predicted"]]
    peaks = [c["peak_vs_full_ratio"] for c in lora if c["peak_vs_full_ratio"] is not None]
    acts = [c["terms"]["activations"]["vs_full_ratio"] for c in lora
            if c["terms"]["activations"]["vs_full_ratio"] is not None]
    shares = [c["trainable_share"] for c in lora if c["trainable_share"] is not None]
    reasons = dict.fromkeys(c["reason"] for c in cases.values() if not c["predicted"])
    return {
        "ran": data["ran"], "reason": data["reason"], "device": data["device"], "device_kind": data["device_kind"],
        "transformers": data["transformers"], "peft": data["peft"], "peft_error": data["peft_error"],
        "host_is_device": data["device_kind"] != "cuda",
        "parameters": full["trainable_params"] if full is not None else None,
        "model_label": (f"{full['trainable_params'] / 1e6:.1f} M-parameter Llama" if full is not None else "Llama"),
        "scale_label": scale_label(data),
        "cases": cases, "case_count": len(cases), "lora_count": len(lora),
        "formula_matches_count": sum(1 for c in lora if c["formula_matches_peft"]),
        "frozen_clean_count": sum(1 for c in cases.values() if c["kind"] != "full"
                                  and c["frozen_with_grad_count"] == 0 and c["frozen_with_state_count"] == 0),
        "adapted_count": sum(1 for c in cases.values() if c["kind"] != "full"),
        "lora_peak_min_ratio": min(peaks) if peaks else None, "lora_peak_max_ratio": max(peaks) if peaks else None,
        "lora_activations_min_ratio": min(acts) if acts else None,
        "lora_activations_max_ratio": max(acts) if acts else None,
        "lora_trainable_min_share": min(shares) if shares else None,
        "lora_trainable_max_share": max(shares) if shares else None,
        "predicted_count": len(predicted),
        "unpredicted_reasons": {r: {"count": sum(1 for c in cases.values() if c["reason"] == r)} for r in reasons},
        "same_start_count": sum(1 for c in lora if c["same_start"]),
        "example_key": next((k for k, c in cases.items() if c["kind"] == "lora"), None),  # the drills' case
        "linear_probe": data["linear_probe"],
        "qlora": _qlora(data, cases, full),
        "offload": _offload(data, full),
    }

# %% [markdown]
# ## The figure: what each case holds, term by term, beside its peak

# %%
TERM_COLORS = {"params": "#4c72b0", "grads": "#dd8452", "optimizer": "#55a868", "activations": "#c44e52"}


def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    cases = list(summary["cases"].values())
    fig, ax = plt.subplots(figsize=(7.4, max(2.6, 0.42 * len(cases) + 1.6)))
    if not cases:
        ax.text(0.5, 0.5, f"not run: {summary['reason']}", ha="center", va="center", transform=ax.transAxes,
                fontsize=9)
        ax.set_axis_off()
        return fig
    mib = 2 ** 20
    ys = list(range(len(cases)))
    left = [0.0] * len(cases)
    for t, color in TERM_COLORS.items():
        widths = [c["terms"][t]["measured_bytes"] / mib for c in cases]
        ax.barh(ys, widths, left=left, color=color, height=0.6, label=TERM_LABELS[t])
        left = [a + b for a, b in zip(left, widths)]
    ax.scatter([c["measured_peak_bytes"] / mib for c in cases], ys, color="black", marker="|", s=160, zorder=3,
               label="measured peak of the step")
    ax.set_yticks(ys, [c["label"] for c in cases], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("MiB", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", lw=0.4, alpha=0.5)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=6, loc="lower center", ncol=5, frameon=False)
    fig.suptitle(f"One AdamW step, {summary['model_label']} ({data['device']}, batch {data['batch']}, "
                 f"seq {data['seq']})",
                 fontsize=9)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.05 / height))
    return fig

# %%
if __name__ == "__main__":
    import sys

    from experiments.lib.cli import main

    raise SystemExit(main(sys.modules[__name__]))
