"""The command line every experiment shares: ``python -m experiments.<name>``.

It runs one profile of one experiment and prints (or writes) the plain data
that ``run`` returns. The runner calls exactly this in a subprocess, so what
a reader runs by hand is what the handbook ran.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from types import ModuleType

ARTIFACTS_ENV = "HANDBOOK_ARTIFACTS"  # the folder a run keeps its files in (--artifacts; experiments/lib/artifacts.py)



def _non_finite(value: object, path: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} = {value}"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if isinstance(value, dict) else f"{path}[{key}]")
        if found:
            return found
    return None


def to_json(data: object) -> str:
    """Serialise results, refusing NaN and infinity (they are not JSON) with the path to the value."""
    bad = _non_finite(data, "data")
    if bad:
        raise ValueError(f"run() returned a value that is not a finite number: {bad}")
    return json.dumps(data, allow_nan=False, indent=1, sort_keys=False)


def config_dict(cfg: object) -> dict:
    return dataclasses.asdict(cfg)


def main(module: ModuleType, argv: list[str] | None = None) -> int:
    doc = (module.__doc__ or "").strip().splitlines()
    # run as ``python -m experiments.x`` the module is ``__main__``; its spec keeps the real name
    name = (module.__spec__.name if module.__spec__ else module.__name__).rsplit(".", 1)[-1]
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{name}",
        description=doc[0] if doc else None,
    )
    parser.add_argument("--profile", choices=sorted(module.PROFILES), default=None,
                        help="configuration size (default: full with CUDA, else quick)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--out", default=None, help="write the JSON here instead of printing it")
    parser.add_argument("--out-fd", type=int, default=None, help=argparse.SUPPRESS)  # the runner's pipe
    parser.add_argument("--artifacts", default=None, metavar="DIR",
                        help="keep the files the experiment writes (e.g. a CUDA snapshot) in this existing folder")
    # parse_known_args: inside Jupyter, argv carries the kernel's own flags.
    args, _unknown = parser.parse_known_args(argv)
    if args.device is None:
        from experiments.lib.host import default_device  # imports torch; the runner always names the device

        device = default_device()
    else:
        device = args.device
    profile = args.profile or ("full" if device.startswith("cuda") else "quick")
    if args.artifacts is not None:  # experiments/lib/artifacts.py reads it
        os.environ[ARTIFACTS_ENV] = os.path.abspath(args.artifacts)
    data = module.run(module.PROFILES[profile], device)
    text = to_json(data)
    if args.out_fd is not None:  # the runner reads this pipe: no file on disk to leave behind
        with os.fdopen(args.out_fd, "w", encoding="utf-8") as f:
            f.write(text)
    elif args.out:
        tmp = f"{args.out}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.out)
    else:
        sys.stdout.write(text + "\n")
    return 0
