"""The "when to use" table: each memory technique, what it saves, costs and changes, and when to pick it.

Declared once here and rendered by ``when_to_use()`` on the beyond-checkpointing chapter and on the cheat
sheet. A cell is text with placeholders ``{summary.<experiment>.<path>|<filter>}`` (or ``{data....}``)
filled from the primary host's results, and the sources it leans on in the same cell. A row whose
experiment has no result on the host (or whose result lacks a field a cell reads) shows its ``unmeasured``
cells instead: what a cited source says, or "—"; never a number typed here as if measured. A placeholder
whose value is null (the result says the figure does not apply) shows "n/a".
"""
from __future__ import annotations

import re
from typing import Any

from generator.errors import PageError
from generator.site.formatting import FILTERS

COLUMNS = ("saves", "costs", "changes", "when")
HEADINGS = {"technique": "technique", "saves": "what it saves", "costs": "what it costs",
            "changes": "what it changes in training", "when": "when it is the right choice"}
PLACEHOLDER = re.compile(r"\{((?:data|summary)\.[\w.\-]+)\|(\w+)\}")

ROWS: list[dict[str, Any]] = [
    {"technique": "gradient accumulation ({summary.grad_accumulation.most_accumulated.k|text} micro-batches)",
     "experiments": ["grad_accumulation"],
     "saves": "activations: one micro-batch's live at a time; peak {summary.grad_accumulation.most_accumulated.peak_ratio_vs_one_batch|ratio}",
     "costs": "time per effective batch {summary.grad_accumulation.most_accumulated.time_ratio_vs_one_batch|ratio} (smaller kernels)",
     "changes": "nothing if the loss is divided by k (fp32 rel. diff {summary.grad_accumulation.max_rel_diff.fp32|sci}); "
                "BatchNorm breaks it (rel. diff {summary.grad_accumulation.breakers.batchnorm.rel_diff|sci})",
     "when": "the batch you need does not fit and activations dominate the peak",
     "unmeasured": {"technique": "gradient accumulation"}},
    {"technique": "no checkpointing", "experiments": ["checkpointing"],
     "saves": "—", "costs": "—", "changes": "—",
     "when": "the batch fits: recomputation only costs time"},
    {"technique": "selective checkpointing (attention core)", "experiments": ["checkpointing"],
     "saves": "peak {summary.checkpointing.policies.selective_attention_core.peak_ratio_vs_none|ratio}",
     "costs": "FLOPs {summary.checkpointing.policies.selective_attention_core.flops_ratio_vs_none|ratio}, "
              "time {summary.checkpointing.policies.selective_attention_core.time_ratio_vs_none|ratio}",
     "changes": "nothing (same dropout masks with preserve_rng_state)",
     "when": "long sequences, where the s² attention scores dominate (Korthikanti et al. 2022, §5)"},
    {"technique": "full checkpointing (every layer)", "experiments": ["checkpointing"],
     "saves": "peak {summary.checkpointing.policies.every_layer.peak_ratio_vs_none|ratio}",
     "costs": "FLOPs {summary.checkpointing.policies.every_layer.flops_ratio_vs_none|ratio} (≤ 4/3: one more forward), "
              "time {summary.checkpointing.policies.every_layer.time_ratio_vs_none|ratio}",
     "changes": "nothing (same dropout masks with preserve_rng_state)",
     "when": "activations dominate and compute is spare (Chen et al. 2016)"},
    {"technique": "autocast (bf16)", "experiments": ["mixed_precision", "activation_memory", "optimizer_state"],
     "saves": "peak {summary.mixed_precision.step_costs.autocast_bf16.peak_ratio_vs_fp32|ratio} "
              "(saved activations {summary.mixed_precision.step_costs.autocast_bf16.saved_ratio_vs_fp32|ratio}); "
              "model state stays {summary.optimizer_state.precision.amp-autocast.total_bytes_per_param|num} B/param",
     "costs": "+{summary.activation_memory.autocast_weight_cache.bytes_per_weight|num} B per matmul weight "
              "(16-bit copies kept for backward)",
     "changes": "matmuls round to bf16 (eps {data.mixed_precision.formats.bf16.eps|sci}); fp16 needs a GradScaler",
     "when": "hardware with fast 16-bit matmuls (bf16: Ampere or newer) (Micikevicius et al. 2018)"},
    {"technique": "master weights (16-bit weights, fp32 master)", "experiments": ["optimizer_state"],
     "saves": "nothing in model state: {summary.optimizer_state.precision.mixed-master.total_bytes_per_param|num} B/param "
              "as fp32's {summary.optimizer_state.precision.fp32.total_bytes_per_param|num}; "
              "16-bit weights and gradients in forward and backward",
     "costs": "an fp32 copy, 4 B/param",
     "changes": "updates accumulate in fp32; without it (pure bf16, "
                "{summary.optimizer_state.precision.pure-bf16.total_bytes_per_param|num} B/param) updates below "
                "≈2⁻⁸ of a weight are lost (Micikevicius et al. 2018, §3.1)",
     "when": "16-bit training, especially under ZeRO, which shards the 12 B/param (Rajbhandari et al. 2020)"},
    {"technique": "8-bit optimizer state (AdamW8bit)", "experiments": ["optimizer_8bit"],
     "saves": "state {summary.optimizer_8bit.optimizers.adamw-8bit.state_bytes_per_param|num} B/param against AdamW's "
              "{summary.optimizer_8bit.optimizers.adamw.state_bytes_per_param|num} (rule: 2 + 8/256, Dettmers et al. 2022)",
     "costs": "one step {summary.optimizer_8bit.optimizers.adamw-8bit.step_time_ms|ms} against "
              "{summary.optimizer_8bit.optimizers.adamw.step_time_ms|ms} here",
     "changes": "quantised moments; test accuracy {summary.optimizer_8bit.optimizers.adamw-8bit.test_accuracy|pct} against "
                "{summary.optimizer_8bit.optimizers.adamw.test_accuracy|pct}",
     "when": "optimizer state dominates: large models, small batches",
     "unmeasured": {
         "technique": "8-bit optimizer state",
         "saves": "Adam state 8 → 2 + 8/256 B/param (Dettmers et al. 2022)",
         "costs": "block-wise (de)quantisation each step (Dettmers et al. 2022)",
         "changes": "quantised moments; the paper reports 32-bit Adam's results on its benchmarks (Dettmers et al. 2022)",
     }},
    {"technique": "ZeRO-1 (optimizer state sharded)", "experiments": ["sharding"],
     "saves": "model state {summary.sharding.top.zero1.state_vs_ddp_ratio|ratio} of DDP at N={summary.sharding.world_size|text}; "
              "rule 2 + 2 + 12/N B/param (Rajbhandari et al. 2020)",
     "costs": "DDP's communication volume (Rajbhandari et al. 2020, §7)",
     "changes": "nothing (same update)",
     "when": "data parallel on several GPUs and the optimizer state dominates"},
    {"technique": "ZeRO-2 (+ gradients)", "experiments": [],
     "saves": "rule 2 + 14/N B/param (Rajbhandari et al. 2020); not measured here",
     "costs": "DDP's communication volume (Rajbhandari et al. 2020, §7)",
     "changes": "nothing (same update)",
     "when": "as ZeRO-1, when gradients matter too"},
    {"technique": "ZeRO-3 / FSDP2 (+ parameters)", "experiments": ["sharding"],
     "saves": "model state {summary.sharding.top.fsdp2_reshard.state_vs_ddp_ratio|ratio} of DDP at "
              "N={summary.sharding.world_size|text}, peak {summary.sharding.top.fsdp2_reshard.peak_vs_ddp_ratio|ratio}; "
              "rule 16/N B/param",
     "costs": "1.5× DDP's communication volume (Rajbhandari et al. 2020, §7)",
     "changes": "nothing (same update)",
     "when": "the model state does not fit one device"},
    {"technique": "activation offload ({summary.activation_offload.shown_label|text})", "experiments": ["activation_offload"],
     "saves": "resident activations {summary.activation_offload.shown.activations_ratio_vs_none|ratio}",
     "costs": "time {summary.activation_offload.shown.time_ratio_vs_none|ratio} here",
     "changes": "nothing (gradients identical: {summary.activation_offload.shown.lossless|yesno})",
     "when": "the copies hide behind compute (large matmuls on a GPU), or nothing else fits",
     "unmeasured": {"technique": "activation offload"}},
    {"technique": "int8 saved activations", "experiments": ["activation_compression"],
     "saves": "resident activations {summary.activation_compression.schemes.int8_tensor.activations_ratio_vs_none|ratio}",
     "costs": "time {summary.activation_compression.schemes.int8_tensor.step_time_ratio_vs_none|ratio}",
     "changes": "gradient error {data.activation_compression.schemes.int8_tensor.rel_error_norm_ratio|sci}, "
                "final loss {summary.activation_compression.schemes.int8_tensor.final_loss_ratio_vs_none|ratio}",
     "when": "activations dominate and a per-cent of gradient noise is acceptable (Chen et al. 2021, ActNN)"},
    {"technique": "packing instead of padding", "experiments": ["token_budget"],
     "saves": "wasted tokens {summary.token_budget.pad_vs_pack.padded_waste_share|pct} → "
              "{summary.token_budget.pad_vs_pack.packed_waste_share|pct}; peak {summary.token_budget.pad_vs_pack.peak_ratio_packed_vs_padded|ratio}",
     "costs": "time {summary.token_budget.pad_vs_pack.time_ratio_packed_vs_padded|ratio}; a mask across documents",
     "changes": "nothing, with the document mask (Krell et al. 2021)",
     "when": "whenever documents vary in length"},
    {"technique": "compile with an activation-memory budget", "experiments": ["sac_budget"],
     "saves": "saved bytes {summary.sac_budget.middle.saved_ratio_vs_eager|ratio} of eager ({summary.sac_budget.middle.label|text})",
     "costs": "time {summary.sac_budget.middle.time_ratio_vs_eager|ratio} here (recomputation)",
     "changes": "the same training: largest gradient difference from eager "
                "{summary.sac_budget.middle.max_abs_grad_diff_vs_eager|sci}",
     "when": "before writing a checkpointing policy by hand"},
    {"technique": "LoRA", "experiments": ["finetune_memory"],
     "saves": "peak {summary.finetune_memory.lora_peak_min_ratio|ratio}–{summary.finetune_memory.lora_peak_max_ratio|ratio} "
              "of full fine-tuning; trainable {summary.finetune_memory.lora_trainable_min_share|pct}–"
              "{summary.finetune_memory.lora_trainable_max_share|pct}",
     "costs": "activations still flow through the frozen base: {summary.finetune_memory.lora_activations_min_ratio|ratio}–"
              "{summary.finetune_memory.lora_activations_max_ratio|ratio} of full",
     "changes": "only low-rank adapters train (Hu et al. 2021)",
     "when": "fine-tuning a large pretrained model",
     "unmeasured": {
         "saves": "no gradients or optimizer state for the frozen weights: GPT-3 175B trained in 350 GB instead of "
                  "1.2 TB (Hu et al. 2021, §4.2)",
         "costs": "activations of the full model remain (Hu et al. 2021)",
     }},
]


def _lookup(obj: Any, path: str, where: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise PageError(f"{where}: has no field '{path}' (stopped at '{part}')")
        obj = obj[part]
    return obj


def _fill(text: str, results: dict[str, dict], where: str) -> str:
    def one(match: re.Match) -> str:
        path, fmt = match.group(1), match.group(2)
        part, experiment, rest = path.split(".", 2)
        if fmt != "text" and fmt not in FILTERS:
            raise PageError(f"{where}: format {fmt!r} in {{{path}|{fmt}}} is not one of {', '.join(sorted(FILTERS))}, text")
        value = _lookup(results[experiment][part], rest, f"{where}: {part}.{experiment}")
        if value is None:
            return "n/a"
        return str(value) if fmt == "text" else FILTERS[fmt](value)
    return PLACEHOLDER.sub(one, text)


def _experiments_of(row: dict) -> set[str]:
    cells = [row["technique"], *(row[c] for c in COLUMNS)]
    return {m.group(1).split(".")[1] for cell in cells for m in PLACEHOLDER.finditer(cell)}


def rows(results: dict[str, dict], where: str) -> list[dict[str, str]]:
    """Every row, its cells filled from ``results`` ({experiment: {"data": ..., "summary": ...}}).

    A row is measured when every experiment it declares has a result that holds every path it reads;
    otherwise it shows its cited sources (``unmeasured``) or "—" and ``missing`` says why.
    ``tests/test_when_to_use.py`` holds the committed results to filling every row they can.
    """
    out = []
    for row in ROWS:
        used = _experiments_of(row)
        if not used <= set(row["experiments"]):
            raise PageError(f"{where}: when-to-use row {row['technique']!r} reads {sorted(used - set(row['experiments']))} "
                            f"without declaring them in 'experiments'")
        absent = [name for name in row["experiments"] if name not in results]
        cells: dict[str, Any] = {}
        missing = f"no result for {', '.join(absent)}" if absent else None
        if not absent:
            try:
                cells = {col: _fill(row[col], results, where) for col in ("technique", *COLUMNS)}
            except PageError as exc:  # a result from older code without a field this table reads
                missing = str(exc)
        if missing:
            cells = {col: row.get("unmeasured", {}).get(col, "—") if PLACEHOLDER.search(row[col]) else row[col]
                     for col in ("technique", *COLUMNS)}
        cells.update(measured=not missing and bool(row["experiments"]), missing=missing,
                     experiments=list(row["experiments"]))
        out.append(cells)
    return out
