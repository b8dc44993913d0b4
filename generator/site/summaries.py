"""Derived figures at build time: each experiment's ``summarize(data)``, for every host.

``run`` stored what was measured; ``summarize`` (pure, torch-free) derives the
ratios, shares, verdicts and labels the pages show. It runs here, at build
time, so a changed ratio never forces a re-measure.

The data is handed over as ``Fields``: plain dicts that know their path, so a
field that a stored result lacks (measured by older code) fails the build with
one line naming the host, the experiment and the field.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import traceback
from pathlib import Path
from typing import Any

from generator.errors import SummaryError


def experiments_package() -> str:
    """The package whose modules are the experiments: ``experiments``, or ``HANDBOOK_EXPERIMENTS`` (tests' toys)."""
    return os.environ.get("HANDBOOK_EXPERIMENTS") or "experiments"


def experiments_dir() -> Path:
    """The folder of the experiments package."""
    package = experiments_package()
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise SummaryError(f"the experiments package {package!r} cannot be found (run from the repository)")
    return Path(spec.origin).parent


def load_experiment(name: str):
    """The module of experiment ``name``."""
    return importlib.import_module(f"{experiments_package()}.{name}")


class MissingField(KeyError):
    """A field that ``summarize`` needs and the stored data lacks (``path`` is dotted)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class Fields(dict):
    """A dict that raises ``MissingField`` with its full path for a key it lacks."""

    __slots__ = ("_path",)

    def __init__(self, data: dict, path: str = "data") -> None:
        super().__init__((k, wrap(v, f"{path}.{k}")) for k, v in data.items())
        self._path = path

    def __getitem__(self, key: Any) -> Any:
        try:
            return super().__getitem__(key)
        except KeyError:
            raise MissingField(f"{self._path}.{key}") from None


class FieldList(list):
    __slots__ = ("_path",)

    def __init__(self, items: list, path: str) -> None:
        super().__init__(wrap(v, f"{path}[{i}]") for i, v in enumerate(items))
        self._path = path


def wrap(value: Any, path: str) -> Any:
    if isinstance(value, dict):
        return Fields(value, path)
    if isinstance(value, list):
        return FieldList(value, path)
    return value


def plain(value: Any) -> Any:
    """Back to plain dicts and lists (what the pages and figures see)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def summarize(experiment: str, data: dict, where: str) -> dict:
    """``experiments.<experiment>.summarize(data)``; every failure is one line naming ``where``."""
    try:
        module = load_experiment(experiment)
    except Exception as exc:  # noqa: BLE001 - an experiment that cannot be imported is a one-line error
        raise SummaryError(f"{where}: experiments/{experiment}.py cannot be imported "
                           f"({type(exc).__name__}: {exc})") from None
    fn = getattr(module, "summarize", None)
    if not callable(fn):
        raise SummaryError(f"{where}: experiments/{experiment}.py has no summarize()")
    try:
        out = fn(Fields(data))
    except MissingField as exc:
        raise SummaryError(f"{where}: field '{exc.path}' is missing, and experiments/{experiment}.py's "
                           f"summarize() needs it (rerun: handbook run --only {experiment})") from None
    except Exception as exc:  # noqa: BLE001 - a bug in summarize, reported where it happened
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise SummaryError(f"{where}: summarize() of experiments/{experiment}.py failed at line {frame.lineno}: "
                           f"{type(exc).__name__}: {exc}") from None
    if not isinstance(out, dict):
        raise SummaryError(f"{where}: summarize() of experiments/{experiment}.py returned "
                           f"{type(out).__name__}, not a dict")
    return plain(out)
