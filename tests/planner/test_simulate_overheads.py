"""Overheads and shared hosts, by hand.

Stage overhead in a chain, a tile stage's gather, 3 devices on 2 cores.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner.model.graph import ModelGraph
from planner.model.tile import tile_layout
from planner.model.tilecost import tile_io_bytes
from planner.modelbuild import recipes
from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.plan import Stage, TileGrid
from planner.planning.planbuild import make_plan, ranges_to_stages
from planner.planning.profile import Device, Link, Profile, profile_from_json
from planner.planning.simulate import run_frames, simulate, timeline
from planner.planning.strategies import STRATEGIES
from planner.planning.strategies.latency import chain_latency
from planner.planning.strategies.throughput import chain_period

BW, LAT = 1e6, 1e-3
MS = 1e-3
LINK = Link(BW, LAT)


def send(nbytes: float) -> float:
    return LAT + nbytes / BW if nbytes else 0.0


@pytest.fixture(scope="module")
def g() -> ModelGraph:
    return ModelGraph(recipes.conv_stack(32))


def profile(devices: dict[str, Device], client: Device | None = None, link: Link = LINK) -> Profile:
    return Profile(
        {**devices, "client": client or Device("client", compute=False)},
        {},
        link,
        "client",
        "client",
    )


def test_stage_overhead_in_a_chain(g):
    n = len(g.ops)
    devs = {x: Device(x, speed=s, bytes_per_s=1e12, op_overhead_s=0.0, stage_overhead_s=o)
            for x, s, o in (("a", 1e8, 2e-4), ("b", 4e8, 3e-4))}
    cm = CostModel(g, profile(devs, Device("client", compute=False, stage_overhead_s=5e-5)))
    plan = make_plan(cm, ranges_to_stages([0, 5, n], ["a", "b"]), "test", Constraints())
    ta, tb = cm.range_seconds("a", 0, 5), cm.range_seconds("b", 5, n)
    expected = (
        5e-5
        + send(cm.cut_bytes[0])
        + ta
        + 2e-4
        + send(cm.cut_bytes[5])
        + tb
        + 3e-4
        + send(cm.out_bytes(0, n))
    )
    sim = simulate(plan, cm, frames=64)
    assert sim["latency_s"] == pytest.approx(expected, rel=1e-12)
    assert chain_latency(cm, [0, 5, n], ["a", "b"]) == pytest.approx(expected, rel=1e-12)
    assert sim["devices"]["a"]["busy_s"] == pytest.approx(ta + 2e-4, rel=1e-12)
    busy = [
        5e-5,
        ta + 2e-4,
        tb + 3e-4,
        send(cm.cut_bytes[0]),
        send(cm.cut_bytes[5]),
        send(cm.out_bytes(0, n)),
    ]
    assert sim["throughput_bound_fps"] == pytest.approx(1 / max(busy), rel=1e-12)
    assert chain_period(cm, [0, 5, n], ["a", "b"]) == pytest.approx(max(busy), rel=1e-12)


def test_gather_and_slicing_of_a_tile_stage(g):
    n = len(g.ops)
    k = max(i for i in range(2, 8) if len(g.live_at(i)) == 1)
    devs = {x: Device(x, speed=1e8, bytes_per_s=1e12, op_overhead_s=0.0, stage_overhead_s=1e-4,
                      piece_overhead_s=4e-4, copy_s_per_byte=1e-9) for x in "abc"}
    client = Device(
        "client", compute=False, stage_overhead_s=5e-5, piece_overhead_s=2e-4, copy_s_per_byte=2e-9
    )
    cm = CostModel(g, profile(devs, client))
    layout = tile_layout(g, 0, k, 2, 1)
    io = tile_io_bytes(g, 0, k, layout)
    tiles = TileGrid(tuple(layout.row_splits), tuple(layout.col_splits), ("a", "b"))
    plan = make_plan(
        cm, [Stage(0, (0, k), None, tiles), Stage(1, (k, n), "c")], "test", Constraints()
    )
    tasks = cm.tile_tasks(0, k, layout.row_splits, layout.col_splits, ("a", "b"))
    # The client slices 2 regions (1 extra piece) and copies their bytes; c gathers 2 pieces.
    slice_in = 5e-5 + 2e-4 + 2e-9 * sum(i for i, _ in io)
    tile = max(send(t.in_bytes) + t.seconds + 1e-4 + send(t.out_bytes) for t in tasks)
    gather = 1e-4 + 4e-4 + 1e-9 * sum(o for _, o in io)
    expected = slice_in + tile + cm.range_seconds("c", k, n) + gather + send(cm.out_bytes(k, n))
    sim = simulate(plan, cm)
    assert sim["latency_s"] == pytest.approx(expected, rel=1e-12)
    assert sim["devices"]["c"]["busy_s"] == pytest.approx(
        cm.range_seconds("c", k, n) + gather, rel=1e-12
    )


@pytest.mark.parametrize("host", ["h", ""])
def test_scatter_and_gather_within_a_host_go_one_message_at_a_time(g, host):
    """On one host (no wire) the client's sending thread and c's receiving thread handle
    one message at a time; across hosts the messages overlap on their links."""
    n = len(g.ops)
    k = max(i for i in range(2, 8) if len(g.live_at(i)) == 1)
    devs = {x: Device(x, speed=1e8, bytes_per_s=1e12, op_overhead_s=0.0, host=host, host_cores=8)
            for x in "abc"}
    cm = CostModel(g, profile(devs, Device("client", compute=False, host=host, host_cores=8)))
    layout = tile_layout(g, 0, k, 2, 1)
    tiles = TileGrid(tuple(layout.row_splits), tuple(layout.col_splits), ("a", "b"))
    plan = make_plan(
        cm, [Stage(0, (0, k), None, tiles), Stage(1, (k, n), "c")], "test", Constraints()
    )
    sends = [e for e in timeline(plan, cm, 1) if e.kind == "send"]
    scatter = sorted((e for e in sends if e.resource.startswith("client->")), key=lambda e: e.start)
    gather = sorted((e for e in sends if e.resource.endswith("->c")), key=lambda e: e.start)
    assert len(scatter) == len(gather) == 2
    for pair in (scatter, gather):
        if host:
            assert pair[1].start >= pair[0].end - 1e-15
        else:
            assert pair[1].start < pair[0].end
    tasks = cm.tile_tasks(0, k, layout.row_splits, layout.col_splits, ("a", "b"))
    first, second = (send(t.in_bytes) for t in tasks)
    if host:  # the second tile's input leaves after the first's
        assert scatter[1].end == pytest.approx(first + second, rel=1e-12)


def _equal_stages(g, host: str, cores: int, link: Link) -> tuple[CostModel, list[int]]:
    """Three devices on one host, op seconds making three stages of exactly 1 ms each."""
    n = len(g.ops)
    cuts = [0, n // 3, 2 * n // 3, n]
    secs = tuple(MS / (b - a) for a, b in zip(cuts, cuts[1:], strict=False) for _ in range(a, b))
    devs = {x: Device(x, host=host, host_cores=cores, op_seconds={g.sha256: secs}) for x in "abc"}
    return CostModel(g, profile(devs, link=link)), cuts


@pytest.mark.parametrize("cores,period", [(2, 1.5 * MS), (3, 1.0 * MS), (1, 3.0 * MS)])
def test_three_devices_share_a_hosts_cores(g, cores, period):
    free = Link(1e18, 0.0)  # transfers cost nothing, so only the cores decide
    cm, cuts = _equal_stages(g, "h", cores, free)
    plan = make_plan(cm, ranges_to_stages(cuts, list("abc")), "test", Constraints(), frames=64)
    sim = plan.predicted
    assert sim["latency_s"] == pytest.approx(3 * MS, rel=1e-9)  # one frame alone never waits
    assert 1 / sim["throughput_bound_fps"] == pytest.approx(period, rel=1e-9)
    assert 1 / sim["throughput_fps"] == pytest.approx(period, rel=0.02)
    # on 2 cores the gaps alternate 1 ms, 2 ms: average an even count
    finish, _ = run_frames(plan, cm, 40)
    assert (finish[39] - finish[19]) / 20 == pytest.approx(period, rel=1e-6)
    events = [e for e in timeline(plan, cm, 12) if e.kind == "compute"]
    for e in events:  # never more computes at once than the host has cores
        assert sum(1 for f in events if f.start <= e.start < f.end) <= cores
    assert chain_period(cm, cuts, list("abc")) == pytest.approx(period, rel=1e-9)


def test_transfers_within_a_shared_host_take_a_core(g):
    link = Link(1e9, 1e-4)
    cm, cuts = _equal_stages(g, "h", 2, link)
    plan = make_plan(cm, ranges_to_stages(cuts, list("abc")), "test", Constraints(), frames=64)
    # The client is not on the host: only a->b and b->c are CPU work of host h.
    hops = sum(link.latency + cm.cut_bytes[c] / link.bandwidth for c in cuts[1:3])
    assert 1 / plan.predicted["throughput_bound_fps"] == pytest.approx(
        (3 * MS + hops) / 2, rel=1e-9
    )
    assert plan.predicted["bottleneck"] == "host:h"
    assert chain_period(cm, cuts, list("abc")) == pytest.approx((3 * MS + hops) / 2, rel=1e-9)
    assert 1 / plan.predicted["throughput_fps"] == pytest.approx((3 * MS + hops) / 2, rel=0.05)


def test_throughput_strategy_uses_fewer_stages_on_a_shared_host(g):
    cm, cuts = _equal_stages(g, "h", 2, Link(1e18, 0.0))
    devs = {n: replace(d, stage_overhead_s=0.3 * MS) for n, d in cm.profile.devices.items()}
    prof = replace(cm.profile, devices=devs)
    plan = STRATEGIES["throughput"](g, prof, Constraints(objective="throughput"))
    # Ops cost 0.25 ms x 4, then 0.2 ms x 10. Three stages: max(1 + 0.3, (3 + 3 x 0.3) / 2 cores)
    # = 1.95 ms; two (best cut 1.4 | 1.6 ms): max(1.6 + 0.3, (3 + 2 x 0.3) / 2) = 1.9 ms.
    assert len(plan.stages) == 2
    assert plan.notes["dp_period_s"] == pytest.approx(1.9 * MS, rel=1e-9)
    assert plan.predicted["throughput_bound_fps"] == pytest.approx(1 / (1.9 * MS), rel=1e-9)
    # one shared host
    assert plan.notes["optimal"] is True and plan.notes["method"] == "dp-host-work"


def test_new_fields_round_trip_and_old_profiles_keep_their_hash():
    old = {"version": 1, "devices": {"a": {"memory_bytes": 1000}}}
    p = profile_from_json(old)
    assert p.devices["a"].stage_overhead_s == 0.0 and p.devices["a"].host == ""
    # defaults are not written: same hash as before
    assert "host" not in p.to_json()["devices"]["a"]
    new = {
        "version": 1,
        "devices": {
            "a": {
                "memory_bytes": 1000,
                "stage_overhead_s": 1e-4,
                "piece_overhead_s": 2e-5,
                "copy_s_per_byte": 3e-10,
                "host": "h1",
                "host_cores": 2,
            },
            "b": {"memory_bytes": 1000, "host": "h1"},
        },
    }
    q = profile_from_json(new)
    assert profile_from_json(q.to_json()) == q
    assert q.hosts() == {"h1": (2, ["a", "b"])}
    assert (
        q.sha256()
        != profile_from_json(
            {**new, "devices": {**new["devices"], "b": {"memory_bytes": 1000}}}
        ).sha256()
    )


def test_a_shared_host_core_never_idles_while_the_next_frame_waits():
    # Two stages and the client on a 2-core host (the 3-agent MobileNetV2 case): booked frame
    # by frame into the earliest gap, the previous frame's 0.2 ms result send split the idle
    # gap the next frame's 10.7 ms stage needed, and the stream ran at 63 fps of an 89 bound.
    g = ModelGraph(recipes.mobilenet_v2_like(96, width=1.0, num_classes=100))
    devs = {f"n{i}": Device(f"n{i}", speed=4e9, stage_overhead_s=4e-4, host="h", host_cores=2)
            for i in range(3)}
    client = Device("client", compute=False, stage_overhead_s=3e-4, host="h", host_cores=2)
    cm = CostModel(g, profile(devs, client, link=Link(5e8, 2e-4)))
    plan = make_plan(cm, ranges_to_stages([0, 28, len(g.ops)], ["n0", "n1"]), "test", Constraints())
    sim = plan.predicted
    assert sim["throughput_fps"] == pytest.approx(sim["throughput_bound_fps"], rel=1e-6)
    events = [e for e in timeline(plan, cm, 12) if e.end > e.start]  # everything here takes a core
    for e in events:  # never more at once than the host has cores
        assert sum(1 for f in events if f.start <= e.start < f.end) <= 2
