"""A float64 numpy forward pass of the IR ops, following TFLite's float kernel semantics.

Used to normalise weights at build time (BatchNorm statistics) and, in tests, to
cross-check the emitted models. Batch-first: axis 0 holds several samples at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.modelbuild.graph import GraphIR, Op

_IM2COL_ELEMENTS = 1 << 23  # float64 values per im2col band (64 MB)


def _same_pads(size: int, out: int, k: int, s: int, d: int) -> tuple[int, int]:
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, p: dict[str, Any], out_hw: tuple[int, int], fill: float):
    """Yield (i, j, view) for every kernel tap: the input pixels that tap sees, per output pixel."""
    (kh, kw), (sh, sw), (dh, dw) = p["kernel"], p["stride"], p["dilation"]
    oh, ow = out_hw
    if p["padding"] == "SAME":
        pt, pb = _same_pads(x.shape[1], oh, kh, sh, dh)
        pl, pr = _same_pads(x.shape[2], ow, kw, sw, dw)
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dh, j * dw
            yield i, j, x[:, y0 : y0 + (oh - 1) * sh + 1 : sh, x0 : x0 + (ow - 1) * sw + 1 : sw, :]


def _strided(x: np.ndarray, p: dict[str, Any], out_hw: tuple[int, int]) -> np.ndarray:
    """The pixels a 1x1 window reads (stride applied)."""
    return next(_windows(x, {**p, "kernel": (1, 1)}, out_hw, 0.0))[2]


def activation(z: np.ndarray, act: str) -> np.ndarray:
    """Fused activation NONE / RELU / RELU6."""
    if act == "RELU":
        return np.maximum(z, 0.0)
    if act == "RELU6":
        return np.clip(z, 0.0, 6.0)
    return z


def linear_part(op: Op, x: np.ndarray, w: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    """Conv / depthwise / FC output before bias and activation."""
    n = x.shape[0]
    if op.kind == "fully_connected":
        return x.reshape(n, -1) @ w.T
    oh, ow = out_shape[1], out_shape[2]
    if op.kind == "conv2d":
        wmat = w.reshape(w.shape[0], -1).T.astype(np.float64)  # rows in (kh, kw, C) order
        if wmat.shape[0] == x.shape[3]:  # 1x1: one matrix product
            return _strided(x, op.params, (oh, ow)) @ wmat
        taps = [v for _, _, v in _windows(x, op.params, (oh, ow), 0.0)]
        z = np.empty((n, oh, ow, w.shape[0]))
        # im2col a band of output rows at a time: one large-K product per band is
        # several times faster than one product per tap, and memory stays bounded.
        band = max(1, _IM2COL_ELEMENTS // max(1, n * ow * wmat.shape[0]))
        for r in range(0, oh, band):
            cols = np.concatenate([v[:, r : r + band] for v in taps], axis=3)
            z[:, r : r + band] = cols @ wmat
        return z
    mult = op.params["multiplier"]
    if mult > 1:  # output channel c*mult+m reads input channel c
        x = np.repeat(x, mult, axis=3)
    z = np.zeros((n, oh, ow, w.shape[3]))
    for i, j, v in _windows(x, op.params, (oh, ow), 0.0):
        z += v * w[0, i, j, :]
    return z


def run_op(op: Op, xs: list[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
    """Output of a weight-free op for batched inputs `xs`."""
    k, p, n = op.kind, op.params, xs[0].shape[0]
    if k == "add":
        return activation(xs[0] + xs[1], p["activation"])
    if k == "mul":
        return activation(xs[0] * xs[1], p["activation"])
    if k == "concatenation":
        return np.concatenate(xs, axis=p["axis"])
    if k in ("max_pool", "avg_pool"):
        p = {**p, "dilation": (1, 1)}
        hw = (out_shape[1], out_shape[2])
        if k == "max_pool":
            return np.max([v for _, _, v in _windows(xs[0], p, hw, -np.inf)], axis=0)
        # TFLite averages over the pixels inside the image only.
        total = sum(v for _, _, v in _windows(xs[0], p, hw, 0.0))
        count = sum(v for _, _, v in _windows(np.ones((1, *xs[0].shape[1:3], 1)), p, hw, 0.0))
        return total / count
    if k == "pad":
        (t, b), (lft, r) = p["paddings"]
        return np.pad(xs[0], ((0, 0), (t, b), (lft, r), (0, 0)))
    if k == "reshape":
        return xs[0].reshape((n, *out_shape[1:]))
    if k == "mean":
        return xs[0].mean(axis=(1, 2), keepdims=p["keep_dims"])
    if k == "softmax":
        z = p["beta"] * (xs[0] - xs[0].max(axis=-1, keepdims=True))
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)
    if k == "resize_nearest_neighbor":
        (ih, iw), (oh, ow) = xs[0].shape[1:3], p["size"]
        rows = np.minimum(np.floor(np.arange(oh) * (ih / oh)).astype(int), ih - 1)
        cols = np.minimum(np.floor(np.arange(ow) * (iw / ow)).astype(int), iw - 1)
        return xs[0][:, rows][:, :, cols]
    if k == "relu":
        return np.maximum(xs[0], 0.0)
    if k == "relu6":
        return np.clip(xs[0], 0.0, 6.0)
    if k == "logistic":
        return 1.0 / (1.0 + np.exp(-xs[0]))
    if k == "hard_swish":
        return xs[0] * np.clip(xs[0] + 3.0, 0.0, 6.0) / 6.0
    if k == "leaky_relu":
        return np.where(xs[0] >= 0, xs[0], p["alpha"] * xs[0])
    raise ValueError(f"reference: op {op.name!r} has unknown kind {k!r}")


def _output(
    op: Op, xs: list[np.ndarray], w: dict[str, np.ndarray] | None, shape: tuple[int, ...]
) -> np.ndarray:
    if w is None:
        return run_op(op, xs, shape)
    z = linear_part(op, xs[0], w["weights"], shape) + w["bias"]
    return activation(z, op.params["activation"])


def forward(
    ir: GraphIR, weights: dict[int, dict[str, np.ndarray]], inputs: list[np.ndarray]
) -> dict[int, np.ndarray]:
    """Every IR tensor's value (float64) for batched graph inputs, given built weights."""
    values = {t: np.asarray(x, dtype=np.float64) for t, x in zip(ir.inputs, inputs, strict=True)}
    for i, op in enumerate(ir.ops):
        xs = [values[t] for t in op.inputs]
        values[op.output] = _output(op, xs, weights.get(i), ir.tensor_shapes[op.output])
    return values


def tensor_ranges(
    ir: GraphIR, weights: dict[int, dict[str, np.ndarray]], samples: list[list[np.ndarray]]
) -> dict[int, tuple[float, float]]:
    """Min and max of every IR tensor over `samples` (each a list of graph inputs).

    The calibration for int8. Not the interpreter with preserve_all_tensors: tflite-runtime
    2.14 still runs ADD and friends in place then, so their inputs read back as outputs.
    One sample at a time, dropping tensors after their last use, keeps memory flat.
    """
    last_use = {t: i for i, op in enumerate(ir.ops) for t in op.inputs}
    ranges: dict[int, tuple[float, float]] = {}

    def record(t: int, v: np.ndarray) -> None:
        lo, hi = float(v.min()), float(v.max())
        old = ranges.get(t, (lo, hi))
        ranges[t] = (min(old[0], lo), max(old[1], hi))

    for sample in samples:
        values = {
            t: np.asarray(x, dtype=np.float64) for t, x in zip(ir.inputs, sample, strict=True)
        }
        for t, v in values.items():
            record(t, v)
        for i, op in enumerate(ir.ops):
            xs = [values[t] for t in op.inputs]
            values[op.output] = _output(op, xs, weights.get(i), ir.tensor_shapes[op.output])
            record(op.output, values[op.output])
            for t in op.inputs:
                if last_use[t] == i:
                    values.pop(t, None)
    return ranges
