"""The result envelope: one JSON file per experiment and host.

Fields: ``schema_version, experiment, profile, config, host, env, started_at,
duration_s, status, error, data`` (plus ``cache_key``, the hash of the run's
inputs). Files are written atomically, so a killed run never leaves half a
file and never replaces a good result with a broken one.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from generator.errors import ResultError

SCHEMA_VERSION = 1

# field -> allowed types (None allowed where listed)
FIELDS: dict[str, tuple] = {
    "schema_version": (int,),
    "experiment": (str,),
    "profile": (str,),
    "config": (dict,),
    "host": (dict,),
    "env": (dict,),
    "started_at": (str,),
    "duration_s": (int, float),
    "status": (str,),
    "error": (str, type(None)),
    "data": (dict, type(None)),
    "cache_key": (str,),
}
HOST_FIELDS: dict[str, tuple] = {
    "slug": (str,), "device": (str,), "device_memory_bytes": (int,), "cpu": (str,), "cores": (int,),
}
ENV_FIELDS: dict[str, tuple] = {
    "python": (str,), "torch": (str,), "cuda": (str, type(None)), "git_sha": (str, type(None)),
}
STATUSES = ("ok", "failed")


def _check_fields(obj: dict, spec: dict[str, tuple], where: str, prefix: str) -> None:
    for name, types in spec.items():
        if name not in obj:
            raise ResultError(f"{where}: missing field '{prefix}{name}'")
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ResultError(f"{where}: field '{prefix}{name}' should be {wanted}, not {type(value).__name__}")


def _check_finite(value: object, where: str, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ResultError(f"{where}: field '{path}' is {value}, not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, where, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, where, f"{path}[{i}]")


def validate(obj: object, where: str) -> dict:
    """Return ``obj`` if it is a well-formed envelope, else raise ``ResultError``."""
    if not isinstance(obj, dict):
        raise ResultError(f"{where}: a result must be a JSON object, not {type(obj).__name__}")
    _check_fields(obj, FIELDS, where, "")
    _check_fields(obj["host"], HOST_FIELDS, where, "host.")
    _check_fields(obj["env"], ENV_FIELDS, where, "env.")
    if obj["status"] not in STATUSES:
        raise ResultError(f"{where}: field 'status' should be one of {', '.join(STATUSES)}, not {obj['status']!r}")
    if obj["status"] == "ok" and obj["data"] is None:
        raise ResultError(f"{where}: field 'data' is null in a result whose status is ok")
    if obj["status"] == "failed" and not obj["error"]:
        raise ResultError(f"{where}: field 'error' is empty in a result whose status is failed")
    _check_finite(obj["data"], where, "data")
    return obj


def load(path: Path) -> dict:
    """Read and validate one result file; every problem names the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ResultError(f"{path}: not a result file (not UTF-8 text at byte {exc.start})") from None
    try:
        obj = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"{c} is not JSON")))
    except ValueError as exc:
        raise ResultError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ResultError(f"{path}: not a result file (JSON nested too deeply to read)") from None
    return validate(obj, str(path))


def write_atomic(path: Path, obj: dict) -> None:
    """Validate, then write ``obj`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    validate(obj, str(path))
    text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def result_path(results_dir: Path, slug: str, experiment: str, failed: bool = False) -> Path:
    """``results/<host>/<name>.json``; a failed run goes beside it as ``<name>.failed.json``."""
    return Path(results_dir) / slug / (f"{experiment}.failed.json" if failed else f"{experiment}.json")
