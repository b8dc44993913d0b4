"""Model shapes: the built-in models, and reading a Hugging Face ``config.json``.

Pure Python (no torch), so ``handbook estimate`` starts fast. A shape lists
what fixes a transformer's parameter tensors: the family (which decides the
layout: GPT-2, BERT or Llama), hidden size, layers, heads, key/value heads,
MLP width, vocabulary, learned positions, token types and whether the output
head shares the input embedding.

The built-in values are the published ``config.json`` fields of each model on
the Hugging Face Hub (cited beside each entry); they cannot be fetched here,
and a test rebuilds each architecture on the meta device to check the
parameter count they give.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

FAMILIES = ("gpt2", "bert", "llama")
MAX_DIM = 10**9  # a dimension beyond this describes no model (estimator.MAX_SIZE says why)


class ShapeError(ValueError):
    """A model shape or config file that cannot describe a model; the message names the field."""


@dataclass(frozen=True)
class ModelShape:
    family: str                 # "gpt2" (pre-LN, GELU), "bert" (post-LN encoder + pooler), "llama" (RMSNorm, SwiGLU)
    hidden: int
    layers: int
    heads: int
    vocab: int
    kv_heads: int = 0           # 0: same as heads (multi-head attention)
    intermediate: int = 0       # 0: 4 * hidden (gpt2, bert); llama needs it
    positions: int = 0          # learned position embeddings (gpt2, bert); llama uses rotary (none)
    type_vocab: int = 0         # bert token-type embeddings
    head_dim: int = 0           # 0: hidden // heads
    tied_embeddings: bool = True
    dropout: bool = True        # dropout layers active in training (they save 1-byte masks)
    context: int = 0            # longest sequence the model was trained for (default --seq clips to it)
    name: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ShapeError(f"unknown model family {self.family!r} (one of {', '.join(FAMILIES)})")
        for key in ("hidden", "layers", "heads", "vocab"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ShapeError(f"{key} must be a positive integer, not {value!r}")
        for key in ("kv_heads", "intermediate", "positions", "type_vocab", "head_dim", "context"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ShapeError(f"{key} must be a non-negative integer, not {value!r}")
        for key in ("hidden", "layers", "heads", "vocab", "kv_heads", "intermediate", "positions", "type_vocab",
                    "head_dim"):
            if getattr(self, key) > MAX_DIM:
                raise ShapeError(f"{key} (a {len(str(getattr(self, key)))}-digit number) is beyond any model "
                                 f"(at most {MAX_DIM:,})")
        if not isinstance(self.tied_embeddings, bool) or not isinstance(self.dropout, bool):
            raise ShapeError("tied_embeddings and dropout must be true or false")
        if self.family == "llama" and self.intermediate == 0:
            raise ShapeError("intermediate (intermediate_size) is required for a llama-style model")
        if self.family in ("gpt2", "bert") and self.positions == 0:
            raise ShapeError(f"positions (learned position embeddings) is required for a {self.family} model")
        if self.head_dim == 0 and self.hidden % self.heads:
            raise ShapeError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.n_kv_heads > self.heads or self.heads % self.n_kv_heads:
            raise ShapeError(f"heads {self.heads} is not a multiple of kv_heads {self.n_kv_heads}")

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def d_ff(self) -> int:
        return self.intermediate or 4 * self.hidden

    def as_dict(self) -> dict:
        return asdict(self)


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


def _family_of(cfg: dict) -> str:
    kind = str(cfg.get("model_type", "")).lower()
    if kind in ("gpt2",):
        return "gpt2"
    if kind in ("bert",):
        return "bert"
    if kind in ("llama", "mistral"):
        return "llama"
    if kind:
        raise ShapeError(f"model_type {kind!r} is not supported (gpt2, bert, llama or mistral); give its "
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
    """A ``ModelShape`` from Hugging Face config fields (GPT-2, BERT or Llama style)."""
    if not isinstance(cfg, dict):
        raise ShapeError(f"{where}: expected a JSON object")
    try:
        family = _family_of(cfg)
    except ShapeError as exc:
        raise ShapeError(f"{where}: {exc}") from None

    def get(key: str, default: object = ...) -> object:
        value = _field(cfg, key, where, default)
        if value is not None and key not in ("tie_word_embeddings",) and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ShapeError(f"{where}: field {key!r} must be a non-negative integer, not {value!r}")
        return value

    def prob(*keys: str) -> bool:
        for k in keys:
            value = cfg.get(k, 0.0)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ShapeError(f"{where}: field {k!r} must be a probability (a number), not {value!r}")
        return any(float(cfg.get(k, 0.0) or 0.0) > 0 for k in keys)

    def flag(key: str, default: bool) -> bool:
        value = cfg.get(key, default)
        if not isinstance(value, bool):
            raise ShapeError(f"{where}: field {key!r} must be true or false, not {value!r}")
        return value

    try:
        if family == "gpt2":
            return ModelShape(
                family="gpt2", hidden=get("n_embd"), layers=get("n_layer"), heads=get("n_head"),
                vocab=get("vocab_size"), intermediate=get("n_inner", None) or 0, positions=get("n_positions"),
                tied_embeddings=flag("tie_word_embeddings", True),
                dropout=prob("resid_pdrop", "embd_pdrop", "attn_pdrop") if any(
                    k in cfg for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")) else True,
                context=get("n_ctx", None) or get("n_positions"), name=name)
        if family == "bert":
            return ModelShape(
                family="bert", hidden=get("hidden_size"), layers=get("num_hidden_layers"),
                heads=get("num_attention_heads"), vocab=get("vocab_size"), intermediate=get("intermediate_size"),
                positions=get("max_position_embeddings"), type_vocab=get("type_vocab_size", 2),
                tied_embeddings=True,
                dropout=prob("hidden_dropout_prob", "attention_probs_dropout_prob") if any(
                    k in cfg for k in ("hidden_dropout_prob", "attention_probs_dropout_prob")) else True,
                context=get("max_position_embeddings"), name=name)
        if cfg.get("attention_bias") or cfg.get("mlp_bias"):
            raise ShapeError(f"{where}: attention_bias/mlp_bias are not supported (Llama has no biases)")
        return ModelShape(
            family="llama", hidden=get("hidden_size"), layers=get("num_hidden_layers"),
            heads=get("num_attention_heads"), kv_heads=get("num_key_value_heads", None) or 0,
            vocab=get("vocab_size"), intermediate=get("intermediate_size"), head_dim=get("head_dim", None) or 0,
            tied_embeddings=flag("tie_word_embeddings", False),
            dropout=prob("attention_dropout"), context=get("max_position_embeddings", None) or 0, name=name)
    except ShapeError as exc:
        if str(exc).startswith(where):
            raise
        raise ShapeError(f"{where}: {exc}") from None


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
    Llama: ``LlamaForCausalLM`` (no biases, RMSNorm, SwiGLU MLP, grouped-query attention).
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
    elif m.family == "bert":
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
    else:
        q, kv = m.heads * m.d_head, m.n_kv_heads * m.d_head
        out.append(("model.embed_tokens.weight", (V, h)))
        for i in range(L):
            p = f"model.layers.{i}."
            out += [(p + "self_attn.q_proj.weight", (q, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                    (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, q)),
                    (p + "mlp.gate_proj.weight", (I, h)), (p + "mlp.up_proj.weight", (I, h)),
                    (p + "mlp.down_proj.weight", (h, I)),
                    (p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
        out.append(("model.norm.weight", (h,)))
        if not m.tied_embeddings:
            out.append(("lm_head.weight", (V, h)))
    return out
