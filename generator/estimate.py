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
from experiments.lib.model_shapes import BUILTIN, FAMILIES, ModelShape, ShapeError, builtin, load_config

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
    src.add_argument("--config", metavar="PATH", help="a Hugging Face config.json (GPT-2, BERT or Llama style)")
    src.add_argument("--params", metavar="N", help="parameter count only (e.g. 7e9); activations are not estimated")
    src.add_argument("--family", choices=FAMILIES, help="typed shape: the architecture family")
    pos = _int_arg("positive")
    nonneg = _int_arg("nonnegative")
    src.add_argument("--hidden", type=pos, help="typed shape: hidden size")
    src.add_argument("--layers", type=pos, help="typed shape: number of layers")
    src.add_argument("--heads", type=pos, help="typed shape: attention heads")
    src.add_argument("--kv-heads", type=nonneg, default=0, help="typed shape: key/value heads (default: heads)")
    src.add_argument("--intermediate", type=nonneg, default=0, help="typed shape: MLP width (default 4*hidden)")
    src.add_argument("--vocab", type=pos, help="typed shape: vocabulary size")
    src.add_argument("--positions", type=nonneg, default=0,
                     help="typed shape: learned positions (gpt2, bert; default: the sequence length)")
    src.add_argument("--untied", action="store_true",
                     help="typed shape: a separate output head (the default for llama; gpt2 ties it)")
    src.add_argument("--tied", action="store_true",
                     help="typed shape: the output head shares the input embedding (the default for gpt2, bert)")
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
    tied = {"gpt2": not args.untied, "bert": True, "llama": args.tied}[args.family]
    seq = args.seq or DEFAULT_SEQ
    return ModelShape(family=args.family, hidden=args.hidden, layers=args.layers, heads=args.heads,
                      kv_heads=args.kv_heads, intermediate=args.intermediate, vocab=args.vocab,
                      positions=args.positions or (seq if args.family != "llama" else 0),
                      type_vocab=2 if args.family == "bert" else 0,
                      tied_embeddings=tied,
                      dropout=args.family != "llama", name="custom"), None


def default_seq(shape: ModelShape | None) -> int:
    if shape is not None and shape.context:
        return min(DEFAULT_SEQ, shape.context)
    return DEFAULT_SEQ


def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"


def render_table(result: dict) -> str:
    s = result["setup"]
    name = result["model"] or "model"
    lines = [f"{name}: {result['parameters']:,} parameters; {s['optimizer']}, {s['precision']}, "
             f"batch {s['batch']} x seq {s['seq']}, checkpointing {s['checkpointing']}, "
             f"ZeRO-{s['zero']} over {s['gpus']} GPU{'s' if s['gpus'] > 1 else ''}", ""]
    width = max(len(f"{v:,}") for v in result["per_device_bytes"].values())
    lines.append(f"{'per device':<14}{'bytes':>{width}}  {'':>14}")
    for key in ("params", "grads", "optimizer", "activations", "total"):
        v = result["per_device_bytes"][key]
        label = {"params": "weights", "grads": "gradients", "optimizer": "optimizer"}.get(key, key)
        note = "  (not estimated: no shape)" if key == "activations" and not result["activations_estimated"] else ""
        if key == "total":
            lines.append("-" * (14 + width + 16))
        lines.append(f"{label:<14}{v:>{width},}  {_gib(v):>14}{note}")
    lines.append("")
    lines.append(f"{'card':<16}{'memory':>12}  {'fits':<5} source (decimal GB)")
    for f in result["fits"]:
        lines.append(f"{f['gpu']:<16}{_gib(f['capacity_bytes']):>12}  {'yes' if f['fits'] else 'no':<5} {f['source']}")
    lines.append("(the sum leaves out the CUDA context, allocator fragmentation and the step's temporaries)")
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
                                zero=args.zero, gpus=args.gpus)
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
