"""Deterministic float weights for a GraphIR: He-normal kernels with data-folded BatchNorm.

Random nets lose their signal with depth (Keras' default init makes MobileNetV2's
outputs nearly constant), and noise images pooled globally give nearly the same
features, which makes exactness tests blind. So every weighted op acts as conv +
inference BatchNorm whose statistics are measured, op by op, on a few seeded sample
inputs with the numpy reference forward, so each output channel gets standard
deviation gamma_c and mean beta_c (random per channel).
"""

from __future__ import annotations

import numpy as np

from planner.modelbuild.graph import WEIGHTED_OPS, GraphIR, Op
from planner.modelbuild.reference import activation, linear_part, run_op
from planner.modelbuild.samples import default_count, sample_floats

GAMMA_RANGE = (0.6, 1.4)  # per-channel output standard deviation
# Per-channel output mean, in units of that channel's gamma. Centred ReLU nets are
# chaotic (every layer amplifies small perturbations such as int8 rounding by ~1.2x);
# with the mean 1.5 standard deviations up, ~93% of units are active and the gain
# per layer stays near 1, so int8 models track their float twins through 50+ layers.
BETA_MEAN = 1.5
BETA_STD = 0.5
_MIN_VALUES = 32  # values per channel needed for per-channel statistics
_GRID = 2.0**-10  # statistics snap to this relative grid (see _snap)
_INIT_STREAM = 0x1417


def op_rng(seed: int, op_index: int) -> np.random.Generator:
    """Generator for one op: weights of op i do not change when ops are added after it."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, op_index])


def _snap(v: np.ndarray, step: np.ndarray) -> np.ndarray:
    # BLAS sums differ in the last bits between CPUs; snapping the statistics to a
    # coarse grid keeps the weights, and so the model bytes, identical across machines.
    return np.round(v / step) * step


def _raw_kernel(
    op: Op, rng: np.random.Generator, in_shape: tuple[int, ...]
) -> tuple[np.ndarray, int]:
    p = op.params
    if op.kind == "conv2d":
        shape, fan_in = (
            (p["filters"], *p["kernel"], in_shape[3]),
            p["kernel"][0] * p["kernel"][1] * in_shape[3],
        )
    elif op.kind == "depthwise_conv2d":
        shape, fan_in = (
            (1, *p["kernel"], in_shape[3] * p["multiplier"]),
            p["kernel"][0] * p["kernel"][1],
        )
    else:
        shape, fan_in = (p["units"], p["in_features"]), p["in_features"]
    # float32 end to end: VGG's first FC alone has 100M weights.
    raw = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    return raw, 0 if op.kind != "depthwise_conv2d" else 3


def _fold(
    op: Op, rng: np.random.Generator, x: np.ndarray, out_shape: tuple[int, ...]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Weights and bias for one op, and its batched output."""
    raw, out_axis = _raw_kernel(op, rng, x.shape)
    channels = raw.shape[out_axis]
    gamma = rng.uniform(*GAMMA_RANGE, size=channels)
    beta = gamma * (BETA_MEAN + rng.standard_normal(channels) * BETA_STD)
    z = linear_part(op, x, raw, out_shape)
    # Per-channel statistics over samples and pixels, as BatchNorm. Where a channel
    # has only a few values ([N, units] after pooling, or 1x1 maps) use one mean and
    # variance for the whole layer: a per-channel variance from a handful of values has
    # a heavy-tailed inverse, and centring each unit would keep only the small
    # sample-to-sample part, which int8 rounding then swamps.
    per_channel = z.size // channels >= _MIN_VALUES
    axes = tuple(range(z.ndim - 1)) if per_channel else None
    var = np.broadcast_to(z.var(axis=axes), (channels,))
    sigma = np.sqrt(var + 1e-3 * var.mean() + 1e-12)  # dead channels must not blow up
    sigma = _snap(sigma, 2.0 ** np.floor(np.log2(sigma)) * _GRID)
    mu = _snap(np.broadcast_to(z.mean(axis=axes), (channels,)), sigma * _GRID)
    scale = gamma / sigma
    shape = [1] * raw.ndim
    shape[out_axis] = channels
    weights = raw * scale.astype(np.float32).reshape(shape)
    bias = (beta - mu * scale).astype(np.float32)
    y = activation(z * scale + bias, op.params["activation"])
    return {"weights": weights, "bias": bias}, y


def generate_weights(ir: GraphIR, seed: int) -> dict[int, dict[str, np.ndarray]]:
    """Float32 weights and biases for every weighted op, keyed by op index."""
    shapes = [ir.tensor_shapes[t] for t in ir.inputs]
    samples = sample_floats(shapes, seed ^ _INIT_STREAM, default_count(shapes))
    values = {
        t: np.concatenate([s[k] for s in samples]).astype(np.float64)
        for k, t in enumerate(ir.inputs)
    }
    last_use = {t: i for i, op in enumerate(ir.ops) for t in op.inputs}
    out: dict[int, dict[str, np.ndarray]] = {}
    for i, op in enumerate(ir.ops):
        xs = [values[t] for t in op.inputs]
        shape = ir.tensor_shapes[op.output]
        if op.kind in WEIGHTED_OPS:
            out[i], values[op.output] = _fold(op, op_rng(seed, i), xs[0], shape)
        else:
            values[op.output] = run_op(op, xs, shape)
        for t in op.inputs:  # keep memory flat on big inputs
            if last_use[t] == i:
                values.pop(t, None)
    return out
