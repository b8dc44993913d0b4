# %% [markdown]
"""Named models: the training-memory breakdown of well-known models, and why to trust it.

Question: how much memory per GPU does training BERT-base, GPT-2 XL, Llama-2
7B and 70B or Llama-3 8B take, with fp32 AdamW, with bf16 mixed precision,
with full activation checkpointing, and with ZeRO-3 over 8 GPUs? Which cards
does each fit?

Method: the estimator (``experiments.lib.estimator``, the model behind
``handbook estimate``) on each model's published shape; that breakdown is
arithmetic, not a measurement, so ``summarize`` computes it at build time and a
change to the estimator updates the pages without measuring again. ``run``
checks the same estimator against this host: a small GPT
(``experiments.lib.gpt``) trained for a step with AdamW, without checkpointing,
with selective recomputation of the attention core, with full checkpointing
and under bf16 autocast, every term read off PyTorch (parameters, gradients,
optimizer state, the activations alive after forward, the peak of the step)
beside the estimator's prediction for that model on that device.

Run it: ``python -m experiments.named_models --profile quick``.
"""

# %%
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils.checkpoint

from experiments.lib import estimator
from experiments.lib.gpt import GPT, CheckpointedCore, LayerShape
from experiments.lib.memory import MemoryTracker, grad_bytes, optimizer_state_bytes, param_bytes
from experiments.lib.model_shapes import ModelShape
from experiments.lib.model_shapes import BUILTIN  # summarize only
from experiments.lib.saved import count_saved

TIMEOUT_S = 300


@dataclass(frozen=True)
class Config:
    """The small GPT measured on this host."""

    vocab: int = 256
    v_seq: int = 128
    v_batch: int = 2
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    dropout: float = 0.1


PROFILES = {
    "test": Config(vocab=64, v_seq=32, v_batch=2, layers=2, hidden=32, heads=4),
    "quick": Config(),
    "full": Config(vocab=32000, v_seq=1024, v_batch=4, layers=8, hidden=1024, heads=16),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    "gpu": Config(vocab=32000, v_seq=1024, v_batch=4, layers=8, hidden=1024, heads=16),
}

# %% [markdown]
# ## The estimator against this host
#
# A small GPT in fp32 with AdamW. Weights, gradients and optimizer state must
# match exactly. Activations: what is alive after forward (MemTracker) and what
# autograd saved (saved-tensor hooks) against the estimator's activation terms;
# with full checkpointing the estimator's extra "one layer recomputed" shows
# only during backward, so after forward it is left out. On CPU torch's dropout
# keeps its mask in the activation dtype (on CUDA one byte), and the prediction
# uses the mask width of the device measured. Under checkpointing the estimator
# adds what backward rebuilds for one layer (all of it under full
# checkpointing, its attention scores under selective); that exists only during
# backward, so the after-forward comparison leaves it out.

# %%
def measure(cfg: Config, device: str, checkpointing: str, precision: str = "fp32") -> dict:
    torch.manual_seed(0)
    model = GPT(cfg.vocab, cfg.v_seq, cfg.layers, LayerShape(cfg.hidden, cfg.heads, dropout=cfg.dropout,
                                                             attn_dropout=cfg.dropout)).to(device)
    if checkpointing == "full":
        model.layer_wrapper = lambda i, layer, x: torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
    elif checkpointing == "selective":  # recompute only the attention core (softmax, dropout, @V)
        for layer in model.layers:
            layer.core = CheckpointedCore(layer.core)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, cfg.vocab, (cfg.v_batch, cfg.v_seq), device=device)
    dev_type = torch.device(device).type

    def forward() -> torch.Tensor:
        if precision == "fp32":
            return model(idx, idx)
        with torch.autocast(dev_type, dtype=torch.bfloat16):  # bf16-mixed: fp32 weights, bf16 compute
            return model(idx, idx)

    forward().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    saved_bytes = None
    if checkpointing == "none":
        loss, res = count_saved(forward, exclude=[model])
        saved_bytes = res.total_bytes
        del loss, res
    tracker = MemoryTracker(device).track(model, opt)
    with tracker:
        loss = forward()
        after_forward = tracker.current().as_dict()
        loss.backward()
        grads = grad_bytes(model)
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = tracker.peak().as_dict()

    shape = ModelShape(family="gpt2", hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, vocab=cfg.vocab,
                       positions=cfg.v_seq, dropout=cfg.dropout > 0, name="small GPT")
    # the handbook's GPT writes its attention out ("math": the estimator's eager) on the device measured
    setup = estimator.Setup(optimizer="adamw", precision=precision, batch=cfg.v_batch, seq=cfg.v_seq,
                            checkpointing=checkpointing, attention="eager", device=dev_type)
    est = estimator.estimate(setup, shape=shape)
    mask_bytes = estimator.dropout_mask_bytes(setup)
    acts = estimator.activation_terms(shape, setup)
    recompute = acts["recompute_bytes"]
    predicted = {**{k: est["per_device_bytes"][k] for k in ("params", "grads", "optimizer")},
                 "activations": acts["total_bytes"] - recompute}
    measured = {"params": param_bytes(model), "grads": grads, "optimizer": optimizer_state_bytes(opt),
                "activations": after_forward["activations_bytes"]}
    terms = {k: {"predicted_bytes": predicted[k], "measured_bytes": measured[k]} for k in predicted}
    return {
        "checkpointing": checkpointing,
        "precision": precision,
        "parameters": est["parameters"],
        "measured_parameters": sum(p.numel() for p in model.parameters()),
        "mask_bytes": mask_bytes,
        "terms": terms,
        "saved_bytes": saved_bytes,
        "recompute_bytes": recompute,
        "peak_total_bytes": peak["total_bytes"],
        "cuda_max_allocated_bytes": tracker.cuda_max_allocated_bytes,
    }


def run(cfg: Config, device: str) -> dict:
    context = None
    if torch.device(device).type == "cuda":
        # this host's CUDA context, first, before any tensor (the runner's subprocess has not touched CUDA):
        # what the device uses at initialisation less what the caching allocator holds (the hardware chapter)
        from experiments.hardware import measure_cuda_context
        c = measure_cuda_context(torch.device(device), fresh=True)
        context = c["used_at_init_bytes"] - c["reserved_at_init_bytes"]
    torch.manual_seed(0)
    runs = {c: measure(cfg, device, c) for c in estimator.CHECKPOINTING}
    runs["autocast"] = measure(cfg, device, "none", precision="bf16-mixed")
    return {
        "shape": {"vocab": cfg.vocab, "seq": cfg.v_seq, "batch": cfg.v_batch, "layers": cfg.layers,
                  "hidden": cfg.hidden, "heads": cfg.heads, "dropout": cfg.dropout},
        "device": device,
        "cuda_context_bytes": context,
        "runs": runs,
    }

# %% [markdown]
# ## Derived at build time: the named models through the estimator, and the check's ratios
#
# Each set-up adds one change to the one before. Every model uses AdamW,
# micro-batch 1 and a sequence of 2048 tokens (at most its context).

# %%
MODELS = ("bert-base", "gpt2-xl", "llama-2-7b", "llama-3-8b", "llama-2-70b")  # in table order
SEQ = 2048  # clipped to each model's context
BATCH = 1
ZERO_GPUS = 8
SETUPS = (
    ("fp32", "fp32 AdamW", {"precision": "fp32"}),
    ("bf16_mixed", "bf16-mixed AdamW", {"precision": "bf16-mixed"}),
    ("checkpointing", "+ full checkpointing", {"precision": "bf16-mixed", "checkpointing": "full"}),
    ("zero3", f"+ ZeRO-3 over {ZERO_GPUS} GPUs",
     {"precision": "bf16-mixed", "checkpointing": "full", "zero": 3, "gpus": ZERO_GPUS}),
)
RUN_LABELS = {"none": "fp32", "selective": "fp32, selective", "full": "fp32, full", "autocast": "bf16 autocast"}
TERM_LABELS = {"params": "weights", "grads": "gradients", "optimizer": "optimizer state",
               "activations": "activations after forward"}


def breakdown(name: str, context_bytes: int | None = None) -> dict:
    """One named model under every set-up, from the estimator (the CUDA context: this host's, where measured)."""
    m = BUILTIN[name]
    seq = min(SEQ, m.context) if m.context else SEQ
    setups = {}
    for key, label, extra in SETUPS:
        est = estimator.estimate(estimator.Setup(optimizer="adamw", batch=BATCH, seq=seq, context_bytes=context_bytes,
                                                 **extra), shape=m)
        fitting = [f for f in est["fits"] if f["fits"]]
        smallest = min(fitting, key=lambda f: f["capacity_bytes"])["gpu"] if fitting else None
        phase = est["phases"][est["peak_phase"]]
        setups[key] = {"label": label, "setup": est["setup"], "per_device_bytes": est["per_device_bytes"],
                       "peak_bytes": est["peak_bytes"], "peak_phase": est["peak_phase"],
                       "peak_phase_label": phase["label"],
                       "peak_over_sum_ratio": est["peak_bytes"] / est["per_device_bytes"]["total"],
                       "phases_bytes": {k: v["total_bytes"] for k, v in est["phases"].items()},
                       "headroom_bytes": est["headroom_bytes"],
                       "fits": est["fits"], "smallest_fit": smallest, "smallest_fit_label": smallest or "none listed",
                       "bytes_per_param": est["per_device_bytes"]["total"] / est["parameters"]}
    return {"name": name, "family": m.family, "parameters": estimator.parameter_count(m), "seq": seq,
            "batch": BATCH, "source": m.source, "setups": setups}


# Sizing rows beyond one data-parallel GPU and full training: (key, model, label, set-up). Layouts: the
# Megatron/DeepSpeed bf16-master for the parallel runs; a bf16 base for LoRA (PEFT keeps its adapters fp32).
BEYOND = (
    ("lora", "llama-2-7b", "LoRA r=16 on q, v (bf16 base)",
     {"precision": "bf16", "lora_rank": 16, "lora_targets": ("q_proj", "v_proj")}),
    ("qlora", "llama-2-7b", "QLoRA r=16 on every projection (NF4 base)",
     {"precision": "bf16", "lora_rank": 16, "base_quant": "nf4",
      "lora_targets": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}),
    ("offload", "llama-2-7b", "full training, optimizer offloaded to the host",
     {"precision": "bf16-mixed", "checkpointing": "full", "offload": ("optimizer",)}),
    ("qlora70", "llama-2-70b", "QLoRA r=16 on every projection (NF4 base), full checkpointing",
     {"precision": "bf16", "lora_rank": 16, "base_quant": "nf4", "checkpointing": "full",
      "lora_targets": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}),
    ("tp", "llama-2-70b", "TP 8 + sequence parallel, ZeRO-1 over 8, full checkpointing",
     {"precision": "bf16-master", "tp": 8, "sequence_parallel": True, "zero": 1, "gpus": 8, "checkpointing": "full"}),
    ("tp_pp", "llama-2-70b", "TP 8 + SP, PP 4 (1F1B, 16 micro-batches), ZeRO-1 over 8",
     {"precision": "bf16-master", "tp": 8, "sequence_parallel": True, "pp": 4, "microbatches": 16,
      "zero": 1, "gpus": 8}),
)


def beyond(context_bytes: int | None = None) -> dict:
    """The BEYOND rows through the estimator: per rank, the peak and the smallest card that holds it."""
    out = {}
    for key, name, label, extra in BEYOND:
        m = BUILTIN[name]
        seq = min(SEQ, m.context) if m.context else SEQ
        est = estimator.estimate(estimator.Setup(optimizer="adamw", batch=BATCH, seq=seq, context_bytes=context_bytes,
                                                 **extra), shape=m)
        fitting = [f for f in est["fits"] if f["fits"]]
        off = est["offload"]
        ranks = extra.get("tp", 1) * extra.get("pp", 1) * extra.get("gpus", 1)
        out[key] = {"model": name, "label": label, "seq": seq, "ranks": ranks,
                    "per_device_bytes": est["per_device_bytes"], "peak_bytes": est["peak_bytes"],
                    "peak_phase_label": est["phases"][est["peak_phase"]]["label"],
                    "trainable_parameters": est["trainable_parameters"], "parameters": est["parameters"],
                    "smallest_fit_label": min(fitting, key=lambda f: f["capacity_bytes"])["gpu"] if fitting
                    else "none listed",
                    "host_bytes": off["host_bytes"] if off else None,
                    "transfer_seconds": off["transfer_seconds_per_step"] if off else None}
    return out


def _check(c: str, x: dict) -> dict:
    """One measured run beside the estimator: each term's ratio, and the peak against the sum of the terms."""
    terms = {t: {"label": TERM_LABELS[t], **v, "ratio": v["measured_bytes"] / v["predicted_bytes"]}
             for t, v in x["terms"].items()}
    total = sum(v["predicted_bytes"] for v in x["terms"].values()) + x["recompute_bytes"]
    return {"label": RUN_LABELS[c], "checkpointing": x["checkpointing"], "precision": x["precision"],
            "mask_bytes": x["mask_bytes"], "recompute_bytes": x["recompute_bytes"], "terms": terms,
            "predicted_total_bytes": total, "peak_total_bytes": x["peak_total_bytes"],
            "peak_over_predicted_ratio": x["peak_total_bytes"] / total}


# Rajbhandari et al. 2020 (ZeRO), figure 1: 7.5B parameters on 64 GPUs, Adam in mixed precision
# (2 + 2 + K bytes per parameter, K = 12), per-device model state in GB (10^9 bytes) at each stage.
ZERO_PAPER = {"params": 7_500_000_000, "gpus": 64,
              "stages": ((0, "baseline", 120.0), (1, "P_os", 31.4), (2, "P_os+g", 16.6), (3, "P_os+g+p", 1.9))}


def zero_paper_case() -> dict:
    """The ZeRO paper's figure 1 case through the estimator's bf16-master layout (its 2 + 2 + 12)."""
    rows = {}
    for stage, label, paper_gb in ZERO_PAPER["stages"]:
        est = estimator.estimate(estimator.Setup(optimizer="adam", precision="bf16-master", zero=stage,
                                                 gpus=ZERO_PAPER["gpus"]), params=ZERO_PAPER["params"])
        state = sum(est["per_device_bytes"][k] for k in ("params", "grads", "optimizer"))
        rows[f"stage{stage}"] = {"stage": stage, "label": label, "paper_gb": paper_gb, "estimator_bytes": state,
                                 "estimator_gb": round(state / 1e9, 1), "matches": round(state / 1e9, 1) == paper_gb}
    return {"params": ZERO_PAPER["params"], "gpus": ZERO_PAPER["gpus"], "precision": "bf16-master",
            "stages": rows, "all_match": all(r["matches"] for r in rows.values())}


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        s = data["shape"]
        return (f"named models at full size (estimator); checked on a {s['layers']}-layer GPT, hidden {s['hidden']}, "
                f"seq {s['seq']}, batch {s['batch']}")
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    context = data.get("cuda_context_bytes")   # None: a CPU host, or a result from before it was recorded
    measured = context is not None
    headroom = context if measured else estimator.CUDA_CONTEXT_BYTES
    return {
        "scale_label": scale_label(data),
        "zero_paper": zero_paper_case(),
        "zero_gpus": ZERO_GPUS,
        "batch": BATCH,
        "setups": {key: label for key, label, _ in SETUPS},
        "models": {name: breakdown(name, context) for name in MODELS},
        "beyond": beyond(context),
        "gpus": [{"name": n, "capacity_bytes": c, "capacity_mib": c // estimator.MIB, "dtypes": list(d),
                  "dtypes_label": ", ".join(d), "source": s,
                  # what a training step may use: the reported total less the CUDA context
                  "usable_bytes": c - headroom} for n, c, d, s in estimator.CARDS],
        "headroom_bytes": headroom,
        "headroom_source": (f"measured on this host ({data['device']}) before any tensor" if measured
                            else estimator.CUDA_CONTEXT_SOURCE),
        "headroom_measured": measured,
        "leaves_out": ", ".join(estimator.LEAVES_OUT),
        "validation": {c: _check(c, x) for c, x in data["runs"].items()},
    }

# %% [markdown]
# ## Figures: the breakdown against card capacities, and the check on this host

# %%
TERM_COLORS = (("params", "weights", "#4c72b0"), ("grads", "gradients", "#dd8452"),
               ("optimizer", "optimizer state", "#55a868"), ("activations", "activations", "#c44e52"))
LINE_GPUS = ("RTX 4090 24 GB", "A100 40 GB", "A100 80 GB")


def plot(data: dict, summary: dict) -> dict:
    import matplotlib.pyplot as plt

    figs = {}
    models = list(summary["models"].values())
    gpus = {g["name"]: g["capacity_bytes"] for g in summary["gpus"]}
    fig, axes = plt.subplots(2, 3, figsize=(7.4, 6.2))
    for ax, m in zip(axes.flat, models):
        keys = list(m["setups"])
        bottoms = [0.0] * len(keys)
        for term, label, color in TERM_COLORS:
            vals = [m["setups"][k]["per_device_bytes"][term] / 2**30 for k in keys]
            ax.bar(range(len(keys)), vals, 0.7, bottom=bottoms, color=color, label=label)
            bottoms = [b + v for b, v in zip(bottoms, vals)]
        peaks = [m["setups"][k]["peak_bytes"] / 2**30 for k in keys]
        ax.scatter(range(len(keys)), peaks, marker="_", s=300, color="black", zorder=3,
                   label="peak of the step" if ax is axes.flat[0] else None)
        top = max(bottoms + peaks)
        last_label = None
        for name in LINE_GPUS:
            cap = gpus[name] / 2**30
            if cap < top * 1.15:
                ax.axhline(cap, color="black", lw=0.8, ls="--")
                if last_label is None or cap - last_label > 0.07 * top:  # keep the labels apart
                    ax.text(len(keys) - 0.45, cap, name, fontsize=6, va="bottom", ha="right")
                    last_label = cap
        ax.set_title(f"{m['name']} (s={m['seq']}, b={m['batch']})", fontsize=8)
        ax.set_xticks(range(len(keys)), ["fp32", "bf16\nmixed", "+ ckpt", f"+ ZeRO-3\n×{summary['zero_gpus']}"],
                      fontsize=6)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("GiB per GPU", fontsize=7)
    last = axes.flat[len(models)] if len(models) < 6 else None
    if last is not None:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        last.axis("off")
        last.legend(handles, labels, loc="center", fontsize=8, title="AdamW, per device", title_fontsize=8)
    fig.suptitle("Persistent memory per GPU (estimator, GiB), with the predicted peak (black tick); "
                 "dashed: card totals (nvidia-smi)",
                 fontsize=9)
    fig.tight_layout()
    figs["breakdown"] = fig

    v = summary["validation"]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    terms = ("params", "grads", "optimizer", "activations")
    width = 0.13
    policies = (("none", "no checkpointing"), ("selective", "selective"), ("full", "full checkpointing"))
    for i, (c, label) in enumerate(policies):
        for j, kind in enumerate(("predicted_bytes", "measured_bytes")):
            vals = [v[c]["terms"][t][kind] / 2**10 for t in terms]
            ax.bar([x + (2 * i + j - 2.5) * width for x in range(len(terms))], vals, width,
                   label=f"{'estimator' if j == 0 else 'measured'}, {label}", hatch="//" if j == 0 else None,
                   color=("#4c72b0", "#55a868", "#dd8452")[i], alpha=0.6 if j == 0 else 1.0, edgecolor="white")
    ax.set_xticks(range(len(terms)), ["weights", "gradients", "optimizer state", "activations\nafter forward"])
    ax.set_ylabel("KiB")
    sh = data["shape"]
    ax.set_title(f"Small GPT on this host ({data['device']}): L={sh['layers']}, h={sh['hidden']}, s={sh['seq']}, "
                 f"b={sh['batch']}, fp32 AdamW", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs["validation"] = fig
    return figs

# %%
if __name__ == "__main__":
    import sys

    from experiments.lib.cli import main

    raise SystemExit(main(sys.modules[__name__]))
