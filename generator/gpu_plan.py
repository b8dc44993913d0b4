"""``handbook gpu-plan``: every experiment on a GPU host inside a time budget, the results back in one archive.

A GPU host is lent in short windows: about 15 minutes in all, start-up included; one command at a
time, each at most 10 minutes; at most 8 files come back, out of one folder. So the plan:

- describes the host once (one torch subprocess), then runs each experiment through the runner's
  own per-experiment run (``runner.run(only=[name])``: a fresh subprocess, the cache, the atomic
  write, ``<name>.failed.json`` on failure), in the ``gpu`` profile, in the order the site needs
  them most (``STEPS``);
- keeps a global budget (``--budget``, default 420 s, counted from its own start, the describe
  step included) and a budget per experiment, which is the runner's timeout for it (never more
  than what is left). An experiment whose predicted time is more than what is left is *skipped*:
  a line in the log, no result and no ``.failed.json``; the plan goes on to the next one, which
  may still fit;
- after every step rewrites one archive, ``results.tgz``, in the output folder (``--out`` or
  ``$OUT``), through a temporary file and a rename: the host's whole results folder
  ``results/<slug>/`` and the log, one line per experiment (name, state ok / cached / failed /
  skipped, seconds, budget). The log is written beside it too. A plan killed at its limit leaves
  a valid archive of everything that finished;
- if the budget allows, runs the CUDA-only tests with the host's own pytest (``pytest -m cuda``
  over the test files that hold them, which import only torch, numpy, pytest and this repository
  at module level); their output goes into the archive and beside it.

Standard library only, like the runner: the GPU host has python3, torch, numpy and pytest, no venv
and none of our pins. Start it with one line from the repository root:
``make gpu-reference OUT=<folder>`` (or ``PYTHONPATH=. python3 -m generator gpu-plan --out <folder>``).
``--dry-run`` prints the plan's table without running anything.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from generator import envelope, runner
from generator.errors import RunError, one_line

PROFILE = "gpu"
GLOBAL_BUDGET_S = 420.0
MARGIN = 2  # an experiment's budget (its timeout) is twice its predicted time
ARCHIVE = "results.tgz"
LOG = "gpu-plan.log"
TESTS_LOG = "gpu-plan-pytest.txt"
DETAIL_CHARS = 240


@dataclass(frozen=True)
class Step:
    name: str
    predicted_s: float  # on one H200, this step's fixed costs included
    budget_s: float  # its time limit: MARGIN x predicted
    why: str


# How the predictions were sized. Rates of this repository's CPU host (committed results,
# results/cpu-amd-epyc-2c-24gb/): best matmul 175 GFLOP/s fp32 and 429 GFLOP/s bf16, copy 22.7 GB/s
# (64 MiB buffers); its quick profiles take 3.3-13.6 s each (81 s in all), about 2 s of each being a
# fresh interpreter and `import torch`. One H200 (measured on such hosts): 790 TFLOP/s bf16 matmul
# (1,840x this CPU) and 4.3 TB/s device copy (190x); fp32 without TF32 about 60 TFLOP/s (datasheet
# 67; 340x). Fixed costs on the GPU host: every experiment is a fresh interpreter that imports the
# CUDA build of torch and creates a CUDA context, about 5 s; the describe step runs once, predicted
# 20 s because the first `import torch` reads the CUDA libraries from a cold disk (21.6 s for the CPU
# build on this host, cold). Small ops are launch-bound on a GPU: a kernel launch (5-10 us) costs
# about what a tiny op costs on this CPU, so a quick-sized workload takes about as long there as here,
# and size buys GPU time only where FLOPs or bytes dominate. Budget = MARGIN x predicted. The
# predictions (the describe step and the tests included) add up to at most 85 % of the global budget
# (tests/test_gpu_plan.py checks it): everything still runs if all take 1.15x their prediction, or if
# one of them takes its whole 2x; past that the plan skips from the end of the table, where the least
# needed experiments are. At 20 experiments the table is nearly full (a fresh interpreter, torch and a
# CUDA context cost ~5 s each, 100 s in all). A new experiment needs a row here, and room: trim a profile, or leave the tail to a
# second call (a rerun reuses what the first one measured, if the same machine is still there).
DESCRIBE_PREDICTED_S = 20.0
STEPS: tuple[Step, ...] = (
    # experiment, predicted s, budget s, why
    Step("hardware", 20, 40,
         "full's 18 matmul shapes x 4 dtypes at 0.1 s each, ~6 calls a shape: 26.6 TFLOP a pass is 0.4 s at "
         "~60 TFLOP/s fp32, 0.03 s at 790 bf16, so ~11 s of timing floors; 7 copies up to 4 GiB (2 ms each at "
         "4.3 TB/s) ~1 s; the 134 M-param AdamW step (6.6 TFLOP fp32, 0.11 s; CPU init 0.8 s) ~2.5 s; +5 fixed"),
    Step("named_models", 12, 24,
         "= full: 4 set-ups of a 134 M-param GPT, each built on the CPU (0.8 s here) and stepped twice over 4 k "
         "tokens (3.3 TFLOP fp32, ~0.06 s) ~6 s; +5 fixed (quick here: 3.6 s)"),
    Step("sharding", 13, 26,
         "world size 1 on the GPU (NCCL init ~3 s), 2 as CPU gloo ranks: spawned interpreters importing torch, "
         "~4-5 s (quick's 2-rank world is ~4 s of its 7.5 s here); the 3.7 M-param MLP's steps are negligible; "
         "+5 fixed. World sizes 4 and 8 (more interpreters, CPU ranks anyway) are left to the full profile"),
    Step("parallelism", 6, 12,
         "its gpu profile: a 0.2 M-param GPT on 2 forked CPU gloo ranks (one GPU holds one NCCL rank): TP, TP+SP and "
         "3 pipeline schedules, ~3 s here with DTensor's first-call sharding propagation; importing DTensor and "
         "pipelining ~2 s here; the one-device step on the GPU; the 2 x 2 mesh (4 ranks) is left to quick/full"),
    Step("estimator_validation", 30, 60,
         "its gpu profile: 17 cases of transformers' GPT-2, Llama, Qwen2, Gemma 2 and Mixtral classes at GPT-2 "
         "small's width, seq 1024, each built on the CPU (124-323 M params: 1.5-3.4 s on this 2-core CPU, ~1 s "
         "with the host's cores) and stepped twice under the trackers (3 TFLOP fp32, ~50 ms) ~20 s; import "
         "transformers ~3 s (2.1 s here); +5 fixed"),
    Step("finetune_memory", 11, 22,
         "its gpu profile: import transformers ~3 s; without PEFT on the host only full fine-tuning and its 3 "
         "offload variants (save_on_cpu, AdamW on the CPU), each a 74 M-param Llama built on the CPU (~0.5 s with "
         "the host's cores) and stepped twice (~1 TFLOP bf16, ms); with PEFT 5 more builds ~3 s; +5 fixed"),
    Step("optimizer_state", 12, 24,
         "27 builds (9 optimizers x 3 implementations) of a 17 M-param GPT (0.13 s CPU init here) with 2 tracked "
         "steps of 2 k tokens (0.2 TFLOP fp32, launch- and tracker-bound ~50 ms) ~5 s, zero_grad and precision "
         "~1 s; +5 fixed. full would spend ~25 s on CPU init alone (28 x 134 M params)"),
    Step("activation_memory", 10, 20,
         "= full: ~36 hooked forwards of one 1024-wide layer up to seq 8192 (34 GB of bf16 scores and masks: "
         "~10 ms at 4.3 TB/s; 1 TFLOP: ~2 ms), hook-bound ~4 s, 3 small GPT steps; +5 fixed (quick here: 4.0 s)"),
    Step("checkpointing", 18, 36,
         "9 layers x 256 wide, seq 512, 8 M params: 6 policies x (~5 steps + ~10 batch-search probes of a build "
         "and 2 steps up to batch ~40, 1 TFLOP fp32 ~20 ms) ~6 s, launch-bound like quick's ~11 s of work here; "
         "timing 0.3 s x 8 ~3 s; the search budget is 1.5 % of the card (~2 GB): at 90 % it would step batches "
         "in the thousands for minutes; +5 fixed"),
    Step("mixed_precision", 10, 20,
         "4 layers x 512 wide, seq 512, vocab 8192 (17 M params, 0.4 TFLOP fp32 a step ~10 ms): 20 training "
         "steps, 52 cast sweeps over 17 M gradients (2 sorts each), 3 autocast modes timed 0.3 s, 48 GradScaler "
         "steps ~4 s; +5 fixed (quick here: 5.7 s)"),
    Step("activation_offload", 15, 30,
         "4 layers x 1024 wide, seq 512, batch 8: 3 GB of saved activations a step (counted here: 375 MB per "
         "sample); 3 variants (in place, memory-mapped files, pinned host memory), each built (59 M params on the "
         "CPU, 0.4 s) and stepped ~5 times in interleaved rounds: 3 GB to files or pinned memory and back, ~1 s "
         "a step at page-cache and PCIe speeds, ~9 s; +5 fixed. (8 layers at seq 1024 would save ~16 GB a step.)"),
    Step("memory_timeline", 12, 24,
         "its gpu profile: 8 set-ups of a 2-layer, 10.5 M-param GPT (quick's op count: quick takes 7.6 s here, 2 s "
         "of it imports); 11 steps recorded by the profiler, whose analysis is Python on the host's CPU, ~3.5 s; the "
         "tracker's steps ~0.5 s; the CUDA allocator's history and snapshot (a file beside the result), expandable "
         "segments, empty_cache ~3 s; +5 fixed"),
    Step("token_budget", 18, 36,
         "its gpu profile: the largest batch at 5 sequence lengths (128-2048) of a 4 x 512 GPT under 2 % of the "
         "card (~2.8 GB): ~8 probes a length, each a build and 2 steps, ~1 s a length; padding against packing "
         "over 256 documents, timed 0.3 s, ~3 s; +5 fixed"),
    Step("activation_compression", 22, 44,
         "its gpu profile: 5 storage formats x 600 Adam steps of a 4 x 128 transformer over the digits, every "
         "saved tensor packed and unpacked by hooks: launch-bound, ~5 ms a step, ~15 s; the gradient checks per "
         "kind of activation ~2 s; +5 fixed"),
    Step("sac_budget", 30, 60,
         "4 layers x 512 wide, seq 512: one torch.compile (aot_eager partitioner) per budget and per hand-written "
         "policy, 3 + 2, Python on the host's CPU: 3-6 s each for quick's 2 layers on this (shared) CPU, ~4 s "
         "each there, ~20 s, with dynamo's import ~3 s; eager reference and interleaved timing 0.3 s x 6 ~2 s; "
         "+5 fixed"),
    Step("optimizer_8bit", 6, 12,
         "bitsandbytes is not on the GPU host: the fp32 AdamW side only (its import error recorded), 200 steps of an "
         "85 k-param MLP over the digits, launch-bound ~0.4 s, one step under the tracker and the profiler ~0.3 s, "
         "timing 0.3 s; +5 fixed (quick here, with the 8-bit side: 18.6 s on the shared 2-core CPU)"),
    Step("weight_decay", 11, 22,
         "= full: 5 optimizers x 2000 steps x 2 launch-bound updates of tiny tensors (~250 us a step) ~2.5 s, "
         "164 M noise samples drawn on the CPU ~1.5 s, a 110 M-param transformer built on the CPU ~0.7 s; +5 fixed "
         "(quick here: 4.5 s)"),
    Step("grad_accumulation", 11, 22,
         "= full, timing 0.2 s: 6 micro-batch sizes of an 8 x 2048 MLP over 8192 samples (52 GFLOP a "
         "256-sample micro-step, ~1.5 ms) ~2.5 s, CPU init of 34 M params a build ~2 s; +5 fixed "
         "(quick here: 4.2 s)"),
    Step("optimizer_lifecycle", 7, 14,
         "1024 -> 4096 -> 1024 MLP (8.4 M params; full's 134 M would spend seconds in state_dict copies); "
         "a few steps and state_dict round trips per optimizer ~2 s; +5 fixed (quick here: 3.3 s)"),
    Step("fused_update", 8, 16,
         "MLP of 4 x 2048 (12.7 M params), batch 256, 5 steps compared per optimizer: launch-bound ~3 s; "
         "+5 fixed (quick here: 3.8 s)"),
    Step("quantized_graph", 7, 14,
         "= quick: its integer emulation runs on the CPU whatever the device (float64, per-channel loops); "
         "~2 s on the host's CPU; +5 fixed (quick here: 3.5 s)"),
    Step("qas", 8, 16,
         "channels 16-32-64, 200 steps per graph: 60 + 3 x 200 steps of a tiny CNN, launch-bound ~2 ms each "
         "~1.5 s, evaluations ~1 s; +5 fixed (quick here: 3.9 s)"),
    Step("sparse_update", 15, 30,
         "= quick: ~1,200 fine-tuning steps of a tiny MobileNetV2-like net, launch-bound at about this CPU's "
         "per-op cost: ~10 s like here (11.5 s); +5 fixed"),
)
# The CUDA-only tests: pytest start and collection (torch and 8 experiment modules) ~6 s, CUDA
# context ~2 s, 8 tests on test-sized configs ~10 s.
CUDA_TESTS = Step("cuda-tests", 25, 50, "pytest -m cuda over the files that hold CUDA tests")
# The files that hold tests marked `cuda`: tests/conftest.py marks every test skipped with a reason
# that starts "needs CUDA" (NEEDS_CUDA there), and the plan finds their files by that decorator. The GPU
# host lacks pytest-xdist, hypothesis, matplotlib and mkdocs; these files import none of them at module
# level (tests/test_gpu_plan.py checks), and pytest collects only them.
CUDA_SKIP = re.compile(r'^@pytest\.mark\.skipif\(.*reason=f?"(needs CUDA|\{NEEDS_CUDA\})', flags=re.M)


def cuda_test_files(root: Path) -> tuple[str, ...]:
    """``tests/test_*.py`` files under ``root`` with a test that skips without CUDA, as paths relative to it."""
    return tuple(f"tests/{p.name}" for p in sorted((Path(root) / "tests").glob("test_*.py"))
                 if CUDA_SKIP.search(p.read_text(encoding="utf-8", errors="replace")))


# ------------------------------------------------------------------------------------------ files


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file beside it and a rename: never half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dir_entry(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
    return info


def archive_bytes(results_dir: Path, slug: str | None, files: dict[str, bytes]) -> bytes:
    """A gzipped tar of ``results/<slug>/`` (every result file in it) and ``files`` (name -> text) at its top."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        if slug:
            tar.addfile(_dir_entry("results"))
            tar.addfile(_dir_entry(f"results/{slug}"))
            host = Path(results_dir) / slug
            for path in sorted(host.iterdir()) if host.is_dir() else ():
                if path.is_file() and not path.name.startswith("."):  # not an in-flight temporary file
                    tar.add(path, arcname=f"results/{slug}/{path.name}", recursive=False)
                elif path.is_dir() and path.name.endswith(runner.ARTIFACTS_SUFFIX) and not path.name.startswith("."):
                    tar.addfile(_dir_entry(f"results/{slug}/{path.name}"))  # a result's files (runner.py)
                    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.is_symlink()):
                        tar.add(f, arcname=f"results/{slug}/{path.name}/{f.name}", recursive=False)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def read_archive(path: Path) -> tuple[str, dict[str, dict], str]:
    """Check an archive the plan wrote; return (slug, {file name: envelope}, log text).

    Every member must lie under ``results/<one slug>/`` or be one of the plan's logs, and every
    result in it must be a valid envelope of that host; anything else is a ``RunError``.
    """
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            members = tar.getmembers()
            slugs = {m.name.split("/")[1] for m in members if m.name.startswith("results/")}
            if len(slugs) != 1:
                raise RunError(f"{path}: holds results of {len(slugs)} hosts ({', '.join(sorted(slugs))}), not one")
            slug = slugs.pop()
            results, log = {}, ""
            for m in members:
                if m.name in ("results", f"results/{slug}") and m.isdir():
                    continue
                if m.name in (LOG, TESTS_LOG):
                    if m.name == LOG:
                        log = tar.extractfile(m).read().decode("utf-8")
                    continue
                parent, _, name = m.name.rpartition("/")
                top, _, folder = parent.rpartition("/")
                if (m.isdir() and parent == f"results/{slug}" and name.endswith(runner.ARTIFACTS_SUFFIX)) or (
                        m.isfile() and top == f"results/{slug}" and folder.endswith(runner.ARTIFACTS_SUFFIX)):
                    continue  # a result's files, beside it (generator/runner.py)
                if parent != f"results/{slug}" or not m.isfile() or not name.endswith(".json"):
                    raise RunError(f"{path}: unexpected member {m.name!r}")
                try:
                    obj = json.loads(tar.extractfile(m).read().decode("utf-8"))
                except ValueError as exc:
                    raise RunError(f"{path}: {m.name} is not JSON ({exc})") from None
                results[name] = envelope.validate(obj, f"{path}:{m.name}")
                if obj["host"]["slug"] != slug:
                    raise RunError(f"{path}: {m.name} was measured on host {obj['host']['slug']!r}")
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise RunError(f"{path}: not a readable archive ({exc})") from None
    if not log:
        raise RunError(f"{path}: holds no {LOG}")
    return slug, results, log


# ------------------------------------------------------------------------------------------ the log


class PlanLog:
    """One line per step, printed as it comes and rewritten whole (with the archive) after each."""

    def __init__(self, header: str) -> None:
        self.lines = [header]
        print(header, flush=True)

    def add(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def log_line(name: str, state: str, seconds: float, budget: float | None = None, predicted: float | None = None,
             detail: str = "") -> str:
    parts = [f"{name:<24}", f"{state:<8}", f"{seconds:6.1f} s"]
    if budget is not None:
        parts.append(f"budget {budget:4.0f} s")
    if predicted is not None:
        parts.append(f"predicted {predicted:4.0f} s")
    detail = one_line(detail)[:DETAIL_CHARS]
    return "  ".join(parts) + (f"  {detail}" if detail else "")


# ------------------------------------------------------------------------------------------ the plan


def predictions_from(results_dir: Path | None, slug: str, profile: str) -> dict[str, float]:
    """``{experiment: duration_s}`` of this host's good results in ``profile`` in an earlier results folder."""
    if results_dir is None or not (Path(results_dir) / slug).is_dir():
        return {}
    out = {}
    for path in sorted((Path(results_dir) / slug).glob("*.json")):
        if path.name.endswith(".failed.json"):
            continue
        try:
            env = envelope.load(path)
        except envelope.ResultError:
            continue
        if env["status"] == "ok" and env["profile"] == profile:
            out[env["experiment"]] = float(env["duration_s"])
    return out


def ordered_steps(discovered: list[str], steps: tuple[Step, ...] = STEPS) -> list[Step]:
    """The table's experiments in its order, then any the table lacks (predicted as the largest row)."""
    known = {s.name for s in steps}
    worst = max(steps, key=lambda s: s.predicted_s) if steps else Step("", 30, 60, "")
    extra = [Step(n, worst.predicted_s, worst.budget_s, "not in the plan's table: the largest prediction")
             for n in sorted(set(discovered) - known)]
    return [s for s in steps if s.name in discovered] + extra


@dataclass
class Plan:
    out: Path
    budget_s: float = GLOBAL_BUDGET_S
    profile: str = PROFILE
    results_dir: Path = runner.DEFAULT_RESULTS
    root: Path = runner.REPO
    python: str = sys.executable
    device: str | None = None
    predict_from: Path | None = None
    tests: bool = True
    force: bool = False
    margin: float = MARGIN
    steps: tuple[Step, ...] = STEPS
    test_files: tuple[str, ...] | None = None  # default: cuda_test_files(root)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.out, self.results_dir, self.root = Path(self.out), Path(self.results_dir), Path(self.root)
        self.slug: str | None = None
        self.files: dict[str, bytes] = {}
        self.failed: list[str] = []
        self.started = 0.0
        self.log = PlanLog(f"# gpu-plan: profile {self.profile}, budget {self.budget_s:g} s, started "
                           f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")

    def left(self) -> float:
        return self.budget_s - (self.clock() - self.started)

    def save(self) -> None:
        """Rewrite the log beside the archive, then the archive (each a temporary file and a rename)."""
        self.files[LOG] = self.log.text().encode("utf-8")
        write_atomic(self.out / LOG, self.files[LOG])
        if TESTS_LOG in self.files:
            write_atomic(self.out / TESTS_LOG, self.files[TESTS_LOG])
        write_atomic(self.out / ARCHIVE, archive_bytes(self.results_dir, self.slug, self.files))

    def execute(self) -> int:
        """Run the plan; 0 when nothing failed (skips included), 1 otherwise. The archive is saved whatever happens."""
        if not (isinstance(self.budget_s, (int, float)) and math.isfinite(self.budget_s) and self.budget_s > 0):
            raise RunError(f"--budget must be a positive number of seconds, not {self.budget_s!r}")
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin >= 1):
            raise RunError(f"--margin must be a number of at least 1, not {self.margin!r}")
        if self.out.exists() and not self.out.is_dir():
            raise RunError(f"{self.out}: --out must be a folder, and this is a file")
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob(".*.tmp"):  # a temporary file of a plan killed while writing
            stale.unlink(missing_ok=True)
        self.started = self.clock()
        try:
            self._describe()
            for step in ordered_steps(list(self.described.experiments), self.steps):
                self._experiment(step)
            self._tests()
        except BaseException as exc:
            what = "interrupted" if isinstance(exc, (KeyboardInterrupt, runner.Interrupted)) else f"stopped: {exc}"
            self.log.add(f"# {one_line(what)}; the archive holds what finished")
            self.save()
            raise
        elapsed = self.clock() - self.started
        self.log.add(f"# total {elapsed:.1f} s of the {self.budget_s:g} s budget"
                     + (f"; failed: {', '.join(self.failed)}" if self.failed else "; nothing failed"))
        self.save()
        return 1 if self.failed else 0

    def _describe(self) -> None:
        t0 = self.clock()
        try:
            self.described = runner.describe(self.device, self.python, self.root)
        except RunError as exc:
            self.log.add(log_line("describe", "failed", self.clock() - t0, detail=str(exc)))
            raise
        host, env = self.described.host, self.described.env
        self.slug = host["slug"]
        self.log.add(log_line("describe", "ok", self.clock() - t0, predicted=DESCRIBE_PREDICTED_S,
                              detail=f"host {self.slug} ({host['device']}), device {self.described.device}, "
                                     f"torch {env['torch']}, cuda {env['cuda']}, python {env['python']}"))
        if self.profile == PROFILE and not self.described.device.startswith("cuda"):
            raise RunError(f"device {self.described.device!r} is not CUDA: the {PROFILE} profile is sized for an "
                           f"H200; rehearse on a CPU with --profile quick (make gpu-reference-rehearsal)")
        self.earlier = predictions_from(self.predict_from, self.slug, self.profile)
        if self.predict_from is not None:
            self.log.add(f"# predictions: {len(self.earlier)} from earlier {self.profile} results of {self.slug} in "
                         f"{self.predict_from}, the rest from the plan's table")
        self.save()

    def _experiment(self, step: Step) -> None:
        predicted, budget = step.predicted_s, step.budget_s * self.margin / MARGIN
        if step.name in self.earlier:  # this host's own earlier run of it, in this profile
            predicted = self.earlier[step.name]
            budget = max(self.margin * predicted, predicted + 20.0)
        left = self.left()
        if predicted > left:
            self.log.add(log_line(step.name, "skipped", 0.0, budget, predicted,
                                  f"predicted {predicted:.0f} s, {max(left, 0):.0f} s left"))
            self.save()
            return
        t0 = self.clock()
        try:
            outcome = runner.run(results_dir=self.results_dir, only=[step.name], force=self.force,
                                 profile=self.profile, device=self.described.device, timeout_s=min(budget, left),
                                 python=self.python, plain=True, root=self.root, described=self.described)[0]
        except runner.Interrupted:
            self.log.add(log_line(step.name, "interrupted", self.clock() - t0, budget, predicted))
            raise
        if outcome.state == "failed":
            self.failed.append(step.name)
        self.log.add(log_line(step.name, outcome.state, outcome.seconds, budget, predicted,
                              (outcome.error or "").splitlines()[0] if outcome.error else ""))
        self.save()

    def _tests(self) -> None:
        step = CUDA_TESTS
        budget = step.budget_s * self.margin / MARGIN
        if not self.tests:
            self.log.add(log_line(step.name, "skipped", 0.0, step.budget_s, step.predicted_s, "--no-tests"))
            return
        left = self.left()
        if step.predicted_s > left:
            self.log.add(log_line(step.name, "skipped", 0.0, step.budget_s, step.predicted_s,
                                  f"predicted {step.predicted_s:.0f} s, {max(left, 0):.0f} s left"))
            return
        files = [f for f in (self.test_files or cuda_test_files(self.root)) if (self.root / f).is_file()]
        if not files:
            self.log.add(log_line(step.name, "skipped", 0.0, budget, step.predicted_s, "no CUDA test files here"))
            return
        cmd = [self.python, "-m", "pytest", "-q", "-m", "cuda", *files, "-p", "no:cacheprovider"]
        t0 = self.clock()
        state, output = run_tests(cmd, self.root, min(budget, left))
        seconds = self.clock() - t0
        self.files[TESTS_LOG] = (f"$ {' '.join(cmd[1:])}\n{output}").encode("utf-8")
        tail = next((ln for ln in reversed(output.splitlines()) if ln.strip()), "")
        if state == "failed":
            self.failed.append(step.name)
        self.log.add(log_line(step.name, state, seconds, budget, step.predicted_s, tail))


def run_tests(cmd: list[str], root: Path, timeout_s: float) -> tuple[str, str]:
    """Run pytest in its own process group; ("ok" | "failed", its output). A timeout kills the group."""
    proc = subprocess.Popen(cmd, cwd=root, env=runner.child_env(root), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=runner._die_with_parent)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return "failed", f"{output}\n(timed out after {timeout_s:.0f} s and was killed)\n"
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise
    # 0: every selected test passed or was skipped; 5: none selected, which means the marker is missing
    return ("ok" if proc.returncode == 0 else "failed"), output + (
        f"\n(pytest exited with status {proc.returncode})\n" if proc.returncode else "")


def table(steps: tuple[Step, ...] = STEPS, budget_s: float = GLOBAL_BUDGET_S) -> str:
    """The plan as a Markdown table, with its totals against the global budget."""
    rows = ["| # | experiment | predicted s | budget s | why |", "|---|---|---|---|---|",
            f"| 0 | describe (once) | {DESCRIBE_PREDICTED_S:g} | — | one torch subprocess; a cold `import torch` |"]
    rows += [f"| {i} | {s.name} | {s.predicted_s:g} | {s.budget_s:g} | {s.why} |" for i, s in enumerate(steps, 1)]
    rows.append(f"| {len(steps) + 1} | {CUDA_TESTS.name} | {CUDA_TESTS.predicted_s:g} | {CUDA_TESTS.budget_s:g} | "
                f"{CUDA_TESTS.why}; only if that much is left |")
    predicted = DESCRIBE_PREDICTED_S + sum(s.predicted_s for s in steps)
    budgets = DESCRIBE_PREDICTED_S + sum(s.budget_s for s in steps)
    rows.append(f"\nPredicted: {predicted:g} s for the describe step and the experiments, "
                f"{predicted + CUDA_TESTS.predicted_s:g} s with the tests; with every experiment at its budget: "
                f"{budgets:g} s. Global budget: {budget_s:g} s.")
    return "\n".join(rows)


def main(out: Path | None, dry_run: bool = False, **options) -> int:
    if dry_run:
        print(table(budget_s=options.get("budget_s", GLOBAL_BUDGET_S)))
        return 0
    if out is None:
        raise RunError("name the folder for results.tgz and the log: --out DIR (or the OUT environment variable)")
    return Plan(out=out, **options).execute()
