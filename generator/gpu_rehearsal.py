"""``make gpu-reference-rehearsal``: the GPU plan, rehearsed on this CPU, then its archive put to use.

1. ``make gpu-reference`` (the very line a GPU host runs) with the rehearsal venv's python, which
   has only what the GPU host has (torch, numpy, transformers, pytest), in the **quick** profile
   with a smaller budget (300 s instead of 420), into a temporary folder. Quick, not gpu: the gpu
   profiles are sized for an H200 (matmuls of 16384, a 134 M-parameter training step at batch
   4096, ...) and would run for tens of minutes on two cores; quick is what this host publishes,
   so its committed results give each experiment's predicted time (``--predict-from results``) and
   the budget logic runs on measured numbers. Those were measured on an idle machine and this one
   is shared, so each experiment gets 4x its prediction (``--margin 4``; the GPU host: 2x).
2. The archive: it must hold one host's results and the log, every experiment ok (none failed or
   skipped), and unpack with ``tar -xzf results.tgz results`` into ``results/<slug>/``.
3. A site with two hosts: a copy of the committed results plus the unpacked one; when the slug is
   this host's own (it is, here), the rehearsal's results go in as a second host,
   ``rehearsal-<slug>``. ``handbook build --no-run --no-pdf`` with that host as the primary one
   (as the GPU host will be in a fresh clone) must pass, and the hardware page must name both.

It runs with the main venv (the build needs the site packages); the plan itself runs with
``--python``. Everything goes into a temporary folder, printed at the end; nothing in the
repository changes (but the build's cache stamp in ``.cache``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from generator import gpu_plan
from generator.errors import RunError
from generator.runner import REPO, THIS_HOST_FILE

STATE = re.compile(r"^(\S+)\s+(ok|cached|failed|skipped|interrupted)\s+([\d.]+) s")
PREDICTED = re.compile(r"\spredicted\s+([\d.]+) s")


def log_states(log: str) -> dict[str, tuple[str, float, float | None]]:
    """``{step: (state, seconds, predicted)}`` from the plan's log lines."""
    out = {}
    for line in log.splitlines():
        m = STATE.match(line)
        if m:
            p = PREDICTED.search(line)
            out[m.group(1)] = (m.group(2), float(m.group(3)), float(p.group(1)) if p else None)
    return out


def run_plan(python: str, work: Path, budget: float, margin: float) -> int:
    args = ["--profile", "quick", "--budget", f"{budget:g}", "--margin", f"{margin:g}",
            "--results", str(work / "results"), "--predict-from", str(REPO / "results")]
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHONPATH", "VIRTUAL_ENV")}
    cmd = ["make", "--no-print-directory", "-C", str(REPO), "gpu-reference", f"OUT={work / 'out'}",
           f"PYTHON={python}", f"GPU_PLAN_ARGS={shlex.join(args)}"]
    print(f"$ {shlex.join(cmd)}", flush=True)
    return subprocess.run(cmd, env=env).returncode


def second_host(committed: Path, unpacked: Path, slug: str, site_results: Path) -> str:
    """Committed results plus the rehearsal's, under a slug of their own when this host's is taken."""
    shutil.copytree(committed, site_results, ignore=shutil.ignore_patterns(THIS_HOST_FILE))
    new = slug if not (site_results / slug).exists() else f"rehearsal-{slug}"
    (site_results / new).mkdir()
    for path in sorted((unpacked / "results" / slug).glob("*.json")):
        env = json.loads(path.read_text(encoding="utf-8"))
        env["host"]["slug"] = new
        (site_results / new / path.name).write_text(json.dumps(env, indent=1) + "\n", encoding="utf-8")
    for files in sorted((unpacked / "results" / slug).glob("*.files")):   # the files kept beside results
        if files.is_dir():
            shutil.copytree(files, site_results / new / files.name)
    return new


def rehearse(python: str, budget: float, margin: float, work: Path) -> list[str]:
    """Run and check; return the problems found (empty: the rehearsal passed)."""
    t0 = time.monotonic()
    status = run_plan(python, work, budget, margin)
    plan_s = time.monotonic() - t0
    archive = work / "out" / gpu_plan.ARCHIVE
    if not archive.is_file():
        return [f"the plan (exit status {status}) left no {archive}"]
    slug, results, log = gpu_plan.read_archive(archive)
    problems = []
    states = log_states(log)
    bad = {n: s for n, (s, _, _) in states.items() if s not in ("ok", "cached", "skipped")}
    if status != 0 or bad or states.get("hardware", ("",))[0] != "ok":
        problems.append(f"the plan exited with status {status}; failed: "
                        + (", ".join(f"{n} {s}" for n, s in bad.items()) or "none")
                        + f"; hardware: {states.get('hardware', ('not run',))[0]}")
    skipped = [n for n, (s, _, _) in states.items() if s == "skipped"]
    slowdowns = sorted(t / p for n, (s, t, p) in states.items() if s == "ok" and p and n != "describe")
    slowdown = slowdowns[len(slowdowns) // 2] if slowdowns else None
    returned = sorted(p.name for p in (work / "out").iterdir())
    if len(returned) > 8 or gpu_plan.LOG not in returned:
        problems.append(f"the output folder holds {returned}: at most 8 files, the log among them")
    unpacked = work / "unpacked"
    unpacked.mkdir()
    tar = subprocess.run(["tar", "-xzf", str(archive), "-C", str(unpacked), "results"], capture_output=True, text=True)
    if tar.returncode != 0:
        return problems + [f"tar -xzf {archive} results: {tar.stderr.strip()}"]
    files = sorted(p.name for p in (unpacked / "results" / slug).glob("*.json"))
    if files != sorted(results):
        problems.append(f"unpacked results/{slug}/ holds {files}, the archive listed {sorted(results)}")
    if any(name.endswith(".failed.json") for name in files):
        problems.append(f"failed results in the archive: {[n for n in files if n.endswith('.failed.json')]}")

    site_results = work / "site-results"
    host = second_host(REPO / "results", unpacked, slug, site_results)
    t1 = time.monotonic()
    build = subprocess.run([sys.executable, "-m", "generator", "build", "--no-run", "--no-pdf", "--results",
                            str(site_results), "--site-dir", str(work / "site"), "--primary-host", host],
                           cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    build_s = time.monotonic() - t1
    if build.returncode != 0:
        problems.append(f"handbook build with hosts {sorted(p.name for p in site_results.iterdir())} failed:\n"
                        f"{build.stdout[-2000:]}{build.stderr[-3000:]}")
    else:
        page = (work / "site" / "hardware" / "index.html").read_text(encoding="utf-8")
        hosts = sorted(p.name for p in site_results.iterdir() if p.is_dir())
        missing = [h for h in hosts if h not in page]
        if missing:
            problems.append(f"the hardware page does not name host(s) {missing}")
    if skipped:
        print(f"rehearsal: warning: skipped for lack of budget: {', '.join(skipped)} (the experiments ran at a "
              f"median {slowdown or 0:.1f}x their committed durations: this machine is shared)", file=sys.stderr)
    print(f"\n{log}\nrehearsal: plan {plan_s:.0f} s (budget {budget:g} s), {len(results)} results of {slug}; "
          f"site with hosts {sorted(p.name for p in site_results.iterdir() if p.is_dir())} built in {build_s:.0f} s "
          f"(primary {host}); everything is in {work}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generator.gpu_rehearsal", description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the interpreter of the torch-only venv")
    parser.add_argument("--budget", type=float, default=300.0, help="the plan's budget in seconds (default 300)")
    parser.add_argument("--margin", type=float, default=4.0,
                        help="time limit over predicted time (default 4: this host is shared, and the committed "
                             "durations were measured idle)")
    parser.add_argument("--work", type=Path, help="an empty folder to work in (default: a new temporary one)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="handbook-gpu-rehearsal-"))
    try:
        problems = rehearse(args.python, args.budget, args.margin, work)
    except RunError as exc:
        problems = [str(exc)]
    for p in problems:
        print(f"rehearsal: FAILED: {p}", file=sys.stderr)
    if not problems:
        print("rehearsal: passed")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
