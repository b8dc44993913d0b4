"""The calculator page in headless Chromium: it must give exactly what ``handbook estimate`` gives.

A mini site holds the calculator page and its script, and no result at all: the page reads the shapes,
precisions and card capacities from the estimator at build time (``estimator.calculator_inputs``), so it
works before anything was measured. The Python estimator generates the test vectors; Playwright fills the
form for each and reads every number back.
"""
from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import pytest

from conftest import REPO, build_site
from experiments.lib import estimator
from experiments.lib.model_shapes import BUILTIN, GEMMA_NORM_FAMILIES, MOE_FAMILIES, TIED_DEFAULT, ModelShape
from generator.estimate import main as estimate_main

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")

# (model or typed shape, set-up): every built-in, every optimizer, precision layout, checkpointing, ZeRO stage,
# attention, device kind and optimizer implementation, zero_grad both ways, and every field beyond data parallel
# (tensor, sequence, pipeline, context and expert parallelism), of fine-tuning (LoRA, QLoRA) and of offload.
# The set-ups give every field as the CLI takes it (pcie_gb_s None: the CLI's default, the form's field empty).
D = dict(attention="sdpa", device="cuda", optimizer_impl="default", set_to_none=True, context_mib=None, tp=1,
         sequence_parallel=False, pp=1, microbatches=1, schedule="1f1b", virtual_stages=1, cp=1, ep=1, lora_rank=0,
         lora_targets="q_proj,v_proj", base_quant="none", offload="", pcie_gb_s=None)
VECTORS = [
    ("bert-base", dict(optimizer="adamw", precision="fp32", batch=8, seq=512, checkpointing="none", zero=0, gpus=1,
                       **{**D, "attention": "eager"})),
    ("gpt2-xl", dict(optimizer="sgd", precision="bf16", batch=4, seq=1024, checkpointing="selective", zero=1, gpus=2,
                     **{**D, "attention": "eager", "device": "cpu"})),
    ("gpt2-xl", dict(optimizer="adafactor", precision="fp16-mixed", batch=1, seq=777, checkpointing="full", zero=0,
                     gpus=1, **{**D, "attention": "eager", "optimizer_impl": "for-loop"})),
    ("llama-2-7b", dict(optimizer="adamw", precision="bf16-mixed", batch=1, seq=4096, checkpointing="full", zero=3,
                        gpus=8, **D)),
    ("llama-2-70b", dict(optimizer="adamw-8bit", precision="bf16", batch=2, seq=4096, checkpointing="selective",
                         zero=2, gpus=64, **{**D, "set_to_none": False})),
    ("llama-3-8b", dict(optimizer="adam-amsgrad", precision="fp32", batch=3, seq=8192, checkpointing="none", zero=1,
                        gpus=7, **{**D, "optimizer_impl": "fused"})),
    ("llama-3-8b", dict(optimizer="sgd-momentum", precision="bf16-master", batch=16, seq=2048, checkpointing="full",
                        zero=3, gpus=3, **{**D, "optimizer_impl": "foreach"})),
    ("llama-2-7b", dict(optimizer="adamw", precision="fsdp2-bf16", batch=2, seq=2048, checkpointing="none", zero=3,
                        gpus=16, **{**D, "attention": "eager"})),
    ({"family": "llama", "hidden": 512, "layers": 6, "heads": 8, "kv_heads": 2, "intermediate": 1376, "vocab": 32000,
      "untied": True},
     dict(optimizer="adam", precision="fp16-master", batch=4, seq=1024, checkpointing="none", zero=1, gpus=4,
          **{**D, "device": "cpu", "set_to_none": False})),
    ({"family": "gpt2", "hidden": 256, "layers": 4, "heads": 4, "kv_heads": 0, "intermediate": 0, "vocab": 5000,
      "untied": False},
     dict(optimizer="adafactor", precision="bf16-mixed", batch=2, seq=300, checkpointing="selective", zero=2, gpus=4,
          **{**D, "attention": "eager", "device": "cpu"})),
    ({"family": "bert", "hidden": 128, "layers": 2, "heads": 2, "kv_heads": 0, "intermediate": 300, "vocab": 999,
      "untied": False},
     dict(optimizer="adamw-8bit", precision="fp16-mixed", batch=5, seq=64, checkpointing="full", zero=1, gpus=2,
          **{**D, "context_mib": 517})),
    # the other families' typed shapes (--head-dim and the MoE fields): Qwen3-0.6B's layer shape (tied, q/k norms),
    # Gemma 2 (extra norms, soft-capping, eager), a Qwen2-MoE with a shared expert and a small Mixtral
    ({"family": "qwen3", "hidden": 1024, "layers": 4, "heads": 16, "kv_heads": 8, "intermediate": 3072,
      "vocab": 151936, "head_dim": 128, "untied": False},
     dict(optimizer="adamw", precision="bf16-mixed", batch=2, seq=2048, checkpointing="none", zero=0, gpus=1, **D)),
    ({"family": "gemma2", "hidden": 2304, "layers": 3, "heads": 8, "kv_heads": 4, "intermediate": 9216,
      "vocab": 256000, "head_dim": 256, "untied": False},
     dict(optimizer="adamw", precision="bf16-mixed", batch=1, seq=1024, checkpointing="selective", zero=0, gpus=1,
          **{**D, "attention": "eager"})),
    ({"family": "qwen2_moe", "hidden": 512, "layers": 3, "heads": 8, "kv_heads": 8, "intermediate": 1408,
      "vocab": 32000, "experts": 16, "top_k": 4, "moe_intermediate": 256, "shared_intermediate": 1024,
      "untied": True},
     dict(optimizer="adamw", precision="fp32", batch=4, seq=512, checkpointing="none", zero=2, gpus=2, **D)),
    ({"family": "mixtral", "hidden": 1024, "layers": 2, "heads": 8, "kv_heads": 2, "intermediate": 3584,
      "vocab": 32000, "experts": 8, "top_k": 2, "untied": True},
     dict(optimizer="adamw", precision="bf16-master", batch=2, seq=1024, checkpointing="full", zero=0, gpus=1, **D)),
    # the activations by dtype (autocast's fp32 residual stream and per-Linear casts, the norms' internals, fp32
    # eager softmax, SDPA's math path, experts outside autocast, the rebuilt layer at backward's end):
    # CPU autocast, eager GPT-2 under full checkpointing (the positional causal mask checkpoint keeps)
    ("gpt2-xl", dict(optimizer="adamw", precision="bf16-mixed", batch=2, seq=256, checkpointing="full", zero=0,
                     gpus=1, **{**D, "attention": "eager", "device": "cpu"})),
    # SDPA on a CPU with dropout: the math path, from 16-bit inputs (fp32 copies) and in fp32
    ({"family": "gpt2", "hidden": 256, "layers": 3, "heads": 4, "kv_heads": 0, "intermediate": 0, "vocab": 5000,
      "untied": False},
     dict(optimizer="adamw", precision="bf16-mixed", batch=2, seq=128, checkpointing="none", zero=0, gpus=1,
          **{**D, "device": "cpu"})),
    ("bert-base", dict(optimizer="adam", precision="fp32", batch=2, seq=128, checkpointing="selective", zero=0,
                       gpus=1, **{**D, "device": "cpu"})),
    # a Mixtral under autocast with checkpointing (its experts neither cast nor cached), full and selective; the
    # first at backward's start past the loss (the rebuilt layer's casts, the experts' gradients in the working set)
    ({"family": "mixtral", "hidden": 512, "layers": 2, "heads": 8, "kv_heads": 2, "intermediate": 1792,
      "vocab": 4096, "experts": 8, "top_k": 2, "untied": True},
     dict(optimizer="adamw", precision="bf16-mixed", batch=8, seq=2048, checkpointing="full", zero=0, gpus=1, **D)),
    ({"family": "mixtral", "hidden": 512, "layers": 3, "heads": 8, "kv_heads": 2, "intermediate": 1792,
      "vocab": 32000, "experts": 8, "top_k": 2, "untied": True},
     dict(optimizer="adamw", precision="fp16-mixed", batch=2, seq=512, checkpointing="selective", zero=3, gpus=2,
          **{**D, "attention": "eager"})),
    # Gemma 2 with a bf16 master copy (GemmaRMSNorm in fp32, no autocast), and under autocast on a CPU
    ({"family": "gemma2", "hidden": 2304, "layers": 2, "heads": 8, "kv_heads": 4, "intermediate": 9216,
      "vocab": 256000, "head_dim": 256, "untied": False},
     dict(optimizer="adamw", precision="bf16-master", batch=1, seq=2048, checkpointing="full", zero=1, gpus=2,
          **{**D, "attention": "eager"})),
    ({"family": "gemma2", "hidden": 2304, "layers": 2, "heads": 8, "kv_heads": 4, "intermediate": 9216,
      "vocab": 256000, "head_dim": 256, "untied": False},
     dict(optimizer="adamw", precision="bf16-mixed", batch=1, seq=512, checkpointing="none", zero=0, gpus=1,
          **{**D, "attention": "eager", "device": "cpu"})),
    # autocast on the other layouts: Qwen2-MoE's shared expert reads the norm (four casts), Gemma 3's q/k norms,
    # Phi-3's fused projections
    ({"family": "qwen2_moe", "hidden": 512, "layers": 2, "heads": 8, "kv_heads": 8, "intermediate": 1408,
      "vocab": 32000, "experts": 16, "top_k": 4, "moe_intermediate": 256, "shared_intermediate": 1024,
      "untied": True},
     dict(optimizer="adamw", precision="bf16-mixed", batch=2, seq=512, checkpointing="full", zero=2, gpus=2, **D)),
    ({"family": "gemma3", "hidden": 640, "layers": 3, "heads": 4, "kv_heads": 1, "intermediate": 2048,
      "vocab": 262144, "head_dim": 256, "untied": False},
     dict(optimizer="adamw", precision="bf16-mixed", batch=2, seq=1024, checkpointing="selective", zero=0, gpus=1,
          **D)),
    ({"family": "phi3", "hidden": 768, "layers": 2, "heads": 12, "kv_heads": 4, "intermediate": 2048,
      "vocab": 32064, "untied": True},
     dict(optimizer="adamw", precision="bf16-mixed", batch=2, seq=1024, checkpointing="full", zero=0, gpus=1, **D)),
    # beyond data parallel: tensor (+ sequence) parallel, pipelines under both schedules, context and expert parallel
    ("llama-2-7b", dict(optimizer="adamw", precision="bf16-mixed", batch=1, seq=4096, checkpointing="full", zero=1,
                        gpus=4, **{**D, "tp": 2, "sequence_parallel": True})),
    ("llama-3-8b", dict(optimizer="adamw", precision="bf16-master", batch=2, seq=2048, checkpointing="selective",
                        zero=0, gpus=2, **{**D, "tp": 4, "pp": 4, "microbatches": 8})),
    ({"family": "llama", "hidden": 512, "layers": 8, "heads": 8, "kv_heads": 4, "intermediate": 1376, "vocab": 32000,
      "untied": True},
     dict(optimizer="adam", precision="fp16-mixed", batch=4, seq=1024, checkpointing="none", zero=2, gpus=2,
          **{**D, "pp": 2, "microbatches": 4, "schedule": "interleaved", "virtual_stages": 2, "cp": 2})),
    ("gpt2-xl", dict(optimizer="adamw", precision="bf16-mixed", batch=2, seq=1024, checkpointing="none", zero=0,
                     gpus=1, **{**D, "cp": 4, "offload": "activations", "pcie_gb_s": 12.5})),
    ({"family": "mixtral", "hidden": 512, "layers": 4, "heads": 8, "kv_heads": 2, "intermediate": 1792,
      "vocab": 32000, "experts": 8, "top_k": 2, "untied": True},
     dict(optimizer="adamw", precision="bf16-mixed", batch=2, seq=1024, checkpointing="full", zero=3, gpus=2,
          **{**D, "tp": 2, "ep": 4, "offload": "parameters"})),
    ({"family": "qwen2_moe", "hidden": 512, "layers": 2, "heads": 8, "kv_heads": 8, "intermediate": 1408,
      "vocab": 32000, "experts": 16, "top_k": 4, "moe_intermediate": 256, "shared_intermediate": 1024,
      "untied": True},
     dict(optimizer="adamw", precision="fp32", batch=2, seq=512, checkpointing="selective", zero=1, gpus=2,
          **{**D, "tp": 2, "sequence_parallel": True, "ep": 2, "offload": "optimizer,activations"})),
    # GPipe (every micro-batch in flight), a pipeline whose last stage peaks (the head, logits and loss) under 1F1B
    # and the interleaved schedule, gradient accumulation without a pipeline
    ("llama-2-7b", dict(optimizer="adamw", precision="bf16-mixed", batch=1, seq=2048, checkpointing="none", zero=0,
                        gpus=1, **{**D, "pp": 4, "microbatches": 8, "schedule": "gpipe"})),
    ({"family": "qwen3", "hidden": 1024, "layers": 4, "heads": 16, "kv_heads": 8, "intermediate": 3072,
      "vocab": 151936, "head_dim": 128, "untied": False},
     dict(optimizer="adamw", precision="bf16-mixed", batch=2, seq=2048, checkpointing="full", zero=0, gpus=1,
          **{**D, "pp": 2, "microbatches": 2})),
    ({"family": "qwen3", "hidden": 1024, "layers": 4, "heads": 16, "kv_heads": 8, "intermediate": 3072,
      "vocab": 151936, "head_dim": 128, "untied": False},
     dict(optimizer="adamw", precision="bf16-mixed", batch=2, seq=2048, checkpointing="none", zero=1, gpus=2,
          **{**D, "pp": 2, "microbatches": 2, "schedule": "interleaved", "virtual_stages": 2, "tp": 2})),
    ("llama-3-8b", dict(optimizer="adamw", precision="bf16-mixed", batch=1, seq=4096, checkpointing="selective",
                        zero=2, gpus=8, **{**D, "microbatches": 4})),
    # GPipe where the first stage peaks (ten layers over four stages: 3, 3, 3, 1)
    ({"family": "llama", "hidden": 512, "layers": 10, "heads": 8, "kv_heads": 4, "intermediate": 1376, "vocab": 8000,
      "untied": True},
     dict(optimizer="adamw", precision="bf16-mixed", batch=4, seq=1024, checkpointing="none", zero=0, gpus=1,
          **{**D, "pp": 4, "microbatches": 8, "schedule": "gpipe"})),
    # fine-tuning: LoRA under autocast, QLoRA's NF4 base in pure bf16 (the fp32 copy of A's input), GPT-2's Conv1D
    # targets split by tensor parallel over two stages, BERT's and Phi-3's module names
    ("llama-2-7b", dict(optimizer="adamw", precision="bf16-mixed", batch=4, seq=2048, checkpointing="none", zero=0,
                        gpus=1, **{**D, "lora_rank": 16, "lora_targets": "q_proj,k_proj,v_proj,o_proj"})),
    ("llama-2-70b", dict(optimizer="adamw", precision="bf16", batch=1, seq=4096, checkpointing="full", zero=0,
                         gpus=1, **{**D, "lora_rank": 64, "base_quant": "nf4",
                                    "lora_targets": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"})),
    # (an odd vocabulary: the tied Conv1D-layout embedding splits by rows; fewer micro-batches than stages)
    ({"family": "gpt2", "hidden": 256, "layers": 4, "heads": 4, "kv_heads": 0, "intermediate": 0, "vocab": 5001,
      "untied": False},
     dict(optimizer="adamw", precision="fp32", batch=2, seq=256, checkpointing="none", zero=0, gpus=1,
          **{**D, "tp": 2, "pp": 2, "microbatches": 1, "lora_rank": 8, "lora_targets": "c_attn,c_fc"})),
    ("bert-base", dict(optimizer="adamw", precision="fp16-mixed", batch=8, seq=512, checkpointing="none", zero=0,
                       gpus=1, **{**D, "lora_rank": 8, "lora_targets": "query,value", "offload": "optimizer"})),
    # LoRA's default targets under eager attention (the attention output dropped with o_proj frozen), and under
    # tensor + sequence parallel (the first layer's frozen norm split along the sequence)
    ({"family": "llama", "hidden": 512, "layers": 4, "heads": 8, "kv_heads": 4, "intermediate": 1376,
      "vocab": 32000, "untied": True},
     dict(optimizer="adamw", precision="fp16-mixed", batch=2, seq=1024, checkpointing="none", zero=0, gpus=1,
          **{**D, "attention": "eager", "lora_rank": 16})),
    ("llama-3-8b", dict(optimizer="adamw", precision="bf16-mixed", batch=1, seq=8192, checkpointing="selective",
                        zero=0, gpus=1, **{**D, "tp": 4, "sequence_parallel": True, "lora_rank": 32,
                                           "lora_targets": "q_proj,k_proj,v_proj,o_proj,down_proj"})),
    ({"family": "phi3", "hidden": 768, "layers": 2, "heads": 12, "kv_heads": 4, "intermediate": 2048,
      "vocab": 32064, "untied": True},
     dict(optimizer="sgd", precision="bf16-mixed", batch=2, seq=1024, checkpointing="full", zero=0, gpus=1,
          **{**D, "tp": 2, "lora_rank": 4, "lora_targets": "qkv_proj,gate_up_proj", "base_quant": "nf4"})),
]
SHAPE_EXTRAS = ("head_dim", "experts", "top_k", "moe_intermediate", "shared_intermediate")  # 0 when left out
OPTIONS = ("optimizer", "precision", "checkpointing", "zero", "attention", "device", "optimizer_impl", "schedule",
           "base_quant")
FLAGS = {"set_to_none": ("--keep-grads", False), "sequence_parallel": ("--sequence-parallel", True)}


def cli_argv(model, setup: dict) -> list[str]:
    argv = ["--json"] + [x for k, v in setup.items() if k not in FLAGS and v is not None
                         for x in (f"--{k.replace('_', '-')}", str(v))]
    argv += [flag for k, (flag, when) in FLAGS.items() if setup[k] == when]
    if isinstance(model, str):
        return argv + ["--model", model]
    argv += ["--family", model["family"]]
    for key in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab"):
        argv += [f"--{key.replace('_', '-')}", str(model[key])]
    for key in SHAPE_EXTRAS:
        argv += [f"--{key.replace('_', '-')}", str(model.get(key, 0))]
    # the form's box is "a separate output head"; the CLI's default follows the family (TIED_DEFAULT)
    return argv + (["--untied"] if model["untied"] else [] if model["family"] in TIED_DEFAULT else ["--tied"])


def cli(argv: list[str], capsys) -> dict:
    assert estimate_main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is not installed at /usr/bin/chromium ('make setup' installs it)")
    root = tmp_path_factory.mktemp("calculator")
    (root / "results").mkdir()
    docs = {"index.md": "# Mini\n", "calculator.md": (REPO / "docs" / "calculator.md").read_text(encoding="utf-8"),
            "07-will-it-fit.md": "# Will it fit?\n", "08-named-models.md": "# Named models\n"}
    out = root / "out"
    (out / "docs" / "assets").mkdir(parents=True)
    shutil.copy(REPO / "docs" / "assets" / "calculator.js", out / "docs" / "assets" / "calculator.js")
    proc = build_site(out, root / "results", docs=docs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "site"


@pytest.fixture(scope="module")
def page(site: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:  # a closed connection is not a failure
            pass

    http.server.SimpleHTTPRequestHandler.log_message = lambda *a, **k: None
    server = Quiet(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    errors, outside = [], []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page()
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("request", lambda r: outside.append(r.url) if not r.url.startswith(base) and
              not r.url.startswith("data:") else None)
        pg.goto(f"{base}/calculator/")
        try:
            pg.wait_for_selector("#hb-calc[data-ready=true]", timeout=10_000)
        except playwright_api.TimeoutError:
            pytest.fail(f"the calculator never became ready: {errors}")
        yield pg, errors, outside
        browser.close()
    server.shutdown()


FILL = """([steps]) => {
    // each step: field values to set, then the element whose change event fires (the form's own handlers run)
    for (const [values, fire] of steps) {
        for (const [id, v] of Object.entries(values)) {
            const el = document.getElementById(id);
            if (!el) throw new Error(`no field #${id}`);
            if (el.type === 'checkbox') { el.checked = v; continue; }
            if (el.tagName === 'SELECT' && ![...el.options].some((o) => o.value === v)) {
                throw new Error(`#${id} has no option ${v}`);
            }
            el.value = v;
        }
        document.getElementById(fire).dispatchEvent(new Event('change', { bubbles: true }));
    }
}"""


def fill(pg, model, setup: dict) -> None:
    """Set every field, firing the form's change handlers as a reader's edits would: the model first (a built-in
    fills the shape and the sequence), the family next (its tying default), then the rest, computed once."""
    steps = [({"hb-model": model if isinstance(model, str) else "custom"}, "hb-model")]
    if not isinstance(model, str):
        steps.append(({"hb-family": model["family"]}, "hb-family"))
        shape = {f"hb-{k.replace('_', '-')}": str(model[k]) for k in ("hidden", "layers", "heads", "kv_heads",
                                                                        "intermediate", "vocab")}
        shape.update({f"hb-{k.replace('_', '-')}": str(model.get(k, 0)) for k in SHAPE_EXTRAS})
        steps.append(({**shape, "hb-positions": "0", "hb-untied": model["untied"]}, "hb-calc"))
    values = {f"hb-{k}": str(setup[k]) for k in ("optimizer", "precision", "checkpointing", "zero", "attention",
                                                 "device", "batch", "seq", "gpus")}
    values.update({"hb-impl": setup["optimizer_impl"], "hb-keep-grads": not setup["set_to_none"],
                   "hb-context": "" if setup["context_mib"] is None else str(setup["context_mib"])})
    values.update({f"hb-{k.replace('_', '-')}": str(setup[k]) for k in ("tp", "pp", "microbatches", "schedule",
                                                                        "virtual_stages", "cp", "ep", "lora_rank",
                                                                        "lora_targets", "base_quant")})
    values.update({f"hb-offload-{part}": part in setup["offload"].split(",") for part in estimator.OFFLOAD})
    values.update({"hb-sequence-parallel": setup["sequence_parallel"],
                   "hb-pcie": "" if setup["pcie_gb_s"] is None else str(setup["pcie_gb_s"])})
    steps.append((values, "hb-calc"))
    pg.evaluate(FILL, [steps])


def read(pg) -> dict:
    return pg.evaluate("""() => ({
        parameters: document.getElementById('hb-parameters').dataset.value,
        trainable: document.getElementById('hb-trainable').dataset.value,
        rank: JSON.parse(document.getElementById('hb-out-rank').dataset.json),
        offload: JSON.parse(document.getElementById('hb-out-offload').dataset.json),
        per: Object.fromEntries(['params', 'grads', 'optimizer', 'activations', 'total'].map(
            k => [k, document.getElementById('hb-out-' + k).dataset.bytes])),
        fits: [...document.querySelectorAll('#hb-fits li')].map(li => [li.dataset.gpu, li.dataset.fits === 'true',
                                                                      li.dataset.verdict]),
        peak: document.getElementById('hb-out-peak').dataset.bytes,
        phase: document.getElementById('hb-out-peak').dataset.phase,
        phases: Object.fromEntries(['forward', 'backward', 'optimizer', 'between_steps'].map(
            k => [k, document.getElementById('hb-phase-' + k).dataset.bytes])),
        terms: Object.fromEntries(['forward', 'backward', 'optimizer', 'between_steps'].map(
            k => [k, JSON.parse(document.getElementById('hb-phase-' + k).dataset.terms)])),
        point: document.getElementById('hb-backward-point').textContent,
        cast_saved: document.getElementById('hb-phase-backward').dataset.castSaved,
        activation_terms: JSON.parse(document.getElementById('hb-out-activations').dataset.terms),
        headroom: document.getElementById('hb-out-headroom').dataset.bytes,
        notes: JSON.parse(document.getElementById('hb-note').dataset.json),
        error: document.getElementById('hb-error').hidden ? '' : document.getElementById('hb-error').textContent,
    })""")


def exact(value):
    """The page's numbers as Python has them: BigInts travel as decimal strings."""
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [exact(v) for v in value]
    return int(value) if isinstance(value, str) and re.fullmatch(r"-?\d+", value) else value


@pytest.mark.parametrize("i", range(len(VECTORS)))
def test_calculator_equals_cli(page, capsys, i: int) -> None:
    pg, errors, outside = page
    model, setup = VECTORS[i]
    want = cli(cli_argv(model, setup), capsys)
    fill(pg, model, setup)
    got = read(pg)
    assert got["error"] == ""
    assert int(got["parameters"]) == want["parameters"]
    assert {k: int(v) for k, v in got["per"].items()} == want["per_device_bytes"]
    assert got["fits"] == [[f["gpu"], f["fits"], f["verdict"]] for f in want["fits"]]
    assert int(got["peak"]) == want["peak_bytes"] and got["phase"] == want["peak_phase"]
    assert {k: int(v) for k, v in got["phases"].items()} == {k: v["total_bytes"] for k, v in want["phases"].items()}
    assert {k: {t: int(x) for t, x in v.items()} for k, v in got["terms"].items()} == \
        {k: v["terms_bytes"] for k, v in want["phases"].items()}
    assert f"worst point of backward ({got['point']})" == want["phases"]["backward"]["label"]
    assert int(got["cast_saved"]) == want["phases"]["backward"]["cast_saved_bytes"]
    assert exact(got["activation_terms"]) == want["activation_terms_bytes"]
    assert int(got["trainable"]) == want["trainable_parameters"]
    assert exact(got["rank"]) == want["rank"] and exact(got["offload"]) == want["offload"]
    assert got["notes"] == want["notes"]
    assert int(got["headroom"]) == want["headroom_bytes"]
    assert not errors and not outside


# Shapes the form cannot type, read from a config: GPT-2's gelu_new (transformers' unfused GELU, its positional
# causal mask under checkpointing, the fp32 mask promoting CPU-autocast scores) and MoE models with dense layers
# (mlp_only_layers, decoder_sparse_step), also cut into pipeline stages. The page's estimate() against Python's.
CONFIG_SHAPES = [
    (ModelShape(family="gpt2", hidden=256, layers=4, heads=4, vocab=5001, positions=1024, hidden_act="gelu_new"),
     dict(precision="bf16-mixed", attention="eager", device="cpu", checkpointing="full", batch=2, seq=512)),
    (ModelShape(family="gpt2", hidden=256, layers=4, heads=4, vocab=5001, positions=1024, hidden_act="gelu_new"),
     dict(precision="fp16-mixed", attention="eager", checkpointing="selective", batch=2, seq=512, tp=2)),
    (ModelShape(family="qwen3_moe", hidden=512, layers=6, heads=8, kv_heads=4, intermediate=1536, vocab=32000,
                head_dim=64, experts=8, top_k=2, moe_intermediate=256, dense_layers=(0, 3), tied_embeddings=False),
     dict(precision="bf16-mixed", checkpointing="none", batch=2, seq=1024)),
    (ModelShape(family="qwen3_moe", hidden=512, layers=6, heads=8, kv_heads=4, intermediate=1536, vocab=32000,
                head_dim=64, experts=8, top_k=2, moe_intermediate=256, dense_layers=(0, 3), tied_embeddings=False),
     dict(precision="bf16-mixed", checkpointing="selective", batch=2, seq=1024, pp=3, microbatches=6, tp=2,
          sequence_parallel=True)),
    (ModelShape(family="qwen2_moe", hidden=512, layers=4, heads=8, vocab=32000, intermediate=1408, experts=16,
                top_k=4, moe_intermediate=256, shared_intermediate=1024, sparse_step=2, tied_embeddings=False),
     dict(precision="fp32", checkpointing="full", batch=2, seq=512, pp=2, microbatches=4, schedule="interleaved",
          virtual_stages=2, ep=2, offload=("activations",))),
]


def test_calculator_estimate_equals_python_on_config_shapes(page) -> None:
    pg, errors, _ = page
    for shape, fields in CONFIG_SHAPES:
        setup = estimator.Setup(**fields)
        want = estimator.estimate(setup, shape=shape)
        got = exact(json.loads(pg.evaluate("""([shape, setup]) => {
            const C = window.hbCalculator, r = C.estimate(C.withDefaults(shape), setup);
            return JSON.stringify({ per: r.per, peak: r.peak, phases: r.phases.terms, acts: r.acts, rank: r.rank,
                                    offload: r.offload, parameters: r.parameters, trainable: r.trainable },
                                  (k, x) => (typeof x === 'bigint' ? x.toString() : x));
        }""", [shape.as_dict(), dataclasses.asdict(setup)])))
        assert got["per"] == want["per_device_bytes"] and got["peak"] == want["peak_bytes"], (shape, fields)
        assert got["phases"] == {k: v["terms_bytes"] for k, v in want["phases"].items()}, (shape, fields)
        assert got["acts"] == want["activation_terms_bytes"], (shape, fields)
        assert (got["rank"], got["offload"]) == (want["rank"], want["offload"]), (shape, fields)
        assert (got["parameters"], got["trainable"]) == (want["parameters"], want["trainable_parameters"])
        # each shape reaches what only a config gives: gelu_new's paths, or layers of both kinds
        if shape.family == "gpt2":
            plain = estimator.estimate(setup, shape=dataclasses.replace(shape, hidden_act=""))
            assert plain["activation_terms_bytes"]["layers_bytes"] < want["activation_terms_bytes"]["layers_bytes"]
        else:
            assert 0 < shape.n_moe_layers < shape.layers
    assert not errors


def test_vectors_cover_every_option(capsys) -> None:
    used = {k: {s[k] for _, s in VECTORS} for k in OPTIONS + tuple(FLAGS)}
    assert {s["context_mib"] is None for _, s in VECTORS} == {True, False}
    assert {s["pcie_gb_s"] is None for _, s in VECTORS} == {True, False}
    assert used == {"optimizer": set(estimator.OPTIMIZERS), "precision": set(estimator.PRECISIONS),
                    "checkpointing": set(estimator.CHECKPOINTING), "zero": {0, 1, 2, 3},
                    "attention": set(estimator.ATTENTION), "device": set(estimator.DEVICES),
                    "optimizer_impl": set(estimator.OPTIMIZER_IMPLS), "schedule": set(estimator.SCHEDULES),
                    "base_quant": set(estimator.BASE_QUANT), "set_to_none": {True, False},
                    "sequence_parallel": {True, False}}
    for key in ("tp", "pp", "microbatches", "virtual_stages", "cp", "ep", "lora_rank"):   # each field set off its default
        assert {s[key] for _, s in VECTORS} - {D[key]}, key
    assert {x for _, s in VECTORS for x in s["lora_targets"].split(",")} >= {"q_proj", "c_attn", "query", "qkv_proj"}
    assert {x for _, s in VECTORS for x in s["offload"].split(",") if x} == set(estimator.OFFLOAD)
    results = [(s, cli(cli_argv(m, s), capsys)) for m, s in VECTORS]
    assert len({r["peak_phase"] for _, r in results}) >= 3   # the vectors reach more than one phase's peak
    # under pipeline parallelism the first stage peaks in some, the last (head, logits and loss) in others
    assert {r["rank"]["stage"] == s["pp"] - 1 for s, r in results if s["pp"] > 1} == {True, False}
    assert any(s["microbatches"] > 1 and s["pp"] == 1 for s, _ in results)   # gradient accumulation
    assert {m for m, _ in VECTORS if isinstance(m, str)} == set(BUILTIN)
    typed = {m["family"] for m, _ in VECTORS if isinstance(m, dict)}
    assert {"gpt2", "bert", "llama", "qwen3", "gemma2"} <= typed and len(typed & set(MOE_FAMILIES)) >= 2


def test_vectors_reach_every_activation_path(capsys) -> None:
    """The vectors reach each point of backward and the dtype paths of the activations (estimator.py, 7faf7f2)."""
    points, paths = set(), set()
    for model, setup in VECTORS:
        want = cli(cli_argv(model, setup), capsys)
        shape, bwd, lay = want["shape"], want["phases"]["backward"], estimator.PRECISIONS[setup["precision"]]
        point = bwd["label"].removeprefix("worst point of backward (its ").removesuffix(")")
        points.add(point + (" (loss temporaries)" if bwd["terms_bytes"].get("loss_temporaries") else ""))
        if setup["attention"] == "sdpa" and setup["device"] == "cpu" and shape["dropout"]:
            paths.add("sdpa math path, " + ("16-bit inputs" if lay.activations < 4 else "fp32"))
        if lay.cast and setup["checkpointing"] == "full" and point != "end" and \
                not bwd["terms_bytes"].get("loss_temporaries"):   # the rebuilt layer's casts are in the terms
            paths.add(f"{shape['family']} layer rebuilt under autocast")
        if lay.cast and setup["checkpointing"] != "none" and shape["family"] in MOE_FAMILIES:
            paths.add("MoE under autocast with checkpointing")
        if lay.master and shape["family"] in GEMMA_NORM_FAMILIES:
            paths.add("GemmaRMSNorm with a master copy")
    assert {"start", "start (loss temporaries)", "end", "first layer rebuilt"} <= points, points
    assert paths >= {"sdpa math path, 16-bit inputs", "sdpa math path, fp32", "gpt2 layer rebuilt under autocast",
                     "mixtral layer rebuilt under autocast", "MoE under autocast with checkpointing",
                     "GemmaRMSNorm with a master copy"}, paths


def test_calculator_repeats_the_estimators_constants() -> None:
    """calculator.js types the constants calculator_inputs() does not carry; they must be the estimator's."""
    from experiments.lib import model_shapes

    js = (REPO / "docs" / "assets" / "calculator.js").read_text(encoding="utf-8")

    def const(name: str) -> str:
        found = re.search(rf"const {name} = (.*?);\n", js, re.S)
        assert found, f"calculator.js has no const {name}"
        return found.group(1)

    for name in ("SCHEDULES", "ROW_PARALLEL", "REPLICATED", "NORM_NAMES", "BASE_QUANT", "OFFLOAD"):
        assert json.loads(const(name)) == list(getattr(estimator, name)), name
    assert json.loads(const("GEMMA_NORM_FAMILIES")) == list(model_shapes.GEMMA_NORM_FAMILIES)
    assert re.fullmatch(r"(\d+)n, NF4_BLOCK2 = (\d+)n", const("NF4_BLOCK")).groups() == \
        (str(estimator.NF4_BLOCK), str(estimator.NF4_BLOCK2))
    assert float(const("PCIE_GB_S")) == estimator.PCIE_GB_S and json.loads(const("PCIE_SOURCE")) == estimator.PCIE_SOURCE
    assert float(const("MAX_SIZE")) == estimator.MAX_SIZE


def test_calculator_reports_bad_input(page, capsys) -> None:
    pg, errors, _ = page
    fill(pg, "bert-base", dict(optimizer="adamw", precision="fp32", batch=1, seq=1024, checkpointing="none", zero=0,
                               gpus=1, **D))
    got = read(pg)
    with pytest.raises(estimator.EstimateError) as exc:
        estimator.estimate(estimator.Setup(seq=1024), shape=BUILTIN["bert-base"])
    assert got["error"] == str(exc.value)
    pg.fill("#hb-batch", "-3")
    assert "batch must be a positive integer" in read(pg)["error"]
    fill(pg, "llama-2-7b", dict(optimizer="adamw", precision="fsdp2-bf16", batch=1, seq=1024, checkpointing="none",
                                zero=1, gpus=2, **D))
    with pytest.raises(estimator.EstimateError) as exc:
        estimator.Setup(precision="fsdp2-bf16", zero=1, gpus=2)
    assert read(pg)["error"] == str(exc.value)
    # the fields beyond data parallel: the same one line as the CLI's
    for fields in (dict(tp=3), dict(lora_rank=8, lora_targets="c_attn,q_proj"), dict(cp=3),
                   dict(pp=2, microbatches=3, schedule="interleaved"), dict(lora_rank=4, precision="bf16-master"),
                   dict(base_quant="nf4"), dict(sequence_parallel=True), dict(ep=2), dict(pp=40)):
        setup = {**D, **dict(optimizer="adamw", precision="bf16-mixed", batch=1, seq=1024, checkpointing="none",
                             zero=0, gpus=1), **fields}
        fill(pg, "llama-2-7b", setup)
        assert estimate_main(cli_argv("llama-2-7b", setup)) == 2
        assert read(pg)["error"] == capsys.readouterr().err.strip().removeprefix("handbook estimate: error: ")
    assert not errors


def test_default_model_matches_cli_defaults(page, capsys) -> None:
    """Freshly loaded, the page shows Llama-2 7B with the CLI's defaults (adamw, bf16-mixed, batch 1, seq 1024)."""
    pg, errors, outside = page
    want = cli(["--model", "llama-2-7b", "--json"], capsys)
    pg.reload()
    pg.wait_for_selector("#hb-calc[data-ready=true]")
    got = read(pg)
    assert {k: int(v) for k, v in got["per"].items()} == want["per_device_bytes"]
    assert int(got["parameters"]) == want["parameters"]
    assert pg.input_value("#hb-lora-targets") == ",".join(estimator.Setup().lora_targets)  # the Setup's default
    assert got["rank"] is None and got["offload"] is None
    assert not errors and not outside
