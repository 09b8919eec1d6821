"""Fused spatial tiles: per-tile input regions, output regions and crops for an op range.

Regions follow the J/L/R scheme of planner/model/halo.py: for output rows [o0, o1) a tile
reads rows [o0*J - hb, o1*J + ha) of an input (hb, ha its halo before and after, whole
strides), clipped to the image. A range may have several activation inputs and outputs
(a cut inside a residual block, a route layer): the grid's split points are pixels of
the first output; every other output gets the same grid scaled by its stride ratio, and
every input its own window, the union of what each output needs of it, aligned to its
own stride. Where branches join inside a tile (ADD, CONCATENATION) their tile extents
must agree, so a branch that would compute less is given more input until they do.
Every tile is then replayed exactly (`trace`) to find its crops and to prove each crop
equals the untiled result; a tile that would not be exact is refused, never approximated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise, product

import numpy as np

from node.wire.regions import TileSpec
from planner.errors import TileError
from planner.model.graph import ModelGraph
from planner.model.halo import (
    Halo,
    Program,
    check_tileable,
    halo,
    program,
    reach,
    tileable_prefix,
)
from planner.model.tilesteps import Step, op_label

__all__ = [
    "Halo", "TileLayout", "TileSpec", "check_tileable", "tileable_prefix", "halo",
    "tile_layout", "tile_from_json", "split_by_weights", "trace",
]

Interval = tuple[int, int]


def tile_from_json(record: object) -> TileSpec:
    """A manifest / plan tile record as a TileSpec; TileError names the malformed key."""
    try:
        return TileSpec.from_json(record)
    except ValueError as exc:
        raise TileError(str(exc)) from None


@dataclass(frozen=True)
class TileLayout:
    """Output split points per axis (of the first output), the range's halo, the tiles in
    row-major order."""

    row_splits: tuple[int, ...]
    col_splits: tuple[int, ...]
    halo: Halo
    tiles: tuple[TileSpec, ...]


@dataclass(frozen=True)
class Span:
    """One tensor of one tile along one axis: tile row j holds full row p + j when valid[j]."""

    p: int
    n: int
    valid: np.ndarray


class _Mismatch(TileError):
    """Branches meet at a join with different tile extents (the runtime would refuse)."""

    def __init__(self, message: str, step: Step, spans: list[Span]) -> None:
        super().__init__(message)
        self.step, self.spans = step, spans


def trace(graph: ModelGraph, prog: Program, axis: int, a: int | Mapping[int, Interval],
          b: int | None = None) -> dict[int, Span]:
    """Replay what the runtime computes for one tile along axis 1 (H) or 2 (W): input rows
    [a, b) of a one-input range, or {input tensor: (a, b)} for every input.

    Exact, not a bound: SAME padding is recomputed from the tile's own sizes (as the
    runtime does after a resize), a tap outside the tile reads zero (or is skipped by a
    pool), which is right only where the full image also reads padding there.
    """
    windows = {prog.input: (a, b)} if isinstance(a, int) else dict(a)
    spans = {t: Span(lo, hi - lo, np.ones(hi - lo, dtype=bool)) for t, (lo, hi) in windows.items()}
    for st in prog.steps:
        w = st.y if axis == 1 else st.x
        src = spans[st.inputs[0]]
        full_in, full_out = (
            graph.tensors[st.inputs[0]].shape[axis],
            graph.tensors[st.output].shape[axis],
        )
        if st.kind == "window":
            n = w.out_size(src.n)
            if n < 1:
                raise TileError(
                    f"tile {windows} on axis {axis} is too small for {op_label(graph, st.op)}"
                )
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
        elif st.kind == "resize":  # nearest, integer scale: row q is row q // up, exactly
            n, p, valid = src.n * w.up, src.p * w.up, np.repeat(src.valid, w.up)
        else:
            ins = [spans[t] for t in st.inputs]
            if len({(s.p, s.n) for s in ins}) != 1:
                raise _Mismatch(
                    f"tile {windows} on axis {axis}: inputs of {op_label(graph, st.op)} "
                    f"differ in extent {[(s.p, s.n) for s in ins]}",
                    st,
                    ins,
                )
            n, p = src.n, src.p
            valid = np.logical_and.reduce([s.valid for s in ins])
        q = p + np.arange(n)
        for t in st.outputs:
            spans[t] = Span(p, n, valid & (q >= 0) & (q < full_out))
    return spans


def split_by_weights(total: int, weights: Sequence[float], multiple: int = 1) -> list[int]:
    """Split points [0, ..., total] with pieces proportional to weights, in multiples of
    `multiple` (the last piece takes any remainder); no piece is empty when total allows."""
    if not isinstance(total, int) or total < 0:
        raise TileError(f"split total must be an int >= 0, got {total!r}")
    if not isinstance(multiple, int) or multiple < 1:
        raise TileError(f"split multiple must be an int >= 1, got {multiple!r}")
    if not weights or not all(
        isinstance(w, (int, float)) and math.isfinite(w) and w > 0 for w in weights
    ):
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


def _splits(spec: int | Sequence[int], size: int, what: str, multiple: int = 1) -> tuple[int, ...]:
    if isinstance(spec, int) and not isinstance(spec, bool):
        if not 1 <= spec <= max(size // multiple, 1):
            raise TileError(f"{what}: cannot split {size} output pixels into {spec} tiles"
                            + (f" of whole multiples of {multiple}" if multiple > 1 else ""))
        return tuple(split_by_weights(size, [1.0] * spec, multiple))
    points = list(spec) if isinstance(spec, (list, tuple)) else None
    if not points or not all(isinstance(v, int) and not isinstance(v, bool) for v in points):
        raise TileError(f"{what}: expected a tile count or a list of split points, got {spec!r}")
    if len(points) < 2 or points[0] != 0 or points[-1] != size:
        raise TileError(f"{what}: split points {points} must start at 0 and end at {size}")
    if any(b <= a for a, b in pairwise(points)):
        raise TileError(f"{what}: split points {points} must be strictly increasing")
    return tuple(points)


@dataclass(frozen=True)
class _Axis:
    """What one axis of a range needs for tiling: J/L/R per (input, tensor), each input's
    alignment modulus and size, and each output's pixels per pixel of the first output."""

    reach: dict[int, dict[int, tuple[Fraction, Fraction, Fraction]]]
    mods: dict[int, int]
    sizes: dict[int, int]
    ratio: dict[int, Fraction]


def _axis_info(graph: ModelGraph, prog: Program, axis: int) -> _Axis:
    r = reach(graph, prog, axis)
    mods, sizes = {}, {}
    for t in prog.inputs:
        m = 1
        for st in prog.steps:  # a strided window reads its input in whole strides
            w = st.y if axis == 1 else st.x
            if st.kind == "window" and w.s > 1 and st.inputs[0] in r[t]:
                m = math.lcm(m, (w.s * r[t][st.inputs[0]][0]).numerator)
        for u in prog.outputs:
            if u in r[t]:
                m = math.lcm(m, r[t][u][0].numerator)
        mods[t], sizes[t] = m, graph.tensors[t].shape[axis]
    ref, ratio = prog.output, {}
    for u in prog.outputs:
        qs = {r[t][ref][0] / r[t][u][0] for t in prog.inputs if ref in r[t] and u in r[t]}
        same = graph.tensors[u].shape[axis] == graph.tensors[ref].shape[axis]
        if len(qs) > 1 or (not qs and not same):
            raise TileError(
                f"ops [{prog.start}, {prog.end}): outputs {graph.tensors[ref].name!r} and "
                f"{graph.tensors[u].name!r} are not on one grid (no common input fixes "
                "their stride ratio)"
            )
        ratio[u] = qs.pop() if qs else Fraction(1)
    return _Axis(r, mods, sizes, ratio)


def _output_splits(graph: ModelGraph, prog: Program, ax: _Axis, axis: int, splits: tuple[int, ...]
                   ) -> dict[int, list[Interval]]:
    """Each output's intervals for the grid's split points (pixels of the first output)."""
    what = "rows" if axis == 1 else "columns"
    out: dict[int, list[Interval]] = {}
    for u in prog.outputs:
        size, q = graph.tensors[u].shape[axis], ax.ratio[u]
        points = [*(p * q for p in splits[:-1]), Fraction(size)]
        bad = [int(p) for p, v in zip(splits, points, strict=False) if v.denominator != 1]
        if bad or any(b <= a for a, b in pairwise(points)) or points[-2] >= size:
            raise TileError(f"{what} split points {list(splits)} do not map to whole, non-empty "
                            f"{what} of output {graph.tensors[u].name!r} (it has {q} of its pixels "
                            f"per grid pixel){f': {bad} fall inside one' if bad else ''}")
        out[u] = [(int(a), int(b)) for a, b in pairwise(points)]
    return out


def _align(iv: Interval, m: int, size: int) -> Interval:
    """Start on a multiple of m; length congruent to the image's modulo m (so every SAME
    layer pads the tile as it pads the image: its padding depends on length mod stride)."""
    a, b = iv
    a = min(max(a // m * m, 0), (size - 1) // m * m)
    extra = size % m
    return a, min(b + (extra - b) % m, size)


def _initial(ax: _Axis, t: int, outs: Mapping[int, Interval]) -> Interval:
    """Input t's window for the outputs' intervals by the halo formulas (unclipped ends)."""
    m, size, lo, hi = ax.mods[t], ax.sizes[t], None, None
    for u, (o0, o1) in outs.items():
        if u not in ax.reach[t]:
            continue
        j, left, right = ax.reach[t][u]
        a = math.floor(o0 * j - left) // m * m
        nominal = math.ceil(o1 * j)
        grow = max(math.ceil((o1 - 1) * j + right + 1) - nominal, 0)
        b = nominal + math.ceil(grow / m) * m + size % m
        lo, hi = (a, b) if lo is None else (min(lo, a), max(hi, b))
    assert lo is not None and hi is not None  # every input reaches some output
    return min(max(lo, 0), (size - 1) // m * m), min(hi, size)


def _backward(graph: ModelGraph, prog: Program, axis: int, seeds: Mapping[int, Interval]
              ) -> dict[int, Interval]:
    """The input windows the given tensor intervals need (one reverse sweep, full image)."""
    need = {t: (max(a, 0), min(b, graph.tensors[t].shape[axis])) for t, (a, b) in seeds.items()}
    for st in reversed(prog.steps):
        ivs = [need[o] for o in st.outputs if o in need]
        if not ivs:
            continue
        w = st.y if axis == 1 else st.x
        a, b = min(i[0] for i in ivs), max(i[1] for i in ivs)
        n_in = graph.tensors[st.inputs[0]].shape[axis]
        if st.kind == "window":
            pb = w.pad_before(n_in)
            a, b = a * w.s - pb, (b - 1) * w.s - pb + w.k_eff
        elif st.kind == "pad":
            a, b = a - w.p0, b - w.p0
        elif st.kind == "resize":
            a, b = a // w.up, -(-b // w.up)
        a, b = max(a, 0), min(b, n_in)
        if a >= b:
            continue  # only padding rows: nothing of the input
        for t in st.inputs:
            have = need.get(t)
            need[t] = (a, b) if have is None else (min(have[0], a), max(have[1], b))
    return {t: need[t] for t in prog.inputs if t in need}


def _settle(graph: ModelGraph, prog: Program, ax: _Axis, axis: int, ivs: dict[int, Interval]
            ) -> tuple[dict[int, Interval], dict[int, Span]] | None:
    """Grow the inputs until every join's branches agree in extent; None when impossible."""
    for _ in range(4 * len(prog.steps) + 8):
        try:
            return ivs, trace(graph, prog, axis, ivs)
        except _Mismatch as exc:
            target = (min(s.p for s in exc.spans), max(s.p + s.n for s in exc.spans))
            lagging = [t for t, s in zip(exc.step.inputs, exc.spans, strict=True)
                       if (s.p, s.p + s.n) != target]  # only these need more input
            need = _backward(graph, prog, axis, dict.fromkeys(lagging, target))
            grown = {}
            for t, (a, b) in ivs.items():
                na, nb = _align(need[t], ax.mods[t], ax.sizes[t]) if t in need else (a, b)
                grown[t] = (min(a, na), max(b, nb))
            if grown == ivs:
                return None
            ivs = grown
        except TileError:
            return None  # too small for a VALID window
    return None


def _fit(graph: ModelGraph, prog: Program, ax: _Axis, axis: int, outs: Mapping[int, Interval]
         ) -> tuple[dict[int, Interval], dict[int, Interval]]:
    """(input windows, crops) for the outputs' intervals `outs`, starting from the halo
    formulas and, only if that tile cannot run (e.g. its outputs are pure PAD rows past the
    image), growing every input by whole strides (which keeps the alignment) until the
    trace proves every crop exact."""
    base = {t: _initial(ax, t, outs) for t in prog.inputs}
    for grow in range(0, max(ax.sizes[t] // ax.mods[t] for t in prog.inputs) + 2):
        for sides in [(0, 0)] if grow == 0 else [(1, 0), (0, 1), (1, 1)]:
            ivs = {
                t: (
                    max(a - sides[0] * grow * ax.mods[t], 0),
                    min(b + sides[1] * grow * ax.mods[t], ax.sizes[t]),
                )
                for t, (a, b) in base.items()
            }
            settled = _settle(graph, prog, ax, axis, ivs)
            if settled is None:
                continue
            ivs, spans = settled
            crops = {}
            for u, (o0, o1) in outs.items():
                span = spans[u]
                c0, c1 = o0 - span.p, o1 - span.p
                if not (0 <= c0 and c1 <= span.n and span.valid[c0:c1].all()):
                    break
                crops[u] = (c0, c1)
            else:
                return ivs, crops
    what = "rows" if axis == 1 else "columns"
    raise TileError(f"ops [{prog.start}, {prog.end}): output {what} "
                    f"{ {graph.tensors[u].name: list(iv) for u, iv in outs.items()} } cannot be "
                    "computed exactly from any input window")


def tile_layout(graph: ModelGraph, start: int, end: int, rows: int | Sequence[int],
                cols: int | Sequence[int]) -> TileLayout:
    """Tiles of ops [start, end) for a rows x cols grid (counts or split points of the first
    output's rows and columns)."""
    prog, h = program(graph, start, end), halo(graph, start, end)
    per_axis = []
    for axis, spec, what in ((1, rows, "rows"), (2, cols, "cols")):
        ax = _axis_info(graph, prog, axis)
        multiple = math.lcm(*(q.denominator for q in ax.ratio.values()))
        splits = _splits(spec, graph.tensors[prog.output].shape[axis], what, multiple)
        outs = _output_splits(graph, prog, ax, axis, splits)
        fits = [_fit(graph, prog, ax, axis, {u: outs[u][k] for u in prog.outputs})
                for k in range(len(splits) - 1)]
        per_axis.append((splits, outs, fits))
    (rs, youts, yfits), (cs, xouts, xfits) = per_axis
    tiles = []
    for (i, (yin, ycrop)), (k, (xin, xcrop)) in product(enumerate(yfits), enumerate(xfits)):
        ins = tuple((*yin[t], *xin[t]) for t in prog.inputs)
        regions = tuple((*youts[u][i], *xouts[u][k]) for u in prog.outputs)
        crops = tuple((*ycrop[u], *xcrop[u]) for u in prog.outputs)
        tiles.append(TileSpec(ins[0], regions[0], crops[0], ins, regions, crops))
    return TileLayout(rs, cs, h, tuple(tiles))
