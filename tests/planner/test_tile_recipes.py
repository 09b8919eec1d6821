"""Tiling the builder's recipe networks: fused stacks up to the first untileable op."""

from __future__ import annotations

from functools import cache

import pytest

from planner.errors import TileError
from planner.model.graph import ModelGraph
from planner.model.tile import check_tileable, halo, tileable_prefix
from planner.modelbuild import recipes
from tests.planner.test_tile_exact import assert_tiles_exact

BUILDS = {
    "conv_stack": lambda dtype: recipes.conv_stack(64, channels=8, dtype=dtype),
    "mobilenet_v2": lambda dtype: recipes.mobilenet_v2_like(
        64, width=0.35, num_classes=10, dtype=dtype
    ),
    "resnet": lambda dtype: recipes.resnet_like(64, width=0.25, num_classes=10, dtype=dtype),
    "yolo": lambda dtype: recipes.yolo_like(64, width=0.25, num_classes=4, dtype=dtype),
}


@cache
def model(name: str, dtype: str) -> bytes:
    return BUILDS[name](dtype)


def _segments(graph: ModelGraph) -> list[tuple[int, int]]:
    """Greedy fused stacks: from each start the longest tileable range."""
    segments, start = [], 0
    while start < len(graph.ops):
        end = tileable_prefix(graph, start)
        if end > start:
            segments.append((start, end))
        start = max(end, start + 1)
    return segments


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_tileable_prefix_agrees_with_check_tileable(name: str) -> None:
    graph = ModelGraph(model(name, "float32"))
    for start in range(len(graph.ops)):
        ok = []
        for end in range(start + 1, len(graph.ops) + 1):
            try:
                check_tileable(graph, start, end)
                ok.append(end)
            except TileError:
                pass
        assert tileable_prefix(graph, start) == max(ok, default=start), start


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_recipe_segments_tile_bit_exact(name: str, dtype: str) -> None:
    data = model(name, dtype)
    graph = ModelGraph(data)
    segments = _segments(graph)
    assert segments and segments[0][0] == 0
    for start, end in segments[:3]:
        out = halo(graph, start, end).out_shape
        rows, cols = min(2, out[1]), min(3, out[2])
        assert_tiles_exact(data, start, end, rows, cols)
        if out[1] > 2:
            assert_tiles_exact(data, start, end, [0, 1, out[1]], 1)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_early_mobilenet_layers_with_a_4x4_grid(dtype: str) -> None:
    # The fused-tile use case: the first blocks of MobileNetV2 on 4x4 devices.
    data = model("mobilenet_v2", dtype)
    graph = ModelGraph(data)
    end = max(e for e in range(1, 16) if _is_tileable(graph, 0, e))
    assert_tiles_exact(data, 0, end, 4, 4)


def _is_tileable(graph: ModelGraph, start: int, end: int) -> bool:
    try:
        check_tileable(graph, start, end)
        return True
    except TileError:
        return False
