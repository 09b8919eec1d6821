"""Progress as events: library code reports what it is doing through a callback, never prints.

A long step (profiling the node kinds, uploading parts, the demo's phases) is a *stage*.
Library functions take `on_progress: OnProgress | None` and report each change of a stage
as a `ProgressEvent`; `None` (the default) reports nothing. Rendering is the caller's
business: the CLI draws rich progress bars on stderr (planner/commands/_progress.py),
tests record the events. Events may come from worker threads (uploads run one thread per
node); `StageProgress` serialises them, so a callback sees each stage's events in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One change of a stage: `done` of `total` units (`total` 0: a note, no measure)."""

    stage: str  # what is under way: "profiling", "uploading parts", "demo"
    done: float  # units done so far in this stage
    total: float  # units in the stage; 0 for a note that only carries `message`
    message: str = ""  # detail for people ("2 node kind(s), 24 ranges"), may be empty
    unit: str = ""  # what done/total count ("B", "node kinds"); empty for plain counts

    @property
    def finished(self) -> bool:
        """True on the stage's last event (all units done)."""
        return self.total > 0 and self.done >= self.total


OnProgress = Callable[[ProgressEvent], None]


def note(on_progress: OnProgress | None, stage: str, message: str) -> None:
    """Report a note (a step without a measure, e.g. "3 agent(s) online")."""
    if on_progress is not None:
        on_progress(ProgressEvent(stage, 0, 0, message))


class StageProgress:
    """Counts one stage and reports every change (start, each `add`, `finish`) in order;
    the stage's last event is its only finished one (later calls report nothing)."""

    def __init__(self, on_progress: OnProgress | None, stage: str, total: float,
                 unit: str = "", message: str = "") -> None:
        self.on_progress, self.stage, self.unit = on_progress, stage, unit
        self.total, self.message = max(float(total), 1e-9), message
        self.done = 0.0
        self.ended = False
        self._lock = threading.Lock()  # workers add concurrently; events stay in order
        self._emit()

    def _emit(self) -> None:
        ev = ProgressEvent(self.stage, self.done, self.total, self.message, self.unit)
        self.ended = ev.finished
        if self.on_progress is not None:
            self.on_progress(ev)

    def add(self, amount: float) -> None:
        """Move by `amount` units (negative when a transfer starts over)."""
        with self._lock:
            if not self.ended:
                self.done = min(self.total, max(0.0, self.done + amount))
                self._emit()

    def finish(self, message: str = "") -> None:
        """The stage is complete: a last event with done == total (unless one was sent)."""
        with self._lock:
            if not self.ended:
                self.done = self.total
                self.message = message or self.message
                self._emit()
