"""A GPT-style decoder layer written plainly, so that what autograd saves is visible.

Every piece that saves something for backward is its own submodule (the two
LayerNorms, the QKV projection, the attention core, the attention-probability
dropout, the output projection, the residual dropouts, the two MLP
projections and the GELU). A saved-tensor counter that knows which module is
running can then attribute every saved byte to one named piece, which is how
the activation chapter puts PyTorch's bookkeeping beside the term-by-term
accounting of Korthikanti et al. 2022.

The attention core has two forms: ``"math"`` writes out
``softmax(QK^T / sqrt(d)) V`` with an explicit causal mask (it materialises
the s x s scores), ``"sdpa"`` calls ``torch.nn.functional.scaled_dot_product_attention``
(flash or memory-efficient kernels where the device and the arguments allow).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_KINDS = ("math", "sdpa")


@dataclass(frozen=True)
class LayerShape:
    """The shape of one decoder layer: hidden size h, heads a, MLP ratio, dropout rates."""

    hidden: int
    heads: int
    mlp_ratio: int = 4
    dropout: float = 0.1
    attn_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")


class AttentionCore(nn.Module):
    """softmax(QK^T/sqrt(d) + causal mask) -> dropout -> @V, on (b, a, s, d) tensors."""

    def __init__(self, attention: str, attn_dropout: float, max_seq: int) -> None:
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, not {attention!r}")
        self.attention = attention
        self.attn_dropout = attn_dropout
        self.attn_drop = nn.Dropout(attn_dropout)
        # A buffer, so that the mask is model state (like a parameter) and not an activation.
        mask = torch.ones(max_seq, max_seq, dtype=torch.bool).triu(1) if attention == "math" else torch.empty(0)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.attention == "sdpa":
            p = self.attn_dropout if self.training else 0.0
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        s = q.shape[-2]
        if s > self.causal_mask.shape[0]:
            raise ValueError(f"sequence length {s} exceeds max_seq {self.causal_mask.shape[0]}")
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        scores = scores.masked_fill(self.causal_mask[:s, :s], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        return self.attn_drop(probs) @ v


class CheckpointedCore(nn.Module):
    """The attention core, recomputed in backward: selective recomputation (Korthikanti et al. 2022).

    Wraps a layer's ``core``; its saved scores and softmax are rebuilt from Q, K and V during
    backward instead of being kept from forward.
    """

    def __init__(self, inner: nn.Module, preserve_rng_state: bool = True) -> None:
        super().__init__()
        self.inner = inner
        self.preserve_rng_state = preserve_rng_state

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self.inner, q, k, v, use_reentrant=False, preserve_rng_state=self.preserve_rng_state)


class DecoderLayer(nn.Module):
    """Pre-LayerNorm GPT block: x + drop(proj(attn(ln1(x)))), then x + drop(fc2(gelu(fc1(ln2(x)))))."""

    def __init__(self, shape: LayerShape, attention: str = "math", max_seq: int = 2048) -> None:
        super().__init__()
        h = shape.hidden
        self.heads = shape.heads
        self.ln1 = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.core = AttentionCore(attention, shape.attn_dropout, max_seq)
        self.proj = nn.Linear(h, h)
        self.drop1 = nn.Dropout(shape.dropout)
        self.ln2 = nn.LayerNorm(h)
        self.fc1 = nn.Linear(h, shape.mlp_ratio * h)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(shape.mlp_ratio * h, h)
        self.drop2 = nn.Dropout(shape.dropout)

    def attention_block(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, h // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (b, a, s, d)
        y = self.core(q, k, v).transpose(1, 2).reshape(b, s, h)
        return self.drop1(self.proj(y))

    def mlp_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.gelu(self.fc1(self.ln2(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention_block(x)
        return x + self.mlp_block(x)


class GPT(nn.Module):
    """Token embedding + learned positions + N decoder layers + final LayerNorm + tied LM head.

    ``layer_wrapper(i, layer, x)`` lets a caller run layer ``i`` differently
    (for example under activation checkpointing) without another model class.
    """

    def __init__(self, vocab: int, max_seq: int, layers: int, shape: LayerShape, attention: str = "math") -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, shape.hidden)
        self.pos = nn.Embedding(max_seq, shape.hidden)
        self.drop = nn.Dropout(shape.dropout)
        self.layers = nn.ModuleList(DecoderLayer(shape, attention, max_seq) for _ in range(layers))
        self.ln_f = nn.LayerNorm(shape.hidden)
        self.layer_wrapper = None
        # GPT-2's embedding initialisation; with the tied head, N(0, 1) would start at absurd logits
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(pos))
        for i, layer in enumerate(self.layers):
            x = layer(x) if self.layer_wrapper is None else self.layer_wrapper(i, layer, x)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.hidden_states(idx) @ self.tok.weight.t()
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def layer_param_count(hidden: int, mlp_ratio: int = 4) -> int:
    """Parameters of one DecoderLayer: QKV, projection, the MLP, with biases, and two LayerNorms."""
    h, f = hidden, mlp_ratio * hidden
    return (h * 3 * h + 3 * h) + (h * h + h) + (h * f + f) + (f * h + h) + 4 * h


def gpt_param_count(vocab: int, max_seq: int, layers: int, hidden: int, mlp_ratio: int = 4) -> int:
    """Parameters of GPT (tied head): embeddings, layers, final LayerNorm."""
    return vocab * hidden + max_seq * hidden + layers * layer_param_count(hidden, mlp_ratio) + 2 * hidden
