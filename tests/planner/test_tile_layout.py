"""Halo values, tightness, trace soundness, split points, validation, MACs and I/O bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tile_exec import TileRunner, slice_region
from planner.errors import TileError
from planner.model.graph import ModelGraph
from planner.model.halo import Halo, program
from planner.model.tile import (
    halo,
    split_by_weights,
    tile_from_json,
    tile_layout,
    trace,
)
from planner.model.tilecost import tile_io_bytes, tile_macs
from tests.planner.test_tile_exact import STACKS, stack
from tests.planner.tile_models import build_stack, random_input, run_untiled


def _graph(name: str, size=32, dtype="float32") -> tuple[bytes, ModelGraph]:
    data = stack(name, size, dtype)
    return data, ModelGraph(data)


def test_halo_matches_the_design_formulas() -> None:
    _, g = _graph("same_s1")
    # Three 3x3 SAME convs after a 1x1 stem: one pixel each side per conv.
    assert halo(g, 0, len(g.ops)) == Halo(1, 1, 3, 3, 3, 3, (1, 32, 32, 3), (1, 32, 32, 4))
    _, g = _graph("same_s2")
    # J/L/R: s1 (1,1,1), s2 on 32 (pb 0) (2,1,3), s1 (2,3,5), s2 on 16 (pb 0) (4,3,9);
    # hb = 3 up to 4 = 4, ha = 9-4+1 = 6 up to 8 = 8.
    assert halo(g, 0, len(g.ops)) == Halo(4, 4, 4, 8, 4, 8, (1, 32, 32, 3), (1, 8, 8, 4))
    g = ModelGraph(build_stack((20, 24), [("pad", 1, 2, 3, 0)]))
    # PAD: L' = L + p0, R' = R - p0 (negative R: no halo after).
    h = halo(g, 0, len(g.ops))
    assert (h.before_y, h.after_y, h.before_x, h.after_x) == (1, 0, 3, 0)
    g = ModelGraph(build_stack(32, [("conv", 3, 1, "SAME", 2, "NONE"), ("max", 2, 2, "VALID")]))
    # Dilation 2: k_eff 5, pb 2; pool VALID 2/2 adds R += 1.
    h = halo(g, 0, len(g.ops))
    assert (h.stride_y, h.before_y, h.after_y) == (2, 2, 2)


def _shrunk_tile(data: bytes, g: ModelGraph, side: str) -> bool:
    """Run the middle tile of a 3-row grid with one stride less halo; True if any value differs."""
    layout = tile_layout(g, 0, len(g.ops), 3, 1)
    h, tile = layout.halo, layout.tiles[1]
    y0, y1, x0, x1 = tile.input_region
    if side == "before":
        y0 += h.stride_y
    else:
        y1 -= h.stride_y
    prog = program(g, 0, len(g.ops))
    span = trace(g, prog, 1, y0, y1)[prog.output]
    o0, o1 = tile.output_region[:2]
    c0, c1 = o0 - span.p, o1 - span.p
    assert not span.valid[max(c0, 0):c1].all() or c0 < 0 or c1 > span.n  # the trace agrees
    x = random_input(h.in_shape, "float32", seed=3)
    ref = run_untiled(data, x)[:, o0:o1]
    piece = TileRunner(data).run(
        slice_region(x, (y0, y1, x0, x1)), (max(c0, 0), min(c1, span.n), 0, ref.shape[2])
    )
    return piece.shape != ref.shape or not np.array_equal(piece, ref)


@pytest.mark.parametrize("name", ["same_s1", "same_s2", "valid", "dilated", "pad", "mixed"])
def test_halo_is_tight(name: str) -> None:
    data, g = _graph(name)
    h = halo(g, 0, len(g.ops))
    assert h.before_y > 0 or h.after_y > 0
    # A halo one stride step smaller on either side gives a wrong pixel in the middle tile.
    if h.before_y > 0:
        assert _shrunk_tile(data, g, "before")
    if h.after_y > 0:
        assert _shrunk_tile(data, g, "after")


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(STACKS)), dtype=st.sampled_from(["float32", "int8"]),
       ys=st.lists(st.integers(0, 33), min_size=2, max_size=2, unique=True),
       xs=st.lists(st.integers(0, 33), min_size=2, max_size=2, unique=True))
def test_trace_is_sound_for_any_window(name: str, dtype: str, ys: list[int], xs: list[int]) -> None:
    # Any input window, aligned or not: rows the trace calls valid equal the full run's.
    data, g = _graph(name, 33, dtype)
    prog = program(g, 0, len(g.ops))
    (a, b), (c, d) = sorted(ys), sorted(xs)
    try:
        sy, sx = trace(g, prog, 1, a, b)[prog.output], trace(g, prog, 2, c, d)[prog.output]
    except TileError:
        return  # window too small for a VALID op: the runtime could not run it either
    x = random_input(g.tensors[prog.input].shape, dtype)
    full = run_untiled(data, x)
    tile = TileRunner(data).run(slice_region(x, (a, b, c, d)), (0, sy.n, 0, sx.n))
    for j in np.flatnonzero(sy.valid):
        for i in np.flatnonzero(sx.valid):
            assert np.array_equal(tile[0, j, i], full[0, sy.p + j, sx.p + i]), (j, i)


def test_split_by_weights() -> None:
    assert split_by_weights(10, [1, 1]) == [0, 5, 10]
    assert split_by_weights(10, [1, 2, 1]) == [0, 3, 8, 10]
    assert split_by_weights(32, [1, 1, 1], multiple=4) == [0, 12, 24, 32]
    assert split_by_weights(34, [1, 1], multiple=4) == [0, 16, 34]  # remainder to the last
    assert split_by_weights(3, [100, 1, 1]) == [0, 1, 2, 3]  # nobody left empty
    assert split_by_weights(2, [1, 1, 1]) == [0, 1, 2, 2]  # not enough pixels: one empty
    for bad in [(-1, [1]), (4, []), (4, [1, 0]), (4, [1, float("nan")]), (4, [1], 0)]:
        with pytest.raises(TileError):
            split_by_weights(*bad)


@given(total=st.integers(0, 500), weights=st.lists(st.floats(0.01, 100), min_size=1, max_size=6),
       multiple=st.integers(1, 8))
def test_split_by_weights_properties(total: int, weights: list[float], multiple: int) -> None:
    points = split_by_weights(total, weights, multiple)
    sizes = np.diff(points)
    assert points[0] == 0 and points[-1] == total and len(points) == len(weights) + 1
    assert (sizes >= 0).all() and all(p % multiple == 0 for p in points[:-1])
    ideal = np.array(weights) / sum(weights) * total
    if total // multiple >= len(weights):
        assert (sizes > 0).all()
    if ideal.min() >= multiple:  # no piece was forced non-empty: rounding error only
        assert (np.abs(sizes - ideal) <= multiple + total % multiple).all()


def test_layout_validation() -> None:
    _, g = _graph("same_s2")
    n = len(g.ops)
    assert tile_layout(g, 0, n, [0, 8], 1).row_splits == (0, 8)
    for rows in [0, 9, [8], [0, 4, 4, 8], [1, 8], [0, 5, 3, 8], [0, 9], "2", [0, 2.0, 8], True]:
        with pytest.raises(TileError):
            tile_layout(g, 0, n, rows, 1)
    with pytest.raises(TileError, match="empty or outside"):
        tile_layout(g, 3, 3, 1, 1)
    layout = tile_layout(g, 0, n, 3, [0, 1, 8])
    assert layout.row_splits == (0, 3, 6, 8) and layout.col_splits == (0, 1, 8)
    assert [t.output_region for t in layout.tiles[:2]] == [(0, 3, 0, 1), (0, 3, 1, 8)]  # row-major


def test_regions_follow_the_design_scheme() -> None:
    _, g = _graph("same_s2")
    layout = tile_layout(g, 0, len(g.ops), [0, 2, 5, 8], 1)
    # S=4, hb=4, ha=8: input rows [o0*4 - 4, o1*4 + 8) clipped to [0, 32).
    assert [t.input_region[:2] for t in layout.tiles] == [(0, 16), (4, 28), (16, 32)]
    assert [t.crop[:2] for t in layout.tiles] == [(0, 2), (1, 4), (1, 4)]
    assert all(t.input_region[0] % 4 == 0 and (t.input_region[1] - t.input_region[0]) % 4 == 0
               for t in layout.tiles)


def test_tile_json_round_trip() -> None:
    _, g = _graph("pad")
    for t in tile_layout(g, 0, len(g.ops), 2, 2).tiles:
        record = t.to_json()
        assert set(record) == {"input_region", "output_region", "crop"}
        assert all(isinstance(v, list) and len(v) == 4 for v in record.values())
        assert tile_from_json(record) == t
    with pytest.raises(TileError, match="crop"):
        tile_from_json(
            {"input_region": [0, 1, 0, 1], "output_region": [0, 1, 0, 1], "crop": [0, 1]}
        )


def test_macs_and_io_bytes() -> None:
    _, g = _graph("same_s1")
    n = len(g.ops)
    total = sum(op.macs for op in g.ops)
    one = tile_layout(g, 0, n, 1, 1)
    assert tile_macs(g, 0, n, one) == [total]
    tin, tout = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    assert tile_io_bytes(g, 0, n, one) == [(tin.nbytes, tout.nbytes)]
    # 2x1: each tile reads 16 + 3 halo rows and every SAME op computes on all 19 rows.
    two = tile_layout(g, 0, n, 2, 1)
    assert tile_macs(g, 0, n, two) == [total * 19 // 32] * 2
    assert tile_io_bytes(g, 0, n, two) == [(tin.nbytes * 19 // 32, tout.nbytes // 2)] * 2
    _, g = _graph("valid")
    four = tile_layout(g, 0, len(g.ops), 2, 2)
    assert sum(tile_macs(g, 0, len(g.ops), four)) > sum(op.macs for op in g.ops)
