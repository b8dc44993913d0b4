"""Bytes that autograd saves for backward, counted once per storage, parameters excluded.

``torch.autograd.graph.saved_tensors_hooks`` calls a pack hook for every
tensor an autograd node keeps for its backward pass. This counter records
the storage behind each one (two views of one storage are one allocation, so
they count once), skips the storages of the parameters and buffers it is told
to exclude (they are model state, alive whether or not backward runs), and
attributes each new storage to the innermost registered module that was
running when it was saved.

The storage key is its address and size, which is unique while the graph
that holds the saved tensors is alive: measure a forward pass, read the
counts, then run (or drop) backward.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn


def _key(t: torch.Tensor) -> tuple:
    st = t.untyped_storage()
    return (t.device.type, t.device.index, st.data_ptr(), st.nbytes())


@dataclass
class SavedEntry:
    module: str
    shape: tuple
    dtype: str
    bytes: int
    kind: str = ""


@dataclass
class SavedBytes:
    """The result: ``total_bytes`` and ``by_module[name]`` (bytes), plus every counted entry."""

    total_bytes: int = 0
    by_module: dict[str, int] = field(default_factory=dict)
    entries: list[SavedEntry] = field(default_factory=list)
    pack_calls: int = 0


class SavedTensorCounter:
    """Context manager: ``with SavedTensorCounter(exclude=[model], attribute=model) as c: loss = model(x)``.

    ``exclude``: modules (their parameters and buffers) or tensors whose storages are not activations.
    ``attribute``: a module whose named submodules label the saved bytes; bytes saved outside any
    of them go to ``""``. Module names are the ``named_modules`` names of ``attribute``.
    ``classify``: an optional function giving each counted tensor a ``kind`` label.
    """

    def __init__(self, exclude: Iterable[nn.Module | torch.Tensor] = (), attribute: nn.Module | None = None,
                 classify: Callable[[torch.Tensor], str] | None = None) -> None:
        self._excluded: set[tuple] = set()
        for obj in exclude:
            tensors = list(obj.parameters()) + list(obj.buffers()) if isinstance(obj, nn.Module) else [obj]
            self._excluded.update(_key(t) for t in tensors)
        self._attribute = attribute
        self._classify = classify
        self._stack: list[str] = []
        self._seen: set[tuple] = set()
        self._handles: list = []
        self._hooks = None
        self.result = SavedBytes()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.result.pack_calls += 1
        key = _key(t)
        if key in self._excluded or key in self._seen:
            return t
        self._seen.add(key)
        nbytes = key[3]
        name = self._stack[-1] if self._stack else ""
        self.result.total_bytes += nbytes
        self.result.by_module[name] = self.result.by_module.get(name, 0) + nbytes
        kind = self._classify(t) if self._classify is not None else ""
        self.result.entries.append(SavedEntry(name, tuple(t.shape), str(t.dtype).replace("torch.", ""), nbytes, kind))
        return t

    def _enter_hook(self, name: str):
        def hook(_module: nn.Module, _args: tuple) -> None:
            self._stack.append(name)
        return hook

    def _exit_hook(self, _module: nn.Module, _args: tuple, _output: object) -> None:
        self._stack.pop()  # a hook that returned a value would replace the module's output

    def __enter__(self) -> "SavedTensorCounter":
        if self._attribute is not None:
            for name, mod in self._attribute.named_modules():
                if not name:
                    continue
                self._handles.append(mod.register_forward_pre_hook(self._enter_hook(name)))
                self._handles.append(mod.register_forward_hook(self._exit_hook, always_call=True))
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        for h in self._handles:
            h.remove()
        self._handles.clear()


def count_saved(fn, exclude: Iterable[nn.Module | torch.Tensor] = (), attribute: nn.Module | None = None,
                classify: Callable[[torch.Tensor], str] | None = None):
    """Run ``fn()`` under a counter; return ``(fn's output, SavedBytes)``. Keep the output alive to keep the graph."""
    with SavedTensorCounter(exclude, attribute, classify) as counter:
        out = fn()
    return out, counter.result


def saved_by_node(outputs: torch.Tensor | Iterable[torch.Tensor],
                  exclude: Iterable[nn.Module | torch.Tensor] = ()) -> dict[str, int]:
    """Bytes saved for backward per autograd node type (``MmBackward0``, ``SoftmaxBackward0``, ...).

    A second, independent count: walk the graph behind ``outputs`` and read each node's ``_saved_*``
    attributes. Each storage is counted once, at the first node the walk meets; parameters and buffers of
    ``exclude`` are left out. Call it before backward (backward frees the saved tensors).
    """
    excluded: set[tuple] = set()
    for obj in exclude:
        tensors = list(obj.parameters()) + list(obj.buffers()) if isinstance(obj, nn.Module) else [obj]
        excluded.update(_key(t) for t in tensors)
    outs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    stack = [t.grad_fn for t in outs if t.grad_fn is not None]
    seen_nodes, seen_storages = set(), set(excluded)
    by_node: dict[str, int] = {}
    while stack:
        node = stack.pop()
        if node is None or node in seen_nodes:
            continue
        seen_nodes.add(node)
        for attr in dir(node):
            if not attr.startswith("_saved_"):
                continue
            value = getattr(node, attr)
            values = value if isinstance(value, (list, tuple)) else [value]
            for t in values:
                if isinstance(t, torch.Tensor):
                    key = _key(t)
                    if key not in seen_storages:
                        seen_storages.add(key)
                        by_node[node.name()] = by_node.get(node.name(), 0) + key[3]
        stack.extend(fn for fn, _ in node.next_functions)
    return by_node
