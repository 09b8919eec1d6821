"""The per-op rules of the halo analysis: which ops a fused tile stack may hold, and how
each moves a window along one axis (kernel, stride, dilation, SAME padding, PAD amounts,
an integer nearest upsample). planner/model/halo.py chains these steps over a range;
docs/tiling.md gives the formulas and why each refused op is refused.
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
RESIZE = frozenset({"RESIZE_NEAREST_NEIGHBOR"})
SPLITS = frozenset({"SPLIT", "SPLIT_V"})
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
    """One axis of a step: kernel k, dilation d, stride s, SAME padding, PAD amounts, and the
    integer scale `up` of a nearest-neighbour upsample."""

    k: int = 1
    d: int = 1
    s: int = 1
    same: bool = False
    p0: int = 0
    p1: int = 0
    up: int = 1

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
    """One op of a tileable range: kind 'window', 'pad', 'resize' (nearest upsample by an
    integer scale) or 'point' (element-wise, channel concat or channel split)."""

    op: int
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    y: Win
    x: Win

    @property
    def output(self) -> int:
        return self.outputs[0]


def op_label(graph: ModelGraph, i: int) -> str:
    """How errors name an op: "op 17 (FULLY_CONNECTED)"."""
    return f"op {i} ({graph.ops[i].type})"


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


def _const_ints(graph: ModelGraph, t: int) -> np.ndarray | None:
    """The values of a constant int32/int64 operand, None when it is not one."""
    info = graph.tensors[t] if t >= 0 else None
    data = graph.buffer_bytes(int(graph.subgraph.tensors[t].buffer)) if info is not None else None
    if info is None or data is None or info.dtype not in ("int32", "int64"):
        return None
    return np.frombuffer(data, dtype=info.dtype)


def _pads(graph: ModelGraph, i: int) -> tuple[Win, Win]:
    op = graph.ops[i]
    pads = _const_ints(graph, op.inputs[1] if len(op.inputs) > 1 else -1)
    if pads is None:
        raise TileError(f"{op_label(graph, i)} has non-constant paddings and cannot be tiled")
    pads = pads.reshape(-1, 2)
    if pads.shape[0] != 4 or (pads < 0).any():
        raise TileError(
            f"{op_label(graph, i)} has paddings {pads.tolist()}; tiles need NHWC pads >= 0"
        )
    (t0, t1), (l0, l1) = pads[1], pads[2]
    return Win(p0=int(t0), p1=int(t1)), Win(p0=int(l0), p1=int(l1))


def _resize(graph: ModelGraph, i: int) -> tuple[Win, Win]:
    """Integer scales of a RESIZE_NEAREST_NEIGHBOR (docs/tiling.md: exact only there)."""
    op, opts = graph.ops[i], graph.options(i)
    if opts is not None and opts.alignCorners:
        raise TileError(f"{op_label(graph, i)} cannot be tiled: align_corners maps pixels by "
                        "the image size, which a tile does not have")
    (_, h, w, _), (_, oh, ow, _) = (
        graph.tensors[op.inputs[0]].shape,
        graph.tensors[op.outputs[0]].shape,
    )
    if oh % h or ow % w or oh < h or ow < w:
        raise TileError(f"{op_label(graph, i)} cannot be tiled: it scales {h}x{w} to {oh}x{ow}, "
                        "not by integers; a tile boundary would not land on an input pixel")
    if oh // h != ow // w:
        raise TileError(f"{op_label(graph, i)} cannot be tiled: its scales differ "
                        f"({oh // h} rows, {ow // w} columns); tiles need one integer scale")
    return Win(up=oh // h), Win(up=ow // w)


def _split_axis(graph: ModelGraph, i: int) -> int | None:
    op = graph.ops[i]
    where = 0 if op.type == "SPLIT" else 2
    axis = _const_ints(graph, op.inputs[where]) if len(op.inputs) > where else None
    return None if axis is None or axis.size != 1 else int(axis[0]) % 4


_STEPS: WeakKeyDictionary[ModelGraph, dict[int, Step | None | TileError]] = WeakKeyDictionary()


def op_step(graph: ModelGraph, i: int) -> Step | None:
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
    if op.type not in WINDOWED | PADS | UNARY | BINARY | RESIZE | SPLITS | {"CONCATENATION"}:
        raise TileError(f"{op_label(graph, i)} cannot be tiled")
    if any(t >= 0 and graph.tensors[t].is_variable for t in op.inputs):
        raise TileError(f"{op_label(graph, i)} cannot be tiled: it reads a variable tensor")
    acts = tuple(t for t in op.inputs if t >= 0 and not graph.is_static(t))
    consts = [t for t in op.inputs if t >= 0 and graph.is_static(t)]
    outs = tuple(op.outputs)
    if not outs or not acts or (len(outs) != 1 and op.type not in SPLITS):
        raise TileError(
            f"{op_label(graph, i)} cannot be tiled: expected one output and an activation input"
        )
    for t in acts + outs:
        if len(graph.tensors[t].shape) != 4:
            raise TileError(
                f"{op_label(graph, i)} cannot be tiled: tensor {graph.tensors[t].name!r} "
                f"has shape {list(graph.tensors[t].shape)}, tiles need NHWC"
            )
    if op.type in WINDOWED | PADS | RESIZE:
        if acts != (op.inputs[0],):
            raise TileError(
                f"{op_label(graph, i)} cannot be tiled: its only activation must be input 0"
            )
        kind, make = {
            "PAD": ("pad", _pads),
            "PADV2": ("pad", _pads),
            "RESIZE_NEAREST_NEIGHBOR": ("resize", _resize),
        }.get(op.type, ("window", _window))
        if kind == "resize" and not graph.is_static(op.inputs[1]):
            raise TileError(f"{op_label(graph, i)} cannot be tiled: its size is not a constant")
        return Step(i, kind, acts, outs, *make(graph, i))
    if op.type == "CONCATENATION" and (graph.options(i) is None or graph.options(i).axis % 4 != 3):
        raise TileError(
            f"{op_label(graph, i)} cannot be tiled: it concatenates along a non-channel axis"
        )
    if op.type in SPLITS:
        if len(acts) != 1 or _split_axis(graph, i) != 3:
            raise TileError(f"{op_label(graph, i)} cannot be tiled: it splits along a non-channel "
                            "(or non-constant) axis")
        consts = []  # the axis and the split sizes are not broadcast operands
    for t in consts:
        if _spatial_const(graph, t):
            raise TileError(
                f"{op_label(graph, i)} cannot be tiled: constant {graph.tensors[t].name!r} "
                f"has spatial extent {list(graph.tensors[t].shape)}"
            )
    if op.type in UNARY and len(acts) != 1:
        raise TileError(
            f"{op_label(graph, i)} cannot be tiled: it has {len(acts)} activation inputs"
        )
    if len({graph.tensors[t].shape[1:3] for t in acts + outs}) != 1:
        raise TileError(
            f"{op_label(graph, i)} cannot be tiled: its activations differ in H, W (broadcast)"
        )
    return Step(i, "point", acts, outs, Win(), Win())
