"""Read a .tflite file into a graph view of subgraph 0: ops, tensors, costs, live cuts.

Everything downstream (cutter, tiler, cost model, strategies) works on `ModelGraph`,
never on raw flatbuffers. Op order is the subgraph's operator order, which is the
execution order the TFLite interpreter uses; op ranges are half-open [start, end).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from planner.errors import ModelError
from planner.model.opcost import op_macs

TFLITE_IDENTIFIER = b"TFL3"

_DTYPES = {
    schema.TensorType.FLOAT32: "float32",
    schema.TensorType.FLOAT16: "float16",
    schema.TensorType.INT32: "int32",
    schema.TensorType.UINT8: "uint8",
    schema.TensorType.INT64: "int64",
    schema.TensorType.STRING: "string",
    schema.TensorType.BOOL: "bool",
    schema.TensorType.INT16: "int16",
    schema.TensorType.COMPLEX64: "complex64",
    schema.TensorType.INT8: "int8",
    schema.TensorType.FLOAT64: "float64",
    schema.TensorType.UINT64: "uint64",
    schema.TensorType.UINT32: "uint32",
    schema.TensorType.UINT16: "uint16",
}
_ITEMSIZE = {"string": 1, "bool": 1}
OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
CONTROL_FLOW_OPS = {"WHILE", "IF", "CALL_ONCE", "CALL", "STABLEHLO_WHILE", "STABLEHLO_CASE"}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of subgraph 0, with the unique name tilefleet uses for it."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    quantized_dimension: int
    is_constant: bool
    is_variable: bool

    def describe(self) -> dict:
        """The `T` record of `inspect --json` (docs/cli.md): name, shape, dtype."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def quant(self) -> tuple[float | None, int | None]:
        """Per-tensor (scale, zero_point), or (None, None) when not (per-tensor) quantized."""
        if len(self.scale) == 1:
            return float(self.scale[0]), int(self.zero_point[0] if self.zero_point else 0)
        return None, None


@dataclass(frozen=True)
class OpInfo:
    """One operator: its type, tensors (indices; -1 = optional input absent) and costs."""

    index: int
    type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    macs: int
    weight_bytes: int
    activation_bytes: int


def _dtype_name(tensor_type: int) -> str:
    return _DTYPES.get(tensor_type, f"type{tensor_type}")


def _itemsize(dtype: str) -> int:
    if dtype in _ITEMSIZE:
        return _ITEMSIZE[dtype]
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 1


def op_type_name(model: schema.ModelT, opcode_index: int) -> str:
    """Builtin operator name (e.g. CONV_2D) or CUSTOM:<code> for an opcode index."""
    code = model.operatorCodes[opcode_index]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = OP_NAMES.get(builtin, f"OP{builtin}")
    if name == "CUSTOM":
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        return f"CUSTOM:{custom}"
    return name


def parse_model(data: bytes, source: str = "<bytes>") -> schema.ModelT:
    """Unpack .tflite bytes into the flatbuffers object API, with one-line errors."""
    if len(data) < 8:
        raise ModelError(f"{source}: not a TFLite model (only {len(data)} bytes)")
    if data[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(
            f"{source}: not a TFLite model (file identifier {bytes(data[4:8])!r}, expected b'TFL3')"
        )
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # flatbuffers raises struct/index errors on damaged files
        raise ModelError(f"{source}: damaged or truncated TFLite model ({exc})") from None
    if not model.subgraphs:
        raise ModelError(f"{source}: TFLite model has no subgraphs")
    return model


class ModelGraph:
    """Graph view of subgraph 0 of a TFLite model."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.data = data
        self.source = source
        self.model = parse_model(data, source)
        self.subgraph = self.model.subgraphs[0]
        try:
            self.tensors = self._read_tensors()
            self.ops = self._read_ops()
        except (IndexError, TypeError, AttributeError, ValueError) as exc:
            raise ModelError(f"{source}: inconsistent TFLite model ({exc})") from None
        self.inputs = tuple(
            int(i) for i in (self.subgraph.inputs if self.subgraph.inputs is not None else [])
        )
        self.outputs = tuple(
            int(i) for i in (self.subgraph.outputs if self.subgraph.outputs is not None else [])
        )
        self.by_name = {t.name: t.index for t in self.tensors}

    @classmethod
    def load(cls, path: str | Path) -> ModelGraph:
        """Read a .tflite file; errors name the file."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ModelError(f"{p}: cannot read model ({exc.strerror})") from None
        return cls(data, str(p))

    # ---- reading -------------------------------------------------------------------
    def buffer_bytes(self, buffer_index: int) -> memoryview | None:
        """The data of a buffer (inline or stored after the flatbuffer), None when empty."""
        if buffer_index <= 0 or buffer_index >= len(self.model.buffers):
            return None
        buf = self.model.buffers[buffer_index]
        if buf.data is not None and len(buf.data) > 0:
            return memoryview(np.ascontiguousarray(buf.data)).cast("B")
        if buf.offset > 1 and buf.size > 0:
            if buf.offset + buf.size > len(self.data):  # a silent short slice would corrupt weights
                raise ModelError(
                    f"{self.source}: buffer {buffer_index} lies outside the file "
                    f"(bytes {buf.offset}..{buf.offset + buf.size} of {len(self.data)}; truncated?)"
                )
            return memoryview(self.data)[buf.offset : buf.offset + buf.size]
        return None

    def _read_tensors(self) -> list[TensorInfo]:
        used: set[str] = set()
        out = []
        for i, t in enumerate(self.subgraph.tensors or []):
            raw = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else (t.name or "")
            raw = raw or f"tensor_{i}"
            # Repeated names get ':k' so every tensor can be followed by name across parts.
            name, k = raw, 0
            while name in used:
                k += 1
                name = f"{raw}:{k}"
            used.add(name)
            shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
            dtype = _dtype_name(t.type)
            q = t.quantization
            scale = (
                tuple(float(s) for s in q.scale) if q is not None and q.scale is not None else ()
            )
            zp = (
                tuple(int(z) for z in q.zeroPoint)
                if q is not None and q.zeroPoint is not None
                else ()
            )
            qdim = int(q.quantizedDimension) if q is not None else 0
            const = self.buffer_bytes(int(t.buffer)) is not None
            out.append(
                TensorInfo(
                    index=i,
                    name=name,
                    shape=shape,
                    dtype=dtype,
                    nbytes=int(np.prod(shape, dtype=np.int64)) * _itemsize(dtype)
                    if shape
                    else _itemsize(dtype),
                    scale=scale,
                    zero_point=zp,
                    quantized_dimension=qdim,
                    is_constant=const,
                    is_variable=bool(t.isVariable),
                )
            )
        return out

    def _read_ops(self) -> list[OpInfo]:
        ops = []
        for k, op in enumerate(self.subgraph.operators or []):
            ins = tuple(int(i) for i in (op.inputs if op.inputs is not None else []))
            outs = tuple(int(i) for i in (op.outputs if op.outputs is not None else []))
            for t in ins + outs:
                if t >= len(self.tensors) or t < -1:
                    raise ModelError(
                        f"{self.source}: op {k} refers to tensor {t}, which does not exist"
                    )
            ops.append((k, op_type_name(self.model, op.opcodeIndex), ins, outs))
        self._const_derived = self._find_const_derived(ops)
        result = []
        for k, typ, ins, outs in ops:
            tin = [self.tensors[i] for i in ins if i >= 0]
            tout = [self.tensors[i] for i in outs]
            folded = all(o.index in self._const_derived for o in tout)
            weights = 0 if folded else sum(t.nbytes for t in tin if self.is_static(t.index))
            acts = sum(t.nbytes for t in tin + tout if not self.is_static(t.index))
            opts = self.subgraph.operators[k].builtinOptions
            window = getattr(opts, "filterHeight", 0) * getattr(opts, "filterWidth", 0) or None
            macs = (
                0
                if folded
                else op_macs(typ, [t.shape for t in tin], [t.shape for t in tout], window)
            )
            result.append(OpInfo(k, typ, ins, outs, macs, weights, acts))
        return result

    def _find_const_derived(self, ops: list) -> frozenset[int]:
        """Tensors computed only from constants (fp16 DEQUANTIZE, DENSIFY): every part
        that needs one recomputes it, so they never cross a cut."""
        derived: set[int] = set()
        for _, _, ins, outs in ops:
            real = [i for i in ins if i >= 0]
            if real and all(self.tensors[i].is_constant or i in derived for i in real):
                derived.update(outs)
        return frozenset(derived)

    # ---- queries -------------------------------------------------------------------
    def is_static(self, t: int) -> bool:
        """Constant or computed only from constants: never an activation."""
        return self.tensors[t].is_constant or t in self._const_derived

    @property
    def const_derived(self) -> frozenset[int]:
        return self._const_derived

    @cached_property
    def producer(self) -> dict[int, int]:
        """Tensor index -> index of the op that produces it."""
        return {t: op.index for op in self.ops for t in op.outputs}

    @cached_property
    def consumers(self) -> dict[int, list[int]]:
        """Tensor index -> indices of the ops that read it, in order."""
        out: dict[int, list[int]] = {}
        for op in self.ops:
            for t in op.inputs:
                if t >= 0:
                    out.setdefault(t, []).append(op.index)
        return out

    @cached_property
    def _last_use(self) -> dict[int, int]:
        """Activation tensor -> last op index that reads it (len(ops) for graph outputs)."""
        last: dict[int, int] = {}
        for t, cons in self.consumers.items():
            if not self.is_static(t):
                last[t] = cons[-1]
        for t in self.outputs:
            last[t] = len(self.ops)
        return last

    def live_at(self, i: int) -> list[int]:
        """Activation tensors crossing a cut placed before op i (0 <= i <= len(ops)):
        available before op i and still needed at or after it (graph outputs count as
        needed at the end), residual branches included. Ordered by tensor index."""
        if not 0 <= i <= len(self.ops):
            raise IndexError(f"cut {i} outside 0..{len(self.ops)}")
        return [t for t in self._live_table[i]]

    @cached_property
    def _live_table(self) -> list[list[int]]:
        # One sweep: a tensor is live at cut i when born < i <= last use.
        born = {t: -1 for t in self.inputs}
        for op in self.ops:
            for t in op.outputs:
                born[t] = op.index
        n = len(self.ops)
        starts: list[list[int]] = [[] for _ in range(n + 2)]
        ends: list[list[int]] = [[] for _ in range(n + 2)]
        for t, last in self._last_use.items():
            b = born.get(t)
            if b is None or self.is_static(t):
                continue  # variables or tensors with no producer are not activations
            if b + 1 <= last:
                starts[b + 1].append(t)
                ends[last + 1].append(t)
        table, live = [], set()
        for i in range(n + 1):
            live.update(starts[i])
            live.difference_update(ends[i])
            table.append(sorted(live))
        return table

    def cut_bytes(self, i: int) -> int:
        """Bytes of all activation tensors crossing a cut before op i."""
        return sum(self.tensors[t].nbytes for t in self.live_at(i))

    def options(self, op_index: int):
        """The builtin options object of an op (e.g. Conv2DOptionsT), or None."""
        return self.subgraph.operators[op_index].builtinOptions

    def control_flow_ops(self) -> list[OpInfo]:
        """Ops that call other subgraphs; the cutter refuses models that have them."""
        return [op for op in self.ops if op.type in CONTROL_FLOW_OPS]

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def tensor(self, name_or_index: str | int) -> TensorInfo:
        """Look a tensor up by unique name or index; unknown names raise ModelError."""
        if isinstance(name_or_index, int):
            return self.tensors[name_or_index]
        idx = self.by_name.get(name_or_index)
        if idx is None:
            raise ModelError(f"{self.source}: no tensor named {name_or_index!r}")
        return self.tensors[idx]

    def describe(self) -> dict:
        """The `inspect --json` document (docs/cli.md)."""
        def tl(ids):
            return [self.tensors[t].describe() for t in ids if t >= 0]

        return {
            "model": {
                "file": self.source,
                "sha256": self.sha256,
                "inputs": tl(self.inputs),
                "outputs": tl(self.outputs),
            },
            "ops": [
                {
                    "index": op.index,
                    "type": op.type,
                    "inputs": tl(op.inputs),
                    "outputs": tl(op.outputs),
                    "macs": op.macs,
                    "weight_bytes": op.weight_bytes,
                }
                for op in self.ops
            ],
            "cuts": [
                {
                    "at": i,
                    "bytes": self.cut_bytes(i),
                    "tensors": [self.tensors[t].name for t in self.live_at(i)],
                }
                for i in range(len(self.ops) + 1)
            ],
        }


def load_model(model: str | Path | bytes | ModelGraph) -> ModelGraph:
    """A ModelGraph from a path, .tflite bytes or a graph."""
    if isinstance(model, ModelGraph):
        return model
    if isinstance(model, (bytes, bytearray)):
        return ModelGraph(bytes(model), "<bytes>")
    return ModelGraph.load(model)
