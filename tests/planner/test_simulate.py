"""Simulator against hand-computed cases: a chain, a residual cut, a tile stack, a pipeline."""

from __future__ import annotations

import pytest

from planner.model.graph import ModelGraph
from planner.model.tile import tile_layout
from planner.model.tilecost import tile_io_bytes, tile_macs
from planner.modelbuild import recipes
from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.plan import Stage, TileGrid
from planner.planning.planbuild import make_plan, ranges_to_stages
from planner.planning.profile import Device, Link, Profile
from planner.planning.simulate import run_frames, simulate
from planner.planning.strategies import STRATEGIES

BW, LAT = 1e6, 1e-3


def profile(**speeds: float) -> Profile:
    devs = {n: Device(n, speed=s, bytes_per_s=1e12, op_overhead_s=0.0) for n, s in speeds.items()}
    devs["client"] = Device("client", compute=False)
    return Profile(devs, {}, Link(BW, LAT), "client", "client")


def send(nbytes: float) -> float:
    return LAT + nbytes / BW if nbytes else 0.0


def test_chain_latency_and_bytes_by_hand():
    g = ModelGraph(recipes.conv_stack(32))
    cm = CostModel(g, profile(a=1e8, b=4e8))
    plan = make_plan(cm, ranges_to_stages([0, 5, len(g.ops)], ["a", "b"]), "test", Constraints())
    n = len(g.ops)
    inp = g.tensors[g.inputs[0]].nbytes
    cut = sum(g.tensors[t].nbytes for t in g.live_at(5))
    out = sum(g.tensors[t].nbytes for t in g.outputs)
    ta = (
        sum(
            op.macs
            * {"DEPTHWISE_CONV_2D": 3.0, "MAX_POOL_2D": 1.5, "AVERAGE_POOL_2D": 1.5}.get(
                op.type, 1.0
            )
            for op in g.ops[:5]
        )
        / 1e8
        + sum(op.activation_bytes for op in g.ops[:5]) / 1e12
    )
    tb = cm.range_seconds("b", 5, n)
    expected = send(inp) + ta + send(cut) + tb + send(out)
    sim = simulate(plan, cm)
    assert sim["latency_s"] == pytest.approx(expected, rel=1e-12)
    assert sim["bytes_per_frame"] == inp + cut + out
    assert sim["devices"]["a"]["busy_s"] == pytest.approx(ta, rel=1e-12)
    links = {(r["from"], r["to"]): r["bytes"] for r in sim["links"]}
    assert links == {("client", "a"): inp, ("a", "b"): cut, ("b", "client"): out}


def test_residual_cut_sends_every_live_tensor():
    g = ModelGraph(recipes.random_dag(2, 8))
    c = next(
        i for i in range(1, 8) if len(g.live_at(i)) >= 2 and not set(g.live_at(i)) & set(g.outputs)
    )
    cm = CostModel(g, profile(a=1e8, b=1e8))
    plan = make_plan(cm, ranges_to_stages([0, c, 8], ["a", "b"]), "test", Constraints())
    route = next(r for r in plan.routes if r.src == 0 and r.dst == 1)
    live = g.live_at(c)
    assert set(route.tensors) == {g.tensors[t].name for t in live}
    assert route.bytes == sum(g.tensors[t].nbytes for t in live)
    sim = simulate(plan, cm)
    outs_a = cm.out_bytes(0, c)
    expected = (send(cm.cut_bytes[0]) + cm.range_seconds("a", 0, c) + send(route.bytes)
                + cm.range_seconds("b", c, 8) + send(cm.out_bytes(c, 8)))
    if outs_a:  # early outputs leave from a; the frame ends when the last output arrives
        expected = max(
            expected,
            send(cm.cut_bytes[0]) + cm.range_seconds("a", 0, c) + send(route.bytes) + send(outs_a),
        )
    assert sim["latency_s"] == pytest.approx(expected, rel=1e-12)


def test_pipelined_throughput_reaches_the_bottleneck_bound():
    g = ModelGraph(recipes.conv_stack(32))
    cm = CostModel(g, profile(a=1e8, b=2e8, c=5e7))
    n = len(g.ops)
    plan = make_plan(cm, ranges_to_stages([0, 4, 9, n], ["a", "b", "c"]), "test", Constraints())
    busy = [
        cm.range_seconds("a", 0, 4),
        cm.range_seconds("b", 4, 9),
        cm.range_seconds("c", 9, n),
        send(cm.cut_bytes[0]),
        send(cm.cut_bytes[4]),
        send(cm.cut_bytes[9]),
        send(cm.out_bytes(0, n)),
    ]
    sim = simulate(plan, cm, frames=64)
    assert sim["throughput_bound_fps"] == pytest.approx(1 / max(busy), rel=1e-12)
    assert sim["throughput_fps"] == pytest.approx(1 / max(busy), rel=1e-9)
    finish, _ = run_frames(plan, cm, 10)
    gaps = [b - a for a, b in zip(finish[3:], finish[4:], strict=False)]
    assert gaps == pytest.approx([max(busy)] * len(gaps), rel=1e-9)


def test_tile_stack_with_halo_overhead():
    g = ModelGraph(recipes.conv_stack(32))
    cm = CostModel(g, profile(a=1e8, b=1e8, c=2e8))
    n = len(g.ops)
    k = max(i for i in range(2, 8) if len(g.live_at(i)) == 1)
    layout = tile_layout(g, 0, k, 2, 1)
    rows = list(layout.row_splits)
    macs = tile_macs(g, 0, k, layout)
    full = sum(op.macs for op in g.ops[:k])
    assert sum(macs) > full  # the halo is recomputed
    io = tile_io_bytes(g, 0, k, layout)
    tiles = TileGrid(tuple(rows), tuple(layout.col_splits), ("a", "b"))
    stages = [Stage(0, (0, k), None, tiles), Stage(1, (k, n), "c")]
    plan = make_plan(cm, stages, "test", Constraints())
    per_tile = [send(i) + cm.range_seconds(d, 0, k) * m / full + send(o)
                for d, m, (i, o) in zip("ab", macs, io, strict=True)]
    expected = max(per_tile) + cm.range_seconds("c", k, n) + send(cm.out_bytes(k, n))
    sim = simulate(plan, cm)
    assert sim["latency_s"] == pytest.approx(expected, rel=1e-12)
    assert cm.tile_stage_seconds(
        0, k, rows, layout.col_splits, ("a", "b"), "client", "c"
    ) == pytest.approx(max(per_tile))


@pytest.mark.parametrize("name", ["latency", "throughput"])
def test_simulator_agrees_with_the_dp(name):
    g = ModelGraph(recipes.random_dag(7, 10))
    prof = profile(a=1e8, b=3e8, c=5e7)
    plan = STRATEGIES[name](g, prof, Constraints(objective=name))
    if name == "latency":
        assert plan.predicted["latency_s"] == pytest.approx(plan.notes["dp_latency_s"], rel=1e-12)
    else:
        assert plan.predicted["throughput_bound_fps"] == pytest.approx(
            plan.notes["dp_throughput_fps"], rel=1e-12
        )
        assert plan.predicted["throughput_fps"] == pytest.approx(
            plan.notes["dp_throughput_fps"], rel=1e-6
        )
