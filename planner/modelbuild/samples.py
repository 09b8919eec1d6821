"""Deterministic representative inputs.

What weights are normalised and int8 models calibrated on.
"""

from __future__ import annotations

import numpy as np

# 4 samples, or 2 for inputs over 128x128: their many pixels give per-channel statistics
# and ranges enough values anyway, and the float64 forward passes dominate build time.
SAMPLE_COUNTS = (2, 4)
_PIXELS = 4 * 128 * 128


def default_count(shapes: list[tuple[int, ...]]) -> int:
    """How many samples weight normalisation and int8 calibration use for these inputs."""
    pixels = max(s[1] * s[2] if len(s) == 4 else 1 for s in shapes)
    return int(np.clip(_PIXELS // pixels, *SAMPLE_COUNTS))


def random_images(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """One float32 sample in [-1, 1]: per-channel offset + smooth field + fine noise.

    Pure white noise makes every sample look alike after global pooling (classifier
    outputs would hardly depend on the input); images differ globally, and so do these.
    """
    offset = rng.uniform(-0.5, 0.5, size=(1,) * (len(shape) - 1) + (shape[-1],))
    noise = rng.uniform(-1.0, 1.0, size=shape)
    if len(shape) != 4:
        return np.clip(offset + 0.5 * noise, -1.0, 1.0).astype(np.float32)
    _, h, w, c = shape
    gh, gw = max(2, h // 8), max(2, w // 8)
    coarse = rng.uniform(-1.0, 1.0, size=(shape[0], gh, gw, c))
    smooth = _bilinear(coarse, np.linspace(0, gh - 1, h), np.linspace(0, gw - 1, w))
    return np.clip(offset + 0.5 * smooth + 0.3 * noise, -1.0, 1.0).astype(np.float32)


def _bilinear(x: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    y0 = np.minimum(np.floor(ys).astype(int), x.shape[1] - 2)
    x0 = np.minimum(np.floor(xs).astype(int), x.shape[2] - 2)
    fy, fx = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
    rows = x[:, y0] * (1 - fy) + x[:, y0 + 1] * fy
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x0 + 1] * fx


def sample_floats(shapes: list[tuple[int, ...]], seed: int, count: int) -> list[list[np.ndarray]]:
    """`count` deterministic float32 input sets in [-1, 1] (see random_images)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xCA11B])
    return [[random_images(rng, s) for s in shapes] for _ in range(count)]
