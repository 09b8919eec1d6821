"""Tile strategies (tiles, hybrid, ftp): valid plans, tiling pays where it should, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from planner.errors import PlanError, TileError
from planner.model.graph import ModelGraph
from planner.model.tile import tile_layout
from planner.modelbuild import GraphBuilder, recipes
from planner.planning.constraints import Constraints, Pin
from planner.planning.costmodel import CostModel
from planner.planning.plan import Stage, check_plan
from planner.planning.planbuild import make_plan
from planner.planning.profile import Device, Link, Profile
from planner.planning.simulate import plan_memory
from planner.planning.strategies import STRATEGIES

TILE_STRATEGIES = ("tiles", "hybrid", "ftp")


def fleet(
    edges: int = 4,
    cam_speed: float = 2e8,
    edge_speed: float = 4e9,
    bandwidth: float = 1.25e8,
    cloud: bool = False,
) -> Profile:
    """A slow camera (source and sink), equal edge nodes, optionally a cloud server."""
    devs = {"cam": Device("cam", tier="device", speed=cam_speed, memory_bytes=512 << 20)}
    for i in range(edges):
        devs[f"edge{i}"] = Device(f"edge{i}", tier="edge", speed=edge_speed, memory_bytes=1 << 30)
    if cloud:
        devs["cloud"] = Device("cloud", tier="cloud", speed=20 * edge_speed, memory_bytes=8 << 30)
    links = {("cam", "cloud"): Link(2.5e6, 0.02)} if cloud else {}
    return Profile(devs, links, Link(bandwidth, 1e-3), source="cam", sink="cam")


@pytest.fixture(scope="module")
def models() -> dict[str, ModelGraph]:
    return {"stack": ModelGraph(recipes.conv_stack(64, 16)),
            "mobilenet": ModelGraph(recipes.mobilenet_v2_like(96, width=0.5, num_classes=10)),
            "yolo": ModelGraph(recipes.yolo_like(64, width=0.25, num_classes=4))}


def assert_valid(plan, graph: ModelGraph, profile: Profile) -> None:
    """Every op once, devices exist, tile layouts exact and complete, memory within budgets."""
    check_plan(plan, graph, profile.devices)
    for s in plan.stages:
        if s.tiles:
            t = s.tiles
            assert len(t.devices) == (len(t.rows) - 1) * (len(t.cols) - 1) >= 1
            layout = tile_layout(graph, *s.ops, list(t.rows), list(t.cols))
            assert layout.tiles == tuple(t.regions)
        for d in s.devices:
            assert profile.devices[d].compute
    cm = CostModel(graph, profile)
    for dev, need in plan_memory(plan, cm).items():
        assert need <= profile.devices[dev].memory_bytes, dev
    assert plan.predicted["latency_s"] > 0


def best_single(graph: ModelGraph, profile: Profile) -> float:
    """Latency of the best plan that runs the whole model on one device."""
    cm = CostModel(graph, profile)
    return min(
        make_plan(cm, [Stage(0, (0, cm.n), d)], "single", Constraints()).predicted["latency_s"]
        for d in profile.compute_devices()
    )


@pytest.mark.parametrize("name", ["stack", "mobilenet", "yolo"])
@pytest.mark.parametrize("strategy", TILE_STRATEGIES)
def test_valid_plans(models, name, strategy):
    graph, profile = models[name], fleet(4, cloud=True)
    for objective in ("latency", "throughput"):
        plan = STRATEGIES[strategy](graph, profile, Constraints(objective=objective))
        assert_valid(plan, graph, profile)
        assert plan.strategy == strategy and any(s.tiles for s in plan.stages)


@pytest.mark.parametrize("name", ["stack", "mobilenet", "yolo"])
@pytest.mark.parametrize("strategy", ["tiles", "hybrid"])
def test_tiling_beats_one_device(models, name, strategy):
    # Several equal, compute-bound edge nodes on a fast LAN and a slow source: tiling should pay.
    graph, profile = models[name], fleet(4, edge_speed=5e8, bandwidth=1.25e9)
    plan = STRATEGIES[strategy](graph, profile, Constraints())
    assert plan.predicted["latency_s"] <= best_single(graph, profile) * (1 + 1e-9)
    assert plan.predicted["latency_s"] < best_single(graph, profile)


def test_uneven_splits_follow_speed(models):
    graph = models["stack"]
    profile = fleet(0)
    devs = dict(profile.devices)
    devs["fast"] = Device("fast", tier="edge", speed=8e9)
    devs["slow"] = Device("slow", tier="edge", speed=2e9)
    profile = Profile(devs, {}, Link(1.25e9, 1e-4), source="cam", sink="cam")
    plan = STRATEGIES["tiles"](graph, profile, Constraints(exclude=("cam",)))
    stack = next(s for s in plan.stages if s.tiles)
    t = stack.tiles
    axis = t.rows if len(t.rows) > 2 else t.cols
    sizes = dict(zip(t.devices, (b - a for a, b in zip(axis, axis[1:], strict=False)), strict=True))
    assert sizes["fast"] > sizes["slow"]


def test_ftp_equal_grid_and_gateway(models):
    graph, profile = models["mobilenet"], fleet(4)
    plan = STRATEGIES["ftp"](graph, profile, Constraints())
    assert_valid(plan, graph, profile)
    stack, rest = plan.stages[0], plan.stages[1:]
    assert stack.ops[0] == 0 and (len(stack.tiles.rows), len(stack.tiles.cols)) == (3, 3)
    assert sorted(stack.tiles.devices) == [f"edge{i}" for i in range(4)]
    assert [s.device for s in rest] == ["cam"] and stack.ops[1] <= len(graph.ops) / 2


def test_hybrid_uses_device_tier_when_uplink_is_slow(models):
    # A thin uplink from the camera makes shipping the raw image expensive: D3 runs the
    # first layers on the camera, whose output is smaller, and tiles the middle on the edge.
    graph = models["mobilenet"]
    profile = fleet(4, cam_speed=2e9, bandwidth=2e6)
    plan = STRATEGIES["hybrid"](graph, profile, Constraints())
    assert_valid(plan, graph, profile)
    assert plan.stages[0].device == "cam" and plan.notes["head_ops"][1] > 0
    assert (
        plan.predicted["latency_s"]
        <= STRATEGIES["tiles"](graph, profile, Constraints()).predicted["latency_s"] * 1.05
    )


def test_constraints_pins_and_max_nodes(models):
    graph, profile = models["stack"], fleet(6)
    plan = STRATEGIES["tiles"](graph, profile, Constraints(pins=(Pin(0, 2, "cam"),)))
    assert plan.stages[0].ops == (0, 2) and plan.stages[0].device == "cam"
    plan = STRATEGIES["tiles"](graph, profile, Constraints(max_nodes=3))
    assert len(plan.devices()) <= 3
    with pytest.raises(PlanError, match="at least 2"):
        STRATEGIES["tiles"](graph, fleet(0), Constraints())


def fc_first() -> bytes:
    g = GraphBuilder("fc_first")
    x = g.input([1, 32])
    g.output(g.fully_connected(g.fully_connected(x, 16, "RELU"), 4))
    return g.build("float32", 0)


def test_untileable_first_op_is_named():
    graph = ModelGraph(fc_first())
    with pytest.raises(TileError, match="FULLY_CONNECTED"):
        STRATEGIES["tiles"](graph, fleet(2), Constraints())


def test_untileable_cli_exit_2(tmp_path):
    (tmp_path / "m.tflite").write_bytes(fc_first())
    (tmp_path / "p.json").write_text(json.dumps(fleet(2).to_json()))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "planner.cli",
            "plan",
            str(tmp_path / "m.tflite"),
            "--profile",
            str(tmp_path / "p.json"),
            "--strategy",
            "tiles",
            "-o",
            str(tmp_path / "x.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()
    assert len(line) == 1 and "op 0" in line[0] and "FULLY_CONNECTED" in line[0], r.stderr
