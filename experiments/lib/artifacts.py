"""Files an experiment keeps beside its result ("artifacts"), such as an allocator snapshot.

``run`` returns plain JSON; a few measurements are files a reader opens with another tool (the
CUDA allocator's snapshot pickle opens in PyTorch's memory visualizer). The runner hands the
child a fresh folder (``python -m experiments.<name> --artifacts DIR``, which sets
``HANDBOOK_ARTIFACTS``); ``write`` puts a file there and returns its name, to be stored in the
data, or returns None when the run keeps no files (``run`` called directly, or by hand without
``--artifacts``). The runner moves the folder to ``results/<host>/<name>.files/`` when the
result is written, and the site copies the files a page links into the built site.

Standard library only.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from experiments.lib.cli import ARTIFACTS_ENV as ENV
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def folder() -> Path | None:
    """The folder this run writes its files into, or None when it keeps none."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def write(name: str, data: bytes) -> str | None:
    """Write ``data`` as the file ``name`` of this run; return ``name``, or None when the run keeps no files."""
    if not NAME.fullmatch(name):
        raise ValueError(f"artifact name {name!r}: letters, digits, '.', '_' and '-' only, starting with a "
                         f"letter or digit, at most 100 characters")
    where = folder()
    if where is None:
        return None
    if not where.is_dir():
        raise FileNotFoundError(f"{ENV}={where}: the artifacts folder does not exist")
    (where / name).write_bytes(data)
    return name
