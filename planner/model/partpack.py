"""Assemble and pack one part's ModelT from references into the source model.

Tensors and operators are shallow copies (shape, quantization and options are shared
with the source, never mutated); buffers are views of the source's bytes, written
16-byte aligned straight into a pre-sized flatbuffers Builder. Handles the pitfalls of
docs/cutting.md: buffer 0 stays empty, only buffers with data are copied (each once),
only used operator codes are kept, the SignatureDef is rewritten to the part's
boundary, metadata buffers are remapped, data stored after the flatbuffer is inlined,
and optional (-1) inputs are kept.
"""

from __future__ import annotations

import copy

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from planner.errors import CutError
from planner.model.graph import TFLITE_IDENTIFIER, ModelGraph

_ALIGN = 16  # the TFLite converter aligns buffers to 16 bytes; kernels may rely on it
_MAX_FLATBUFFER = 2**31 - 1


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


def repack(model: schema.ModelT, size_hint: int = 0) -> bytes:
    """Serialise an edited ModelT whose buffers are BufferT: each packed 16-byte aligned."""
    model.buffers = [_Buffer(memoryview(np.ascontiguousarray(b.data)).cast("B")
                             if b.data is not None and len(b.data) else None)
                     for b in model.buffers]
    builder = flatbuffers.Builder(min(size_hint + (1 << 16), _MAX_FLATBUFFER))
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def pack_part(graph: ModelGraph, ops: list[int], in_ids: list[int], out_ids: list[int]) -> bytes:
    """Pack source ops (in order) with the given boundary tensors into standalone .tflite bytes."""
    src, sg = graph.model, graph.subgraph
    tensor_ids = set(in_ids) | set(out_ids)
    for k in ops:
        op = sg.operators[k]
        tensor_ids.update(t for t in graph.ops[k].inputs + graph.ops[k].outputs if t >= 0)
        tensor_ids.update(
            int(t) for t in (op.intermediates if op.intermediates is not None else ()) if t >= 0
        )
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
        raise CutError(f"{graph.source}: a part of ops {ops[0]}..{ops[-1]} holds {size} bytes of "
                       f"weights, more than a 2 GB flatbuffer can")

    # Pre-size the builder so it never grows (growth copies would double peak memory).
    est = size + 1024 * (len(tensors) + len(operators)) + 65536
    builder = flatbuffers.Builder(min(est, _MAX_FLATBUFFER))
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(memoryview(builder.Bytes)[builder.Head():])  # one copy (Output() makes two)


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


def _signature(
    graph: ModelGraph, in_ids: list[int], out_ids: list[int], t_map: dict
) -> list | None:
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
