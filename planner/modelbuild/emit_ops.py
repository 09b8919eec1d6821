"""Emit one IR op as TFLite operator(s): constants, options, and int8 weight quantization."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from planner.modelbuild.graph import Op
from planner.modelbuild.quantize import quant_params, quantize_bias, quantize_weights


class Emitter(Protocol):
    """What an op needs of the model being emitted (planner.modelbuild.emit.Emitter)."""

    act: dict[int, int]  # IR tensor id -> the model tensor its consumers read
    body: list[tuple[int, fb.OperatorT]]
    qparams: Any

    @property
    def int8(self) -> bool: ...

    def const(self, name: str, array: np.ndarray,
              quant: fb.QuantizationParametersT | None = None) -> int: ...

    def float_weight(self, name: str, array: np.ndarray) -> int: ...

    def operator(self, where: list[tuple[int, fb.OperatorT]], code: int, inputs: list[int],
                 outputs: list[int], options_type: int = ..., options: Any = None,
                 version: int = 1) -> None: ...

OPS = fb.BuiltinOperator
OPT = fb.BuiltinOptions
_ACT = {
    "NONE": fb.ActivationFunctionType.NONE,
    "RELU": fb.ActivationFunctionType.RELU,
    "RELU6": fb.ActivationFunctionType.RELU6,
}
_PAD = {"SAME": fb.Padding.SAME, "VALID": fb.Padding.VALID}

# Operator versions the TFLite converter assigns for int8 kernels (float is version 1).
_INT8_VERSION = {
    OPS.CONV_2D: 3,
    OPS.DEPTHWISE_CONV_2D: 3,
    OPS.FULLY_CONNECTED: 4,
    OPS.ADD: 2,
    OPS.MUL: 2,
    OPS.MAX_POOL_2D: 2,
    OPS.AVERAGE_POOL_2D: 2,
    OPS.CONCATENATION: 2,
    OPS.PAD: 2,
    OPS.MEAN: 2,
    OPS.SOFTMAX: 2,
    OPS.LOGISTIC: 2,
    OPS.RESIZE_NEAREST_NEIGHBOR: 2,
    OPS.RELU: 2,
    OPS.RELU6: 2,
    OPS.LEAKY_RELU: 2,
}

_SIMPLE = {
    "relu": (OPS.RELU, OPT.NONE),
    "relu6": (OPS.RELU6, OPT.NONE),
    "logistic": (OPS.LOGISTIC, OPT.NONE),
    "hard_swish": (OPS.HARD_SWISH, OPT.NONE),
}


def _weighted_inputs(em: Emitter, op: Op, w: dict[str, np.ndarray], axis: int | None) -> list[int]:
    """Weight and bias tensors: float (maybe fp16-derived) or int8/int32 quantized."""
    if not em.int8:
        return [
            em.float_weight(f"{op.name}/weights", w["weights"]),
            em.float_weight(f"{op.name}/bias", w["bias"]),
        ]

    in_scale = em.qparams[op.inputs[0]][0]
    q, scales = quantize_weights(w["weights"], axis)
    dim = 0 if axis is None else axis
    wt = em.const(
        f"{op.name}/weights", q, quant_params(scales, np.zeros(scales.size, np.int64), dim)
    )
    qb, bscales = quantize_bias(w["bias"], in_scale, scales)
    # Per-tensor weights give one bias scale; per-channel weights one per channel.
    bt = em.const(f"{op.name}/bias", qb, quant_params(bscales, np.zeros(bscales.size, np.int64), 0))
    return [wt, bt]


def _window_options(cls: Any, p: dict[str, Any], **extra: Any) -> Any:
    opts = cls()
    opts.padding = _PAD[p["padding"]]
    opts.strideH, opts.strideW = p["stride"]
    for key, value in extra.items():
        setattr(opts, key, value)
    return opts


def emit_op(em: Emitter, op: Op, w: dict[str, np.ndarray] | None) -> None:
    """Append the operator for `op`; its output tensor is already in `em.act`."""
    p = op.params
    x = [em.act[t] for t in op.inputs]
    out = [em.act[op.output]]
    k = op.kind
    if k == "conv2d":
        dh, dw = p["dilation"]
        opts = _window_options(
            fb.Conv2DOptionsT,
            p,
            fusedActivationFunction=_ACT[p["activation"]],
            dilationHFactor=dh,
            dilationWFactor=dw,
        )
        _op(em, OPS.CONV_2D, x + _weighted_inputs(em, op, w, 0), out, OPT.Conv2DOptions, opts)
    elif k == "depthwise_conv2d":
        dh, dw = p["dilation"]
        opts = _window_options(
            fb.DepthwiseConv2DOptionsT,
            p,
            depthMultiplier=p["multiplier"],
            fusedActivationFunction=_ACT[p["activation"]],
            dilationHFactor=dh,
            dilationWFactor=dw,
        )
        version = 2 if max(p["dilation"]) > 1 else 1
        _op(
            em,
            OPS.DEPTHWISE_CONV_2D,
            x + _weighted_inputs(em, op, w, 3),
            out,
            OPT.DepthwiseConv2DOptions,
            opts,
            version,
        )
    elif k == "fully_connected":
        opts = fb.FullyConnectedOptionsT()
        opts.fusedActivationFunction = _ACT[p["activation"]]
        _op(
            em,
            OPS.FULLY_CONNECTED,
            x + _weighted_inputs(em, op, w, None),
            out,
            OPT.FullyConnectedOptions,
            opts,
        )
    elif k in ("add", "mul"):
        cls, code, otype = (
            (fb.AddOptionsT, OPS.ADD, OPT.AddOptions)
            if k == "add"
            else (fb.MulOptionsT, OPS.MUL, OPT.MulOptions)
        )
        opts = cls()
        opts.fusedActivationFunction = _ACT[p["activation"]]
        _op(em, code, x, out, otype, opts)
    elif k in ("max_pool", "avg_pool"):
        kh, kw = p["kernel"]
        opts = _window_options(fb.Pool2DOptionsT, p, filterHeight=kh, filterWidth=kw)
        _op(
            em,
            OPS.MAX_POOL_2D if k == "max_pool" else OPS.AVERAGE_POOL_2D,
            x,
            out,
            OPT.Pool2DOptions,
            opts,
        )
    elif k == "pad":
        (t, b), (lft, r) = p["paddings"]
        pads = em.const(
            f"{op.name}/paddings", np.array([[0, 0], [t, b], [lft, r], [0, 0]], np.int32)
        )
        _op(em, OPS.PAD, x + [pads], out, OPT.PadOptions, fb.PadOptionsT())
    elif k == "concatenation":
        opts = fb.ConcatenationOptionsT()
        opts.axis = p["axis"]
        _op(em, OPS.CONCATENATION, x, out, OPT.ConcatenationOptions, opts)
    elif k == "reshape":
        shape = em.const(f"{op.name}/shape", np.array(p["shape"], np.int32))
        opts = fb.ReshapeOptionsT()
        opts.newShape = list(p["shape"])
        _op(em, OPS.RESHAPE, x + [shape], out, OPT.ReshapeOptions, opts)
    elif k == "mean":
        axis = em.const(f"{op.name}/axis", np.array([1, 2], np.int32))
        opts = fb.ReducerOptionsT()
        opts.keepDims = p["keep_dims"]
        _op(em, OPS.MEAN, x + [axis], out, OPT.ReducerOptions, opts)
    elif k == "softmax":
        opts = fb.SoftmaxOptionsT()
        opts.beta = p["beta"]
        _op(em, OPS.SOFTMAX, x, out, OPT.SoftmaxOptions, opts)
    elif k == "resize_nearest_neighbor":
        size = em.const(f"{op.name}/size", np.array(p["size"], np.int32))
        _op(
            em,
            OPS.RESIZE_NEAREST_NEIGHBOR,
            x + [size],
            out,
            OPT.ResizeNearestNeighborOptions,
            fb.ResizeNearestNeighborOptionsT(),
        )
    elif k == "leaky_relu":
        opts = fb.LeakyReluOptionsT()
        opts.alpha = p["alpha"]
        _op(em, OPS.LEAKY_RELU, x, out, OPT.LeakyReluOptions, opts)
    elif k in _SIMPLE:
        code, otype = _SIMPLE[k]
        _op(em, code, x, out, otype, None)
    else:
        raise ValueError(f"build: op {op.name!r} has unknown kind {k!r}")


def _op(
    em: Emitter,
    code: int,
    inputs: list[int],
    outputs: list[int],
    otype: int,
    opts: Any,
    float_version: int = 1,
) -> None:
    version = _INT8_VERSION.get(code, 1) if em.int8 else float_version
    em.operator(em.body, code, inputs, outputs, otype, opts, version)
