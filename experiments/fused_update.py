# %%
"""Fused and in-place updates: what stepping inside backward and in-place activations save, and what they break.

Question: a vanilla training step keeps every gradient alive until
``optimizer.step()``. Stepping each parameter as soon as its gradient is
accumulated (``Tensor.register_post_accumulate_grad_hook``, one optimizer
per parameter, the gradient freed at once; PyTorch tutorial "How to save
memory by fusing the optimizer step into the backward pass") should keep
about one gradient at a time. How much does that save on one model, layer by
layer, and are the weights the same afterwards? And what do in-place
activations save, and break?

Method: an MLP on the shipped UCI digits, trained with Adam and with plain
SGD. The same steps run vanilla and fused from the same initial weights; ``MemoryTracker``
(torch's ``MemTracker``) gives the peak by category, and a hook on every
parameter records the live gradient bytes as backward proceeds. Then the
MLP with ``ReLU`` / ``ReLU6`` out of place and in place: bytes autograd
saves (``saved_tensors_hooks``), peaks, gradients compared; the extra bytes
of an SGD weight update written out of place and in place; and small
programs where an in-place operation makes autograd or checkpointing fail.

Run: ``python -m experiments.fused_update --profile quick``
"""

# %%
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from experiments.lib.threads import single_thread
from experiments.lib.digits import load
from experiments.lib.memory import MemoryTracker, param_bytes, tensor_bytes


@dataclass(frozen=True)
class Config:
    widths: tuple = (64, 512, 512, 512, 10)   # MLP layer widths (input 8x8 = 64 pixels)
    batch: int = 64
    steps: int = 3                            # steps compared for identical weights
    lr: float = 1e-3
    optimizers: tuple = ("adam", "sgd")
    seed: int = 0


PROFILES = {
    "test": Config(widths=(64, 96, 128, 10), batch=16, steps=2),
    "quick": Config(),
    "full": Config(widths=(64, 4096, 4096, 4096, 4096, 10), batch=256, steps=10),
    # gpu: the GPU plan's profile, sized to its time budget (generator/gpu_plan.py, STEPS).
    "gpu": Config(widths=(64, 2048, 2048, 2048, 2048, 10), batch=256, steps=5),
}
TIMEOUT_S = 300


# %%
def make_mlp(cfg: Config, act: str = "relu", inplace: bool = False) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(cfg.widths[:-1], cfg.widths[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(cfg.widths) - 2:
            layers.append(torch.nn.ReLU(inplace=inplace) if act == "relu" else torch.nn.ReLU6(inplace=inplace))
    return torch.nn.Sequential(*layers)


def layer_names(model: torch.nn.Module) -> dict[int, str]:
    """Parameter id -> name of its Linear layer ("fc1", "fc2", ...)."""
    out, k = {}, 0
    for m in model:
        if isinstance(m, torch.nn.Linear):
            k += 1
            for p in m.parameters():
                out[id(p)] = f"fc{k}"
    return out


# %% [markdown]
# ## Vanilla against fused: the same step, two memory profiles

# %%
def make_optimizer(name: str, params: list, lr: float) -> torch.optim.Optimizer:
    # foreach=False: the same per-tensor arithmetic in both modes, so the weights can match bit for bit.
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, foreach=False)
    return torch.optim.SGD(params, lr=lr, foreach=False)


class Step:
    """One training step, vanilla or fused, that records live gradient bytes during backward."""

    def __init__(self, model: torch.nn.Module, fused: bool, lr: float, optimizer: str) -> None:
        self.model, self.fused = model, fused
        self.params = list(model.parameters())
        self.names = layer_names(model)
        self.events: list[dict] = []
        if fused:
            self.optimizers = {p: make_optimizer(optimizer, [p], lr) for p in self.params}
            for p in self.params:
                p.register_post_accumulate_grad_hook(self._fused_hook)
        else:
            self.optimizer = make_optimizer(optimizer, self.params, lr)
            for p in self.params:
                p.register_post_accumulate_grad_hook(self._record)

    def _live(self) -> dict[str, int]:
        live: dict[str, int] = {}
        for p in self.params:
            if p.grad is not None:
                live[self.names[id(p)]] = live.get(self.names[id(p)], 0) + tensor_bytes(p.grad)
        return live

    def _record(self, p: torch.Tensor) -> None:
        if self.recording:
            self.events.append({"param": f"{self.names[id(p)]}.{'weight' if p.dim() == 2 else 'bias'}",
                                "live_grad_bytes_by_layer": self._live()})

    def _fused_hook(self, p: torch.Tensor) -> None:
        self._record(p)                    # the moment this gradient exists: the peak for it
        self.optimizers[p].step()
        p.grad = None                      # freed before the next gradient is produced

    def optimizers_list(self) -> list[torch.optim.Optimizer]:
        return list(self.optimizers.values()) if self.fused else [self.optimizer]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, recording: bool = False) -> None:
        self.recording = recording
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        if not self.fused:
            self.optimizer.step()
            if recording:
                self.events.append({"param": "optimizer.step()", "live_grad_bytes_by_layer": self._live()})
            self.optimizer.zero_grad(set_to_none=True)


def compare_fused(cfg: Config, data: dict, device: str, optimizer: str) -> dict:
    torch.manual_seed(cfg.seed)
    base = make_mlp(cfg).to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = [torch.randint(0, data["x_train"].shape[0], (cfg.batch,), generator=gen).to(device)
               for _ in range(cfg.steps + 1)]
    xs = [data["x_train"][i].flatten(1) for i in batches]
    ys = [data["y_train"][i] for i in batches]
    out: dict = {}
    models = {}
    for mode in ("vanilla", "fused"):
        model = copy.deepcopy(base)
        step = Step(model, fused=(mode == "fused"), lr=cfg.lr, optimizer=optimizer)
        step(xs[0], ys[0])                 # warm-up: Adam state exists before measuring
        tracker = MemoryTracker(device).track(model, *step.optimizers_list())
        with tracker, warnings.catch_warnings():
            # MemTracker warns about parameters whose .grad is None (set_to_none): expected here.
            warnings.filterwarnings("ignore", message="Expected a tensor or a traceable")
            tracker.reset_peak()
            step(xs[1], ys[1], recording=True)
            peak = tracker.peak()
        # What clip_grad_norm_ or accumulation would read after backward: nothing in fused mode.
        grads_left = sum(p.grad is not None for p in model.parameters())
        for i in range(2, cfg.steps + 1):
            step(xs[i], ys[i])
        models[mode] = model
        out[mode] = {
            "peak": peak.as_dict(),
            "cuda_max_allocated_bytes": tracker.cuda_max_allocated_bytes,
            "events": step.events,
            "grads_left_after_step": grads_left,
        }
    diffs = [float((a.detach() - b.detach()).abs().max()) for a, b in zip(models["vanilla"].parameters(), models["fused"].parameters())]
    return {**out, "max_abs_weight_diff": max(diffs)}


# %% [markdown]
# ## In-place activations: saved bytes, peaks, and what breaks

# %%
def saved_bytes(fn, model: torch.nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Bytes of distinct storages autograd keeps for backward while ``fn`` runs.

    Parameters (and views of them, such as ``weight.t()``) and the input batch are resident anyway: not counted.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()} | {x.untyped_storage().data_ptr()}
    seen: dict = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[(s.data_ptr(), s.nbytes())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def inplace_rows(cfg: Config, data: dict, device: str) -> dict[str, dict]:
    """Keyed ``relu``, ``relu_inplace``, ``relu6``, ``relu6_inplace``."""
    x = data["x_train"][: cfg.batch].flatten(1).clone()
    y = data["y_train"][: cfg.batch].clone()
    rows = {}
    for act in ("relu", "relu6"):
        grads = {}
        for inplace in (False, True):
            torch.manual_seed(cfg.seed)
            model = make_mlp(cfg, act, inplace).to(device)
            tracker = MemoryTracker(device).track(model)
            with tracker:
                with torch.no_grad():
                    model(x)
                inference = tracker.peak()
                tracker.reset_peak()
                nbytes, loss = saved_bytes(lambda: F.cross_entropy(model(x), y), model, x)
                loss.backward()
                peak = tracker.peak()
            grads[inplace] = [p.grad.clone() for p in model.parameters()]
            rows[f"{act}_inplace" if inplace else act] = {
                "activation": act, "inplace": inplace, "saved_bytes": nbytes,
                "peak_total_bytes": peak.total, "peak_activation_bytes": peak.by_category["activations"],
                "inference_peak_activation_bytes": inference.by_category["activations"]
                + inference.by_category["temporaries"]}
        rows[act]["grads_equal_out_of_place"] = True
        rows[f"{act}_inplace"]["grads_equal_out_of_place"] = all(torch.equal(a, b) for a, b in
                                                                 zip(grads[False], grads[True]))
    return rows


def update_rows(cfg: Config, data: dict, device: str) -> dict[str, dict]:
    """Extra bytes the SGD weight update itself needs: out of place, in place, torch.optim (for-loop, foreach)."""
    x = data["x_train"][: cfg.batch].flatten(1).clone()
    y = data["y_train"][: cfg.batch].clone()
    lr = cfg.lr

    def out_of_place(params):
        with torch.no_grad():
            for p in params:
                p.data = p.data - lr * p.grad          # lr * grad and the new weight are fresh tensors

    def in_place(params):
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-lr)

    def optim(foreach: bool):
        def step(params):
            torch.optim.SGD(params, lr=lr, foreach=foreach).step()
        return step

    rows, finals = {}, {}
    for key, fn in (("out_of_place", out_of_place), ("in_place", in_place),
                    ("optim_for_loop", optim(False)), ("optim_foreach", optim(True))):
        torch.manual_seed(cfg.seed)
        model = make_mlp(cfg).to(device)
        F.cross_entropy(model(x), y).backward()
        params = list(model.parameters())
        tracker = MemoryTracker(device).track(model)
        with tracker:
            before = tracker.current().total
            tracker.reset_peak()
            fn(params)
            peak = tracker.peak().total
        finals[key] = [p.detach().clone() for p in params]
        rows[key] = {"resident_before_bytes": before, "peak_total_bytes": peak}
    for key, row in rows.items():
        row["max_abs_diff_in_place"] = max(float((a - b).abs().max()) for a, b in zip(finals[key], finals["in_place"]))
    return rows


def breakages(device: str) -> dict[str, dict]:
    """Small programs where an in-place op meets autograd; which of them raise, and with what."""
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    lin, lin2 = torch.nn.Linear(8, 8).to(device), torch.nn.Linear(8, 8).to(device)
    x0 = torch.randn(4, 8, device=device)

    def segment(h):
        h.mul_(2)                          # in place on the segment's input
        return torch.tanh(lin2(h))

    def saved_output_modified():
        a = torch.randn(3, device=device, requires_grad=True)
        y = torch.sigmoid(a * 1)           # sigmoid keeps its output for backward
        y.mul_(2)
        y.sum().backward()

    def leaf_inplace():
        w = torch.randn(3, device=device, requires_grad=True)
        F.relu(w, inplace=True)

    def no_checkpoint():
        segment(lin(x0)).sum().backward()

    def with_checkpoint(reentrant: bool):
        return lambda: checkpoint(segment, lin(x0), use_reentrant=reentrant).sum().backward()

    cases = {
        "saved_output_modified": saved_output_modified,
        "leaf_inplace": leaf_inplace,
        "segment_no_checkpoint": no_checkpoint,
        "checkpoint_non_reentrant": with_checkpoint(False),
        "checkpoint_reentrant": with_checkpoint(True),
    }
    rows = {}
    for key, fn in cases.items():
        try:
            fn()
            rows[key] = {"raises": False, "error_type": "", "error_message": ""}
        except RuntimeError as e:
            first = str(e).split(":")[0].split("\n")[0]
            rows[key] = {"raises": True, "error_type": type(e).__name__, "error_message": first}
    return rows


# %%
def run(cfg: Config, device: str) -> dict:
    with single_thread(device):
        data = load(device, size=8, seed=cfg.seed)
        torch.manual_seed(cfg.seed)
        model = make_mlp(cfg)
        return {
            "fused": {name: compare_fused(cfg, data, device, name) for name in cfg.optimizers},
            "inplace": inplace_rows(cfg, data, device),
            "updates": update_rows(cfg, data, device),
            "breakages": breakages(device),
            "widths": list(cfg.widths),
            "batch": cfg.batch,
            "steps_compared": cfg.steps,
            "layers": sorted(set(layer_names(model).values()), key=lambda s: int(s[2:])),
            "param_bytes": param_bytes(model),
            "largest_param_bytes": max(tensor_bytes(p) for p in model.parameters()),
            # The fp32 outputs of the hidden layers, one batch: what an activation keeps for backward.
            "hidden_activation_bytes": sum(cfg.batch * w * 4 for w in cfg.widths[1:-1]),
        }


# %% [markdown]
# ## Derived at build time: what the pages and figures show

# %%
OPTIMIZER_LABELS = {"adam": "Adam", "sgd": "SGD"}
ACTIVATION_LABELS = {"relu": "ReLU", "relu6": "ReLU6"}
UPDATE_LABELS = {"out_of_place": "out of place: p = p - lr * g", "in_place": "in place: p.add_(g, alpha=-lr)",
                 "optim_for_loop": "torch.optim.SGD (for-loop)", "optim_foreach": "torch.optim.SGD (foreach)"}
CASE_LABELS = {
    "saved_output_modified": "in-place on a tensor autograd saved (sigmoid output)",
    "leaf_inplace": "in-place on a leaf that requires grad (ReLU(inplace=True) on a parameter)",
    "segment_no_checkpoint": "in-place on a segment's input, no checkpoint",
    "checkpoint_non_reentrant": "the same segment under checkpoint (non-reentrant)",
    "checkpoint_reentrant": "the same segment under checkpoint (reentrant)",
}


def max_live_grad_bytes(events: list) -> int:
    return max(sum(e["live_grad_bytes_by_layer"].values()) for e in events)


def scale_label(data: dict) -> str:
    """The model and scale a caption names: what was measured, at what size.

    A result from older code that lacks a field still renders: its caption says so."""
    try:
        widths = "→".join(str(w) for w in data["widths"])
        return f"{len(data['layers'])}-layer MLP ({widths}), batch {data['batch']}"
    except (KeyError, IndexError, TypeError):
        return "model size not recorded in this result"


def summarize(data: dict) -> dict:
    """Savings of the fused step, in-place differences, update extras, verdicts and labels."""
    fused = {}
    for name, f in data["fused"].items():
        live = {mode: max_live_grad_bytes(f[mode]["events"]) for mode in ("vanilla", "fused")}
        peak = {mode: f[mode]["peak"]["total_bytes"] for mode in ("vanilla", "fused")}
        fused[name] = {
            "label": OPTIMIZER_LABELS.get(name, name),
            "vanilla": {"max_live_grad_bytes": live["vanilla"]},
            "fused": {"max_live_grad_bytes": live["fused"]},
            "grad_saving_bytes": live["vanilla"] - live["fused"],
            "peak_saving_bytes": peak["vanilla"] - peak["fused"],
            "peak_saving_fraction": 1 - peak["fused"] / peak["vanilla"],
            "weights_identical": f["max_abs_weight_diff"] == 0.0,
        }
    rows = data["inplace"]
    inplace = {}
    for key, r in rows.items():
        # Each row against the same activation out of place, and against ReLU with the same in-place flag.
        out_of_place, relu = rows[r["activation"]], rows["relu_inplace" if r["inplace"] else "relu"]
        saved_change = r["saved_bytes"] - out_of_place["saved_bytes"]
        inference_change = r["inference_peak_activation_bytes"] - out_of_place["inference_peak_activation_bytes"]
        inplace[key] = {
            "activation_label": ACTIVATION_LABELS[r["activation"]],
            "mode_label": "in place" if r["inplace"] else "out of place",
            "saved_bytes_change_from_out_of_place": saved_change,
            "inference_peak_activation_bytes_change_from_out_of_place": inference_change,
            "memory_equal_out_of_place": saved_change == 0 and inference_change == 0,
            "extra_saved_bytes_vs_relu": r["saved_bytes"] - relu["saved_bytes"],
        }
    updates = {key: {"label": UPDATE_LABELS[key],
                     "extra_peak_bytes": u["peak_total_bytes"] - u["resident_before_bytes"],
                     "weights_equal_in_place": u["max_abs_diff_in_place"] == 0.0}
               for key, u in data["updates"].items()}
    return {
        "scale_label": scale_label(data),
        "fused": fused,
        # Vanilla keeps every gradient until optimizer.step(); fused keeps the one being applied.
        "predicted_vanilla_grad_bytes": data["param_bytes"],
        "predicted_fused_grad_bytes": data["largest_param_bytes"],
        "inplace": inplace,
        "updates": updates,
        "breakages": {key: {"label": CASE_LABELS[key]} for key in data["breakages"]},
    }


# %%
def plot(data: dict, summary: dict):
    import matplotlib.pyplot as plt

    fused = data["fused"]["adam"]
    layers = data["layers"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), sharey=True)
    for ax, mode in zip(axes, ("vanilla", "fused")):
        events = fused[mode]["events"]
        bottom = [0.0] * len(events)
        for layer in layers:
            vals = [e["live_grad_bytes_by_layer"].get(layer, 0) / 2 ** 20 for e in events]
            ax.bar(range(len(events)), vals, bottom=bottom, label=layer)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.plot(range(len(events)), bottom, "k.-", lw=1, label="total (cumulative)")
        ax.set_xticks(range(len(events)), [e["param"] for e in events], rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{mode} Adam step: peak {fused[mode]['peak']['total_bytes'] / 2 ** 20:.2f} MiB in all", fontsize=9)
        ax.set_xlabel("backward progress (gradient accumulated)")
    axes[0].set_ylabel("live gradients (MiB)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()

    fig2, ax = plt.subplots(figsize=(7, 3.4))
    rows = data["inplace"]
    labels = [f"{summary['inplace'][k]['activation_label']}\n{summary['inplace'][k]['mode_label']}" for k in rows]
    xs = range(len(rows))
    ax.bar([i - 0.2 for i in xs], [r["saved_bytes"] / 2 ** 20 for r in rows.values()], 0.4,
           label="saved for backward")
    ax.bar([i + 0.2 for i in xs], [r["inference_peak_activation_bytes"] / 2 ** 20 for r in rows.values()], 0.4,
           label="inference forward, peak activations")
    ax.set_xticks(xs, labels)
    ax.set_ylabel("MiB")
    ax.set_title("MLP with in-place and out-of-place activations")
    ax.legend()
    fig2.tight_layout()
    return {"grads_timeline": fig, "inplace": fig2}


# %%
if __name__ == "__main__":
    from experiments.lib.cli import main
    import sys
    raise SystemExit(main(sys.modules[__name__]))
