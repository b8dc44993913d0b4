"""``torch.compile`` under an activation-memory budget: the one place that touches the private knob.

AOTAutograd's min-cut partitioner decides which forward values the compiled
backward reads from memory and which it recomputes.
``torch._functorch.config.activation_memory_budget`` (torch 2.4 and newer; a
private config) turns that into a 0-1 knapsack: 1.0 is the default,
runtime-optimised choice; 0.0 the activation memory of checkpointing the whole
compiled region (only its inputs kept); a value between asks for at most that
fraction of the way from the one to the other, recomputing what is cheapest
(by FLOPs, ``activation_memory_budget_runtime_estimator = "flops"``) first.

The backend is ``aot_eager_decomp_partition``: AOTAutograd with the
decompositions and the partitioner of Inductor but eager kernels, so it needs
no C++ compiler and runs on any host; the partitioner's choice is the one
Inductor would make.

``compiled_step(model, budget)`` compiles a fresh copy of dynamo's state
under the budget; ``graph_saved_bytes(output, exclude)`` counts what the
compiled graph saved for backward (each storage once, parameters aside).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

BACKEND = "aot_eager_decomp_partition"


def budget_supported() -> bool:
    try:
        import torch._functorch.config as fc
    except ImportError:
        return False
    return hasattr(fc, "activation_memory_budget")


def compile_under_budget(fn: Callable, budget: float) -> Callable:
    """``fn`` compiled with the partitioner's activation-memory budget set to ``budget`` (0..1).

    The budget is read when the graph is compiled, so the returned function compiles (on its
    first call) inside the patched config; dynamo's caches are reset first so that no graph
    compiled under another budget is reused.
    """
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"activation memory budget must be within 0 and 1, not {budget}")
    import torch._functorch.config as fc

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend=BACKEND)

    def call(*args, **kwargs):
        with fc.patch(activation_memory_budget=budget):
            return compiled(*args, **kwargs)

    return call


def _key(t: torch.Tensor) -> tuple:
    st = t.untyped_storage()
    return (t.device.type, st.data_ptr(), st.nbytes())


def graph_saved_bytes(output: torch.Tensor, exclude: Iterable[nn.Module] = ()) -> int:
    """Bytes the autograd graph behind ``output`` holds for backward, each storage once, parameters aside.

    Reads each node's saved tensors (``saved_tensors`` of a compiled region's node, ``_saved_*`` of an
    eager one). Call it before backward.
    """
    excluded = {_key(p) for m in exclude for p in list(m.parameters()) + list(m.buffers())}
    seen, nodes, stack, total = set(excluded), set(), [output.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in nodes:
            continue
        nodes.add(node)
        tensors = []
        if hasattr(node, "saved_tensors"):
            tensors.extend(node.saved_tensors)
        for attr in dir(node):
            if attr.startswith("_saved_"):
                value = getattr(node, attr)
                tensors.extend(value if isinstance(value, (list, tuple)) else [value])
        for t in tensors:
            if isinstance(t, torch.Tensor):
                k = _key(t)
                if k not in seen:
                    seen.add(k)
                    total += k[2]
        stack.extend(fn for fn, _ in node.next_functions)
    return total
