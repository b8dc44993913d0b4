"""Model shapes: the built-in models, and reading a Hugging Face ``config.json``.

Pure Python (no torch), so ``handbook estimate`` starts fast. A shape lists
what fixes a transformer's parameter tensors: the family (which decides the
layout: GPT-2, BERT, Llama/Mistral, Qwen2, Qwen3, Gemma 1-3, Phi-3, Mixtral,
Qwen2-MoE, Qwen3-MoE), hidden size, layers, heads, key/value heads, head
width, MLP width, vocabulary, learned positions, token types, biases, whether
the output head shares the input embedding, and for a mixture of experts the
routed experts, top-k, the experts' and the shared expert's widths and which
layers are sparse. ``tests/test_model_families.py`` checks every family's
tensors against transformers' own classes built on the meta device.

The built-in values are the published ``config.json`` fields of each model on
the Hugging Face Hub (cited beside each entry); they cannot be fetched here,
and a test rebuilds each architecture on the meta device to check the
parameter count they give.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The layouts, named by the Hugging Face model_type whose class lays the parameters out that way
# (transformers 5.17, models/<family>/modeling_<family>.py). "llama" also covers mistral (the same tensors).
FAMILIES = ("gpt2", "bert", "llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "mixtral", "qwen2_moe",
            "qwen3_moe")
DECODERS = FAMILIES[2:]                      # RMSNorm, rotary positions, a gated MLP (SwiGLU; GeGLU for Gemma)
MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe")
QK_NORM_FAMILIES = ("qwen3", "gemma3", "qwen3_moe")  # an RMSNorm over head_dim on queries and keys
SANDWICH_FAMILIES = ("gemma2", "gemma3")     # pre- and post-feedforward norms besides the usual two
GEMMA_NORM_FAMILIES = ("gemma", "gemma2", "gemma3")  # GemmaRMSNorm: normalises and scales in fp32, x (1 + weight)
FUSED_FAMILIES = ("phi3",)                   # one qkv_proj and one gate_up_proj
# Defaults of the typed shapes, as the config classes set them (configuration_<family>.py):
QKV_BIAS_DEFAULT = {"qwen2": True, "qwen2_moe": True}        # Qwen2 always has them; Qwen2-MoE's qkv_bias=True
TIED_DEFAULT = {"gpt2": True, "bert": True, "gemma": True, "gemma2": True, "gemma3": True}  # others: False
MAX_DIM = 10**9  # a dimension beyond this describes no model (estimator.MAX_SIZE says why)


class ShapeError(ValueError):
    """A model shape or config file that cannot describe a model; the message names the field."""


@dataclass(frozen=True)
class ModelShape:
    family: str                 # one of FAMILIES: "gpt2" (pre-LN, GELU), "bert" (post-LN encoder + pooler), the rest
                                # decoders with RMSNorm and a gated MLP (see FAMILIES above)
    hidden: int
    layers: int
    heads: int
    vocab: int
    kv_heads: int = 0           # 0: same as heads (multi-head attention)
    intermediate: int = 0       # 0: 4 * hidden (gpt2, bert); decoders need it (MoE: the dense layers' width)
    positions: int = 0          # learned position embeddings (gpt2, bert); the decoders use rotary (none)
    type_vocab: int = 0         # bert token-type embeddings
    head_dim: int = 0           # 0: hidden // heads
    tied_embeddings: bool = True
    dropout: bool = True        # dropout layers active in training (they save 1-byte masks)
    context: int = 0            # longest sequence the model was trained for (default --seq clips to it)
    qkv_bias: bool | None = None  # biases on q, k, v (None: the family's default, QKV_BIAS_DEFAULT)
    o_bias: bool = False        # a bias on the attention output projection (attention_bias: Llama, Qwen3, Gemma)
    mlp_bias: bool = False      # biases on the MLP projections (Llama's mlp_bias)
    experts: int = 0            # routed experts per MoE layer (num_local_experts / num_experts)
    top_k: int = 0              # experts each token goes through (num_experts_per_tok)
    moe_intermediate: int = 0   # each expert's MLP width (moe_intermediate_size; 0: intermediate, as Mixtral)
    shared_intermediate: int = 0  # the shared expert's width (Qwen2-MoE's shared_expert_intermediate_size)
    sparse_step: int = 1        # every sparse_step-th layer is MoE (decoder_sparse_step)
    dense_layers: tuple[int, ...] = ()  # layers kept dense (mlp_only_layers)
    logit_softcap: bool | None = None  # tanh soft-capping of the final logits (final_logit_softcapping;
                                       # None: the family's default, on for Gemma 2 only)
    attn_softcap: bool | None = None   # tanh soft-capping of the attention scores (attn_logit_softcapping; ditto)
    hidden_act: str = ""        # the MLP's activation as the config names it (GPT-2's activation_function;
                                # "": not given, the family's fused default); estimator.activation_function_extra_bytes
    name: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ShapeError(f"unknown model family {self.family!r} (one of {', '.join(FAMILIES)})")
        if self.qkv_bias is None:
            object.__setattr__(self, "qkv_bias", QKV_BIAS_DEFAULT.get(self.family, False))
        for key in ("logit_softcap", "attn_softcap"):  # Gemma2Config: final 30.0, attention 50.0; others none
            if getattr(self, key) is None:
                object.__setattr__(self, key, self.family == "gemma2")
        if isinstance(self.dense_layers, list):
            object.__setattr__(self, "dense_layers", tuple(self.dense_layers))
        for key in ("hidden", "layers", "heads", "vocab"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ShapeError(f"{key} must be a positive integer, not {value!r}")
        ints = ("kv_heads", "intermediate", "positions", "type_vocab", "head_dim", "context", "experts", "top_k",
                "moe_intermediate", "shared_intermediate")
        for key in ints:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ShapeError(f"{key} must be a non-negative integer, not {value!r}")
        for key in ("hidden", "layers", "heads", "vocab") + ints:
            if key != "context" and getattr(self, key) > MAX_DIM:
                raise ShapeError(f"{key} (a {len(str(getattr(self, key)))}-digit number) is beyond any model "
                                 f"(at most {MAX_DIM:,})")
        for key in ("tied_embeddings", "dropout", "qkv_bias", "o_bias", "mlp_bias", "logit_softcap", "attn_softcap"):
            if not isinstance(getattr(self, key), bool):
                raise ShapeError(f"{key} must be true or false, not {getattr(self, key)!r}")
        if not isinstance(self.hidden_act, str) or len(self.hidden_act) > 64:
            raise ShapeError(f"hidden_act must be an activation's name, not {self.hidden_act!r}")
        if self.family in DECODERS and self.intermediate == 0:
            raise ShapeError(f"intermediate (intermediate_size) is required for a {self.family} model")
        if self.family in ("gpt2", "bert") and self.positions == 0:
            raise ShapeError(f"positions (learned position embeddings) is required for a {self.family} model")
        if self.head_dim == 0 and self.hidden % self.heads:
            raise ShapeError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.n_kv_heads > self.heads or self.heads % self.n_kv_heads:
            raise ShapeError(f"heads {self.heads} is not a multiple of kv_heads {self.n_kv_heads}")
        self._check_moe()
        if self.family in ("gpt2", "bert"):
            extras = [k for k in ("qkv_bias", "o_bias", "mlp_bias", "logit_softcap", "attn_softcap") if getattr(self, k)]
            if extras:
                raise ShapeError(f"{extras[0]} does not apply to a {self.family} model (its biases are fixed)")

    def _check_moe(self) -> None:
        moe = self.family in MOE_FAMILIES
        if not moe:
            for key in ("experts", "top_k", "moe_intermediate", "shared_intermediate"):
                if getattr(self, key):
                    raise ShapeError(f"{key} is for a mixture of experts ({', '.join(MOE_FAMILIES)}), "
                                     f"not a {self.family} model")
        if not moe or self.family == "mixtral":
            if self.sparse_step != 1 or self.dense_layers:
                raise ShapeError(f"sparse_step and dense_layers are for qwen2_moe and qwen3_moe, not {self.family}")
        if not moe:
            return
        if self.experts < 1:
            raise ShapeError(f"experts (the number of routed experts) is required for a {self.family} model")
        if not 1 <= self.top_k <= self.experts:
            raise ShapeError(f"top_k must be between 1 and experts ({self.experts}), not {self.top_k}")
        if self.family != "mixtral" and self.moe_intermediate == 0:
            raise ShapeError(f"moe_intermediate (moe_intermediate_size) is required for a {self.family} model")
        if self.family == "mixtral" and self.moe_intermediate:
            raise ShapeError("moe_intermediate does not apply to mixtral (its experts are intermediate wide)")
        if self.shared_intermediate and self.family != "qwen2_moe":
            raise ShapeError(f"shared_intermediate (a shared expert) is for qwen2_moe, not {self.family}")
        step = self.sparse_step
        if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step <= MAX_DIM:
            raise ShapeError(f"sparse_step must be a positive integer, not {step!r}")
        if len(self.dense_layers) > MAX_DENSE_LIST or any(
                not isinstance(i, int) or isinstance(i, bool) or not 0 <= i <= MAX_DIM for i in self.dense_layers):
            raise ShapeError(f"dense_layers must be a list of layer indices, not {list(self.dense_layers)!r}")

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def d_ff(self) -> int:
        return self.intermediate or 4 * self.hidden

    @property
    def d_expert(self) -> int:
        """One routed expert's MLP width (Mixtral's experts are intermediate_size wide)."""
        return self.moe_intermediate or self.intermediate

    @property
    def moe_layers(self) -> list[int]:
        """Indices of the MoE layers: every layer for Mixtral; for Qwen-MoE the rule of
        ``Qwen2MoeDecoderLayer.__init__`` / ``Qwen3MoeDecoderLayer.__init__`` (transformers 5.17):
        not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0."""
        if self.family not in MOE_FAMILIES:
            return []
        dense = set(self.dense_layers)
        return [i for i in range(self.layers) if i not in dense and (i + 1) % self.sparse_step == 0]

    @property
    def n_moe_layers(self) -> int:
        """How many layers ``moe_layers`` lists, counted without listing them."""
        if self.family not in MOE_FAMILIES:
            return 0
        dense = {i for i in self.dense_layers if i < self.layers and (i + 1) % self.sparse_step == 0}
        return self.layers // self.sparse_step - len(dense)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["dense_layers"] = list(self.dense_layers)
        return d


MAX_DENSE_LIST = 10**5  # mlp_only_layers longer than this lists no real model


# Built-in shapes, from each model's published config.json on the Hugging Face Hub.
BUILTIN: dict[str, ModelShape] = {
    # https://huggingface.co/google-bert/bert-base-uncased/blob/main/config.json
    # (Devlin et al. 2019, BERT-Base: L=12, H=768, A=12)
    "bert-base": ModelShape(
        family="bert", hidden=768, layers=12, heads=12, vocab=30522, intermediate=3072, positions=512,
        type_vocab=2, tied_embeddings=True, dropout=True, context=512, name="bert-base",
        source="huggingface.co/google-bert/bert-base-uncased config.json; Devlin et al. 2019"),
    # https://huggingface.co/openai-community/gpt2-xl/blob/main/config.json
    # (Radford et al. 2019, GPT-2 1.5B: 48 layers, d_model 1600)
    "gpt2-xl": ModelShape(
        family="gpt2", hidden=1600, layers=48, heads=25, vocab=50257, positions=1024, tied_embeddings=True,
        dropout=True, context=1024, name="gpt2-xl",
        source="huggingface.co/openai-community/gpt2-xl config.json; Radford et al. 2019"),
    # https://huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json (Touvron et al. 2023, table 1)
    "llama-2-7b": ModelShape(
        family="llama", hidden=4096, layers=32, heads=32, kv_heads=32, vocab=32000, intermediate=11008,
        tied_embeddings=False, dropout=False, context=4096, name="llama-2-7b",
        source="huggingface.co/meta-llama/Llama-2-7b-hf config.json; Touvron et al. 2023"),
    # https://huggingface.co/meta-llama/Llama-2-70b-hf/blob/main/config.json (grouped-query attention, 8 KV heads)
    "llama-2-70b": ModelShape(
        family="llama", hidden=8192, layers=80, heads=64, kv_heads=8, vocab=32000, intermediate=28672,
        tied_embeddings=False, dropout=False, context=4096, name="llama-2-70b",
        source="huggingface.co/meta-llama/Llama-2-70b-hf config.json; Touvron et al. 2023"),
    # https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json (Meta Llama 3 model card)
    "llama-3-8b": ModelShape(
        family="llama", hidden=4096, layers=32, heads=32, kv_heads=8, vocab=128256, intermediate=14336,
        tied_embeddings=False, dropout=False, context=8192, name="llama-3-8b",
        source="huggingface.co/meta-llama/Meta-Llama-3-8B config.json; Meta Llama 3 model card"),
}


def builtin(name: str) -> ModelShape:
    key = name.lower()
    if key not in BUILTIN:
        raise ShapeError(f"unknown model {name!r} (built-in: {', '.join(BUILTIN)})")
    return BUILTIN[key]


# model_type -> layout. Each reader below follows the config class's own defaults for a field a config.json
# omits (transformers 5.17, models/<family>/configuration_<family>.py), where the default fixes a tensor shape.
MODEL_TYPES = {"gpt2": "gpt2", "bert": "bert", "llama": "llama", "mistral": "llama", "qwen2": "qwen2",
               "qwen3": "qwen3", "gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3", "phi3": "phi3",
               "mixtral": "mixtral", "qwen2_moe": "qwen2_moe", "qwen3_moe": "qwen3_moe"}
# head_dim when the config omits it: GemmaConfig, Gemma2Config, Gemma3TextConfig default to 256 and Qwen3Config to
# 128, whatever hidden_size / num_attention_heads gives; the other classes use hidden_size // num_attention_heads.
HEAD_DIM_DEFAULT = {"gemma": 256, "gemma2": 256, "gemma3_text": 256, "qwen3": 128}
# model_types whose config class defaults num_key_value_heads to a fixed number (MistralConfig 8, Qwen2Config 32,
# ...), not to num_attention_heads: a config without the field is refused rather than guessed.
KV_REQUIRED = ("mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "mixtral", "qwen2_moe", "qwen3_moe")


def _family_of(cfg: dict) -> str:
    kind = cfg.get("model_type", "")
    if not isinstance(kind, str):
        raise ShapeError(f"field 'model_type' must be a string, not {kind!r}")
    kind = kind.lower()
    if kind in MODEL_TYPES:
        return kind
    if kind == "gemma3":
        raise ShapeError("model_type 'gemma3' is the multimodal Gemma 3 (its vision tower is not modelled); give "
                         "its text_config as a config.json with model_type 'gemma3_text', or --params")
    if kind:
        raise ShapeError(f"model_type {kind!r} is not supported ({', '.join(MODEL_TYPES)}); give its "
                         f"parameter count with --params, or its shape with --family --hidden --layers --heads --vocab")
    if "n_embd" in cfg:
        return "gpt2"
    if "type_vocab_size" in cfg:
        return "bert"
    if "num_key_value_heads" in cfg or "rms_norm_eps" in cfg:
        return "llama"
    raise ShapeError("config has no model_type and its fields match none of gpt2, bert, llama")


def _field(cfg: dict, key: str, where: str, default: object = ...) -> object:
    value = cfg.get(key, default)
    if value is ...:
        raise ShapeError(f"{where}: missing field {key!r}")
    return value


def shape_from_config(cfg: dict, where: str = "config.json", name: str = "") -> ModelShape:
    """A ``ModelShape`` from Hugging Face config fields (``model_type`` one of ``MODEL_TYPES``).

    Fields that change no parameter tensor (rope_scaling / rope_parameters, sliding windows, eps, the
    activation's name) are not read. A field a config omits takes the config class's default where that
    default fixes a shape (head_dim, tie_word_embeddings, the MoE counts); num_key_value_heads is required
    where the class default is a fixed number rather than the head count (``KV_REQUIRED``).
    """
    if not isinstance(cfg, dict):
        raise ShapeError(f"{where}: expected a JSON object")
    try:
        kind = _family_of(cfg)
    except ShapeError as exc:
        raise ShapeError(f"{where}: {exc}") from None
    family = MODEL_TYPES[kind]

    def get(key: str, default: object = ...) -> object:
        value = _field(cfg, key, where, default)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ShapeError(f"{where}: field {key!r} must be a non-negative integer, not {value!r}")
        if value is not None and value > MAX_DIM and key not in ("max_position_embeddings", "n_ctx"):
            raise ShapeError(f"{where}: field {key!r} (a {len(str(value))}-digit number) is beyond any model "
                             f"(at most {MAX_DIM:,})")
        return value

    def positive(key: str, default: object = ...) -> int:
        value = get(key, default)
        if value is None or value < 1:
            raise ShapeError(f"{where}: field {key!r} must be a positive integer, not {value!r}")
        return value

    def prob(*keys: str) -> bool:
        for k in keys:
            value = cfg.get(k, 0.0)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ShapeError(f"{where}: field {k!r} must be a probability (a number), not {value!r}")
        return any(float(cfg.get(k, 0.0) or 0.0) > 0 for k in keys)

    def flag(key: str, default: bool) -> bool:
        value = cfg.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ShapeError(f"{where}: field {key!r} must be true or false, not {value!r}")
        return value

    def act(*keys: str, default: str) -> str:
        for k in keys:
            value = cfg.get(k)
            if value is None:
                continue
            if not isinstance(value, str) or not value or len(value) > 64:
                raise ShapeError(f"{where}: field {k!r} must be an activation's name, not {value!r}")
            return value
        return default

    def number_or_none(key: str, default: object) -> bool:
        """A soft-capping value: a positive number turns it on; null (or absent with a null default) leaves it off."""
        value = cfg.get(key, default)
        if value is None:
            return False
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ShapeError(f"{where}: field {key!r} must be a positive number or null, not {value!r}")
        return True

    try:
        if family == "gpt2":
            return ModelShape(
                family="gpt2", hidden=get("n_embd"), layers=get("n_layer"), heads=get("n_head"),
                vocab=get("vocab_size"), intermediate=get("n_inner", None) or 0, positions=get("n_positions"),
                tied_embeddings=flag("tie_word_embeddings", True),
                dropout=prob("resid_pdrop", "embd_pdrop", "attn_pdrop") if any(
                    k in cfg for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")) else True,
                context=get("n_ctx", None) or get("n_positions"),
                hidden_act=act("activation_function", default="gelu_new"), name=name)   # GPT2Config's default
        if family == "bert":
            return ModelShape(
                family="bert", hidden=get("hidden_size"), layers=get("num_hidden_layers"),
                heads=get("num_attention_heads"), vocab=get("vocab_size"), intermediate=get("intermediate_size"),
                positions=get("max_position_embeddings"), type_vocab=get("type_vocab_size", 2),
                tied_embeddings=True,
                dropout=prob("hidden_dropout_prob", "attention_probs_dropout_prob") if any(
                    k in cfg for k in ("hidden_dropout_prob", "attention_probs_dropout_prob")) else True,
                context=get("max_position_embeddings"), hidden_act=act("hidden_act", default="gelu"), name=name)
        return _decoder_shape(cfg, kind, family, where, name, get, positive, prob, flag, number_or_none, act)
    except ShapeError as exc:
        if str(exc).startswith(where):
            raise
        raise ShapeError(f"{where}: {exc}") from None


def _decoder_shape(cfg, kind, family, where, name, get, positive, prob, flag, number_or_none, act) -> ModelShape:
    """The decoder families: the fields each config class reads (transformers 5.17, modeling_<family>.py)."""
    kv = get("num_key_value_heads", ... if kind in KV_REQUIRED else None) or 0
    # head_dim: `getattr(config, "head_dim", None) or hidden // heads` in the attention classes; null is absent.
    head_dim = get("head_dim", None) or HEAD_DIM_DEFAULT.get(kind, 0)
    attention_bias = flag("attention_bias", False)
    if kind == "llama":       # LlamaAttention: bias=config.attention_bias on q, k, v and o; LlamaMLP: config.mlp_bias
        qkv_bias, o_bias, mlp_bias = attention_bias, attention_bias, flag("mlp_bias", False)
    elif kind == "qwen2":     # Qwen2Attention: bias=True on q, k, v (fixed), none on o
        qkv_bias, o_bias, mlp_bias = True, False, False
    elif kind == "qwen2_moe":  # Qwen2MoeAttention: bias=config.qkv_bias on q, k, v
        qkv_bias, o_bias, mlp_bias = flag("qkv_bias", True), False, False
    elif kind in ("qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text"):  # bias=config.attention_bias on all four
        qkv_bias, o_bias, mlp_bias = attention_bias, attention_bias, False
    else:                     # mistral, phi3, mixtral: no biases whatever the config says
        qkv_bias, o_bias, mlp_bias = False, False, False
    moe: dict = {}
    if family == "mixtral":
        moe = dict(experts=positive("num_local_experts", 8), top_k=positive("num_experts_per_tok", 2))
    elif family in ("qwen2_moe", "qwen3_moe"):
        experts_key = "num_experts" if "num_experts" in cfg or "num_local_experts" not in cfg else "num_local_experts"
        qwen2 = family == "qwen2_moe"
        dense = cfg.get("mlp_only_layers", [])
        if dense is None:
            dense = []
        if not isinstance(dense, list) or len(dense) > MAX_DENSE_LIST or any(
                not isinstance(i, int) or isinstance(i, bool) or not 0 <= i <= MAX_DIM for i in dense):
            raise ShapeError(f"{where}: field 'mlp_only_layers' must be a list of layer indices, not {dense!r}")
        moe = dict(experts=positive(experts_key, 60 if qwen2 else 128),
                   top_k=positive("num_experts_per_tok", 4 if qwen2 else 8),
                   moe_intermediate=positive("moe_intermediate_size", 1408 if qwen2 else 768),
                   shared_intermediate=get("shared_expert_intermediate_size", 5632) if qwen2 else 0,
                   sparse_step=positive("decoder_sparse_step", 1), dense_layers=tuple(dense))
        if moe["top_k"] > moe["experts"]:
            raise ShapeError(f"{where}: field 'num_experts_per_tok' ({moe['top_k']}) exceeds {experts_key} "
                             f"({moe['experts']})")
    if family == "mixtral" and moe["top_k"] > moe["experts"]:
        raise ShapeError(f"{where}: field 'num_experts_per_tok' ({moe['top_k']}) exceeds num_local_experts "
                         f"({moe['experts']})")
    heads = get("num_attention_heads")
    if kv and heads and (kv > heads or heads % kv):
        raise ShapeError(f"{where}: field 'num_key_value_heads' ({kv}) does not divide num_attention_heads ({heads})")
    dropout_keys = ("attention_dropout", "resid_pdrop", "embd_pdrop") if family == "phi3" else ("attention_dropout",)
    return ModelShape(
        family=family, hidden=get("hidden_size"), layers=get("num_hidden_layers"), heads=heads, kv_heads=kv,
        vocab=get("vocab_size"), intermediate=get("intermediate_size"), head_dim=head_dim,
        tied_embeddings=flag("tie_word_embeddings", TIED_DEFAULT.get(family, False)),
        dropout=prob(*dropout_keys), context=get("max_position_embeddings", None) or 0,
        qkv_bias=qkv_bias, o_bias=o_bias, mlp_bias=mlp_bias,
        logit_softcap=number_or_none("final_logit_softcapping", 30.0) if family == "gemma2" else (
            number_or_none("final_logit_softcapping", None) if family == "gemma3" else False),
        attn_softcap=number_or_none("attn_logit_softcapping", 50.0) if family == "gemma2" else (
            number_or_none("attn_logit_softcapping", None) if family == "gemma3" else False),
        # Gemma 2/3 name it hidden_activation; the others hidden_act (SiLU, Gemma's gelu_pytorch_tanh)
        hidden_act=act("hidden_activation", "hidden_act", default="gelu_pytorch_tanh" if family.startswith("gemma")
                       else "silu"),
        name=name, **moe)


def load_config(path: str | Path) -> ModelShape:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ShapeError(f"cannot read config {str(p)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ShapeError(f"{p}: not a config.json (not UTF-8 text at byte {exc.start})") from None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ShapeError(f"{p}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise ShapeError(f"{p}: not a config.json (JSON nested too deeply to read)") from None
    return shape_from_config(cfg, where=str(p), name=p.parent.name if p.name == "config.json" else p.stem)


def parameter_shapes(m: ModelShape) -> list[tuple[str, tuple[int, ...]]]:
    """Every parameter tensor (name, shape) of the architecture, as the Hugging Face classes lay it out.

    GPT-2: ``GPT2LMHeadModel`` (Conv1D weights stored (in, out); lm_head tied to wte unless untied).
    BERT: ``BertModel`` (embeddings with token types and positions, encoder, pooler).
    The decoders: ``<Family>ForCausalLM`` of transformers 5.17 (names as ``named_parameters`` gives them):
    Llama/Mistral (no biases unless attention_bias / mlp_bias, RMSNorm, SwiGLU, grouped-query attention);
    Qwen2 (q, k, v biases); Qwen3 (q_norm, k_norm over head_dim); Gemma (GeGLU, tied); Gemma 2 (pre- and
    post-feedforward norms); Gemma 3 (both); Phi-3 (fused ``qkv_proj`` and ``gate_up_proj``); the MoE
    families keep each layer's experts as two 3-D tensors, ``experts.gate_up_proj`` (experts, 2 x width,
    hidden) and ``experts.down_proj`` (experts, hidden, width), with a router ``gate.weight`` (experts,
    hidden), and Qwen2-MoE a shared expert and its one-output gate.
    """
    h, V, I, L = m.hidden, m.vocab, m.d_ff, m.layers
    out: list[tuple[str, tuple[int, ...]]] = []
    if m.family == "gpt2":
        out += [("wte.weight", (V, h)), ("wpe.weight", (m.positions, h))]
        for i in range(L):
            p = f"h.{i}."
            out += [(p + "ln_1.weight", (h,)), (p + "ln_1.bias", (h,)),
                    (p + "attn.c_attn.weight", (h, 3 * h)), (p + "attn.c_attn.bias", (3 * h,)),
                    (p + "attn.c_proj.weight", (h, h)), (p + "attn.c_proj.bias", (h,)),
                    (p + "ln_2.weight", (h,)), (p + "ln_2.bias", (h,)),
                    (p + "mlp.c_fc.weight", (h, I)), (p + "mlp.c_fc.bias", (I,)),
                    (p + "mlp.c_proj.weight", (I, h)), (p + "mlp.c_proj.bias", (h,))]
        out += [("ln_f.weight", (h,)), ("ln_f.bias", (h,))]
        if not m.tied_embeddings:
            out.append(("lm_head.weight", (V, h)))
        return out
    if m.family == "bert":
        out += [("embeddings.word_embeddings.weight", (V, h)),
                ("embeddings.position_embeddings.weight", (m.positions, h)),
                ("embeddings.token_type_embeddings.weight", (m.type_vocab, h)),
                ("embeddings.LayerNorm.weight", (h,)), ("embeddings.LayerNorm.bias", (h,))]
        for i in range(L):
            p = f"encoder.layer.{i}."
            for proj in ("query", "key", "value"):
                out += [(p + f"attention.self.{proj}.weight", (h, h)), (p + f"attention.self.{proj}.bias", (h,))]
            out += [(p + "attention.output.dense.weight", (h, h)), (p + "attention.output.dense.bias", (h,)),
                    (p + "attention.output.LayerNorm.weight", (h,)), (p + "attention.output.LayerNorm.bias", (h,)),
                    (p + "intermediate.dense.weight", (I, h)), (p + "intermediate.dense.bias", (I,)),
                    (p + "output.dense.weight", (h, I)), (p + "output.dense.bias", (h,)),
                    (p + "output.LayerNorm.weight", (h,)), (p + "output.LayerNorm.bias", (h,))]
        out += [("pooler.dense.weight", (h, h)), ("pooler.dense.bias", (h,))]
        return out
    d = m.d_head
    q, kv = m.heads * d, m.n_kv_heads * d
    moe = set(m.moe_layers)
    out.append(("model.embed_tokens.weight", (V, h)))
    for i in range(L):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        if m.family in FUSED_FAMILIES:
            out += [(a + "o_proj.weight", (h, q)), (a + "qkv_proj.weight", (q + 2 * kv, h))]
        else:
            for proj, rows in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
                out.append((a + f"{proj}.weight", (rows, h)))
                if m.qkv_bias:
                    out.append((a + f"{proj}.bias", (rows,)))
            out.append((a + "o_proj.weight", (h, q)))
            if m.o_bias:
                out.append((a + "o_proj.bias", (h,)))
        if m.family in QK_NORM_FAMILIES:
            out += [(a + "q_norm.weight", (d,)), (a + "k_norm.weight", (d,))]
        out += _mlp_shapes(m, p + "mlp.", i in moe)
        out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
        if m.family in SANDWICH_FAMILIES:
            out += [(p + "pre_feedforward_layernorm.weight", (h,)), (p + "post_feedforward_layernorm.weight", (h,))]
    out.append(("model.norm.weight", (h,)))
    if not m.tied_embeddings:
        out.append(("lm_head.weight", (V, h)))
    return out


def _mlp_shapes(m: ModelShape, p: str, routed: bool) -> list[tuple[str, tuple[int, ...]]]:
    h = m.hidden
    if routed:
        E, W = m.experts, m.d_expert
        router = [(p + "gate.weight", (E, h))]
        experts = [(p + "experts.gate_up_proj", (E, 2 * W, h)), (p + "experts.down_proj", (E, h, W))]
        if m.family == "qwen3_moe":
            return experts + router
        if m.family == "qwen2_moe":
            S = m.shared_intermediate
            return router + experts + [
                (p + "shared_expert.gate_proj.weight", (S, h)), (p + "shared_expert.up_proj.weight", (S, h)),
                (p + "shared_expert.down_proj.weight", (h, S)), (p + "shared_expert_gate.weight", (1, h))]
        return router + experts
    I = m.d_ff
    if m.family in FUSED_FAMILIES:
        return [(p + "gate_up_proj.weight", (2 * I, h)), (p + "down_proj.weight", (h, I))]
    out = []
    for proj, shape in (("gate_proj", (I, h)), ("up_proj", (I, h)), ("down_proj", (h, I))):
        out.append((p + f"{proj}.weight", shape))
        if m.mlp_bias:
            out.append((p + f"{proj}.bias", shape[:1]))
    return out
