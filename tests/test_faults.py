"""Faults and bad input: one clear line, nothing on disk lost, no process left running.

The fake experiments here are torch-free; the runner's own describe step is real (it asks torch
about the host) in the subprocess cases.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TEST_HOST, fake_project, make_envelope, write_result
from generator import cli, envelope, runner
from generator.argv import attach_negative_values
from generator.errors import HandbookError

REPO = Path(__file__).resolve().parent.parent

FAKE = '''
"""A fake experiment: question, method and run are the test's."""
import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    value: int = 1


PROFILES = {"test": Config(), "quick": Config(), "full": Config()}


def run(cfg, device):
    pidfile = os.environ.get("HB_FAULT_PIDFILE")
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
    return {"value": cfg.value}


def summarize(data):
    return {}


def plot(data, summary):
    raise NotImplementedError


if __name__ == "__main__":
    import sys
    from experiments.lib.cli import main
    raise SystemExit(main(sys.modules[__name__]))
'''


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fake_project(tmp_path, {"alpha": FAKE})


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not running: it only waits for its parent to read its status
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def good_results(tmp_path_factory) -> Path:
    """A results folder with alpha's good result, made once by the real CLI."""
    base = tmp_path_factory.mktemp("good")
    first = subprocess.run([sys.executable, "-m", "generator", "run", "--root", str(fake_project(base, {"alpha": FAKE})),
                            "--results",
                            str(base / "results"), "--plain"], env=dict(os.environ, PYTHONPATH=str(REPO)),
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    return base / "results"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_the_runner_ends_its_child_however_it_ends(root: Path, tmp_path: Path, good_results: Path,
                                                   sig: signal.Signals) -> None:
    results = tmp_path / "results"
    shutil.copytree(good_results, results)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    before = snapshot(results)

    pidfile = tmp_path / "child.pid"
    proc = subprocess.Popen([sys.executable, "-m", "generator", "run", "--root", str(root), "--results",
                             str(results), "--plain", "--force"], env=dict(env, HB_FAULT_PIDFILE=str(pidfile)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait(lambda: pidfile.exists() and pidfile.read_text().strip(), 60, "the experiment to start")
        child = int(pidfile.read_text())
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
        wait(lambda: not alive(child), 10, f"the experiment (pid {child}) to end after {sig.name}")
    finally:
        proc.kill()
    if sig != signal.SIGKILL:
        assert proc.returncode == 130
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in stderr, stderr
    assert snapshot(results) == before, "no partial file, the previous results byte-identical"


def test_binary_garbage_in_a_result_is_named_rerun_and_replaced(root: Path, tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    plans: list[runner.Plan] = []
    real = runner.describe
    monkeypatch.setattr(runner, "describe", lambda *a: plans[0] if plans else plans.append(real(*a)) or plans[0])
    results = tmp_path / "results"
    path = runner.run(results_dir=results, root=root, plain=True)[0].path
    path.write_bytes(os.urandom(64) + b"\xff\xfe")
    again = runner.run(results_dir=results, root=root, plain=True)
    assert again[0].state == "ok"
    assert envelope.load(path)["data"] == {"value": 1}
    err = capsys.readouterr().err
    assert str(path) in err and "running it again" in err


def test_a_refused_device_is_one_line_and_writes_nothing(root: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    with pytest.raises(runner.RunError) as err:
        runner.run(results_dir=results, root=root, plain=True, device="meta")
    assert "--device 'meta'" in str(err.value) and "\n" not in str(err.value)
    assert not results.exists() or not list(results.rglob("*.json"))


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "-inf", "soon"])
def test_timeout_must_be_positive_and_finite(value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        top = cli.parser()
        top.parse_args(attach_negative_values(top, ["run", "--timeout", value]))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--timeout" in err and value in err


def test_paths_that_cannot_work_are_one_line(root: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    cases = [({"results_dir": a_file, "root": root}, "must be a folder"),
             ({"results_dir": tmp_path / "r", "root": tmp_path / "nonexistent"}, "no experiments package"),
             ({"results_dir": tmp_path / "r", "root": Path("/tmp")}, "no experiments package")]
    for kwargs, message in cases:
        with pytest.raises(HandbookError) as err:
            runner.run(plain=True, **kwargs)
        assert message in str(err.value) and "\n" not in str(err.value)
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("folder", ["results", "experiments"])
def test_the_build_never_empties_a_folder_it_did_not_make(tmp_path: Path, folder: str) -> None:
    target = tmp_path / folder
    shutil.copytree(REPO / folder, target, ignore=shutil.ignore_patterns("__pycache__", ".this-host"))
    before = snapshot(target)
    proc = subprocess.run([sys.executable, "-m", "generator", "build", "--no-run", "--no-pdf", "--site-dir",
                           str(target)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "did not write" in proc.stderr and str(target) in proc.stderr
    assert snapshot(target) == before


def test_no_pdf_says_the_old_pdfs_went(tmp_path: Path, monkeypatch, capsys) -> None:
    from generator import build as build_module

    site = tmp_path / "site"
    site.mkdir()
    (site / build_module.MARKER).write_text("")
    (site / "handbook.pdf").write_bytes(b"%PDF old")

    def fake_mkdocs_build(config):  # what mkdocs does: empty the folder (but dot files), write the site
        for p in site.iterdir():
            if not p.name.startswith("."):
                p.unlink()
        (site / "index.html").write_text("<html></html>")

    import mkdocs.commands.build

    monkeypatch.setattr(mkdocs.commands.build, "build", fake_mkdocs_build)
    monkeypatch.setattr(build_module, "STAMP", tmp_path / "stamp.json")
    build_module.build(results_dir=tmp_path / "results", site_dir=site, pdf_too=False)
    out = capsys.readouterr().out
    assert "--no-pdf: the PDFs of the previous build were removed" in out and "handbook.pdf" in out


def test_a_result_in_the_wrong_host_folder_names_both(tmp_path: Path) -> None:
    from generator.site.results import load_all

    results = tmp_path / "results"
    path = write_result(results, make_envelope("alpha", {"value": 1}))
    moved = results / "cpu-other-4c-16gb" / path.name
    moved.parent.mkdir()
    path.rename(moved)
    with pytest.raises(envelope.ResultError) as err:
        load_all(results)
    message = str(err.value)
    assert str(moved) in message and TEST_HOST["slug"] in message and "cpu-other-4c-16gb" in message


def test_results_are_readable_by_everyone(tmp_path: Path) -> None:
    path = tmp_path / "h" / "alpha.json"
    envelope.write_atomic(path, make_envelope("alpha", {"value": 1}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_the_cache_key_holds_the_kind_of_host_not_its_jitter(tmp_path: Path, root: Path) -> None:
    plan = runner.Plan("cpu", dict(TEST_HOST), {"torch": "2.13.0", "python": "3.11", "cuda": None, "git_sha": None})
    jitter = runner.Plan("cpu", dict(TEST_HOST, device_memory_bytes=TEST_HOST["device_memory_bytes"] - 450_560),
                         dict(plan.env, git_sha="another"))
    other = runner.Plan("cpu", dict(TEST_HOST, slug="cpu-other-4c-16gb"), plan.env)
    key = runner.cache_key("alpha", "quick", {"value": 1}, plan, root)
    assert runner.cache_key("alpha", "quick", {"value": 1}, jitter, root) == key
    assert runner.cache_key("alpha", "quick", {"value": 1}, other, root) != key


def test_serve_names_an_unknown_primary_host(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    write_result(results, make_envelope("alpha", {"value": 1}))
    code = cli.main(["serve", "--results", str(results), "--primary-host", "no-such"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "no results for host 'no-such'" in err and TEST_HOST["slug"] in err


def test_the_results_host_and_the_address_are_distinct_options(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--primary-host SLUG" in text and "--addr IP:PORT" in text and "--host " not in text
