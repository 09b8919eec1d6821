"""The builder's intermediate representation: tensor handles, op records, shape rules.

The IR is dtype-free: one `GraphIR` is emitted as float32, fp16-weight or int8 models.
Every op has exactly one output tensor; ops are kept in the order they were added,
which is the execution order of the emitted model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

ACTIVATIONS = ("NONE", "RELU", "RELU6")
PADDINGS = ("SAME", "VALID")

# Ops whose int8 kernels copy or compare raw int8 values, so input and output must
# share one scale and zero point (TFLite 2.14 kernels check or silently assume it).
SAME_SCALE_OPS = frozenset(
    {"max_pool", "avg_pool", "reshape", "resize_nearest_neighbor", "pad", "concatenation"}
)
# Ops whose int8 kernels require output scale 1/256 and zero point -128.
FIXED_OUTPUT_OPS = frozenset({"softmax", "logistic"})
# Ops that carry a weight tensor [+ bias] generated from the seed.
WEIGHTED_OPS = frozenset({"conv2d", "depthwise_conv2d", "fully_connected"})
# Names the emitter gives an op's constants and int8/fp16 companions: "<op name><suffix>".
DERIVED_SUFFIXES = (
    "/weights", "/bias", "/weights/fp16", "/bias/fp16", "/paddings", "/shape", "/axis",
    "/size", "/int8",
)  # fmt: skip


@dataclass(frozen=True)
class Tensor:
    """Handle to an activation tensor of a GraphBuilder (returned by every op method)."""

    index: int
    name: str
    shape: tuple[int, ...]
    owner: int = field(repr=False, compare=False)


@dataclass(frozen=True)
class Op:
    """One IR op: kind (builder method name), unique name, input/output tensor ids, params."""

    kind: str
    name: str
    inputs: tuple[int, ...]
    output: int
    params: dict[str, Any]


@dataclass
class GraphIR:
    """Tensors (name, shape), ops in execution order, graph inputs and outputs."""

    name: str
    tensor_names: list[str] = field(default_factory=list)
    tensor_shapes: list[tuple[int, ...]] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def producer(self) -> dict[int, int]:
        """Map tensor id -> index of the op that produces it."""
        return {op.output: i for i, op in enumerate(self.ops)}


def pair(value: int | tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    """Normalise an int or (h, w) pair of positive ints."""
    if isinstance(value, int):
        value = (value, value)
    if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(f"{what} must be a positive int or a pair of positive ints, got {value!r}")
    return int(value[0]), int(value[1])


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """Upper-case `value` and check it is one of `choices`."""
    norm = value.upper() if isinstance(value, str) else value
    if norm not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return norm


def window_out(size: int, k: int, s: int, d: int, padding: str, what: str) -> int:
    """Output length of a windowed op along one axis (TFLite SAME/VALID rules)."""
    k_eff = d * (k - 1) + 1
    out = math.ceil(size / s) if padding == "SAME" else math.ceil((size - k_eff + 1) / s)
    if out < 1:
        raise ValueError(
            f"{what}: input size {size} too small for kernel {k} (dilation {d}) with VALID padding"
        )
    return out


def spatial_out(
    shape: tuple[int, ...],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: str,
    what: str,
) -> tuple[int, int]:
    """Output (h, w) of a windowed op on an NHWC shape."""
    oh = window_out(shape[1], kernel[0], stride[0], dilation[0], padding, what)
    ow = window_out(shape[2], kernel[1], stride[1], dilation[1], padding, what)
    return oh, ow


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...], what: str) -> tuple[int, ...]:
    """Numpy-style broadcast of two shapes of equal rank (what ADD/MUL kernels accept)."""
    if len(a) != len(b):
        raise ValueError(f"{what}: operands must have the same rank, got {a} and {b}")
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            raise ValueError(f"{what}: shapes {a} and {b} do not broadcast")
        out.append(max(x, y))
    return tuple(out)
