# %%
"""Token budget: the largest batch at each sequence length under a fixed memory budget, and padding against packing.

Question: under one memory budget on this host, how many sequences of each
length fit in a training step, and how many tokens is that? Tokens per step
would be constant if memory grew with b*s alone; eager attention's s^2 terms
bend the frontier down at long sequences. And on a real length distribution,
how many tokens (and how much memory) does padding waste against packing?
The estimator (``experiments.lib.estimator``) answers the same budget
question from the shapes alone; its answer is shown beside the measured one.

Method: the handbook's small GPT (``experiments.lib.gpt``, eager "math"
attention, fp32, dropout on) and AdamW; one full training step (forward,
backward, optimizer step) per probe, its peak from PyTorch's memory tracker
(``experiments.lib.memory``; on CUDA the allocator's peak). The search starts
from the estimator's answer, gallops and bisects on measured peaks until it
has a batch that fits and the next one that does not, both measured.
Lengths: the paragraphs (blank-line separated) of the Python reference
manual's topics that CPython ships in ``pydoc_data.topics`` (the text behind
``help()``), tokenised byte-level (one token per UTF-8 byte, vocabulary 256),
so every length is a real document's. Padding: batches of documents in a
seeded order, each padded to its batch's longest; packing: the same
documents concatenated and cut into rows of the longest length.

Run it: ``python -m experiments.token_budget --profile quick``.
"""

# %%
from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from experiments.lib import estimator
from experiments.lib.gpt import GPT, LayerShape
from experiments.lib.memory import MemoryTracker
from experiments.lib.model_shapes import ModelShape
from experiments.lib.threads import cpu_threads
from experiments.lib.timing import interleaved_times

TIMEOUT_S = 900
VOCAB = 256  # byte-level tokens


@dataclass(frozen=True)
class Config:
    layers: int = 2
    hidden: int = 64
    heads: int = 2
    dropout: float = 0.1
    seqs: tuple = (32, 64, 128, 256)
    budget_bytes_cpu: int = 24 * 2**20    # the memory budget on CPU
    cuda_budget_fraction: float = 0.02     # on CUDA: this share of the card's memory
    max_batch: int = 4096
    pack_docs: int = 16                    # documents in the measured padding-against-packing batch
    corpus_seed: int = 0
    min_run_time_s: float = 0.1
    cpu_threads: int = 1                   # see experiments.lib.threads; 0 leaves torch's default


PROFILES = {
    "test": Config(layers=1, hidden=16, heads=2, seqs=(16, 128), budget_bytes_cpu=2 * 2**20, max_batch=256,
                   pack_docs=8, min_run_time_s=0.01),
    "quick": Config(),
    "full": Config(layers=4, hidden=256, heads=8, seqs=(64, 128, 256, 512, 1024, 2048),
                   budget_bytes_cpu=1024 * 2**20, pack_docs=256, min_run_time_s=0.5),
    # gpu: 2 % of a 141 GB card is about 2.8 GB; batches stay in the tens to hundreds
    "gpu": Config(layers=4, hidden=512, heads=8, seqs=(128, 256, 512, 1024, 2048), cuda_budget_fraction=0.02,
                  pack_docs=256, min_run_time_s=0.3),
}

# %% [markdown]
# ## The corpus: real document lengths

# %%
CORPUS_SOURCE = "pydoc_data.topics (CPython's reference-manual topics behind help())"


def corpus_documents() -> list[bytes]:
    """Every non-empty paragraph of every topic, as UTF-8 bytes, in the module's order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # a Python built without its pydoc data (some minimal distributions)
        raise RuntimeError(f"the length corpus is CPython's pydoc_data.topics, which this Python lacks: {exc}") from exc

    docs = []
    for key in sorted(topics):
        docs.extend(p.strip().encode("utf-8") for p in topics[key].split("\n\n") if p.strip())
    return docs


def shuffled(docs: list[bytes], seed: int) -> list[bytes]:
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    return [docs[i] for i in order]


def length_counts(lengths: list[int], cap: int, batch: int) -> dict:
    """Token counts of padding and packing the whole corpus (documents truncated to ``cap``)."""
    clipped = [min(n, cap) for n in lengths]
    real = sum(clipped)
    dynamic = sum(batch * max(clipped[i:i + batch]) for i in range(0, len(clipped), batch))
    return {"cap_tokens": cap, "batch_docs": batch, "real_tokens": real,
            "pad_to_cap_tokens": len(clipped) * cap, "pad_to_batch_longest_tokens": dynamic,
            "packed_tokens": math.ceil(real / cap) * cap,
            "truncated_docs_count": sum(n > cap for n in lengths)}


def histogram(lengths: list[int]) -> list[dict]:
    """Documents per power-of-two length bucket: [2^k, 2^(k+1))."""
    top = max(lengths).bit_length()
    return [{"from_tokens": 2**k, "to_tokens": 2**(k + 1),
             "docs_count": sum(2**k <= n < 2**(k + 1) for n in lengths)} for k in range(top)]

# %% [markdown]
# ## One measured training step

# %%
def build(cfg: Config, device: str) -> GPT:
    torch.manual_seed(0)
    shape = LayerShape(cfg.hidden, cfg.heads, dropout=cfg.dropout, attn_dropout=cfg.dropout)
    return GPT(VOCAB, max(cfg.seqs), cfg.layers, shape).to(device)


def step_peak(cfg: Config, device: str, idx: torch.Tensor, targets: torch.Tensor | None = None) -> int:
    """Peak bytes of one AdamW training step on ``idx`` (the model and optimizer state included)."""
    model = build(cfg, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tracker = MemoryTracker(device).track(model, opt)
    try:
        with tracker:
            train_step(model, opt, idx, targets)
    finally:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    peak = tracker.peak().total
    return tracker.cuda_max_allocated_bytes if tracker.cuda_max_allocated_bytes is not None else peak


def train_step(model: GPT, opt: torch.optim.Optimizer, idx: torch.Tensor, targets: torch.Tensor | None) -> None:
    logits = model(idx)
    tgt = idx if targets is None else targets
    loss = F.cross_entropy(logits.flatten(0, 1).float(), tgt.flatten(), ignore_index=-100)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def random_tokens(batch: int, seq: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch * 7919 + seq)
    return torch.randint(0, VOCAB, (batch, seq), generator=g).to(device)

# %% [markdown]
# ## The estimator's answer and the measured one

# %%
def model_shape(cfg: Config) -> ModelShape:
    return ModelShape(family="gpt2", hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, vocab=VOCAB,
                      positions=max(cfg.seqs), dropout=cfg.dropout > 0, name="small GPT")


def estimated_peak(cfg: Config, device: str, batch: int, seq: int) -> int:
    # the handbook's GPT writes its attention out ("math"): the estimator's eager
    setup = estimator.Setup(optimizer="adamw", precision="fp32", batch=batch, seq=seq, attention="eager",
                            device=torch.device(device).type)
    return estimator.estimate(setup, shape=model_shape(cfg))["peak_bytes"]


def largest(fits, start: int, cap: int) -> int:
    """The largest b in [0, cap] with fits(b), fits monotone, searched from a first guess ``start``."""
    if not fits(1):
        return 0
    lo, hi = 1, None
    guess = max(1, min(cap, start))
    if fits(guess):
        lo = guess
    else:
        hi = guess
    step = 1
    while hi is None:
        nxt = min(cap, lo + step)
        if nxt == lo:
            return lo
        if fits(nxt):
            lo, step = nxt, step * 2
        else:
            hi = nxt
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def frontier_point(cfg: Config, device: str, seq: int, budget: int) -> dict:
    est_batch = largest(lambda b: estimated_peak(cfg, device, b, seq) <= budget, 1, cfg.max_batch)
    probes: dict[int, int] = {}

    def fits(b: int) -> bool:
        if b not in probes:
            try:
                probes[b] = step_peak(cfg, device, random_tokens(b, seq, device))
            except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError):
                probes[b] = budget + 1
        return probes[b] <= budget

    batch = largest(fits, est_batch, cfg.max_batch)
    fits(batch + 1)  # the next batch, measured: it must not fit
    return {"seq": seq, "max_batch": batch, "tokens_per_step_tokens": batch * seq,
            "peak_at_max_bytes": probes.get(batch, 0), "peak_at_next_bytes": probes[batch + 1],
            "probes_count": len(probes),
            "estimator_max_batch": est_batch,
            "estimator_peak_at_max_bytes": estimated_peak(cfg, device, batch, seq) if batch else 0}

# %% [markdown]
# ## Padding against packing, measured on one batch of real documents

# %%
def padded_batch(docs: list[bytes], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(d) for d in docs)
    idx = torch.zeros(len(docs), longest, dtype=torch.long)
    tgt = torch.full((len(docs), longest), -100, dtype=torch.long)
    for i, d in enumerate(docs):
        t = torch.tensor(list(d), dtype=torch.long)
        idx[i, :len(d)], tgt[i, :len(d)] = t, t
    return idx.to(device), tgt.to(device)


def packed_batch(docs: list[bytes], seq: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    stream = torch.tensor(list(b"".join(docs)), dtype=torch.long)
    rows = math.ceil(len(stream) / seq)
    idx = torch.zeros(rows * seq, dtype=torch.long)
    tgt = torch.full((rows * seq,), -100, dtype=torch.long)
    idx[:len(stream)], tgt[:len(stream)] = stream, stream
    return idx.view(rows, seq).to(device), tgt.view(rows, seq).to(device)


def pad_vs_pack(cfg: Config, device: str, docs: list[bytes]) -> dict:
    cap = max(cfg.seqs)
    batch_docs = [d[:cap] for d in docs[:cfg.pack_docs]]
    out, steps = {}, {}
    for name, (idx, tgt) in (("padded", padded_batch(batch_docs, device)),
                             ("packed", packed_batch(batch_docs, cap, device))):
        model = build(cfg, device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        out[name] = {"rows": int(idx.shape[0]), "row_tokens": int(idx.shape[1]),
                     "slots_tokens": int(idx.numel()), "real_tokens": int((tgt != -100).sum()),
                     "peak_bytes": step_peak(cfg, device, idx, tgt),
                     "estimator_peak_bytes": estimated_peak(cfg, device, int(idx.shape[0]), int(idx.shape[1]))}
        steps[name] = lambda m=model, o=opt, i=idx, t=tgt: train_step(m, o, i, t)
    for name, t in interleaved_times(steps, cfg.min_run_time_s).items():
        out[name]["time"] = t
    return out

# %% [markdown]
# ## Run

# %%
def run(cfg: Config, device: str) -> dict:
    with cpu_threads(cfg.cpu_threads, device) as threads:
        return {**_run(cfg, device), "threads": threads}


def _run(cfg: Config, device: str) -> dict:
    if device.startswith("cuda"):
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        budget, source = int(total * cfg.cuda_budget_fraction), "cuda_device_memory_fraction"
    else:
        budget, source = cfg.budget_bytes_cpu, "config"
    docs = shuffled(corpus_documents(), cfg.corpus_seed)
    lengths = [len(d) for d in docs]
    frontier = {str(s): frontier_point(cfg, device, s, budget) for s in cfg.seqs}
    return {
        "model": {"layers": cfg.layers, "hidden": cfg.hidden, "heads": cfg.heads, "vocab": VOCAB,
                  "params": sum(p.numel() for p in build(cfg, "cpu").parameters()), "attention": "eager (math)"},
        "budget_bytes": budget,
        "budget_source": source,
        "frontier": frontier,
        "corpus": {"source": CORPUS_SOURCE, "python": sys.version.split()[0], "docs_count": len(lengths),
                   "total_tokens": sum(lengths), "median_tokens": sorted(lengths)[len(lengths) // 2],
                   "longest_tokens": max(lengths), "histogram": histogram(lengths),
                   "counts": length_counts(lengths, max(cfg.seqs), cfg.pack_docs)},
        "pad_vs_pack": pad_vs_pack(cfg, device, docs),
    }

# %% [markdown]
# ## What the pages show, derived from what was measured

# %%
def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        m, seqs = data["model"], list(data["frontier"])
        return (f"{m['layers']}-layer GPT, hidden {m['hidden']}, {m['params']:,} params, "
                f"seq {seqs[0]}–{seqs[-1]} at the largest batch that fits")
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    f = data["frontier"]
    first = next(iter(f.values()))
    points = {}
    for key, p in f.items():
        points[key] = {
            "tokens_ratio_vs_shortest": p["tokens_per_step_tokens"] / max(1, first["tokens_per_step_tokens"]),
            "estimator_batch_ratio": p["estimator_max_batch"] / max(1, p["max_batch"]),
            "estimator_peak_ratio": p["estimator_peak_at_max_bytes"] / max(1, p["peak_at_max_bytes"]),
            "estimator_safe": p["estimator_max_batch"] <= p["max_batch"],
            "budget_used_share": p["peak_at_max_bytes"] / data["budget_bytes"],
        }
    c = data["corpus"]["counts"]
    pp = data["pad_vs_pack"]
    pad, pack = pp["padded"], pp["packed"]
    longest_key = list(f)[-1]
    return {
        "scale_label": scale_label(data),
        "frontier": points,
        "longest_seq_key": longest_key,
        "tokens_fall_at_longest_ratio": points[longest_key]["tokens_ratio_vs_shortest"],
        "estimator_always_safe": all(p["estimator_safe"] for p in points.values()),
        "budget_from_config": data["budget_source"] == "config",
        "corpus": {
            "pad_to_cap_waste_share": 1 - c["real_tokens"] / c["pad_to_cap_tokens"],
            "pad_to_batch_longest_waste_share": 1 - c["real_tokens"] / c["pad_to_batch_longest_tokens"],
            "packed_waste_share": 1 - c["real_tokens"] / c["packed_tokens"],
            "truncated_share": c["truncated_docs_count"] / data["corpus"]["docs_count"],
        },
        "pad_vs_pack": {
            "padded_waste_share": 1 - pad["real_tokens"] / pad["slots_tokens"],
            "packed_waste_share": 1 - pack["real_tokens"] / pack["slots_tokens"],
            "peak_ratio_packed_vs_padded": pack["peak_bytes"] / pad["peak_bytes"],
            "time_ratio_packed_vs_padded": pack["time"]["median_ms"] / pad["time"]["median_ms"],
            "padded_real_tokens_per_ms": pad["real_tokens"] / pad["time"]["median_ms"],
            "packed_real_tokens_per_ms": pack["real_tokens"] / pack["time"]["median_ms"],
            "padded_time_half_iqr_ms": pad["time"]["iqr_ms"] / 2,
            "packed_time_half_iqr_ms": pack["time"]["iqr_ms"] / 2,
        },
    }

# %% [markdown]
# ## Figure: the frontier, measured and estimated, and the length distribution

# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    f = data["frontier"]
    seqs = [p["seq"] for p in f.values()]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    a1.plot(seqs, [p["tokens_per_step_tokens"] for p in f.values()], "o-", label="measured")
    a1.plot(seqs, [p["estimator_max_batch"] * p["seq"] for p in f.values()], "s--", label="estimator")
    a1.set_xscale("log", base=2)
    a1.set_xlabel("sequence length (tokens)")
    a1.set_ylabel("tokens per step at the largest batch")
    a1.set_title(f"budget {data['budget_bytes'] / 2**20:.0f} MiB", fontsize=9)
    a1.legend(fontsize=8)
    h = data["corpus"]["histogram"]
    a2.bar([str(b["from_tokens"]) for b in h], [b["docs_count"] for b in h])
    a2.set_xlabel("document length, from (bytes = tokens)")
    a2.set_ylabel("documents")
    a2.tick_params(axis="x", labelsize=7)
    a2.set_title("pydoc_data.topics paragraphs", fontsize=9)
    for ax in (a1, a2):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig

# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    raise SystemExit(main(sys.modules[__name__]))
