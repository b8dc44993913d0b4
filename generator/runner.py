"""``handbook run``: discover the experiments, run each in its own subprocess, cache.

An experiment is skipped when its inputs are unchanged: the source its ``run``
reaches (in its file and the shared library), its configuration, the torch
version and the kind of host. A
failing experiment (exception, timeout, out of memory, killed) is recorded in
``<name>.failed.json``; the previous good ``<name>.json`` stays on disk, the
other experiments still run, and the command exits non-zero.

An experiment may keep files beside its result (``experiments/lib/artifacts.py``): the child writes
them into a fresh folder, which replaces ``<name>.files/`` when the result is written (the result's
``artifacts`` field lists each file's size and SHA-256, so a file that does not match its result is
found); a failed run keeps the previous result's files.

Standard library only: torch is imported by the subprocesses, never here.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from generator import envelope, fingerprint
from generator.errors import RunError
from generator.progress import make_progress

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPO / "results"
THIS_HOST_FILE = ".this-host"  # in the results folder, not committed: the slug of this machine
STDERR_TAIL = 2000
PR_SET_PDEATHSIG = 1
BAD_DEVICE = 3  # experiments.lib.describe's exit status for a device it refuses
ARTIFACTS_SUFFIX = ".files"  # results/<host>/<name>.files/: the files a result keeps beside it


@dataclass
class Outcome:
    name: str
    state: str  # ok | cached | failed
    seconds: float
    path: Path
    error: str | None = None


@dataclass
class Plan:
    device: str
    host: dict
    env: dict
    experiments: dict[str, dict] = field(default_factory=dict)


def child_env(root: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def git_sha(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def describe(device: str | None, python: str, root: Path) -> Plan:
    """Ask a subprocess (which imports torch) for the host, versions and configs."""
    cmd = [python, "-m", "experiments.lib.describe"] + (["--device", device] if device else [])
    proc = subprocess.run(cmd, cwd=root, env=child_env(root), capture_output=True, text=True, timeout=300)
    if proc.returncode == BAD_DEVICE:  # a device torch cannot measure here: its one line says which
        raise RunError(proc.stderr.strip().splitlines()[-1])
    if proc.returncode != 0:
        raise RunError(f"could not describe the experiments ({' '.join(cmd)}):\n{proc.stderr[-STDERR_TAIL:]}")
    info = json.loads(proc.stdout)
    env = dict(info["env"], git_sha=git_sha(root))
    return Plan(device=info["device"], host=info["host"], env=env, experiments=info["experiments"])


def cache_key(name: str, profile: str, config: dict, plan: Plan, root: Path) -> str:
    """The hash of what the measurement depends on, and nothing else.

    The source is what ``run`` reaches (``generator/fingerprint.py``): editing ``summarize``,
    ``plot`` or a page never reruns an experiment. The host enters as its kind (the slug and the
    device's name), not its exact memory size, so a fresh machine of the same kind reuses results.
    """
    inputs = {
        "schema_version": envelope.SCHEMA_VERSION,
        "measurement": fingerprint.measurement_digest(name, root),
        "profile": profile,
        "config": config,
        "torch": plan.env["torch"],
        "host": {"slug": plan.host["slug"], "device": plan.host["device"]},
        "device": plan.device,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def cached_ok(path: Path, key: str) -> bool:
    if not path.exists():
        return False
    try:
        old = envelope.load(path)
    except envelope.ResultError as exc:
        # an unreadable old result is rerun, and replaced only by a good one
        print(f"handbook: {exc}; running it again", file=sys.stderr)
        return False
    if old["status"] != "ok" or old["cache_key"] != key:
        return False
    problem = artifacts_problem(path, old)
    if problem:
        print(f"handbook: {problem}; running it again", file=sys.stderr)
    return problem is None


def artifacts_problem(path: Path, env: dict) -> str | None:
    """Why the files the result at ``path`` lists do not match what lies beside it (None: they match)."""
    folder = path.with_name(path.name[: -len(".json")] + ARTIFACTS_SUFFIX)
    listed = env.get("artifacts", {})
    if not isinstance(listed, dict) or not all(
            isinstance(w, dict) and type(w.get("bytes")) is int and isinstance(w.get("sha256"), str)
            and "/" not in n and "\\" not in n and not n.startswith(".") for n, w in listed.items()):
        return f"{path}: field 'artifacts' should map plain file names to {{\"bytes\": int, \"sha256\": str}}"
    for name, want in listed.items():
        f = folder / name
        if not f.is_file():
            return f"{f}: missing (listed in {path.name}'s field 'artifacts')"
        if f.stat().st_size != want["bytes"] or hashlib.sha256(f.read_bytes()).hexdigest() != want["sha256"]:
            return f"{f}: does not match the size and SHA-256 that {path.name}'s field 'artifacts' lists"
    return None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {code}"


def _die_with_parent() -> None:
    """In the child, before it starts: the kernel kills it if the runner dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: interrupts and timeouts still end the child's group
        pass


class Interrupted(RunError):
    """The run was interrupted (Ctrl-C, SIGTERM); the child was ended and nothing was written."""


def artifacts_dir(results_dir: Path, slug: str, experiment: str) -> Path:
    """``results/<host>/<name>.files/``: the files the experiment's good result keeps beside it."""
    return Path(results_dir) / slug / f"{experiment}{ARTIFACTS_SUFFIX}"


def artifacts_manifest(folder: Path) -> dict[str, dict]:
    """``{file name: {"bytes", "sha256"}}`` of the files a run wrote; anything but plain files is an error."""
    out = {}
    for path in sorted(folder.iterdir()):
        if path.is_symlink() or not path.is_file():
            raise RunError(f"wrote {path.name!r} into its artifacts folder, which is not a plain file")
        out[path.name] = {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return out


def _recover_artifacts(final: Path) -> None:
    """Tidy what a runner killed mid-swap left: the previous files back in place, temporary folders gone."""
    olds = sorted(final.parent.glob(f".{final.name}.old-*"))
    if olds and not final.exists():
        os.replace(olds.pop(), final)
    for leftover in olds + sorted(final.parent.glob(f".{final.name}.new-*")):
        shutil.rmtree(leftover, ignore_errors=True)


def _swap_artifacts(staged: Path, final: Path) -> Path | None:
    """Put the new run's files in place of the old ones (none if it wrote none); return the old folder."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    if any(staged.iterdir()):
        os.replace(staged, final)
    return old


def _restore_artifacts(final: Path, old: Path | None) -> None:
    if final.exists():
        shutil.rmtree(final)
    if old is not None:
        os.replace(old, final)


def run_one(name: str, profile: str, timeout_s: float, plan: Plan, python: str,
            root: Path, artifacts: Path | None = None) -> tuple[dict | None, str | None]:
    """Run one experiment in a fresh process; return (data, None) or (None, error).

    The child writes its JSON into a pipe (``--out-fd``), so nothing is left on disk whatever
    happens, and its files (if any) into ``artifacts``. It runs in its own process group, which is
    killed on a timeout or an interrupt, and it dies with the runner if the runner is killed.
    """
    cmd = [python, "-m", f"experiments.{name}", "--profile", profile, "--device", plan.device]
    if artifacts is not None:
        cmd += ["--artifacts", str(artifacts)]
    read_fd, write_fd = os.pipe()
    chunks: list[bytes] = []
    try:
        proc = subprocess.Popen(cmd + ["--out-fd", str(write_fd)], cwd=root, env=child_env(root),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, pass_fds=(write_fd,), preexec_fn=_die_with_parent)
    finally:
        os.close(write_fd)
    reader = threading.Thread(target=lambda: chunks.append(_read_all(read_fd)), daemon=True)
    reader.start()
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return None, f"timed out after {timeout_s:g} s and was killed"
    except BaseException:  # Ctrl-C, SIGTERM: the child's whole group goes with us
        _kill_group(proc)
        raise
    finally:
        reader.join(timeout=5)
    if proc.returncode != 0:
        tail = (stderr or "").strip()[-STDERR_TAIL:]
        return None, f"{_describe_exit(proc.returncode)}" + (f":\n{tail}" if tail else "")
    try:
        data = json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError as exc:
        return None, f"wrote no readable result ({exc})"
    if not isinstance(data, dict):
        return None, f"run() returned {type(data).__name__}, not a dict"
    return data, None


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def make_envelope(name: str, profile: str, config: dict, plan: Plan, key: str, started: dt.datetime,
                  seconds: float, data: dict | None, error: str | None, artifacts: dict | None = None) -> dict:
    env = {
        "schema_version": envelope.SCHEMA_VERSION,
        "experiment": name,
        "profile": profile,
        "config": config,
        "host": plan.host,
        "env": plan.env,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(seconds, 3),
        "status": "failed" if error else "ok",
        "error": error,
        "data": None if error else data,
        "cache_key": key,
    }
    if artifacts and not error:
        env["artifacts"] = artifacts
    return env


def _land(good: Path, final: Path, staged: Path, data: dict | None, error: str | None,
          envelope_of: Callable[[dict | None, str | None, dict], dict]) -> str | None:
    """Write a good result with its files put in place just before it; return the error where it cannot.

    On any failure the previous result and its files stay as they were.
    """
    if error is not None:
        return error
    try:
        files = artifacts_manifest(staged)
    except RunError as exc:
        return str(exc)
    env = envelope_of(data, None, files)
    try:
        envelope.validate(env, str(good))
    except envelope.ResultError as exc:
        return f"returned data that is not a valid result: {exc}"
    old = _swap_artifacts(staged, final)
    try:
        envelope.write_atomic(good, env)
    except BaseException:
        _restore_artifacts(final, old)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return None


def default_profile(device: str) -> str:
    return "full" if device.startswith("cuda") else "quick"


def run(results_dir: Path = DEFAULT_RESULTS, only: list[str] | None = None, force: bool = False,
        profile: str | None = None, device: str | None = None, timeout_s: float | None = None,
        python: str = sys.executable, plain: bool = False, root: Path = REPO,
        described: Plan | None = None) -> list[Outcome]:
    """Run (or reuse) every selected experiment; return one outcome each.

    ``root`` is the folder holding the ``experiments`` package (the repository; tests use others).
    ``described`` is the host as ``describe`` already reported it: a caller that runs experiments one
    at a time (the GPU plan) asks torch once, not once per experiment.
    """
    root, results_dir = Path(root), Path(results_dir)
    if not (root / "experiments" / "__init__.py").is_file():
        raise RunError(f"{root}: --root holds no experiments package (experiments/__init__.py)")
    if results_dir.exists() and not results_dir.is_dir():
        raise RunError(f"{results_dir}: --results must be a folder, and this is a file")
    if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s)
                                      and timeout_s > 0):
        raise RunError(f"--timeout must be a positive number of seconds, not {timeout_s!r}")
    plan = described or describe(device, python, root)
    names = sorted(plan.experiments)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise RunError(f"unknown experiment(s): {', '.join(unknown)}; known: {', '.join(names) or 'none'}")
        names = [n for n in names if n in only]
    profile = profile or default_profile(plan.device)
    slug = plan.host["slug"]
    (results_dir / slug).mkdir(parents=True, exist_ok=True)
    (results_dir / THIS_HOST_FILE).write_text(slug + "\n", encoding="utf-8")

    progress = make_progress(names, plain=plain)
    outcomes: list[Outcome] = []
    try:
        _run_all(names, plan, profile, results_dir, slug, force, timeout_s, python, root, progress, outcomes)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; the experiment that was running was stopped and nothing it measured "
                          f"was written ({len(outcomes)} of {len(names)} finished before)") from None
    finally:
        progress.close()
    return outcomes


def _run_all(names: list[str], plan: Plan, profile: str, results_dir: Path, slug: str, force: bool,
             timeout_s: float | None, python: str, root: Path, progress, outcomes: list[Outcome]) -> None:
    """Run or reuse each experiment in turn, appending its outcome (kept if the run is interrupted)."""
    for name in names:
        spec = plan.experiments[name]
        good = envelope.result_path(results_dir, slug, name)
        failed = envelope.result_path(results_dir, slug, name, failed=True)
        progress.start(name)
        started, t0 = dt.datetime.now(dt.timezone.utc), time.monotonic()
        if spec["error"]:
            config, key, data, error = {}, "import-error", None, spec["error"]
        elif profile not in spec["profiles"]:
            config, key, data, error = {}, "no-profile", None, f"experiments/{name}.py has no profile {profile!r}"
        else:
            config = spec["profiles"][profile]
            key = cache_key(name, profile, config, plan, root)
            if not force and not failed.exists() and cached_ok(good, key):  # a failed last run is retried
                progress.finish(name, "cached", 0.0)
                outcomes.append(Outcome(name, "cached", 0.0, good))
                continue
            final = artifacts_dir(results_dir, slug, name)
            _recover_artifacts(final)
            staged = final.with_name(f".{final.name}.new-{os.getpid()}")
            staged.mkdir()
            try:
                data, error = run_one(name, profile, timeout_s or spec["timeout_s"], plan, python, root, staged)
                error = _land(good, final, staged, data, error,
                              lambda d, e, a: make_envelope(name, profile, config, plan, key, started,
                                                            time.monotonic() - t0, d, e, a))
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        seconds = time.monotonic() - t0
        env = make_envelope(name, profile, config, plan, key, started, seconds, data, error)
        if error is None:
            failed.unlink(missing_ok=True)
            outcomes.append(Outcome(name, "ok", seconds, good))
            progress.finish(name, "ok", seconds)
        else:
            envelope.write_atomic(failed, env)
            outcomes.append(Outcome(name, "failed", seconds, failed, error))
            progress.finish(name, "failed", seconds, error.splitlines()[0])
