"""Typed deployment records and re-plan events: JSON round trips, older documents read."""

from __future__ import annotations

import json

import pytest

from planner.errors import FleetError
from planner.fleet.record import Record, StageEntry
from planner.fleet.wiring import wire
from planner.live.policy import MovedStage
from planner.live.replanner import Replan
from planner.model.graph import ModelGraph
from planner.planning.plan import Stage, manual_plan, tile_stage
from tests.node.models import small_cnn

EP = {n: f"tcp://127.0.0.1:{5000 + i}" for i, n in enumerate("abc")}


def _wire_json(doc: dict) -> dict:
    return json.loads(json.dumps(doc))  # what the broker carries


def test_record_round_trips_with_typed_stages_and_entry_routes():
    graph = ModelGraph(small_cnn())
    stages = (tile_stage(graph, 0, (0, 2), 2, 1, ("a", "b")), Stage(1, (2, 6), "c"))
    w = wire(graph, stages, EP)
    plan = manual_plan(graph, stages)
    rec = Record(name="d", fleet="default", epoch=3, model={"sha256": graph.sha256},
                 nodes={n: {"data_endpoint": ep} for n, ep in EP.items()},
                 stages=dict(w.stages), entry=tuple(w.entry), results=w.results,
                 strategy="throughput", objective="throughput", plan=plan.to_json(),
                 predicted={"throughput_fps": 10.0}, created=1.0, updated=2.0,
                 extra={"switch": {"loaded": 3}})
    back = Record.from_json(_wire_json(rec.to_json()))
    assert back == rec
    assert all(isinstance(s, StageEntry) for s in back.stages.values())
    tiles = [s for s in back.stages.values() if s.tile is not None]
    assert len(tiles) == 2 and tiles[0].tile == w.stages["s0t0"].tile
    assert back.entry_routes() == tuple(w.entry) and back.stage_nodes() == ["a", "b", "c"]


def test_bad_records_name_what_is_wrong():
    doc = {"type": "deployment", "v": 1, "name": "d", "fleet": "f", "epoch": 1, "model": {},
           "nodes": {}, "stages": {"s0": {"node": "a", "part": "", "ops": [0]}}, "entry": [],
           "results": {}}
    with pytest.raises(FleetError, match="deployment record 'd'"):
        Record.from_json(doc)
    with pytest.raises(FleetError, match="version 2 is not 1"):
        Record.from_json({**doc, "v": 2})


def test_replan_event_round_trips():
    ev = Replan("d", 4, 3, "join", "node c joined", "full", "throughput",
                (MovedStage((0, 10), ("a",), ("a", "c")), MovedStage((10, 20), (), ("b",))),
                0.5, 0.1, {"throughput_fps": 12.0}, 1234.5, "throughput")
    doc = _wire_json(ev.to_json())
    assert doc["moved"][0] == {"ops": [0, 10], "from": ["a"], "to": ["a", "c"]}
    assert Replan.from_json(doc) == ev
    with pytest.raises(FleetError, match="not a re-plan"):
        Replan.from_json({"type": "deployment"})
    with pytest.raises(FleetError, match="bad or missing key"):
        Replan.from_json({**doc, "epoch": None})
