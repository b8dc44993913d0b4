"""What a measurement depends on: the source that ``run`` reaches (generator/fingerprint.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from generator import fingerprint

LIB = '''
"""A shared helper module."""
import math

SCALE = 2


def used(x):
    return helper(x) * SCALE


def helper(x):
    return math.sqrt(x)


def unused(x):
    return x
'''

EXPERIMENT = '''
"""An experiment."""
from dataclasses import dataclass

from experiments.lib.shared import used
from experiments.lib import other

LIMIT = 3
LABELS = {"a": "the label"}


@dataclass(frozen=True)
class Config:
    size: int = LIMIT


PROFILES = {"test": Config(1), "quick": Config()}


def measure(cfg):
    return used(cfg.size)


def run(cfg, device):
    return {"value": measure(cfg)}


def summarize(data):
    return {"label": LABELS["a"], "other": other.describe(data)}


def plot(data, summary):
    import matplotlib.pyplot as plt
    return plt.figure()


if __name__ == "__main__":
    print(run(PROFILES["quick"], "cpu"))
'''


@pytest.fixture
def root(tmp_path: Path) -> Path:
    lib = tmp_path / "experiments" / "lib"
    lib.mkdir(parents=True)
    (tmp_path / "experiments" / "__init__.py").write_text("")
    (lib / "__init__.py").write_text("")
    (lib / "shared.py").write_text(LIB)
    (lib / "other.py").write_text("def describe(data):\n    return 'x'\n")
    (tmp_path / "experiments" / "exp.py").write_text(EXPERIMENT)
    return tmp_path


def digest(root: Path) -> str:
    return fingerprint.measurement_digest("exp", root)


def change(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_reach_follows_names_into_the_lib(root: Path) -> None:
    found = fingerprint.reach("experiments.exp", fingerprint.MEASURING_ROOTS, root)
    names = {getattr(n, "name", None) for nodes in found.statements.values() for n in nodes}
    assert {"run", "measure", "Config", "used", "helper"} <= names
    assert not {"summarize", "plot", "unused"} & names
    assert "experiments.lib.other" not in found.modules, "only summarize() imports it"
    assert found.external >= {"dataclasses", "math"}


@pytest.mark.parametrize("path, old, new", [
    ("experiments/exp.py", "return {\"label\": LABELS[\"a\"]", "return {\"label\": LABELS[\"a\"].upper()"),
    ("experiments/exp.py", '"the label"', '"a new label"'),
    ("experiments/exp.py", "return plt.figure()", "return plt.figure(figsize=(3, 2))"),
    ("experiments/exp.py", "def run(cfg, device):", "def run(cfg, device):  # a comment"),
    ("experiments/exp.py", '"""An experiment."""', '"""An experiment, described better."""'),
    ("experiments/exp.py", 'print(run(PROFILES["quick"], "cpu"))', 'print(run(PROFILES["test"], "cpu"))'),
    ("experiments/exp.py", 'PROFILES = {"test": Config(1), "quick": Config()}',
     'PROFILES = {"test": Config(1), "quick": Config(), "gpu": Config(64)}'),
    ("experiments/lib/shared.py", "return x\n", "return -x\n"),
    ("experiments/lib/other.py", "return 'x'", "return 'y'"),
])
def test_what_does_not_measure_does_not_change_the_key(root: Path, path: str, old: str, new: str) -> None:
    before = digest(root)
    change(root / path, old, new)
    assert digest(root) == before


@pytest.mark.parametrize("path, old, new", [
    ("experiments/exp.py", "return used(cfg.size)", "return used(cfg.size + 1)"),
    ("experiments/exp.py", "LIMIT = 3", "LIMIT = 4"),
    ("experiments/lib/shared.py", "SCALE = 2", "SCALE = 3"),
    ("experiments/lib/shared.py", "return math.sqrt(x)", "return math.sqrt(x + 1)"),
])
def test_measuring_code_changes_the_key(root: Path, path: str, old: str, new: str) -> None:
    before = digest(root)
    change(root / path, old, new)
    assert digest(root) != before


def test_data_files_change_the_key(root: Path) -> None:
    before = digest(root)
    data = root / "experiments" / "data"
    data.mkdir()
    (data / "set.csv").write_text("1,2\n")
    assert digest(root) != before


def test_the_real_experiments_measure_without_their_summaries() -> None:
    repo = Path(__file__).resolve().parent.parent
    found = fingerprint.reach("experiments.optimizer_state", fingerprint.MEASURING_ROOTS, repo)
    names = {getattr(n, "name", None) for nodes in found.statements.values() for n in nodes}
    assert "run" in names and "summarize" not in names and "plot" not in names
