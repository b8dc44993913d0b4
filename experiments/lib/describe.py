"""What the runner must know before it runs anything, printed as JSON.

The runner itself never imports torch (so it starts fast and never creates a
CUDA context of its own); it asks this module, in a subprocess, for the host,
the software versions and each experiment's configuration per profile.
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import traceback

import experiments
from experiments.lib.cli import config_dict
from experiments.lib.host import default_device, describe, software


def experiment_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(experiments.__path__)
                  if not m.ispkg and not m.name.startswith("_"))


BAD_DEVICE = 3  # the exit status the runner reads as "refused device", with one line on stderr


def measurable(device: str) -> str | None:
    """Why torch cannot measure a training step on ``device`` here, or None when it can."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a torch device (try cpu or cuda)"
    if dev.type == "cpu":
        return None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {device!r}: this machine has no CUDA device torch can use"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        return None
    if dev.type == "mps" and torch.backends.mps.is_available():
        return None
    return (f"--device {device!r}: the handbook measures real memory and time, on cpu or cuda "
            f"(a {dev.type} device cannot be measured here)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.lib.describe")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    device = args.device or default_device()
    refused = measurable(device)
    if refused:
        print(refused, file=sys.stderr)
        return BAD_DEVICE
    found: dict[str, dict] = {}
    for name in experiment_names():
        try:
            module = importlib.import_module(f"experiments.{name}")
            profiles = {p: config_dict(c) for p, c in module.PROFILES.items()}
            for attr in ("run", "plot"):
                if not callable(getattr(module, attr, None)):
                    raise TypeError(f"experiments/{name}.py has no function {attr}()")
            found[name] = {"profiles": profiles, "timeout_s": int(getattr(module, "TIMEOUT_S", 600)), "error": None}
        except Exception as exc:  # reported per experiment; the others still run
            found[name] = {"profiles": {}, "timeout_s": 0,
                           "error": "".join(traceback.format_exception_only(type(exc), exc)).strip()}
    json.dump({"device": device, "host": describe(device), "env": software(), "experiments": found}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
