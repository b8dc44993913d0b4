"""Progress display for the runner: a live table with rich, plain lines without it."""
from __future__ import annotations

import sys
import time
from typing import Protocol


class Progress(Protocol):
    def start(self, name: str) -> None: ...
    def finish(self, name: str, state: str, seconds: float, detail: str = "") -> None: ...
    def close(self) -> None: ...


class PlainProgress:
    """One line per event, for logs and for hosts without rich."""

    def __init__(self, names: list[str], stream=None) -> None:
        self.stream = stream or sys.stdout
        self.total = len(names)
        self.index = 0
        self.started = 0.0

    def start(self, name: str) -> None:
        self.index += 1
        self.started = time.monotonic()
        print(f"[{self.index}/{self.total}] {name}: running", file=self.stream, flush=True)

    def finish(self, name: str, state: str, seconds: float, detail: str = "") -> None:
        tail = f" ({detail})" if detail else ""
        print(f"[{self.index}/{self.total}] {name}: {state} in {seconds:.1f} s{tail}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A rich progress bar with a row per experiment: state and elapsed time."""

    def __init__(self, names: list[str]) -> None:
        from rich.progress import Progress as RP, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._rp = RP(SpinnerColumn(), TextColumn("{task.fields[name]:<24}"), TextColumn("{task.fields[state]}"),
                      TimeElapsedColumn(), transient=False)
        self._tasks = {n: self._rp.add_task(n, total=1, name=n, state="waiting", start=False) for n in names}
        self._rp.start()

    def start(self, name: str) -> None:
        self._rp.start_task(self._tasks[name])
        self._rp.update(self._tasks[name], state="running")

    def finish(self, name: str, state: str, seconds: float, detail: str = "") -> None:
        label = {"ok": "[green]ok", "cached": "[cyan]cached", "failed": "[red]FAILED"}.get(state, state)
        text = f"{label}[/] {seconds:.1f} s" + (f"  {detail}" if detail else "")
        task = self._tasks[name]
        self._rp.start_task(task)
        self._rp.update(task, state=text, completed=1)
        self._rp.stop_task(task)

    def close(self) -> None:
        self._rp.stop()


def make_progress(names: list[str], plain: bool = False) -> Progress:
    if not plain and sys.stdout.isatty():
        try:
            return RichProgress(names)
        except ImportError:
            pass
    return PlainProgress(names)
