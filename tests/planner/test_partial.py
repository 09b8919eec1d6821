"""Partial re-plan (--partial-from): only neighbours move, within tolerance, vanished devices."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.modelbuild.stack import StackLayer
from planner.planning.constraints import Constraints
from planner.planning.partial import replan
from planner.planning.plan import check_plan, save_plan
from planner.planning.profile import Device, Link, Profile
from planner.planning.strategies import STRATEGIES
from planner.planning.strategies.tiles import figure


def fleet(n: int) -> Profile:
    devs = {f"d{i}": Device(f"d{i}", tier="edge", speed=(1 + i % 3) * 1e9) for i in range(n)}
    return Profile(devs, {}, Link(1.25e8, 1e-3), source="d0", sink="d0")


def slowed(p: Profile, name: str, factor: float = 0.5) -> Profile:
    return replace(
        p,
        devices={**p.devices, name: replace(p.devices[name], speed=p.devices[name].speed * factor)},
    )


def without(p: Profile, name: str) -> Profile:
    return replace(p, devices={k: v for k, v in p.devices.items() if k != name})


def deep_model(blocks: int = 75) -> bytes:
    """~300 ops of 1x1 conv, depthwise, 1x1 conv and residual ADD: a long tileable chain."""
    layers = []
    for b in range(blocks):
        s = 2 if b in (2, 10, 30, 50) else 1
        layers += [
            StackLayer("conv", kernel=1),
            StackLayer("depthwise", stride=s),
            StackLayer("conv", kernel=1),
        ]
        if s == 1:
            layers.append(StackLayer("add", skip=2))
    return recipes.conv_stack(128, 16, layers)


@pytest.fixture(scope="module")
def graph() -> ModelGraph:
    return ModelGraph(recipes.mobilenet_v2_like(96, width=0.5, num_classes=10))


def boundaries(plan) -> set[int]:
    return {s.ops[0] for s in plan.stages}


def test_no_change_keeps_the_plan(graph):
    p, c = fleet(6), Constraints(objective="throughput")
    old = STRATEGIES["throughput"](graph, p, c)
    new = replan(graph, old, p, c, STRATEGIES["throughput"])
    assert new.notes["replan"]["mode"] == "partial" and new.notes["replan"]["moved_stages"] == []
    assert [(s.ops, s.device) for s in new.stages] == [(s.ops, s.device) for s in old.stages]


def test_slowdown_moves_only_neighbouring_boundaries(graph):
    p, c = fleet(6), Constraints(objective="throughput")
    old = STRATEGIES["throughput"](graph, p, c)
    victim = old.stages[len(old.stages) // 2].device
    new = replan(graph, old, slowed(p, victim), c, STRATEGIES["throughput"], tolerance=10.0)
    rec = new.notes["replan"]
    assert rec["mode"] == "partial" and victim in rec["changed"]
    # Boundaries not touching the victim's stage stay where they were; devices stay too.
    order = sorted(old.stages, key=lambda s: s.ops[0])
    k = next(i for i, s in enumerate(order) if s.device == victim)
    fixed = boundaries(old) - {order[k].ops[0], order[k].ops[1]}
    assert fixed <= boundaries(new)
    assert [s.device for s in new.stages] == [s.device for s in order]
    assert set(rec["moved_stages"]) <= {k - 1, k, k + 1}


def test_within_tolerance_or_full(graph):
    p, c = fleet(6), Constraints()
    old = STRATEGIES["latency"](graph, p, c)
    victim = old.stages[0].device
    new_profile = slowed(p, victim, 0.2)
    full = STRATEGIES["latency"](graph, new_profile, c)
    new = replan(graph, old, new_profile, c, STRATEGIES["latency"])
    rec = new.notes["replan"]
    if rec["mode"] == "partial":
        assert figure(new) <= figure(full) * 1.10 + 1e-12
    else:
        assert figure(new) == pytest.approx(figure(full)) and "tolerance" in rec["reason"]


@pytest.mark.parametrize("strategy", ["throughput", "tiles"])
def test_vanished_device(graph, strategy):
    p = fleet(6)
    c = Constraints(objective="throughput" if strategy == "throughput" else "latency")
    old = STRATEGIES[strategy](graph, p, c)
    victim = old.devices()[-1]
    new = replan(graph, old, without(p, victim), c, STRATEGIES[strategy], tolerance=10.0)
    assert victim not in new.devices() and victim in new.notes["replan"]["vanished"]
    check_plan(new, graph, without(p, victim).devices)
    assert new.notes["replan"]["mode"] == "partial"


def test_vanished_device_on_300_ops_16_devices():
    # planning time for this case is a figure of tools/bench_planner.py ("partial" rows)
    graph = ModelGraph(deep_model())
    assert len(graph.ops) >= 290
    p, c = fleet(16), Constraints(objective="throughput")
    old = STRATEGIES["throughput"](graph, p, c)
    victim = old.stages[-1].device
    new = replan(graph, old, without(p, victim), c, STRATEGIES["throughput"])
    assert victim not in new.devices()
    check_plan(new, graph, without(p, victim).devices)


def test_cli_partial_from(graph, tmp_path):
    p = fleet(4)
    old = STRATEGIES["throughput"](graph, p, Constraints(objective="throughput"))
    save_plan(old, tmp_path / "old.json")
    model = tmp_path / "m.tflite"
    model.write_bytes(graph.data)
    victim = next(d for d in reversed(old.devices()) if d != p.source)
    (tmp_path / "p.json").write_text(json.dumps(without(p, victim).to_json()))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "planner.cli",
            "plan",
            str(model),
            "--profile",
            str(tmp_path / "p.json"),
            "--strategy",
            "throughput",
            "--partial-from",
            str(tmp_path / "old.json"),
            "-o",
            str(tmp_path / "new.json"),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (
        doc["notes"]["replan"]["mode"] in ("partial", "full") and doc["notes"]["replan"]["reason"]
    )
    assert victim in doc["notes"]["replan"]["vanished"]
