# %% [markdown]
# # The error ledger: the estimator against real model implementations

# %%
"""The error ledger: the estimator against one real training step of Hugging Face models.

**Question.** How close do the sizing rules come to what a real training step of real model
implementations holds on this host? Term by term (weights, gradients, optimizer state, saved
activations, autocast's cast weights, the optimizer step's temporaries) and in total: the
estimator behind `handbook estimate`, Korthikanti et al.'s activation rule sbh(34 + 5as/h), the
"16 bytes per parameter" rule and a plain sum of terms, each against the measured peak of the
step.

**Method.** For each case (a model family, a precision layout, an attention implementation,
with or without gradient checkpointing) `run` builds transformers' own causal-LM class from a
config, randomly initialised (`AutoConfig.for_model` + `AutoModelForCausalLM.from_config`;
nothing is downloaded), and trains it one step with AdamW (forward, backward, `step`,
`zero_grad`). A first step creates the optimizer state and counts what autograd saves
(`saved_tensors_hooks`, by dtype; the 16-bit copies of the weights that autocast saves are
counted apart). A second step runs under PyTorch's `MemTracker` (`experiments/lib/memory.py`;
on CUDA also `torch.cuda.max_memory_allocated`), phase by phase: the forward pass, the backward
pass, the optimizer step, so the phase that holds the peak is data. `run` stores the inputs the
estimator needs (the model's config fields, batch, sequence, precision, attention,
checkpointing, device kind); `summarize` asks the torch-free estimator at build time, so an
improved estimator updates the ledger without measuring again. Without transformers the
result says the experiment did not run, and why.

**Run.** `python -m experiments.estimator_validation --profile quick` prints the JSON.
"""

# %%
from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass

import torch

from experiments.lib import estimator, formulas, model_shapes  # summarize only (torch-free)
from experiments.lib.memory import MemoryTracker, close_phase, grad_bytes, optimizer_state_bytes, param_bytes
from experiments.lib.saved import count_saved
from experiments.lib.threads import cpu_threads

TIMEOUT_S = 600

FAMILIES = ("gpt2", "llama", "qwen2", "gemma2", "mixtral")  # transformers' model_type of each
# The precision layouts, named as the estimator names them:
#   fp32        fp32 weights, gradients, AdamW moments; fp32 compute
#   bf16-mixed  torch.autocast(bfloat16) over fp32 weights, gradients and moments (PyTorch AMP)
#   bf16-master bf16 weights and gradients, an fp32 master copy and fp32 moments (DeepSpeed's and
#               Megatron's layout; ZeRO's 2 + 2 + 12 bytes per parameter, Rajbhandari et al. 2020, section 3.1)
PRECISIONS = ("fp32", "bf16-mixed", "bf16-master")
ATTENTIONS = ("eager", "sdpa")  # transformers' attn_implementation


def grid(families=FAMILIES, precisions=PRECISIONS, attentions=ATTENTIONS,
         checkpointing=(False, True)) -> tuple[tuple[str, str, str, bool], ...]:
    """Every combination, as (family, precision, attention, gradient checkpointing)."""
    return tuple(itertools.product(families, precisions, attentions, checkpointing))


@dataclass(frozen=True)
class Config:
    """One shape for every family (each family reads what it uses), and the cases to run."""

    batch: int = 2
    seq: int = 64
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2          # grouped-query attention where the family has it (not GPT-2)
    intermediate: int = 176    # MLP width of the gated families; GPT-2 uses 4 x hidden
    vocab: int = 512
    experts: int = 4           # Mixtral: experts per layer
    top_k: int = 2             # Mixtral: experts per token
    threads: int = 1           # CPU intra-op threads (0: leave torch's default); tiny tensors gain nothing from more
    cases: tuple[tuple[str, str, str, bool], ...] = grid()


PROFILES = {
    "test": Config(batch=1, seq=16, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, vocab=64,
                   cases=(("gpt2", "fp32", "eager", False), ("llama", "fp32", "sdpa", False))),
    "quick": Config(),  # every case, at a tiny size
    # 67-115M parameters at sequence 512 (GPT-2 small's width, six layers; Mixtral with two experts, one per token)
    "full": Config(batch=1, seq=512, hidden=768, layers=6, heads=12, kv_heads=4, intermediate=2048, vocab=32000,
                   experts=2, top_k=1, threads=0,
                   cases=grid(("gpt2", "llama"), checkpointing=(False,))
                   + grid(("gpt2", "llama"), ("bf16-mixed",), ("sdpa",), (True,))
                   + grid(("qwen2", "gemma2", "mixtral"), ("bf16-mixed",), ("sdpa",), (False,))),
    # a GPU host: GPT-2 small's width at sequence 1024, a few cases (the GPU plan's time is short)
    "gpu": Config(batch=4, seq=1024, hidden=768, layers=12, heads=12, kv_heads=4, intermediate=2048, vocab=50304,
                  experts=4, top_k=2, threads=0,
                  cases=grid(("gpt2", "llama"), ("fp32", "bf16-mixed", "bf16-master"), ("eager", "sdpa"), (False,))
                  + grid(("gpt2", "llama"), ("bf16-mixed",), ("sdpa",), (True,))
                  + grid(("qwen2", "gemma2", "mixtral"), ("bf16-mixed",), ("sdpa",), (False,))),
}

# %% [markdown]
# ## One model, from transformers' own classes
# Each family's config fields (transformers' `configuration_<family>.py`). GPT-2 keeps its
# default dropout of 0.1; Gemma 2's head dimension is twice hidden/heads, as in the released
# models (head_dim 256 with hidden 2304 and 8 heads in gemma-2-2b's config.json).

# %%
def family_config(cfg: Config, family: str) -> dict:
    h, a, kv = cfg.hidden, cfg.heads, cfg.kv_heads
    if family == "gpt2":
        return {"n_embd": h, "n_layer": cfg.layers, "n_head": a, "vocab_size": cfg.vocab, "n_positions": cfg.seq,
                "bos_token_id": cfg.vocab - 1, "eos_token_id": cfg.vocab - 1, "use_cache": False}
    common = {"hidden_size": h, "num_hidden_layers": cfg.layers, "num_attention_heads": a,
              "num_key_value_heads": kv, "intermediate_size": cfg.intermediate, "vocab_size": cfg.vocab,
              "max_position_embeddings": cfg.seq, "use_cache": False}
    if family == "gemma2":
        return {**common, "head_dim": 2 * h // a}
    if family == "mixtral":
        return {**common, "num_local_experts": cfg.experts, "num_experts_per_tok": cfg.top_k}
    return common


def _plain(config_dict: dict) -> dict:
    """The config's JSON fields (what ``config.json`` would hold), for the estimator at build time."""
    return json.loads(json.dumps({k: v for k, v in config_dict.items() if not k.startswith("_")}, default=str))


def _cast_weight_kind(params: set) -> callable:
    """Label a saved tensor "cast_weight" when it is a copy of a parameter in another dtype (autocast's
    cached 16-bit weights, ``torch/csrc/autograd/autocast_mode``), possibly behind a view; else "activation"."""
    views = {"TBackward0", "TransposeBackward0", "ViewBackward0", "PermuteBackward0", "ExpandBackward0",
             "UnsafeViewBackward0", "AliasBackward0"}

    def kind(t: torch.Tensor) -> str:
        fn = t.grad_fn
        for _ in range(4):
            if fn is None or fn.name() not in views:
                break
            fn = fn.next_functions[0][0] if fn.next_functions else None
        if fn is not None and fn.name() == "ToCopyBackward0" and fn.next_functions:
            leaf = fn.next_functions[0][0]
            if leaf is not None and id(getattr(leaf, "variable", None)) in params:
                return "cast_weight"
        return "activation"

    return kind


def measure_case(cfg: Config, device: str, family: str, precision: str, attention: str, checkpointing: bool) -> dict:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    hf_config = AutoConfig.for_model(family, **family_config(cfg, family))
    model = AutoModelForCausalLM.from_config(hf_config, attn_implementation=attention).to(device)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    master = None
    if precision == "bf16-master":
        model.to(torch.bfloat16)
        master = torch.nn.ParameterList([torch.nn.Parameter(p.detach().float()) for p in model.parameters()])
        opt = torch.optim.AdamW(master.parameters(), lr=1e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dev_type = torch.device(device).type
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=g).to(device)

    def forward() -> torch.Tensor:
        if precision == "bf16-mixed":
            with torch.autocast(dev_type, dtype=torch.bfloat16):
                return model(input_ids=ids, labels=ids).loss
        return model(input_ids=ids, labels=ids).loss

    def step() -> None:
        if master is not None:  # the master step: fp32 copies of the bf16 grads, AdamW in fp32, copy back
            for m, p in zip(master, model.parameters()):
                m.grad = p.grad.float()
            model.zero_grad(set_to_none=True)
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                for m, p in zip(master, model.parameters()):
                    p.copy_(m)
        else:
            opt.step()
            opt.zero_grad(set_to_none=True)

    # step 1: create the optimizer state; count what autograd saves for backward
    params = {id(p) for p in model.parameters()}
    loss, saved = count_saved(forward, exclude=[model], classify=_cast_weight_kind(params))
    loss.backward()
    del loss
    step()
    saved_bytes: dict[str, dict[str, int]] = {}
    for e in saved.entries:
        by_dtype = saved_bytes.setdefault(e.kind, {})
        by_dtype[e.dtype] = by_dtype.get(e.dtype, 0) + e.bytes

    # step 2, measured phase by phase
    tracker = MemoryTracker(device).track(model, opt, *([master] if master is not None else []))
    phases: dict[str, dict] = {}

    def close(phase: str) -> None:
        phases[phase] = close_phase(tracker)

    with tracker:
        before = tracker.current().as_dict()
        tracker.reset_peak()
        loss = forward()
        close("forward")
        loss.backward()
        grads = grad_bytes(model)
        del loss
        close("backward")
        step()
        close("optimizer")
    opt_state = optimizer_state_bytes(opt)
    master_bytes = param_bytes(master) if master is not None else 0
    return {
        "family": family, "precision": precision, "attention": attention, "checkpointing": checkpointing,
        "model_class": type(model).__name__,
        "hf_config": _plain(hf_config.to_dict()),  # run() keeps one per family in data["hf_configs"]
        "parameters": sum(p.numel() for p in model.parameters()),
        "params_bytes": param_bytes(model),
        "grads_bytes": grads,
        "optimizer_state_bytes": opt_state,
        "master_weights_bytes": master_bytes,
        "saved_bytes": saved_bytes,      # {"activation" | "cast_weight": {dtype: bytes}}
        "before_step": before,
        "phases": phases,
    }


def run(cfg: Config, device: str) -> dict:
    base = {"device": device, "device_kind": torch.device(device).type, "batch": cfg.batch, "seq": cfg.seq}
    try:
        import transformers
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    except ImportError as exc:  # recorded as not run; the other experiments are unaffected
        return {**base, "ran": False, "reason": f"transformers is not installed ({exc})", "transformers": None,
                "cases": {}}
    missing = sorted({c[0] for c in cfg.cases} - set(CONFIG_MAPPING.keys()))
    cases = {}
    with cpu_threads(cfg.threads, device):
        for case in cfg.cases:
            if case[0] in missing:
                continue
            cases[case_key(*case)] = measure_case(cfg, device, *case)
    configs: dict[str, dict] = {}  # one per family (its cases share the fields); a case that differs keeps its own
    for x in cases.values():
        if configs.setdefault(x["family"], x["hf_config"]) == x["hf_config"]:
            del x["hf_config"]
    return {**base, "ran": True, "reason": None, "transformers": transformers.__version__,
            "families_missing": missing, "hf_configs": configs, "cases": cases}


def case_key(family: str, precision: str, attention: str, checkpointing: bool) -> str:
    return f"{family}-{precision}-{attention}" + ("-ckpt" if checkpointing else "")

# %% [markdown]
# ## Derived at build time: the estimator's prediction, the rules, the verdicts
# The estimator is torch-free, so `summarize` asks it for each case from the stored config
# fields. A family or a layout it cannot take yet is reported with its one-line reason. The
# measured terms: weights, gradients and optimizer state read off the tensors (the fp32 master
# copy counts as optimizer state, as in ZeRO's K = 12); activations are the bytes autograd saved
# minus autocast's cast weights, which are their own term; the step's temporaries are what the
# optimizer step peaked at above what was live before it.

# %%
TARGET_PEAK_ABOVE = 0.05   # issue 17's targets: the predicted peak within +-5 % of the measured peak
TARGET_PEAK_BELOW = 0.03   # and never more than 3 % below it
TARGET_ACTIVATIONS = 0.05  # activations within +-5 %
BYTES_PER_PARAM_RULE = 16  # "16 bytes per parameter": fp32 weights, gradients, Adam's two moments
PHASES = ("forward", "backward", "optimizer")
STATES = ("params", "grads", "optimizer")
SAVED_LABELS = {"activation": "activations", "cast_weight": "cast weights"}
PHASE_LABELS = {"forward": "forward pass", "backward": "backward pass", "optimizer": "optimizer step",
                "between_steps": "between steps"}
TERM_LABELS = {"params": "weights", "grads": "gradients", "optimizer": "optimizer state",
               "activations": "saved activations (after forward)", "cast_weights": "autocast's cast weights",
               "backward_growth": "backward's peak above the end of forward",
               "step_temporaries": "optimizer-step temporaries"}
RULE_LABELS = {"estimator_peak": "estimator's peak", "sum_of_terms": "plain sum of terms",
               "korthikanti": "model states + sbh(34 + 5as/h)", "bytes_per_param": "16 bytes per parameter"}
FAMILY_LABELS = {"gpt2": "GPT-2", "llama": "Llama", "qwen2": "Qwen2", "gemma2": "Gemma 2", "mixtral": "Mixtral"}


def measured_terms(x: dict) -> dict[str, int]:
    saved = x["saved_bytes"]
    step = x["phases"]["optimizer"]
    return {
        "params": x["params_bytes"],
        "grads": x["grads_bytes"],
        "optimizer": x["optimizer_state_bytes"] + x["master_weights_bytes"],
        "activations": sum(saved.get("activation", {}).values()),
        "cast_weights": sum(saved.get("cast_weight", {}).values()),
        "backward_growth": x["phases"]["backward"]["peak"]["total_bytes"] - x["phases"]["forward"]["end"]["total_bytes"],
        "step_temporaries": step["peak"]["total_bytes"] - x["phases"]["backward"]["end"]["total_bytes"],
    }


def measured_phases(x: dict) -> dict[str, int]:
    """The live bytes of each phase that a peak model predicts: the peak of forward, backward and the
    optimizer step, and what is live between steps."""
    return {**{ph: x["phases"][ph]["peak"]["total_bytes"] for ph in PHASES},
            "between_steps": x["before_step"]["total_bytes"]}


def measured_peak(x: dict) -> tuple[int, str]:
    phase = max(PHASES, key=lambda p: x["phases"][p]["peak"]["total_bytes"])
    return x["phases"][phase]["peak"]["total_bytes"], phase


def predict(data: dict, x: dict) -> dict:
    """The estimator's answer for one case, or why it has none (an unsupported family or layout)."""
    try:
        config = x["hf_config"] if "hf_config" in x else data["hf_configs"][x["family"]]
        shape = model_shapes.shape_from_config(config, where=f"{x['family']} config", name=x["family"])
        wanted = {"optimizer": "adamw", "precision": x["precision"], "batch": data["batch"], "seq": data["seq"],
                  "checkpointing": "full" if x["checkpointing"] else "none",
                  "attention": x["attention"], "device": data["device_kind"]}
        fields = {f.name for f in dataclasses.fields(estimator.Setup)}
        ignored = sorted(k for k in wanted if k not in fields)
        est = estimator.estimate(estimator.Setup(**{k: v for k, v in wanted.items() if k in fields}), shape=shape)
    except ValueError as exc:  # ShapeError and EstimateError are ValueErrors with one line
        return {"available": False, "reason": str(exc).splitlines()[0]}
    per_device = est["per_device_bytes"]
    peak = est.get("peak_bytes")
    terms = {k: v for k, v in per_device.items() if k != "total" and isinstance(v, int)}
    # what one layer's recomputation adds exists only during backward: after forward it is not there yet
    recompute = (est.get("activation_terms_bytes") or {}).get("recompute_bytes", 0)
    if "activations" in terms:
        terms["activations"] -= recompute
    # With a peak model, the terms that exist only within a phase, from its phase totals (names of the
    # phases as the estimator gives them: forward = end of forward, backward, optimizer, between_steps).
    phases = {ph: v["total_bytes"] for ph, v in (est.get("phases") or {}).items()
              if isinstance(v, dict) and isinstance(v.get("total_bytes"), int)}
    persistent = sum(per_device.get(k, 0) for k in STATES)
    if "forward" in phases and "backward" in phases:
        terms["backward_growth"] = phases["backward"] - phases["forward"]
    if "optimizer" in phases:
        terms["step_temporaries"] = phases["optimizer"] - persistent
    # the cast weights saved for backward: what the backward phase still holds of autocast's cache
    cast = ((est.get("phases") or {}).get("backward") or {}).get("cast_saved_bytes")
    if isinstance(cast, int):
        terms["cast_weights"] = cast
    return {"available": True, "reason": None, "parameters": est["parameters"], "shape": shape, "phases": phases,
            "terms": terms, "sum_bytes": per_device["total"], "recompute_bytes": recompute,
            "peak_bytes": peak if peak is not None else per_device["total"], "has_peak_model": peak is not None,
            "peak_phase": est.get("peak_phase"), "inputs_ignored": ignored}


def _share(by_dtype: dict[str, int], dtype: str) -> float | None:
    total = sum(by_dtype.values())
    return by_dtype.get(dtype, 0) / total if total else None


def _ratio(pred: int | None, meas: int) -> float | None:
    """predicted / measured; 1 when both are zero; None without a prediction or with nothing measured."""
    if pred is None or (meas == 0 and pred != 0):
        return None
    return pred / meas if meas else 1.0


def _case(data: dict, key: str, x: dict) -> dict:
    meas = measured_terms(x)
    peak, phase = measured_peak(x)
    p = predict(data, x)
    label = (f"{FAMILY_LABELS.get(x['family'], x['family'])}, {x['precision']}, {x['attention']}"
             + (", checkpointed" if x["checkpointing"] else ""))
    out = {"label": label, "family": x["family"], "family_label": FAMILY_LABELS.get(x["family"], x["family"]),
           "measured_peak_phase_label": PHASE_LABELS[phase], "precision": x["precision"], "attention": x["attention"],
           "checkpointing": x["checkpointing"], "model_class": x["model_class"], "parameters": x["parameters"],
           "measured_peak_bytes": peak, "measured_peak_phase": phase,
           "phases": {ph: {"label": PHASE_LABELS[ph], "peak_bytes": x["phases"][ph]["peak"]["total_bytes"],
                           "end_bytes": x["phases"][ph]["end"]["total_bytes"],
                           "cuda_max_allocated_bytes": x["phases"][ph]["cuda_max_allocated_bytes"]} for ph in PHASES},
           "saved": {f"{kind}/{dtype}": {"label": f"{SAVED_LABELS.get(kind, kind)}, {dtype}", "saved_bytes": n}
                     for kind, by_dtype in x["saved_bytes"].items() for dtype, n in by_dtype.items()},
           "fp32_saved_share": _share(x["saved_bytes"].get("activation", {}), "float32"),
           "predicted": p["available"], "reason": p["reason"]}
    predicted_terms = p["terms"] if p["available"] else {}
    terms = {}
    for t, m in meas.items():
        pred = predicted_terms.get(t)
        terms[t] = {"label": TERM_LABELS[t], "measured_bytes": m, "predicted_bytes": pred,
                    "modelled": pred is not None, "ratio": _ratio(pred, m),
                    "miss_bytes": (pred - m) if pred is not None else -m}
    out["terms"] = terms
    mph = measured_phases(x)
    pph = p["phases"] if p["available"] else {}
    out["phase_ledger"] = {ph: {"label": PHASE_LABELS[ph], "measured_bytes": m, "predicted_bytes": pph.get(ph),
                                "modelled": pph.get(ph) is not None, "ratio": _ratio(pph.get(ph), m),
                                "cuda_max_allocated_bytes": x["phases"][ph]["cuda_max_allocated_bytes"]
                                if ph in x["phases"] else None}
                           for ph, m in mph.items()}
    if not p["available"]:
        out.update(rules={}, verdict="no prediction", peak_ok=False, activations_ok=False, worst_term=None,
                   worst_term_label=None)
        return out
    e_act = 2 if x["precision"] != "fp32" else 4  # the rule is for 16-bit activations; fp32 stores twice that
    shape = p["shape"]
    states = sum(predicted_terms.get(k, 0) for k in ("params", "grads", "optimizer"))
    # Korthikanti et al. 2022, section 4.1, per layer (formulas.korthikanti_activation_bytes)
    korthikanti_acts = shape.layers * formulas.korthikanti_activation_bytes(data["seq"], data["batch"], shape.hidden,
                                                                             shape.heads) * e_act // 2
    totals = {
        "estimator_peak": p["peak_bytes"],
        "sum_of_terms": p["sum_bytes"],
        "korthikanti": states + korthikanti_acts,
        "bytes_per_param": BYTES_PER_PARAM_RULE * x["parameters"],
    }
    out["rules"] = {r: {"label": RULE_LABELS[r] if r != "estimator_peak" or p["has_peak_model"]
                        else "estimator (sum of terms: no peak model yet)",
                        "predicted_bytes": v, "ratio": v / peak} for r, v in totals.items()}
    out["korthikanti_activations_bytes"] = korthikanti_acts
    out["korthikanti_activations_ratio"] = _ratio(korthikanti_acts, meas["activations"])
    err = p["peak_bytes"] / peak - 1
    act_ratio = terms["activations"]["ratio"]
    peak_ok = -TARGET_PEAK_BELOW <= err <= TARGET_PEAK_ABOVE
    act_ok = act_ratio is not None and abs(act_ratio - 1) <= TARGET_ACTIVATIONS
    worst = max(terms, key=lambda t: abs(terms[t]["miss_bytes"]))
    out.update(peak_error_ratio=err, peak_ok=peak_ok, activations_ok=act_ok,
               estimator_peak_phase=p["peak_phase"], inputs_ignored=p["inputs_ignored"],
               estimator_peak_phase_label=PHASE_LABELS.get(p["peak_phase"], p["peak_phase"]) or "—",
               verdict="inside" if peak_ok and act_ok else "outside",
               worst_term=None if peak_ok and act_ok else worst,
               worst_term_label=None if peak_ok and act_ok else TERM_LABELS[worst])
    return out


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        if not data["ran"]:
            return "not measured on this host"
        sizes = [c["parameters"] for c in data["cases"].values()]
        return (f"{len(data['hf_configs'])} transformers families ({', '.join(data['hf_configs'])}), "
                f"{min(sizes):,}–{max(sizes):,} params, seq {data['seq']}, batch {data['batch']}")
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    cases = {k: _case(data, k, x) for k, x in data["cases"].items()}
    predicted = [c for c in cases.values() if c["predicted"]]
    rules = {}
    for r, label in RULE_LABELS.items():
        ratios = [c["rules"][r]["ratio"] for c in predicted]
        rules[r] = {"label": label, "cases": len(ratios),
                    "min_ratio": min(ratios) if ratios else None, "max_ratio": max(ratios) if ratios else None,
                    "mean_ratio": sum(ratios) / len(ratios) if ratios else None}
    if predicted and not predicted[0]["rules"]["estimator_peak"]["label"].startswith("estimator's"):
        rules["estimator_peak"]["label"] = predicted[0]["rules"]["estimator_peak"]["label"]
    act = [c["terms"]["activations"]["ratio"] for c in predicted]
    worst = {t: sum(1 for c in predicted if c["worst_term"] == t) for t in TERM_LABELS}
    compared = [c for c in predicted if all(c["terms"][t]["modelled"] for t in STATES)]
    shares = [c["fp32_saved_share"] for c in cases.values()
              if c["precision"] == "bf16-mixed" and c["fp32_saved_share"] is not None]
    return {
        "scale_label": scale_label(data),
        "ran": data["ran"], "reason": data["reason"], "device_kind": data["device_kind"],
        "device": data["device"], "transformers": data["transformers"],
        "families_missing": data.get("families_missing", []),
        "cases": cases, "rules": rules,
        "case_count": len(cases), "predicted_count": len(predicted),
        "unpredicted_count": len(cases) - len(predicted),
        "inside_count": sum(1 for c in predicted if c["verdict"] == "inside"),
        "outside_count": sum(1 for c in predicted if c["verdict"] == "outside"),
        "peak_ok_count": sum(1 for c in predicted if c["peak_ok"]),
        "activations_ok_count": sum(1 for c in predicted if c["activations_ok"]),
        "activations_min_ratio": min(act) if act else None, "activations_max_ratio": max(act) if act else None,
        "peak_phases": {ph: {"label": PHASE_LABELS[ph],
                             "count": sum(1 for c in cases.values() if c["measured_peak_phase"] == ph)}
                        for ph in PHASES},
        "worst_terms": {t: {"label": TERM_LABELS[t], "count": n} for t, n in worst.items()},
        "worst_terms_label": "; ".join(f"{TERM_LABELS[t]} in {n}" for t, n in worst.items() if n) or "none",
        "outside": {k: {"label": c["label"], "peak_ratio": 1 + c["peak_error_ratio"],
                        "side": "above (the safe side)" if c["peak_error_ratio"] > 0 else "below",
                        "worst_term_label": c["worst_term_label"],
                        "worst_term_ratio": c["terms"][c["worst_term"]]["ratio"],
                        "estimator_phase_label": c["estimator_peak_phase_label"],
                        "phase_ratio": c["phase_ledger"][c["estimator_peak_phase"]]["ratio"]
                        if c["estimator_peak_phase"] in c["phase_ledger"] else None}
                    for k, c in cases.items() if c["predicted"] and c["verdict"] == "outside"},
        "unmodelled_terms": {t: {"label": label} for t, label in TERM_LABELS.items()
                             if predicted and not all(c["terms"][t]["modelled"] for c in predicted)},
        "states_compared_count": len(compared),
        "states_exact_count": sum(1 for c in compared if all(
            c["terms"][t]["predicted_bytes"] == c["terms"][t]["measured_bytes"] for t in STATES)),
        "autocast_cases": len(shares),
        "autocast_fp32_saved_min_share": min(shares) if shares else None,
        "autocast_fp32_saved_max_share": max(shares) if shares else None,
        "inputs_ignored": sorted({k for c in predicted for k in c["inputs_ignored"]}),
        "inputs_ignored_label": ", ".join(sorted({k for c in predicted for k in c["inputs_ignored"]})) or "none",
        "unpredicted_reasons": {r: {"count": sum(1 for c in cases.values() if c["reason"] == r)}
                                for r in dict.fromkeys(c["reason"] for c in cases.values() if not c["predicted"])},
        "targets": {"peak_above_ratio": TARGET_PEAK_ABOVE, "peak_below_ratio": TARGET_PEAK_BELOW,
                    "activations_ratio": TARGET_ACTIVATIONS},
    }

# %% [markdown]
# ## The figure: each rule's total over the measured peak, per case

# %%
RULE_STYLE = {"estimator_peak": ("#4c72b0", "o"), "sum_of_terms": ("#55a868", "s"),
              "korthikanti": ("#dd8452", "^"), "bytes_per_param": ("#c44e52", "D")}


def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    cases = [c for c in summary["cases"].values() if c["predicted"]]
    fig, ax = plt.subplots(figsize=(7.4, max(2.8, 0.2 * len(cases) + 1.8)))
    if not cases:
        ax.text(0.5, 0.5, "no case with a prediction" if summary["ran"] else f"not run: {summary['reason']}",
                ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
        return fig
    ys = range(len(cases))
    for r, (color, marker) in RULE_STYLE.items():
        ax.scatter([c["rules"][r]["ratio"] for c in cases], list(ys), color=color, marker=marker, s=18,
                   label=summary["rules"][r]["label"], zorder=3)
    t = summary["targets"]
    ax.axvspan(1 - t["peak_below_ratio"], 1 + t["peak_above_ratio"], color="#4c72b0", alpha=0.12, lw=0,
               label="target for the estimator's peak")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(list(ys), [c["label"] for c in cases], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("predicted / measured peak of the step", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", lw=0.4, alpha=0.5)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=6, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(f"Each rule against the measured peak ({data['device']}, batch {data['batch']}, "
                 f"seq {data['seq']})", fontsize=9)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0.5 / height, 1, 1 - 0.1 / height))  # room for the legend below
    return fig

# %%
if __name__ == "__main__":
    import sys

    from experiments.lib.cli import main

    raise SystemExit(main(sys.modules[__name__]))
