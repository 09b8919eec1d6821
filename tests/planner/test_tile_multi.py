"""Fused tiles of parts with several activation inputs and outputs, bit-exact.

Toolkit level: tile a range, run every tile with node.tile_exec (each input sliced to its
own window, each output cropped on its own), stitch, compare with the untiled part on the
same runtime. Models: a residual stack cut inside its blocks, a YOLO-like neck (SiLU =
LOGISTIC * MUL, a residual, an FPN upsample + concat route and a PAN route, two outputs
at strides 2 and 4) whole and cut inside its routes, and a channel SPLIT / SPLIT_V.
"""

from __future__ import annotations

import json
from fractions import Fraction
from functools import cache

import pytest

from planner.errors import TileError
from planner.model.graph import ModelGraph
from planner.model.halo import program
from planner.model.manifest import load_manifest
from planner.model.slicer import slice_model
from planner.model.tile import tile_layout
from planner.model.verify import verify_slice
from planner.modelbuild import GraphBuilder
from planner.modelbuild.route import yolo_route_like
from tests.planner.test_tile_exact import assert_tiles_exact, stack
from tests.planner.tile_models import split_model, with_half_pixel_centers

GRIDS = [(1, 2), (2, 2), (2, 3), (3, 3)]
DTYPES = ["float32", "int8"]


@cache
def route_model(dtype: str, size: int = 64) -> bytes:
    return yolo_route_like(size, dtype=dtype)


def _op(graph: ModelGraph, name: str) -> int:
    """Index of the op producing tensor `name`."""
    return graph.producer[graph.by_name[name]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
def test_residual_stack_cut_inside_its_blocks(grid, dtype: str) -> None:
    data = stack("residual", 32, dtype)
    graph = ModelGraph(data)
    n = len(graph.ops)
    # Ops: stem, conv, add(stem, conv), conv/2, conv, add, relu6. [0, 2) ends inside the
    # first block (2 outputs: stem, conv2d_0); [2, 7) starts there (2 inputs); [2, 5)
    # both, and ends inside the second block; [0, 7) holds both residuals whole.
    for start, end, ins, outs in [(0, 2, 1, 2), (2, n, 2, 1), (2, 5, 2, 2), (5, n, 2, 1),
                                  (0, n, 1, 1)]:
        prog = program(graph, start, end)
        assert (len(prog.inputs), len(prog.outputs)) == (ins, outs)
        layout = assert_tiles_exact(data, start, end, *grid)
        assert all(len(t.input_regions) == ins and len(t.crops) == outs for t in layout.tiles)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
def test_yolo_neck_whole_with_outputs_at_two_strides(grid, dtype: str) -> None:
    data = route_model(dtype)
    graph = ModelGraph(data)
    types = {op.type for op in graph.ops}
    assert {"RESIZE_NEAREST_NEIGHBOR", "CONCATENATION", "LOGISTIC", "MUL", "ADD"} <= types
    layout = assert_tiles_exact(data, 0, len(graph.ops), *grid)
    p3, p4 = (graph.tensors[u].shape for u in program(graph, 0, len(graph.ops)).outputs)
    assert (p3[1], p4[1]) == (32, 16)
    for t in layout.tiles:  # one grid: the stride-4 output's regions are the stride-2's halved
        a, b = t.output_regions
        assert b == tuple(v // 2 for v in a)
    if grid == (3, 3):  # the middle tile reads less than the image
        y0, y1, x0, x1 = layout.tiles[4].input_region
        assert (y1 - y0) * (x1 - x0) < 64 * 64


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
def test_yolo_neck_cut_inside_its_routes(grid, dtype: str) -> None:
    data = route_model(dtype)
    graph = ModelGraph(data)
    n = len(graph.ops)
    up = _op(graph, "fpn/up")
    cases = [
        (_op(graph, "c3/cv1/conv"), up),  # inside the residual: 2 inputs (y, p3 kept open)
        (up, n),  # the FPN route: the stride-4 lateral, p3 and p4 in, upsample + concat inside
        (_op(graph, "fpn/concat"), _op(graph, "pan/concat")),  # both routes' inputs, 2 outputs
        (_op(graph, "down2/conv"), _op(graph, "fpn/c3/silu") + 1),  # residual + FPN route
    ]
    for start, end in cases:
        prog = program(graph, start, end)
        assert len(prog.inputs) + len(prog.outputs) >= 3, (start, end)
        layout = assert_tiles_exact(data, start, end, *grid)
        strides = {graph.tensors[t].shape[1] for t in prog.inputs}
        if len(strides) > 1:  # inputs of two resolutions: each has its own window
            assert len({t.input_regions for t in layout.tiles}) == len(layout.tiles)


def test_every_cut_of_the_neck_tiles_exactly() -> None:
    # Every range between two cuts crossed by 2+ tensors, on a 2x2 grid (float32, 32 px).
    data = route_model("float32", 32)
    graph = ModelGraph(data)
    cuts = [c for c in range(1, len(graph.ops)) if len(graph.live_at(c)) >= 2]
    assert len(cuts) > 10
    for start in cuts[::3]:
        for end in [e for e in cuts if e > start][:4:2] + [len(graph.ops)]:
            assert_tiles_exact(data, start, end, 2, 2)


def test_split_points_must_map_to_whole_pixels_of_every_output() -> None:
    graph = ModelGraph(route_model("float32"))
    n = len(graph.ops)
    # Row 3 of the stride-2 output is row 1.5 of the stride-4 one: refused, named.
    with pytest.raises(
        TileError, match=r"fall inside one.*head_p4/detect|head_p4/detect.*fall inside"
    ):
        tile_layout(graph, 0, n, [0, 3, 32], 1)
    layout = tile_layout(graph, 0, n, [0, 4, 32], 3)  # even rows; counts pick even splits
    assert [t.output_regions[1][:2] for t in layout.tiles[::3]] == [(0, 2), (2, 16)]
    assert all(s % 2 == 0 for s in layout.col_splits) and len(layout.col_splits) == 4


@pytest.mark.parametrize("dtype", DTYPES)
def test_slice_manifest_and_verify_with_multi_tensor_tiles(tmp_path, dtype: str) -> None:
    # `tilefleet slice` of the neck with the middle part (2 inputs, upsample + concat, 2
    # outputs) tiled 2x3: the manifest records each tensor's regions, loads back to the
    # same TileSpecs, the tiled part file is the tile-ready one, and verify is identical.
    data = route_model(dtype, 32)
    model = tmp_path / "neck.tflite"
    model.write_bytes(data)
    graph = ModelGraph.load(model)
    c = _op(graph, "c3/cv1/conv")
    e = _op(graph, "fpn/c3/silu") + 1
    man = slice_model(graph, [c, e], tmp_path / "slice", {1: (2, 3)})
    tiled = man.parts[1]
    assert len(tiled.tiles) == 6 and all(t.multi and len(t.input_regions) == 2 for t in tiled.tiles)
    assert load_manifest(tmp_path / "slice").parts[1].tiles == tiled.tiles
    record = json.loads((tmp_path / "slice" / "manifest.json").read_text())["parts"][1]["tiles"][0]
    assert {"input_regions", "output_regions", "crops"} <= set(record)
    types = {op.type for op in ModelGraph((tmp_path / "slice" / tiled.file).read_bytes()).ops}
    assert "DEPTH_TO_SPACE" in types and "RESIZE_NEAREST_NEIGHBOR" not in types
    report = verify_slice(tmp_path / "slice", model)
    assert report.identical and report.tiles == 6, report.to_json()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["SPLIT", "SPLIT_V"])
def test_channel_split_inside_a_stack(kind: str, dtype: str) -> None:
    # conv a, conv b, s = concat(a, b), split(s) -> (a', b'), conv(a'), dw(b'), concat,
    # strided conv; outputs: that conv (stride 2) and s (stride 1).
    data = split_model(dtype, kind)
    graph = ModelGraph(data)
    n = len(graph.ops)
    assert graph.ops[3].type == kind
    for grid in GRIDS:
        assert_tiles_exact(data, 0, n, *grid)  # 1 input, 2 outputs at two strides
        assert_tiles_exact(data, 3, n, *grid)  # from the split on
    with pytest.raises(
        TileError, match=rf"op 3 \({kind}\) cannot be tiled: it splits along a non-channel"
    ):
        tile_layout(ModelGraph(split_model(dtype, kind, axis=1)), 0, n, 2, 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_upsample_with_half_pixel_centers(dtype: str) -> None:
    # For an integer scale, (y + 0.5) / f floors as y / f does: the rewritten part's
    # DEPTH_TO_SPACE copies match the runtime's half-pixel resize too.
    data = with_half_pixel_centers(route_model(dtype, 32))
    graph = ModelGraph(data)
    up = _op(graph, "fpn/up")
    assert graph.options(up).halfPixelCenters
    for grid in GRIDS:
        assert_tiles_exact(data, 0, len(graph.ops), *grid)
        assert_tiles_exact(data, up, len(graph.ops), *grid)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_upsample_scales_give_fractional_strides(scale: int, dtype: str) -> None:
    # stride-2 conv, upsample by f, 3x3 conv: the input's stride per output pixel is 2/f
    # (a fraction for f = 3, 4), kept exact; every grid is bit-exact.
    g = GraphBuilder("up")
    x = g.conv2d(g.input([1, 22, 26, 3]), 4, 3, 2, activation="RELU")
    y = g.conv2d(g.resize_nearest_neighbor(x, scale), 4, 3)
    g.output(g.add(y, g.resize_nearest_neighbor(g.conv2d(x, 4, 1), scale)))
    data = g.build(dtype)
    graph = ModelGraph(data)
    h = tile_layout(graph, 0, len(graph.ops), 1, 1).halo
    assert h.stride_y == Fraction(2, scale)
    for grid in [*GRIDS, (4, 5)]:
        assert_tiles_exact(data, 0, len(graph.ops), *grid)
