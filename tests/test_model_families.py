"""Model families: every config ``handbook estimate`` reads gives exactly the parameters of transformers' own class.

Each case writes a small config.json (small dimensions, so building is fast), reads it with
``model_shapes.load_config``, builds the family's transformers class from the same config on the meta device
(nothing is allocated or downloaded) and compares the parameter tensors name by name and the count. Realistic
published shapes are checked the same way, and against the parameter counts their model cards give.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from experiments.lib import estimator
from experiments.lib.model_shapes import (FAMILIES, ModelShape, load_config, parameter_shapes,
                                          shape_from_config)
from generator.estimate import main as estimate_main

SMALL = {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 96, "vocab_size": 101, "max_position_embeddings": 128}

# model_type -> fields beyond SMALL. Fields that change no tensor (rope_scaling, sliding windows) are there to
# show they are read past; fields left out take the config class's default (head_dim for gemma, tying).
CASES = {
    "gpt2": {"model_type": "gpt2", "n_embd": 64, "n_layer": 3, "n_head": 4, "n_positions": 128, "vocab_size": 101},
    "gpt2-untied": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128,
                    "vocab_size": 101, "n_inner": 80, "tie_word_embeddings": False},
    "bert": {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 96, "vocab_size": 101, "max_position_embeddings": 128, "type_vocab_size": 3},
    "llama-1": dict(SMALL, model_type="llama", num_key_value_heads=4),
    "llama-2-gqa-rope-scaling": dict(SMALL, model_type="llama", rope_scaling={"type": "linear", "factor": 2.0}),
    "llama-3.2-tied-biases": dict(SMALL, model_type="llama", tie_word_embeddings=True, attention_bias=True,
                                  mlp_bias=True, head_dim=24,
                                  rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                                "original_max_position_embeddings": 64, "rope_type": "llama3"}),
    "mistral": dict(SMALL, model_type="mistral", sliding_window=32, attention_bias=True),
    "qwen2": dict(SMALL, model_type="qwen2"),
    "qwen2-tied": dict(SMALL, model_type="qwen2", tie_word_embeddings=True, use_sliding_window=False),
    "qwen3": dict(SMALL, model_type="qwen3", head_dim=24),
    "qwen3-bias": dict(SMALL, model_type="qwen3", head_dim=8, attention_bias=True, tie_word_embeddings=True),
    "gemma": dict(SMALL, model_type="gemma", head_dim=24),
    "gemma-default-head-dim": dict(SMALL, model_type="gemma"),
    "gemma2": dict(SMALL, model_type="gemma2", head_dim=24),
    "gemma3_text": dict(SMALL, model_type="gemma3_text", head_dim=24, attention_bias=True),
    "phi3": dict(SMALL, model_type="phi3", pad_token_id=0, resid_pdrop=0.1),
    "phi3-mha": dict(SMALL, model_type="phi3", pad_token_id=0, num_key_value_heads=4, tie_word_embeddings=True),
    "mixtral": dict(SMALL, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(SMALL, model_type="qwen2_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48,
                      shared_expert_intermediate_size=80),
    "qwen2_moe-sparse-step": dict(SMALL, model_type="qwen2_moe", num_hidden_layers=4, num_experts=3,
                                  num_experts_per_tok=1, moe_intermediate_size=40, shared_expert_intermediate_size=72,
                                  decoder_sparse_step=2, mlp_only_layers=[3], qkv_bias=False),
    "qwen3_moe": dict(SMALL, model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48,
                      head_dim=24),
    "qwen3_moe-dense-layers": dict(SMALL, model_type="qwen3_moe", num_experts=5, num_experts_per_tok=3,
                                   moe_intermediate_size=32, mlp_only_layers=[0, 2], tie_word_embeddings=True),
}

# Published config.json values (the fields that fix a tensor), and the parameter count the class gives.
REAL = {
    # https://huggingface.co/Qwen/Qwen2-0.5B/blob/main/config.json
    "qwen2-0.5b": ({"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
                    "num_hidden_layers": 24, "num_key_value_heads": 2, "vocab_size": 151936,
                    "tie_word_embeddings": True, "max_position_embeddings": 131072}, 494_032_768),
    # https://huggingface.co/google/gemma-2-2b/blob/main/config.json
    "gemma-2-2b": ({"model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216, "num_attention_heads": 8,
                    "num_key_value_heads": 4, "head_dim": 256, "num_hidden_layers": 26, "vocab_size": 256000,
                    "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
                    "max_position_embeddings": 8192}, 2_614_341_888),
    # https://huggingface.co/microsoft/Phi-3-mini-4k-instruct/blob/main/config.json
    "phi-3-mini": ({"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_attention_heads": 32,
                    "num_key_value_heads": 32, "num_hidden_layers": 32, "vocab_size": 32064, "pad_token_id": 32000,
                    "tie_word_embeddings": False, "max_position_embeddings": 4096}, 3_821_079_552),
    # https://huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json
    "mixtral-8x7b": ({"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
                      "num_attention_heads": 32, "num_key_value_heads": 8, "num_hidden_layers": 32,
                      "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000,
                      "max_position_embeddings": 32768}, 46_702_792_704),
    # https://huggingface.co/Qwen/Qwen1.5-MoE-A2.7B/blob/main/config.json
    "qwen1.5-moe-a2.7b": ({"model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632,
                           "num_attention_heads": 16, "num_key_value_heads": 16, "num_hidden_layers": 24,
                           "num_experts": 60, "num_experts_per_tok": 4, "moe_intermediate_size": 1408,
                           "shared_expert_intermediate_size": 5632, "decoder_sparse_step": 1, "vocab_size": 151936,
                           "tie_word_embeddings": False, "max_position_embeddings": 8192}, 14_315_784_192),
    # https://huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json
    "qwen3-30b-a3b": ({"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
                       "moe_intermediate_size": 768, "num_attention_heads": 32, "num_key_value_heads": 4,
                       "head_dim": 128, "num_hidden_layers": 48, "num_experts": 128, "num_experts_per_tok": 8,
                       "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936,
                       "tie_word_embeddings": False, "max_position_embeddings": 40960}, 30_532_122_624),
    # https://huggingface.co/google/gemma-3-1b-pt/blob/main/config.json
    "gemma-3-1b": ({"model_type": "gemma3_text", "hidden_size": 1152, "intermediate_size": 6912,
                    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "num_hidden_layers": 26,
                    "vocab_size": 262144, "max_position_embeddings": 32768}, 999_885_952),
    # https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json
    "llama-3.2-1b": ({"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 32,
                      "num_key_value_heads": 8, "head_dim": 64, "num_hidden_layers": 16, "vocab_size": 128256,
                      "tie_word_embeddings": True, "max_position_embeddings": 131072,
                      "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                       "original_max_position_embeddings": 8192, "rope_type": "llama3"}},
                     1_235_814_400),
    # https://huggingface.co/Qwen/Qwen3-0.6B/blob/main/config.json
    "qwen3-0.6b": ({"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072, "num_attention_heads": 16,
                    "num_key_value_heads": 8, "head_dim": 128, "num_hidden_layers": 28, "vocab_size": 151936,
                    "tie_word_embeddings": True, "max_position_embeddings": 40960}, 596_049_920),
}


@pytest.fixture(scope="module")
def hf():
    """transformers, imported once for the module (a test dependency only: the estimator imports no torch)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return torch, transformers


def meta_model(hf, cfg: dict):
    torch, transformers = hf
    kwargs = {k: v for k, v in cfg.items() if k != "model_type"}
    config = transformers.AutoConfig.for_model(cfg["model_type"], **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            if cfg["model_type"] == "bert":
                return transformers.BertModel(config, add_pooling_layer=True)
            return transformers.AutoModelForCausalLM.from_config(config)


def hf_tensors(model, family: str) -> dict[str, tuple[int, ...]]:
    strip = "transformer." if family == "gpt2" else ""   # GPT2LMHeadModel keeps the body under .transformer
    return {n.removeprefix(strip): tuple(p.shape) for n, p in model.named_parameters()}


def write(tmp_path: Path, cfg: dict, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_config_gives_the_classes_parameters_exactly(hf, tmp_path: Path, case: str) -> None:
    cfg = CASES[case]
    shape = load_config(write(tmp_path, cfg))
    model = meta_model(hf, cfg)
    assert dict(parameter_shapes(shape)) == hf_tensors(model, shape.family)
    assert estimator.parameter_count(shape) == sum(p.numel() for p in model.parameters())


def test_every_family_is_covered() -> None:
    assert {load_config_family(c) for c in CASES.values()} == set(FAMILIES)


def load_config_family(cfg: dict) -> str:
    return shape_from_config(cfg).family


@pytest.mark.parametrize("name", list(REAL))
def test_published_shapes_give_the_published_counts(hf, name: str) -> None:
    cfg, published = REAL[name]
    shape = shape_from_config(cfg)
    model = meta_model(hf, cfg)
    assert estimator.parameter_count(shape) == sum(p.numel() for p in model.parameters()) == published


BAD = [
    (dict(CASES["qwen2"], num_key_value_heads=3), "field 'num_key_value_heads' (3) does not divide"),
    ({k: v for k, v in CASES["mistral"].items() if k != "num_key_value_heads"}, "missing field 'num_key_value_heads'"),
    (dict(CASES["qwen3"], head_dim="24"), "field 'head_dim' must be a non-negative integer, not '24'"),
    (dict(CASES["gemma2"], final_logit_softcapping="30"), "field 'final_logit_softcapping' must be a positive number"),
    (dict(CASES["qwen3"], attention_bias="yes"), "field 'attention_bias' must be true or false, not 'yes'"),
    (dict(CASES["mixtral"], num_local_experts=0), "field 'num_local_experts' must be a positive integer, not 0"),
    (dict(CASES["mixtral"], num_experts_per_tok=5), "field 'num_experts_per_tok' (5) exceeds num_local_experts (4)"),
    (dict(CASES["qwen2_moe"], moe_intermediate_size=-1), "field 'moe_intermediate_size' must be a non-negative"),
    (dict(CASES["qwen2_moe"], shared_expert_intermediate_size=1.5), "field 'shared_expert_intermediate_size'"),
    (dict(CASES["qwen3_moe"], decoder_sparse_step=0), "field 'decoder_sparse_step' must be a positive integer"),
    (dict(CASES["qwen3_moe"], mlp_only_layers=[1, "2"]), "field 'mlp_only_layers' must be a list of layer indices"),
    (dict(CASES["phi3"], resid_pdrop="0.1"), "field 'resid_pdrop' must be a probability"),
    ({k: v for k, v in CASES["phi3"].items() if k != "intermediate_size"}, "missing field 'intermediate_size'"),
    (dict(CASES["gemma"], model_type="gemma3"), "model_type 'gemma3' is the multimodal Gemma 3"),
    (dict(CASES["llama-1"], model_type=["llama"]), "field 'model_type' must be a string"),
    (dict(CASES["gemma2"], hidden_activation=7), "field 'hidden_activation' must be an activation's name, not 7"),
    (dict(CASES["gpt2"], activation_function=""), "field 'activation_function' must be an activation's name"),
]


@pytest.mark.parametrize("cfg, message", BAD)
def test_bad_fields_are_one_line_naming_the_file_and_field(tmp_path: Path, capsys, cfg: dict, message: str) -> None:
    path = write(tmp_path, cfg)
    assert estimate_main(["--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and str(path) in err and message in err, err


def test_an_unknown_model_type_still_suggests_params_or_a_typed_shape(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, dict(SMALL, model_type="falcon"))
    assert estimate_main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "model_type 'falcon' is not supported" in err and "--params" in err and "--family" in err


# Typed shapes (--family --hidden ... --head-dim and the MoE flags) for the configs they can express: the same
# parameters as reading the config.
TYPED = {
    "qwen2": ["--family", "qwen2", "--kv-heads", "2", "--intermediate", "96"],
    "qwen3": ["--family", "qwen3", "--kv-heads", "2", "--intermediate", "96", "--head-dim", "24"],
    "gemma2": ["--family", "gemma2", "--kv-heads", "2", "--intermediate", "96", "--head-dim", "24"],
    "phi3": ["--family", "phi3", "--kv-heads", "2", "--intermediate", "96"],
    "mixtral": ["--family", "mixtral", "--kv-heads", "2", "--intermediate", "96", "--experts", "4", "--top-k", "2"],
    "qwen2_moe": ["--family", "qwen2_moe", "--kv-heads", "2", "--intermediate", "96", "--experts", "4", "--top-k",
                  "2", "--moe-intermediate", "48", "--shared-intermediate", "80"],
    "qwen3_moe": ["--family", "qwen3_moe", "--kv-heads", "2", "--intermediate", "96", "--experts", "4", "--top-k",
                  "2", "--moe-intermediate", "48", "--head-dim", "24"],
}
DIMS = ["--hidden", "64", "--layers", "3", "--heads", "4", "--vocab", "101", "--seq", "128", "--json"]


@pytest.mark.parametrize("case", list(TYPED))
def test_typed_shape_equals_the_config(tmp_path: Path, capsys, case: str) -> None:
    assert estimate_main(TYPED[case] + DIMS) == 0
    typed = json.loads(capsys.readouterr().out)
    cfg = dict(CASES[case], resid_pdrop=0.0) if case == "phi3" else CASES[case]   # typed decoders: no dropout
    assert estimate_main(["--config", str(write(tmp_path, cfg)), "--seq", "128", "--json"]) == 0
    read = json.loads(capsys.readouterr().out)
    assert typed["parameters"] == read["parameters"]
    assert typed["per_device_bytes"] == read["per_device_bytes"]


@pytest.mark.parametrize("argv, message", [
    (["--family", "mixtral", "--intermediate", "96", "--experts", "4"], "top_k must be between 1 and experts (4)"),
    (["--family", "qwen3_moe", "--intermediate", "96", "--experts", "4", "--top-k", "2"],
     "moe_intermediate (moe_intermediate_size) is required"),
    (["--family", "qwen3", "--intermediate", "96", "--top-k", "2"], "top_k is for a mixture of experts"),
    (["--family", "phi3", "--intermediate", "96", "--head-dim", "-1"], "argument --head-dim: must not be negative"),
])
def test_typed_shape_errors_are_one_line(capsys, argv: list[str], message: str) -> None:
    assert estimate_main(argv + DIMS) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_typed_shape_flags_are_not_ignored_beside_a_model(capsys) -> None:
    assert estimate_main(["--model", "llama-2-7b", "--experts", "8"]) == 2
    assert "--experts belongs to a typed shape (--family --hidden ...), not to --model" in capsys.readouterr().err


# --- activations of the family-specific parts, measured on transformers' own blocks (fp32, CPU) ----------------

def saved_bytes(hf, module, x, fn=None) -> int:
    """Bytes of the distinct storages autograd saves in ``(fn or module)(x)``, the module's parameters and ``x``
    aside."""
    torch, _ = hf
    own = {p.untyped_storage().data_ptr() for p in module.parameters()} | {x.untyped_storage().data_ptr()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        (fn or module)(x)
    return sum(seen.values())


@pytest.mark.parametrize("case", ["mixtral", "qwen2_moe", "qwen3_moe"])
def test_moe_block_saves_what_the_routing_predicts(hf, case: str) -> None:
    """A routed MLP block (router, top-k experts, Qwen2-MoE's shared expert) under transformers' default
    experts implementation: tokens x top-k pairs through the experts, within 1 %."""
    torch, _ = hf
    torch.manual_seed(0)
    cfg = dict(CASES[case], num_hidden_layers=1)
    model = meta_model_real(hf, cfg)
    block = model.model.layers[0].mlp
    s, b = 48, 2
    x = torch.randn(b, s, cfg["hidden_size"], requires_grad=True)
    measured = saved_bytes(hf, block, x)
    terms = estimator.layer_activation_terms(shape_from_config(cfg), s, b, 4, routed=True)
    predicted = terms["mlp_bytes"] + terms["router_bytes"]
    assert abs(predicted / measured - 1) < 0.01, (predicted, measured)


def meta_model_real(hf, cfg: dict, **kwargs):
    """The class built on the CPU with real (random) weights: a forward pass needs them."""
    _, transformers = hf
    config = transformers.AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
    return transformers.AutoModelForCausalLM.from_config(config, **kwargs)


def test_moe_activations_sum_routed_and_dense_layers() -> None:
    """Qwen-MoE with dense layers (mlp_only_layers, decoder_sparse_step): the total is each layer's own terms."""
    m = shape_from_config(CASES["qwen2_moe-sparse-step"])
    assert m.moe_layers == [1] and m.n_moe_layers == 1  # layers 1 and 3 by the step; 3 is listed dense
    setup = estimator.Setup(seq=64, batch=2, precision="fp32")
    got = estimator.activation_terms(m, setup)
    mask = estimator.dropout_mask_bytes(setup)
    per = []
    for i in range(m.layers):
        t = estimator.layer_activation_terms(m, 64, 2, 4, mask, routed=i in m.moe_layers)
        t["scores_bytes"] = estimator.attention_scores_bytes(m, 64, 2, setup, t)
        per.append(sum(t.values()))
    assert got["layers_bytes"] == sum(per) and got["per_layer_bytes"] == max(per)
    # top-k scales the routed part: twice the experts per token, twice the experts' pairs
    one, two = (estimator.layer_activation_terms(ModelShape(**{**m.as_dict(), "top_k": k}), 64, 2, 2, routed=True)
                for k in (1, 2))
    h, W = m.hidden, m.d_expert
    assert two["mlp_bytes"] - one["mlp_bytes"] == 2 * 64 * 2 * (2 * h + 4 * W)


def test_the_calculator_knows_the_same_families() -> None:
    """docs/assets/calculator.js repeats the family lists and defaults of model_shapes (Chromium checks the sums)."""
    import re

    from experiments.lib import model_shapes as ms

    js = (Path(__file__).resolve().parents[1] / "docs" / "assets" / "calculator.js").read_text(encoding="utf-8")

    def js_list(name: str) -> list[str]:
        return re.findall(r'"(\w+)"', re.search(rf"const {name} = \[(.*?)\];", js, re.S).group(1))

    def js_map(name: str) -> dict[str, bool]:
        return {k: v == "true" for k, v in re.findall(r"(\w+): (true|false)",
                                                      re.search(rf"const {name} = \{{(.*?)\}};", js, re.S).group(1))}

    assert js_list("FAMILIES") == list(ms.FAMILIES) and "const DECODERS = FAMILIES.slice(2);" in js
    assert ms.DECODERS == ms.FAMILIES[2:]
    for name in ("MOE_FAMILIES", "QK_NORM_FAMILIES", "SANDWICH_FAMILIES", "FUSED_FAMILIES"):
        assert js_list(name) == list(getattr(ms, name)), name
    assert js_map("QKV_BIAS_DEFAULT") == ms.QKV_BIAS_DEFAULT and js_map("TIED_DEFAULT") == ms.TIED_DEFAULT


@pytest.mark.parametrize("case, attention", [("llama-2-gqa-rope-scaling", "sdpa"), ("llama-2-gqa-rope-scaling", "eager"),
                                             ("qwen2", "sdpa"), ("qwen3", "sdpa"), ("gemma2", "sdpa"),
                                             ("gemma2", "eager"),
                                             ("phi3", "sdpa"), ("phi3", "eager")])
def test_decoder_layer_saves_what_the_family_terms_predict(hf, case: str, attention: str) -> None:
    """One decoder layer of transformers' class (fp32; SDPA, the default, and eager, which repeats grouped K and V
    to every head): its RMSNorms (three tensors each, two before a residual add), q/k norms, extra norms and
    Phi-3's fused buffers as ``layer_activation_terms`` counts them. What is left out: the norms' rsqrt and the
    rotary cos/sin, a few per cent at this tiny width."""
    torch, _ = hf
    torch.manual_seed(0)
    cfg = dict(CASES[case], num_hidden_layers=1, attention_dropout=0.0, resid_pdrop=0.0)   # dropout: another test
    if case == "gemma2" and attention == "sdpa":
        cfg["attn_logit_softcapping"] = None   # SDPA has no soft-capping; eager keeps the tanh of the scores
    model = meta_model_real(hf, cfg, attn_implementation=attention)
    model.train()
    s, b = 32, 2
    x = torch.randn(b, s, cfg["hidden_size"], requires_grad=True)
    pos = torch.arange(s).unsqueeze(0).expand(b, s)
    layer = model.model.layers[0]
    measured = saved_bytes(hf, layer, x, lambda y: layer(y, position_embeddings=model.model.rotary_emb(y, pos),
                                                         attention_mask=None, position_ids=pos)) + x.numel() * 4
    m = shape_from_config(cfg)
    setup = estimator.Setup(seq=s, batch=b, precision="fp32", device="cpu", attention=attention)
    t = estimator.layer_activation_terms(m, s, b, 4, estimator.dropout_mask_bytes(setup), False, attention)
    t["scores_bytes"] = estimator.attention_scores_bytes(m, s, b, setup, t)
    predicted = sum(t.values())
    assert 0.95 <= predicted / measured <= 1.0, (predicted, measured)


def test_beyond_any_model_names_the_config_field(tmp_path: Path, capsys) -> None:
    for cfg, field in ((dict(CASES["qwen3_moe"], num_experts=10**12), "num_experts"),
                       (dict(CASES["qwen2_moe"], decoder_sparse_step=10**12), "decoder_sparse_step"),
                       (dict(CASES["gemma"], head_dim=10**12), "head_dim")):
        path = write(tmp_path, cfg)
        assert estimate_main(["--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"field {field!r} (a 13-digit number) is beyond any model" in err, err
