"""Receptive-field (halo) analysis of an op range for fused spatial tiles.

A tileable range is turned into a per-axis "program" of steps (windowed op, PAD,
pointwise/join). Rows and columns are independent, so `halo` (DESIGN.md's J/L/R
formulas on the full image) and `tile.trace` (an exact replay of one tile) run one
axis at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from planner.errors import TileError
from planner.model.graph import ModelGraph

WINDOWED = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"})
PADS = frozenset({"PAD", "PADV2"})
UNARY = frozenset({
    "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LOGISTIC", "TANH", "HARD_SWISH",
    "LEAKY_RELU", "PRELU", "ELU", "GELU", "EXP", "LOG", "ABS", "NEG", "SQRT", "RSQRT",
    "SQUARE", "SIN", "COS", "FLOOR", "CEIL", "ROUND", "SIGN", "CAST", "QUANTIZE", "DEQUANTIZE",
})
BINARY = frozenset({
    "ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "POW",
})
# Ops refused for a reason more specific than "not spatially local".
_REFUSED_WHY = {
    "TRANSPOSE_CONV": "its output shape is a constant of the model, so a resized tile "
    "would still produce a full-size output",
    "MIRROR_PAD": "its reflected border differs inside a tile",
}


@dataclass(frozen=True)
class Win:
    """One axis of a step: kernel k, dilation d, stride s, SAME padding, PAD amounts."""

    k: int = 1
    d: int = 1
    s: int = 1
    same: bool = False
    p0: int = 0
    p1: int = 0

    @property
    def k_eff(self) -> int:
        return self.d * (self.k - 1) + 1

    def out_size(self, n: int) -> int:
        """Output length for input length n, as the TFLite kernels compute it."""
        if self.same:
            return (n + self.s - 1) // self.s
        return (n - self.k_eff + self.s) // self.s

    def pad_before(self, n: int) -> int:
        """SAME padding before, from the input length (TFLite ComputePaddingWithOffset)."""
        if not self.same:
            return 0
        return max((self.out_size(n) - 1) * self.s + self.k_eff - n, 0) // 2


@dataclass(frozen=True)
class Step:
    """One op of a tileable range: kind 'window', 'pad' or 'point' (element-wise/join)."""

    op: int
    kind: str
    inputs: tuple[int, ...]
    output: int
    y: Win
    x: Win


@dataclass(frozen=True)
class Program:
    """The steps of a tileable range with its single activation input and output."""

    start: int
    end: int
    input: int
    output: int
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Halo:
    """Final strides and halos (input pixels, multiples of the stride) of a tileable range."""

    stride_y: int
    stride_x: int
    before_y: int
    after_y: int
    before_x: int
    after_x: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


def op_label(graph: ModelGraph, i: int) -> str:
    """How errors name an op: "op 17 (FULLY_CONNECTED)"."""
    return f"op {i} ({graph.ops[i].type})"


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
        t for op in graph.ops[start:end] for t in op.outputs
        if t in produced and (t in graph.outputs or any(c >= end for c in graph.consumers.get(t, [])))
    ]
    return inputs, outputs


def _spatial_const(graph: ModelGraph, t: int) -> bool:
    """True when a static operand varies over H or W (it cannot follow a resized tile)."""
    shape = graph.tensors[t].shape
    # Broadcasting aligns from the right: [..., H, W, C].
    return (len(shape) >= 3 and shape[-3] > 1) or (len(shape) >= 2 and shape[-2] > 1)


def _window(graph: ModelGraph, i: int) -> tuple[Win, Win]:
    op, opts = graph.ops[i], graph.options(i)
    if opts is None or len(op.inputs) < 1:
        raise TileError(f"{op_label(graph, i)} has no options; cannot derive its window")
    same = opts.padding == schema.Padding.SAME
    if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        if len(op.inputs) < 2 or op.inputs[1] < 0 or not graph.is_static(op.inputs[1]):
            raise TileError(f"{op_label(graph, i)} has non-constant weights and cannot be tiled")
        _, kh, kw, _ = graph.tensors[op.inputs[1]].shape
        dy, dx = max(opts.dilationHFactor, 1), max(opts.dilationWFactor, 1)
    else:
        kh, kw, dy, dx = opts.filterHeight, opts.filterWidth, 1, 1
    return (Win(k=kh, d=dy, s=opts.strideH, same=same), Win(k=kw, d=dx, s=opts.strideW, same=same))


def _pads(graph: ModelGraph, i: int) -> tuple[Win, Win]:
    op = graph.ops[i]
    t = op.inputs[1] if len(op.inputs) > 1 else -1
    info = graph.tensors[t] if t >= 0 else None
    data = graph.buffer_bytes(int(graph.subgraph.tensors[t].buffer)) if t >= 0 else None
    if info is None or data is None or info.dtype not in ("int32", "int64"):
        raise TileError(f"{op_label(graph, i)} has non-constant paddings and cannot be tiled")
    pads = np.frombuffer(data, dtype=info.dtype).reshape(-1, 2)
    if pads.shape[0] != 4 or (pads < 0).any():
        raise TileError(f"{op_label(graph, i)} has paddings {pads.tolist()}; tiles need NHWC pads >= 0")
    (t0, t1), (l0, l1) = pads[1], pads[2]
    return Win(p0=int(t0), p1=int(t1)), Win(p0=int(l0), p1=int(l1))


_STEPS: WeakKeyDictionary[ModelGraph, dict[int, Step | None | TileError]] = WeakKeyDictionary()


def _step(graph: ModelGraph, i: int) -> Step | None:
    """The step of op i, None for ops computing only constants; TileError when untileable."""
    # Memoised per graph: the planner asks for many overlapping ranges (tileable_prefix).
    cache = _STEPS.setdefault(graph, {})
    if i not in cache:
        try:
            cache[i] = _make_step(graph, i)
        except TileError as exc:
            cache[i] = exc
    if isinstance(cache[i], TileError):
        raise TileError(str(cache[i]))
    return cache[i]


def _make_step(graph: ModelGraph, i: int) -> Step | None:
    op = graph.ops[i]
    if all(graph.is_static(t) for t in op.outputs):
        return None  # fp16 weight DEQUANTIZE etc.: the cutter copies it, not spatial
    if op.type in _REFUSED_WHY:
        raise TileError(f"{op_label(graph, i)} cannot be tiled: {_REFUSED_WHY[op.type]}")
    if op.type not in WINDOWED | PADS | UNARY | BINARY | {"CONCATENATION"}:
        raise TileError(f"{op_label(graph, i)} cannot be tiled")
    if any(t >= 0 and graph.tensors[t].is_variable for t in op.inputs):
        raise TileError(f"{op_label(graph, i)} cannot be tiled: it reads a variable tensor")
    acts = tuple(t for t in op.inputs if t >= 0 and not graph.is_static(t))
    consts = [t for t in op.inputs if t >= 0 and graph.is_static(t)]
    if len(op.outputs) != 1 or not acts:
        raise TileError(f"{op_label(graph, i)} cannot be tiled: expected one output and an activation input")
    for t in acts + op.outputs:
        if len(graph.tensors[t].shape) != 4:
            raise TileError(f"{op_label(graph, i)} cannot be tiled: tensor {graph.tensors[t].name!r} "
                            f"has shape {list(graph.tensors[t].shape)}, tiles need NHWC")
    if op.type in WINDOWED:
        if acts != (op.inputs[0],):
            raise TileError(f"{op_label(graph, i)} cannot be tiled: its only activation must be input 0")
        return Step(i, "window", acts, op.outputs[0], *_window(graph, i))
    if op.type in PADS:
        if acts != (op.inputs[0],):
            raise TileError(f"{op_label(graph, i)} cannot be tiled: its only activation must be input 0")
        return Step(i, "pad", acts, op.outputs[0], *_pads(graph, i))
    if op.type == "CONCATENATION" and (graph.options(i) is None or graph.options(i).axis % 4 != 3):
        raise TileError(f"{op_label(graph, i)} cannot be tiled: it concatenates along a non-channel axis")
    for t in consts:
        if _spatial_const(graph, t):
            raise TileError(f"{op_label(graph, i)} cannot be tiled: constant {graph.tensors[t].name!r} "
                            f"has spatial extent {list(graph.tensors[t].shape)}")
    if op.type in UNARY and len(acts) != 1:
        raise TileError(f"{op_label(graph, i)} cannot be tiled: it has {len(acts)} activation inputs")
    if len({graph.tensors[t].shape[1:3] for t in acts + op.outputs}) != 1:
        raise TileError(f"{op_label(graph, i)} cannot be tiled: its activations differ in H, W (broadcast)")
    return Step(i, "point", acts, op.outputs[0], Win(), Win())


def program(graph: ModelGraph, start: int, end: int) -> Program:
    """The per-axis program of ops [start, end); TileError names the first obstacle."""
    if not 0 <= start < end <= len(graph.ops):
        raise TileError(f"op range [{start}, {end}) is empty or outside 0..{len(graph.ops)}")
    steps = tuple(s for s in (_step(graph, i) for i in range(start, end)) if s is not None)
    inputs, outputs = part_io(graph, start, end)
    for what, ts in (("inputs", inputs), ("outputs", outputs)):
        if len(ts) != 1:
            names = ", ".join(graph.tensors[t].name for t in ts) or "none"
            raise TileError(f"ops [{start}, {end}) have {len(ts)} activation {what} ({names}); "
                            f"a tiled part needs exactly one")
    return Program(start, end, inputs[0], outputs[0], steps)


def check_tileable(graph: ModelGraph, start: int, end: int) -> None:
    """Raise TileError naming the op (index and type) that stops [start, end) being tiled."""
    program(graph, start, end)
    halo(graph, start, end)


def tileable_prefix(graph: ModelGraph, start: int) -> int:
    """Largest end such that [start, end) is tileable; start itself when none is."""
    # One incremental sweep (the planner calls this for every start): part inputs and
    # unequal strides only accumulate, so either one ends the search; open outputs
    # (residual branches) may close again, so those only skip an end.
    best, inputs, produced, open_ = start, set(), set(), set()
    stride: dict[int, tuple[int, int]] = {}
    for i in range(start, len(graph.ops)):
        try:
            st = _step(graph, i)
        except TileError:
            break
        if st is not None:
            inputs.update(t for t in st.inputs if t not in produced)
            js = {stride.get(t, (1, 1)) for t in st.inputs}
            if len(inputs) > 1 or len(js) > 1:
                break
            (jy, jx), = js
            stride[st.output] = (jy * st.y.s, jx * st.x.s)
            produced.add(st.output)
            open_.add(st.output)
        open_ = {t for t in open_ if t in graph.outputs or _last_use(graph, t) > i}
        if len(inputs) == 1 and len(open_) == 1:
            best = i + 1
    return best


def _last_use(graph: ModelGraph, t: int) -> int:
    return max(graph.consumers.get(t, [-1]))


def halo(graph: ModelGraph, start: int, end: int) -> Halo:
    """Strides and halos of ops [start, end) by DESIGN.md's J/L/R formulas (full image)."""
    prog = program(graph, start, end)
    before, after, strides = [], [], []
    for axis in (1, 2):
        state = {prog.input: (1, 0, 0)}  # tensor -> (J, L, R)
        for st in prog.steps:
            w = st.y if axis == 1 else st.x
            js = {state[t][0] for t in st.inputs}
            if len(js) != 1:
                raise TileError(f"{op_label(graph, st.op)} joins tensors of unequal strides {sorted(js)}")
            j = js.pop()
            lo = max(state[t][1] for t in st.inputs)
            hi = max(state[t][2] for t in st.inputs)
            if st.kind == "window":
                pb = w.pad_before(graph.tensors[st.inputs[0]].shape[axis])
                state[st.output] = (j * w.s, lo + pb * j, hi + (w.k_eff - 1 - pb) * j)
            elif st.kind == "pad":
                state[st.output] = (j, lo + w.p0 * j, hi - w.p0 * j)
            else:
                state[st.output] = (j, lo, hi)
        s, lo, hi = state[prog.output]
        strides.append(s)
        before.append(-(-lo // s) * s)
        after.append(max(-(-(hi - s + 1) // s), 0) * s)
    return Halo(strides[0], strides[1], before[0], after[0], before[1], after[1],
                graph.tensors[prog.input].shape, graph.tensors[prog.output].shape)
