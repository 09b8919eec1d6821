"""Turn a GraphIR plus weights into a TFLite ModelT and pack it (float32, fp16 weights, int8).

Model layout, as converters emit it: buffer 0 is the empty placeholder and every
activation tensor points at it; constants get their own 16-byte aligned buffer.
Op order: [fp16 DEQUANTIZE of weights | QUANTIZE of float inputs] + the IR ops in
order + [DEQUANTIZE of int8 outputs]. Graph inputs and outputs keep their IR names in
every variant; int8 copies next to a float boundary are named "<name>/int8".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

from planner.modelbuild.emit_ops import emit_op
from planner.modelbuild.graph import GraphIR
from planner.modelbuild.quantize import activation_params, quant_params
from planner.modelbuild.reference import tensor_ranges
from planner.modelbuild.samples import default_count, sample_floats
from planner.modelbuild.weights import generate_weights

SIGNATURE_KEY = "serving_default"
_MAX_BYTES = 2**31 - 2**24  # flatbuffers offsets are 32-bit; keep room for the tables
_TYPES = {
    np.dtype(np.float32): fb.TensorType.FLOAT32,
    np.dtype(np.float16): fb.TensorType.FLOAT16,
    np.dtype(np.int8): fb.TensorType.INT8,
    np.dtype(np.int32): fb.TensorType.INT32,
}


@dataclass(frozen=True)
class BuildOptions:
    """Everything `GraphBuilder.build` accepts; validated by `check()`."""

    dtype: str = "float32"
    seed: int = 0
    io: str = "int8"
    fp16_weights: bool = False
    signature: bool = False
    metadata: bool = False
    duplicate_names: bool = False
    calibration_samples: int | None = None  # None: samples.default_count

    def check(self) -> None:
        """Raise ValueError for an invalid combination."""
        if self.dtype not in ("float32", "int8"):
            raise ValueError(f"build: dtype must be 'float32' or 'int8', got {self.dtype!r}")
        if self.io not in ("int8", "float"):
            raise ValueError(f"build: io must be 'int8' or 'float', got {self.io!r}")
        if self.fp16_weights and self.dtype != "float32":
            raise ValueError("build: fp16_weights=True needs dtype='float32'")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"build: seed must be an int >= 0, got {self.seed!r}")
        n = self.calibration_samples
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(
                f"build: calibration_samples must be >= 1, got {self.calibration_samples!r}"
            )


class _AlignedBuilder(flatbuffers.Builder):
    # Constant data 16-byte aligned as converters do: kernels read weights in place.
    def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 (flatbuffers API name)
        if x.dtype == np.uint8:
            self.StartVector(1, x.size, 16)
            payload = x.tobytes()
            self.head = self.head - len(payload)
            self.Bytes[self.head : self.head + len(payload)] = payload
            self.vectorNumElems = x.size
            return self.EndVector()
        return super().CreateNumpyVector(x)


class Emitter:
    """Accumulates tensors, buffers, opcodes and operators of one subgraph."""

    def __init__(
        self, ir: GraphIR, options: BuildOptions, qparams: dict[int, tuple[float, int]] | None
    ):
        self.ir = ir
        self.options = options
        self.qparams = qparams
        self.tensors: list[fb.TensorT] = []
        self.buffers: list[fb.BufferT] = [fb.BufferT()]
        self.head: list[tuple[int, fb.OperatorT]] = []
        self.body: list[tuple[int, fb.OperatorT]] = []
        self.tail: list[tuple[int, fb.OperatorT]] = []
        self.versions: dict[int, int] = {}
        self.act: dict[int, int] = {}  # IR tensor id -> model tensor consumers read
        self.data_bytes = 0
        self.producer = ir.producer()

    @property
    def int8(self) -> bool:
        return self.qparams is not None

    # ---- tensors ----------------------------------------------------------------------

    def tensor(
        self,
        name: str,
        shape: tuple[int, ...],
        ttype: int,
        quant: fb.QuantizationParametersT | None = None,
        buffer: int = 0,
    ) -> int:
        """Append a tensor; returns its index."""
        self.tensors.append(
            fb.TensorT(
                shape=list(shape),
                type=ttype,
                buffer=buffer,
                name=name,
                quantization=quant,
                hasRank=True,
            )
        )
        return len(self.tensors) - 1

    def const(
        self, name: str, array: np.ndarray, quant: fb.QuantizationParametersT | None = None
    ) -> int:
        """Append a constant tensor with its own buffer."""
        array = np.ascontiguousarray(array)
        self.buffers.append(fb.BufferT(data=np.frombuffer(array.tobytes(), dtype=np.uint8)))
        self.data_bytes += array.nbytes
        return self.tensor(name, array.shape, _TYPES[array.dtype], quant, len(self.buffers) - 1)

    def float_weight(self, name: str, array: np.ndarray) -> int:
        """A float32 constant, or an fp16 constant + DEQUANTIZE when fp16_weights is set."""
        if not self.options.fp16_weights:
            return self.const(name, array.astype(np.float32))
        src = self.const(f"{name}/fp16", array.astype(np.float16))
        out = self.tensor(name, array.shape, fb.TensorType.FLOAT32)
        self.operator(self.head, fb.BuiltinOperator.DEQUANTIZE, [src], [out], version=3)
        return out

    def act_name(self, t: int) -> str:
        """Model name of IR tensor t (op-kind names when duplicate_names is set)."""
        if self.options.duplicate_names and t not in self.ir.inputs:
            return self.ir.ops[self.producer[t]].kind
        return self.ir.tensor_names[t]

    def act_tensor(self, t: int, name: str | None = None, as_float: bool = False) -> int:
        """New model tensor for IR activation t (int8 with its params unless as_float)."""
        shape = self.ir.tensor_shapes[t]
        name = self.act_name(t) if name is None else name
        if not self.int8 or as_float:
            return self.tensor(name, shape, fb.TensorType.FLOAT32)
        scale, zp = self.qparams[t]
        return self.tensor(name, shape, fb.TensorType.INT8, quant_params([scale], [zp]))

    # ---- operators ----------------------------------------------------------------------

    def operator(
        self,
        where: list[tuple[int, fb.OperatorT]],
        code: int,
        inputs: list[int],
        outputs: list[int],
        options_type: int = fb.BuiltinOptions.NONE,
        options: Any = None,
        version: int = 1,
    ) -> None:
        """Append an operator to the head, body or tail list."""
        self.versions[code] = max(self.versions.get(code, 1), version)
        op = fb.OperatorT(
            inputs=inputs, outputs=outputs, builtinOptionsType=options_type, builtinOptions=options
        )
        where.append((code, op))

    # ---- model -----------------------------------------------------------------------------

    def emit(self, weights: dict[int, dict[str, np.ndarray]]) -> fb.ModelT:
        """Build the whole ModelT."""
        ir, float_io = self.ir, self.int8 and self.options.io == "float"
        graph_inputs = []
        for t in ir.inputs:
            if float_io:
                outer = self.act_tensor(t, as_float=True)
                self.act[t] = self.act_tensor(t, name=f"{self.act_name(t)}/int8")
                self.operator(self.head, fb.BuiltinOperator.QUANTIZE, [outer], [self.act[t]])
                graph_inputs.append(outer)
            else:
                self.act[t] = self.act_tensor(t)
                graph_inputs.append(self.act[t])
        renamed_outputs = set(ir.outputs) if float_io else set()
        for i, op in enumerate(ir.ops):
            name = f"{self.act_name(op.output)}/int8" if op.output in renamed_outputs else None
            self.act[op.output] = self.act_tensor(op.output, name=name)
            emit_op(self, op, weights.get(i))
        graph_outputs = []
        for t in ir.outputs:
            if float_io:
                outer = self.act_tensor(t, as_float=True)
                self.operator(
                    self.tail, fb.BuiltinOperator.DEQUANTIZE, [self.act[t]], [outer], version=2
                )
                graph_outputs.append(outer)
            else:
                graph_outputs.append(self.act[t])
        return self._model(graph_inputs, graph_outputs)

    def _model(self, graph_inputs: list[int], graph_outputs: list[int]) -> fb.ModelT:
        codes: list[int] = []
        operators = []
        for code, op in self.head + self.body + self.tail:
            if code not in codes:
                codes.append(code)
            op.opcodeIndex = codes.index(code)
            operators.append(op)
        model = fb.ModelT(version=3, description="tilefleet modelbuild")
        model.operatorCodes = [
            fb.OperatorCodeT(
                deprecatedBuiltinCode=min(c, 127), builtinCode=c, version=self.versions[c]
            )
            for c in codes
        ]
        model.subgraphs = [
            fb.SubGraphT(
                tensors=self.tensors,
                inputs=graph_inputs,
                outputs=graph_outputs,
                operators=operators,
                name="main",
            )
        ]
        model.buffers = self.buffers
        if self.options.signature:
            model.signatureDefs = [self._signature(graph_inputs, graph_outputs)]
        if self.options.metadata:
            model.metadata = self._metadata()
        return model

    def _signature(self, graph_inputs: list[int], graph_outputs: list[int]) -> fb.SignatureDefT:
        ir = self.ir
        return fb.SignatureDefT(
            inputs=[
                fb.TensorMapT(name=ir.tensor_names[t], tensorIndex=i)
                for t, i in zip(ir.inputs, graph_inputs, strict=True)
            ],
            outputs=[
                fb.TensorMapT(name=ir.tensor_names[t], tensorIndex=i)
                for t, i in zip(ir.outputs, graph_outputs, strict=True)
            ],
            signatureKey=SIGNATURE_KEY,
            subgraphIndex=0,
        )

    def _metadata(self) -> list[fb.MetadataT]:
        # Converters always write min_runtime_version as a 16-byte zero-padded string.
        entries = {
            "min_runtime_version": b"1.14.0".ljust(16, b"\0"),
            "tilefleet_modelbuild": json.dumps(
                {"graph": self.ir.name, "dtype": self.options.dtype, "seed": self.options.seed},
                sort_keys=True,
            ).encode(),
        }
        out = []
        for name, data in entries.items():
            self.buffers.append(fb.BufferT(data=np.frombuffer(data, dtype=np.uint8)))
            out.append(fb.MetadataT(name=name, buffer=len(self.buffers) - 1))
        return out


def pack(model: fb.ModelT, size_hint: int = 0) -> bytes:
    """Serialise a ModelT with the TFL3 file identifier."""
    b = _AlignedBuilder(min(size_hint + (1 << 20), 2**31 - 1))
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def check_graph(ir: GraphIR) -> None:
    """Raise ValueError unless the graph has inputs and outputs produced by ops."""
    if not ir.inputs:
        raise ValueError(f"build: graph {ir.name!r} has no input")
    if not ir.outputs:
        raise ValueError(f"build: graph {ir.name!r} has no output (call GraphBuilder.output)")
    for t in ir.outputs:
        if t in ir.inputs:
            raise ValueError(
                f"build: graph output {ir.tensor_names[t]!r} is a graph input; add an op"
            )


def build_model(ir: GraphIR, options: BuildOptions) -> bytes:
    """GraphIR -> .tflite bytes according to `options`."""
    options.check()
    check_graph(ir)
    weights = generate_weights(ir, options.seed)
    qparams = None
    if options.dtype == "int8":
        shapes = [ir.tensor_shapes[t] for t in ir.inputs]
        count = options.calibration_samples or default_count(shapes)
        samples = sample_floats(shapes, options.seed, count)
        qparams = activation_params(ir, tensor_ranges(ir, weights, samples))
    em = Emitter(ir, options, qparams)
    model = em.emit(weights)
    if em.data_bytes > _MAX_BYTES:
        raise ValueError(
            f"build: {ir.name!r} has {em.data_bytes / 2**30:.1f} GiB of constants; "
            "a .tflite flatbuffer holds at most 2 GiB (reduce width or input size)"
        )
    return pack(model, em.data_bytes)
