"""The fine-tuning experiment: LoRA measured with PEFT on transformers' Llama (its ``test`` profile, one
layer, on the CPU), QLoRA where bitsandbytes' 4-bit layers run (or the error recorded), offload, the
estimator's answer or the field it lacks, and the page built from the committed result."""
from __future__ import annotations

import copy
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from conftest import NEEDS_CUDA, site_text, test_profile_data
from experiments import finetune_memory as fm

NAME = "finetune_memory"
REPO = Path(__file__).resolve().parent.parent
CFG = fm.PROFILES["test"]


@pytest.fixture(scope="module")
def data() -> dict:
    return test_profile_data(NAME)


def hand_lora_count(rank: int, targets: tuple[str, ...]) -> int:
    """r(in + out) per targeted linear layer, from the test profile's shape written out by hand."""
    h, d = CFG.hidden, CFG.hidden // CFG.heads
    in_out = {"q_proj": (h, CFG.heads * d), "k_proj": (h, CFG.kv_heads * d), "v_proj": (h, CFG.kv_heads * d),
              "o_proj": (CFG.heads * d, h), "gate_proj": (h, CFG.intermediate), "up_proj": (h, CFG.intermediate),
              "down_proj": (CFG.intermediate, h)}
    return CFG.layers * sum(rank * (i + o) for i, o in (in_out[t] for t in targets))


def test_lora_trainable_parameters_are_r_times_in_plus_out_as_peft_counts(data) -> None:
    lora = {k: x for k, x in data["cases"].items() if x["kind"] in ("lora", "qlora")}
    assert sorted(lora) == sorted(fm.case_key(*c) for c in fm.cases_of(CFG) if c[0] != "full")
    assert {x["targets"] for x in lora.values()} == {"qv", "all-linear"} and {x["rank"] for x in lora.values()} == {2, 4}
    s = fm.summarize(data)
    for key, x in lora.items():
        expected = hand_lora_count(x["rank"], fm.TARGET_SETS[x["targets"]])
        assert x["peft_trainable_params"] == expected == x["trainable_params"], key
        assert s["cases"][key]["formula_trainable_params"] == expected and s["cases"][key]["formula_matches_peft"]
    # q and v at rank 2 on this shape: 2 * ((32 + 32) + (32 + 16)) = 224
    assert data["cases"]["lora-r2-qv"]["peft_trainable_params"] == 224
    assert s["formula_matches_count"] == s["lora_count"] == 4


def test_frozen_base_has_no_gradients_and_no_optimizer_state(data) -> None:
    """AdamW was given every parameter; torch.optim keeps state only for those that got a gradient."""
    full = data["cases"]["full"]
    for key, x in data["cases"].items():
        n = x["trainable_tensors_count"]
        assert x["frozen_with_grad_count"] == 0 and x["frozen_with_state_count"] == 0, key
        assert x["state_tensors_count"] == n, key
        assert x["grads_bytes"] == x["trainable_bytes"] == 4 * x["trainable_params"], key  # fp32 adapters
        assert x["optimizer_state_bytes"] == 2 * x["trainable_bytes"] + 4 * n, key  # exp_avg, exp_avg_sq, step
        if x["kind"] != "full":
            assert x["frozen_tensors_count"] > 0 and x["trainable_params"] < full["trainable_params"] / 5
    assert full["frozen_tensors_count"] == 0
    s = fm.summarize(data)
    assert s["frozen_clean_count"] == s["adapted_count"] == len(data["cases"]) - 1


def test_activations_still_flow_through_the_frozen_base(data) -> None:
    full = fm.measured_terms(data["cases"]["full"])["activations"]
    for key, x in data["cases"].items():
        if x["kind"] == "lora":
            acts = fm.measured_terms(x)["activations"]
            assert 0.5 * full < acts < full, (key, acts, full)  # less than full, far more than the adapters
            assert acts > x["grads_bytes"], key
    probe = data["linear_probe"]  # a frozen linear saves nothing for the weight's gradient; a trainable one its input
    assert probe["frozen_weight_saved_bytes"] == 0
    assert probe["trainable_weight_saved_bytes"] == probe["input_bytes"] == 4 * CFG.batch * CFG.seq * CFG.hidden


def test_lora_starts_from_the_base_model(data) -> None:
    """B = 0 at the start: every LoRA case's first loss is full fine-tuning's, on the same seed."""
    s = fm.summarize(data)
    assert s["same_start_count"] == s["lora_count"] == 4
    assert all(c["peak_vs_full_ratio"] < 1 for c in s["cases"].values() if c["kind"] != "full")


def test_qlora_measures_the_nf4_base_or_records_why_not(data) -> None:
    q, s = data["qlora"], fm.summarize(data)["qlora"]
    if not q["ran"]:
        assert q["error"] and "\n" not in q["error"] and s["error"] == q["error"]
        return
    x = data["cases"][q["case"]]
    assert x["base_quant"] == "nf4" and x["precision"] == "bf16-mixed"
    n = x["quantized_elements"]
    assert len(n) == 7 * CFG.layers  # every linear layer of the decoder, not the LM head
    assert x["packed_bytes"] == sum(n) // 2  # 4 bits per weight
    # per weight: one uint8 absmax per block of 64; one fp32 absmax per 256 of those; an fp32 offset
    assert x["quant_absmax_bytes"] == sum(k // 64 + 4 * math.ceil(k / 64 / 256) + 4 for k in n)
    assert s["rule_bits_per_weight"] == 4 + 8 / 64 + 32 / (64 * 256)
    assert s["blocks_bytes"] == x["packed_bytes"] + x["quant_absmax_bytes"]
    assert s["stored_bytes"] == s["blocks_bytes"] + x["quant_code_bytes"]


def test_qlora_without_bitsandbytes_records_the_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes raises ImportError
    got = fm.run(fm.Config(**{**CFG.__dict__, "ranks": (2,), "target_sets": ()}), "cpu")
    assert list(got["cases"]) == ["full"]
    error = got["qlora"]["error"]
    assert got["qlora"]["ran"] is False and error.startswith(("ImportError", "ModuleNotFoundError")), error
    assert "bitsandbytes" in error and "\n" not in error
    s = fm.summarize(got)
    assert s["qlora"]["ran"] is False and s["qlora"]["error"] == got["qlora"]["error"]


def test_without_peft_only_full_fine_tuning_is_measured(monkeypatch) -> None:
    """The GPU host has transformers but not PEFT: full fine-tuning still runs, the rest says why not."""
    monkeypatch.setitem(sys.modules, "peft", None)
    got = fm.run(fm.Config(**{**CFG.__dict__, "ranks": (2,), "target_sets": ("qv",)}), "cpu")
    assert list(got["cases"]) == ["full"] and got["peft"] is None and "peft" in got["peft_error"]
    assert got["qlora"]["ran"] is False and got["qlora"]["error"].startswith("needs PEFT")
    s = fm.summarize(got)
    assert s["lora_count"] == 0 and s["lora_peak_min_ratio"] is None and s["example_key"] is None


def test_an_estimator_without_the_fine_tuning_fields_says_which(data, monkeypatch) -> None:
    real = fm.estimator.Setup

    def old_setup(**fields):
        for name in ("lora_rank", "lora_targets", "base_quant", "offload"):
            if name in fields:
                raise TypeError(f"Setup.__init__() got an unexpected keyword argument '{name}'")
        return real(**fields)

    monkeypatch.setattr(fm.estimator, "Setup", old_setup)
    s = fm.summarize(data)
    assert s["cases"]["full"]["predicted"]  # full fine-tuning needs none of the new fields
    for c in s["cases"].values():
        if c["kind"] != "full":
            assert not c["predicted"] and c["reason"] == "no prediction: the estimator lacks lora_rank"
            assert all(t["ratio"] is None for t in c["terms"].values())
    assert s["offload"]["estimates"]["optimizer"]["reason"] == "no prediction: the estimator lacks offload"


def test_an_estimator_with_the_fields_gives_ratios(data, monkeypatch) -> None:
    """A stand-in estimator that answers exactly what was measured: every ratio is 1."""
    asked = []

    def exact(setup, shape=None):
        asked.append(setup)
        x = next(x for x in data["cases"].values() if x["rank"] == setup.get("lora_rank", 0)
                 and x["base_quant"] == setup.get("base_quant", "none")
                 and tuple(x["target_modules"]) == setup.get("lora_targets", ()))
        terms = fm.measured_terms(x)
        return {"per_device_bytes": {**terms, "total": sum(terms.values())},
                "trainable_parameters": x["trainable_params"], "peak_bytes": fm.measured_peak(x)[0]}

    monkeypatch.setattr(fm.estimator, "Setup", lambda **fields: fields)
    monkeypatch.setattr(fm.estimator, "estimate", exact)
    s = fm.summarize(data)
    for c in s["cases"].values():
        assert c["predicted"] and c["peak_ratio"] == 1.0 and c["trainable_ratio"] == 1.0
        assert all(t["ratio"] == 1.0 for t in c["terms"].values())
    qlora = next(a for a in asked if a.get("base_quant") == "nf4")
    assert qlora["lora_targets"] == fm.TARGET_SETS["all-linear"] and qlora["precision"] == "bf16-mixed"
    assert {a.get("offload") for a in asked} >= {("optimizer",), ("activations",), ("parameters",)}


def test_on_a_cpu_host_the_host_is_the_device(data) -> None:
    assert data["offload"]["measured"] is False and "host is the device" in data["offload"]["reason"]
    s = fm.summarize(data)["offload"]
    assert s["variants"] == {} and set(s["estimates"]) == set(fm.ESTIMATE_OFFLOADS)


def test_optimizer_offload_keeps_the_state_on_the_host() -> None:
    """The CUDA measurement's code path, run on the CPU: AdamW over fp32 host copies (4 + 8 bytes per
    parameter and a step per tensor there), only the weights left on the device."""
    got = fm.measure_offload(CFG, "cpu", "optimizer")
    n_bytes = got["device_state_bytes"]
    tensors = 2 + 9 * CFG.layers + 1  # embedding, LM head, 9 per layer, final norm
    assert got["host_state_bytes"] == 3 * n_bytes + 4 * tensors
    assert set(got["phases"]) == set(fm.PHASES)


def test_summarize_reads_a_cuda_offload_measurement(data) -> None:
    cuda = copy.deepcopy(data)
    peaks = {"none": (300, 500, 400), "activations": (200, 350, 400), "optimizer": (250, 450, 260)}
    cuda["offload"] = {"measured": True, "reason": None, "variants": {
        v: {"variant": v, "host_state_bytes": 7 if v == "optimizer" else 0, "device_state_bytes": 1,
            "phases": {ph: {"cuda_max_allocated_bytes": b} for ph, b in zip(fm.PHASES, p)}}
        for v, p in peaks.items()}}
    s = fm.summarize(cuda)["offload"]
    assert s["variants"]["activations"]["peak_bytes"] == 400 and s["variants"]["activations"]["vs_none_ratio"] == 0.8
    assert s["variants"]["optimizer"]["peak_phase_label"] == "backward pass"
    assert s["variants"]["optimizer"]["host_state_bytes"] == 7


@pytest.mark.skipif(not torch.cuda.is_available(), reason=f"{NEEDS_CUDA}: offload moves tensors from the GPU to the host")
def test_offload_lowers_the_device_peak_on_cuda() -> None:
    """save_on_cpu empties the device of saved activations by the end of forward; AdamW on the host keeps the
    8 bytes of state per parameter (and the step's temporaries) off the device."""
    cfg = fm.Config(batch=8, seq=128, hidden=128, layers=4, heads=4, kv_heads=2, intermediate=352, vocab=64)
    got = {v: fm.measure_offload(cfg, "cuda", v) for v in fm.OFFLOADS}
    forward = {v: m["phases"]["forward"]["cuda_max_allocated_bytes"] for v, m in got.items()}
    peak = {v: max(p["cuda_max_allocated_bytes"] for p in m["phases"].values()) for v, m in got.items()}
    assert forward["activations"] < 0.5 * forward["none"], forward
    assert peak["optimizer"] < peak["none"], peak
    assert got["optimizer"]["host_state_bytes"] > 2 * got["optimizer"]["device_state_bytes"]


def test_page_shows_the_committed_measurement(built_site) -> None:
    from generator.site.formatting import bytes_, grouped  # jinja2: the site side only

    stored = json.loads((REPO / "results" / "cpu-amd-epyc-2c-24gb" / f"{NAME}.json").read_text())["data"]
    s = fm.summarize(stored)
    text = re.sub(r"\s+", " ", site_text(built_site, "11-fine-tuning/index.html"))
    for c in s["cases"].values():
        assert f"{c['label']} {grouped(c['trainable_params'])}" in text, c["label"]
        assert bytes_(c["measured_peak_bytes"]) in text
    assert s["scale_label"] in text
    if s["qlora"]["ran"]:
        assert bytes_(s["qlora"]["stored_bytes"]) in text
    else:
        assert "not measured here" in text and s["qlora"]["error"] in text
