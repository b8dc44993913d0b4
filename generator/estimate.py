"""``handbook estimate``: per-device training memory of a model, and which cards it fits.

It imports no torch (the model is ``experiments.lib.estimator``, pure
Python), so it answers at once. Give the model as ``--model NAME`` (built-in
shapes), ``--config PATH`` (a Hugging Face ``config.json``), its shape
(``--family --hidden --layers --heads --vocab ...``) or just ``--params N``
(no activations then). Bad input gets one line naming it and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from generator.argv import attach_negative_values
from generator.errors import InputError, one_line

from experiments.lib import estimator
from experiments.lib.model_shapes import (BUILTIN, FAMILIES, MODEL_TYPES, TIED_DEFAULT, ModelShape, ShapeError,
                                          builtin, load_config)

DEFAULT_SEQ = 1024


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that names the argument."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _InputError(message)


class _InputError(InputError):
    pass


def _int_arg(kind: str):
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if kind == "positive" and value < 1:
            raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
        if kind == "nonnegative" and value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
        return value

    parse.__name__ = f"{kind} integer"
    return parse


def parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="handbook estimate",
        description="Estimate per-device training memory (weights, gradients, optimizer state, activations) "
                    "and the cards it fits. No torch needed.",
        epilog="Examples: 'handbook estimate --model llama-2-7b --optimizer adamw --precision bf16-mixed "
               "--batch 1 --seq 4096 --checkpointing full --zero 3 --gpus 8'; "
               "'handbook estimate --config path/to/config.json --json'; 'handbook estimate --params 7e9'.")
    src = p.add_argument_group("the model (one of)")
    src.add_argument("--model", metavar="NAME", help=f"built-in shape: {', '.join(BUILTIN)}")
    src.add_argument("--config", metavar="PATH",
                     help=f"a Hugging Face config.json (model_type {', '.join(MODEL_TYPES)})")
    src.add_argument("--params", metavar="N", help="parameter count only (e.g. 7e9); activations are not estimated")
    src.add_argument("--family", choices=FAMILIES,
                     help="typed shape: the architecture family (its layout: biases, norms, fused projections, "
                          "tying and dropout as the Hugging Face class has them)")
    pos = _int_arg("positive")
    nonneg = _int_arg("nonnegative")
    src.add_argument("--hidden", type=pos, help="typed shape: hidden size")
    src.add_argument("--layers", type=pos, help="typed shape: number of layers")
    src.add_argument("--heads", type=pos, help="typed shape: attention heads")
    src.add_argument("--kv-heads", type=nonneg, default=0, help="typed shape: key/value heads (default: heads)")
    src.add_argument("--intermediate", type=nonneg, default=0,
                     help="typed shape: MLP width (default 4*hidden for gpt2, bert; MoE: the dense layers' and "
                          "Mixtral's experts' width)")
    src.add_argument("--head-dim", type=nonneg, default=0,
                     help="typed shape: width of one attention head (default hidden/heads; Gemma and Qwen3 set it)")
    src.add_argument("--experts", type=nonneg, default=0,
                     help="typed shape, mixtral/qwen2_moe/qwen3_moe: routed experts per MoE layer")
    src.add_argument("--top-k", type=nonneg, default=0,
                     help="typed shape, MoE: experts each token is routed through")
    src.add_argument("--moe-intermediate", type=nonneg, default=0,
                     help="typed shape, qwen2_moe/qwen3_moe: each routed expert's MLP width")
    src.add_argument("--shared-intermediate", type=nonneg, default=0,
                     help="typed shape, qwen2_moe: the shared expert's MLP width (0: none wide)")
    src.add_argument("--vocab", type=pos, help="typed shape: vocabulary size")
    src.add_argument("--positions", type=nonneg, default=0,
                     help="typed shape: learned positions (gpt2, bert; default: the sequence length)")
    src.add_argument("--untied", action="store_true",
                     help="typed shape: a separate output head (the default for llama, qwen, phi3 and the MoE "
                          "families, as their config classes have it)")
    src.add_argument("--tied", action="store_true",
                     help="typed shape: the output head shares the input embedding (the default for gpt2, bert "
                          "and gemma)")
    run = p.add_argument_group("the training set-up")
    run.add_argument("--optimizer", default="adamw", help=f"{', '.join(estimator.OPTIMIZERS)} (default adamw)")
    run.add_argument("--precision", default="bf16-mixed",
                     help=f"{', '.join(estimator.PRECISIONS)} (default bf16-mixed)")
    run.add_argument("--batch", type=pos, default=1, help="micro-batch per device (default 1)")
    run.add_argument("--seq", type=pos, default=None,
                     help=f"sequence length (default {DEFAULT_SEQ}, or the model's context if shorter)")
    run.add_argument("--checkpointing", default="none", help="none, selective or full (default none)")
    run.add_argument("--zero", type=nonneg, default=0, help="ZeRO stage 0-3 (default 0: plain data parallel)")
    run.add_argument("--gpus", type=pos, default=1, help="data-parallel degree (default 1)")
    run.add_argument("--attention", default="sdpa",
                     help="sdpa (transformers' default: no s x s scores kept) or eager (default sdpa)")
    run.add_argument("--device", default="cuda",
                     help="the kind of device sized: cuda or cpu (dropout masks, autocast op lists; default cuda)")
    run.add_argument("--optimizer-impl", default="default",
                     help="for-loop, foreach or fused (default: torch's choice, foreach on cuda, for-loop on cpu)")
    run.add_argument("--context-mib", type=nonneg, default=None,
                     help="the CUDA context beside the peak, in MiB, as measured on your GPU "
                          "(the hardware page shows it; default: 781 MiB, pytorch/pytorch issue #34323; 0 on cpu)")
    run.add_argument("--keep-grads", action="store_true",
                     help="zero_grad(set_to_none=False): gradients stay allocated between steps")
    par = p.add_argument_group("beyond data parallel (per rank: the most loaded one)")
    par.add_argument("--tp", type=pos, default=1, help="tensor-parallel degree (default 1)")
    par.add_argument("--sequence-parallel", action="store_true",
                     help="with --tp: norms and dropouts split along the sequence too (Korthikanti et al. 2022)")
    par.add_argument("--pp", type=pos, default=1, help="pipeline stages (default 1)")
    par.add_argument("--microbatches", type=pos, default=1,
                     help="micro-batches a step (gradient accumulation, or a pipeline's); --batch is one (default 1)")
    par.add_argument("--schedule", default="1f1b", help="pipeline schedule: 1f1b, interleaved or gpipe (default 1f1b)")
    par.add_argument("--virtual-stages", type=pos, default=1,
                     help="model chunks per stage under the interleaved schedule (default 1)")
    par.add_argument("--cp", type=pos, default=1, help="context-parallel degree: the sequence split (default 1)")
    par.add_argument("--ep", type=pos, default=1, help="expert-parallel degree, MoE models (default 1)")
    ft = p.add_argument_group("fine-tuning and offload")
    ft.add_argument("--lora-rank", type=nonneg, default=0, help="LoRA rank r; the base is frozen (default 0: full)")
    ft.add_argument("--lora-targets", default="q_proj,v_proj",
                    help="comma-separated module names, as PEFT's target_modules (default q_proj,v_proj)")
    ft.add_argument("--base-quant", default="none", help="the frozen base under LoRA: none or nf4 (QLoRA)")
    ft.add_argument("--offload", default="",
                    help="comma-separated: optimizer, parameters, activations (kept in host memory)")
    ft.add_argument("--pcie-gb-s", type=float, default=estimator.PCIE_GB_S,
                    help=f"host-device bandwidth for the offload time, GB/s (default {estimator.PCIE_GB_S}: "
                         f"{estimator.PCIE_SOURCE})")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--list-models", action="store_true", help="list the built-in shapes and exit")
    return p


def _parse_params(text: str) -> int:
    shown = text if len(text) <= 40 else text[:37] + "..."
    try:
        value = float(text) if any(c in text.lower() for c in ".e") else int(text.replace("_", ""))
    except ValueError:
        raise _InputError(f"argument --params: {shown!r} is not a number") from None
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)) or value < 1:
        raise _InputError(f"argument --params: must be a positive whole number, not {shown}")
    if value > estimator.MAX_PARAMS:
        raise _InputError(f"argument --params: {shown} is beyond any model (at most {estimator.MAX_PARAMS:.0e})")
    return int(value)


def resolve(args: argparse.Namespace) -> tuple[ModelShape | None, int | None]:
    typed = args.family or args.hidden or args.layers or args.heads or args.vocab
    given = [name for name, v in (("--model", args.model), ("--config", args.config),
                                  ("--params", args.params), ("--family/--hidden/...", typed)) if v]
    if len(given) != 1:
        raise _InputError("give exactly one of --model, --config, --params or a typed shape "
                          f"(--family --hidden --layers --heads --vocab); got {', '.join(given) or 'none'}")
    extras = [f"--{k.replace('_', '-')}" for k in ("head_dim", "experts", "top_k", "moe_intermediate",
                                                  "shared_intermediate") if getattr(args, k)]
    if extras and not typed:
        raise _InputError(f"{extras[0]} belongs to a typed shape (--family --hidden ...), not to {given[0]}")
    if args.model:
        return builtin(args.model), None
    if args.config:
        return load_config(args.config), None
    if args.params:
        return None, _parse_params(args.params)
    missing = [f"--{k}" for k in ("family", "hidden", "layers", "heads", "vocab") if getattr(args, k) is None]
    if missing:
        raise _InputError(f"a typed shape needs {', '.join(missing)}")
    if args.tied and args.untied:
        raise _InputError("give --tied or --untied, not both")
    # Tying as each config class defaults it (TIED_DEFAULT: gpt2, bert, gemma tie); the flags override.
    tied = True if args.family == "bert" else (
        not args.untied if TIED_DEFAULT.get(args.family, False) else args.tied)
    seq = args.seq or DEFAULT_SEQ
    learned = args.family in ("gpt2", "bert")
    return ModelShape(family=args.family, hidden=args.hidden, layers=args.layers, heads=args.heads,
                      kv_heads=args.kv_heads, intermediate=args.intermediate, vocab=args.vocab,
                      head_dim=args.head_dim, positions=args.positions or (seq if learned else 0),
                      type_vocab=2 if args.family == "bert" else 0,
                      tied_embeddings=tied, dropout=learned, experts=args.experts, top_k=args.top_k,
                      moe_intermediate=args.moe_intermediate, shared_intermediate=args.shared_intermediate,
                      name="custom"), None


def default_seq(shape: ModelShape | None) -> int:
    if shape is not None and shape.context:
        return min(DEFAULT_SEQ, shape.context)
    return DEFAULT_SEQ


def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"


PHASE_TERMS = {"params": "weights", "grads": "gradients", "optimizer": "optimizer state",
               "master_grads": "fp32 gradient copies", "cast_weights": "autocast cast weights",
               "activations": "saved activations", "logits": "logits", "loss_temporaries": "loss temporaries",
               "working_set": "layer backward working set", "temporaries": "step temporaries",
               "ddp_buckets": "DDP gradient buckets", "gathered_params": "gathered units (ZeRO-3)",
               "reduce_buffers": "reduce-scatter buffers", "gathered_units": "gathered units (offload)"}


def render_table(result: dict) -> str:
    s = result["setup"]
    name = result["model"] or "model"
    lines = [f"{name}: {result['parameters']:,} parameters; {s['optimizer']} ({s['optimizer_impl_used']}), "
             f"{s['precision']}, batch {s['batch']} x seq {s['seq']}, checkpointing {s['checkpointing']}, "
             f"{s['attention']} attention, ZeRO-{s['zero']} over {s['gpus']} GPU{'s' if s['gpus'] > 1 else ''}, "
             f"sized for {s['device']}", ""]
    rank = result.get("rank")
    if rank:
        lines[-1:-1] = [f"per rank: tensor parallel {s['tp']}{' + sequence parallel' if s['sequence_parallel'] else ''}, "
                        f"pipeline {s['pp']} ({s['schedule']}, {s['microbatches']} micro-batches), context parallel "
                        f"{s['cp']}, expert parallel {s['ep']}: stage {rank['stage']} with {rank['stage_layers']} "
                        f"layers, {rank['parameters_held']:,} parameters held"
                        + (f"; LoRA r={s['lora_rank']} on {', '.join(s['lora_targets'])}"
                           f"{' over an NF4 base' if s['base_quant'] == 'nf4' else ''}: "
                           f"{result['trainable_parameters']:,} trainable" if s["lora_rank"] else "")]
    width = max(len(f"{v:,}") for v in (*result["per_device_bytes"].values(), result["peak_bytes"]))
    lines.append(f"{'persistent, per device':<26}{'bytes':>{width}}  {'':>14}")
    for key in ("params", "grads", "optimizer", "activations", "total"):
        v = result["per_device_bytes"][key]
        label = {"params": "weights", "grads": "gradients", "optimizer": "optimizer state",
                 "total": "sum of the terms"}.get(key, key)
        note = "  (not estimated: no shape)" if key == "activations" and not result["activations_estimated"] else ""
        if key == "total":
            lines.append("-" * (26 + width + 16))
        lines.append(f"{label:<26}{v:>{width},}  {_gib(v):>14}{note}")
    lines.append("")
    lines.append("live bytes by phase of one step:")
    for key, ph in result["phases"].items():
        mark = "  <- peak" if key == result["peak_phase"] else ""
        lines.append(f"  {ph['label']:<40}{_gib(ph['total_bytes']):>14}{mark}")
        terms = [f"{PHASE_TERMS[t]} {_gib(v)}" for t, v in ph["terms_bytes"].items() if v]
        lines.append(f"    {'; '.join(terms)}")
    lines.append(f"{'peak':<26}{result['peak_bytes']:>{width},}  {_gib(result['peak_bytes']):>14}  "
                 f"({result['phases'][result['peak_phase']]['label']})")
    if result["headroom_source"]:
        lines.append(f"{'+ CUDA context':<26}{result['headroom_bytes']:>{width},}  {_gib(result['headroom_bytes']):>14}"
                     f"  ({result['headroom_source']})")
    off = result.get("offload")
    if off:
        lines.append(f"offloaded ({', '.join(off['parts'])}): {_gib(off['host_bytes'])} in host memory "
                     f"({_gib(off['pinned_host_bytes'])} pinned); {_gib(off['transfer_bytes_per_step'])} moved a step, "
                     f"{off['transfer_seconds_per_step']:.3f} s at {off['pcie_gb_s']} GB/s ({off['bandwidth_source']}; "
                     f"not overlapped)")
    for note in result["notes"]:
        lines.append(f"note: {note}")
    lines.append("")
    lines.append(f"{'card':<16}{'memory':>12}  {'verdict':<13} dtypes, source of the total (nvidia-smi)")
    for f in result["fits"]:
        lines.append(f"{f['gpu']:<16}{_gib(f['capacity_bytes']):>12}  {f['verdict']:<13} "
                     f"{'/'.join(f['dtypes'])}; {f['source']}")
    lines.append(f"(the peak leaves out {', '.join(result['leaves_out'])})")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    try:
        p = parser()
        args = p.parse_args(attach_negative_values(p, argv))
        if args.list_models:
            return _emit("\n".join(f"{key:<12} {m.family:<6} hidden {m.hidden}, layers {m.layers}, heads {m.heads}"
                                   f"/{m.n_kv_heads} kv, vocab {m.vocab}  [{m.source}]" for key, m in BUILTIN.items()))
        shape, params = resolve(args)
        setup = estimator.Setup(optimizer=args.optimizer, precision=args.precision, batch=args.batch,
                                seq=args.seq or default_seq(shape), checkpointing=args.checkpointing,
                                zero=args.zero, gpus=args.gpus, attention=args.attention, device=args.device,
                                optimizer_impl=args.optimizer_impl, set_to_none=not args.keep_grads,
                                context_bytes=None if args.context_mib is None else args.context_mib * 2**20,
                                tp=args.tp, sequence_parallel=args.sequence_parallel, pp=args.pp,
                                microbatches=args.microbatches, schedule=args.schedule,
                                virtual_stages=args.virtual_stages, cp=args.cp, ep=args.ep,
                                lora_rank=args.lora_rank, base_quant=args.base_quant,
                                lora_targets=tuple(x.strip() for x in args.lora_targets.split(",") if x.strip()),
                                offload=tuple(x.strip() for x in args.offload.split(",") if x.strip()),
                                pcie_gb_s=args.pcie_gb_s)
        result = estimator.estimate(setup, shape=shape, params=params)
    except (_InputError, ShapeError, estimator.EstimateError) as exc:
        print(f"handbook estimate: error: {one_line(exc)}", file=sys.stderr)
        return 2
    return _emit(json.dumps(result, indent=1) if args.json else render_table(result))


def _emit(text: str) -> int:
    """Print the answer; a reader that stops early (`handbook estimate ... | head`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
