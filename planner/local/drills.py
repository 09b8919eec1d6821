"""Failure drills on a local fleet: SIGKILL an agent, or throttle one, in the middle of a stream.

Used by tests/e2e/test_failover.py, tests/e2e/test_throttle.py and tools/bench_failover.py.
Each drill starts N local agents (planner.local.localfleet) on a given broker, deploys a
MobileNetV2-like model with the throughput strategy, turns live re-planning on, runs a
checked stream and returns its figures as a dict. Throttling is passed in as two
callables (pid -> None), so the cgroup plumbing stays in tools/throttle.py.
"""

from __future__ import annotations

import logging
import statistics
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
from planner.fleet.record import StageEntry
from planner.fleet.reference import LocalModel, random_inputs
from planner.live import enable_replanning
from planner.live.drift import DriftRule, History, informative
from planner.live.watcher import ReplanPolicy
from planner.local.localfleet import LocalFleet
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes

log = logging.getLogger(__name__)
Inputs = dict[str, np.ndarray]


class Stream:
    """A checked stream on one deployment; counts each request id's deliveries.

    Either in a background thread (`start()` ... `stop()`/`join()`) or as short
    synchronous bursts (`burst()`), any number of times: the deployment's result hook is
    installed once, so `by_id` counts every delivery of every run.
    """

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

    def _inputs(self, more: Callable[[int], bool]) -> Iterator[Inputs]:
        i = 0
        while more(i):
            if self.before is not None:
                self.before(i)
            yield self.xs[i % len(self.xs)]
            i += 1

    def _consume(self, more: Callable[[int], bool]) -> None:
        for i, r in enumerate(self.dep.infer_many(self._inputs(more), self.window,
                                                  return_errors=True)):
            with self._lock:
                self.results += 1
                self.times.append(time.monotonic())
                if isinstance(r, Exception):
                    self.errors.append(str(r))
                elif all(np.array_equal(r[n], w) for n, w in self.want[i % len(self.want)].items()):
                    self.identical += 1

    def _run(self) -> None:
        self._consume(lambda i: not self._stop.is_set() and (self.frames is None
                                                             or i < self.frames))

    def start(self) -> Stream:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def join(self, timeout_s: float = 120.0) -> None:
        """Wait for a stream of `frames` frames to end."""
        self._thread.join(timeout_s)

    def burst(self, seconds: float, settle_s: float = 0.0) -> float:
        """Stream in this thread for settle_s + seconds; frames/s over the last `seconds`."""
        t_measure = time.monotonic() + settle_s
        t_end = t_measure + seconds
        self._consume(lambda _i: time.monotonic() < t_end)
        return self.fps(t_measure, t_end)

    def fps(self, t0: float, t1: float) -> float:
        """Results delivered per second in [t0, t1) (monotonic clock)."""
        with self._lock:
            n = sum(1 for t in self.times if t0 <= t < t1)
        return n / max(t1 - t0, 1e-9)

    def delivered_once(self) -> bool:
        """Every result came from a distinct request id, each completed exactly once."""
        with self._lock:
            return len(self.by_id) == self.results and all(c == 1 for c in self.by_id.values())


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
    profile = fleet.profile(graph, cache_dir=workdir / "profiles")
    dep = fleet.deploy(graph, name=name, strategy="throughput", profile=profile,
                       timeout_s=3.0, retries=3)
    watcher = enable_replanning(dep, graph, profile=profile, policy=policy)
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


def macs_by_node(graph: ModelGraph, stages: dict[str, StageEntry]) -> dict[str, float]:
    """MACs each node computes per frame (a tile stage's MACs split evenly over its tiles)."""
    per: dict[tuple[int, int], list[str]] = {}
    for st in stages.values():
        per.setdefault(tuple(st.ops), []).append(st.node)
    out: dict[str, float] = {}
    for (a, b), members in per.items():
        macs = sum(op.macs for op in graph.ops[a:b])
        for n in members:
            out[n] = out.get(n, 0.0) + macs / len(members)
    return out


def interleaved(streams: dict[str, Stream], rounds: int, burst_s: float, settle_s: float
                ) -> dict[str, list[float]]:
    """Frames/s of each stream in alternating short bursts, `rounds` times.

    Each round runs every stream once, the order reversed every other round, so the
    deployments see the same background load (a shared machine) and neither always
    goes first; compare them per round.
    """
    names = list(streams)
    out: dict[str, list[float]] = {n: [] for n in names}
    for k in range(rounds):
        for n in (names if k % 2 == 0 else names[::-1]):
            out[n].append(streams[n].burst(burst_s, settle_s))
    return out


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[k] / b[k] (a load swing cancels within a round)."""
    return statistics.median(x / max(y, 1e-9) for x, y in zip(a, b, strict=True))


class MetricsLog:
    """Every metrics message of one node as it arrives (polled from the fleet client's
    latest-message table), to show afterwards what the watcher saw and when."""

    def __init__(self, fleet: Fleet, node: str, poll_s: float = 0.02) -> None:
        self.fleet, self.node, self.poll_s = fleet, node, poll_s
        self.docs: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="drill-metrics")

    def _run(self) -> None:
        seen = None
        while not self._stop.wait(self.poll_s):
            doc = self.fleet.control.metrics.get(self.node)
            if doc is not None and doc is not seen:
                seen = doc
                self.docs.append((time.monotonic(), doc))

    def start(self) -> MetricsLog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def ratios(self, deployment: str, epoch: int, rule: DriftRule, since: float
               ) -> list[tuple[float, float]]:
        """(seconds after `since`, sample / baseline) of each interval sample of the node's
        stages in that epoch, as the watcher computes them."""
        hist = History(deployment, epoch)
        for t, doc in self.docs:
            hist.add_metrics(self.node, doc, t)
        out = []
        for xs in hist.stages.values():
            got = informative(xs, rule.min_frames, rule.settle_frames, rule.skip_frames)
            if len(got) > rule.warmup:
                base = statistics.median(x.value for x in got[:rule.warmup])
                out += [(round(x.time - since, 2), round(x.value / base, 2))
                        for x in got[rule.warmup:] if base > 0]
        return sorted(out)


def _wait_for_samples(fleet: Fleet, node: str, prefix: str, count: int, timeout_s: float
                      ) -> int:
    """Wait until `count` metrics messages of `node` showed new frames of a stage under
    `prefix` (so the watcher has the baselines it compares with); returns how many did."""
    seen, last_frames, got = None, -1, 0
    deadline = time.monotonic() + timeout_s
    while got < count and time.monotonic() < deadline:
        doc = fleet.control.metrics.get(node)
        if doc is not None and doc is not seen:
            seen = doc
            frames = sum(st.frames for k, st in doc.stages.items() if k.startswith(prefix))
            if frames > last_frames >= 0:
                got += 1
            last_frames = frames
        time.sleep(0.05)
    return got


def throttle_drill(broker_url: str | None, throttle: Callable[[int], None],
                   release: Callable[[int], None], cpu_note: str = "", nodes: int = 4,
                   size: int = 128, rounds: int = 8, burst_s: float = 0.2,
                   settle_s: float = 0.05, policy: ReplanPolicy | None = None,
                   timeout_s: float = 30.0) -> dict[str, Any]:
    """Throttle the busiest agent mid-stream; throughput after the re-plan vs a fresh plan.

    The fresh plan is made independently of the watcher: the victim's slow-down is
    measured by running the whole model alone on it and on another agent (interleaved
    bursts), the profile scaled by it, and a full plan made. The re-planned and the
    fresh deployments then run side by side in interleaved bursts; `after_vs_fresh` is
    the median of the per-round throughput ratios.
    """
    from planner.live.drift import Drift
    from planner.live.policy import DRIFT, Trigger, adjust_profile
    from planner.planning.constraints import Constraints
    from planner.planning.plan import Stage
    from planner.planning.strategies import STRATEGIES

    policy = policy or ReplanPolicy(cooldown_s=600)
    clock: dict[str, float] = {"start": time.monotonic()}
    with local_fleet(broker_url, nodes) as (local, fleet, workdir):
        graph, profile, dep, watcher, xs, want = _setup(fleet, workdir, "drill-throttle",
                                                        size, policy)
        clock["deployed"] = time.monotonic()
        first, first_epoch = dict(dep.record.stages), dep.epoch
        share = macs_by_node(graph, first)
        victim = max(share, key=share.get)
        pid = local.procs[victim].pid
        mlog = MetricsLog(fleet, victim).start()
        s = Stream(dep, xs, want).start()
        t_stream = time.monotonic()
        # the watcher's baselines: `warmup` interval samples, plus the first one's anchor
        _wait_for_samples(fleet, victim, f"{dep.name}/{dep.epoch}/",
                          policy.rule.warmup + 1, 20.0)
        clock["baselines"] = t_thr = time.monotonic()
        before = s.fps(t_stream + 0.5, t_thr)
        early = [ev.to_json() for ev in watcher.replans]  # a re-plan before the throttle
        throttle(pid)
        extra: list[Deployment] = []
        try:
            replanned = watcher.wait_for(1, timeout_s)
            clock["replanned"] = t_rep = time.monotonic()
            throttled = s.fps(t_thr + 0.5, t_rep) if t_rep > t_thr + 1.0 else None
            watcher.stop()
            mlog.stop()
            s.stop()
            new_stages = dict(dep.record.stages)
            # A fresh plan for the new conditions, measured independently of the watcher.
            other = next(n for n in local.names if n != victim)
            solo = {n: fleet.deploy(graph, name=f"drill-solo-{n}",
                                    stages=(Stage(0, (0, len(graph.ops)), n),))
                    for n in (victim, other)}
            extra += solo.values()
            solo_streams = {n: Stream(d, xs, want) for n, d in solo.items()}
            solo_fps = interleaved(solo_streams, 2, burst_s, settle_s)
            factor = paired_ratio(solo_fps[other], solo_fps[victim])
            for d in solo.values():
                d.undeploy()
            extra.clear()
            drift = Drift("solo", victim, "stage", 1.0, factor, 0.0)
            fresh_profile = adjust_profile(profile, graph.sha256, Trigger(DRIFT, (), (drift,)))
            plan = STRATEGIES["throughput"](graph, fresh_profile, Constraints())
            fresh = fleet.deploy(graph, name="drill-fresh", plan=plan)
            extra.append(fresh)
            fresh_stages = dict(fresh.record.stages)
            clock["fresh_deployed"] = time.monotonic()
            pair = {"after": s, "fresh": Stream(fresh, xs, want)}  # one result hook per dep
            fps = interleaved(pair, rounds, burst_s, settle_s)
            clock["compared"] = time.monotonic()
        finally:
            mlog.stop()
            for d in extra:
                d.undeploy()
            release(pid)
        dep.undeploy()
        ev = watcher.replans[0].to_json() if watcher.replans else None
        streams = [s, pair["fresh"], *solo_streams.values()]
        return {"victim": victim, "throttle": cpu_note, "replanned": replanned,
                "replan": ev, "replan_errors": watcher.errors, "replans_before_throttle": early,
                "detect_s": (t_rep - t_thr) if replanned else None,
                # the victim's interval samples / baseline, by seconds after the throttle
                "victim_samples": mlog.ratios(dep.name, first_epoch, policy.rule, t_thr),
                "fps_before": before, "fps_throttled": throttled,
                "fps_after_replan": statistics.median(fps["after"]),
                "fps_fresh_plan": statistics.median(fps["fresh"]),
                "after_vs_fresh": paired_ratio(fps["after"], fps["fresh"]),
                "rounds": {"after": fps["after"], "fresh": fps["fresh"]},
                "victim_slowdown_solo": factor,
                "victim_macs_share": {"before": share.get(victim, 0.0) / sum(share.values()),
                                      "after": _share(graph, new_stages, victim),
                                      "fresh": _share(graph, fresh_stages, victim)},
                "stages": {k: {sid: st.to_json() for sid, st in v.items()} for k, v in
                           (("before", first), ("after", new_stages), ("fresh", fresh_stages))},
                "identical": sum(x.identical for x in streams),
                "results": sum(x.results for x in streams),
                "delivered_once": all(x.delivered_once() for x in streams),
                "errors": [e for x in streams for e in x.errors][:3],
                "seconds": {k: round(v - clock["start"], 2) for k, v in clock.items()}}


def _share(graph: ModelGraph, stages: dict[str, StageEntry], node: str) -> float:
    m = macs_by_node(graph, stages)
    return m.get(node, 0.0) / max(sum(m.values()), 1e-9)
