"""Tiled runs stitched back together are bit-identical to the untiled part (same runtime)."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from node.runtime import RuntimeSettings, run_whole
from planner.model.cut import cut_range
from planner.model.graph import ModelGraph
from planner.model.halo import program
from planner.model.tile import TileLayout, check_tileable, tile_layout
from tests.planner.tile_models import build_stack, random_input, run_tiled_all

STACKS = {
    "same_s1": [("conv", 3, 1, "SAME", 1, "RELU")] * 3,
    "same_s2": [
        ("conv", 3, 1, "SAME", 1, "RELU"),
        ("conv", 3, 2, "SAME", 1, "NONE"),
        ("conv", 3, 1, "SAME", 1, "RELU6"),
        ("conv", 3, 2, "SAME", 1, "NONE"),
    ],
    "valid": [
        ("conv", 3, 1, "VALID", 1, "RELU"),
        ("conv", 3, 2, "VALID", 1, "NONE"),
        ("conv", 5, 1, "VALID", 1, "NONE"),
    ],
    "dilated": [
        ("conv", 3, 1, "SAME", 2, "RELU"),
        ("dw", 3, 1, "VALID", 2),
        ("conv", 3, 2, "SAME", 1, "NONE"),
        ("dw", 5, 1, "SAME", 3),
    ],
    "pad": [
        ("pad", 0, 1, 0, 1),
        ("dw", 3, 2, "VALID", 1),
        ("pad", 1, 1, 2, 0),
        ("conv", 3, 1, "VALID", 1, "RELU6"),
        ("pad", 2, 0, 0, 3),
        ("conv", 2, 2, "VALID", 1, "NONE"),
    ],
    "residual": [("res", 3, 1), ("conv", 3, 2, "SAME", 1, "RELU6"), ("res", 3, 2), ("relu6",)],
    "concat_pool": [
        ("cat", 3),
        ("max", 3, 1, "SAME"),
        ("avg", 2, 2, "VALID"),
        ("cat", 5),
        ("max", 2, 2, "SAME"),
        ("avg", 3, 1, "SAME"),
    ],
    "mixed": [
        ("conv", 5, 2, "SAME", 1, "NONE"),
        ("leaky",),
        ("dw", 3, 2, "SAME", 1),
        ("hswish",),
        ("res", 1, 1),
        ("conv", 1, 1, "VALID", 1, "NONE"),
    ],
}
GRIDS = [(1, 2), (2, 1), (2, 2), (3, 3), (4, 4), ("uneven", "uneven")]


@cache
def stack(name: str, size: int | tuple[int, int], dtype: str) -> bytes:
    return build_stack(size, STACKS[name], dtype)


def _uneven(n: int) -> list[int]:
    # Heterogeneous devices: one thin slice, one fat, one middling.
    return sorted({0, 1, max(n * 2 // 3, 1), n}) if n > 1 else [0, n]


def assert_tiles_exact(data: bytes, start: int, end: int, rows, cols,
                       rt: RuntimeSettings | None = None) -> TileLayout:
    """Tiles of ops [start, end) stitched == the untiled part (cut unless the whole model),
    every crossing tensor (a part may have several inputs and outputs)."""
    graph = ModelGraph(data)
    part = data if (start, end) == (0, len(graph.ops)) else cut_range(graph, start, end).data
    layout = tile_layout(graph, start, end, rows, cols)
    prog = program(graph, start, end)
    xs = [random_input(graph.tensors[t].shape, graph.tensors[t].dtype, seed=start + end + k)
          for k, t in enumerate(prog.inputs)]
    refs = run_whole(part, xs, rt or RuntimeSettings())
    gots = run_tiled_all(part, layout, xs, [graph.tensors[u].shape for u in prog.outputs], rt)
    assert len(refs) == len(gots) == len(prog.outputs)
    for u, ref, got in zip(prog.outputs, refs, gots, strict=True):
        assert got.dtype == ref.dtype and got.shape == ref.shape
        bad = np.argwhere(got != ref)
        assert bad.size == 0, (
            f"output {graph.tensors[u].name!r}: {len(bad)} wrong values, first at "
            f"{bad[0].tolist()}; layout {layout}"
        )
    return layout


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("name", sorted(STACKS))
def test_whole_stack_tiles_are_bit_exact(name: str, grid, dtype: str) -> None:
    data = stack(name, 33 if name in ("same_s2", "pad") else 32, dtype)
    graph = ModelGraph(data)
    out = graph.tensors[graph.outputs[0]].shape
    rows = _uneven(out[1]) if grid[0] == "uneven" else min(grid[0], out[1])
    cols = _uneven(out[2]) if grid[1] == "uneven" else min(grid[1], out[2])
    assert_tiles_exact(data, 0, len(graph.ops), rows, cols)


@pytest.mark.parametrize("name", ["same_s2", "pad", "concat_pool"])
def test_non_square_and_builtin_kernels(name: str) -> None:
    data = stack(name, (24, 41), "int8")
    graph = ModelGraph(data)
    n, out = len(graph.ops), graph.tensors[graph.outputs[0]].shape
    assert_tiles_exact(data, 0, n, 3, 4, RuntimeSettings(xnnpack=False))
    assert_tiles_exact(data, 0, n, _uneven(out[1]), 2, RuntimeSettings(xnnpack=False))


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_middle_range_cut_from_a_model(dtype: str) -> None:
    data = stack("residual", 32, dtype)
    graph = ModelGraph(data)
    # Ops: stem, conv, add, conv/2, conv, add, relu6. Real middle parts from the cutter,
    # each starting where a residual block starts (one activation input).
    for start, end in [(1, len(graph.ops) - 1), (3, len(graph.ops))]:
        check_tileable(graph, start, end)
        assert_tiles_exact(data, start, end, 2, 3)


@pytest.mark.parametrize(
    ("dtype", "build"), [("int8", {"io": "float"}), ("float32", {"fp16_weights": True})]
)
def test_quantize_dequantize_and_fp16_weights(dtype: str, build: dict) -> None:
    # io="float": QUANTIZE first and DEQUANTIZE last; fp16 weights: DEQUANTIZE ops that only
    # compute constants (skipped by the analysis, copied by the cutter).
    data = build_stack(32, STACKS["residual"], dtype, **build)
    graph = ModelGraph(data)
    types = {op.type for op in graph.ops}
    assert "DEQUANTIZE" in types and (dtype == "float32" or "QUANTIZE" in types)
    for grid in [(2, 2), (3, 1)]:
        assert_tiles_exact(data, 0, len(graph.ops), *grid)
    middle = [k for k, op in enumerate(graph.ops) if op.type == "CONV_2D"][1]
    assert_tiles_exact(data, middle, len(graph.ops), 2, 2)


LAYER = st.one_of(
    st.tuples(
        st.just("conv"),
        st.sampled_from([1, 2, 3, 5]),
        st.sampled_from([1, 2]),
        st.sampled_from(["SAME", "VALID"]),
        st.sampled_from([1, 2]),
        st.sampled_from(["NONE", "RELU"]),
    ),
    st.tuples(
        st.just("dw"),
        st.sampled_from([2, 3]),
        st.sampled_from([1, 2]),
        st.sampled_from(["SAME", "VALID"]),
        st.sampled_from([1, 2]),
    ),
    st.tuples(
        st.sampled_from(["max", "avg"]),
        st.sampled_from([2, 3]),
        st.sampled_from([1, 2]),
        st.sampled_from(["SAME", "VALID"]),
    ),
    st.tuples(st.just("pad"), *[st.integers(0, 2)] * 4),
    st.tuples(st.just("res"), st.sampled_from([1, 3]), st.sampled_from([1, 2])),
    st.tuples(st.just("cat"), st.sampled_from([1, 3])),
)


def _splits(draw, n: int) -> int | list[int]:
    if draw(st.booleans()):
        return draw(st.integers(1, min(4, n)))
    inner = draw(st.sets(st.integers(1, n - 1), max_size=3)) if n > 1 else set()
    return [0, *sorted(inner), n]


@st.composite
def configs(draw):
    layers = draw(st.lists(LAYER, min_size=1, max_size=5))
    assume(sum(layer[0] in ("conv", "dw", "max", "avg") and layer[2] == 2 for layer in layers) <= 3)
    size = (draw(st.integers(12, 40)), draw(st.integers(12, 40)))
    dtype = draw(st.sampled_from(["float32", "int8"]))
    try:
        data = build_stack(size, layers, dtype, seed=draw(st.integers(0, 3)))
    except ValueError:
        assume(False)  # a VALID stack that shrinks the image to nothing
    graph = ModelGraph(data)
    out = graph.tensors[graph.outputs[0]].shape
    return data, dtype, _splits(draw, out[1]), _splits(draw, out[2])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_random_stacks_and_splits_are_bit_exact(cfg) -> None:
    data, dtype, rows, cols = cfg
    assert_tiles_exact(data, 0, len(ModelGraph(data).ops), rows, cols)
