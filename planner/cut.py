"""Cut standalone .tflite parts out of a model: op ranges, chains, sub-DAGs between tensors.

A pure transform on the in-memory ModelT of a `ModelGraph`: each part's ModelT is built
from shallow copies of the source's tensors and operators and numpy views of its
buffers, then packed once, so cutting never deep-copies the model.

Boundary order (the contract the manifest records; parts chain by tensor name):
- `cut_range`/`cut_at` inputs: model inputs first, in model-input order, then the other
  tensors in order of first use inside the part (op order, then operand position).
- `cut_range`/`cut_at` outputs: model outputs first, in model-output order, then the
  other crossing tensors in order of production (op order, then output position).
- `cut_between`: inputs and outputs in the order the caller named them.
Tensor names in the part are the graph's unique names (`ModelGraph` renames repeats).
"""

from __future__ import annotations

import copy
import hashlib
import operator
from dataclasses import dataclass

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from planner.errors import CutError
from planner.graph import TFLITE_IDENTIFIER, ModelGraph
from planner.manifest import TensorSpec

_ALIGN = 16  # the TFLite converter aligns buffers to 16 bytes; kernels may rely on it
_MAX_FLATBUFFER = 2**31 - 1


@dataclass(frozen=True)
class Part:
    """A standalone .tflite holding some ops of a model, with its boundary tensors."""

    data: bytes
    sha256: str
    span: tuple[int, int]  # [start, end) of the op range (cut_between: smallest covering range)
    ops: tuple[int, ...]  # source op indices in the part, copied constant producers included
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


# ---- public API ----------------------------------------------------------------------
def cut_range(graph: ModelGraph, start: int, end: int) -> Part:
    """Cut the ops [start, end) into a standalone part (DESIGN.md boundary rules)."""
    _refuse_unsupported(graph)
    n = len(graph.ops)
    if not (0 <= start < end <= n):
        raise CutError(f"{graph.source}: cannot cut ops [{start}, {end}): need 0 <= start < end <= {n}")
    derived = graph.const_derived
    outs = set(graph.outputs)
    # Const-derived ops are recomputed wherever needed instead of owned by one range,
    # except when they produce a model output (then the range holding them owns it).
    core = [k for k in range(start, end)
            if not folds_constants(graph, k) or any(t in outs for t in graph.ops[k].outputs)]
    ops = _with_const_producers(graph, core)
    produced = {t for k in ops for t in graph.ops[k].outputs}
    in_ids = _first_use(graph, ops, produced)
    out_ids = []
    for k in core:
        for t in graph.ops[k].outputs:
            later = any(c >= end for c in graph.consumers.get(t, ()))
            if t in outs or (later and t not in derived):
                out_ids.append(t)
    if not out_ids:
        raise CutError(f"{graph.source}: ops [{start}, {end}) compute nothing used later "
                       f"(only constant folding or dead ops); move the cut")
    out_ids = _model_order_first(graph.outputs, out_ids)
    _check_variables(graph, ops, set(range(start, end)))
    return _make_part(graph, ops, in_ids, out_ids, (start, end))


def cut_at(graph: ModelGraph, points: list[int] | tuple[int, ...]) -> list[Part]:
    """Cut the model into a chain of parts at the cut points (part k: [p_k, p_k+1))."""
    n = len(graph.ops)
    pts = list(points)
    for i, p in enumerate(pts):
        try:
            pts[i] = operator.index(p)  # ints and numpy integers, never bools or floats
        except TypeError:
            raise CutError(f"{graph.source}: cut point {p!r} is not an op index") from None
        if isinstance(p, bool):
            raise CutError(f"{graph.source}: cut point {p!r} is not an op index")
    for p in pts:
        if not 0 < p < n:
            raise CutError(f"{graph.source}: cut point {p} out of range: must be 1..{n - 1} "
                           f"(the model has {n} ops)")
    for a, b in zip(pts, pts[1:], strict=False):
        if b <= a:
            raise CutError(f"{graph.source}: cut points must be strictly increasing ({a} then {b})")
    bounds = [0, *pts, n]
    return [cut_range(graph, a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def cut_between(graph: ModelGraph, input_names: list[str], output_names: list[str]) -> Part:
    """Cut the ops that compute the named outputs from the named inputs (plus constants)."""
    _refuse_unsupported(graph)
    in_ids = [_lookup(graph, name, "input") for name in input_names]
    out_ids = [_lookup(graph, name, "output") for name in output_names]
    if not out_ids:
        raise CutError(f"{graph.source}: cut_between needs at least one output tensor")
    for ids, what in ((in_ids, "input"), (out_ids, "output")):
        if len(set(ids)) != len(ids):
            raise CutError(f"{graph.source}: a part {what} tensor is named twice")
    for t in in_ids:
        info = graph.tensors[t]
        if graph.is_static(t) or info.is_variable:
            raise CutError(f"{graph.source}: tensor {info.name!r} is a constant or variable, "
                           f"not a valid part input")
        if t in out_ids:
            raise CutError(f"{graph.source}: tensor {info.name!r} is both a part input and output")
    given = set(in_ids)
    needed: set[int] = set()
    used: set[int] = set()
    stack = list(out_ids)
    seen: set[int] = set()
    while stack:  # walk producers backwards, stopping at the given inputs and constants
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in given:
            used.add(t)
            continue
        info = graph.tensors[t]
        if info.is_constant or info.is_variable:
            continue
        k = graph.producer.get(t)
        if k is None:
            raise CutError(f"{graph.source}: outputs {list(output_names)} are not computable from "
                           f"inputs {list(input_names)}: they need tensor {info.name!r}")
        needed.add(k)
        stack.extend(i for i in graph.ops[k].inputs if i >= 0)
    unused = [graph.tensors[t].name for t in in_ids if t not in used]
    if unused:
        raise CutError(f"{graph.source}: part input(s) {unused} are not needed for outputs {list(output_names)}")
    ops = sorted(needed)
    _check_variables(graph, ops, set(ops))
    real = [k for k in ops if not folds_constants(graph, k)] or ops
    return _make_part(graph, ops, in_ids, out_ids, (real[0], real[-1] + 1))


# ---- boundary analysis -------------------------------------------------------------
def _refuse_unsupported(graph: ModelGraph) -> None:
    flow = graph.control_flow_ops()
    # Besides WHILE/IF/CALL_ONCE, StableHLO ops (composite, reduce, sort...) name subgraphs
    # in their options; only subgraph 0 is copied, so refuse any op that refers to one.
    flow += [op for op in graph.ops if op not in flow and _refers_to_subgraph(graph, op.index)]
    if flow:
        op = min(flow, key=lambda o: o.index)
        raise CutError(f"{graph.source}: op {op.index} ({op.type}) calls another subgraph; "
                       f"models with control flow cannot be cut")
    for t in graph.subgraph.tensors or []:
        if getattr(t, "externalBuffer", 0):
            raise CutError(f"{graph.source}: tensor {t.name!r} keeps its weights in an external "
                           f"file; such models cannot be cut")


def _refers_to_subgraph(graph: ModelGraph, k: int) -> bool:
    op = graph.subgraph.operators[k]
    for opts in (op.builtinOptions, getattr(op, "builtinOptions2", None)):
        if opts is not None and any("ubgraph" in key for key in vars(opts)):
            return True
    return False


def folds_constants(graph: ModelGraph, k: int) -> bool:
    """True for op k when it only computes from constants (fp16 DEQUANTIZE, DENSIFY): it is
    copied into the parts that need it, so a range of only such ops is not a part."""
    outs = graph.ops[k].outputs
    return bool(outs) and all(t in graph.const_derived for t in outs)


def _with_const_producers(graph: ModelGraph, core: list[int]) -> list[int]:
    ops = set(core)
    stack = [t for k in core for t in graph.ops[k].inputs if t in graph.const_derived]
    while stack:
        k = graph.producer[stack.pop()]
        if k not in ops:
            ops.add(k)
            stack.extend(t for t in graph.ops[k].inputs if t in graph.const_derived)
    return sorted(ops)


def _first_use(graph: ModelGraph, ops: list[int], produced: set[int]) -> list[int]:
    found: list[int] = []
    for k in ops:
        for t in graph.ops[k].inputs:
            if t < 0 or t in produced or t in found:
                continue
            info = graph.tensors[t]
            if info.is_constant or info.is_variable:
                continue
            found.append(t)
    return _model_order_first(graph.inputs, found)


def _model_order_first(model_ids: tuple[int, ...], ids: list[int]) -> list[int]:
    chosen = set(ids)
    first = [t for t in model_ids if t in chosen]
    return first + [t for t in ids if t not in set(first)]


def _check_variables(graph: ModelGraph, ops: list[int], owned: set[int]) -> None:
    # A variable (stateful) tensor must live in exactly one part, or its state would fork.
    for k in ops:
        for t in graph.ops[k].inputs:
            if t >= 0 and graph.tensors[t].is_variable:
                outside = [c for c in graph.consumers.get(t, ()) if c not in owned]
                if outside:
                    raise CutError(f"{graph.source}: variable tensor {graph.tensors[t].name!r} is used "
                                   f"by op {k} and op {outside[0]}, which would be in different parts")


def _lookup(graph: ModelGraph, name: str, what: str) -> int:
    idx = graph.by_name.get(name)
    if idx is None:
        raise CutError(f"{graph.source}: no tensor named {name!r} (part {what})")
    return idx


# ---- building the part ----------------------------------------------------------------
class _Buffer:
    """A buffer that packs its bytes straight from a view, 16-byte aligned, without copies."""

    __slots__ = ("data",)

    def __init__(self, data: memoryview | None) -> None:
        self.data = data

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 (flatbuffers protocol)
        if self.data is None:
            schema.BufferStart(builder)
            return schema.BufferEnd(builder)
        n = len(self.data)
        builder.StartVector(1, n, _ALIGN)
        builder.head -= n
        builder.Bytes[builder.head: builder.head + n] = self.data
        vec = builder.EndVector()
        schema.BufferStart(builder)
        schema.BufferAddData(builder, vec)
        return schema.BufferEnd(builder)


def _spec(graph: ModelGraph, t: int) -> TensorSpec:
    info = graph.tensors[t]
    scale, zp = info.quant()
    return TensorSpec(info.name, info.shape, info.dtype, scale, zp)


def _make_part(graph: ModelGraph, ops: list[int], in_ids: list[int], out_ids: list[int],
               span: tuple[int, int]) -> Part:
    src, sg = graph.model, graph.subgraph
    tensor_ids = set(in_ids) | set(out_ids)
    for k in ops:
        op = sg.operators[k]
        tensor_ids.update(t for t in graph.ops[k].inputs + graph.ops[k].outputs if t >= 0)
        tensor_ids.update(int(t) for t in (op.intermediates if op.intermediates is not None else ()) if t >= 0)
    t_map = {t: i for i, t in enumerate(sorted(tensor_ids))}

    buffers: list[_Buffer] = [_Buffer(None)]  # buffer 0: the empty placeholder
    b_map: dict[int, int] = {}
    size = 0

    def buffer_for(b: int) -> int:
        nonlocal size
        if b not in b_map:
            data = graph.buffer_bytes(b)
            if data is None:
                return 0
            b_map[b] = len(buffers)
            buffers.append(_Buffer(data))
            size += len(data) + _ALIGN
        return b_map[b]

    tensors = []
    for t in sorted(tensor_ids):
        new = copy.copy(sg.tensors[t])  # shallow: shape and quantization are shared, not mutated
        new.name = graph.tensors[t].name
        new.buffer = buffer_for(int(new.buffer))
        tensors.append(new)

    code_ids = sorted({int(sg.operators[k].opcodeIndex) for k in ops})
    c_map = {c: i for i, c in enumerate(code_ids)}
    operators = []
    for k in ops:
        op = copy.copy(sg.operators[k])
        op.opcodeIndex = c_map[int(op.opcodeIndex)]
        op.inputs = [t_map[t] if t >= 0 else -1 for t in graph.ops[k].inputs]
        op.outputs = [t_map[t] for t in graph.ops[k].outputs]
        if op.intermediates is not None:
            op.intermediates = [t_map[int(t)] if t >= 0 else -1 for t in op.intermediates]
        if getattr(op, "largeCustomOptionsSize", 0):  # custom options stored after the flatbuffer
            off, n = int(op.largeCustomOptionsOffset), int(op.largeCustomOptionsSize)
            op.customOptions = np.frombuffer(graph.data, np.uint8, n, off)
            op.largeCustomOptionsOffset, op.largeCustomOptionsSize = 0, 0
        op.debugMetadataIndex = -1  # debug metadata is not copied
        operators.append(op)

    sub = schema.SubGraphT()
    sub.tensors, sub.operators, sub.name = tensors, operators, sg.name
    sub.inputs = [t_map[t] for t in in_ids]
    sub.outputs = [t_map[t] for t in out_ids]

    model = schema.ModelT()
    model.version = src.version
    model.description = src.description
    model.operatorCodes = [src.operatorCodes[c] for c in code_ids]
    model.subgraphs = [sub]
    model.metadata = _copy_metadata(graph, buffer_for, buffers)
    if src.metadataBuffer is not None:
        kept = [b_map[int(b)] for b in src.metadataBuffer if int(b) in b_map]
        model.metadataBuffer = kept or None
    model.signatureDefs = _signature(graph, in_ids, out_ids, t_map)
    model.buffers = buffers
    if size > _MAX_FLATBUFFER:
        raise CutError(f"{graph.source}: part {list(span)} holds {size} bytes of weights, "
                       f"more than a 2 GB flatbuffer can")

    # Pre-size the builder so it never grows (growth copies would double peak memory).
    est = size + 1024 * (len(tensors) + len(operators)) + 65536
    builder = flatbuffers.Builder(min(est, _MAX_FLATBUFFER))
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    data = bytes(memoryview(builder.Bytes)[builder.Head():])  # one copy (Output() makes two)
    del builder
    return Part(data=data, sha256=hashlib.sha256(data).hexdigest(), span=span, ops=tuple(ops),
                inputs=tuple(_spec(graph, t) for t in in_ids),
                outputs=tuple(_spec(graph, t) for t in out_ids))


def _copy_metadata(graph: ModelGraph, buffer_for, buffers: list[_Buffer]) -> list | None:
    """Keep every metadata entry (min_runtime_version, ...) with its buffer copied."""
    if not graph.model.metadata:
        return None
    out = []
    for m in graph.model.metadata:
        b = int(m.buffer)
        if not 0 < b < len(graph.model.buffers):
            continue
        new = schema.MetadataT()
        new.name = m.name
        new.buffer = buffer_for(b)
        if new.buffer == 0:  # empty metadata buffer: give it its own, never buffer 0
            buffers.append(_Buffer(None))
            new.buffer = len(buffers) - 1
        out.append(new)
    return out or None


def _signature(graph: ModelGraph, in_ids: list[int], out_ids: list[int], t_map: dict) -> list | None:
    """Rewrite the model's signature to the part's boundary (a stale one maps wrong tensors)."""
    sigs = [s for s in graph.model.signatureDefs or [] if int(s.subgraphIndex) == 0]
    if not sigs:
        return None

    def maps(ids: list[int]) -> list:
        out = []
        for t in ids:
            m = schema.TensorMapT()
            m.name, m.tensorIndex = graph.tensors[t].name, t_map[t]
            out.append(m)
        return out

    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = sigs[0].signatureKey, 0
    sig.inputs, sig.outputs = maps(in_ids), maps(out_ids)
    return [sig]
