"""What this machine is: the facts stamped on every result, and its slug.

The slug names the hardware (accelerator or CPU model, core count, memory),
not the host name, so a fresh machine of the same kind finds its cached
results and a different machine writes beside them.
"""
from __future__ import annotations

import os
import platform
import re

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def slugify(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", "", text.lower())
    text = re.sub(r"\b(cpu|processor|corporation|core|with|@.*)\b", " ", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:48] or "unknown"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def describe(device: str) -> dict:
    """The ``host`` block of a result envelope for ``device``."""
    dev = torch.device(device)
    n_cores = cores()
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        name, mem = props.name, int(props.total_memory)
        slug = f"cuda-{slugify(name)}-{round(mem / 2**30)}gb"
    else:
        name, mem = cpu_model(), ram_bytes()
        slug = f"cpu-{slugify(name)}-{n_cores}c-{round(mem / 2**30)}gb"
    return {"slug": slug, "device": name, "device_memory_bytes": mem, "cpu": cpu_model(), "cores": n_cores}


def software() -> dict:
    """The software part of the ``env`` block (the runner adds the git commit)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
