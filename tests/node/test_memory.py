"""The node's memory estimate of a stage agrees with the planner's cost model.

The planner keeps plans within each node's `memory_budget_mb` with its cost model
(weights + peak live activations + a per-part overhead); the node refuses loads over
the budget with its own estimate. If the node's estimate were larger than what the
planner budgets, a plan the planner accepted could be refused at deploy time.
"""

from __future__ import annotations

from functools import cache

import pytest

from node.memory import stage_bytes, window_share
from node.wire.messages import InputSpec, StageSpec, TileSpec
from planner.model.cut import cut_range
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.planning.costmodel import CostModel
from planner.planning.profile import Device, Profile


@cache
def _graph(dtype: str) -> ModelGraph:
    return ModelGraph(recipes.mobilenet_v2_like(input_size=32, dtype=dtype, seed=0))


def _spec(part, tile: TileSpec | None = None) -> StageSpec:
    return StageSpec("s", part.sha256, tuple(InputSpec(t.name, t.dtype, tuple(t.shape))
                                             for t in part.inputs), tile=tile)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_stage_estimate_lies_within_the_planners_budget_for_the_same_range(dtype):
    g = _graph(dtype)
    cm = CostModel(g, Profile({"d": Device("d", "laptop")}, {}))
    n = len(g.ops)
    for a, b in ((0, 10), (10, 38), (38, 55), (55, n), (0, n)):
        part = cut_range(g, a, b)
        node = stage_bytes(part.data, _spec(part))
        planner = cm.memory("d", a, b)  # weights + peak activations + overhead_bytes
        core = int(cm.range_memory_table[a, b])  # without the overhead
        assert 0.9 * core <= node <= planner, (a, b, node, core, planner)


def test_tile_stage_counts_its_window_share_of_the_activations():
    g = _graph("float32")
    part = cut_range(g, 0, 10)
    (x,) = part.inputs
    h, w = x.shape[1], x.shape[2]
    quarter = TileSpec((0, h // 2, 0, w // 2), (0, 8, 0, 8), (0, 8, 0, 8))
    whole = stage_bytes(part.data, _spec(part))
    tile = stage_bytes(part.data, _spec(part, quarter))
    assert window_share(_spec(part, quarter)) == 0.25
    assert tile - len(part.data) == int((whole - len(part.data)) * 0.25)
