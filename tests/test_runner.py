"""The runner: caching, forcing, and every way an experiment can fail without losing a good result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import fake_project
from generator import envelope, runner

REPO = Path(__file__).resolve().parent.parent

EXPERIMENT = '''
"""A fake experiment for the runner's tests: torch-free, so each run costs a bare interpreter."""
import os
import signal
import time
from dataclasses import dataclass

from experiments.lib.formulas import numel


@dataclass(frozen=True)
class Config:
    value: int = 1


PROFILES = {{"test": Config(0), "quick": Config(1), "full": Config(2)}}
TIMEOUT_S = 60


def measured_value(cfg):
    return numel((cfg.value,))


def run(cfg, device):
    counter = os.environ.get("HB_TEST_COUNTER")
    if counter:
        with open(counter, "a") as f:
            f.write("{name}\\n")
    mode = os.environ.get("HB_TEST_MODE_{upper}", "ok")
    if mode == "raise":
        raise RuntimeError("deliberate failure in {name}")
    if mode == "sleep":
        time.sleep(30)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "nan":
        return {{"value": float("nan")}}
    return {{"value": measured_value(cfg), "name": "{name}"}}


def summarize(data):
    return {{"double": 2 * data["value"]}}


def plot(data, summary):
    raise NotImplementedError


if __name__ == "__main__":
    import sys
    from experiments.lib.cli import main
    raise SystemExit(main(sys.modules[__name__]))
'''


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project folder whose experiments package holds fake experiments beside the real lib."""
    return fake_project(tmp_path, {name: EXPERIMENT.format(name=name, upper=name.upper()) for name in ("alpha", "beta")})


_PLANS: dict[tuple, runner.Plan] = {}


@pytest.fixture(autouse=True)
def described_once(monkeypatch):
    """The host and configs are asked of torch once per session, not on every run (subprocess tests still do)."""
    real = runner.describe

    def describe(device, python, root):
        key = (device, python)
        if key not in _PLANS:
            _PLANS[key] = real(device, python, root)
        plan = _PLANS[key]
        return runner.Plan(plan.device, dict(plan.host), dict(plan.env), json.loads(json.dumps(plan.experiments)))

    monkeypatch.setattr(runner, "describe", describe)


@pytest.fixture
def counter(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "counter.txt"
    monkeypatch.setenv("HB_TEST_COUNTER", str(path))
    return path


def runs(counter: Path) -> list[str]:
    return counter.read_text().split() if counter.exists() else []


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_cache_hit_miss_and_force(root: Path, tmp_path: Path, counter: Path) -> None:
    results = tmp_path / "results"
    first = runner.run(results_dir=results, root=root, plain=True)
    assert [o.state for o in first] == ["ok", "ok"]
    assert sorted(runs(counter)) == ["alpha", "beta"]
    data = envelope.load(first[0].path)
    assert data["data"] == {"value": 1, "name": "alpha"} and data["status"] == "ok"
    assert data["profile"] == "quick" and data["config"] == {"value": 1}

    again = runner.run(results_dir=results, root=root, plain=True)
    assert [o.state for o in again] == ["cached", "cached"]
    assert len(runs(counter)) == 2

    forced = runner.run(results_dir=results, root=root, plain=True, force=True, only=["beta"])
    assert [(o.name, o.state) for o in forced] == [("beta", "ok")]
    assert runs(counter)[-1] == "beta"

    full = runner.run(results_dir=results, root=root, plain=True, profile="full", only=["alpha"])
    assert full[0].state == "ok" and envelope.load(full[0].path)["data"]["value"] == 2


def states(results: Path, root: Path) -> list[str]:
    return [o.state for o in runner.run(results_dir=results, root=root, plain=True)]


def test_only_what_run_reaches_is_in_the_cache_key(root: Path, tmp_path: Path, counter: Path) -> None:
    """Deriving, drawing, comments and docstrings never rerun; measuring code and its lib do."""
    results = tmp_path / "results"
    alpha = root / "experiments" / "alpha.py"
    formulas = root / "experiments" / "lib" / "formulas.py"
    assert states(results, root) == ["ok", "ok"]

    edit(alpha, 'return {"double": 2 * data["value"]}', 'return {"double": 2 * data["value"], "label": "x"}')
    edit(alpha, "raise NotImplementedError", "raise RuntimeError('a new title')")
    edit(alpha, "def run(cfg, device):", "def run(cfg, device):  # a comment\n    \"\"\"A docstring.\"\"\"")
    assert states(results, root) == ["cached", "cached"], "summarize, plot, comments never rerun"

    edit(formulas, "def adafactor_state_elems(", "def adafactor_state_elems_renamed(")
    edit(formulas, '"""The analytic side', '"""The analytic side, reworded')
    assert states(results, root) == ["cached", "cached"], "lib code that run() does not reach never reruns"

    edit(alpha, "return numel((cfg.value,))", "return numel((cfg.value, 1))")
    assert states(results, root) == ["ok", "cached"], "a helper that run() calls is measuring code"

    edit(formulas, "def numel(shape: Shape) -> int:", "def numel(shape: Shape) -> int:\n    shape = tuple(shape)")
    assert states(results, root) == ["ok", "ok"], "a lib function that run() reaches reruns everything using it"
    assert len(runs(counter)) == 5


def test_unknown_experiment_is_a_clear_error(root: Path, tmp_path: Path) -> None:
    with pytest.raises(runner.RunError, match="unknown experiment.*gamma.*known: alpha, beta"):
        runner.run(results_dir=tmp_path / "r", root=root, only=["gamma"], plain=True)


@pytest.mark.parametrize("mode, message", [
    ("raise", "deliberate failure in alpha"),
    ("sleep", "timed out after 1 s"),
    ("kill", "killed by SIGKILL"),
    ("nan", "not a finite number: data.value = nan"),
])
def test_failure_is_recorded_and_the_good_result_kept(root: Path, tmp_path: Path, monkeypatch, counter: Path,
                                                       mode: str, message: str) -> None:
    results = tmp_path / "results"
    good = runner.run(results_dir=results, root=root, plain=True)[0].path
    before = good.read_bytes()

    monkeypatch.setenv("HB_TEST_MODE_ALPHA", mode)
    outcomes = runner.run(results_dir=results, root=root, plain=True, force=True, timeout_s=1)
    by_name = {o.name: o for o in outcomes}
    assert by_name["alpha"].state == "failed" and by_name["beta"].state == "ok", "the others still run"
    assert message in by_name["alpha"].error
    assert good.read_bytes() == before, "the previous good result must stay untouched"
    failed = envelope.load(envelope.result_path(results, good.parent.name, "alpha", failed=True))
    assert failed["status"] == "failed" and message in failed["error"] and failed["data"] is None
    leftovers = [p.name for p in good.parent.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == [], f"no partial files may be left: {leftovers}"

    monkeypatch.setenv("HB_TEST_MODE_ALPHA", "ok")
    healed = runner.run(results_dir=results, root=root, plain=True)
    assert healed[0].state == "ok"
    assert not envelope.result_path(results, good.parent.name, "alpha", failed=True).exists()


def test_cli_exit_status_and_message(root: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), HB_TEST_MODE_BETA="raise")
    proc = subprocess.run([sys.executable, "-m", "generator", "run", "--root", str(root), "--results",
                           str(tmp_path / "r"), "--plain"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert "alpha: ok" in proc.stdout and "beta: failed" in proc.stdout
    assert "deliberate failure in beta" in proc.stderr


def test_run_path_needs_no_site_packages(root: Path, tmp_path: Path) -> None:
    """`python -m generator run` on a host with only torch and numpy: block the site side's packages."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent('''
        import sys
        BLOCKED = {"mkdocs", "jinja2", "matplotlib", "rich", "markupsafe", "material", "jupytext", "quickjs",
                   "pytest"}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is not installed on this host (blocked by the test)")
                return None

        sys.meta_path.insert(0, Blocker())
    '''))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), str(REPO)]))
    check = subprocess.run([sys.executable, "-c", "import rich"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "blocked by the test" in check.stderr, "the blocker must work"
    proc = subprocess.run([sys.executable, "-m", "generator", "run", "--root", str(root), "--results",
                           str(tmp_path / "r")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "[1/2] alpha: ok" in proc.stdout  # plain progress lines without rich
    assert len(list((tmp_path / "r").glob("*/*.json"))) == 2


def test_corrupted_and_incomplete_results_name_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "experiment": ')
    with pytest.raises(envelope.ResultError) as err:
        envelope.load(bad)
    assert str(bad) in str(err.value) and "not valid JSON" in str(err.value) and "\n" not in str(err.value)

    from conftest import make_envelope

    env = make_envelope("alpha", {"value": 1})
    del env["host"]["cores"]
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps(env))
    with pytest.raises(envelope.ResultError, match=r"missing\.json: missing field 'host\.cores'"):
        envelope.load(missing)

    env = make_envelope("alpha", {"value": 1})
    env["duration_s"] = "slow"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(env))
    with pytest.raises(envelope.ResultError, match=r"wrong\.json: field 'duration_s' should be int or float"):
        envelope.load(wrong)

    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(make_envelope("alpha", {"x": 1.0})).replace("1.0", "NaN"))
    with pytest.raises(envelope.ResultError, match="nan.json"):
        envelope.load(nan)


def test_corrupted_cached_result_is_rerun_and_replaced(root: Path, tmp_path: Path, counter: Path) -> None:
    results = tmp_path / "results"
    path = runner.run(results_dir=results, root=root, plain=True, only=["alpha"])[0].path
    path.write_text("{ broken")
    again = runner.run(results_dir=results, root=root, plain=True, only=["alpha"])
    assert again[0].state == "ok" and envelope.load(path)["data"]["value"] == 1


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    from conftest import make_envelope

    target = tmp_path / "h" / "alpha.json"
    envelope.write_atomic(target, make_envelope("alpha", {"value": 1}))
    before = target.read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt  # the run is killed between writing the temp file and the rename

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        envelope.write_atomic(target, make_envelope("alpha", {"value": 2}))
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["alpha.json"]


def test_default_profile() -> None:
    assert runner.default_profile("cuda") == "full" and runner.default_profile("cpu") == "quick"
