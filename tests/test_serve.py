"""`handbook serve`: the site is served, and a changed result is rebuilt into the page."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return None


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)  # a fetch of the local page costs milliseconds; a 1 s poll added up to 2 s to the test
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_serve_rebuilds_when_a_result_changes(tmp_path: Path, committed_results: Path) -> None:
    # only what the watched page reads: the other pages show their "no result" notice, so the two
    # builds draw two experiments' figures, not every one
    results = tmp_path / "results"
    for name in ("optimizer_state", "activation_memory"):
        source = next(committed_results.glob(f"*/{name}.json"))
        (results / source.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, results / source.parent.name / source.name)
    target = next(results.glob("*/optimizer_state.json"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/01-where-the-memory-goes/"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "generator", "serve", "--results", str(results),
                             "--primary-host", target.parent.name, "--addr", f"127.0.0.1:{port}"], cwd=REPO,
                            stdout=log, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO), NO_MKDOCS_2_WARNING="1"))
    try:
        env = json.loads(target.read_text())
        before = f"{env['data']['model']['parameters']:,}-parameter model"
        page = wait_for(lambda: fetch(url), 240, "the first build to be served")
        assert f"serving the site on http://127.0.0.1:{port}/" in (tmp_path / "serve.log").read_text()
        assert before in page
        env["data"]["model"]["parameters"] = 987654321
        target.write_text(json.dumps(env))
        wait_for(lambda: "987,654,321-parameter model" in (fetch(url) or ""), 240, "the rebuild after the change")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
