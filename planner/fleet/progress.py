"""Progress bars on stderr for profiling and transfers (plain lines when not a terminal)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    """A thread-safe counter drawn as `label [#####.....] 12.3/45.6 MB`; `done()` ends it."""

    def __init__(self, label: str, total: float, unit: str = "", enabled: bool = True,
                 stream: TextIO | None = None, scale: float = 1.0) -> None:
        self.label, self.total, self.unit, self.scale = label, max(total, 1e-9), unit, scale
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.value = 0.0
        self._lock = threading.Lock()
        self._last = 0.0
        self._t0 = time.monotonic()

    def add(self, amount: float) -> None:
        with self._lock:
            self.value = min(self.total, self.value + amount)
            now = time.monotonic()
            if self.tty and (now - self._last > 0.1 or self.value >= self.total):
                self._last = now
                self._draw("\r")

    def _draw(self, lead: str, end: str = "") -> None:
        width = 30
        fill = int(width * self.value / self.total)
        v, t = self.value / self.scale, self.total / self.scale
        self.stream.write(f"{lead}{self.label} [{'#' * fill}{'.' * (width - fill)}] "
                          f"{v:.1f}/{t:.1f}{self.unit}{end}")
        self.stream.flush()

    def done(self, note: str = "") -> None:
        """Finish the bar (one final line, also when not a terminal)."""
        if not self.enabled:
            return
        with self._lock:
            secs = time.monotonic() - self._t0
            self._draw("\r" if self.tty else "", f" {secs:.1f} s{(' ' + note) if note else ''}\n")
