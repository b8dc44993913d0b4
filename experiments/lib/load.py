"""How busy the CPU was while an experiment measured: the runnable tasks that competed with it.

A throughput measured on a busy machine is a lower bound, and on a shared CPU
an OpenMP kernel whose worker thread is descheduled can be slower by orders of
magnitude. ``LoadSampler`` (measuring side) counts the runnable tasks in a
background thread; ``busy`` (deriving side, used by ``summarize``) decides
from its figures whether the measurement should be read as a lower bound.

Standard library only: ``summarize`` imports ``busy`` without torch.
"""
from __future__ import annotations

import threading
from pathlib import Path

LOADAVG = "/proc/loadavg"


class LoadSampler:
    """Counts the tasks competing for the CPU while a block runs (Linux ``/proc/loadavg``).

    A background thread reads the kernel's count of runnable tasks (the
    numerator of the fourth field, ``running/total``) every ``period_s``.
    ``figures`` subtracts this process's own compute threads and the sampler
    itself from each sample. Where the file cannot be read (not Linux), there
    are no samples and the figures say ``measured: False``.
    """

    def __init__(self, period_s: float = 0.05, path: str = LOADAVG) -> None:
        self.period_s = period_s
        self.samples: list[int] = []
        self._path = Path(path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _read(self) -> int | None:
        try:
            return int(self._path.read_text(encoding="ascii").split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            n = self._read()
            if n is None:
                return
            self.samples.append(n)
            self._stop.wait(self.period_s)

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self, threads: int, cores: int) -> dict:
        """What was sampled, with ``threads`` compute threads of this process on ``cores`` cores."""
        if not self.samples:
            return {"measured": False, "cores": cores}
        own = threads + 1  # this process's compute threads and the sampler itself
        competing = [max(0, n - own) for n in self.samples]
        return {
            "measured": True,
            "period_ms": self.period_s * 1e3,
            "samples": len(self.samples),
            "runnable_mean": sum(self.samples) / len(self.samples),
            "runnable_max": max(self.samples),
            # on average, at least this many other tasks wanted a core
            "competing_tasks_mean": sum(competing) / len(competing),
            "cores": cores,
        }


BUSY_MARGIN_TASKS = 0.5  # competing work beyond the spare cores, in tasks, that makes a host busy


def busy(competing_tasks_mean: float, threads: int, cores: int, margin: float = BUSY_MARGIN_TASKS) -> bool:
    """Whether more than ``margin`` of a task, on average, wanted the cores this process's threads left free.

    With every core in use (``threads == cores``) even one competing task halves a
    multi-threaded kernel: each parallel region waits for its slowest thread.
    """
    return competing_tasks_mean > max(0, cores - threads) + margin
