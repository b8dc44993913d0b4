"""The contract every experiment keeps, checked once for all of them.

Each experiment's ``test`` profile runs in process (a second or two on the 2-core machine), its
data passes the result validation, survives a JSON round trip, carries units in the names of
its measured quantities; ``summarize`` derives from it without torch; ``plot`` draws from both.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
from pathlib import Path

import pytest

import experiments
from generator import envelope, fingerprint
from generator.site.summaries import summarize as site_summarize
from conftest import make_envelope, test_profile_data
from contract import non_finite, unitless_measures

REPO = Path(__file__).resolve().parent.parent
NAMES = sorted(m.name for m in pkgutil.iter_modules(experiments.__path__) if not m.ispkg and not m.name.startswith("_"))


def test_every_experiment_is_checked() -> None:
    assert len(NAMES) >= 14, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_shape_of_the_module(name: str) -> None:
    module = importlib.import_module(f"experiments.{name}")
    doc = (module.__doc__ or "").lower()
    assert doc.strip(), f"experiments/{name}.py has no module docstring"
    for word in ("question", "method", "run"):
        assert word in doc, f"experiments/{name}.py's docstring does not say its {word}"
    assert dataclasses.is_dataclass(module.Config) and module.Config.__dataclass_params__.frozen
    assert {"test", "quick", "full"} <= set(module.PROFILES), sorted(module.PROFILES)
    for profile, cfg in module.PROFILES.items():
        assert isinstance(cfg, module.Config), f"PROFILES[{profile!r}] is not a Config"
    for fn in ("run", "summarize", "plot"):
        assert callable(getattr(module, fn, None)), f"experiments/{name}.py has no {fn}()"


@pytest.mark.parametrize("name", NAMES)
def test_summarize_reaches_no_torch(name: str) -> None:
    found = fingerprint.reach(f"experiments.{name}", ("summarize",), REPO)
    assert "torch" not in found.external, f"experiments/{name}.py: summarize() reaches an import of torch"
    measuring = fingerprint.reach(f"experiments.{name}", fingerprint.MEASURING_ROOTS, REPO)
    defs = {n.name for nodes in measuring.statements.values() for n in nodes if hasattr(n, "name")}
    assert not {"summarize", "plot"} & defs, f"experiments/{name}.py: run() reaches summarize() or plot()"


@pytest.mark.parametrize("name", NAMES)
def test_test_profile_runs_summarizes_and_plots(name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    module = importlib.import_module(f"experiments.{name}")
    data = test_profile_data(name)
    assert isinstance(data, dict) and data
    assert non_finite(data) == []
    assert unitless_measures(data) == [], "measured quantities need a unit in their key name"
    stored = json.loads(json.dumps(data, allow_nan=False))
    envelope.validate(make_envelope(name, stored), f"{name} (test profile)")

    summary = site_summarize(name, stored, f"{name} (test profile)")
    assert isinstance(summary, dict)
    assert non_finite(summary, "summary") == []
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary

    made = module.plot(stored, summary)
    figs = made if isinstance(made, dict) else {"main": made}
    try:
        assert figs and all(isinstance(f, Figure) for f in figs.values())
        assert all(f.axes for f in figs.values()), "a figure with no axes draws nothing"
    finally:
        for f in figs.values():
            plt.close(f)


def test_unit_check_flags_a_bare_measure() -> None:
    assert unitless_measures({"peak": 3, "step_time": 1.5, "peak_bytes": 3, "ok": 2}) == ["data.peak",
                                                                                     "data.step_time"]
    assert non_finite({"a": [1.0, float("nan")]}) == ["data.a[1]"]
