"""Watcher.step with an in-memory fleet: what it feeds the policy and when it re-plans."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from node.wire.results import ProbeResult
from planner.errors import FleetError
from planner.live import watcher as w
from planner.live.drift import DriftRule
from planner.live.replanner import Replan
from planner.planning.profile import Device, Link, Profile


def _record(epoch: int, nodes=("a", "b")) -> dict:
    return {"type": "deployment", "v": 1, "name": "d", "fleet": "default", "epoch": epoch,
            "model": {}, "layout": [], "strategy": "throughput", "entry": [], "results": {},
            "nodes": {n: {} for n in nodes},
            "stages": {f"s{i}": {"node": n, "ops": [i, i + 1], "part": "", "tile": None}
                       for i, n in enumerate(nodes)}}


class FakeControl:
    def __init__(self) -> None:
        self.records = {"d": _record(1)}
        self.status = {"a": {"state": "online"}, "b": {"state": "online"}}
        self.metrics: dict = {}
        self.resources = {n: {"service_endpoint": f"tcp://{n}:1"} for n in ("a", "b")}

    def online(self) -> dict:
        return {n: self.resources.get(n, {}) for n, s in self.status.items()
                if s.get("state") == "online"}

    def record(self, name: str):
        return self.records.get(name)

    def metrics_round(self, t: int, slow_b: float = 1.0) -> None:
        self.metrics = {n: {"stages": {f"d/{self.records['d']['epoch']}/s{i}": {
            "run_mean_s": 0.01 * (slow_b if n == "b" else 1.0), "frames": 400 + 20 * t}}}
            for i, n in enumerate(("a", "b"))}


@pytest.fixture
def setup(monkeypatch):
    control = FakeControl()
    calls = []

    def execute(ctl, graph, rec, profile, trig, strategy, constraints, **kw):
        calls.append(trig)
        if getattr(execute, "fail", False):
            raise FleetError("node c did not answer")
        control.records["d"] = _record(rec.epoch + 1, ("a",))
        ev = Replan("d", rec.epoch + 1, rec.epoch, trig.reason, trig.describe(), "full",
                    strategy)
        return ev, None, profile

    monkeypatch.setattr(w, "execute", execute)
    prof = Profile({"a": Device("a"), "b": Device("b")}, {})
    policy = w.ReplanPolicy(rule=DriftRule(settle_frames=0), cooldown_s=10, retry_s=2)
    watcher = w.Watcher(SimpleNamespace(control=control), "d", graph=None, profile=prof,
                        policy=policy)
    return control, watcher, calls, execute


def test_sustained_slow_down_replans_once_then_cools_down(setup):
    control, watcher, calls, _ = setup
    for t in range(4):  # warm-up and an in-band sample
        control.metrics_round(t)
        assert watcher.step(float(t)) is None
    for t in range(4, 6):
        control.metrics_round(t, slow_b=3.0)
        assert watcher.step(float(t)) is None  # not sustained yet
    control.metrics_round(6, slow_b=3.0)
    ev = watcher.step(6.0)
    assert ev is not None and ev.reason == "drift" and len(calls) == 1
    assert calls[0].drifts[0].subject == "b" and watcher.replans == [ev]
    assert watcher.step(7.0) is None  # new epoch: new history, and the cool-down


def test_node_loss_replans_at_once_and_failures_back_off(setup):
    control, watcher, calls, execute = setup
    execute.fail = True
    control.status["b"] = {"state": "offline"}
    assert watcher.step(0.0) is None and len(calls) == 1 and watcher.errors
    assert watcher.step(0.5) is None and len(calls) == 1  # retry_s not over yet
    execute.fail = False
    ev = watcher.step(3.0)
    assert ev is not None and ev.reason == "node_lost" and calls[-1].lost == ("b",)


def test_no_record_no_action(setup):
    control, watcher, calls, _ = setup
    control.records.clear()
    assert watcher.step(0.0) is None and not calls


# ---- joins and link probes: a real model and plan, the fleet in memory -------------------
@pytest.fixture(scope="module")
def graph():
    from planner.model.graph import ModelGraph
    from planner.modelbuild import recipes

    return ModelGraph(recipes.mobilenet_v2_like(input_size=64, seed=0), "m")


def _planned(graph, control: FakeControl, profile: Profile, cut: int = 6) -> None:
    """Record `d` runs a throughput plan pinned to the chain a -> b cut at `cut`."""
    from planner.live.replanner import plan_next
    from planner.planning.constraints import Constraints, Pin

    pins = (Pin(0, cut, "a"), Pin(cut, len(graph.ops), "b"))
    plan, _ = plan_next(graph, profile, None, "throughput",
                        Constraints(pins=pins, objective="throughput"))
    control.records["d"]["plan"] = plan.to_json()
    control.records["d"]["stages"] = {
        "s0": {"node": "a", "ops": [0, cut], "part": "", "tile": None},
        "s1": {"node": "b", "ops": [cut, len(graph.ops)], "part": "", "tile": None}}


def _profile(*names: str, speed: float = 1e9) -> Profile:
    devs = {n: Device(n, speed=speed) for n in names}
    devs["client"] = Device("client", compute=False)
    return Profile(devs, {}, default_link=Link(1e9, 1e-4))


@pytest.fixture
def live(setup, graph, monkeypatch):
    """The `setup` watcher with a real graph, a real plan and joiners measured as given."""
    from planner.planning.constraints import Constraints

    control, watcher, calls, _ = setup
    watcher.graph, watcher.profile = graph, _profile("a", "b")
    watcher.policy = w.ReplanPolicy(rule=DriftRule(settle_frames=0), cooldown_s=10,
                                    join_settle_s=0.5, join_cooldown_s=60,
                                    constraints=Constraints(objective="throughput"))
    _planned(graph, control, watcher.profile)
    measured: dict[str, Device] = {}
    judged: list[list[str]] = []

    def with_joiners(fleet, g, profile, joiners, cache_dir=None):
        judged.append(list(joiners))
        devices = {**profile.devices, **{n: measured[n] for n in joiners}}
        return Profile(devices, profile.links, default_link=profile.default_link)

    import planner.live.joins as joins

    monkeypatch.setattr(joins, "with_joiners", with_joiners)
    return control, watcher, calls, measured, judged


def _online(control: FakeControl, node: str, up: bool = True) -> None:
    control.status[node] = {"state": "online" if up else "offline"}
    control.resources[node] = {"service_endpoint": f"tcp://{node}:1"}


def test_a_faster_joiner_is_judged_after_settling_and_replanned_onto(live):
    control, watcher, calls, measured, judged = live
    measured["c"] = Device("c", speed=1e11)  # 100x the others
    assert watcher.step(0.0) is None  # nodes online at the start have not joined
    _online(control, "c")
    assert watcher.step(1.0) is None and watcher.step(1.3) is None and not judged  # settling
    ev = watcher.step(1.6)
    assert judged == [["c"]] and ev is not None and ev.reason == "join"
    assert calls[-1].joined == ("c",) and "node c joined" in ev.detail
    assert "predicted throughput" in ev.detail and "c" in watcher.profile.devices


def test_a_joiner_that_would_not_help_is_judged_once_and_kept_in_the_profile(live):
    control, watcher, calls, measured, judged = live
    measured["c"] = Device("c", speed=1e6)  # far slower than a and b
    watcher.step(0.0)
    _online(control, "c")
    watcher.step(1.0)
    assert watcher.step(2.0) is None and watcher.step(3.0) is None
    assert judged == [["c"]] and not calls and "c" in watcher.profile.devices


def test_a_flapping_node_is_judged_at_most_once_per_cool_down(live):
    control, watcher, calls, measured, judged = live
    measured["c"] = Device("c", speed=1e6)
    watcher.step(0.0)
    for t in range(1, 40, 2):  # online for 1 s, offline for 1 s, again and again
        _online(control, "c", up=True)
        watcher.step(float(t))
        watcher.step(t + 0.9)
        _online(control, "c", up=False)
        watcher.step(t + 1.0)
    assert judged == [["c"]] and not calls
    _online(control, "c")
    watcher.step(70.0)
    watcher.step(71.0)
    # after the cool-down it is judged again, from the entry measured the first time
    assert watcher._join_tried["c"] >= 70.0 and judged == [["c"]] and not calls


class Prober:
    """Answers the watcher's probe commands: `secs` per probe message on a -> b."""

    def __init__(self, control: FakeControl) -> None:
        self.secs = 16_000 / 1e9
        self.asked: list[tuple[str, str]] = []
        control.command = self.command

    def command(self, node, cmd_cls, timeout_s, endpoint, nbytes, repetitions):
        self.asked.append((node, endpoint))
        return ProbeResult(rtt_s=self.secs, transfer_s=self.secs, nbytes=nbytes,
                           bandwidth_bps=8e15)


def test_link_probes_replan_on_a_slow_link_and_ignore_a_harmless_swing(live):
    control, watcher, calls, _, _ = live
    control.records["d"]["nodes"] = {"a": {}, "b": {"service_endpoint": "tcp://b:1"}}
    watcher.policy = replace(watcher.policy, link_probe_s=1.0, probe_bytes=16_000, join=False)
    probe = Prober(control)
    for t in range(2):  # baseline: 1 GB/s
        watcher.step(float(t))
    probe.secs *= 3  # a sustained 3x drop, but it costs 0.2 ms per 98 KB frame
    for t in range(2, 6):
        assert watcher.step(float(t)) is None
    probe.secs = 16_000 / 5e5  # 500 KB/s: the 98 KB activation takes 0.2 s
    evs = [watcher.step(float(t)) for t in range(6, 8)]
    assert probe.asked[0] == ("a", "tcp://b:1")
    # the run of slow samples began in the harmless phase; its median is the crawl
    assert evs[0] is None and evs[1] is not None and evs[1].reason == "drift"
    assert len(calls) == 1
    assert [d.key for d in calls[-1].drifts] == ["a->b"]
    assert calls[-1].drifts[0].measured == pytest.approx(5e5)


def test_a_link_traffic_was_moved_off_is_watched_until_it_recovers(live, graph):
    from planner.live.replanner import plan_next
    from planner.planning.constraints import Constraints, Pin

    control, watcher, calls, _, _ = live
    control.records["d"]["nodes"] = {"a": {}, "b": {"service_endpoint": "tcp://b:1"}}
    watcher.policy = replace(watcher.policy, link_probe_s=1.0, probe_bytes=16_000, join=False)
    probe = Prober(control)
    for t in range(2):
        watcher.step(float(t))
    probe.secs = 16_000 / 5e5  # the link crawls: re-planned off it (to "a" alone)
    evs = [watcher.step(float(t)) for t in range(2, 6)]
    assert evs[-2] is not None and list(watcher.links.degraded) == [("a", "b")]
    watcher.profile = replace(watcher.profile, links={("a", "b"): Link(5e5, 1e-4)})
    alone, _ = plan_next(graph, watcher.profile, None, "throughput",
                         Constraints(pins=(Pin(0, len(graph.ops), "a"),), objective="throughput"))
    control.records["d"]["plan"] = alone.to_json()
    asked = len(probe.asked)
    for t in range(6, 10):  # still slow: probed although no stage pair uses it now
        assert watcher.step(float(t)) is None
    assert len(probe.asked) == asked + 4
    probe.secs = 16_000 / 1e9  # healthy again; the cool-down of the first re-plan ends at 14
    evs = [watcher.step(float(t)) for t in range(10, 16)]
    assert [e is not None for e in evs] == [False] * 4 + [True, False]
    assert "link(s) a->b recovered" in calls[-1].note and not watcher.links.degraded
    assert watcher.profile.link("a", "b").bandwidth == 1e9  # the profile's value, restored


def test_a_node_back_unchanged_gets_its_last_profile_entry():
    devs = {n: Device(n, speed=s) for n, s in (("a", 1e9), ("b", 2e9), ("client", 1e9))}
    links = {("a", "b"): Link(1e7, 1e-4), ("b", "a"): Link(2e7, 1e-4),
             ("client", "b"): Link(3e7, 1e-4), ("b", "c"): Link(4e7, 1e-4)}
    before = Profile(devs, links)
    after_loss = Profile({n: d for n, d in devs.items() if n != "b"},
                         {k: v for k, v in links.items() if "b" not in k})
    back = w.restore_nodes(after_loss, {"b": before})
    assert back.devices["b"] == devs["b"] and back.link("b", "a") == links[("b", "a")]
    assert back.link("client", "b") == links[("client", "b")]
    assert ("b", "c") not in back.links  # c is not in the profile any more
    assert after_loss.devices.keys() == {"a", "client"}  # the input is not changed
    same = {"board": "rpi4", "host": "h1", "cores": 4, "threads": 4, "runtime": "litert",
            "runtime_version": "1.2", "memory_budget_bytes": 1 << 29, "load": 0.5}
    assert w._identity(same) == w._identity({**same, "load": 3.0})  # load is not identity
    assert w._identity(same) != w._identity({**same, "host": "h2"})  # another machine
    assert w._identity(same) != w._identity({**same, "threads": 1})  # runs another way


def test_a_spare_node_that_went_offline_is_not_planned_onto(setup):
    control, watcher, calls, _ = setup
    control.status["c"] = {"state": "online"}
    control.resources["c"] = {"service_endpoint": "tcp://c:1", "board": "rpi4", "host": "hc"}
    watcher.profile = replace(watcher.profile, devices={**watcher.profile.devices,
                                                        "c": Device("c")},
                              links={("a", "c"): Link(1e7, 1e-4)})
    watcher.step(0.0)  # c is seen online (a spare: not in the deployment)
    control.status["c"] = {"state": "offline"}  # its Last Will
    control.status["b"] = {"state": "offline"}  # then a stage node dies: re-plan
    ev = watcher.step(1.0)
    assert ev is not None and ev.reason == "node_lost" and len(calls) == 1
    assert "c" not in watcher.profile.devices and ("a", "c") not in watcher.profile.links
    assert "c" in watcher._departed  # kept for when it comes back


# ---- the objective belongs to the deployment ------------------------------------------------
@pytest.fixture
def joiner_of(setup, graph, monkeypatch):
    """A watcher whose policy names no objective, on a record saying `objective`, with an
    equal joiner c: it helps throughput (a third pipeline stage) but not latency."""
    control, watcher, _, _ = setup
    seen: list = []

    def execute(ctl, g, rec, profile, trig, strategy, constraints, **kw):
        seen.append(constraints)
        ev = Replan("d", rec.epoch + 1, rec.epoch, trig.reason, trig.describe(), "full",
                    strategy)
        return ev, None, profile

    monkeypatch.setattr(w, "execute", execute)
    import planner.live.joins as joins

    monkeypatch.setattr(joins, "with_joiners", lambda fleet, g, profile, joiners, cache=None:
                        Profile({**profile.devices, "c": Device("c", speed=1e9)},
                                profile.links, default_link=profile.default_link))

    def make(objective: str, override: str | None = None):
        watcher.graph, watcher.profile = graph, _profile("a", "b")
        watcher.policy = w.ReplanPolicy(rule=DriftRule(settle_frames=0), cooldown_s=10,
                                        join_settle_s=0.5, objective=override)
        _planned(graph, control, watcher.profile)
        control.records["d"]["objective"] = objective
        watcher.step(0.0)
        _online(control, "c")
        watcher.step(1.0)
        return watcher.step(2.0), seen

    return make


def test_a_joiner_is_judged_on_the_deployments_throughput_objective(joiner_of):
    ev, seen = joiner_of("throughput")
    assert ev is not None and ev.reason == "join" and "predicted throughput" in ev.detail
    assert [c.objective for c in seen] == ["throughput"]  # the re-plan optimises it too


def test_the_same_joiner_does_not_help_a_latency_deployment(joiner_of):
    ev, seen = joiner_of("latency")
    assert ev is None and not seen


def test_watch_objective_overrides_the_deployments_only_when_given(joiner_of):
    ev, seen = joiner_of("throughput", override="latency")
    assert ev is None and not seen


def test_a_record_without_an_objective_takes_its_plans():
    from planner.fleet.record import Record

    doc = _record(1)
    doc["plan"] = {"objective": "throughput"}
    assert Record.from_json(doc).objective == "throughput"
    assert Record.from_json(_record(1)).objective == ""
