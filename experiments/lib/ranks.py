"""Start a real ``torch.distributed`` world on this machine and collect what each rank wrote.

Each rank is a process of its own (``torch.multiprocessing``) that writes its
results to ``<folder>/rank<r>.json``. CPU worlds (gloo) are started with
``fork``: the children inherit the parent's imported modules, so a rank does
not pay again for importing torch, DTensor and the pipelining package (about
4 s per interpreter on a 2-core host, most of it torch._dynamo, which
``torch.distributed.pipelining`` imports). CUDA worlds use ``spawn``, since a
CUDA context does not survive a fork.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import tempfile
from typing import Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_method(device: str) -> str:
    return "fork" if not device.startswith("cuda") and "fork" in multiprocessing.get_all_start_methods() else "spawn"


def run_world(worker: Callable, args: tuple, world_size: int, device: str, prefix: str = "world-") -> list[dict]:
    """Run ``worker(rank, world_size, port, *args, out_dir)`` on ``world_size`` ranks; return each rank's JSON.

    ``worker`` must be a module-level function (spawn pickles it by name) and write
    ``out_dir/rank<rank>.json``.
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix=prefix) as out_dir:
        mp.start_processes(worker, args=(world_size, free_port(), *args, out_dir), nprocs=world_size, join=True,
                           start_method=start_method(device))
        ranks = []
        for r in range(world_size):
            path = os.path.join(out_dir, f"rank{r}.json")
            if not os.path.exists(path):
                raise RuntimeError(f"rank {r} of {world_size} wrote no results ({path})")
            with open(path, encoding="utf-8") as f:
                ranks.append(json.load(f))
    return ranks
