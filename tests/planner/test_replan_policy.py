"""Re-plan decisions: triggers, the updated profile, moved stages, partial-then-full."""

from __future__ import annotations

import pytest

from planner.live.drift import Drift
from planner.live.policy import (
    DRIFT,
    JOIN,
    NODE_LOST,
    Trigger,
    adjust_profile,
    decide,
    gain,
    material_links,
    moved_stages,
    plan_figure,
    settled_joiners,
)
from planner.live.replanner import Replan, plan_next
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.planning.constraints import Constraints, Pin
from planner.planning.profile import Device, Link, Profile

ONLINE = {"state": "online"}
OFFLINE = {"state": "offline"}


def slow(node: str, factor: float = 3.0) -> Drift:
    return Drift(f"d/1/{node}", node, "stage", 0.01, 0.01 * factor, 5.0)


def test_a_lost_node_triggers_at_once_even_in_the_cool_down():
    t = decide(["a", "b"], {"a": ONLINE, "b": OFFLINE}, [], now=1.0, quiet_until=99.0)
    assert t == Trigger(NODE_LOST, ("b",))
    assert "node b went offline" in t.describe()


def test_unknown_status_is_not_a_loss():
    assert decide(["a", "b"], {"a": ONLINE}, [], 1.0, 0.0) is None


def test_drift_waits_for_the_cool_down():
    assert decide(["a"], {"a": ONLINE}, [slow("a")], now=1.0, quiet_until=2.0) is None
    t = decide(["a"], {"a": ONLINE}, [slow("a")], now=3.0, quiet_until=2.0)
    assert t is not None and t.reason == DRIFT and t.drifts == (slow("a"),)


def test_drifts_of_a_lost_node_are_dropped():
    t = decide(["a", "b"], {"a": ONLINE, "b": OFFLINE}, [slow("b"), slow("a")], 0.0, 0.0)
    assert t.lost == ("b",) and t.drifts == (slow("a"),)


def _profile(sha: str) -> Profile:
    devs = {n: Device(n, op_seconds={sha: (0.001, 0.002)}, stage_overhead_s=1e-4,
                      piece_overhead_s=2e-5, copy_s_per_byte=1e-9) for n in ("a", "b", "c")}
    devs["client"] = Device("client", compute=False)
    links = {("a", "b"): Link(1e7, 1e-3), ("b", "c"): Link(1e7, 1e-3), ("c", "a"): Link(1e7, 0)}
    return Profile(devs, links)


def test_adjust_profile_drops_the_dead_and_scales_the_slow():
    p = _profile("m")
    link = Drift("a->c", "a->c", "link", 1e7, 2e6, 0.0)
    q = adjust_profile(p, "m", Trigger(NODE_LOST, ("b",), (slow("a", 4.0), link)))
    assert "b" not in q.devices and all("b" not in k for k in q.links)
    assert q.devices["a"].op_seconds["m"] == (0.004, 0.008)
    assert q.devices["a"].speed == p.devices["a"].speed / 4
    a, a0 = q.devices["a"], p.devices["a"]  # a throttle slows its per-frame overheads too
    assert (a.stage_overhead_s, a.piece_overhead_s, a.copy_s_per_byte, a.op_overhead_s) == (
        a0.stage_overhead_s * 4, a0.piece_overhead_s * 4, a0.copy_s_per_byte * 4,
        a0.op_overhead_s * 4)
    assert q.devices["c"] == p.devices["c"]
    assert q.link("a", "c").bandwidth == 2e6 and q.link("a", "c").latency == 0
    assert p.devices["a"].op_seconds["m"] == (0.001, 0.002)  # the input is not changed


def test_moved_stages():
    from planner.fleet.record import StageEntry
    from planner.live.policy import MovedStage

    old = {"s0": StageEntry("a", "", (0, 10)), "s1": StageEntry("b", "", (10, 20))}
    new = {"s0": StageEntry("a", "", (0, 10)), "s1": StageEntry("c", "", (10, 20))}
    assert moved_stages(old, new) == (MovedStage((10, 20), ("b",), ("c",)),)
    assert [mv.to_json() for mv in moved_stages(old, new)] == [
        {"ops": [10, 20], "from": ["b"], "to": ["c"]}]
    assert moved_stages(old, old) == ()


def test_plan_next_avoids_the_lost_and_the_slow_node():
    g = ModelGraph(recipes.mobilenet_v2_like(input_size=32, seed=0), "m")
    devs = {n: Device(n) for n in ("a", "b", "c")}
    devs["client"] = Device("client", compute=False)
    p = adjust_profile(Profile(devs, {}), g.sha256,
                       Trigger(NODE_LOST, ("b",), (slow("a", 50.0),)))
    plan, mode = plan_next(g, p, None, "throughput", Constraints())
    assert mode == "full" and "b" not in plan.devices()
    ops = {d: sum(s.ops[1] - s.ops[0] for s in plan.stages if s.device == d) for d in "ac"}
    assert ops["c"] > ops["a"]
    ev = Replan("d", 2, 1, NODE_LOST, "x", mode, "throughput", [], 0.1)
    assert ev.to_json()["mode"] == "full" and ev.to_json()["epoch"] == 2


def test_plan_next_adjusts_the_old_plan_first():
    g = ModelGraph(recipes.mobilenet_v2_like(input_size=32, seed=0), "m")
    devs = {n: Device(n) for n in ("a", "b", "c", "d")}
    devs["client"] = Device("client", compute=False)
    base = Profile(devs, {})
    old, _ = plan_next(g, base, None, "throughput", Constraints())
    lost = old.devices()[0]
    p = adjust_profile(base, g.sha256, Trigger(NODE_LOST, (lost,)))
    plan, mode = plan_next(g, p, old.to_json(), "throughput", Constraints())
    assert lost not in plan.devices()
    assert mode == plan.notes["replan"]["mode"] in ("partial", "full")


def test_gain_is_relative_and_signed():
    assert gain(10.0, 8.0) == pytest.approx(0.2)  # latency: lower is better
    assert gain(-100.0, -150.0) == pytest.approx(0.5)  # minus fps: 100 -> 150 fps
    assert gain(8.0, 10.0) == pytest.approx(-0.25) and gain(3.0, 3.0) == 0.0


def test_join_trigger_names_the_joiner_and_the_gain():
    t = Trigger(JOIN, joined=("c",), note="predicted throughput 100 -> 150 (+50%)")
    assert t.describe() == "node c joined; predicted throughput 100 -> 150 (+50%)"


def test_settled_joiners_wait_skip_users_and_cool_down_per_node():
    since = {"c": 10.0, "d": 10.8, "a": 5.0, "x": 1.0}
    tried = {"c": 0.0}
    got = settled_joiners(since, in_use=["a"], excluded=["x"], last_tried=tried, now=11.0,
                          settle_s=0.5, cooldown_s=60.0)
    assert got == []  # c tried 11 s ago, d online for 0.2 s only, a in use, x excluded
    got = settled_joiners(since, ["a"], ["x"], tried, now=61.0, settle_s=0.5, cooldown_s=60.0)
    assert got == ["c", "d"]


def _chain(graph, profile, cut):
    """A throughput plan pinned to a 2-stage chain a -> b cut at op `cut`."""
    pins = (Pin(0, cut, "a"), Pin(cut, len(graph.ops), "b"))
    plan, _ = plan_next(graph, profile, None, "throughput",
                        Constraints(pins=pins, objective="throughput"))
    assert [s.device for s in plan.stages] == ["a", "b"]
    return plan


def test_a_link_drift_counts_only_when_it_moves_the_plan():
    g = ModelGraph(recipes.mobilenet_v2_like(input_size=64, seed=0), "m")
    devs = {n: Device(n) for n in ("a", "b")}
    devs["client"] = Device("client", compute=False)
    p = Profile(devs, {("a", "b"): Link(1e9, 1e-4)}, default_link=Link(1e9, 1e-4))
    plan = _chain(g, p, 6)  # ~98 KB cross a -> b per frame
    halved = Drift("a->b", "a->b", "link", 1e9, 5e8, 0.0)  # 0.1 ms more per frame
    crawling = Drift("a->b", "a->b", "link", 1e9, 5e5, 0.0)  # 0.2 s per frame
    assert material_links(g, plan, p, [halved], g.sha256, 0.1) == []
    assert material_links(g, plan, p, [crawling, slow("a")], g.sha256, 0.1) == [crawling]
    fps = -plan_figure(g, plan, adjust_profile(p, g.sha256, Trigger(DRIFT, (), (crawling,))))
    assert fps < 10 < -plan_figure(g, plan, p)
    assert plan_figure(g, plan, p, "latency") > 0  # judged by another objective on demand


def test_a_link_drift_scales_the_profiled_link_by_the_probes_ratio():
    # probes read 1.4e8 B/s on a link profiled at 1e9: a 2x slow-down halves the profile's
    # figure, it does not replace it with the probe's own (smaller) quantity
    p = _profile("m")
    half = Drift("a->b", "a->b", "link", 1.4e8, 0.7e8, 0.0)
    q = adjust_profile(p, "m", Trigger(DRIFT, (), (half,)))
    assert q.link("a", "b").bandwidth == p.link("a", "b").bandwidth / 2
    assert q.link("a", "b").latency == p.link("a", "b").latency
    gone = adjust_profile(p, "m", Trigger(NODE_LOST, ("b",), (half,)))
    assert ("a", "b") not in gone.links  # a lost node's links are not put back
