"""Profiling without a network: op groups, spreading range times, cache keys."""

from __future__ import annotations

import pytest

from planner.fleet.nodes import NodeInfo
from planner.fleet.profiling import cache_key, op_groups, spread
from planner.model.cut import cut_range
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.planning.profile import Device


@pytest.fixture(scope="module")
def graph() -> ModelGraph:
    return ModelGraph(recipes.mobilenet_v2_like(input_size=64, dtype="float32"))


@pytest.mark.parametrize("max_groups", [1, 5, 24, 1000])
def test_groups_chain_over_the_model_and_each_cuts(graph, max_groups):
    groups = op_groups(graph, max_groups)
    assert groups[0][0] == 0 and groups[-1][1] == len(graph.ops)
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:], strict=False))
    assert len(groups) <= max(1, min(max_groups, len(graph.ops))) + 1
    for a, b in groups:
        cut_range(graph, a, b)  # every group is a valid standalone part


def test_spread_keeps_each_range_total_and_follows_cost(graph):
    groups = op_groups(graph, 6)
    secs = [0.001 * (k + 1) for k in range(len(groups))]
    per_op = spread(graph, groups, secs, Device("x"))
    for (a, b), s in zip(groups, secs, strict=True):
        assert sum(per_op[a:b]) == pytest.approx(s)
    convs = [k for k, op in enumerate(graph.ops) if op.type == "CONV_2D"]
    big, small = (
        max(convs, key=lambda k: graph.ops[k].macs),
        min(convs, key=lambda k: graph.ops[k].macs),
    )
    same = next(g for g in groups if g[0] <= big < g[1])
    if same[0] <= small < same[1]:
        assert per_op[big] > per_op[small]


def test_cache_key_separates_board_runtime_threads_and_model():
    def node(board="rpi4", rt="2.3.0", threads=1):
        return NodeInfo("n", board, "ai_edge_litert", rt, 4, threads, 1 << 30, 1.0, "", "", {})

    keys = {cache_key(node(), "a" * 64), cache_key(node(board="rpi5"), "a" * 64),
            cache_key(node(rt="2.4.0"), "a" * 64), cache_key(node(threads=2), "a" * 64),
            cache_key(node(), "b" * 64)}
    assert len(keys) == 5
    assert all("/" not in k for k in keys)
