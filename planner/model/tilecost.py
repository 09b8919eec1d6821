"""What a tile layout costs: the MACs each tile computes and the bytes it sends and returns.

The cost model (planner/planning/costmodel.py) books tile stages with these figures; they
replay each tile exactly (`planner.model.tile.trace`), so halo recomputation and the
border rows a tile computes and then crops are counted.
"""

from __future__ import annotations

from node.wire.regions import Region, TileSpec
from planner.model.graph import ModelGraph
from planner.model.halo import Program, program
from planner.model.tile import Interval, TileLayout, trace


def _windows(prog: Program, tile: TileSpec, axis: int) -> dict[int, Interval]:
    k = 0 if axis == 1 else 2
    return {t: (r[k], r[k + 1]) for t, r in zip(prog.inputs, tile.input_regions, strict=True)}


def tile_macs(graph: ModelGraph, start: int, end: int, layout: TileLayout) -> list[int]:
    """MACs each tile computes, halo recomputation and discarded border rows included."""
    prog = program(graph, start, end)
    result = []
    for tile in layout.tiles:
        ys, xs = (
            trace(graph, prog, 1, _windows(prog, tile, 1)),
            trace(graph, prog, 2, _windows(prog, tile, 2)),
        )
        total = 0
        for st in prog.steps:
            shape = graph.tensors[st.output].shape
            # Per-op MACs scale with output pixels (conv, pool and element-wise alike).
            total += (
                graph.ops[st.op].macs * ys[st.output].n * xs[st.output].n // (shape[1] * shape[2])
            )
        result.append(total)
    return result


def _area(r: Region) -> int:
    return (r[1] - r[0]) * (r[3] - r[2])


def tile_io_bytes(
    graph: ModelGraph, start: int, end: int, layout: TileLayout
) -> list[tuple[int, int]]:
    """(input bytes sent, cropped output bytes returned) per tile, every crossing tensor."""
    prog = program(graph, start, end)

    def px(t: int) -> int:
        info = graph.tensors[t]
        return info.nbytes // (info.shape[1] * info.shape[2])

    return [(sum(_area(r) * px(t) for t, r in zip(prog.inputs, tile.input_regions, strict=True)),
             sum(_area(r) * px(u) for u, r in zip(prog.outputs, tile.crops, strict=True)))
            for tile in layout.tiles]
