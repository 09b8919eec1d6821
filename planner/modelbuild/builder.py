"""GraphBuilder: describe an NHWC network op by op, then emit it as a .tflite flatbuffer.

Ops are emitted in the order they are added (that order is the model's execution
order). Each op's output tensor is named after the op (`name=`, e.g. "block3/expand");
its constants are "<name>/weights", "<name>/bias", "<name>/paddings" and so on.
Weights are generated at build time from the seed, so one graph can be built as
float32, float32 with fp16 weights, or full-integer int8.

build() options:
- dtype "float32" | "int8" (full-integer: int8 activations, per-channel int8 weights).
- io (int8 only): "int8" model inputs/outputs are int8; "float" adds a QUANTIZE op per
  input first and a DEQUANTIZE op per output last, as converters do. Graph inputs and
  outputs keep their names either way; the inner int8 twins are "<name>/int8".
- fp16_weights (float32 only): weights and biases stored as FLOAT16 constants, each
  turned into float32 by a DEQUANTIZE op; those ops come first, as converters emit them.
- signature: a SignatureDef "serving_default" mapping input/output names to tensors.
- metadata: "min_runtime_version" and "tilefleet_modelbuild" metadata entries.
- duplicate_names: every op output is named after its op kind ("conv2d", "add"), so
  names repeat (graph inputs and constants keep theirs).
- calibration_samples: representative inputs for int8 ranges (default 4, 2 over 128x128).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from planner.modelbuild.graph import (
    ACTIVATIONS,
    DERIVED_SUFFIXES,
    PADDINGS,
    GraphIR,
    Op,
    Tensor,
    broadcast_shape,
    check_choice,
    pair,
    spatial_out,
)


class GraphBuilder:
    """Collects inputs, ops and outputs of one subgraph; `build()` turns them into bytes."""

    def __init__(self, name: str = "model") -> None:
        self.ir = GraphIR(name=name)
        self._names: set[str] = set()
        self._counts: dict[str, int] = {}

    # ---- bookkeeping -------------------------------------------------------------

    def _unique(self, name: str | None, kind: str) -> str:
        def taken(n: str) -> bool:
            return n in self._names or any(n + suffix in self._names for suffix in DERIVED_SUFFIXES)

        if name is None:
            n = self._counts.get(kind, 0)
            while taken(f"{kind}_{n}"):
                n += 1
            self._counts[kind] = n + 1
            name = f"{kind}_{n}"
        elif not isinstance(name, str) or not name:
            raise ValueError(f"{kind}: name must be a non-empty string, got {name!r}")
        elif taken(name):
            raise ValueError(f"{kind}: tensor name {name!r} is already used in this graph")
        # Reserve the names the emitter derives from this one ("<name>/weights", ...).
        self._names.update([name, *(name + suffix for suffix in DERIVED_SUFFIXES)])
        return name

    def _tensor(self, name: str, shape: tuple[int, ...]) -> Tensor:
        self.ir.tensor_names.append(name)
        self.ir.tensor_shapes.append(shape)
        return Tensor(len(self.ir.tensor_names) - 1, name, shape, id(self))

    def _check(self, x: Any, kind: str, rank: int | None = 4) -> Tensor:
        if not isinstance(x, Tensor) or x.owner != id(self):
            raise ValueError(f"{kind}: input must be a Tensor returned by this GraphBuilder")
        if rank is not None and len(x.shape) != rank:
            raise ValueError(f"{kind}: input {x.name!r} must be rank {rank}, got shape {x.shape}")
        return x

    def _add(
        self,
        kind: str,
        inputs: Sequence[Tensor],
        out_shape: tuple[int, ...],
        name: str | None,
        **params: Any,
    ) -> Tensor:
        if any(d < 1 for d in out_shape):
            raise ValueError(f"{kind}: output shape {out_shape} has an empty dimension")
        out = self._tensor(self._unique(name, kind), tuple(int(d) for d in out_shape))
        self.ir.ops.append(Op(kind, out.name, tuple(t.index for t in inputs), out.index, params))
        return out

    def _window(
        self, kind: str, x: Tensor, kernel: Any, stride: Any, padding: str, dilation: Any
    ) -> tuple[dict[str, Any], tuple[int, int]]:
        k = pair(kernel, f"{kind}: kernel")
        s = pair(stride, f"{kind}: stride")
        d = pair(dilation, f"{kind}: dilation")
        p = check_choice(padding, PADDINGS, f"{kind}: padding")
        oh, ow = spatial_out(x.shape, k, s, d, p, kind)
        return {"kernel": k, "stride": s, "dilation": d, "padding": p}, (oh, ow)

    # ---- graph inputs and outputs ---------------------------------------------------

    def input(self, shape: Sequence[int], name: str | None = None) -> Tensor:
        """Add a graph input: NHWC [1, H, W, C] for image models, or [1, N] (name "input")."""
        if name is None and "input" not in self._names:
            name = "input"
        shape = tuple(int(d) for d in shape)
        if len(shape) not in (2, 4) or any(d < 1 for d in shape):
            raise ValueError(
                f"input: shape must be [N, C] or [N, H, W, C] of positive ints, got {shape}"
            )
        t = self._tensor(self._unique(name, "input"), shape)
        self.ir.inputs.append(t.index)
        return t

    def output(self, *tensors: Tensor) -> None:
        """Mark tensors as graph outputs, in this order."""
        for t in tensors:
            self._check(t, "output", rank=None)
            if t.index in self.ir.outputs:
                raise ValueError(f"output: {t.name!r} is already a graph output")
            self.ir.outputs.append(t.index)

    # ---- weighted ops ---------------------------------------------------------------

    def conv2d(
        self,
        x: Tensor,
        filters: int,
        kernel: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: str = "SAME",
        dilation: int | tuple[int, int] = 1,
        activation: str = "NONE",
        name: str | None = None,
    ) -> Tensor:
        """CONV_2D with folded-BatchNorm weights and bias, optional fused RELU/RELU6."""
        x = self._check(x, "conv2d")
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"conv2d: filters must be a positive int, got {filters!r}")
        win, (oh, ow) = self._window("conv2d", x, kernel, stride, padding, dilation)
        act = check_choice(activation, ACTIVATIONS, "conv2d: activation")
        return self._add(
            "conv2d",
            [x],
            (x.shape[0], oh, ow, filters),
            name,
            filters=filters,
            activation=act,
            **win,
        )

    def depthwise_conv2d(
        self,
        x: Tensor,
        kernel: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: str = "SAME",
        dilation: int | tuple[int, int] = 1,
        multiplier: int = 1,
        activation: str = "NONE",
        name: str | None = None,
    ) -> Tensor:
        """DEPTHWISE_CONV_2D (channel multiplier, dilation), optional fused RELU/RELU6."""
        x = self._check(x, "depthwise_conv2d")
        if not isinstance(multiplier, int) or multiplier < 1:
            raise ValueError(
                f"depthwise_conv2d: multiplier must be a positive int, got {multiplier!r}"
            )
        win, (oh, ow) = self._window("depthwise_conv2d", x, kernel, stride, padding, dilation)
        act = check_choice(activation, ACTIVATIONS, "depthwise_conv2d: activation")
        shape = (x.shape[0], oh, ow, x.shape[3] * multiplier)
        return self._add(
            "depthwise_conv2d", [x], shape, name, multiplier=multiplier, activation=act, **win
        )

    def fully_connected(
        self, x: Tensor, units: int, activation: str = "NONE", name: str | None = None
    ) -> Tensor:
        """FULLY_CONNECTED over everything but the batch axis; output [batch, units]."""
        x = self._check(x, "fully_connected", rank=None)
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"fully_connected: units must be a positive int, got {units!r}")
        act = check_choice(activation, ACTIVATIONS, "fully_connected: activation")
        in_features = math.prod(x.shape[1:])
        return self._add(
            "fully_connected",
            [x],
            (x.shape[0], units),
            name,
            units=units,
            in_features=in_features,
            activation=act,
        )

    # ---- element-wise and joins ---------------------------------------------------------

    def add(
        self, a: Tensor, b: Tensor, activation: str = "NONE", name: str | None = None
    ) -> Tensor:
        """ADD (numpy broadcasting within equal rank), optional fused RELU/RELU6."""
        return self._binary("add", a, b, activation, name)

    def mul(
        self, a: Tensor, b: Tensor, activation: str = "NONE", name: str | None = None
    ) -> Tensor:
        """MUL (numpy broadcasting within equal rank, e.g. squeeze-excite gates)."""
        return self._binary("mul", a, b, activation, name)

    def _binary(self, kind: str, a: Tensor, b: Tensor, activation: str, name: str | None) -> Tensor:
        a = self._check(a, kind, rank=None)
        b = self._check(b, kind, rank=None)
        shape = broadcast_shape(a.shape, b.shape, kind)
        act = check_choice(activation, ACTIVATIONS, f"{kind}: activation")
        return self._add(kind, [a, b], shape, name, activation=act)

    def concatenation(
        self, xs: Sequence[Tensor], axis: int = -1, name: str | None = None
    ) -> Tensor:
        """CONCATENATION along `axis` (default: channels); other dims must match."""
        if len(xs) < 2:
            raise ValueError("concatenation: needs at least two inputs")
        xs = [self._check(x, "concatenation", rank=None) for x in xs]
        rank = len(xs[0].shape)
        if not -rank <= axis < rank:
            raise ValueError(f"concatenation: axis {axis} out of range for rank {rank}")
        axis %= rank
        for x in xs[1:]:
            if len(x.shape) != rank or any(
                x.shape[i] != xs[0].shape[i] for i in range(rank) if i != axis
            ):
                raise ValueError(
                    f"concatenation: {x.name!r} shape {x.shape} does not match "
                    f"{xs[0].name!r} shape {xs[0].shape} outside axis {axis}"
                )
        shape = list(xs[0].shape)
        shape[axis] = sum(x.shape[axis] for x in xs)
        return self._add("concatenation", xs, tuple(shape), name, axis=axis)

    # ---- pooling, padding, resizing -------------------------------------------------------

    def max_pool(self, x: Tensor, pool: int | tuple[int, int] = 2,
                 stride: int | tuple[int, int] | None = None, padding: str = "VALID",
                 name: str | None = None) -> Tensor:
        """MAX_POOL_2D; stride defaults to the pool size."""
        return self._pool("max_pool", x, pool, stride, padding, name)

    def avg_pool(self, x: Tensor, pool: int | tuple[int, int] = 2,
                 stride: int | tuple[int, int] | None = None, padding: str = "VALID",
                 name: str | None = None) -> Tensor:
        """AVERAGE_POOL_2D; stride defaults to the pool size."""
        return self._pool("avg_pool", x, pool, stride, padding, name)

    def _pool(
        self, kind: str, x: Tensor, pool: Any, stride: Any, padding: str, name: str | None
    ) -> Tensor:
        x = self._check(x, kind)
        win, (oh, ow) = self._window(kind, x, pool, pool if stride is None else stride, padding, 1)
        return self._add(kind, [x], (x.shape[0], oh, ow, x.shape[3]), name, **win)

    def pad(
        self, x: Tensor, paddings: tuple[tuple[int, int], tuple[int, int]], name: str | None = None
    ) -> Tensor:
        """PAD with zeros: paddings ((top, bottom), (left, right)) on H and W."""
        x = self._check(x, "pad")
        flat = [v for pr in paddings for v in pr] if len(paddings) == 2 else []
        if len(flat) != 4 or not all(isinstance(v, int) and v >= 0 for v in flat):
            raise ValueError("pad: paddings must be ((top, bottom), (left, right)) of ints >= 0, "
                             f"got {paddings!r}")
        (t, b), (lft, r) = paddings
        shape = (x.shape[0], x.shape[1] + t + b, x.shape[2] + lft + r, x.shape[3])
        return self._add("pad", [x], shape, name, paddings=((t, b), (lft, r)))

    def resize_nearest_neighbor(
        self,
        x: Tensor,
        scale: int | None = 2,
        size: tuple[int, int] | None = None,
        name: str | None = None,
    ) -> Tensor:
        """RESIZE_NEAREST_NEIGHBOR by an integer `scale` or to an explicit (h, w) `size`."""
        x = self._check(x, "resize_nearest_neighbor")
        if size is not None:
            oh, ow = pair(size, "resize_nearest_neighbor: size")
        elif isinstance(scale, int) and scale >= 1:
            oh, ow = x.shape[1] * scale, x.shape[2] * scale
        else:
            raise ValueError(
                f"resize_nearest_neighbor: scale must be a positive int, got {scale!r}"
            )
        return self._add(
            "resize_nearest_neighbor", [x], (x.shape[0], oh, ow, x.shape[3]), name, size=(oh, ow)
        )

    # ---- shape changes and reductions -------------------------------------------------------

    def reshape(self, x: Tensor, shape: Sequence[int], name: str | None = None) -> Tensor:
        """RESHAPE to `shape` (one -1 allowed); element count must not change."""
        x = self._check(x, "reshape", rank=None)
        shape = [int(d) for d in shape]
        total = math.prod(x.shape)
        if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
            raise ValueError(f"reshape: invalid target shape {shape}")
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            if total % known:
                raise ValueError(f"reshape: cannot reshape {x.shape} to {shape}")
            shape[shape.index(-1)] = total // known
        if math.prod(shape) != total:
            raise ValueError(f"reshape: cannot reshape {x.shape} ({total} elements) to {shape}")
        if shape[0] != x.shape[0]:
            # Every tool in tilefleet treats axis 0 as the batch; keep it.
            raise ValueError(
                f"reshape: target shape {shape} must keep batch dimension {x.shape[0]}"
            )
        return self._add("reshape", [x], tuple(shape), name, shape=tuple(shape))

    def mean(self, x: Tensor, keep_dims: bool = False, name: str | None = None) -> Tensor:
        """MEAN over H and W (global average pooling); [1, C] or [1, 1, 1, C] with keep_dims."""
        x = self._check(x, "mean")
        shape = (x.shape[0], 1, 1, x.shape[3]) if keep_dims else (x.shape[0], x.shape[3])
        return self._add("mean", [x], shape, name, keep_dims=bool(keep_dims))

    def softmax(self, x: Tensor, beta: float = 1.0, name: str | None = None) -> Tensor:
        """SOFTMAX over the last axis."""
        x = self._check(x, "softmax", rank=None)
        return self._add("softmax", [x], x.shape, name, beta=float(beta))

    # ---- standalone activations --------------------------------------------------------------

    def relu(self, x: Tensor, name: str | None = None) -> Tensor:
        """Standalone RELU."""
        return self._unary("relu", x, name)

    def relu6(self, x: Tensor, name: str | None = None) -> Tensor:
        """Standalone RELU6."""
        return self._unary("relu6", x, name)

    def logistic(self, x: Tensor, name: str | None = None) -> Tensor:
        """LOGISTIC (sigmoid)."""
        return self._unary("logistic", x, name)

    def hard_swish(self, x: Tensor, name: str | None = None) -> Tensor:
        """HARD_SWISH."""
        return self._unary("hard_swish", x, name)

    def leaky_relu(self, x: Tensor, alpha: float = 0.1, name: str | None = None) -> Tensor:
        """LEAKY_RELU with slope `alpha` for negative inputs."""
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"leaky_relu: alpha must be in [0, 1), got {alpha!r}")
        return self._unary("leaky_relu", x, name, alpha=float(alpha))

    def _unary(self, kind: str, x: Tensor, name: str | None, **params: Any) -> Tensor:
        x = self._check(x, kind, rank=None)
        return self._add(kind, [x], x.shape, name, **params)

    # ---- emission -------------------------------------------------------------------------------

    def build(
        self,
        dtype: str = "float32",
        seed: int = 0,
        *,
        io: str = "int8",
        fp16_weights: bool = False,
        signature: bool = False,
        metadata: bool = False,
        duplicate_names: bool = False,
        calibration_samples: int | None = None,
    ) -> bytes:
        """Emit the graph as .tflite bytes; same arguments, same bytes."""
        from planner.modelbuild.emit import BuildOptions, build_model

        options = BuildOptions(
            dtype=dtype,
            seed=seed,
            io=io,
            fp16_weights=fp16_weights,
            signature=signature,
            metadata=metadata,
            duplicate_names=duplicate_names,
            calibration_samples=calibration_samples,
        )
        return build_model(self.ir, options)
