"""Multiply-accumulate counts per op type, from tensor shapes alone.

MACs drive the analytic cost model for devices that were not profiled; the figures
follow the usual convention (one MAC per weight use, one op per output element for
element-wise ops) so they can be compared with published per-layer tables.
"""

from __future__ import annotations

from math import prod

Shape = tuple[int, ...]

_ZERO_COST = {
    "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "QUANTIZE", "DEQUANTIZE", "CONCATENATION", "PAD",
    "PADV2", "MIRROR_PAD", "SLICE", "STRIDED_SLICE", "SPLIT", "SPLIT_V", "PACK", "UNPACK",
    "TRANSPOSE", "GATHER", "SHAPE", "DENSIFY", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
}


def op_macs(
    op_type: str, in_shapes: list[Shape], out_shapes: list[Shape], window: int | None = None
) -> int:
    """MACs of one op given its (present) input and output shapes (and pool window)."""
    out_elems = prod(out_shapes[0]) if out_shapes and out_shapes[0] else 0
    if op_type == "CONV_2D" and len(in_shapes) >= 2 and len(in_shapes[1]) == 4:
        # filter [OC, KH, KW, IC/groups]
        _, kh, kw, icg = in_shapes[1]
        return out_elems * kh * kw * icg
    if op_type == "DEPTHWISE_CONV_2D" and len(in_shapes) >= 2 and len(in_shapes[1]) == 4:
        _, kh, kw, _ = in_shapes[1]
        return out_elems * kh * kw
    if op_type == "TRANSPOSE_CONV" and len(in_shapes) >= 3 and len(in_shapes[1]) == 4:
        # inputs: output_shape, weights [OC, KH, KW, IC], input
        oc, kh, kw, _ = in_shapes[1]
        return prod(in_shapes[2]) * kh * kw * oc
    if op_type == "CONV_3D" and len(in_shapes) >= 2 and len(in_shapes[1]) == 5:
        kd, kh, kw, ic, _ = in_shapes[1]
        return out_elems * kd * kh * kw * ic
    if op_type == "FULLY_CONNECTED" and len(in_shapes) >= 2 and len(in_shapes[1]) == 2:
        units, depth = in_shapes[1]
        return (out_elems // max(units, 1)) * units * depth
    if op_type in ("BATCH_MATMUL",) and len(in_shapes) >= 2 and in_shapes[0]:
        return out_elems * in_shapes[0][-1]
    if op_type in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D") and in_shapes and out_shapes:
        if window:
            return out_elems * window
        ratio = prod(in_shapes[0]) / max(out_elems, 1)
        return int(out_elems * max(ratio, 1.0))
    if op_type in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD") and in_shapes:
        return prod(in_shapes[0]) if in_shapes[0] else 0
    if op_type in ("SOFTMAX", "LOG_SOFTMAX"):
        return 3 * out_elems
    if op_type in _ZERO_COST:
        return 0
    return out_elems
