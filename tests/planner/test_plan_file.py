"""Plan format: round trip, validation errors naming the key, model/device checks."""

from __future__ import annotations

import json

import pytest

from planner.errors import PlanError
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.planning.constraints import Constraints
from planner.planning.plan import (
    Plan,
    Route,
    Stage,
    TileGrid,
    check_plan,
    load_plan,
    plan_from_json,
    save_plan,
)
from planner.planning.strategies import STRATEGIES

from .planning_helpers import random_profile


def sample() -> Plan:
    return Plan(
        "m.tflite",
        "ab" * 32,
        "cd" * 32,
        "hand",
        "latency",
        "client",
        "client",
        (Stage(0, (0, 3), None, TileGrid((0, 4, 8), (0, 8), ("a", "b"))), Stage(1, (3, 6), "c")),
        (
            Route("source", 0, ("in",), 12),
            Route(0, 1, ("x", "y"), 40),
            Route(1, "sink", ("out",), 4),
        ),
        {"latency_s": 0.1},
        {"problem": "test"},
    )


def test_round_trip(tmp_path):
    save_plan(sample(), tmp_path / "p.json")
    assert load_plan(tmp_path / "p.json") == sample()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(version=2), "key 'version' must be 1"),
    (lambda d: d["stages"][1].pop("device"), "stages[1]: missing key 'device'"),
    (lambda d: d["stages"][1].update(ops=[5, 5]), "stages[1].ops: [5, 5) is not a non-empty range"),
    (lambda d: d["stages"][0]["tiles"].update(devices=["a"]), "stages[0].tiles.devices"),
    (lambda d: d["stages"][0]["tiles"].update(rows=[4, 0]), "stages[0].tiles.rows"),
    (lambda d: d["routes"][1].update(to=9), "routes[1].to"),
    (lambda d: d["model"].pop("sha256"), "model: missing key 'sha256'"),
])
def test_validation_names_the_key(tmp_path, mutate, message):
    doc = sample().to_json()
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PlanError) as err:
        load_plan(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_check_plan_against_model_and_devices():
    g = ModelGraph(recipes.random_dag(4, 6))
    prof = random_profile(2, 2)
    plan = STRATEGIES["even"](g, prof, Constraints())
    check_plan(plan, g, prof.devices)
    with pytest.raises(PlanError, match="unknown node 'd1'"):
        check_plan(plan, g, ["d0", "client"])
    other = ModelGraph(recipes.random_dag(5, 6))
    with pytest.raises(PlanError, match="plan is for model"):
        check_plan(plan, other, prof.devices)
    doc = plan.to_json()
    doc["stages"] = doc["stages"][:1]
    doc["routes"] = [
        r for r in doc["routes"] if r["from"] in ("source", 0) and r["to"] in ("sink", 0)
    ]
    with pytest.raises(PlanError, match="stages end at op"):
        check_plan(plan_from_json(doc), g, prof.devices)
