"""`Watcher`: the long-running re-planner of one deployment (a thread, or `run()` in a CLI).

It polls the fleet client's view of the broker (retained status, latest metrics per
node, the deployment record): the paho thread keeps those tables current, so nothing
here blocks it. Every poll feeds new metrics into the epoch's History, asks the pure
policy for a trigger, and re-plans when there is one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from node.wire import messages as m
from planner.constraints import Constraints
from planner.errors import FleetError, TilefleetError
from planner.fleet.record import Record
from planner.graph import ModelGraph
from planner.live.drift import DriftRule, History, beyond_band
from planner.live.policy import decide, link_baselines
from planner.live.replanner import FALLBACK_STRATEGY, Replan, execute
from planner.profile import Profile

if TYPE_CHECKING:
    from planner.fleet.client import Fleet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplanPolicy:
    """Knobs of live re-planning (defaults suit a 1 s metrics interval)."""

    rule: DriftRule = field(default_factory=DriftRule)
    strategy: str | None = None  # None: the deployment's own strategy
    constraints: Constraints = field(default_factory=Constraints)
    partial: bool = True  # try D3's partial adjustment before a full plan
    cooldown_s: float = 5.0  # no drift re-plan sooner than this after the last one
    retry_s: float = 2.0  # after a failed re-plan
    poll_s: float = 0.05
    link_probe_s: float = 0.0  # probe the deployment's links this often (0: never)
    probe_bytes: int = 256_000
    timeout_s: float = 30.0


class Watcher:
    """Watch deployment `name` and re-plan it live; `start()`/`stop()` or `run()`."""

    def __init__(self, fleet: Fleet, name: str, graph: ModelGraph, profile: Profile,
                 policy: ReplanPolicy | None = None,
                 on_replan: Callable[[Replan], None] | None = None) -> None:
        self.fleet, self.name, self.graph, self.profile = fleet, name, graph, profile
        self.policy = policy or ReplanPolicy()
        self.on_replan = on_replan
        self.replans: list[Replan] = []
        self.errors: list[str] = []
        self._history: History | None = None
        self._seen: dict[str, Any] = {}
        self._quiet_until = 0.0
        self._retry_at = 0.0
        self._next_probe = 0.0
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------
    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self.run, daemon=True, name=f"watch-{self.name}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.policy.timeout_s + 5)

    def run(self) -> None:
        """Poll until `stop()`; exceptions of one step are logged, never fatal."""
        while not self._stop.wait(self.policy.poll_s):
            try:
                self.step(time.monotonic())
            except Exception:  # a watcher that dies silently is worse than a noisy one
                log.exception("re-planner step failed")

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Wait until `count` re-plans happened in total; False on time-out."""
        with self._done:
            return self._done.wait_for(lambda: len(self.replans) >= count, timeout_s)

    # ---- one poll -----------------------------------------------------------------------
    def record(self) -> Record | None:
        doc = self.fleet.control.record(self.name)
        return Record.from_json(doc) if doc else None

    def step(self, now: float) -> Replan | None:
        """Ingest what is new, decide, maybe re-plan; returns the re-plan done, if any."""
        rec = self.record()
        if rec is None:
            return None
        if self._history is None or self._history.epoch != rec.epoch:
            self._history = History(self.name, rec.epoch)  # new stages, new baselines
        hist = self._history
        for node, doc in dict(self.fleet.control.metrics).items():
            if doc is not self._seen.get(node) and node in rec.nodes:
                self._seen[node] = doc
                hist.add_metrics(node, doc, now)
        if self.policy.link_probe_s > 0 and now >= self._next_probe:
            self._next_probe = now + self.policy.link_probe_s
            self._probe(rec, hist, now)
        nodes = list(rec.nodes)
        baselines = link_baselines(self.profile, nodes)
        drifts = hist.drifts(self.policy.rule, baselines)
        trig = decide(nodes, dict(self.fleet.control.status), drifts, now, self._quiet_until)
        if trig is None or now < self._retry_at:
            return None
        extra = [d for d in beyond_band(hist, self.policy.rule, baselines)
                 if d.key not in {x.key for x in trig.drifts} and d.subject not in trig.lost]
        trig = replace(trig, drifts=trig.drifts + tuple(extra))
        strategy = self.policy.strategy or (rec.strategy if rec.strategy not in ("", "manual")
                                            else FALLBACK_STRATEGY)
        try:
            ev, new_rec, self.profile = execute(
                self.fleet.control, self.graph, rec, self.profile, trig, strategy,
                self.policy.constraints, partial=self.policy.partial, seen_at=now,
                timeout_s=self.policy.timeout_s)
        except TilefleetError as exc:
            self._retry_at = now + self.policy.retry_s  # `now`: the caller's clock
            self.errors.append(f"{trig.describe()}: {exc}")
            log.error("re-plan of %s for %s failed: %s", self.name, trig.describe(), exc)
            return None
        self._quiet_until = now + self.policy.cooldown_s
        with self._done:
            self.replans.append(ev)
            self._done.notify_all()
        if self.on_replan is not None:
            self.on_replan(ev)
        return ev

    def _probe(self, rec: Record, hist: History, now: float) -> None:
        """Bandwidth of each node -> node link the layout uses (adjacent stages)."""
        order = rec.stage_nodes()
        for a, b in zip(order, order[1:], strict=False):
            ep = rec.nodes.get(b, {}).get("service_endpoint")
            if a == b or not ep:
                continue
            try:
                r = self.fleet.control.command(a, m.Probe, 10, endpoint=ep,
                                               nbytes=self.policy.probe_bytes, repetitions=2)
            except FleetError as exc:
                log.info("link probe %s -> %s failed: %s", a, b, exc)
                continue
            hist.add_link(a, b, max(float(r["bandwidth_bps"]) / 8, 1.0), now)


def watch(fleet: Fleet, name: str, model: Any, profile: Profile | None = None,
          policy: ReplanPolicy | None = None,
          on_replan: Callable[[Replan], None] | None = None) -> Watcher:
    """Start re-planning deployment `name` live (profiles the online nodes if needed)."""
    from planner.fleet.client import load_model

    graph = load_model(model)
    if fleet.control.record(name) is None:
        raise FleetError(f"unknown deployment {name!r} (known: "
                         f"{', '.join(fleet.deployments()) or 'none'})")
    if profile is None:
        profile = fleet.profile(graph, progress=False)
    return Watcher(fleet, name, graph, profile, policy, on_replan).start()
