"""Fused spatial tiles: per-tile input region, output region and crop for an op range.

Regions follow DESIGN.md: for output rows [o0, o1) a tile reads input rows
[o0*S - hb, o1*S + ha) clipped to the image (hb, ha from `halo`). Every tile is then
replayed exactly (`trace`) to find its crop and to prove the crop equals the
untiled result; a tile that would not be exact is refused, never approximated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from planner.errors import TileError
from planner.model.graph import ModelGraph
from planner.model.halo import (
    Halo,
    Program,
    check_tileable,
    halo,
    op_label,
    program,
    tileable_prefix,
)

__all__ = [
    "Halo", "Tile", "TileLayout", "check_tileable", "tileable_prefix", "halo", "tile_layout",
    "split_by_weights", "tile_macs", "tile_io_bytes", "trace",
]

Region = tuple[int, int, int, int]


@dataclass(frozen=True)
class Tile:
    """One tile: [y0, y1, x0, x1] half-open regions, as in the manifest's `tiles` records."""

    input_region: Region
    output_region: Region
    crop: Region

    def to_json(self) -> dict:
        """The manifest record: input_region, output_region, crop as lists."""
        return {"input_region": list(self.input_region), "output_region": list(self.output_region),
                "crop": list(self.crop)}

    @classmethod
    def from_json(cls, record: dict) -> Tile:
        """Inverse of to_json; TileError names the missing or malformed key."""
        regions = []
        for key in ("input_region", "output_region", "crop"):
            value = record.get(key) if isinstance(record, dict) else None
            if not isinstance(value, list) or len(value) != 4 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                raise TileError(f"tile record: {key!r} must be a list of 4 ints, got {value!r}")
            regions.append(tuple(value))
        return cls(*regions)


@dataclass(frozen=True)
class TileLayout:
    """Output split points per axis, the range's halo and the tiles in row-major order."""

    row_splits: tuple[int, ...]
    col_splits: tuple[int, ...]
    halo: Halo
    tiles: tuple[Tile, ...]


@dataclass(frozen=True)
class Span:
    """One tensor of one tile along one axis: tile row j holds full row p + j when valid[j]."""

    p: int
    n: int
    valid: np.ndarray


def trace(graph: ModelGraph, prog: Program, axis: int, a: int, b: int) -> dict[int, Span]:
    """Replay what the runtime computes for tile input rows [a, b) along axis 1 (H) or 2 (W).

    Exact, not a bound: SAME padding is recomputed from the tile's own sizes (as the
    runtime does after a resize), a tap outside the tile reads zero (or is skipped by a
    pool), which is right only where the full image also reads padding there.
    """
    spans = {prog.input: Span(a, b - a, np.ones(b - a, dtype=bool))}
    for st in prog.steps:
        w = st.y if axis == 1 else st.x
        src = spans[st.inputs[0]]
        full_in, full_out = graph.tensors[st.inputs[0]].shape[axis], graph.tensors[st.output].shape[axis]
        if st.kind == "window":
            n = w.out_size(src.n)
            if n < 1:
                raise TileError(f"tile [{a}, {b}) on axis {axis} is too small for {op_label(graph, st.op)}")
            offset = src.p - w.pad_before(src.n) + w.pad_before(full_in)
            p = offset // w.s
            taps = np.arange(n)[:, None] * w.s - w.pad_before(src.n) + np.arange(w.k)[None, :] * w.d
            inside = (taps >= 0) & (taps < src.n)
            outside_full = (src.p + taps < 0) | (src.p + taps >= full_in)
            ok = np.where(inside, src.valid[np.clip(taps, 0, src.n - 1)], outside_full)
            valid = ok.all(axis=1) & (offset % w.s == 0)  # misaligned: every row is shifted
        elif st.kind == "pad":
            n, p = src.n + w.p0 + w.p1, src.p
            rows = np.arange(n) - w.p0
            inside = (rows >= 0) & (rows < src.n)
            full_is_pad = (p + np.arange(n) < w.p0) | (p + np.arange(n) >= w.p0 + full_in)
            valid = np.where(inside, src.valid[np.clip(rows, 0, src.n - 1)], full_is_pad)
        else:
            ins = [spans[t] for t in st.inputs]
            if len({s.n for s in ins}) != 1:
                raise TileError(f"tile [{a}, {b}) on axis {axis}: inputs of {op_label(graph, st.op)} "
                                f"differ in size {[s.n for s in ins]}")
            n, p = src.n, src.p
            valid = np.logical_and.reduce([s.valid for s in ins]) & (len({s.p for s in ins}) == 1)
        q = p + np.arange(n)
        spans[st.output] = Span(p, n, valid & (q >= 0) & (q < full_out))
    return spans


def split_by_weights(total: int, weights: Sequence[float], multiple: int = 1) -> list[int]:
    """Split points [0, ..., total] with pieces proportional to weights, in multiples of
    `multiple` (the last piece takes any remainder); no piece is empty when total allows."""
    if not isinstance(total, int) or total < 0:
        raise TileError(f"split total must be an int >= 0, got {total!r}")
    if not isinstance(multiple, int) or multiple < 1:
        raise TileError(f"split multiple must be an int >= 1, got {multiple!r}")
    if not weights or not all(isinstance(w, (int, float)) and math.isfinite(w) and w > 0 for w in weights):
        raise TileError(f"split weights must be finite numbers > 0, got {list(weights)!r}")
    units, rest = divmod(total, multiple)
    ideal = [units * w / sum(weights) for w in weights]
    counts = [math.floor(v) for v in ideal]
    # Largest remainder: the units lost to flooring go to the pieces that lost most.
    for i in sorted(range(len(counts)), key=lambda i: counts[i] - ideal[i])[: units - sum(counts)]:
        counts[i] += 1
    for i in range(len(counts)):
        empty = counts[i] == 0 and not (i == len(counts) - 1 and rest)
        donor = max(range(len(counts)), key=lambda k: counts[k])
        if empty and counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    points = [0]
    for c in counts:
        points.append(points[-1] + c * multiple)
    points[-1] = total
    return points


def _splits(spec: int | Sequence[int], size: int, what: str) -> tuple[int, ...]:
    if isinstance(spec, int) and not isinstance(spec, bool):
        if not 1 <= spec <= size:
            raise TileError(f"{what}: cannot split {size} output pixels into {spec} tiles")
        return tuple(split_by_weights(size, [1.0] * spec))
    points = list(spec) if isinstance(spec, (list, tuple)) else None
    if not points or not all(isinstance(v, int) and not isinstance(v, bool) for v in points):
        raise TileError(f"{what}: expected a tile count or a list of split points, got {spec!r}")
    if len(points) < 2 or points[0] != 0 or points[-1] != size:
        raise TileError(f"{what}: split points {points} must start at 0 and end at {size}")
    if any(b <= a for a, b in pairwise(points)):
        raise TileError(f"{what}: split points {points} must be strictly increasing")
    return tuple(points)


def _fit(graph: ModelGraph, prog: Program, axis: int, out: tuple[int, int], region: tuple[int, int],
         stride: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(input interval, crop) for output interval `out`, starting from `region` and, only if
    that tile cannot run (e.g. its outputs are pure PAD rows past the image), growing it by
    whole strides (which keeps the alignment) until the trace proves the crop exact."""
    (o0, o1), (a, b), size = out, region, graph.tensors[prog.input].shape[axis]
    a = min(a, (size - 1) // stride * stride)  # outputs past the image (PAD): keep one stride
    for grow in range(0, size // stride + 2):
        lo, hi = max(a - grow * stride, 0), min(b + grow * stride, size)
        for a2, b2 in dict.fromkeys([(lo, b), (a, hi), (lo, hi)] if grow else [(max(a, 0), b)]):
            if a2 >= b2:
                continue
            try:
                span = trace(graph, prog, axis, a2, b2)[prog.output]
            except TileError:
                continue  # too small for a VALID window: grow
            c0, c1 = o0 - span.p, o1 - span.p
            if 0 <= c0 and c1 <= span.n and span.valid[c0:c1].all():
                return (a2, b2), (c0, c1)
    raise TileError(f"ops [{prog.start}, {prog.end}): output {'rows' if axis == 1 else 'columns'} "
                    f"[{o0}, {o1}) cannot be computed exactly from any input window")


def _axis(graph: ModelGraph, prog: Program, axis: int, splits: tuple[int, ...], stride: int,
          before: int, after: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(input interval, crop interval) of each output interval along one axis."""
    size = graph.tensors[prog.input].shape[axis]
    # Tile lengths congruent to the image's modulo S keep every SAME layer's padding
    # equal to the full image's (it depends on length mod stride); a no-op when S | size.
    extra = size % stride
    return [
        _fit(graph, prog, axis, (o0, o1), (o0 * stride - before, min(o1 * stride + after + extra, size)), stride)
        for o0, o1 in pairwise(splits)
    ]


def tile_layout(graph: ModelGraph, start: int, end: int, rows: int | Sequence[int],
                cols: int | Sequence[int]) -> TileLayout:
    """Tiles of ops [start, end) for a rows x cols grid (counts or output split points)."""
    prog, h = program(graph, start, end), halo(graph, start, end)
    rs = _splits(rows, h.out_shape[1], "rows")
    cs = _splits(cols, h.out_shape[2], "cols")
    ys = _axis(graph, prog, 1, rs, h.stride_y, h.before_y, h.after_y)
    xs = _axis(graph, prog, 2, cs, h.stride_x, h.before_x, h.after_x)
    tiles = tuple(
        Tile((*yin, *xin), (oy0, oy1, ox0, ox1), (*ycrop, *xcrop))
        for (oy0, oy1), (yin, ycrop) in zip(pairwise(rs), ys, strict=True)
        for (ox0, ox1), (xin, xcrop) in zip(pairwise(cs), xs, strict=True)
    )
    return TileLayout(rs, cs, h, tiles)


def tile_macs(graph: ModelGraph, start: int, end: int, layout: TileLayout) -> list[int]:
    """MACs each tile computes, halo recomputation and discarded border rows included."""
    prog = program(graph, start, end)
    result = []
    for tile in layout.tiles:
        y0, y1, x0, x1 = tile.input_region
        ys, xs = trace(graph, prog, 1, y0, y1), trace(graph, prog, 2, x0, x1)
        total = 0
        for st in prog.steps:
            shape = graph.tensors[st.output].shape
            # Per-op MACs scale with output pixels (conv, pool and element-wise alike).
            total += graph.ops[st.op].macs * ys[st.output].n * xs[st.output].n // (shape[1] * shape[2])
        result.append(total)
    return result


def tile_io_bytes(graph: ModelGraph, start: int, end: int, layout: TileLayout) -> list[tuple[int, int]]:
    """(input bytes sent, cropped output bytes returned) per tile."""
    prog = program(graph, start, end)
    tin, tout = graph.tensors[prog.input], graph.tensors[prog.output]
    in_px = tin.nbytes // (tin.shape[1] * tin.shape[2])
    out_px = tout.nbytes // (tout.shape[1] * tout.shape[2])
    result = []
    for t in layout.tiles:
        iy0, iy1, ix0, ix1 = t.input_region
        cy0, cy1, cx0, cx1 = t.crop
        result.append(((iy1 - iy0) * (ix1 - ix0) * in_px, (cy1 - cy0) * (cx1 - cx0) * out_px))
    return result
