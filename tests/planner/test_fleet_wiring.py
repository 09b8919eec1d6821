"""Layouts and wiring: routes, piece counts and entry routes, without any network."""

from __future__ import annotations

import pytest

from node.wire.frames import CLIENT
from planner.errors import PlanError
from planner.fleet.wiring import cut_cached, intersect, wire
from planner.model.cut import cut_range
from planner.model.graph import ModelGraph
from planner.planning.layout import StageLayout, chain, check_layout, from_plan, layout_devices
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
    w = wire(graph, (StageLayout(0, 2, ("a", "b"), 2, 2), StageLayout(2, 6, ("c",))), EP)
    tiles = [sid for sid in w.stages if sid.startswith("s0t")]
    assert len(tiles) == 4 and {w.stages[t].node for t in tiles} == {"a", "b"}
    assert len({w.stages[t].part for t in tiles}) == 1  # one part, four tiles
    assert sorted(r.stage for r in w.entry) == sorted(tiles)
    for r in w.entry:  # the client slices each tile's input window
        assert r.region == w.stages[r.stage].tile.input_region
    (s1,) = w.specs["c"]
    assert s1.inputs[0].pieces == 4  # the next stage is the gather stage


def test_consecutive_tile_stages_exchange_overlaps(graph):
    w = wire(graph, (StageLayout(0, 2, ("a", "b"), 2, 2), StageLayout(2, 4, ("c", "d"), 2, 1),
                     StageLayout(4, 6, ("a",))), EP)
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


def test_unknown_node_and_bad_layouts_are_refused(graph):
    with pytest.raises(PlanError, match="unknown node 'zz'"):
        wire(graph, chain(len(graph.ops), [3], ["a", "zz"]), EP)
    with pytest.raises(PlanError, match="continue the chain"):
        check_layout([StageLayout(0, 2, ("a",)), StageLayout(3, 6, ("b",))], 6)
    with pytest.raises(PlanError, match="ends at op"):
        check_layout([StageLayout(0, 2, ("a",))], 6)
    with pytest.raises(PlanError, match="untiled range"):
        check_layout([StageLayout(0, 6, ("a", "b"))], 6)


def test_layout_from_plan_json_and_back():
    doc = {"stages": [{"id": 0, "ops": [0, 2], "tiles": {"rows": [0, 16, 32], "cols": [0, 32],
                                                       "devices": ["a", "b"]}},
                      {"id": 1, "ops": [2, 6], "device": "c"}]}
    lay = from_plan(doc)
    assert lay[0].rows == (0, 16, 32) and lay[0].devices == ("a", "b") and lay[1].devices == ("c",)
    assert [StageLayout.from_json(s.to_json()) for s in lay] == list(lay)
    assert layout_devices(lay) == ["a", "b", "c"]
    with pytest.raises(PlanError):
        from_plan({"stages": [{"id": 0}]})


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
