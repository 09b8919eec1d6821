"""Counters and per-stage timings the agent publishes on `nodes/<id>/metrics`."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any


class Counters:
    """Node-wide counters; errors are counted by code (e.g. bad_frame, unknown_deployment)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.errors: Counter[str] = Counter()
        self.frames_in = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1

    def received(self, nbytes: int) -> None:
        with self._lock:
            self.frames_in += 1
            self.bytes_in += nbytes

    def sent(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_out += nbytes

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"errors": dict(self.errors), "frames_in": self.frames_in,
                    "bytes_in": self.bytes_in, "bytes_out": self.bytes_out}


def _pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


class StageStats:
    """Frames, errors and run/turnaround times (seconds) of one stage.

    `run_total_s` is the cumulative run time of every frame so far: with `frames` it
    lets a reader take the mean run time between any two snapshots (Δtotal / Δframes),
    e.g. over one metrics interval, so a slow-down shows in the next message instead of
    after the window of the percentiles and `run_mean_s` (last `window` frames) turns
    over. Cumulative rather than reset per snapshot, so any number of readers can
    snapshot independently and a lost message only widens the next interval.

    `busy_total_s` is the cumulative time the stage spent on its frames: from the later
    of a frame's arrival and the previous frame's end, to its end (queue waits and idle
    gaps left out; gathering, running and sending in). It is what a frame costs the
    node: a CPU quota stalls the whole process, also outside the invoke (receiving,
    sending, Python), so on a throttled node the busy time grows like its lost capacity
    while the run time alone grows much less (measured: 2.7x run time vs 10x capacity at
    10 % of a core on a loaded host).
    """

    def __init__(self, window: int = 256) -> None:
        self._lock = threading.Lock()
        self.frames = 0
        self.errors = 0
        self.bytes_out = 0
        self.run_total_s = 0.0
        self.busy_total_s = 0.0
        self._last_end = float("-inf")
        self._run: deque[float] = deque(maxlen=window)
        self._turn: deque[float] = deque(maxlen=window)

    def record(self, run_s: float, turnaround_s: float, bytes_out: int,
               end: float | None = None) -> None:
        """One frame done at `end` (time.perf_counter(), the clock of turnaround_s)."""
        end = time.perf_counter() if end is None else end
        with self._lock:
            self.frames += 1
            self.bytes_out += bytes_out
            self.run_total_s += run_s
            # busy from arrival, or from the previous frame's end if it had to wait
            self.busy_total_s += max(0.0, end - max(end - turnaround_s, self._last_end))
            self._last_end = end
            self._run.append(run_s)
            self._turn.append(turnaround_s)

    def error(self) -> None:
        with self._lock:
            self.errors += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            run, turn = sorted(self._run), sorted(self._turn)
            return {"frames": self.frames, "errors": self.errors, "bytes_out": self.bytes_out,
                    "run_p50_s": _pct(run, 0.5), "run_p95_s": _pct(run, 0.95),
                    "run_mean_s": sum(run) / len(run) if run else 0.0,
                    "run_total_s": self.run_total_s, "busy_total_s": self.busy_total_s,
                    "turnaround_p50_s": _pct(turn, 0.5)}
