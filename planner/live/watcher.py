"""`Watcher`: the long-running re-planner of one deployment (a thread, or `run()` in a CLI).

It polls the fleet client's view of the broker (retained status, latest metrics per
node, the deployment record): the paho thread keeps those tables current, so nothing
here blocks it. Every poll feeds new metrics (and, every `link_probe_s`, a bandwidth
probe of each link between adjacent stages, planner.live.links) into the epoch's
History, asks the pure policy for a trigger, and re-plans when there is one. With no
trigger, two chances to improve are judged: links that a re-plan moved traffic off and
that probe healthy again (restored in the profile), and nodes that came online since the
start (a new board, or one back after its Last Will; profiled once up `join_settle_s`).
Either re-plans when a plan using them beats the running one by `margin`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from planner.errors import FleetError, TilefleetError
from planner.fleet.record import Record
from planner.live.drift import DriftRule, History, beyond_band
from planner.live.links import LinkProber
from planner.live.policy import (
    DRIFT,
    JOIN,
    Trigger,
    decide,
    figures,
    gain,
    material_links,
    plan_figure,
    settled_joiners,
    without_nodes,
)
from planner.live.replanner import FALLBACK_STRATEGY, Replan, execute, objective_of, plan_next
from planner.model.graph import ModelGraph
from planner.planning.constraints import Constraints
from planner.planning.plan import plan_from_json
from planner.planning.profile import Profile

if TYPE_CHECKING:
    from planner.fleet.client import Fleet
    from planner.fleet.deployment import Deployment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplanPolicy:
    """Knobs of live re-planning (defaults suit a 1 s metrics interval)."""

    rule: DriftRule = field(default_factory=DriftRule)
    strategy: str | None = None  # None: the deployment's own strategy
    # None: the deployment's own objective (its record's); constraints.objective is used
    # only for a deployment without one (hand-written stages).
    objective: str | None = None
    constraints: Constraints = field(default_factory=Constraints)
    partial: bool = True  # try D3's partial adjustment before a full plan
    cooldown_s: float = 5.0  # no drift re-plan sooner than this after the last one
    retry_s: float = 2.0  # after a failed re-plan
    poll_s: float = 0.05
    link_probe_s: float = 0.0  # probe the deployment's links this often (0: never)
    probe_bytes: int = 32_000  # 256 KB every second took ~10% of a 40 Mbit/s bottleneck link
    timeout_s: float = 30.0
    # A link drift or a join re-plans only when it moves the plan's simulated figure
    # (latency, or throughput) by more than this fraction.
    margin: float = 0.1
    join: bool = True  # judge nodes that come online (new, or back after a Last Will)
    join_settle_s: float = 1.0  # a joiner must stay online this long before it is judged
    join_cooldown_s: float = 60.0  # a node is judged at most once per this (flapping)
    profile_cache: str | None = None  # where joiners' measurements are cached (None: default)


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
        self.links = LinkProber(fleet.control, self.policy.probe_bytes)
        self._online: set[str] | None = None  # online nodes at the last poll
        self._online_since: dict[str, float] = {}  # nodes that came online since the start
        self._join_tried: dict[str, float] = {}
        # Nodes dropped from the profile when they went offline, with what identified the
        # machine: one that comes back unchanged gets its entry back instead of being
        # measured next to the live stream (contended, on a shared host).
        self._departed: dict[str, tuple[tuple[Any, ...], Profile]] = {}
        self._identity: dict[str, tuple[Any, ...]] = {}
        self._recovered: dict[tuple[str, str], float] = {}  # restored links not yet judged
        self._judged: tuple[Any, dict[Any, bool]] = (None, {})  # link drift -> material?
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
        self._track_online(now)
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
            self.links.nbytes = self.policy.probe_bytes
            self.links.round(rec, hist, now)
        nodes = list(rec.nodes)
        # Links are compared with their own first probes of this epoch (no profile
        # baseline): the profile measured them with another payload size, at another time.
        drifts = hist.drifts(self.policy.rule, {})
        trig = decide(nodes, dict(self.fleet.control.status), drifts, now, self._quiet_until)
        if now < self._retry_at:
            return None
        if trig is not None and trig.reason == DRIFT:
            trig = self._material(rec, trig)
        strategy = self.policy.strategy or (rec.strategy if rec.strategy not in ("", "manual")
                                            else FALLBACK_STRATEGY)
        constraints = self.constraints(rec)
        back = self.links.recovered(self.policy.rule)
        if back:  # into the profile at once; whether to re-plan waits for the cool-down
            self.profile = self.links.restore(self.profile, back)
            self._recovered.update(back)
        planned = None
        if trig is None:
            if now < self._quiet_until:
                return None
            trig, planned = self._judge_recovered(rec, strategy, constraints)
            if trig is None and self.policy.join:
                trig, planned = self._judge_joiners(rec, strategy, constraints, now)
            if trig is None:
                return None
        else:
            extra = [d for d in beyond_band(hist, self.policy.rule, {})
                     if d.key not in {x.key for x in trig.drifts} and d.subject not in trig.lost]
            trig = replace(trig, drifts=trig.drifts + tuple(extra))
        self._set_aside_offline(trig)
        before = self.profile
        try:
            ev, new_rec, self.profile = execute(
                self.fleet.control, self.graph, rec, self.profile, trig, strategy,
                constraints, partial=self.policy.partial, seen_at=now,
                timeout_s=self.policy.timeout_s, planned=planned)
        except Exception as exc:  # noqa: BLE001 - any failure: back off, say why, go on
            self._retry_at = now + self.policy.retry_s  # `now`: the caller's clock
            self.errors.append(f"{trig.describe()}: {exc}")
            log.error("re-plan of %s for %s failed: %s", self.name, trig.describe(), exc,
                      exc_info=not isinstance(exc, TilefleetError))
            return None
        self._quiet_until = now + self.policy.cooldown_s
        self.links.degrade(trig.drifts, before)
        for n in trig.joined:
            self._online_since.pop(n, None)
        with self._done:
            self.replans.append(ev)
            self._done.notify_all()
        if self.on_replan is not None:
            self.on_replan(ev)
        return ev

    def constraints(self, rec: Record) -> Constraints:
        """The policy's constraints with the objective every re-plan of `rec` optimises:
        `policy.objective` if given, else the deployment's (a board that comes back is
        judged on throughput when the deployment optimises throughput)."""
        c = self.policy.constraints
        objective = objective_of(rec, self.policy.objective, c.objective)
        return c if objective == c.objective else replace(c, objective=objective)

    def _set_aside_offline(self, trig: Trigger) -> None:
        """Keep the profile entries of the nodes offline now, for when they come back, and
        take those that are not the trigger's lost nodes (which the re-plan drops itself)
        out of the profile before planning: a spare node (a joiner not used, one present
        at the start) that left since would otherwise be planned onto, and the re-plan
        fail on it again and again."""
        online = self.fleet.control.online()
        offline = [n for n in self.profile.compute_devices() if n not in online]
        for n in offline:
            if n in self._identity:
                self._departed[n] = (self._identity[n], self.profile)
        if gone := [n for n in offline if n not in trig.lost]:
            self.profile = without_nodes(self.profile, gone)

    def _material(self, rec: Record, trig: Trigger) -> Trigger | None:
        """`trig` without the link drifts that would not change the plan's figure much."""
        links = [d for d in trig.drifts if d.kind == "link"]
        if not links or not rec.plan:
            return trig
        # A drift stays the same object value between probes: judge it (two simulations)
        # once per value, not on every poll.
        key = (rec.epoch, id(self.profile))
        if self._judged[0] != key:
            self._judged = (key, {})
        verdicts = self._judged[1]
        todo = [d for d in links if d not in verdicts]
        if todo:
            try:
                keep = material_links(self.graph, plan_from_json(rec.plan, "<deployment record>"),
                                      self.profile, todo, self.graph.sha256, self.policy.margin)
            except TilefleetError as exc:  # cannot judge it: act on it
                log.info("cannot simulate the running plan (%s); acting on the link drift", exc)
                keep = todo
            for d in todo:
                verdicts[d] = d in keep
                if d not in keep:
                    log.info("link drift without effect on the plan: %s", d.describe())
        drifts = tuple(d for d in trig.drifts if d.kind != "link" or verdicts[d])
        return replace(trig, drifts=drifts) if drifts else None

    def _judge_recovered(self, rec: Record, strategy: str, constraints: Constraints
                         ) -> tuple[Trigger | None, Any]:
        """A DRIFT trigger (and its plan) when links traffic was moved off are healthy
        again and a plan that may use them beats the running one by the margin."""
        back, self._recovered = self._recovered, {}
        if not back:
            return None, None
        named = ", ".join(f"{a}->{b}" for a, b in back)
        if not rec.plan:
            return None, None
        try:
            plan, mode, g, note = self._candidate(rec, strategy, constraints,
                                                  {n for pair in back for n in pair})
        except TilefleetError as exc:
            self.errors.append(f"judging recovered link(s) {named}: {exc}")
            log.error("%s: could not judge recovered link(s) %s: %s", self.name, named, exc)
            return None, None
        note = f"link(s) {named} recovered; {note}"
        if g <= self.policy.margin:
            log.info("%s: %s, within the %.0f%% margin: no re-plan", self.name, note,
                     100 * self.policy.margin)
            return None, None
        return Trigger(DRIFT, note=note), (plan, mode)

    def _candidate(self, rec: Record, strategy: str, constraints: Constraints,
                   changed: set[str]) -> tuple[Any, str, float, str]:
        """(plan, mode, gain, figures) of re-planning around `changed` nodes under the
        current profile, against the running plan judged by the new plan's objective
        (the deployment's, unless the policy overrides it)."""
        plan, mode = plan_next(self.graph, self.profile, rec.plan, strategy, constraints,
                               self.policy.partial, changed)
        before = plan_figure(self.graph, plan_from_json(rec.plan, "<deployment record>"),
                             self.profile, plan.objective)
        after = plan_figure(self.graph, plan, self.profile)
        g = gain(before, after)
        return plan, mode, g, figures(plan.objective, before, after, g)

    def _track_online(self, now: float) -> None:
        """Note when nodes come online; those online at the start have not joined."""
        control = self.fleet.control
        announced = control.online()
        online = {n for n, r in announced.items() if r.get("service_endpoint")}
        for n in online:
            self._identity[n] = _identity(announced[n])
        if self._online is not None:
            for n in online - self._online:
                self._online_since[n] = now
            for n in self._online - online:
                self._online_since.pop(n, None)
        self._online = online

    def _judge_joiners(self, rec: Record, strategy: str, constraints: Constraints,
                       now: float) -> tuple[Trigger | None, Any]:
        """A JOIN trigger (and its plan) when a plan using the joiners beats the running one."""
        from planner.live.joins import with_joiners

        joiners = settled_joiners(self._online_since, rec.nodes,
                                  self.policy.constraints.exclude, self._join_tried, now,
                                  self.policy.join_settle_s, self.policy.join_cooldown_s)
        if not joiners:
            return None, None
        for n in joiners:
            self._join_tried[n] = now
        try:
            # Keep the joiners in the profile either way: a later re-plan may need them.
            back = [n for n in joiners if n in self._departed
                    and self._departed[n][0] == self._identity.get(n)]
            if back:
                self.profile = restore_nodes(self.profile, {n: self._departed.pop(n)[1]
                                                            for n in back})
                log.info("%s: node(s) %s back unchanged: their last profile entries restored",
                         self.name, ", ".join(back))
            # A joiner judged before (not used then) keeps its measured entry: judging it
            # again after its cool-down is a re-plan, not another profiling round.
            if fresh := [n for n in joiners if n not in back and n not in self.profile.devices]:
                self.profile = with_joiners(self.fleet, self.graph, self.profile, fresh,
                                            self.policy.profile_cache)
            if not rec.plan:
                log.info("%s: node(s) %s joined; a hand-written plan is not re-planned for "
                         "a join", self.name, ", ".join(joiners))
                return None, None
            plan, mode, g, note = self._candidate(rec, strategy, constraints, set(joiners))
        except TilefleetError as exc:
            self.errors.append(f"judging joiner(s) {', '.join(joiners)}: {exc}")
            log.error("%s: could not judge joiner(s) %s: %s", self.name, ", ".join(joiners), exc)
            return None, None
        used = [n for n in joiners if n in plan.devices()]
        if not used or g <= self.policy.margin:
            log.info("%s: node(s) %s joined: %s, within the %.0f%% margin: no re-plan",
                     self.name, ", ".join(joiners), note, 100 * self.policy.margin)
            return None, None
        return Trigger(JOIN, joined=tuple(used), note=note), (plan, mode)


def _identity(resources: Mapping[str, Any]) -> tuple[Any, ...]:
    """What says a node that comes back is the same machine running the same way."""
    return tuple(resources.get(k) for k in ("board", "host", "cores", "threads", "runtime",
                                            "runtime_version", "memory_budget_bytes"))


def restore_nodes(profile: Profile, entries: Mapping[str, Profile]) -> Profile:
    """`profile` with each named node's device and links taken from the profile it had
    before it went offline (links to nodes no longer in `profile` are left out)."""
    devices, links = dict(profile.devices), dict(profile.links)
    for n, old in entries.items():
        devices[n] = old.devices[n]
        links.update({k: v for k, v in old.links.items()
                      if n in k and k[0] in devices and k[1] in devices})
    return replace(profile, devices=devices, links=links)


def watch(fleet: Fleet, name: str, model: Any, profile: Profile | None = None,
          policy: ReplanPolicy | None = None,
          on_replan: Callable[[Replan], None] | None = None) -> Watcher:
    """Start re-planning deployment `name` live (profiles the online nodes if needed)."""
    from planner.model.graph import load_model

    graph = load_model(model)
    if fleet.control.record(name) is None:
        raise FleetError(f"unknown deployment {name!r} (known: "
                         f"{', '.join(fleet.deployments()) or 'none'})")
    if profile is None:
        profile = fleet.profile(graph)
    return Watcher(fleet, name, graph, profile, policy, on_replan).start()


def enable_replanning(dep: Deployment, model: Any, **options: Any) -> Watcher:
    """Re-plan a deployment handle's deployment live; `watch` with the handle's fleet."""
    return watch(dep.fleet, dep.name, model, **options)
