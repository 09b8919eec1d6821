"""Make a cut part runnable on tiles: upsamples whose output size follows the tile's.

A RESIZE_NEAREST_NEIGHBOR takes its output size from a constant operand, so on a resized
tile it would still produce the full image's size (as TRANSPOSE_CONV does). For an
integer scale f the same values come from ops whose output size follows their input:
CONCATENATION of f*f copies of the input along channels, then DEPTH_TO_SPACE with block
f (out[y, x, c] = in[y // f, x // f, c], which is nearest-neighbour upsampling with
align_corners=False, with or without half_pixel_centers, since (y + 0.5) / f and y / f
floor alike for an integer f). Both only move bytes, float32 and int8 alike, so a tile
of the rewritten part is bit-identical to the matching window of the original.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import replace

from ai_edge_litert import schema_py_generated as schema

from planner.errors import TileError
from planner.model.cut import Part
from planner.model.graph import op_type_name, parse_model
from planner.model.partpack import repack  # 16-byte aligned buffers, as every part has

_RESIZE = "RESIZE_NEAREST_NEIGHBOR"


def _code(model: schema.ModelT, builtin: int) -> int:
    """Index of a builtin's operator code in the model, added when missing."""
    for i, c in enumerate(model.operatorCodes):
        if max(int(c.builtinCode), int(c.deprecatedBuiltinCode)) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _quant(t: schema.TensorT) -> tuple:
    q = t.quantization
    if q is None:
        return ()
    return (tuple(q.scale if q.scale is not None else ()),
            tuple(q.zeroPoint if q.zeroPoint is not None else ()))


def _op(code: int, inputs: list[int], outputs: list[int], kind: int, options: object
        ) -> schema.OperatorT:
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = code, inputs, outputs
    op.builtinOptionsType, op.builtinOptions = kind, options
    return op


def _upsample_ops(model: schema.ModelT, sub: schema.SubGraphT, k: int, op: schema.OperatorT
                  ) -> list[schema.OperatorT]:
    """CONCATENATION + DEPTH_TO_SPACE computing resize op `op` (index k) for any tile size."""
    x, out = int(op.inputs[0]), int(op.outputs[0])
    tx, to = sub.tensors[x], sub.tensors[out]
    (n, h, w, c), (_, oh, ow, _) = list(tx.shape), list(to.shape)
    f = oh // h
    if f * h != oh or f * w != ow or f < 1:
        raise TileError(f"op {k} ({_RESIZE}) cannot be tiled: it scales {h}x{w} to {oh}x{ow}, not "
                        "by one integer")
    if _quant(tx) != _quant(to):
        raise TileError(f"op {k} ({_RESIZE}) cannot be tiled: its input and output are quantized "
                        "differently (a tile's copy ops would requantize)")
    concat = schema.ConcatenationOptionsT()
    concat.axis = 3
    if f == 1:
        return [_op(_code(model, schema.BuiltinOperator.CONCATENATION), [x], [out],
                    schema.BuiltinOptions.ConcatenationOptions, concat)]
    mid = copy.copy(tx)  # same type and quantization: the copies are exact
    mid.shape, mid.buffer, mid.shapeSignature = [n, h, w, c * f * f], 0, None
    name = to.name.decode() if isinstance(to.name, bytes) else str(to.name)
    mid.name = f"{name}/tile_copies"
    sub.tensors.append(mid)
    d2s = schema.DepthToSpaceOptionsT()
    d2s.blockSize = f
    m = len(sub.tensors) - 1
    return [_op(_code(model, schema.BuiltinOperator.CONCATENATION), [x] * (f * f), [m],
                schema.BuiltinOptions.ConcatenationOptions, concat),
            _op(_code(model, schema.BuiltinOperator.DEPTH_TO_SPACE), [m], [out],
                schema.BuiltinOptions.DepthToSpaceOptions, d2s)]


def for_tiles(data: bytes, source: str = "<part>") -> bytes:
    """The part with every nearest upsample rewritten to follow its input's size (the
    bytes unchanged when it has none); TileError names an op that cannot be."""
    model = parse_model(data, source)
    sub = model.subgraphs[0]
    resizes = [k for k, op in enumerate(sub.operators)
               if op_type_name(model, op.opcodeIndex) == _RESIZE]
    if not resizes:
        return data
    ops = []
    for k, op in enumerate(sub.operators):
        ops += _upsample_ops(model, sub, k, op) if k in resizes else [op]
    sub.operators = ops
    return repack(model, len(data))


def tile_ready(part: Part) -> Part:
    """`part` as tiles run it (for_tiles), with its own sha256; the same part when unchanged."""
    data = for_tiles(part.data, f"part of ops [{part.span[0]}, {part.span[1]})")
    if data is part.data:
        return part
    return replace(part, data=data, sha256=hashlib.sha256(data).hexdigest())
