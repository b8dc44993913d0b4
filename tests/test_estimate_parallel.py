"""Tensor, sequence, pipeline, context and expert parallelism, LoRA, QLoRA and offload in the estimator, each
against a case computed by hand from its published rule."""
from __future__ import annotations

from dataclasses import replace

import pytest

from experiments.lib import estimator
from experiments.lib.model_shapes import BUILTIN, ModelShape
from generator.estimate import main as estimate_main

pytestmark = pytest.mark.fast

# a GPT-2-like layer with Korthikanti et al.'s assumptions: 16-bit activations, dropout, a 4h MLP with a fused GELU
GPT = replace(BUILTIN["gpt2-xl"], layers=4, hidden=1024, heads=16)


def _per_layer(**kw) -> int:
    setup = estimator.Setup(precision="bf16", attention="eager", device="cuda", seq=1024, batch=2, **kw)
    return estimator.activation_terms(GPT, setup)["per_layer_bytes"]


@pytest.mark.parametrize("t", [1, 2, 4, 8])
def test_tensor_parallel_layer_follows_korthikanti(t: int) -> None:
    s, b, h, a = 1024, 2, GPT.hidden, GPT.heads
    # Korthikanti et al. 2022, equation 2: sbh(10 + 24/t + 5as/(ht)) bytes per layer
    assert _per_layer(tp=t) == s * b * h * 10 + (24 * s * b * h + 5 * a * s * s * b) // t
    if t > 1:  # equation 4, with sequence parallelism: sbh(34/t + 5as/(ht))
        assert _per_layer(tp=t, sequence_parallel=True) == (34 * s * b * h + 5 * a * s * s * b) // t


def test_pipeline_first_stage_holds_pp_microbatches() -> None:
    m = replace(BUILTIN["llama-2-7b"], layers=8)
    kw = dict(precision="bf16", seq=512)
    one = estimator.activation_terms(replace(m, layers=1), estimator.Setup(**kw))
    per_layer_and_inputs = one["layers_bytes"] + one["embedding_bytes"]
    # 1F1B on 4 stages with 8 micro-batches: the first stage keeps 4 micro-batches of its 2 layers (and inputs)
    pp = estimator.activation_terms(m, estimator.Setup(pp=4, microbatches=8, **kw))
    assert pp["stage_layers"] == 2 and pp["inflight_microbatches"] == 4
    assert pp["total_bytes"] == 4 * (2 * one["layers_bytes"] + one["embedding_bytes"])
    assert pp["logits_bytes"] == 0   # the head and the loss sit on the last stage
    # fewer micro-batches than stages: only those are in flight
    assert estimator.activation_terms(m, estimator.Setup(pp=4, microbatches=2, **kw))["inflight_microbatches"] == 2
    # interleaved with v = 2: 1 + (p - 1)/(p v) times p micro-batches (Korthikanti et al. 2022, section 4.2.3)
    inter = estimator.activation_terms(m, estimator.Setup(pp=4, microbatches=8, schedule="interleaved",
                                                          virtual_stages=2, **kw))
    assert inter["inflight_microbatches"] == pytest.approx(4 * (1 + 3 / 8))
    # GPipe: every micro-batch's forward before the first backward (Huang et al. 2019)
    assert estimator.activation_terms(m, estimator.Setup(pp=4, microbatches=8, schedule="gpipe", **kw)
                                      )["inflight_microbatches"] == 8
    assert per_layer_and_inputs > 0


def test_context_parallel_splits_the_sequence() -> None:
    m = BUILTIN["llama-3-8b"]
    full = estimator.activation_terms(m, estimator.Setup(seq=2048))
    half = estimator.activation_terms(m, estimator.Setup(seq=1024))
    assert estimator.activation_terms(m, estimator.Setup(seq=2048, cp=2))["total_bytes"] == half["total_bytes"]
    assert half["total_bytes"] < full["total_bytes"]


def test_tensor_parallel_weights_by_hand() -> None:
    m = BUILTIN["llama-2-7b"]
    h, I, V, L = m.hidden, m.d_ff, m.vocab, m.layers
    t = 8
    r = estimator.estimate(estimator.Setup(precision="bf16", tp=t), shape=m)
    # every projection, the embedding and the head split 8 ways; the 2 norms a layer and the final one whole
    split = L * (4 * h * h + 3 * h * I) + 2 * V * h
    whole = (2 * L + 1) * h
    assert r["rank"]["parameters_held"] == split // t + whole
    assert r["per_device_bytes"]["params"] == 2 * (split // t + whole)


def test_expert_parallel_divides_the_experts() -> None:
    m = ModelShape(family="mixtral", hidden=256, layers=2, heads=8, kv_heads=4, intermediate=512, vocab=1000,
                   experts=8, top_k=2)
    one = estimator.estimate(estimator.Setup(precision="bf16"), shape=m)["parameters"]
    r = estimator.estimate(estimator.Setup(precision="bf16", ep=4), shape=m)
    experts = m.layers * m.experts * 3 * m.hidden * m.intermediate
    assert r["rank"]["parameters_held"] == one - experts + experts // 4


def test_lora_and_qlora_states() -> None:
    m = BUILTIN["llama-2-7b"]
    h, L, rk = m.hidden, m.layers, 16
    r = estimator.estimate(estimator.Setup(precision="bf16", lora_rank=rk), shape=m)
    adapters = L * 2 * rk * (h + h)            # q_proj and v_proj are h x h: A (r, h) and B (h, r) each
    assert r["trainable_parameters"] == adapters
    n = r["parameters"]
    # the base frozen in bf16; the adapters fp32 (PEFT's autocast_adapter_dtype) with fp32 grads and AdamW's 2 moments
    assert r["per_device_bytes"]["params"] == 2 * n + 4 * adapters
    assert r["per_device_bytes"]["grads"] == 4 * adapters
    assert r["per_device_bytes"]["optimizer"] == 8 * adapters + 4 * 2 * L * 2   # + a step tensor per adapter tensor
    # QLoRA: 4 bits a weight, an 8-bit constant per 64, an fp32 constant per 256 constants (Dettmers et al. 2023)
    assert estimator.nf4_bytes(64 * 256 * 10) == 64 * 256 * 10 // 2 + 256 * 10 + 4 * 10
    q = estimator.estimate(estimator.Setup(precision="bf16", lora_rank=rk, base_quant="nf4"), shape=m)
    linear = L * (4 * h * h + 3 * h * m.d_ff)
    layer_linears = [h * h] * 4 + [h * m.d_ff] * 3
    nf4 = L * sum(estimator.nf4_bytes(x) for x in layer_linears)
    assert q["per_device_bytes"]["params"] == nf4 + 2 * (n - linear) + 4 * adapters
    # a frozen Linear keeps no input: LoRA on q and v keeps less than full training
    assert r["per_device_bytes"]["activations"] < estimator.estimate(
        estimator.Setup(precision="bf16"), shape=m)["per_device_bytes"]["activations"]


def test_offload_moves_bytes_to_the_host() -> None:
    m = BUILTIN["llama-3-8b"]
    base = estimator.estimate(estimator.Setup(seq=2048), shape=m)
    off = estimator.estimate(estimator.Setup(seq=2048, offload=("optimizer",), pcie_gb_s=20.0), shape=m)
    o = off["offload"]
    assert o["host_bytes"] == base["per_device_bytes"]["optimizer"] == o["pinned_host_bytes"]
    # each step: the gradients down, the weights back up
    assert o["transfer_bytes_per_step"] == base["per_device_bytes"]["grads"] + base["per_device_bytes"]["params"]
    assert o["transfer_seconds_per_step"] == pytest.approx(o["transfer_bytes_per_step"] / 20e9)
    assert off["peak_bytes"] < base["peak_bytes"]
    assert off["phases"]["optimizer"]["terms_bytes"]["optimizer"] == 0
    acts = estimator.estimate(estimator.Setup(seq=2048, offload=("activations",)), shape=m)
    assert acts["offload"]["transfer_bytes_per_step"] == 2 * base["per_device_bytes"]["activations"]
    assert acts["phases"]["forward"]["terms_bytes"]["activations"] <= base["activation_terms_bytes"]["per_layer_bytes"]


@pytest.mark.parametrize("args, field", [
    (["--tp", "3"], "tp 3"), (["--pp", "99"], "pp 99"), (["--cp", "3", "--seq", "1024"], "cp 3"),
    (["--ep", "2"], "ep 2"), (["--sequence-parallel"], "sequence_parallel"), (["--schedule", "zigzag"], "schedule"),
    (["--lora-rank", "8", "--lora-targets", "q"], "lora_targets q"), (["--base-quant", "nf4"], "base_quant"),
    (["--offload", "disk"], "offload"), (["--offload", "optimizer", "--device", "cpu"], "offload"),
    (["--pcie-gb-s", "0"], "pcie_gb_s"), (["--cp", "2", "--attention", "eager"], "context parallelism"),
])
def test_bad_parallel_input_is_one_line(args: list[str], field: str, capsys) -> None:
    assert estimate_main(["--model", "llama-2-7b", *args]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], out.err


def test_model_parallel_estimates_say_they_may_be_low() -> None:
    m = BUILTIN["llama-2-7b"]
    assert estimator.MODEL_PARALLEL_NOTE in estimator.estimate(estimator.Setup(tp=2), shape=m)["notes"]
    assert estimator.MODEL_PARALLEL_NOTE in estimator.estimate(estimator.Setup(pp=2), shape=m)["notes"]
    assert estimator.MODEL_PARALLEL_NOTE not in estimator.estimate(estimator.Setup(zero=3, gpus=8), shape=m)["notes"]


def test_context_parallel_phases_use_the_local_sequence() -> None:
    m = BUILTIN["llama-2-7b"]
    four = estimator.estimate(estimator.Setup(seq=4096, cp=4), shape=m)["phases"]["forward"]["terms_bytes"]
    one = estimator.estimate(estimator.Setup(seq=1024), shape=m)["phases"]["forward"]["terms_bytes"]
    assert four["logits"] == one["logits"] == 2 * 1024 * m.vocab   # the returned 16-bit logits of s / cp tokens


def test_parameter_offload_keeps_two_layers_on_the_device() -> None:
    m = BUILTIN["llama-2-7b"]
    layer, _ = estimator.unit_parameters(m)
    r = estimator.estimate(estimator.Setup(precision="bf16-mixed", offload=("parameters",)), shape=m)
    for ph in r["phases"].values():
        assert ph["terms_bytes"]["gathered_units"] == 2 * layer * 4   # fp32 weights, a layer and the prefetched one
        assert ph["terms_bytes"].get("params", 0) == 0
