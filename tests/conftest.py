"""Shared test helpers: result envelopes, mini sites, and the real site built once per session.

- ``make_envelope`` / ``write_result``: canned result files.
- ``build_site(out, results, docs=None, host=None, experiments=None)``: ``mkdocs build --strict`` of the
  real site (``docs=None``, a subprocess) or of a mini site whose pages are given as ``{"index.md": "..."}``
  (in this process; toy ``experiments`` may replace the real ones).
- ``built_site`` (session fixture): the real site and both PDFs, built from the committed results.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from generator import envelope  # noqa: E402

TEST_HOST = {"slug": "cpu-test-2c-8gb", "device": "Test CPU", "device_memory_bytes": 8 * 2**30,
             "cpu": "Test CPU", "cores": 2}


def make_envelope(experiment: str, data: dict | None, *, host: dict | None = None, torch: str = "2.13.0",
                  schema: int = envelope.SCHEMA_VERSION, status: str = "ok", error: str | None = None,
                  started_at: str = "2026-11-22T10:00:00+00:00") -> dict:
    return {
        "schema_version": schema, "experiment": experiment, "profile": "quick", "config": {},
        "host": dict(host or TEST_HOST),
        "env": {"python": "3.11.7", "torch": torch, "cuda": None, "git_sha": "abc123def456"},
        "started_at": started_at, "duration_s": 1.5, "status": status, "error": error,
        "data": data if status == "ok" else None, "cache_key": "test",
    }


def write_result(results_dir: Path, env: dict, failed: bool = False) -> Path:
    path = envelope.result_path(results_dir, env["host"]["slug"], env["experiment"], failed=failed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(env), encoding="utf-8")
    return path


MINI_CONFIG = """site_name: Mini
docs_dir: {docs}
site_dir: {site}
strict: true
theme: {{name: material, font: false}}
hooks: [{hook}]
markdown_extensions: [admonition, tables, attr_list, md_in_html, pymdownx.details, pymdownx.superfences,
  {{pymdownx.arithmatex: {{generic: true}}}}]
"""


TOY_EXPERIMENT = '''"""A toy experiment for the site's tests.

Question: none; method: none; run: not run, its results are canned.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    size: int = 1


PROFILES = {"test": Config(), "quick": Config(), "full": Config()}


def run(cfg, device):
    raise NotImplementedError("canned results only")


def summarize(data):
    return {"parameters_label": f"{data['model']['parameters']:,} parameters",
            "state_per_param_bytes": data["model"]["state_bytes"] / data["model"]["parameters"]}


def plot(data, summary):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot(data["series"])
    ax.set_title(summary["parameters_label"])
    bad, ax2 = plt.subplots()
    ax2.plot(data["series"][data["no_such_index_key"]] if data.get("broken") else data["series"])
    return {"series": fig, "broken": bad}
'''


def fake_project(base: Path, experiments: dict[str, str]) -> Path:
    """A project folder whose ``experiments`` package holds ``experiments`` (name -> source) beside the real lib.

    The runner's tests run these torch-free fakes as it runs the real ones (``--root``).
    """
    exp = Path(base) / "proj" / "experiments"
    exp.mkdir(parents=True)
    shutil.copy(REPO / "experiments" / "__init__.py", exp / "__init__.py")
    shutil.copytree(REPO / "experiments" / "lib", exp / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    for name, source in experiments.items():
        (exp / f"{name}.py").write_text(source)
    return exp.parent


_TOY_PACKAGES = itertools.count()


def toy_package(out: Path, sources: dict[str, str]) -> str:
    """A uniquely named package of toy experiments under ``out``, importable from this process."""
    name = f"hb_toys_{os.getpid()}_{next(_TOY_PACKAGES)}"
    pkg = Path(out) / "toys" / name
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text('"""Toy experiments of one test."""\n')
    for exp, text in sources.items():
        (pkg / f"{exp}.py").write_text(text, encoding="utf-8")
    if str(pkg.parent) not in sys.path:
        sys.path.insert(0, str(pkg.parent))
    return name


def build_site(out: Path, results: Path, docs: dict[str, str] | None = None, host: str | None = None,
               experiments: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of the real site, or of a mini site made of ``docs``.

    ``experiments`` (name -> source) replaces the real experiments with toy ones, whose
    ``summarize`` and ``plot`` the build then calls (``HANDBOOK_EXPERIMENTS`` names their package).
    """
    out = Path(out)
    if docs is None:
        config = REPO / "mkdocs.yml"
    else:
        docs_dir = out / "docs"
        for name, text in docs.items():
            (docs_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (docs_dir / name).write_text(text, encoding="utf-8")
        config = out / "mkdocs.yml"
        config.write_text(MINI_CONFIG.format(docs=docs_dir, site=out / "site",
                                             hook=REPO / "generator" / "site" / "hook.py"), encoding="utf-8")
    if docs is not None:  # a mini site: in this process, where torch and mkdocs are already imported
        package = toy_package(out, experiments) if experiments is not None else None
        return build_in_process(config, out / "site", results, host, package)
    env = dict(os.environ, HANDBOOK_RESULTS=str(results), NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(REPO))
    env.pop("HANDBOOK_HOST", None)
    env.pop("HANDBOOK_EXPERIMENTS", None)
    if host:
        env["HANDBOOK_HOST"] = host
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(out / "site")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def build_in_process(config: Path, site: Path, results: Path, host: str | None,
                     package: str | None = None) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` in this process (no interpreter to start, torch already imported).

    Returns what the subprocess version returns: status, and mkdocs' log lines as stderr.
    """
    import io
    import logging

    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import MkDocsException

    settings = {"HANDBOOK_RESULTS": str(results), "HANDBOOK_HOST": host, "NO_MKDOCS_2_WARNING": "1",
                "HANDBOOK_EXPERIMENTS": package}
    saved = {k: os.environ.get(k) for k in settings}
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)-7s -  %(message)s"))
    logger = logging.getLogger("mkdocs")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    code = 0
    try:
        for key, value in settings.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        build(load_config(str(config), site_dir=str(site), strict=True))
    except (MkDocsException, SystemExit) as exc:
        code = 1
        log.write(f"{type(exc).__name__}: {exc}\n")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(["mkdocs", "build", "--strict", "-f", str(config)], code, "", log.getvalue())


@pytest.fixture(scope="session")
def committed_results() -> Path:
    results = REPO / "results"
    if not any(results.glob("*/*.json")):
        pytest.fail("results/ holds no results: run 'handbook run' and commit this host's results")
    return results


@pytest.fixture(scope="session")
def built_site(tmp_path_factory, committed_results) -> Path:
    """The real site with both PDFs, built once per test run from a copy of the committed results.

    A whole-suite run starts this build in the background as it begins (``pytest_configure``), so it
    overlaps the other tests; otherwise the first worker to ask builds it. Under pytest-xdist the
    workers share it through the run's shared folder, under a file lock.
    """
    with shared_once("built-site") as root:
        if not (root / "built").exists() and not (root / "started").exists():
            _build_real_site(root, committed_results)
    deadline = time.monotonic() + 900
    while not (root / "built").exists():
        if (root / "failed").exists():
            pytest.fail(f"handbook build failed:\n{(root / 'failed').read_text()[-6000:]}")
        if time.monotonic() > deadline:
            pytest.fail("the background build of the real site did not finish in 900 s")
        time.sleep(0.2)
    return root / "site"


def _build_real_site(root: Path, results_src: Path) -> None:
    """Copy the results and build the site with both PDFs into ``root``; mark it built or failed."""
    shutil.rmtree(root / "results", ignore_errors=True)
    shutil.copytree(results_src, root / "results", ignore=shutil.ignore_patterns(".this-host"))
    proc = subprocess.run([sys.executable, "-m", "generator", "build", "--no-run", "--results",
                           str(root / "results"), "--site-dir", str(root / "site")], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, PYTHONPATH=str(REPO), NO_MKDOCS_2_WARNING="1"))
    if proc.returncode != 0:
        (root / "failed").write_text(f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    else:
        (root / "built").write_text("ok\n")


_BACKGROUND: list[subprocess.Popen] = []


def _start_background_site(config) -> None:
    """On a whole-suite run (no file or marker chosen), build the real site while the other tests run."""
    if config.args and any(Path(a).resolve() != (REPO / "tests").resolve() for a in config.args):
        return
    if config.getoption("markexpr") or config.getoption("keyword"):
        return
    root = Path(os.environ[SHARED]) / "built-site"
    root.mkdir(parents=True, exist_ok=True)
    (root / "started").write_text("background\n")
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[3]); "
            "from conftest import _build_real_site; _build_real_site(Path(sys.argv[1]), Path(sys.argv[2]))")
    _BACKGROUND.append(subprocess.Popen([sys.executable, "-c", code, str(root), str(REPO / "results"),
                                         str(Path(__file__).parent)], cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        env=dict(os.environ, PYTHONPATH=str(REPO))))


def site_text(site: Path, page: str) -> str:
    """The visible text of a built page (tags stripped), for asserting on rendered numbers."""
    import html
    import re

    raw = (site / page).read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", " ", raw))


def build_chapter_site(root: Path, data: dict[str, dict], pages: tuple[str, ...], parts: tuple[str, ...] = (),
                       assets: tuple[str, ...] = (), stubs: dict[str, str] | None = None) -> Path:
    """A mini site of real chapter pages and cheat-sheet parts over canned results of tiny runs.

    ``data`` maps experiment names to what their ``run`` returned; ``stubs`` are extra pages that
    the chapters link to. Fails the test with mkdocs' output when the strict build fails.
    """
    for name, d in data.items():
        write_result(root / "results", make_envelope(name, d))
    docs_dir = REPO / "docs"
    docs = {"index.md": "# Mini\n", "cheatsheet.md": (docs_dir / "cheatsheet.md").read_text(encoding="utf-8"),
            **{p: (docs_dir / p).read_text(encoding="utf-8") for p in pages + parts + assets},
            **{f"experiments/{name}.py": "# the notebook link target\n" for name in data},
            **(stubs or {})}
    proc = build_site(root / "out", root / "results", docs=docs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "out" / "site"


# The fast tier (`make test-fast`): formulas, the runner and the site on canned results. Everything
# that runs a real experiment, builds the real site, prints PDFs or drives Chromium is outside it.
FAST_FILES = {"test_formulas.py", "test_formatting.py", "test_estimate.py", "test_runner.py", "test_site.py",
              "test_cli.py", "test_pages_do_not_compute.py", "test_fingerprint.py", "test_budget_search.py",
              "test_hosts_table.py", "test_errors.py", "test_properties.py", "test_estimate_input.py",
              "test_artifacts.py"}
FAST_CONTRACT_CHECKS = ("test_shape_of_the_module", "test_summarize_reaches_no_torch", "test_unit_check",
                        "test_every_experiment_is_checked")


# The CUDA tier (`pytest -m cuda`, run by the GPU plan on the GPU host): every test skipped with a reason
# that starts with this. Their files are listed in generator/gpu_plan.py (CUDA_TEST_FILES).
NEEDS_CUDA = "needs CUDA"


SHARED = "HANDBOOK_TEST_SHARED"  # a folder the pytest-xdist workers of one run share (made by the controller)


@contextlib.contextmanager
def shared_once(key: str):
    """A folder for ``key`` shared by every worker of this test run, held under a lock while in use.

    The first worker to enter makes what goes in it; the others wait, then find it made.
    """
    import fcntl

    folder = Path(os.environ[SHARED]) / key
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield folder


def pytest_configure(config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist): workers inherit this
        import tempfile

        os.environ[SHARED] = tempfile.mkdtemp(prefix="handbook-tests-")
        keep_bytecode()
        if any((REPO / "results").glob("*/*.json")):
            _start_background_site(config)
        if hasattr(config.option, "loadscopereorder"):  # xdist: hand out files in the workers' order (below)
            config.option.loadscopereorder = False
    config.addinivalue_line("markers", "fast: the fast tier (make test-fast): formulas, runner, site on canned results")
    config.addinivalue_line("markers", f"cuda: tests that skip without CUDA (reason '{NEEDS_CUDA}...'); the GPU plan "
                                       f"runs them on the GPU host with pytest -m cuda")


def keep_bytecode() -> None:
    """Let this run, its workers and their subprocesses write Python's bytecode cache (``__pycache__``).

    Where PYTHONDONTWRITEBYTECODE is set (some sandboxes set it), every worker rewrote the assertions of
    every test file and of the pytest plugins' packages (hypothesis: about 170 modules) from source on
    every run, and every subprocess that imports the experiments compiled them again: 6 s of CPU per
    worker's collection here, 3 s with the cache. ``__pycache__`` is ignored by git, by the cache key
    (``generator/fingerprint.py`` hashes syntax trees) and by the build's fingerprint.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False


def pytest_unconfigure(config) -> None:
    if not hasattr(config, "workerinput"):
        for proc in _BACKGROUND:  # never leave the background build running (a run cut short, say)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if os.environ.get(SHARED):
            shutil.rmtree(os.environ.pop(SHARED), ignore_errors=True)


def needs_cuda(item) -> bool:
    return any(str(m.kwargs.get("reason", "")).startswith(NEEDS_CUDA) for m in item.iter_markers("skipif"))


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        name = Path(str(item.fspath)).name
        fixtures = getattr(item, "fixturenames", ())
        contract_fast = name == "test_experiment_contract.py" and item.name.startswith(FAST_CONTRACT_CHECKS)
        if (name in FAST_FILES or contract_fast) and "built_site" not in fixtures:
            item.add_marker(pytest.mark.fast)
        if needs_cuda(item):
            item.add_marker(pytest.mark.cuda)
    if hasattr(config, "workerinput"):
        longest_files_first(items, FILE_SECONDS)


# ------------------------------------------------------------------------------------------- scheduling
# `make test` runs on two workers (pytest-xdist, --dist loadfile: a whole file per worker). xdist hands out
# files by their number of tests, most first, so a long file of one or a few tests (test_serve.py,
# test_exp_sharding.py) started last and ran alone at the end while the other worker idled. Here the
# workers collect the files longest first (each file's tests in their own order) and xdist keeps that order
# (pytest_configure turns its reordering off), so the last files to start are short ones.
# A file's seconds: what a worker spent on it in a run of the whole suite on the 2-core host (a quiet
# moment; the larger of its wall and CPU time, per-test getrusage, rounded). They include the test-profile
# runs a file is the first to ask for. test_reader.py needs the real site that builds in the background
# from the start; it is listed below its 13 s so that it starts after the longest files, when the site
# is there. A file not listed counts UNLISTED_FILE_S: list a new file when it takes more than a few seconds.
FILE_SECONDS = {
    "test_experiment_contract.py": 30, "test_faults.py": 16, "test_serve.py": 12, "test_runner.py": 10,
    "test_calculator_browser.py": 7.5, "test_exp_sharding.py": 7, "test_reader.py": 6, "test_gpu_plan.py": 5,
    "test_model_families.py": 4.5, "test_page_beyond_checkpointing.py": 3, "test_page_activations_precision.py": 3,
    "test_site.py": 3, "test_exp_hardware.py": 3, "test_errors.py": 2.3, "test_page_optimizer_semantics.py": 2.2,
    "test_exp_estimator_validation.py": 2, "test_exp_memory_timeline.py": 1.6, "test_artifacts.py": 1.6,
    "test_properties.py": 1.3,
}
UNLISTED_FILE_S = 1.0


def longest_files_first(items: list, seconds: dict[str, float]) -> None:
    """Reorder ``items`` in place: whole files, longest first; ties (and unknown files) keep collection order."""
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        first.setdefault(Path(str(item.fspath)).name, i)
    items.sort(key=lambda item: (-seconds.get(Path(str(item.fspath)).name, UNLISTED_FILE_S),
                                 first[Path(str(item.fspath)).name]))


_TEST_PROFILE_DATA: dict[str, str] = {}


def test_profile_data(name: str) -> dict:
    """What ``run`` returns for experiment ``name``'s ``test`` profile on the CPU, measured once per session.

    Several tests read the same tiny run (the contract test, the experiment's own tests, its page
    test); each gets a fresh copy of one measurement.
    """
    if name not in _TEST_PROFILE_DATA:
        with shared_once(f"test-profile-{name}") as folder:  # the workers of one run share each measurement
            stored = folder / "data.json"
            if not stored.exists():
                stored.write_text(_measure_test_profile(name), encoding="utf-8")
            _TEST_PROFILE_DATA[name] = stored.read_text(encoding="utf-8")
    return json.loads(_TEST_PROFILE_DATA[name])


def _measure_test_profile(name: str) -> str:
    import importlib

    module = importlib.import_module(f"experiments.{name}")
    return json.dumps(module.run(module.PROFILES["test"], "cpu"))


test_profile_data.__test__ = False  # a helper, not a test
