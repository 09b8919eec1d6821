"""Small test models and their parts, built in-process with the planner's toolkit."""

from __future__ import annotations

from dataclasses import dataclass

from planner.model.cut import Part, cut_at, cut_range
from planner.model.graph import ModelGraph
from planner.model.tile import TileLayout, tile_layout
from planner.modelbuild import GraphBuilder


def small_cnn(dtype: str = "float32", size: int = 32) -> bytes:
    """conv-conv-conv(stride 2)-conv then global mean and a dense head: 6 ops."""
    g = GraphBuilder("small_cnn")
    x = g.input((1, size, size, 3))
    y = g.conv2d(x, 8, 3, activation="RELU")
    y = g.conv2d(y, 8, 3, activation="RELU")
    y = g.conv2d(y, 16, 3, stride=2, activation="RELU")
    y = g.conv2d(y, 16, 3, activation="RELU")
    y = g.mean(y)
    y = g.fully_connected(y, 10)
    g.output(y)
    return g.build(dtype)


@dataclass(frozen=True)
class Chain:
    model: bytes
    graph: ModelGraph
    parts: list[Part]


def three_parts(dtype: str = "float32") -> Chain:
    """small_cnn cut before ops 2 and 4: three parts chained by tensor name."""
    data = small_cnn(dtype)
    g = ModelGraph(data)
    return Chain(data, g, cut_at(g, [2, 4]))


def tiled_head(dtype: str = "float32") -> tuple[Chain, TileLayout]:
    """small_cnn with ops [0, 4) as part 0, tiled 2x2, and ops [4, 6) as part 1."""
    data = small_cnn(dtype)
    g = ModelGraph(data)
    parts = [cut_range(g, 0, 4), cut_range(g, 4, len(g.ops))]
    return Chain(data, g, parts), tile_layout(g, 0, 4, 2, 2)
