# %%
"""Quantization-aware scaling (QAS): why an int8 graph trains badly with fp32 hyperparameters, and the fix.

Question: when the trainable tensors of a network are its int8 weights (in
integer units, ``W_bar = W / s``), the gradient the optimizer sees is
``s * dL/dW`` while the weight is ``W / s``: the gradient-to-weight ratio
shrinks by ``s**2``, so a learning rate tuned in fp32 barely moves the
weights. Lin et al. 2022 ("On-Device Training Under 256KB Memory", section
2.1) rescale the gradients by ``s**-2`` (and a bias's by ``(s_W s_x)**-2``).
How large is the mismatch on a real CNN, and does QAS restore training?

Method: a four-layer CNN on the shipped UCI digits is warmed up in fp32,
then its activation scales are calibrated and it is trained for a fixed
number of SGD steps in three ways with the same learning rate: fp32; an int8
graph whose trainable tensors are the weights and biases in integer units
(per-output-channel weight scales, int32-grid biases, int8 activations,
straight-through rounding; the integer-unit weights are kept in float
between steps) without QAS; and the same with QAS. Per layer, the median
``||g|| / ||W||`` over the steps, the prediction of the mismatch from the
fp32 gradient, and the test accuracy along the way.

Run: ``python -m experiments.qas --profile quick``
"""

# %%
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from experiments.lib import quant as Q
from experiments.lib.threads import single_thread
from experiments.lib.digits import load


@dataclass(frozen=True)
class Config:
    channels: tuple = (8, 16, 32)     # conv widths; then global average pool and a linear classifier
    warmup_steps: int = 60            # fp32 steps before quantizing (the "pretrained" model)
    steps: int = 60                   # training steps in each graph
    batch: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    eval_every: int = 10
    seed: int = 0


PROFILES = {
    "test": Config(channels=(4, 8, 8), warmup_steps=60, steps=30, eval_every=10),
    "quick": Config(),
    "full": Config(channels=(16, 32, 64), steps=400, eval_every=20),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    "gpu": Config(channels=(16, 32, 64), steps=200, eval_every=20),
}
TIMEOUT_S = 300
MODES = ("fp32", "int8", "int8_qas")


# %% [markdown]
# ## The network, in fp32 and as an int8 graph trained in integer units

# %%
def make_fp32(cfg: Config) -> torch.nn.ModuleDict:
    c = cfg.channels
    return torch.nn.ModuleDict({
        "conv1": torch.nn.Conv2d(1, c[0], 3, padding=1),
        "conv2": torch.nn.Conv2d(c[0], c[1], 3, stride=2, padding=1),
        "conv3": torch.nn.Conv2d(c[1], c[2], 3, stride=2, padding=1),
        "fc": torch.nn.Linear(c[2], 10),
    })


def forward_fp32(net: torch.nn.ModuleDict, x: torch.Tensor, record: list | None = None) -> torch.Tensor:
    for name in ("conv1", "conv2", "conv3"):
        if record is not None:
            record.append(x.detach())
        x = F.relu(net[name](x))
    x = x.mean(dim=(2, 3))
    if record is not None:
        record.append(x.detach())
    return net["fc"](x)


class Int8Graph(torch.nn.Module):
    """The same network with int8 weights, int32 biases and int8 activations.

    Trainable tensors are ``w_bar = W / s_w`` (per output channel) and
    ``b_bar = b / (s_w * s_x)``, in integer units as on a device; the forward
    pass rounds them (straight-through) and fake-quantizes every layer input
    with a fixed scale. ``qas=True`` multiplies their gradients by ``s_w**-2``
    and ``(s_w * s_x)**-2``.
    """

    def __init__(self, net: torch.nn.ModuleDict, x_scales: list[torch.Tensor], qas: bool) -> None:
        super().__init__()
        self.names = list(net.keys())
        self.meta = {}
        self.w_bar = torch.nn.ParameterDict()
        self.b_bar = torch.nn.ParameterDict()
        for name, s_x in zip(self.names, x_scales):
            layer = net[name]
            w = layer.weight.detach()
            s_w = Q.symmetric_scale(w, channel_dim=0)
            s_b = (s_w.reshape(-1) * s_x)
            self.w_bar[name] = torch.nn.Parameter(w / s_w)
            self.b_bar[name] = torch.nn.Parameter(layer.bias.detach() / s_b)
            self.meta[name] = {"s_w": s_w, "s_x": s_x, "s_b": s_b,
                               "stride": getattr(layer, "stride", None), "padding": getattr(layer, "padding", None)}
            if qas:
                self.w_bar[name].register_hook(lambda g, s=s_w: g / s ** 2)
                self.b_bar[name].register_hook(lambda g, s=s_b: g / s ** 2)

    def weight(self, name: str) -> torch.Tensor:
        w = self.w_bar[name]
        return _round_ste(w.clamp(Q.QMIN, Q.QMAX)) * self.meta[name]["s_w"]

    def bias(self, name: str) -> torch.Tensor:
        return _round_ste(self.b_bar[name]) * self.meta[name]["s_b"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names[:-1]:
            m = self.meta[name]
            x = Q.fake_quant(x, m["s_x"])
            x = F.relu(F.conv2d(x, self.weight(name), self.bias(name), m["stride"], m["padding"]))
        x = x.mean(dim=(2, 3))
        name = self.names[-1]
        return F.linear(Q.fake_quant(x, self.meta[name]["s_x"]), self.weight(name), self.bias(name))


def _round_ste(t: torch.Tensor) -> torch.Tensor:
    return t + (torch.round(t) - t).detach()


# %% [markdown]
# ## Training and the gradient-to-weight ratios

# %%
def accuracy(fn, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((fn(x).argmax(1) == y).double().mean())


def train(cfg: Config, mode: str, start: torch.nn.ModuleDict, x_scales: list, data: dict, device: str) -> dict:
    if mode == "fp32":
        net = make_fp32(cfg).to(device)
        net.load_state_dict(start.state_dict())
        fn = lambda x: forward_fp32(net, x)  # noqa: E731
        pairs = {n: (net[n].weight, net[n].bias) for n in net}
    else:
        graph = Int8Graph(start, x_scales, qas=(mode == "int8_qas")).to(device)
        fn = graph
        pairs = {n: (graph.w_bar[n], graph.b_bar[n]) for n in graph.names}
    params = [p for pair in pairs.values() for p in pair]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    ratios = {n: {"weight": [], "bias": []} for n in pairs}
    curve = [{"step": 0, "test_accuracy": accuracy(fn, data["x_test"], data["y_test"])}]
    n = data["x_train"].shape[0]
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, n, (cfg.batch,), generator=gen).to(device)
        loss = F.cross_entropy(fn(data["x_train"][idx]), data["y_train"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for name, (w, b) in pairs.items():
            ratios[name]["weight"].append(float(w.grad.norm() / w.detach().norm()))
            ratios[name]["bias"].append(float(b.grad.norm() / b.detach().norm().clamp_min(1e-12)))
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            curve.append({"step": step, "test_accuracy": accuracy(fn, data["x_test"], data["y_test"])})
    return {
        "ratio_weight": {k: statistics.median(v["weight"]) for k, v in ratios.items()},
        "ratio_bias": {k: statistics.median(v["bias"]) for k, v in ratios.items()},
        "curve": curve,
    }


def predicted_ratios(cfg: Config, net: torch.nn.ModuleDict, x_scales: list, data: dict) -> dict:
    """The int8 and QAS ratios predicted from one fp32 gradient, and the int8 ratios measured on the same batch."""
    idx = torch.arange(cfg.batch, device=data["x_train"].device)
    x, y = data["x_train"][idx], data["y_train"][idx]
    net.zero_grad(set_to_none=True)
    F.cross_entropy(forward_fp32(net, x), y).backward()
    graph = Int8Graph(net, x_scales, qas=False)
    F.cross_entropy(graph(x), y).backward()
    out = {}
    for name, s_x in zip(net.keys(), x_scales):
        w, g = net[name].weight.detach(), net[name].weight.grad
        s = graph.meta[name]["s_w"]
        # W_bar = W / s and dL/dW_bar = s * dL/dW, channel by channel.
        int8 = float((s * g).norm() / (w / s).norm())
        qas = float((g / s).norm() / (w / s).norm())
        out[name] = {
            "fp32_ratio": float(g.norm() / w.norm()),
            "int8_predicted_ratio": int8,
            "int8_measured_ratio": float(graph.w_bar[name].grad.norm() / graph.w_bar[name].detach().norm()),
            "qas_predicted_ratio": qas,
            "weight_scale_rms": float(s.pow(2).mean().sqrt()),
        }
    net.zero_grad(set_to_none=True)
    return out


# %%
def run(cfg: Config, device: str) -> dict:
    with single_thread(device):
        return _run(cfg, device)


def _run(cfg: Config, device: str) -> dict:
    torch.manual_seed(cfg.seed)
    data = load(device, size=8, seed=cfg.seed)
    net = make_fp32(cfg).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    for _ in range(cfg.warmup_steps):
        idx = torch.randint(0, data["x_train"].shape[0], (cfg.batch,), generator=gen).to(device)
        loss = F.cross_entropy(forward_fp32(net, data["x_train"][idx]), data["y_train"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    # Calibrate one activation scale per layer input on the training set (max |x|).
    record: list = []
    with torch.no_grad():
        forward_fp32(net, data["x_train"], record)
    x_scales = [Q.symmetric_scale(a) for a in record]
    warm_acc = accuracy(lambda x: forward_fp32(net, x), data["x_test"], data["y_test"])
    return {
        "layers": list(net.keys()),
        "warmup_test_accuracy": warm_acc,
        "steps": cfg.steps,
        "lr": cfg.lr,
        "momentum": cfg.momentum,
        "modes": {mode: train(cfg, mode, net, x_scales, data, device) for mode in MODES},
        "at_start": predicted_ratios(cfg, net, x_scales, data),
    }


# %% [markdown]
# ## Derived at build time: what the pages and figures show

# %%
LABELS = {"fp32": "fp32", "int8": "int8 graph, no QAS", "int8_qas": "int8 graph with QAS"}


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        return f"{len(data['layers'])}-layer int8 CNN ({', '.join(data['layers'])}) on UCI digits"
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    """Per layer, each graph's ratio against fp32's; final accuracies and gains; the s_W**2 factor."""
    layers, modes = data["layers"], data["modes"]
    fp32 = modes["fp32"]["ratio_weight"]
    int8_over = {n: modes["int8"]["ratio_weight"][n] / fp32[n] for n in layers}
    qas_over = {n: modes["int8_qas"]["ratio_weight"][n] / fp32[n] for n in layers}
    final = {m: modes[m]["curve"][-1]["test_accuracy"] for m in modes}
    at_start = {}
    for n in layers:
        s = data["at_start"][n]
        at_start[n] = {
            # s_W**2 (mean over channels): the factor by which the int8 ratio falls below the fp32 one.
            "weight_scale_rms_squared": s["weight_scale_rms"] ** 2,
            "int8_measured_over_predicted_ratio": s["int8_measured_ratio"] / s["int8_predicted_ratio"],
        }
    return {
        "scale_label": scale_label(data),
        "labels": {m: LABELS[m] for m in modes},
        "final_test_accuracy": final,
        "accuracy_gain_over_warmup": {m: final[m] - data["warmup_test_accuracy"] for m in modes},
        "at_start": at_start,
        "int8_over_fp32_ratio": int8_over,
        "fp32_over_int8_ratio": {n: 1 / v for n, v in int8_over.items()},
        "qas_over_fp32_ratio": qas_over,
        "int8_over_fp32_min": min(int8_over.values()), "int8_over_fp32_max": max(int8_over.values()),
        # how many times too little the int8 weights move, across layers (each layer has its own s_W)
        "fp32_over_int8_min": 1 / max(int8_over.values()), "fp32_over_int8_max": 1 / min(int8_over.values()),
        "qas_over_fp32_min": min(qas_over.values()), "qas_over_fp32_max": max(qas_over.values()),
    }


# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    labels = summary["labels"]
    layers = data["layers"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.27
    for i, mode in enumerate(data["modes"]):
        vals = [data["modes"][mode]["ratio_weight"][n] for n in layers]
        ax.bar([j + (i - 1) * width for j in range(len(layers))], vals, width, label=labels[mode])
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("median ||g|| / ||W|| per step")
    ax.legend(fontsize=8, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()

    fig2, ax2 = plt.subplots(figsize=(7, 3.4))
    for mode, result in data["modes"].items():
        curve = result["curve"]
        ax2.plot([c["step"] for c in curve], [100 * c["test_accuracy"] for c in curve], "o-", ms=3,
                 label=labels[mode])
    ax2.set_xlabel(f"SGD steps after the fp32 warm-up (lr {data['lr']:g}, same for all)")
    ax2.set_ylabel("test accuracy (%)")
    ax2.legend()
    fig2.tight_layout()
    return {"ratios": fig, "accuracy": fig2}


# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
