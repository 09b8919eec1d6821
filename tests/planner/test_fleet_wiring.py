"""Plan stages and wiring: routes, piece counts and entry routes, without any network."""

from __future__ import annotations

import pytest

from node.wire.frames import CLIENT
from planner.errors import PlanError
from planner.fleet.wiring import cut_cached, intersect, wire
from planner.model.cut import cut_range
from planner.model.graph import ModelGraph
from planner.planning.plan import (
    Stage,
    chain,
    check_coverage,
    manual_plan,
    plan_from_json,
    tile_stage,
)
from tests.node.models import small_cnn

EP = {n: f"tcp://127.0.0.1:{5000 + i}" for i, n in enumerate("abcd")}


@pytest.fixture(scope="module")
def graph() -> ModelGraph:
    return ModelGraph(small_cnn())


def _routes(w, node):
    return {s.id: [(r.tensor, r.to, r.stage, r.region) for r in s.routes] for s in w.specs[node]}


def test_chain_routes_follow_tensor_names(graph):
    w = wire(graph, chain(len(graph.ops), [2, 4], ["a", "b", "c"]), EP)
    assert [s.id for s in w.specs["a"]] == ["s0"]
    assert _routes(w, "a")["s0"] == [("conv2d_1", EP["b"], "s1", None)]
    assert _routes(w, "c")["s2"] == [(graph.tensors[graph.outputs[0]].name, CLIENT, "", None)]
    assert [(r.tensor, r.to, r.stage) for r in w.entry] == [("input", EP["a"], "s0")]
    assert all(i.pieces == 1 for specs in w.specs.values() for s in specs for i in s.inputs)
    assert len(w.parts) == 3 and w.parts_of("b") == [w.stages["s1"].part]


def test_tile_stage_fed_by_client_and_gathered_by_next_stage(graph):
    w = wire(graph, (tile_stage(graph, 0, (0, 2), 2, 2, ("a", "b")), Stage(1, (2, 6), "c")), EP)
    tiles = [sid for sid in w.stages if sid.startswith("s0t")]
    assert len(tiles) == 4 and {w.stages[t].node for t in tiles} == {"a", "b"}
    assert len({w.stages[t].part for t in tiles}) == 1  # one part, four tiles
    assert sorted(r.stage for r in w.entry) == sorted(tiles)
    for r in w.entry:  # the client slices each tile's input window
        assert r.region == w.stages[r.stage].tile.input_region
    (s1,) = w.specs["c"]
    assert s1.inputs[0].pieces == 4  # the next stage is the gather stage


def test_consecutive_tile_stages_exchange_overlaps(graph):
    w = wire(graph, (tile_stage(graph, 0, (0, 2), 2, 2, ("a", "b")),
                     tile_stage(graph, 1, (2, 4), 2, 1, ("c", "d")), Stage(2, (4, 6), "a")), EP)
    by_id = {s.id: s for specs in w.specs.values() for s in specs}
    for sid in ("s1t0", "s1t1"):
        win = by_id[sid].tile.input_region
        senders = [(s, r) for s in by_id.values() for r in s.routes if r.stage == sid]
        assert by_id[sid].inputs[0].pieces == len(senders)
        area = 0
        for s, r in senders:
            region = r.region or s.tile.output_region
            assert intersect(region, win, (1, 32, 32, 8)) == region
            area += (region[1] - region[0]) * (region[3] - region[2])
        assert area == (win[1] - win[0]) * (win[3] - win[2])  # the pieces tile the window


def test_unknown_node_and_bad_stage_lists_are_refused(graph):
    with pytest.raises(PlanError, match="unknown node 'zz'"):
        wire(graph, chain(len(graph.ops), [3], ["a", "zz"]), EP)
    with pytest.raises(PlanError, match=r"leave ops \[2, 3\) unassigned"):
        check_coverage([Stage(0, (0, 2), "a"), Stage(1, (3, 6), "b")], 6)
    with pytest.raises(PlanError, match="ends at op|end at op"):
        wire(graph, [Stage(0, (0, 2), "a")], EP)
    with pytest.raises(PlanError, match="repeat a stage id"):
        check_coverage([Stage(0, (0, 2), "a"), Stage(0, (2, 6), "b")], 6)


def test_stages_come_from_the_one_plan_reader(graph):
    """A plan written and read back wires the same; other spellings are refused."""
    stages = (tile_stage(graph, 0, (0, 2), (0, 16, 32), 1, ("a", "b")), Stage(1, (2, 6), "c"))
    doc = manual_plan(graph, stages).to_json()
    plan = plan_from_json(doc)
    assert plan.stages == stages and plan.devices() == ["a", "b", "c"]
    assert plan.stages[0].tiles.rows == (0, 16, 32) and plan.stages[0].tiles.devices == ("a", "b")
    assert wire(graph, plan.stages, EP).specs == wire(graph, stages, EP).specs
    for lenient in ({"id": 1, "op_range": [2, 6], "device": "c"},  # accepted by the old reader
                    {"id": 1, "ops": [2, 6], "devices": ["c"]}):
        with pytest.raises(PlanError, match=r"stages\[1\]: missing key"):
            plan_from_json({**doc, "stages": [doc["stages"][0], lenient]})


def test_a_move_rewires_neighbours_and_keeps_every_part_and_stage_spec_it_can(graph):
    """Moving stage s1 from b to d: same parts (cut once, cached), s0 re-routed to d,
    s2's spec unchanged: what lets the nodes keep s0's and s2's interpreters."""
    lay = chain(len(graph.ops), [2, 4], ["a", "b", "c"])
    before = wire(graph, lay, EP)
    after = wire(graph, chain(len(graph.ops), [2, 4], ["a", "d", "c"]), EP)
    assert {sid: s.part for sid, s in before.stages.items()} == \
        {sid: s.part for sid, s in after.stages.items()}
    assert all(after.parts[sha] is before.parts[sha] for sha in before.parts)  # not re-cut
    assert cut_cached(graph, 2, 4) == cut_range(graph, 2, 4)
    (s0_before,), (s0_after,) = before.specs["a"], after.specs["a"]
    assert s0_before.part == s0_after.part and s0_after.routes[0].to == EP["d"]
    assert before.specs["c"] == after.specs["c"]  # the same next hops and input routing
    assert "b" not in after.specs and after.specs["d"] == before.specs["b"]
