"""Full-integer int8 quantization without TensorFlow: choosing the parameters.

Activations: asymmetric int8 per tensor from the min/max every tensor reaches on a few
representative inputs (reference.tensor_ranges). Weights: symmetric per-channel
int8 for convolutions, per-tensor for FULLY_CONNECTED; bias int32 with scale
input_scale * weight_scale[c]. Ops whose int8 kernels move raw values (pool, pad,
reshape, resize, concatenation) get one shared scale for their inputs and output;
SOFTMAX and LOGISTIC outputs are fixed at scale 1/256, zero point -128.
"""

from __future__ import annotations

import math

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from planner.modelbuild.graph import FIXED_OUTPUT_OPS, SAME_SCALE_OPS, GraphIR

FIXED_PARAMS = (1.0 / 256.0, -128)
# A dead (all-zero) tensor still needs a scale; a tiny one makes requantization
# multipliers that XNNPACK refuses (it fails instead of falling back).
_MIN_RANGE = 1e-2
RANGE_MARGIN = 0.1  # fraction of the calibrated range added at each non-zero end


def _round_out(v: float) -> float:
    # Snap a range end outward to ~1.5% steps so that float noise between CPUs or
    # kernel paths does not change the chosen scale (same seed -> same bytes).
    if v == 0.0:
        return 0.0
    step = 2.0 ** (math.floor(math.log2(abs(v))) - 6)
    return math.copysign(math.ceil(abs(v) / step) * step, v)


def affine_params(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero_point) covering [lo, hi] and exactly representing 0."""
    # Few calibration samples see less than the extremes of other inputs: widen the
    # non-zero ends (a ReLU output's 0 stays put, so no code is wasted below it).
    span = hi - lo
    lo = lo - RANGE_MARGIN * span if lo < 0 else lo
    hi = hi + RANGE_MARGIN * span if hi > 0 else hi
    lo, hi = min(_round_out(lo), 0.0), max(_round_out(hi), 0.0)
    if hi - lo < _MIN_RANGE:
        hi = lo + _MIN_RANGE
    scale = float(np.float32((hi - lo) / 255.0))
    zero_point = int(np.clip(round(-128 - lo / scale), -128, 127))
    return scale, zero_point


def activation_params(
    ir: GraphIR, ranges: dict[int, tuple[float, float]]
) -> dict[int, tuple[float, int]]:
    """(scale, zero_point) for every IR tensor, honouring the int8 kernels' constraints."""
    parent = list(range(len(ir.tensor_names)))

    def find(t: int) -> int:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    fixed: set[int] = set()
    for op in ir.ops:
        if op.kind in SAME_SCALE_OPS:
            for t in op.inputs:
                parent[find(t)] = find(op.output)
        if op.kind in FIXED_OUTPUT_OPS:
            fixed.add(op.output)
    group_range: dict[int, tuple[float, float]] = {}
    for t, (lo, hi) in ranges.items():
        g = find(t)
        old = group_range.get(g, (lo, hi))
        group_range[g] = (min(old[0], lo), max(old[1], hi))
    fixed_groups = {find(t) for t in fixed}
    params: dict[int, tuple[float, int]] = {}
    for t in ranges:
        g = find(t)
        # A fixed-output tensor forces its whole group (values outside [0, 1) clip).
        params[t] = FIXED_PARAMS if g in fixed_groups else affine_params(*group_range[g])
    return params


def quantize_activation(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float array -> int8 with the given affine parameters."""
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def quantize_weights(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights, per channel along `axis` (None: per tensor); returns q, scales."""
    shape = [1] * w.ndim
    if axis is None:
        amax = np.array([np.abs(w).max()], dtype=np.float32)
    else:
        amax = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis)).astype(np.float32)
        shape[axis] = -1
    scales = np.maximum(amax, np.float32(1e-12)) / np.float32(127.0)
    q = np.clip(np.round(w / scales.reshape(shape)), -127, 127).astype(np.int8)
    return q, scales


def quantize_bias(
    b: np.ndarray, input_scale: float, weight_scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias with scale input_scale * weight_scale (one scale, or one per channel)."""
    scales = (np.float32(input_scale) * weight_scales).astype(np.float32)
    q = np.round(b.astype(np.float64) / scales)
    return np.clip(q, -(2**31), 2**31 - 1).astype(np.int32), scales


def quant_params(
    scales: list[float] | np.ndarray, zero_points: list[int] | np.ndarray, dim: int = 0
) -> fb.QuantizationParametersT:
    """QuantizationParametersT; numpy vectors pack in one copy, not one call per value."""
    return fb.QuantizationParametersT(
        scale=np.asarray(scales, dtype=np.float32),
        zeroPoint=np.asarray(zero_points, dtype=np.int64),
        quantizedDimension=dim,
    )
