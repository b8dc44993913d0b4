"""The GPU plan: the budget (skip, not fail), the archive after every experiment, a killed plan, the one-line start.

The plan runs over fake experiments in a folder of their own, with a fake ``describe`` that reports
a CUDA host without importing torch, so every subprocess here is a bare interpreter.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from generator import gpu_plan
from generator.errors import RunError
from generator.gpu_plan import Step

REPO = Path(__file__).resolve().parent.parent
SLUG = "cuda-fake-gpu-1gb"

DESCRIBE = f'''
"""A torch-free describe for the GPU plan's tests: a canned CUDA host and the fake experiments' configs."""
import dataclasses
import importlib
import json
import os
import pkgutil
import sys

import experiments

HOST = {{"slug": "{SLUG}", "device": "Fake GPU", "device_memory_bytes": 2**30, "cpu": "Fake CPU", "cores": 2}}

if __name__ == "__main__":
    found = {{}}
    for m in sorted(pkgutil.iter_modules(experiments.__path__), key=lambda m: m.name):
        if not m.ispkg:
            mod = importlib.import_module(f"experiments.{{m.name}}")
            found[m.name] = {{"profiles": {{p: dataclasses.asdict(c) for p, c in mod.PROFILES.items()}},
                             "timeout_s": mod.TIMEOUT_S, "error": None}}
    device = os.environ.get("HB_PLAN_DEVICE", "cuda")
    json.dump({{"device": device, "host": HOST, "env": {{"python": "3.12.0", "torch": "2.11.0", "cuda": "13.0"}},
               "experiments": found}}, sys.stdout)
'''

EXPERIMENT = '''
"""A fake experiment for the GPU plan's tests."""
import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    value: int = 1


PROFILES = {{"test": Config(0), "quick": Config(1), "gpu": Config(3)}}
TIMEOUT_S = 60


def run(cfg, device):
    pids = os.environ.get("HB_PLAN_PIDS")
    if pids:
        with open(pids, "a") as f:
            f.write("{name} %d\\n" % os.getpid())
    if os.environ.get("HB_PLAN_{upper}") == "sleep":
        time.sleep(60)
    return {{"value": cfg.value, "device": device}}


def summarize(data):
    return {{}}


def plot(data, summary):
    raise NotImplementedError


if __name__ == "__main__":
    import sys
    from experiments.lib.cli import main
    raise SystemExit(main(sys.modules[__name__]))
'''

NAMES = ("alpha", "beta", "gamma", "delta")
STEPS = tuple(Step(n, 1, 20, "") for n in NAMES)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project whose experiments package holds fake experiments, the real cli and a fake describe."""
    exp = tmp_path / "proj" / "experiments"
    (exp / "lib").mkdir(parents=True)
    shutil.copy(REPO / "experiments" / "__init__.py", exp / "__init__.py")
    shutil.copy(REPO / "experiments" / "lib" / "cli.py", exp / "lib" / "cli.py")
    (exp / "lib" / "__init__.py").write_text("")
    (exp / "lib" / "describe.py").write_text(DESCRIBE)
    for name in NAMES:
        (exp / f"{name}.py").write_text(EXPERIMENT.format(name=name, upper=name.upper()))
    return tmp_path / "proj"


def plan(root: Path, tmp_path: Path, **options) -> gpu_plan.Plan:
    defaults = dict(out=tmp_path / "out", results_dir=tmp_path / "results", root=root, tests=False, steps=STEPS)
    return gpu_plan.Plan(**{**defaults, **options})


def states(log: str) -> list[tuple[str, str]]:
    return re.findall(r"^(\S+)\s+(ok|cached|failed|skipped|interrupted)\s", log, flags=re.M)


def members(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return sorted(m.name for m in tar.getmembers() if m.isfile())


def test_an_experiment_predicted_to_overrun_is_skipped_not_failed_and_the_next_runs(
        root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HB_PLAN_GAMMA", "sleep")
    steps = (Step("alpha", 1, 20, ""), Step("beta", 1000, 2000, "more than the whole budget"),
             Step("gamma", 1, 1, "sleeps past its 1 s budget"), Step("delta", 1, 20, ""))
    assert plan(root, tmp_path, budget_s=60, steps=steps).execute() == 1  # gamma failed
    log = (tmp_path / "out" / gpu_plan.LOG).read_text()
    assert states(log) == [("describe", "ok"), ("alpha", "ok"), ("beta", "skipped"), ("gamma", "failed"),
                           ("delta", "ok"), ("cuda-tests", "skipped")], log
    assert re.search(r"^beta\s+skipped\s+0\.0 s\s+budget 2000 s\s+predicted 1000 s\s+predicted 1000 s, \d+ s left",
                     log, flags=re.M), log
    assert "timed out after 1 s" in log
    host = tmp_path / "results" / SLUG
    assert sorted(p.name for p in host.iterdir()) == ["alpha.json", "delta.json", "gamma.failed.json"], \
        "a skipped experiment leaves no result and no .failed.json; a timed-out one is failed"
    slug, results, archived_log = gpu_plan.read_archive(tmp_path / "out" / gpu_plan.ARCHIVE)
    assert slug == SLUG and sorted(results) == ["alpha.json", "delta.json", "gamma.failed.json"]
    assert results["alpha.json"]["profile"] == "gpu" and results["alpha.json"]["data"] == {"value": 3, "device": "cuda"}
    assert archived_log == log


def test_the_archive_is_rewritten_after_every_experiment(root: Path, tmp_path: Path, monkeypatch) -> None:
    snapshots = []
    real = gpu_plan.archive_bytes

    def recording(results_dir, slug, files):
        data = real(results_dir, slug, files)
        path = tmp_path / "snapshot.tgz"
        path.write_bytes(data)
        snapshots.append([n.rsplit("/", 1)[-1] for n in members(path) if n.startswith("results/")])
        return data

    monkeypatch.setattr(gpu_plan, "archive_bytes", recording)
    assert plan(root, tmp_path).execute() == 0
    every = ["alpha.json", "beta.json", "delta.json", "gamma.json"]
    assert snapshots == [[], ["alpha.json"], ["alpha.json", "beta.json"], ["alpha.json", "beta.json", "gamma.json"],
                         every, every], \
        "once after describe, once after each experiment, once at the end"
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [gpu_plan.LOG, gpu_plan.ARCHIVE], "no temporary file is left"
    assert members(out / gpu_plan.ARCHIVE) == [gpu_plan.LOG] + [f"results/{SLUG}/{n}.json" for n in sorted(NAMES)]

    again = plan(root, tmp_path).execute()  # a second call finds the results current
    assert again == 0 and states((out / gpu_plan.LOG).read_text())[1:5] == [(n, "cached") for n in NAMES]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def test_a_plan_killed_mid_run_leaves_a_valid_archive_of_what_finished(root: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids.txt"
    env = dict(os.environ, PYTHONPATH=str(REPO), HB_PLAN_BETA="sleep", HB_PLAN_PIDS=str(pids))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "generator", "gpu-plan", "--out", str(out), "--root", str(root),
                             "--results", str(tmp_path / "results"), "--no-tests"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while "beta" not in (pids.read_text() if pids.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    beta = int(re.search(r"^beta (\d+)$", pids.read_text(), flags=re.M).group(1))
    proc.send_signal(signal.SIGKILL)  # the device's time limit: no handler runs
    proc.wait(timeout=10)

    slug, results, log = gpu_plan.read_archive(out / gpu_plan.ARCHIVE)
    assert slug == SLUG and sorted(results) == ["alpha.json"]
    assert states(log) == [("describe", "ok"), ("alpha", "ok")]
    assert (out / gpu_plan.LOG).read_text() == log
    deadline = time.monotonic() + 5
    while alive(beta) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(beta), "the running experiment dies with the plan"


def test_the_plan_starts_with_one_line_and_needs_no_site_packages(root: Path, tmp_path: Path) -> None:
    dry = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(REPO), "gpu-reference", "OUT=/somewhere"],
                         capture_output=True, text=True, timeout=30)
    lines = dry.stdout.strip().splitlines()
    assert dry.returncode == 0 and len(lines) == 1, dry.stdout + dry.stderr
    assert "python3 -m generator gpu-plan --out \"/somewhere\"" in lines[0] and ".venv" not in lines[0]

    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent('''
        import sys
        BLOCKED = {"mkdocs", "jinja2", "matplotlib", "rich", "markupsafe", "material", "jupytext", "quickjs",
                   "hypothesis", "xdist", "playwright"}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is not installed on the GPU host (blocked by the test)")
                return None

        sys.meta_path.insert(0, Blocker())
    '''))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(blocker), OUT=str(out))  # OUT from the environment, as on the device
    proc = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO), "gpu-reference",
                           f"PYTHON={sys.executable}",
                           f"GPU_PLAN_ARGS=--root {root} --results {tmp_path / 'results'} --no-tests"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    slug, results, log = gpu_plan.read_archive(out / gpu_plan.ARCHIVE)
    assert sorted(results) == [f"{n}.json" for n in sorted(NAMES)]
    assert "# total" in log and "nothing failed" in log


def test_without_cuda_the_gpu_profile_is_refused_and_the_log_still_comes_back(root: Path, tmp_path: Path,
                                                                              monkeypatch) -> None:
    monkeypatch.setenv("HB_PLAN_DEVICE", "cpu")
    with pytest.raises(RunError, match="device 'cpu' is not CUDA.*--profile quick"):
        plan(root, tmp_path).execute()
    with tarfile.open(tmp_path / "out" / gpu_plan.ARCHIVE) as tar:
        log = tar.extractfile(gpu_plan.LOG).read().decode()
    assert "# stopped: device 'cpu' is not CUDA" in log
    assert not (tmp_path / "results" / SLUG).exists() or not any((tmp_path / "results" / SLUG).iterdir())


def test_the_cuda_tests_run_with_the_hosts_pytest_and_their_output_comes_back(root: Path, tmp_path: Path) -> None:
    (root / "tests").mkdir()
    (root / "tests" / "conftest.py").write_text(
        'def pytest_configure(config):\n    config.addinivalue_line("markers", "cuda: needs CUDA")\n')
    (root / "tests" / "test_fake.py").write_text(
        "import pytest\n\n\n@pytest.mark.cuda\ndef test_on_cuda():\n    pass\n\n\ndef test_elsewhere():\n    pass\n")
    steps = (Step("alpha", 1, 20, ""),)
    assert plan(root, tmp_path, tests=True, steps=steps, test_files=("tests/test_fake.py",)).execute() == 0
    log = (tmp_path / "out" / gpu_plan.LOG).read_text()
    assert ("cuda-tests", "ok") in states(log) and "1 passed, 1 deselected" in log
    with tarfile.open(tmp_path / "out" / gpu_plan.ARCHIVE) as tar:
        output = tar.extractfile(gpu_plan.TESTS_LOG).read().decode()
    assert "-m pytest -q -m cuda tests/test_fake.py -p no:cacheprovider" in output and "1 passed" in output
    assert (tmp_path / "out" / gpu_plan.TESTS_LOG).read_text() == output


# ------------------------------------------------------------------------------------- the real plan


def experiment_files() -> list[str]:
    """The experiments in git (one being written, not yet added, is the plan's last step until it has a row)."""
    return sorted(p.stem for p in tracked("experiments/*.py")
                  if "/" not in p.relative_to(REPO / "experiments").as_posix() and not p.name.startswith("_"))


def profiles_keys(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PROFILES" for t in node.targets):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return set()


def test_the_plan_covers_every_experiment_in_order_with_a_gpu_profile_and_fits_its_budget() -> None:
    names = [s.name for s in gpu_plan.STEPS]
    missing = sorted(set(experiment_files()) - set(names))
    assert len(set(names)) == len(names) and not missing, \
        f"{missing}: every experiment needs a row in STEPS (generator/gpu_plan.py): its gpu profile's predicted " \
        f"seconds on one H200, a budget of twice that, and why; the predictions must stay within 85 % of the " \
        f"{gpu_plan.GLOBAL_BUDGET_S:g} s"
    assert names[:3] == ["hardware", "named_models", "sharding"], "hardware, then the sizing validation"
    assert names.index("optimizer_state") < names.index("activation_memory") < names.index("checkpointing") \
        < names.index("mixed_precision") < min(names.index(n) for n in ("weight_decay", "qas", "sparse_update"))
    missing = [n for n in experiment_files()
               if gpu_plan.PROFILE not in profiles_keys(REPO / "experiments" / f"{n}.py")]
    assert missing == [], f"experiments without a {gpu_plan.PROFILE!r} profile"
    for s in gpu_plan.STEPS + (gpu_plan.CUDA_TESTS,):
        assert s.budget_s >= gpu_plan.MARGIN * s.predicted_s and s.why, s
    predicted = (gpu_plan.DESCRIBE_PREDICTED_S + sum(s.predicted_s for s in gpu_plan.STEPS)
                 + gpu_plan.CUDA_TESTS.predicted_s)
    assert predicted <= 0.85 * gpu_plan.GLOBAL_BUDGET_S, "everything still runs if all take 1.15x their prediction"


def module_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def tracked(pattern: str) -> list[Path]:
    """The files in git matching ``pattern`` (all of them where git is not at hand)."""
    listed = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True)
    return [REPO / line for line in listed.stdout.split()] if listed.returncode == 0 else list(REPO.glob(pattern))


def test_the_cuda_test_files_are_the_ones_with_cuda_tests_and_import_what_the_gpu_host_has() -> None:
    skip = re.compile(r'^@pytest\.mark\.skipif\(.*reason=f?"(needs CUDA|\{NEEDS_CUDA\})', flags=re.M)

    def has_cuda_tests(path: Path) -> bool:
        return bool(skip.search(path.read_text(encoding="utf-8")))

    found = gpu_plan.cuda_test_files(REPO)
    assert {"tests/test_exp_hardware.py", "tests/test_exp_checkpointing.py"} <= set(found)
    assert all(has_cuda_tests(REPO / name) for name in found) and "tests/test_gpu_plan.py" not in found
    host_has = set(sys.stdlib_module_names) | {"torch", "numpy", "pytest", "transformers", "experiments", "generator",
                                               "conftest"}
    for name in found + ("tests/conftest.py",):
        if not (REPO / name).exists():
            continue
        extra = module_imports(REPO / name) - host_has
        assert not extra, f"{name} imports {sorted(extra)} at module level; the GPU host lacks them"
