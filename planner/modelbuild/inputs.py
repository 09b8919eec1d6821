"""Feed and read built models in float terms: deterministic sample inputs, dequantized outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from node.runtime import RuntimeSettings, run_whole
from planner.modelbuild.quantize import quantize_activation
from planner.modelbuild.samples import random_images

_NP = {
    fb.TensorType.FLOAT32: np.float32,
    fb.TensorType.INT8: np.int8,
    fb.TensorType.UINT8: np.uint8,
    fb.TensorType.INT32: np.int32,
    fb.TensorType.FLOAT16: np.float16,
}


@dataclass(frozen=True)
class TensorIO:
    """A graph input or output: name, shape, numpy dtype, and per-tensor quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        """True for integer tensors that carry a scale."""
        return self.dtype != np.float32 and self.scale != 0.0


def _describe(sub: fb.SubGraph, index: int) -> TensorIO:
    t = sub.Tensors(index)
    q = t.Quantization()
    scale = float(q.Scale(0)) if q is not None and q.ScaleLength() else 0.0
    zp = int(q.ZeroPoint(0)) if q is not None and q.ZeroPointLength() else 0
    if t.Type() not in _NP:
        raise ValueError(f"tensor {t.Name().decode()!r} has unsupported type {t.Type()}")
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    return TensorIO(t.Name().decode(), shape, np.dtype(_NP[t.Type()]), scale, zp)


def io_details(model: bytes) -> tuple[list[TensorIO], list[TensorIO]]:
    """Graph inputs and outputs of subgraph 0, read without an interpreter."""
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise ValueError("not a .tflite flatbuffer (missing TFL3 identifier)")
    sub = fb.Model.GetRootAs(model, 0).Subgraphs(0)
    ins = [_describe(sub, sub.Inputs(i)) for i in range(sub.InputsLength())]
    outs = [_describe(sub, sub.Outputs(i)) for i in range(sub.OutputsLength())]
    return ins, outs


def sample_floats_for(model: bytes, seed: int = 0) -> list[np.ndarray]:
    """Deterministic float32 inputs in [-1, 1], like the samples models are calibrated on."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5A3])
    return [random_images(rng, t.shape) for t in io_details(model)[0]]


def to_model_inputs(model: bytes, floats: list[np.ndarray]) -> list[np.ndarray]:
    """Quantize float inputs for int8 model inputs; float inputs pass through."""
    ins = io_details(model)[0]
    if len(ins) != len(floats):
        raise ValueError(f"model has {len(ins)} inputs, got {len(floats)} arrays")
    return [
        quantize_activation(x, t.scale, t.zero_point) if t.quantized else x.astype(np.float32)
        for t, x in zip(ins, floats, strict=True)
    ]


def sample_inputs(model: bytes, seed: int = 0) -> list[np.ndarray]:
    """Deterministic inputs in the model's own dtypes (int8 inputs quantized from the floats)."""
    return to_model_inputs(model, sample_floats_for(model, seed))


def dequantize_outputs(model: bytes, outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Float32 view of model outputs (int8 outputs dequantized with their scale/zero point)."""
    outs = io_details(model)[1]
    return [
        ((y.astype(np.float32) - t.zero_point) * np.float32(t.scale))
        if t.quantized
        else y.astype(np.float32)
        for t, y in zip(outs, outputs, strict=True)
    ]


def run_float(
    model: bytes, floats: list[np.ndarray], settings: RuntimeSettings | None = None
) -> list[np.ndarray]:
    """Run any built model on float inputs and return float outputs (int8 I/O handled)."""
    outputs = run_whole(model, to_model_inputs(model, floats), settings or RuntimeSettings())
    return dequantize_outputs(model, outputs)
