"""Keeps the agent's network threads running, and says so when it cannot.

Every thread that reads the network (the data plane's I/O thread, paho's network thread,
the command threads) catches what its input can raise; this is the net under that: a
thread found dead is started again, and the node's retained status turns "degraded"
(with the reason) while one keeps dying or cannot be started, so the planner moves work
away instead of trusting an "online" node that no longer answers. It turns "online"
again once every thread has stayed up for a full `window_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from node.metrics import Counters
from node.wire.codes import Code

log = logging.getLogger(__name__)


class Supervised(Protocol):
    """A part of the agent with threads: which died, and how to start one again."""

    def dead(self) -> list[str]: ...

    def restart(self, name: str) -> None: ...


class Supervisor:
    """Checks `parts` every `interval_s`; `on_state(state, reason)` hears status changes."""

    def __init__(self, parts: list[Supervised], on_state: Callable[[str, str], None],
                 counters: Counters, interval_s: float = 1.0, window_s: float = 60.0,
                 max_restarts: int = 5) -> None:
        self.parts, self.on_state, self.counters = parts, on_state, counters
        self.interval_s, self.window_s, self.max_restarts = interval_s, window_s, max_restarts
        self.restarts: deque[float] = deque()  # times of recent restarts
        self.state, self.reason = "online", ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="supervisor")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def dead(self) -> list[str]:
        """The supervisor itself (the agent's watchdog)."""
        return [] if self._stop.is_set() or self._thread.is_alive() else ["supervisor"]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # the watchdog must outlive what it watches
                log.exception("supervisor check failed")

    def check(self) -> None:
        """Restart dead threads once; publish degraded/online when that changes."""
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > self.window_s:
            self.restarts.popleft()
        problems = []
        for part in self.parts:
            for name in part.dead():
                self.counters.error(Code.THREAD_RESTART)
                self.restarts.append(now)
                log.error("thread %s died; restarting it", name)
                try:
                    part.restart(name)
                except Exception as exc:
                    problems.append(f"thread {name} died and cannot be restarted: {exc}")
        if len(self.restarts) > self.max_restarts:
            problems.append(f"{len(self.restarts)} thread restarts within "
                            f"{self.window_s:g} s")
        still = [n for part in self.parts for n in part.dead()]
        problems += [f"thread {n} is not running" for n in still]
        state, reason = ("degraded", "; ".join(problems)) if problems else ("online", "")
        if (state, reason) != (self.state, self.reason):
            log.log(logging.ERROR if problems else logging.INFO, "status %s %s", state, reason)
            self.state, self.reason = state, reason
            self.on_state(state, reason)
