"""Shared set-up of the live re-planning tests: Mosquitto, N agents, a Fleet, a counted stream."""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.fleet import Deployment, Fleet
from planner.localfleet import LocalFleet
from planner.modelbuild import recipes
from tests.conftest import MOSQUITTO, Broker

HAVE_MOSQUITTO = Path(MOSQUITTO).exists()


@dataclass
class Env:
    broker: Broker
    local: LocalFleet
    fleet: Fleet
    workdir: Path


@contextmanager
def fleet_env(nodes: int = 4) -> Iterator[Env]:
    """Mosquitto, `nodes` local agents and a connected Fleet; everything stops after."""
    with tempfile.TemporaryDirectory(prefix="e2e-live-") as d:
        broker = Broker("mosquitto", Path(d)).start()
        (Path(d) / "agents").mkdir()
        local = LocalFleet(nodes, broker.url, workdir=Path(d) / "agents")
        try:
            local.start()
            with Fleet.connect(broker.url) as fleet:
                fleet.wait_for_nodes(nodes, 60)
                yield Env(broker, local, fleet, Path(d))
        finally:
            local.stop()
            broker.stop()


def model(size: int = 32, dtype: str = "float32") -> bytes:
    """The MobileNetV2-like test model, small enough for a quick stream."""
    return recipes.mobilenet_v2_like(input_size=size, dtype=dtype, seed=0)


@dataclass
class Deliveries:
    """Counts completed requests by id (wraps the tracker's result hook)."""

    by_id: Counter[str] = field(default_factory=Counter)
    times: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, dep: Deployment) -> Deliveries:
        inner = dep.tracker.result

        def result(h: Any, arrays: Any) -> Any:
            req = inner(h, arrays)
            if req is not None and req.future.done() and req.future.exception() is None:
                with self.lock:
                    self.by_id[req.rid] += 1
                    self.times.append(time.monotonic())
            return req

        dep.tracker.result = result  # type: ignore[method-assign]
        return self

    def fps_between(self, t0: float, t1: float) -> float:
        with self.lock:
            n = sum(1 for t in self.times if t0 <= t < t1)
        return n / max(t1 - t0, 1e-9)
