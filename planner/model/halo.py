"""Receptive-field (halo) analysis of an op range for fused spatial tiles.

A tileable range is turned into a per-axis "program" of steps (windowed op, PAD,
nearest upsample by an integer scale, element-wise ops, channel concat and split). Rows
and columns are independent, so `halo` (the J/L/R formulas of docs/tiling.md, on the
full image, per activation input, in exact fractions) and `tile.trace` (an exact replay
of one tile) run one axis at a time. A range may have several activation inputs and
outputs (listed in the cutter's boundary order, the order of the part's tile regions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from planner.errors import TileError
from planner.model.graph import ModelGraph
from planner.model.tilesteps import Step, op_label, op_step


@dataclass(frozen=True)
class Program:
    """The steps of a tileable range with its activation inputs and outputs (part order)."""

    start: int
    end: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    steps: tuple[Step, ...]

    @property
    def input(self) -> int:
        """The first activation input (the grid's reference for the single-tensor fields)."""
        return self.inputs[0]

    @property
    def output(self) -> int:
        """The first activation output: the tile grid's split points are its pixels."""
        return self.outputs[0]


@dataclass(frozen=True)
class Halo:
    """Final strides and halos (input pixels, multiples of the stride) of a tileable range:
    of its first input, for its first output (strides are Fractions after an upsample)."""

    stride_y: int | Fraction
    stride_x: int | Fraction
    before_y: int | Fraction
    after_y: int | Fraction
    before_x: int | Fraction
    after_x: int | Fraction
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


def part_io(graph: ModelGraph, start: int, end: int) -> tuple[list[int], list[int]]:
    """Activation inputs and outputs of ops [start, end), by the cutter's rules."""
    produced: set[int] = set()
    inputs: list[int] = []
    for op in graph.ops[start:end]:
        for t in op.inputs:
            if t >= 0 and t not in produced and t not in inputs and not graph.is_static(t):
                if not graph.tensors[t].is_variable:
                    inputs.append(t)
        produced.update(t for t in op.outputs if not graph.is_static(t))
    outputs = [
        t
        for op in graph.ops[start:end]
        for t in op.outputs
        if t in produced
        and (t in graph.outputs or any(c >= end for c in graph.consumers.get(t, [])))
    ]
    return inputs, outputs


def _part_order(graph: ModelGraph, ts: list[int], model: tuple[int, ...]) -> tuple[int, ...]:
    """The cutter's boundary order: the model's own inputs/outputs first, in model order."""
    return tuple(sorted(ts, key=lambda t: (0, model.index(t)) if t in model else (1, ts.index(t))))


def program(graph: ModelGraph, start: int, end: int) -> Program:
    """The per-axis program of ops [start, end); TileError names the first obstacle."""
    if not 0 <= start < end <= len(graph.ops):
        raise TileError(f"op range [{start}, {end}) is empty or outside 0..{len(graph.ops)}")
    steps = tuple(s for s in (op_step(graph, i) for i in range(start, end)) if s is not None)
    inputs, outputs = part_io(graph, start, end)
    for what, ts in (("inputs", inputs), ("outputs", outputs)):
        if not ts:
            raise TileError(f"ops [{start}, {end}) have no activation {what}; nothing to tile")
    return Program(start, end, _part_order(graph, inputs, graph.inputs),
                   _part_order(graph, outputs, graph.outputs), steps)


def check_tileable(graph: ModelGraph, start: int, end: int) -> None:
    """Raise TileError naming the op (index and type) that stops [start, end) being tiled."""
    program(graph, start, end)
    halo(graph, start, end)


def tileable_prefix(graph: ModelGraph, start: int) -> int:
    """Largest end such that [start, end) is tileable (any number of crossing tensors);
    start itself when none is."""
    end = start
    while end < len(graph.ops):
        try:
            op_step(graph, end)
        except TileError:
            break
        end += 1
    for e in range(end, start, -1):  # the longest first: usually the only call
        try:
            check_tileable(graph, start, e)
            return e
        except TileError:
            continue
    return start


Reach = tuple[Fraction, Fraction, Fraction]  # (J, L, R) of a tensor pixel in input pixels


def reach(graph: ModelGraph, prog: Program, axis: int) -> dict[int, dict[int, Reach]]:
    """For each input t, every tensor computed from it: pixel q reads t's pixels
    [q*J - L, q*J + R] (docs/tiling.md's J/L/R formulas, per input, exact fractions)."""
    result: dict[int, dict[int, Reach]] = {}
    for src in prog.inputs:
        state: dict[int, Reach] = {src: (Fraction(1), Fraction(0), Fraction(0))}
        for st in prog.steps:
            known = [t for t in st.inputs if t in state]
            if not known:
                continue
            w = st.y if axis == 1 else st.x
            js = {state[t][0] for t in known}
            if len(js) != 1:
                raise TileError(f"{op_label(graph, st.op)} joins tensors of unequal strides "
                                f"{sorted(str(j) for j in js)}")
            j = js.pop()
            lo = max(state[t][1] for t in known)
            hi = max(state[t][2] for t in known)
            if st.kind == "window":
                pb = w.pad_before(graph.tensors[st.inputs[0]].shape[axis])
                new = (j * w.s, lo + pb * j, hi + (w.k_eff - 1 - pb) * j)
            elif st.kind == "pad":
                new = (j, lo + w.p0 * j, hi - w.p0 * j)
            elif st.kind == "resize":  # pixel q reads floor(q / up): up - 1 pixels earlier at most
                new = (j / w.up, lo + (w.up - 1) * j / w.up, hi)
            else:
                new = (j, lo, hi)
            for t in st.outputs:
                state[t] = new
        result[src] = state
    return result


def _whole(v: Fraction) -> int | Fraction:
    return int(v) if v.denominator == 1 else v


def halo(graph: ModelGraph, start: int, end: int) -> Halo:
    """Strides and halos of ops [start, end) by the J/L/R formulas (full image): of the first
    input that the first output is computed from, for that output."""
    prog = program(graph, start, end)
    before, after, strides = [], [], []
    src = prog.input
    for axis in (1, 2):
        r = reach(graph, prog, axis)
        src = next((t for t in prog.inputs if prog.output in r[t]), prog.input)
        s, lo, hi = r[src][prog.output]
        strides.append(_whole(s))
        if s.denominator == 1:  # whole input pixels per output pixel: multiples of the stride
            before.append(math.ceil(lo / s) * int(s))
            after.append(max(math.ceil((hi - s + 1) / s), 0) * int(s))
        else:  # an upsample: input pixels (fractions of one output pixel's share)
            before.append(_whole(lo))
            after.append(_whole(max(hi - s + 1, Fraction(0))))
    return Halo(strides[0], strides[1], before[0], after[0], before[1], after[1],
                graph.tensors[src].shape, graph.tensors[prog.output].shape)
