"""Saved-tensor hooks that move or shrink what autograd keeps for backward.

``torch.autograd.graph.saved_tensors_hooks(pack, unpack)`` lets a caller
replace every tensor an autograd node saves with anything it likes (``pack``)
and rebuild the tensor when backward needs it (``unpack``). Two uses here:

* ``MmapOffload``: each saved activation is written to its own file through a
  shared memory mapping (``torch.from_file(..., shared=True)``) and dropped;
  backward maps the file back privately. What stays resident between forward
  and backward is a file name. On a CPU host this is the only offload that
  frees anything (CPU "offload to the CPU" moves nothing).
* ``CompressSaved``: each saved floating-point activation is kept in a
  narrower format (bf16, fp8 e4m3 with a per-tensor scale, int8 with a
  per-tensor or per-channel scale) and decoded to its dtype in backward.

Both skip the parameters and buffers they are told to exclude (model state,
alive anyway) and tensors below ``min_bytes``; both pack each saved view of
a storage once (a tensor saved by two nodes is stored once, as autograd
would keep it once). ``SavedTensorCounter`` (``experiments.lib.saved``) has
the same exclusion rule; ``module_of`` follows its module-stack attribution.

``save_on_cpu`` wraps ``torch.autograd.graph.save_on_cpu`` (CUDA: a
pinned-memory copy per saved tensor).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

SCHEMES = ("bf16", "fp8_e4m3", "int8_tensor", "int8_channel")
FP8_E4M3_MAX = 448.0   # the largest finite float8_e4m3fn (OCP 8-bit floating point spec, E4M3)
INT8_MAX = 127


def fp8_available() -> bool:
    """Whether this torch has the float8 e4m3 dtype (torch 2.1 and newer)."""
    return hasattr(torch, "float8_e4m3fn")


def available_schemes() -> tuple[str, ...]:
    return tuple(s for s in SCHEMES if s != "fp8_e4m3" or fp8_available())


def _storage_key(t: torch.Tensor) -> tuple:
    st = t.untyped_storage()
    return (t.device.type, t.device.index, st.data_ptr(), st.nbytes())


def _view_key(t: torch.Tensor) -> tuple:
    return (*_storage_key(t), tuple(t.shape), tuple(t.stride()), t.storage_offset(), t.dtype)


def _excluded_keys(exclude: Iterable[nn.Module | torch.Tensor]) -> set[tuple]:
    keys: set[tuple] = set()
    for obj in exclude:
        tensors = list(obj.parameters()) + list(obj.buffers()) if isinstance(obj, nn.Module) else [obj]
        keys.update(_storage_key(t) for t in tensors)
    return keys


@dataclass
class HookStats:
    """What the hooks did: tensors packed, their bytes before and after, tensors left as they were."""

    packed_count: int = 0
    original_bytes: int = 0
    stored_bytes: int = 0
    kept_count: int = 0
    kept_bytes: int = 0
    files_written: int = 0
    unpacked_count: int = 0
    by_module: dict[str, dict[str, int]] = field(default_factory=dict)


class _ModuleStack:
    """The innermost registered module running now (forward pre/post hooks), as ``SavedTensorCounter`` does."""

    def __init__(self, model: nn.Module | None) -> None:
        self.model, self.stack, self.handles = model, [], []

    def __enter__(self) -> "_ModuleStack":
        if self.model is not None:
            for name, mod in self.model.named_modules():
                if name:
                    self.handles.append(mod.register_forward_pre_hook(self._enter(name)))
                    self.handles.append(mod.register_forward_hook(self._exit, always_call=True))
        return self

    def _enter(self, name: str) -> Callable:
        def hook(_module: nn.Module, _args: tuple) -> None:
            self.stack.append(name)
        return hook

    def _exit(self, _module: nn.Module, _args: tuple, _output: object) -> None:
        self.stack.pop()  # returns nothing: a value would replace the module's output

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else ""


class _PackingHooks:
    """Common machinery: exclusion, size threshold, one pack per saved view, per-module byte counts."""

    def __init__(self, exclude: Iterable[nn.Module | torch.Tensor] = (), attribute: nn.Module | None = None,
                 min_bytes: int = 0, select: Callable[[str, torch.Tensor], bool] | None = None) -> None:
        self._excluded = _excluded_keys(exclude)
        self._modules = _ModuleStack(attribute)
        self._min_bytes = min_bytes
        self._select = select
        self._cache: dict[tuple, object] = {}
        self._hooks = None
        self.stats = HookStats()

    # subclasses: _encode(t) -> (payload, stored_bytes); _decode(payload) -> tensor
    def _encode(self, t: torch.Tensor) -> tuple[object, int]:
        raise NotImplementedError

    def _decode(self, payload: object) -> torch.Tensor:
        raise NotImplementedError

    def _wanted(self, t: torch.Tensor) -> bool:
        if not t.is_floating_point() or _storage_key(t) in self._excluded:
            return False
        if t.numel() * t.element_size() < self._min_bytes:
            return False
        return self._select is None or self._select(self._modules.current, t)

    def _pack(self, t: torch.Tensor) -> object:
        if not self._wanted(t):
            self.stats.kept_count += 1
            self.stats.kept_bytes += t.numel() * t.element_size()
            return ("kept", t)
        key = _view_key(t)
        if key not in self._cache:
            payload, stored = self._encode(t)
            nbytes = t.numel() * t.element_size()
            self.stats.packed_count += 1
            self.stats.original_bytes += nbytes
            self.stats.stored_bytes += stored
            row = self.stats.by_module.setdefault(self._modules.current, {"original_bytes": 0, "stored_bytes": 0})
            row["original_bytes"] += nbytes
            row["stored_bytes"] += stored
            self._cache[key] = ("packed", payload)
            # forget the entry when this tensor dies: its address may then be reused by another tensor
            weakref.finalize(t, self._cache.pop, key, None)
        return self._cache[key]

    def _unpack(self, packed: tuple) -> torch.Tensor:
        kind, payload = packed
        if kind == "kept":
            return payload
        self.stats.unpacked_count += 1
        return self._decode(payload)

    def __enter__(self):
        self._modules.__enter__()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        self._modules.__exit__(*exc)
        self._cache.clear()  # the graph holds its own references to what it packed


# %% Offload to memory-mapped files

@dataclass(frozen=True)
class FileHandle:
    """A saved tensor that lives in a file: all that stays resident between forward and backward."""

    path: str
    shape: tuple
    dtype: torch.dtype
    device: str


class MmapOffload(_PackingHooks):
    """Offload saved activations to files in ``directory`` through memory mappings.

    Pack: a shared mapping of a new file of the tensor's size (``torch.from_file(shared=True)``), one
    copy into it, and the mapping dropped (the kernel writes the pages back). Unpack: a private
    mapping of the file, copied to the tensor's device (the pages are read when touched). The files
    are removed when the context exits, so run backward inside it::

        with MmapOffload(exclude=[model]) as off:
            loss = model(x)          # saved activations go to files
            loss.backward()          # and come back from them
    """

    def __init__(self, directory: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._own_dir = directory is None
        self.directory = directory
        self.paths: list[str] = []

    def __enter__(self) -> "MmapOffload":
        if self._own_dir:
            self.directory = tempfile.mkdtemp(prefix="hb-offload-")
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.cleanup()

    def cleanup(self) -> None:
        for p in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)
        self.paths.clear()
        if self._own_dir and self.directory and os.path.isdir(self.directory):
            os.rmdir(self.directory)

    def _encode(self, t: torch.Tensor) -> tuple[FileHandle, int]:
        path = os.path.join(self.directory, f"{len(self.paths):06d}.bin")
        n = t.numel()
        mapped = torch.from_file(path, shared=True, size=n, dtype=t.dtype)
        mapped.copy_(t.detach().reshape(-1))
        del mapped  # unmapped: the data is in the file (and the page cache), not in the process's heap
        self.paths.append(path)
        self.stats.files_written += 1
        return FileHandle(path, tuple(t.shape), t.dtype, str(t.device)), n * t.element_size()

    def _decode(self, h: FileHandle) -> torch.Tensor:
        n = 1
        for d in h.shape:
            n *= d
        data = torch.from_file(h.path, shared=False, size=n, dtype=h.dtype).view(h.shape)
        return data.to(h.device) if h.device != "cpu" else data.clone()

    def disk_bytes(self) -> int:
        """Bytes of the offload files now on disk."""
        return sum(os.path.getsize(p) for p in self.paths if os.path.exists(p))


@contextlib.contextmanager
def save_on_cpu(pin_memory: bool = True) -> Iterator[None]:
    """``torch.autograd.graph.save_on_cpu``: saved tensors copied to (pinned) host memory, back in backward."""
    with torch.autograd.graph.save_on_cpu(pin_memory=pin_memory):
        yield


# %% Compression

def encode(t: torch.Tensor, scheme: str) -> tuple[tuple, int]:
    """``t`` in ``scheme``: (payload, stored bytes). Scales are fp32; per-channel means the last dimension."""
    x = t.detach()
    if scheme == "bf16":
        q = x.to(torch.bfloat16)
        return ("bf16", q, None, t.dtype), q.numel() * 2
    if scheme == "fp8_e4m3":
        if not fp8_available():
            raise ValueError(f"this torch ({torch.__version__}) has no float8_e4m3fn")
        scale = (x.abs().amax().float() / FP8_E4M3_MAX).clamp_min(1e-12)
        q = (x.float() / scale).to(torch.float8_e4m3fn)
        return ("fp8_e4m3", q, scale, t.dtype), q.numel() + 4
    if scheme == "int8_tensor":
        scale = (x.abs().amax().float() / INT8_MAX).clamp_min(1e-12)
        q = torch.round(x.float() / scale).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
        return ("int8", q, scale, t.dtype), q.numel() + 4
    if scheme == "int8_channel":
        if x.dim() < 2:
            return encode(t, "int8_tensor")
        dims = tuple(range(x.dim() - 1))
        scale = (x.abs().amax(dim=dims, keepdim=True).float() / INT8_MAX).clamp_min(1e-12)
        q = torch.round(x.float() / scale).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
        return ("int8", q, scale, t.dtype), q.numel() + 4 * scale.numel()
    raise ValueError(f"unknown compression scheme {scheme!r} (one of {', '.join(SCHEMES)})")


def decode(payload: tuple) -> torch.Tensor:
    kind, q, scale, dtype = payload
    if kind == "bf16":
        return q.to(dtype)
    return (q.float() * scale).to(dtype)


class CompressSaved(_PackingHooks):
    """Keep saved floating-point activations in ``scheme`` (see ``SCHEMES``), decoded in backward.

    ``select(module_name, tensor)`` limits compression to some activations (e.g. one module kind).
    """

    def __init__(self, scheme: str, **kwargs) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown compression scheme {scheme!r} (one of {', '.join(SCHEMES)})")
        super().__init__(**kwargs)
        self.scheme = scheme

    def _encode(self, t: torch.Tensor) -> tuple[tuple, int]:
        return encode(t, self.scheme)

    def _decode(self, payload: tuple) -> torch.Tensor:
        return decode(payload)


def pack_call_bytes(fn: Callable[[], object], device: str | None = None) -> int:
    """Bytes handed to pack hooks while ``fn()`` runs, one count per pack call (as ``save_on_cpu`` copies them),
    only tensors on ``device``'s type when given. The output of ``fn`` is dropped."""
    total = 0
    kind = torch.device(device).type if device is not None else None

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if kind is None or t.device.type == kind:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return total
