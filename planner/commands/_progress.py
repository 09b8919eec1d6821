"""The CLI's rendering of library progress events (planner/fleet/progress.py) on stderr.

Progress is drawn only when stderr is a terminal, or when asked (`tilefleet --progress`);
`--no-progress` turns it off. On a terminal each stage is a rich progress bar that is
cleared when the command ends, so a command that fails leaves exactly its one error line
on stderr. Asked for on something else (a log file), each finished stage and each note is
one plain line. stdout is never touched: `--json` stays one JSON document.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from planner.fleet.progress import OnProgress, ProgressEvent


class BarRenderer:
    """Rich bars on a terminal: one bar per running stage, notes printed as lines.

    The bars are on screen only while a stage runs: when the last running stage finishes
    they are cleared, so what the command prints on stdout afterwards (its table, its
    error) is not drawn over. stdout is never redirected (it may be a pipe).
    """

    def __init__(self, console: Console) -> None:
        self.t0 = time.monotonic()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[amount]}"), TimeElapsedColumn(),
                                 console=console, transient=True, redirect_stdout=False,
                                 redirect_stderr=False)
        self.tasks: dict[str, TaskID] = {}
        self.shown = False
        self._lock = threading.Lock()

    def __call__(self, ev: ProgressEvent) -> None:
        with self._lock:
            if ev.total <= 0:
                self.progress.console.print(f"[{time.monotonic() - self.t0:5.1f} s] "
                                            f"{ev.message}", highlight=False)
                return
            if not self.shown:
                self.progress.start()
                self.shown = True
            label = f"{ev.stage} ({ev.message})" if ev.message else ev.stage
            task = self.tasks.get(ev.stage)
            if task is None:
                task = self.tasks[ev.stage] = self.progress.add_task(label, total=ev.total,
                                                                     amount="")
            self.progress.update(task, completed=ev.done, total=ev.total, description=label,
                                 amount=amount(ev))
            if ev.finished:
                self.progress.remove_task(self.tasks.pop(ev.stage))
                if not self.tasks:
                    self.close()

    def close(self) -> None:
        """Clear the bars (a no-op when none are shown)."""
        if self.shown:
            self.progress.stop()
            self.shown = False


def amount(ev: ProgressEvent) -> str:
    """'3.1/14.2 MB' for bytes, '1/2 node kinds' for counts."""
    if ev.unit == "B":
        return f"{ev.done / 1e6:.1f}/{ev.total / 1e6:.1f} MB"
    return f"{ev.done:.0f}/{ev.total:.0f} {ev.unit}".rstrip()


class LineRenderer:
    """Plain lines when progress is asked for off a terminal: finished stages and notes."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.t0 = stream, time.monotonic()
        self.started: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, ev: ProgressEvent) -> None:
        with self._lock:
            now = time.monotonic()
            if ev.total <= 0:
                self.stream.write(f"[{now - self.t0:5.1f} s] {ev.message}\n")
            else:
                t = self.started.setdefault(ev.stage, now)
                if not ev.finished:
                    return
                del self.started[ev.stage]
                detail = f" ({ev.message})" if ev.message else ""
                self.stream.write(f"{ev.stage}{detail}: {amount(ev)} in {now - t:.1f} s\n")
            self.stream.flush()


@contextmanager
def rendered(asked: bool | None, stream: TextIO | None = None) -> Iterator[OnProgress | None]:
    """The callback commands pass to library code; None when progress is off.

    `asked` None: on when `stream` (default stderr) is a terminal; True/False: forced.
    Bars are cleared when the block ends, before the CLI prints any error.
    """
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    if asked is False or (asked is None and not tty):
        yield None
        return
    if not tty:
        yield LineRenderer(stream)
        return
    bars = BarRenderer(Console(file=stream))
    try:
        yield bars
    finally:
        with bars._lock:  # a worker may still report while the command unwinds
            bars.close()

