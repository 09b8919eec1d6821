"""Failure drills on a local fleet: SIGKILL an agent, or throttle one, in the middle of a stream.

Used by tests/e2e/test_failover.py, tests/e2e/test_throttle.py and tools/bench_failover.py.
Each drill starts N local agents (planner.localfleet) on a given broker, deploys a
MobileNetV2-like model with the throughput strategy, turns live re-planning on, runs a
checked stream and returns its figures as a dict. Throttling is passed in as two
callables (pid -> None), so the cgroup plumbing stays in tools/throttle.py.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from planner.fleet import Deployment, Fleet
from planner.fleet.reference import LocalModel, random_inputs
from planner.graph import ModelGraph
from planner.live.watcher import ReplanPolicy
from planner.localfleet import LocalFleet
from planner.modelbuild import recipes

log = logging.getLogger(__name__)
Inputs = dict[str, np.ndarray]


class Stream:
    """A checked stream in a background thread; counts each request id's deliveries."""

    def __init__(self, dep: Deployment, xs: list[Inputs], want: list[Inputs],
                 frames: int | None = None, window: int = 8,
                 before: Callable[[int], None] | None = None) -> None:
        self.dep, self.xs, self.want, self.frames = dep, xs, want, frames
        self.window, self.before = window, before
        self.by_id: Counter[str] = Counter()
        self.times: list[float] = []
        self.results = self.identical = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._hook()
        self._thread = threading.Thread(target=self._run, daemon=True, name="drill-stream")

    def _hook(self) -> None:
        inner = self.dep.tracker.result

        def result(h: Any, arrays: Any) -> Any:  # counts completions by request id
            req = inner(h, arrays)
            if req is not None and req.future.done() and req.future.exception() is None:
                with self._lock:
                    self.by_id[req.rid] += 1
            return req

        self.dep.tracker.result = result  # type: ignore[method-assign]

    def _inputs(self) -> Iterator[Inputs]:
        i = 0
        while not self._stop.is_set() and (self.frames is None or i < self.frames):
            if self.before is not None:
                self.before(i)
            yield self.xs[i % len(self.xs)]
            i += 1

    def _run(self) -> None:
        for i, r in enumerate(self.dep.infer_many(self._inputs(), self.window,
                                                  return_errors=True)):
            with self._lock:
                self.results += 1
                self.times.append(time.monotonic())
                if isinstance(r, Exception):
                    self.errors.append(str(r))
                elif all(np.array_equal(r[n], w) for n, w in self.want[i % len(self.want)].items()):
                    self.identical += 1

    def start(self) -> Stream:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def join(self, timeout_s: float = 120.0) -> None:
        """Wait for a stream of `frames` frames to end."""
        self._thread.join(timeout_s)

    def fps(self, t0: float, t1: float) -> float:
        """Results delivered per second in [t0, t1) (monotonic clock)."""
        with self._lock:
            n = sum(1 for t in self.times if t0 <= t < t1)
        return n / max(t1 - t0, 1e-9)


@contextmanager
def local_fleet(broker_url: str | None, nodes: int) -> Iterator[tuple[LocalFleet, Fleet, Path]]:
    """`nodes` agents (and an embedded broker when broker_url is None) and a Fleet."""
    with tempfile.TemporaryDirectory(prefix="tilefleet-drill-") as d:
        (Path(d) / "agents").mkdir()
        with LocalFleet(nodes, broker_url, workdir=Path(d) / "agents") as local:
            with Fleet.connect(local.broker_url or "") as fleet:
                fleet.wait_for_nodes(nodes, 60)
                yield local, fleet, Path(d)


def _setup(fleet: Fleet, workdir: Path, name: str, size: int, policy: ReplanPolicy
           ) -> tuple[Any, ...]:
    data = recipes.mobilenet_v2_like(input_size=size, dtype="float32", seed=0)
    graph = ModelGraph(data, f"mobilenet_v2_like_{size}")
    profile = fleet.profile(graph, progress=False, cache_dir=workdir / "profiles")
    dep = fleet.deploy(graph, name=name, strategy="throughput", profile=profile,
                       progress=False, timeout_s=3.0, retries=3)
    watcher = dep.enable_replanning(graph, profile=profile, policy=policy)
    local = LocalModel(data)
    xs = [random_inputs(dep.record.model["inputs"], s) for s in range(16)]
    return graph, profile, dep, watcher, xs, [local.run(x) for x in xs]


def failover_drill(broker_url: str | None, frames: int = 500, kill_at: int = 250,
                   nodes: int = 4, size: int = 32) -> dict[str, Any]:
    """SIGKILL the agent of a middle stage before frame `kill_at`; figures of the stream."""
    with local_fleet(broker_url, nodes) as (local, fleet, workdir):
        _, _, dep, watcher, xs, want = _setup(fleet, workdir, "drill-failover", size,
                                              ReplanPolicy(cooldown_s=60))
        order = dep.record.stage_nodes()
        victim = order[len(order) // 2]
        killed: dict[str, float] = {}

        def before(i: int) -> None:
            if i == kill_at:
                killed["wall"] = time.time()
                local.kill(victim)

        t0 = time.monotonic()
        s = Stream(dep, xs, want, frames, before=before).start()
        s.join()
        wall = time.monotonic() - t0
        watcher.wait_for(1, 10)
        watcher.stop()
        ev = watcher.replans[0].to_json() if watcher.replans else None
        stats = dep.stats()
        return {"frames": frames, "results": s.results, "identical": s.identical,
                "errors": s.errors[:3], "ids": len(s.by_id),
                "delivered_once": sum(1 for c in s.by_id.values() if c == 1),
                "victim": victim, "stage_nodes": order, "new_nodes": dep.record.stage_nodes(),
                "replan": ev, "replan_errors": watcher.errors,
                "replan_after_kill_s": ev["time"] - killed["wall"] if ev else None,
                "resent": stats["sent"] - frames, "duplicates": stats["duplicates"],
                "client": stats, "wall_s": wall, "epoch": dep.epoch}


def macs_by_node(graph: ModelGraph, stages: dict[str, dict[str, Any]]) -> dict[str, float]:
    """MACs each node computes per frame (a tile stage's MACs split evenly over its tiles)."""
    per: dict[tuple[int, int], list[str]] = {}
    for st in stages.values():
        per.setdefault(tuple(st["ops"]), []).append(st["node"])
    out: dict[str, float] = {}
    for (a, b), members in per.items():
        macs = sum(op.macs for op in graph.ops[a:b])
        for n in members:
            out[n] = out.get(n, 0.0) + macs / len(members)
    return out


def _measure(dep: Deployment, xs: list[Inputs], want: list[Inputs], settle_s: float,
             phase_s: float) -> tuple[float, Stream]:
    """Frames per second of a fresh stream on `dep` after `settle_s`, over `phase_s`."""
    s = Stream(dep, xs, want).start()
    time.sleep(settle_s)
    t = time.monotonic()
    time.sleep(phase_s)
    fps = s.fps(t, time.monotonic())
    s.stop()
    return fps, s


def throttle_drill(broker_url: str | None, throttle: Callable[[int], None],
                   release: Callable[[int], None], cpu_note: str = "", nodes: int = 4,
                   size: int = 128, phase_s: float = 3.0, settle_s: float = 2.0,
                   policy: ReplanPolicy | None = None, timeout_s: float = 40.0
                   ) -> dict[str, Any]:
    """Throttle the busiest agent mid-stream; throughput after the re-plan vs a fresh plan."""
    from planner.constraints import Constraints
    from planner.layout import StageLayout, from_plan
    from planner.live.drift import Drift
    from planner.live.policy import DRIFT, Trigger, adjust_profile
    from planner.strategies import STRATEGIES

    with local_fleet(broker_url, nodes) as (local, fleet, workdir):
        graph, profile, dep, watcher, xs, want = _setup(
            fleet, workdir, "drill-throttle", size, policy or ReplanPolicy(cooldown_s=600))
        first = dict(dep.record.stages)
        share = macs_by_node(graph, first)
        victim = max(share, key=share.get)
        pid = local.procs[victim].pid
        s = Stream(dep, xs, want).start()
        time.sleep(settle_s + 2.0)  # the watcher's baselines: settled frames + warm-up samples
        t = time.monotonic()
        time.sleep(phase_s)
        before = s.fps(t, time.monotonic())
        throttle(pid)
        t_thr = time.monotonic()
        try:
            replanned = watcher.wait_for(1, timeout_s)
            t_rep = time.monotonic()
            throttled = s.fps(t_thr + 1.0, t_rep) if t_rep > t_thr + 2.0 else None
            time.sleep(settle_s)
            t = time.monotonic()
            time.sleep(phase_s)
            after = s.fps(t, time.monotonic())
            s.stop()
            watcher.stop()
            new_stages = dict(dep.record.stages)
            dep.undeploy()
            # A fresh plan for the new conditions: the victim's sustained slow-down measured
            # independently (whole model alone on it vs on another node), then a full plan.
            other = next(n for n in local.names if n != victim)
            solo = {}
            for n in (victim, other):
                d = fleet.deploy(graph, name=f"drill-solo-{n}", progress=False,
                                 layout=(StageLayout(0, len(graph.ops), (n,)),))
                solo[n], _ = _measure(d, xs, want, 0.5, phase_s / 2)
                d.undeploy()
            factor = solo[other] / max(solo[victim], 1e-9)
            drift = Drift("solo", victim, "stage", 1.0, factor, 0.0)
            fresh_profile = adjust_profile(profile, graph.sha256, Trigger(DRIFT, (), (drift,)))
            plan = STRATEGIES["throughput"](graph, fresh_profile, Constraints())
            fresh = fleet.deploy(graph, name="drill-fresh", layout=from_plan(plan),
                                 strategy="throughput", progress=False)
            fresh_fps, fs = _measure(fresh, xs, want, settle_s, phase_s)
            fresh_stages = dict(fresh.record.stages)
            fresh.undeploy()
        finally:
            release(pid)
        ev = watcher.replans[0].to_json() if watcher.replans else None
        return {"victim": victim, "throttle": cpu_note, "replanned": replanned,
                "replan": ev, "replan_errors": watcher.errors,
                "detect_s": (t_rep - t_thr) if replanned else None,
                "fps_before": before, "fps_throttled": throttled, "fps_after_replan": after,
                "fps_fresh_plan": fresh_fps, "after_vs_fresh": after / max(fresh_fps, 1e-9),
                "victim_slowdown_solo": factor,
                "victim_macs_share": {"before": share.get(victim, 0.0) / sum(share.values()),
                                      "after": _share(graph, new_stages, victim),
                                      "fresh": _share(graph, fresh_stages, victim)},
                "stages": {"before": first, "after": new_stages, "fresh": fresh_stages},
                "identical": s.identical + fs.identical, "results": s.results + fs.results,
                "errors": (s.errors + fs.errors)[:3]}


def _share(graph: ModelGraph, stages: dict[str, dict[str, Any]], node: str) -> float:
    m = macs_by_node(graph, stages)
    return m.get(node, 0.0) / max(sum(m.values()), 1e-9)
