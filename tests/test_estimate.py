"""The estimator and ``handbook estimate``: parameter counts against real architectures, terms
against measurements, the CLI's output and its one-line errors, and its start-up time."""
from __future__ import annotations

from dataclasses import replace

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from experiments.lib import estimator, formulas
from experiments.lib.model_shapes import BUILTIN, ModelShape, ShapeError, parameter_shapes, shape_from_config
from generator.estimate import main as estimate_main

ROOT = Path(__file__).resolve().parents[1]


# --- reference architectures on the meta device (names as the Hugging Face classes) ---------------

class Conv1D(nn.Module):
    """GPT-2's projection: weight stored (in, out)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.empty(nf))


def gpt2_reference(m: ModelShape) -> nn.Module:
    h, I = m.hidden, m.d_ff

    def block() -> nn.Module:
        b = nn.Module()
        b.ln_1, b.ln_2 = nn.LayerNorm(h), nn.LayerNorm(h)
        b.attn = nn.Module()
        b.attn.c_attn, b.attn.c_proj = Conv1D(3 * h, h), Conv1D(h, h)
        b.mlp = nn.Module()
        b.mlp.c_fc, b.mlp.c_proj = Conv1D(I, h), Conv1D(h, I)
        return b

    model = nn.Module()
    model.wte, model.wpe = nn.Embedding(m.vocab, h), nn.Embedding(m.positions, h)
    model.h = nn.ModuleList(block() for _ in range(m.layers))
    model.ln_f = nn.LayerNorm(h)
    model.lm_head = nn.Linear(h, m.vocab, bias=False)
    if m.tied_embeddings:
        model.lm_head.weight = model.wte.weight
    return model


def bert_reference(m: ModelShape) -> nn.Module:
    h, I = m.hidden, m.d_ff
    model = nn.Module()
    e = model.embeddings = nn.Module()
    e.word_embeddings = nn.Embedding(m.vocab, h)
    e.position_embeddings = nn.Embedding(m.positions, h)
    e.token_type_embeddings = nn.Embedding(m.type_vocab, h)
    e.LayerNorm = nn.LayerNorm(h)

    def layer() -> nn.Module:
        lay = nn.Module()
        lay.attention = nn.Module()
        lay.attention.self = nn.Module()
        for name in ("query", "key", "value"):
            setattr(lay.attention.self, name, nn.Linear(h, h))
        lay.attention.output = nn.Module()
        lay.attention.output.dense, lay.attention.output.LayerNorm = nn.Linear(h, h), nn.LayerNorm(h)
        lay.intermediate = nn.Module()
        lay.intermediate.dense = nn.Linear(h, I)
        lay.output = nn.Module()
        lay.output.dense, lay.output.LayerNorm = nn.Linear(I, h), nn.LayerNorm(h)
        return lay

    model.encoder = nn.Module()
    model.encoder.layer = nn.ModuleList(layer() for _ in range(m.layers))
    model.pooler = nn.Module()
    model.pooler.dense = nn.Linear(h, h)
    return model


def llama_reference(m: ModelShape) -> nn.Module:
    h, I, d = m.hidden, m.d_ff, m.d_head

    def layer() -> nn.Module:
        lay = nn.Module()
        lay.self_attn = nn.Module()
        lay.self_attn.q_proj = nn.Linear(h, m.heads * d, bias=False)
        lay.self_attn.k_proj = nn.Linear(h, m.n_kv_heads * d, bias=False)
        lay.self_attn.v_proj = nn.Linear(h, m.n_kv_heads * d, bias=False)
        lay.self_attn.o_proj = nn.Linear(m.heads * d, h, bias=False)
        lay.mlp = nn.Module()
        lay.mlp.gate_proj, lay.mlp.up_proj = nn.Linear(h, I, bias=False), nn.Linear(h, I, bias=False)
        lay.mlp.down_proj = nn.Linear(I, h, bias=False)
        lay.input_layernorm, lay.post_attention_layernorm = nn.RMSNorm(h), nn.RMSNorm(h)
        return lay

    model = nn.Module()
    model.model = nn.Module()
    model.model.embed_tokens = nn.Embedding(m.vocab, h)
    model.model.layers = nn.ModuleList(layer() for _ in range(m.layers))
    model.model.norm = nn.RMSNorm(h)
    model.lm_head = nn.Linear(h, m.vocab, bias=False)
    if m.tied_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model


REFERENCE = {"gpt2": gpt2_reference, "bert": bert_reference, "llama": llama_reference}


def meta_params(m: ModelShape) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = REFERENCE[m.family](m)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_parameter_tensors_match_meta_model(name: str) -> None:
    m = BUILTIN[name]
    ref = meta_params(m)
    assert dict(parameter_shapes(m)) == ref
    assert estimator.parameter_count(m) == sum(formulas.numel(s) for s in ref.values())


def test_builtin_counts_are_the_published_ones() -> None:
    # The model cards' / papers' parameter counts (exact figures as the HF classes give them).
    published = {"bert-base": 109_482_240, "gpt2-xl": 1_557_611_200, "llama-2-7b": 6_738_415_616,
                 "llama-2-70b": 68_976_648_192, "llama-3-8b": 8_030_261_248}
    assert {k: estimator.parameter_count(BUILTIN[k]) for k in published} == published


@pytest.mark.parametrize("cfg", [
    {"model_type": "gpt2", "n_embd": 96, "n_layer": 3, "n_head": 4, "n_positions": 64, "vocab_size": 301,
     "n_inner": None},
    {"model_type": "gpt2", "n_embd": 96, "n_layer": 2, "n_head": 4, "n_positions": 64, "vocab_size": 301,
     "n_inner": 200, "tie_word_embeddings": False},
    {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
     "intermediate_size": 100, "vocab_size": 97, "max_position_embeddings": 40, "type_vocab_size": 3},
    {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 8,
     "num_key_value_heads": 2, "intermediate_size": 172, "vocab_size": 111, "tie_word_embeddings": True},
    {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
     "num_key_value_heads": 4, "intermediate_size": 172, "vocab_size": 111, "head_dim": 32},
])
def test_config_parameter_tensors_match_meta_model(cfg: dict) -> None:
    m = shape_from_config(cfg)
    assert dict(parameter_shapes(m)) == meta_params(m)


def test_config_file_and_missing_field(tmp_path: Path) -> None:
    good = tmp_path / "tiny" / "config.json"
    good.parent.mkdir()
    good.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                                "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100}))
    from experiments.lib.model_shapes import load_config

    m = load_config(good)
    assert m.name == "tiny" and m.n_kv_heads == 4 and not m.tied_embeddings
    with pytest.raises(ShapeError, match="field 'num_hidden_layers' must be a non-negative integer, not -2"):
        shape_from_config({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": -2, "num_attention_heads": 4,
                           "intermediate_size": 128, "vocab_size": 100})
    with pytest.raises(ShapeError, match="field 'n_embd' must be a non-negative integer, not '64'"):
        shape_from_config({"model_type": "gpt2", "n_embd": "64", "n_layer": 1, "n_head": 2, "n_positions": 8,
                           "vocab_size": 9})
    with pytest.raises(ShapeError, match="missing field 'n_layer'"):
        shape_from_config({"model_type": "gpt2", "n_embd": 8, "n_head": 2, "n_positions": 8, "vocab_size": 9})


# --- the terms --------------------------------------------------------------------------------------

def test_layer_terms_reduce_to_korthikanti() -> None:
    # GPT-style layer, 4h MLP, MHA, dropout, 16-bit: sbh(34 + 5as/h) exactly (Korthikanti et al. 2022, 4.1).
    for s, b, h, a in ((128, 2, 64, 4), (2048, 1, 4096, 32), (4096, 8, 1600, 25)):
        m = ModelShape(family="gpt2", hidden=h, layers=1, heads=a, vocab=10, positions=s)
        assert sum(estimator.layer_activation_terms(m, s, b, 2).values()) == formulas.korthikanti_activation_bytes(
            s, b, h, a)
        m3 = ModelShape(family="gpt2", hidden=h, layers=3, heads=a, vocab=10, positions=s)
        kw = dict(seq=s, batch=b, precision="bf16", attention="eager")   # pure 16-bit, the s^2 scores kept
        sel = estimator.activation_terms(m3, estimator.Setup(checkpointing="selective", **kw))
        none = estimator.activation_terms(m3, estimator.Setup(**kw))
        # selective drops 5as^2b per layer, and rebuilds one layer's during backward
        assert none["layers_bytes"] - sel["layers_bytes"] == 2 * 5 * a * s * s * b
        assert sel["recompute_bytes"] == 5 * a * s * s * b


def test_layer_terms_against_a_measured_gpt_layer() -> None:
    """Saved bytes of the activation chapter's GPT layer (saved_tensors_hooks), against the per-layer terms.

    Measured on CPU, where torch's dropout keeps its mask in the activation dtype (CUDA: 1 byte), so the
    prediction uses mask_bytes = e here. Tolerance: the LayerNorm mean/rstd (at most 8 bytes per token per
    norm, which the formula leaves out) -> within 3 %.
    """
    from experiments.lib.gpt import DecoderLayer, LayerShape
    from experiments.lib.saved import count_saved

    torch.manual_seed(0)
    s, b, h, a = 32, 2, 32, 4
    for dtype, e in ((torch.float32, 4), (torch.bfloat16, 2)):
        layer = DecoderLayer(LayerShape(h, a, dropout=0.1, attn_dropout=0.1), "math", max_seq=s).to(dtype)
        x = torch.randn(b, s, h, dtype=dtype, requires_grad=True)
        _, res = count_saved(lambda: layer(x), exclude=[layer], attribute=layer)
        m = ModelShape(family="gpt2", hidden=h, layers=1, heads=a, vocab=10, positions=s)
        predicted = sum(estimator.layer_activation_terms(m, s, b, e, mask_bytes=e).values())
        assert res.total_bytes >= predicted
        assert res.total_bytes / predicted == pytest.approx(1.0, abs=0.03)
        # the remainder is the two norms' mean/rstd: at most 8 bytes per token per norm
        assert 0 < res.total_bytes - predicted <= 2 * 8 * s * b


def test_against_activation_chapter_result() -> None:
    """If the activation chapter has a result on disk, our per-layer terms must reproduce its paper column."""
    files = sorted(ROOT.glob("results/*/activation_memory.json"))
    assert files, "results/ holds no activation_memory result: run 'handbook run' and commit it"
    env = json.loads(files[0].read_text())
    assert env.get("status") == "ok", f"{files[0]} is not an ok result"
    d = env["data"]
    sh = d["shape"]
    m = ModelShape(family="gpt2", hidden=sh["hidden"], layers=1, heads=sh["heads"], vocab=10, positions=sh["seq"])
    for key, e in (("bf16", 2), ("fp32", 4)):
        terms = estimator.layer_activation_terms(m, sh["seq"], sh["batch"], e, mask_bytes=e)
        measured = d[key]["saved_bytes"]
        # Measured includes LayerNorm statistics (8 bytes per token per norm): within 3 %.
        assert measured / sum(terms.values()) == pytest.approx(1.0, abs=0.03)


def test_zero_sharding_and_precisions() -> None:
    m = BUILTIN["llama-2-7b"]
    n = estimator.parameter_count(m)
    base = estimator.estimate(estimator.Setup(optimizer="adamw", precision="bf16-mixed"), shape=m)
    full = base["unsharded_bytes"]
    assert full == {"params": 4 * n, "grads": 4 * n, "optimizer": 8 * n + 4 * len(parameter_shapes(m)), "master": 0}
    for stage in (0, 1, 2, 3):
        r = estimator.estimate(estimator.Setup(zero=stage, gpus=8), shape=m)["per_device_bytes"]
        ref = formulas.zero_bytes_per_device(1, stage, 8, weight_bytes=full["params"], grad_bytes=full["grads"],
                                             optimizer_bytes=full["optimizer"])
        assert r["params"] == -(-int(ref["params_bytes"] * 8) // 8) if stage >= 3 else r["params"] == full["params"]
        assert abs(r["optimizer"] - ref["optimizer_bytes"]) < 1
        assert r["total"] == r["params"] + r["grads"] + r["optimizer"] + r["activations"]
    pure = estimator.estimate(estimator.Setup(precision="bf16"), shape=m)["per_device_bytes"]
    assert pure["params"] == 2 * n and pure["grads"] == 2 * n
    sgd = estimator.estimate(estimator.Setup(optimizer="sgd"), shape=m)["per_device_bytes"]
    assert sgd["optimizer"] == 0
    ams = estimator.estimate(estimator.Setup(optimizer="adam-amsgrad"), params=1000)["per_device_bytes"]
    assert ams["optimizer"] == 12 * 1000 + 4
    eight = estimator.estimate(estimator.Setup(optimizer="adamw-8bit"), params=10_000)["per_device_bytes"]
    assert eight["optimizer"] == 2 * 10_000 + 2 * 4 * 40   # 40 blocks of 256
    small = estimator.estimate(estimator.Setup(optimizer="adamw-8bit"), params=4095)["per_device_bytes"]
    assert small["optimizer"] == 8 * 4095                  # under min_8bit_size: 32-bit states


def test_checkpointing_orders_activations() -> None:
    m = BUILTIN["gpt2-xl"]
    acts = {c: estimator.estimate(estimator.Setup(checkpointing=c), shape=m)["per_device_bytes"]["activations"]
            for c in estimator.CHECKPOINTING}
    assert acts["full"] < acts["selective"] < acts["none"]


def test_bad_inputs_raise_naming_the_field() -> None:
    with pytest.raises(estimator.EstimateError, match="optimizer 'lion'"):
        estimator.Setup(optimizer="lion")
    with pytest.raises(estimator.EstimateError, match="batch"):
        estimator.Setup(batch=-1)
    with pytest.raises(estimator.EstimateError, match="zero"):
        estimator.Setup(zero=4)
    with pytest.raises(ShapeError, match="hidden"):
        ModelShape(family="gpt2", hidden=-8, layers=1, heads=1, vocab=4, positions=4)
    with pytest.raises(estimator.EstimateError, match="adafactor"):
        estimator.estimate(estimator.Setup(optimizer="adafactor"), params=100)
    with pytest.raises(estimator.EstimateError, match="learned positions"):
        estimator.estimate(estimator.Setup(seq=1024), shape=BUILTIN["bert-base"])


# --- the CLI ----------------------------------------------------------------------------------------

def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = estimate_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_matches_library(capsys) -> None:
    code, out, _ = run_cli(capsys, "--model", "llama-2-7b", "--optimizer", "adamw", "--precision", "bf16-mixed",
                           "--batch", "2", "--seq", "4096", "--checkpointing", "full", "--zero", "3", "--gpus",
                           "8", "--json")
    assert code == 0
    got = json.loads(out)
    want = estimator.estimate(estimator.Setup("adamw", "bf16-mixed", 2, 4096, "full", 3, 8), shape=BUILTIN["llama-2-7b"])
    assert got["parameters"] == 6_738_415_616
    assert got["per_device_bytes"] == want["per_device_bytes"]
    assert set(got["per_device_bytes"]) == {"params", "grads", "optimizer", "activations", "total"}
    assert all(isinstance(v, int) for v in got["per_device_bytes"].values())


def test_cli_table_and_config(capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128,
                               "vocab_size": 500}))
    code, out, _ = run_cli(capsys, "--config", str(cfg), "--optimizer", "sgd-momentum", "--precision", "fp32")
    assert code == 0
    n = estimator.parameter_count(shape_from_config(json.loads(cfg.read_text())))
    assert f"{n:,} parameters" in out and "NVIDIA/nccl issue #1264" in out
    assert any(line.startswith("H100 80 GB") and " fits " in line for line in out.splitlines())
    assert any(line.startswith("T4 16 GB") and " fits " in line for line in out.splitlines())  # fp32: T4 computes it
    for phase in ("end of forward", "worst point of backward", "optimizer step (foreach)", "between steps"):
        assert phase in out
    assert "<- peak" in out and "the peak leaves out allocator fragmentation" in out


@pytest.mark.parametrize("argv, needle", [
    (["--model", "gpt5"], "unknown model 'gpt5'"),
    (["--params", "1000", "--optimizer", "lion"], "unknown optimizer 'lion'"),
    (["--params", "-5"], "--params"),
    (["--model", "gpt2-xl", "--batch", "-1"], "--batch"),
    (["--model", "gpt2-xl", "--seq", "0"], "--seq"),
    (["--model", "gpt2-xl", "--zero", "5"], "zero"),
    (["--model", "gpt2-xl", "--precision", "int4"], "precision 'int4'"),
    (["--model", "gpt2-xl", "--checkpointing", "some"], "checkpointing 'some'"),
    (["--config", "/nonexistent/config.json"], "/nonexistent/config.json"),
    ([], "give exactly one of"),
    (["--family", "llama", "--hidden", "64"], "--layers"),
])
def test_cli_bad_input_one_line(capsys, argv: list[str], needle: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert needle in err and err.count("\n") == 1 and err.startswith("handbook estimate: error:")


def test_cli_missing_config_field(capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
                               "vocab_size": 100, "intermediate_size": 128, "max_position_embeddings": 64}))
    code, _, err = run_cli(capsys, "--config", str(cfg))
    assert code == 2 and "missing field 'num_attention_heads'" in err and err.count("\n") == 1


def test_cli_answers_fast_without_torch() -> None:
    """The benchmark: ``handbook estimate`` answers in under 0.3 s and never imports torch.

    CPU time (user + system of the child) is checked on every run; wall time, best of five, when the
    machine is not oversubscribed (load average at most its core count), since a shared host's queue
    is not the command's doing.
    """
    import os
    import resource

    code = ("import sys; from generator.cli import main; "
            "rc = main(['estimate', '--model', 'llama-2-70b', '--json']); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert proc.returncode == 0, proc.stderr
        best_wall = min(best_wall, wall)
        best_cpu = min(best_cpu, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    assert best_cpu < 0.3, f"handbook estimate used {best_cpu:.3f} s of CPU"
    if os.getloadavg()[0] <= (os.cpu_count() or 1):
        assert best_wall < 0.3, f"handbook estimate took {best_wall:.3f} s"


def test_against_checkpointing_chapter_result() -> None:
    """The checkpointing chapter's measured policies, against the estimator's checkpointing option.

    Its GPT (fp32, CPU: dropout masks at 4 bytes) reports the activations at the step's peak. No
    checkpointing and selective recomputation of the attention core: within 3 % of the estimator's
    activations (LayerNorm statistics are outside the formula). Full checkpointing: what it saves at the
    peak, against what the estimator says it saves, within 10 % (the recomputed layer's timing in backward).
    """
    files = sorted(ROOT.glob("results/*/checkpointing.json"))
    assert files, "results/ holds no checkpointing result: run 'handbook run' and commit it"
    env = json.loads(files[0].read_text())
    assert env.get("status") == "ok", f"{files[0]} is not an ok result"
    cfg, pol = env["config"], env["data"]["policies"]
    m = ModelShape(family="gpt2", hidden=cfg["hidden"], layers=cfg["layers"], heads=cfg["heads"], vocab=cfg["vocab"],
                   positions=cfg["seq"], dropout=cfg["dropout"] > 0)
    acts = {c: estimator.activation_terms(m, estimator.Setup(precision="fp32", batch=cfg["batch"], seq=cfg["seq"],
                                                             checkpointing=c, attention="eager", device="cpu"))
            for c in estimator.CHECKPOINTING}
    stored = {c: a["total_bytes"] - a["recompute_bytes"] for c, a in acts.items()}
    assert pol["none"]["activations_bytes"] / stored["none"] == pytest.approx(1.0, abs=0.03)
    assert pol["selective_attention_core"]["activations_bytes"] / stored["selective"] == pytest.approx(1.0, abs=0.03)
    saved_measured = pol["none"]["peak_bytes"] - pol["every_layer"]["peak_bytes"]
    saved_predicted = acts["none"]["total_bytes"] - acts["full"]["total_bytes"]
    assert saved_measured / saved_predicted == pytest.approx(1.0, abs=0.1)


# --- precision layouts, the peak by phase, device and attention, cards ------------------------------

def test_precision_layouts_bytes_per_param() -> None:
    """Each layout's persistent bytes per parameter with Adam (one flat tensor: the step tensor is 4 bytes)."""
    want = {"fp32": (4, 4, 8), "bf16-mixed": (4, 4, 8), "fp16-mixed": (4, 4, 8), "bf16": (2, 2, 4),
            "bf16-master": (2, 2, 12), "fp16-master": (2, 2, 12), "fsdp2-bf16": (4, 4, 8)}
    assert set(want) == set(estimator.PRECISIONS)
    n = 1000
    for name, (w, g, o) in want.items():
        setup = estimator.Setup(optimizer="adam", precision=name, zero=3 if name == "fsdp2-bf16" else 0)
        full = estimator.estimate(setup, params=n)["unsharded_bytes"]
        assert (full["params"], full["grads"], full["optimizer"]) == (w * n, g * n, o * n + 4), name
    # the optimizer chapter's regimes are the same layouts, byte for byte
    for regime, layout in formulas.LAYOUT_OF_REGIME.items():
        full = estimator.estimate(estimator.Setup(optimizer="adam", precision=layout), params=n)["unsharded_bytes"]
        assert (full["params"] + full["grads"] + full["optimizer"] - 4) == formulas.bytes_per_param(regime) * n
    with pytest.raises(estimator.EstimateError, match="fsdp2-bf16 is FSDP2's MixedPrecisionPolicy: it needs zero 3"):
        estimator.Setup(precision="fsdp2-bf16", zero=2)
    assert "2^-8" in estimator.estimate(estimator.Setup(precision="bf16"), params=n)["notes"][0]


def test_zero_paper_figure_1() -> None:
    """Rajbhandari et al. 2020, figure 1: 7.5B parameters, 64 GPUs, Adam, mixed precision (K = 12):
    120 / 31.4 / 16.6 / 1.9 GB per device for baseline / P_os / P_os+g / P_os+g+p, in 10^9 bytes."""
    paper = (120, 31.4, 16.6, 1.9)
    got = []
    for stage in range(4):
        r = estimator.estimate(estimator.Setup(optimizer="adam", precision="bf16-master", zero=stage, gpus=64),
                               params=7_500_000_000)["per_device_bytes"]
        got.append(r["params"] + r["grads"] + r["optimizer"])
    assert tuple(round(x / 1e9, 1) for x in got) == paper
    assert round(got[0] / 2**30, 1) != paper[0]   # GiB would not give the paper's figures: its GB are 10^9 bytes


def test_peak_is_the_worst_phase_term_by_term() -> None:
    m = BUILTIN["gpt2-xl"]
    n = estimator.parameter_count(m)
    r = estimator.estimate(estimator.Setup(optimizer="adamw", precision="bf16-mixed", seq=1024), shape=m)
    ph = r["phases"]
    assert set(ph) == {"forward", "backward", "optimizer", "between_steps"}
    for p in ph.values():
        assert p["total_bytes"] == sum(p["terms_bytes"].values())
    assert r["peak_bytes"] == max(p["total_bytes"] for p in ph.values()) == ph[r["peak_phase"]]["total_bytes"]
    assert r["persistent_sum_bytes"] == r["per_device_bytes"]["total"]
    # autocast's cast weights: 2 bytes per parameter a matmul reads, biases included: not GPT-2's lookup-only
    # table (the positions) nor its norms' weights and biases (two LayerNorms a layer and the final one)
    norms = (2 * 2 * m.layers + 2) * m.hidden
    assert ph["forward"]["terms_bytes"]["cast_weights"] == 2 * (n - m.positions * m.hidden - norms)
    # backward keeps the copies the matmuls saved: weights, not biases (4h + h + 3h + h... = 9h + ... a layer)
    biases = m.layers * (3 * m.hidden + m.hidden + 4 * m.hidden + m.hidden)
    assert ph["backward"]["cast_saved_bytes"] == 2 * (n - m.positions * m.hidden - norms - biases)
    # foreach (torch's default on CUDA): temporaries 1.0x the updated fp32 weights
    assert ph["optimizer"]["terms_bytes"]["temporaries"] == 4 * n and r["setup"]["optimizer_impl_used"] == "foreach"
    assert ph["between_steps"]["terms_bytes"] == {"params": 4 * n, "grads": 0, "optimizer": ph["forward"]["terms_bytes"]
                                                  ["optimizer"], "ddp_buckets": 0}
    # the backward's start holds the loss's two fp32 logit-sized temporaries
    assert 2 * 4 * 1024 * m.vocab in ph["backward"]["terms_bytes"].values() or ph["backward"]["label"].endswith("end)")
    kept = estimator.estimate(estimator.Setup(set_to_none=False), shape=m)["phases"]["between_steps"]
    assert kept["terms_bytes"]["grads"] == 4 * n
    fused = estimator.estimate(estimator.Setup(optimizer_impl="fused"), shape=m)["phases"]["optimizer"]
    loop = estimator.estimate(estimator.Setup(device="cpu"), shape=m)
    assert fused["terms_bytes"]["temporaries"] == 0
    largest = max(formulas.numel(x) for x in estimator.tensor_shapes(m))
    assert loop["setup"]["optimizer_impl_used"] == "for-loop"
    assert loop["phases"]["optimizer"]["terms_bytes"]["temporaries"] == 2 * 4 * largest
    with pytest.raises(estimator.EstimateError, match="adafactor has no fused"):
        estimator.Setup(optimizer="adafactor", optimizer_impl="fused")


def test_measured_optimizer_temporaries_back_the_constants() -> None:
    """The step-temporary constants against the optimizer chapter's measurement on this repository's host."""
    from experiments import optimizer_state

    env = json.loads((ROOT / "results" / "cpu-amd-epyc-2c-24gb" / "optimizer_state.json").read_text())
    summary = optimizer_state.summarize(env["data"])["optimizers"]
    for opt in ("adam", "adamw", "adam-amsgrad", "sgd"):
        assert summary[opt]["foreach"]["temporaries_over_params_ratio"] == pytest.approx(
            estimator.FOREACH_TEMPORARIES[opt], abs=0.01)
        assert summary[opt]["fused"]["temporaries_over_params_ratio"] < 0.01


def test_master_layout_step_and_zero3_units() -> None:
    m = BUILTIN["llama-2-7b"]
    n = estimator.parameter_count(m)
    layer, root = estimator.unit_parameters(m)
    assert root + m.layers * layer == n and root == 2 * 32000 * 4096 + 4096
    shard = -(-n // 8)
    # the step holds the fp32 gradient copies and the larger of the 16-bit gradients and foreach's temporaries
    r1 = estimator.estimate(estimator.Setup(precision="bf16-master", zero=1, gpus=8), shape=m)
    opt = r1["phases"]["optimizer"]["terms_bytes"]
    assert opt["master_grads"] == 4 * shard and (opt["grads"], opt["temporaries"]) == (2 * n, 0)
    assert r1["phases"]["forward"]["terms_bytes"]["cast_weights"] == 0           # 16-bit weights: nothing to cast
    assert r1["phases"]["forward"]["terms_bytes"]["ddp_buckets"] == 2 * n
    r2 = estimator.estimate(estimator.Setup(precision="bf16-master", zero=2, gpus=8), shape=m)
    opt = r2["phases"]["optimizer"]["terms_bytes"]
    assert (opt["grads"], opt["temporaries"]) == (0, 4 * shard)                   # foreach over the fp32 shard
    z3 = estimator.estimate(estimator.Setup(precision="fsdp2-bf16", zero=3, gpus=8), shape=m)
    t = z3["phases"]["forward"]["terms_bytes"]
    assert t["gathered_params"] == 2 * (root + 2 * layer) and t["cast_weights"] == 0
    assert z3["per_device_bytes"]["params"] == -(-4 * n // 8)


def test_attention_and_device() -> None:
    m = BUILTIN["gpt2-xl"]
    s, b, a = 1024, 1, m.heads
    eager = estimator.activation_terms(m, estimator.Setup(attention="eager", precision="bf16", seq=s))
    sdpa = estimator.activation_terms(m, estimator.Setup(attention="sdpa", precision="bf16", seq=s))
    per = estimator.layer_activation_terms(m, s, b, 2, 1)
    # sdpa keeps the fp32 log-sum-exp per query row instead of the scores, their mask and dropped copy
    assert eager["per_layer_bytes"] - sdpa["per_layer_bytes"] == per["scores_bytes"] - 4 * a * s * b
    # eager under autocast: the residual stream and norms stay fp32, each Linear keeps its 16-bit cast (r=4, cast)
    cuda = estimator.activation_terms(m, estimator.Setup(attention="eager", seq=s))
    cpu = estimator.activation_terms(m, estimator.Setup(attention="eager", seq=s, device="cpu"))
    as2b = a * s * s * b
    per_ac = estimator.layer_activation_terms(m, s, b, 2, 1, r=4, cast=True)
    assert per_ac["norm_bytes"] == (4 + 2) * 2 * s * b * m.hidden   # each LayerNorm: fp32 input, one bf16 cast
    # ... and the softmax is fp32 (on CUDA's fp32 list; the fp32 causal mask promotes the scores anyway):
    # its output, the dropout's 1-byte mask and the dropped 16-bit copy
    assert cuda["per_layer_bytes"] - sum(per_ac.values()) == (4 + 1 + 2) * as2b - per_ac["scores_bytes"]
    # on a CPU the dropout mask takes the dtype of what it masks (2 bytes), and CPU autocast runs the softmax
    # in its input's dtype: 16 bits, unless transformers' GPT-2 (a shape read from its config) adds its fp32 mask
    per_cpu = estimator.layer_activation_terms(m, s, b, 2, 2, r=4, cast=True)
    assert cpu["per_layer_bytes"] == sum(per_cpu.values())
    hf = replace(m, hidden_act="gelu_new")
    cpu_hf = estimator.activation_terms(hf, estimator.Setup(attention="eager", seq=s, device="cpu"))
    gelu_extra = estimator.activation_function_extra_bytes(hf, s, b, estimator.Setup(device="cpu"))
    assert cpu_hf["per_layer_bytes"] - sum(per_cpu.values()) - gelu_extra == \
        (4 + 2 + 2) * as2b - per_cpu["scores_bytes"]
    # sdpa on a CPU with attention dropout falls back to the math path, which computes in fp32: fp32 Q, K, V
    # and the scores' softmax, mask and dropped copy in fp32; its output back in 16 bits
    cpu_sdpa = estimator.activation_terms(m, estimator.Setup(attention="sdpa", seq=s, device="cpu"))
    per_math = estimator.layer_activation_terms(m, s, b, 2, 2, r=4, cast=True, math_sdpa=True)
    assert cpu_sdpa["per_layer_bytes"] == sum(per_math.values())
    assert per_math["scores_bytes"] == 3 * 4 * as2b
    assert per_math["attention_bytes"] == (3 * 4 + 2) * s * b * m.hidden
    # an unfused gelu_new (GPT-2's activation_function) keeps x, 0.5x, tanh and 1 + tanh besides its output
    from types import SimpleNamespace

    g = SimpleNamespace(hidden_act="gelu_new", d_ff=m.d_ff)
    assert estimator.activation_function_extra_bytes(g, s, b, estimator.Setup()) == (2 + 2 * 4) * s * b * m.d_ff
    assert estimator.activation_function_extra_bytes(g, s, b, estimator.Setup(device="cpu")) == 3 * 2 * s * b * m.d_ff
    assert estimator.activation_function_extra_bytes(m, s, b, estimator.Setup()) == 0   # no gelu_new declared
    with pytest.raises(estimator.EstimateError, match="unknown attention 'flash'"):
        estimator.Setup(attention="flash")
    with pytest.raises(estimator.EstimateError, match="unknown device 'tpu'"):
        estimator.Setup(device="tpu")


def test_cards_report_driver_totals_and_dtypes() -> None:
    cards = {n: (c, d) for n, c, d, _ in estimator.CARDS}
    assert cards["A100 40 GB"][0] == 40960 * 2**20 and cards["A100 80 GB"][0] == 81920 * 2**20
    assert cards["H100 80 GB"][0] == 81559 * 2**20 and "H200 141 GB" not in cards   # no source found: left out
    tiny = estimator.estimate(estimator.Setup(precision="bf16-mixed"), params=1000)
    verdicts = {f["gpu"]: f["verdict"] for f in tiny["fits"]}
    assert verdicts["T4 16 GB"] == verdicts["V100 16 GB"] == "no bf16"   # no bf16 before Ampere
    assert verdicts["A100 40 GB"] == "fits" and not any(f["fits"] for f in tiny["fits"] if not f["dtype_ok"])
    fp16 = {f["gpu"]: f["fits"] for f in estimator.estimate(estimator.Setup(precision="fp16-mixed"), params=1000)["fits"]}
    assert fp16["T4 16 GB"]
    # the verdict is the peak plus the CUDA context against the total
    edge = cards["A100 40 GB"][0] - estimator.CUDA_CONTEXT_BYTES
    for peak, ok in ((edge, True), (edge + 1, False)):
        f = {x["gpu"]: x["fits"] for x in estimator.fits(peak, "bf16-mixed")}
        assert f["A100 40 GB"] is ok


def test_cli_json_peak_and_new_options(capsys) -> None:
    code, out, _ = run_cli(capsys, "--model", "gpt2-xl", "--attention", "eager", "--device", "cpu",
                           "--optimizer-impl", "foreach", "--keep-grads", "--json")
    assert code == 0
    got = json.loads(out)
    want = estimator.estimate(estimator.Setup(attention="eager", device="cpu", optimizer_impl="foreach",
                                              set_to_none=False), shape=BUILTIN["gpt2-xl"])
    assert got["peak_bytes"] == want["peak_bytes"] and got["peak_phase"] == want["peak_phase"]
    assert got["phases"] == want["phases"] and got["persistent_sum_bytes"] == got["per_device_bytes"]["total"]
    assert got["headroom_bytes"] == 0      # sized for a CPU: no CUDA context
    code, _, err = run_cli(capsys, "--model", "gpt2-xl", "--attention", "flash")
    assert code == 2 and "unknown attention 'flash'" in err and err.count("\n") == 1


def test_cpu_autocast_keeps_softmax_and_layer_norm_in_their_input_dtype() -> None:
    """What ``attention_scores_bytes`` relies on: CPU autocast has neither op on a list (a bf16 input stays
    bf16), where CUDA autocast runs both in fp32 (the torch.amp op reference)."""
    import torch.nn.functional as F

    x = torch.randn(2, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.softmax(x, -1).dtype == torch.bfloat16 and F.layer_norm(x, (8,)).dtype == torch.bfloat16
        assert (torch.randn(2, 8) @ torch.randn(8, 8)).dtype == torch.bfloat16   # matmuls do autocast


def test_cli_context_headroom(capsys) -> None:
    """--context-mib puts the host's measured CUDA context beside the peak instead of the cited figure."""
    code, out, _ = run_cli(capsys, "--params", "1000", "--context-mib", "500", "--json")
    got = json.loads(out)
    assert code == 0 and got["headroom_bytes"] == 500 * 2**20 and got["headroom_source"] == "given (--context-mib)"
    default = estimator.estimate(estimator.Setup(), params=1000)
    assert default["headroom_bytes"] == estimator.CUDA_CONTEXT_BYTES == 781 * 2**20
    assert estimator.estimate(estimator.Setup(device="cpu"), params=1000)["headroom_bytes"] == 0


def test_cpu_sdpa_with_dropout_takes_the_math_path() -> None:
    """What ``attention_scores_bytes`` relies on: on a CPU, SDPA without dropout is the flash kernel (no s x s
    saved); with dropout it falls back to the math path (softmax, a dropout multiply, bmm), which saves the scores."""
    import torch.nn.functional as F

    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    assert "Flash" in type(F.scaled_dot_product_attention(q, q, q, is_causal=True).grad_fn).__name__

    def chain(node, depth=8):
        names = []
        while node is not None and depth:
            names.append(type(node).__name__)
            node, depth = (node.next_functions[0][0] if node.next_functions else None), depth - 1
        return names

    math = chain(F.scaled_dot_product_attention(q, q, q, dropout_p=0.1, is_causal=True).grad_fn)
    assert any("Softmax" in n for n in math) and any("Bmm" in n for n in math)
