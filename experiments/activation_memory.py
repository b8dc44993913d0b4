# %%
"""Activation memory: what autograd keeps for backward in one GPT layer, next to the published formula.

Question: how many bytes does one transformer decoder layer save for its
backward pass, where do they come from, and how do they grow with sequence
length and batch size? How close is the per-layer rule of Korthikanti et al.
2022, ``s*b*h*(34 + 5*a*s/h)`` bytes for 16-bit activations?

Method: build a plainly written GPT-style layer (``experiments.lib.gpt``) and
run its forward pass under ``torch.autograd.graph.saved_tensors_hooks``
(``experiments.lib.saved``), which sees every tensor autograd saves; count
each storage once, leave out parameters and buffers, and attribute each byte
to the submodule that saved it. Do it in bfloat16 and float32, with the
attention written out (explicit softmax) and through
``scaled_dot_product_attention``, across sequence lengths and batch sizes.
Then put the activations beside the model state for a few model shapes.

Run it: ``python -m experiments.activation_memory --profile quick``.
"""

# %%
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from experiments.lib.formulas import PRECISION_REGIMES, korthikanti_activation_bytes, korthikanti_activation_terms
from experiments.lib.gpt import GPT, DecoderLayer, LayerShape, gpt_param_count
from experiments.lib.memory import MemoryTracker
from experiments.lib.saved import count_saved, saved_by_node
from experiments.lib.threads import cpu_threads

TIMEOUT_S = 600


@dataclass(frozen=True)
class Config:
    hidden: int = 64
    heads: int = 4
    seq: int = 128                      # the base shape for the breakdown and the batch sweep
    batch: int = 2
    seq_lens: tuple = (32, 64, 128, 256, 512)
    batches: tuple = (1, 2, 4, 8)
    dropout: float = 0.1
    # the measured share of activations: a small GPT trained for one step
    share_layers: int = 2
    share_vocab: int = 256
    share_batches: tuple = (1, 4)
    # the predicted share for model shapes: (name, layers, hidden, heads, vocab)
    shapes: tuple = (("GPT-2 small", 12, 768, 12, 50257), ("GPT-2 XL", 48, 1600, 25, 50257),
                     ("7B", 32, 4096, 32, 32000))
    share_seqs: tuple = (512, 2048, 8192, 32768)
    share_batch_list: tuple = (1, 8)
    cpu_threads: int = 1                # see experiments.lib.threads; 0 leaves torch's default


PROFILES = {
    "test": Config(hidden=32, heads=2, seq=32, batch=2, seq_lens=(32, 64, 128), batches=(1, 2), share_layers=2,
                   share_vocab=64, share_batches=(1,), shapes=(("toy", 2, 64, 4, 100),), share_seqs=(64, 128),
                   share_batch_list=(1, 2)),
    "quick": Config(),
    "full": Config(hidden=1024, heads=16, seq=1024, batch=4, seq_lens=(256, 512, 1024, 2048, 4096, 8192),
                   batches=(1, 2, 4, 8, 16), share_layers=4, share_vocab=8192, share_batches=(1, 4, 16)),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    "gpu": Config(hidden=1024, heads=16, seq=1024, batch=4, seq_lens=(256, 512, 1024, 2048, 4096, 8192),
                  batches=(1, 2, 4, 8, 16), share_layers=4, share_vocab=8192, share_batches=(1, 4, 16)),
}

# %% [markdown]
# ## The paper's accounting, piece by piece
#
# Korthikanti et al. 2022 (section 4.1) count, per layer and in bytes for 16-bit
# activations with 1-byte dropout masks: the LayerNorm inputs (2sbh each), the
# QKV input (2sbh), Q and K (4sbh), the softmax output (2as²b), the
# attention-dropout mask (as²b) and its output (2as²b), V (2sbh), the output
# projection input (2sbh) and its dropout mask (sbh); in the MLP the two
# projection inputs (2sbh, 8sbh), the GELU input (8sbh) and a dropout mask (sbh).
# Below, each piece is tied to the submodule of our layer that saves it. The
# coefficients are (elements per sbh, elements per as²b, kind).

# %%
PAPER_PIECES = {
    # module: (sbh coefficient, a*s^2*b coefficient, "act" or "mask")
    "ln1": (1, 0, "act"),
    "qkv": (1, 0, "act"),
    "core": (3, 2, "act"),            # Q, K, V and softmax output, dropout output
    "core.attn_drop": (0, 1, "mask"),
    "proj": (1, 0, "act"),
    "drop1": (1, 0, "mask"),
    "ln2": (1, 0, "act"),
    "fc1": (1, 0, "act"),
    "gelu": (4, 0, "act"),
    "fc2": (4, 0, "act"),
    "drop2": (1, 0, "mask"),
}
GROUP_OF = {"ln1": "norms", "ln2": "norms", "qkv": "attention", "core": "attention", "proj": "attention",
            "fc1": "mlp", "gelu": "mlp", "fc2": "mlp",
            "core.attn_drop": "dropout_masks", "drop1": "dropout_masks", "drop2": "dropout_masks"}
GROUPS = ("attention", "mlp", "norms", "dropout_masks")


def predicted_by_module(s: int, b: int, h: int, a: int, act_bytes: int = 2, mask_bytes: int = 1) -> dict:
    out = {}
    for mod, (c_lin, c_quad, kind) in PAPER_PIECES.items():
        per = act_bytes if kind == "act" else mask_bytes
        out[mod] = (c_lin * s * b * h + c_quad * a * s * s * b) * per
    return out


def by_group(by_module: dict) -> dict:
    out = {g: 0 for g in GROUPS}
    for mod, nbytes in by_module.items():
        out[GROUP_OF.get(mod, "attention")] += nbytes
    return out

# %% [markdown]
# ## Measuring one layer
#
# Two independent counts: the pack hook of ``saved_tensors_hooks`` charges each
# storage to the submodule running when it was saved; a walk of the autograd
# graph reads every node's ``_saved_*`` tensors and charges them to the node type
# (``MmBackward0``, ``SoftmaxBackward0``, ...): op by op.

# %%
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def measure_layer(cfg: Config, s: int, b: int, dtype: str, attention: str, device: str,
                  attn_dropout: float | None = None, autocast: bool = False) -> dict:
    """Saved bytes of one forward pass through one DecoderLayer, by submodule and by autograd node."""
    torch.manual_seed(0)
    shape = LayerShape(cfg.hidden, cfg.heads, dropout=cfg.dropout,
                       attn_dropout=cfg.dropout if attn_dropout is None else attn_dropout)
    layer = DecoderLayer(shape, attention, max_seq=s).to(device)
    param_dtype = torch.float32 if autocast else DTYPES[dtype]
    layer = layer.to(param_dtype)
    x = torch.randn(b, s, cfg.hidden, device=device, dtype=param_dtype, requires_grad=True)
    weights = [p for p in layer.parameters() if p.dim() == 2]

    def classify(t: torch.Tensor) -> str:
        # autocast saves the 16-bit copy of a weight (transposed) for the matmul's backward
        for w in weights:
            if t.dim() == 2 and t.dtype != w.dtype and t.shape == w.t().shape and torch.equal(t, w.t().to(t.dtype)):
                return "weight_cast"
        return "activation"

    if autocast:
        with torch.autocast(torch.device(device).type, dtype=DTYPES[dtype]):
            out, res = count_saved(lambda: layer(x), exclude=[layer], attribute=layer, classify=classify)
    else:
        out, res = count_saved(lambda: layer(x), exclude=[layer], attribute=layer)
    by_op = saved_by_node(out, exclude=[layer])  # the same bytes, found by walking the autograd graph
    del out
    return {"saved_bytes": res.total_bytes, "by_module_bytes": res.by_module,
            "by_op_bytes": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
            "graph_walk_total_bytes": sum(by_op.values()),
            "tensors": [{"module": e.module, "shape": list(e.shape), "dtype": e.dtype, "bytes": e.bytes, "kind": e.kind}
                        for e in res.entries]}


def breakdown(cfg: Config, dtype: str, device: str, autocast: bool = False) -> dict:
    """The base shape's layer in one precision: what it saved (the paper's side is derived in summarize)."""
    m = measure_layer(cfg, cfg.seq, cfg.batch, dtype, "math", device, autocast=autocast)
    return {**m, "dtype": dtype, "autocast": autocast}

# %% [markdown]
# ## Sweeps: sequence length (the s² term) and batch size

# %%
ATTENTION_VARIANTS = (
    # key, attention, attention-dropout (None: the config's)
    ("math", "math", None),
    ("math_no_attn_dropout", "math", 0.0),
    ("sdpa", "sdpa", 0.0),
    ("sdpa_attn_dropout", "sdpa", None),
)


def seq_sweep(cfg: Config, device: str) -> dict:
    rows = []
    for s in cfg.seq_lens:
        row = {"seq": s}
        for key, attention, p in ATTENTION_VARIANTS:
            row[f"{key}_bytes"] = measure_layer(cfg, s, cfg.batch, "bf16", attention, device, attn_dropout=p)["saved_bytes"]
        rows.append(row)
    return {"batch": cfg.batch, "rows": rows}


def batch_sweep(cfg: Config, device: str) -> dict:
    rows = [{"batch": b, "saved_bytes": measure_layer(cfg, cfg.seq, b, "bf16", "math", device)["saved_bytes"]}
            for b in cfg.batches]
    return {"seq": cfg.seq, "rows": rows}

# %% [markdown]
# ## The share of activations in training memory
#
# Measured: one AdamW step of a small GPT, with PyTorch's memory tracker,
# which labels every live tensor. Predicted: for larger shapes, the model state
# of mixed-precision Adam (16 bytes per parameter, Rajbhandari et al. 2020)
# against L layers of the paper's activations, with and without the s² term
# (a flash-attention kernel saves no s × s matrix).

# %%
def measured_share(cfg: Config, device: str) -> list:
    rows = []
    for b in cfg.share_batches:
        torch.manual_seed(0)
        shape = LayerShape(cfg.hidden, cfg.heads, dropout=cfg.dropout, attn_dropout=cfg.dropout)
        model = GPT(cfg.share_vocab, cfg.seq, cfg.share_layers, shape).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        idx = torch.randint(0, cfg.share_vocab, (b, cfg.seq), device=device)
        # the saved bytes of the whole model, per decoder layer
        loss, res = count_saved(lambda: model(idx, idx), exclude=[model], attribute=model)
        per_layer = [sum(v for k, v in res.by_module.items() if k == f"layers.{i}" or k.startswith(f"layers.{i}."))
                     for i in range(cfg.share_layers)]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tracker = MemoryTracker(device).track(model, opt)
        with tracker:
            loss = model(idx, idx)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        rows.append({"batch": b, "seq": cfg.seq, "layers": cfg.share_layers, "peak": tracker.peak().as_dict(),
                     "params": sum(p.numel() for p in model.parameters()),
                     "saved_bytes_total": res.total_bytes, "saved_bytes_per_layer": per_layer})
    return rows


def predicted_share_shapes(cfg: Config) -> list:
    """The model shapes, sequence lengths and batches of the predicted share, with the model's parameter count."""
    rows = []
    for name, layers, h, a, vocab in cfg.shapes:
        params = gpt_param_count(vocab, 0, layers, h)  # token embedding (tied head) + layers; no position table
        for s in cfg.share_seqs:
            for b in cfg.share_batch_list:
                rows.append({"model": name, "layers": layers, "hidden": h, "heads": a, "seq": s, "batch": b,
                             "params": params})
    return rows

# %% [markdown]
# ## Run

# %%
def run(cfg: Config, device: str) -> dict:
    with cpu_threads(cfg.cpu_threads, device):
        return _run(cfg, device)


def _run(cfg: Config, device: str) -> dict:
    torch.manual_seed(0)
    bf16 = breakdown(cfg, "bf16", device)
    return {
        "shape": {"seq": cfg.seq, "batch": cfg.batch, "hidden": cfg.hidden, "heads": cfg.heads,
                  "dropout": cfg.dropout},
        "dropout_mask_dtype": next(t["dtype"] for t in bf16["tensors"] if t["module"] == "drop1"),
        "bf16": bf16,
        "fp32": breakdown(cfg, "fp32", device),
        "autocast_bf16": breakdown(cfg, "bf16", device, autocast=True),
        "seq_sweep": seq_sweep(cfg, device),
        "batch_sweep": batch_sweep(cfg, device),
        "measured_share": measured_share(cfg, device),
        "predicted_share": predicted_share_shapes(cfg),
    }

# %% [markdown]
# ## What the pages show, derived from what was measured
#
# Everything below runs at build time, without torch: the paper's pieces at the
# measured shape, ratios against them, the growth of the sequence sweep and the
# verdict on the s² term, the shares of training memory, and the row labels.

# %%
ACT_BYTES = {"bf16": 2, "fp32": 4}
# a float64 scalar tensor: what autograd keeps for a multiplication by a Python float without calling the pack hook
FLOAT64_SCALAR_BYTES = 8
# growth over one doubling of s above which a variant still keeps an s x s term (2 is linear, 4 quadratic)
QUADRATIC_GROWTH_THRESHOLD = 2.5
MODULE_LABELS = {
    "ln1": "LayerNorm 1: input",
    "qkv": "QKV projection: input",
    "core": "attention core: Q, K, V, softmax output, dropout output",
    "core.attn_drop": "attention-dropout mask",
    "proj": "output projection: input",
    "drop1": "residual dropout mask (attention)",
    "ln2": "LayerNorm 2: input",
    "fc1": "MLP up-projection: input",
    "gelu": "GELU: input",
    "fc2": "MLP down-projection: input",
    "drop2": "residual dropout mask (MLP)",
}
GROUP_LABELS = {"attention": "attention", "mlp": "mlp", "norms": "norms", "dropout_masks": "dropout masks"}
VARIANT_LABELS = {
    "math": "explicit softmax (attention dropout)",
    "math_no_attn_dropout": "explicit softmax, no attention dropout",
    "sdpa": "scaled_dot_product_attention",
    "sdpa_attn_dropout": "SDPA with attention dropout",
}
RUN_LABELS = {"bf16": "measured bf16", "fp32": "measured fp32", "autocast_bf16": "measured autocast bf16"}


def summarize_breakdown(m: dict, shape: dict) -> dict:
    """One precision's layer against the paper: by group, by submodule, in total; the graph walk's extra bytes."""
    s, b, h, a = shape["seq"], shape["batch"], shape["hidden"], shape["heads"]
    pred16 = predicted_by_module(s, b, h, a)                                 # the paper: 16-bit, 1-byte masks
    pred_dtype = predicted_by_module(s, b, h, a, ACT_BYTES[m["dtype"]])      # the paper's pieces at this width
    meas_g, p16_g, pdt_g = by_group(m["by_module_bytes"]), by_group(pred16), by_group(pred_dtype)
    extra = m["graph_walk_total_bytes"] - m["saved_bytes"]
    return {
        "groups": {g: {"label": GROUP_LABELS[g], "measured_bytes": meas_g[g], "paper_16bit_bytes": p16_g[g],
                       "paper_at_dtype_bytes": pdt_g[g], "ratio": meas_g[g] / pdt_g[g]} for g in GROUPS},
        "modules": {mod: {"label": MODULE_LABELS[mod], "measured_bytes": m["by_module_bytes"].get(mod, 0),
                          "paper_at_dtype_bytes": pred_dtype[mod]} for mod in PAPER_PIECES},
        "paper_16bit_total_bytes": sum(pred16.values()),
        "paper_at_dtype_total_bytes": sum(pred_dtype.values()),
        "ratio_to_paper_16bit": m["saved_bytes"] / sum(pred16.values()),
        "ratio_to_paper_at_dtype": m["saved_bytes"] / sum(pred_dtype.values()),
        # under autocast the 16-bit copies of the weights are saved too (they are not parameters)
        "weight_cast_bytes": sum(t["bytes"] for t in m["tensors"] if t["kind"] == "weight_cast"),
        # what the graph walk finds beyond the pack hook, and whether that is exactly one float64 scalar
        # (the attention's 1/sqrt(d), kept as a wrapped Python number)
        "graph_walk_extra_bytes": extra,
        "graph_walk_extra_is_one_float64_scalar": extra == FLOAT64_SCALAR_BYTES,
    }


def by_op_table(runs: dict) -> dict:
    """Bytes per autograd node type, one column per precision (0 where a precision has no such node)."""
    ops = list(dict.fromkeys(op for m in runs.values() for op in m["by_op_bytes"]))
    return {op: {f"{key}_bytes": m["by_op_bytes"].get(op, 0) for key, m in runs.items()} for op in ops}


def summarize_seq_sweep(sw: dict, shape: dict) -> dict:
    b, h, a = sw["batch"], shape["hidden"], shape["heads"]
    rows = [{"seq": r["seq"],
             "paper_bytes": korthikanti_activation_bytes(r["seq"], b, h, a),
             "paper_linear_bytes": 34 * r["seq"] * b * h,
             "paper_quadratic_bytes": 5 * a * r["seq"] * r["seq"] * b,
             "sdpa_attn_dropout_above_math": r["sdpa_attn_dropout_bytes"] > r["math_bytes"]} for r in sw["rows"]]
    # which variants kept the s^2 term: the growth between the two longest sequences
    last, prev = sw["rows"][-1], sw["rows"][-2]
    growth = {key: last[f"{key}_bytes"] / prev[f"{key}_bytes"] for key in VARIANT_LABELS}
    return {"rows": rows, "labels": dict(VARIANT_LABELS), "growth_last_doubling": growth,
            "seq_ratio_last_doubling": last["seq"] / prev["seq"],
            "quadratic_growth_threshold": QUADRATIC_GROWTH_THRESHOLD,
            "kept_quadratic_term": {key: g > QUADRATIC_GROWTH_THRESHOLD for key, g in growth.items()}}


def summarize_batch_sweep(bs: dict, shape: dict) -> dict:
    rows = [{"batch": r["batch"], "saved_bytes_per_sample": r["saved_bytes"] / r["batch"],
             "paper_bytes": korthikanti_activation_bytes(bs["seq"], r["batch"], shape["hidden"], shape["heads"])}
            for r in bs["rows"]]
    per = [r["saved_bytes_per_sample"] for r in rows]
    return {"rows": rows, "per_sample_spread_ratio": max(per) / min(per)}


def summarize_predicted_share(rows: list) -> list:
    per_param = sum(PRECISION_REGIMES["mixed-master"])
    out = []
    for r in rows:
        layers, s, b, h, a = r["layers"], r["seq"], r["batch"], r["hidden"], r["heads"]
        act = layers * korthikanti_activation_bytes(s, b, h, a)
        act_flash = layers * 34 * s * b * h
        state = r["params"] * per_param
        out.append({"model": r["model"], "layers": layers, "hidden": h, "heads": a, "seq": s, "batch": b,
                    "params": r["params"], "state_bytes": state, "activation_bytes": act,
                    "activation_flash_bytes": act_flash, "activation_share": act / (act + state),
                    "activation_flash_share": act_flash / (act_flash + state)})
    return out


def summarize_weight_cache(m: dict) -> dict:
    """The 16-bit weight copies autocast keeps for backward: per layer and per weight they copy.

    They are not parameters, so a bytes-per-parameter table of the model state leaves them out; they live
    from the forward pass until backward has used them.
    """
    casts = [t for t in m["tensors"] if t["kind"] == "weight_cast"]
    weights = sum(math.prod(t["shape"]) for t in casts)
    cast_bytes = sum(t["bytes"] for t in casts)
    return {"bytes": cast_bytes, "weights": weights, "matrices": len(casts),
            "dtype": casts[0]["dtype"] if casts else None,
            "bytes_per_weight": cast_bytes / weights if weights else 0.0}


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        s = data["shape"]
        return f"one GPT layer, hidden {s['hidden']}, {s['heads']} heads, seq {s['seq']}, batch {s['batch']}"
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    shape = data["shape"]
    s, b, h, a = shape["seq"], shape["batch"], shape["hidden"], shape["heads"]
    runs = {key: data[key] for key in RUN_LABELS}
    shares = []
    for r in data["measured_share"]:
        transient = r["peak"]["activations_bytes"] + r["peak"]["temporaries_bytes"]
        shares.append({"activations_and_temporaries_bytes": transient,
                               "activation_share": transient / r["peak"]["total_bytes"]})
    return {
        "scale_label": scale_label(data),
        "shape": {"sbh": s * b * h, "as_over_h": a * s / h},
        "paper_terms_16bit_bytes": korthikanti_activation_terms(s, b, h, a),
        "dropout_masks_are_bool": data["dropout_mask_dtype"] == "bool",
        "layernorm_stats_bytes": sum(t["bytes"] for t in data["bf16"]["tensors"]
                                     if t["module"] in ("ln1", "ln2") and t["shape"][-1] == 1),
        **{key: summarize_breakdown(m, shape) for key, m in runs.items()},
        "run_labels": dict(RUN_LABELS),
        "autocast_weight_cache": summarize_weight_cache(data["autocast_bf16"]),
        "by_op": by_op_table(runs),
        "seq_sweep": summarize_seq_sweep(data["seq_sweep"], shape),
        "batch_sweep": summarize_batch_sweep(data["batch_sweep"], shape),
        "measured_share": shares,
        "predicted_share": summarize_predicted_share(data["predicted_share"]),
    }

# %% [markdown]
# ## Figures

# %%
def plot(data: dict, summary: dict) -> dict:
    import matplotlib.pyplot as plt

    figs = {}
    sw, ssw = data["seq_sweep"], summary["seq_sweep"]
    seqs = [r["seq"] for r in sw["rows"]]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (key, label), style in zip(ssw["labels"].items(), ("o-", "s-", "^-", "v--")):
        ax.plot(seqs, [r[f"{key}_bytes"] for r in sw["rows"]], style, label=f"measured: {label}")
    ax.plot(seqs, [r["paper_bytes"] for r in ssw["rows"]], "k-", lw=2, alpha=0.4, label="paper: sbh(34 + 5as/h)")
    ax.plot(seqs, [r["paper_linear_bytes"] for r in ssw["rows"]], "k:", label="paper linear part 34sbh")
    ax.plot(seqs, [r["paper_quadratic_bytes"] for r in ssw["rows"]], "k--", label="paper quadratic part 5as²b")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("sequence length s (tokens)")
    ax.set_ylabel("bytes saved for backward, one layer")
    ax.set_title(f"One decoder layer, bf16, batch {sw['batch']}")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    figs["seq_sweep"] = fig

    fig, ax = plt.subplots(figsize=(7, 3.6))
    groups = summary["bf16"]["groups"]
    width = 0.2
    series = [("bf16", "measured_bytes", summary["run_labels"]["bf16"]),
              ("bf16", "paper_16bit_bytes", "paper (16-bit)"),
              ("fp32", "measured_bytes", summary["run_labels"]["fp32"]),
              ("autocast_bf16", "measured_bytes", summary["run_labels"]["autocast_bf16"])]
    for i, (run_key, field, label) in enumerate(series):
        vals = [summary[run_key]["groups"][g][field] / 2**10 for g in groups]
        ax.bar([j + (i - 1.5) * width for j in range(len(groups))], vals, width, label=label)
    ax.set_xticks(range(len(groups)), [g["label"] for g in groups.values()])
    ax.set_ylabel("KiB saved, one layer")
    ax.set_title(f"Term by term: s={data['shape']['seq']}, b={data['shape']['batch']}, "
                 f"h={data['shape']['hidden']}, a={data['shape']['heads']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs["breakdown"] = fig

    fig, ax = plt.subplots(figsize=(7, 3.8))
    rows = summary["predicted_share"]
    batches = sorted({r["batch"] for r in rows})
    for i, name in enumerate(dict.fromkeys(r["model"] for r in rows)):
        for b, style in zip(batches, ("-", "--", ":")):
            sel = [r for r in rows if r["model"] == name and r["batch"] == b]
            ax.plot([r["seq"] for r in sel], [100 * r["activation_share"] for r in sel], style, marker="o",
                    color=f"C{i}", label=f"{name}, batch {b}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("activations, % of training memory")
    ax.set_title("Predicted share (mixed-precision Adam state, no checkpointing)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    figs["share"] = fig
    return figs

# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
