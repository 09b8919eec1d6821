"""Small conv stacks for the tiling tests, described as layer tuples, plus a tiled runner.

Layers (all NHWC, `c` channels kept small so interpreters build in milliseconds):
  ("conv", k, s, padding, d, act)  ("dw", k, s, padding, d)  ("max"|"avg", k, s, padding)
  ("pad", top, bottom, left, right)  ("res", k, d)  — x + conv(x), SAME, stride 1
  ("cat", k)  — conv1x1(concat(x, dw(x)))          ("relu6",) ("hswish",) ("leaky",)
"""

from __future__ import annotations

import copy

import numpy as np

from node.runtime import RuntimeSettings, run_whole
from node.tile_exec import TileRunner, slice_region, stitch
from planner.model.tile import TileLayout
from planner.model.tilepart import for_tiles
from planner.modelbuild import GraphBuilder


def stack_graph(size: int | tuple[int, int], layers: list[tuple], c: int = 4) -> GraphBuilder:
    """A GraphBuilder holding the layer stack on a [1, H, W, 3] input (ValueError if empty)."""
    h, w = (size, size) if isinstance(size, int) else size
    g = GraphBuilder("stack")
    x = g.conv2d(g.input([1, h, w, 3]), c, 1, name="stem")
    for kind, *a in layers:
        if kind == "conv":
            x = g.conv2d(x, c, a[0], a[1], a[2], dilation=a[3], activation=a[4])
        elif kind == "dw":
            x = g.depthwise_conv2d(x, a[0], a[1], a[2], dilation=a[3])
        elif kind in ("max", "avg"):
            pool = g.max_pool if kind == "max" else g.avg_pool
            x = pool(x, a[0], a[1], a[2])
        elif kind == "pad":
            x = g.pad(x, ((a[0], a[1]), (a[2], a[3])))
        elif kind == "res":
            x = g.add(x, g.conv2d(x, c, a[0], 1, "SAME", dilation=a[1]))
        elif kind == "cat":
            x = g.conv2d(g.concatenation([x, g.depthwise_conv2d(x, a[0])]), c, 1)
        elif kind == "relu6":
            x = g.relu6(x)
        elif kind == "hswish":
            x = g.hard_swish(x)
        elif kind == "leaky":
            x = g.leaky_relu(x, 0.2)
        else:
            raise ValueError(f"unknown layer {kind!r}")
    g.output(x)
    return g


def build_stack(size: int | tuple[int, int], layers: list[tuple], dtype: str = "float32",
                seed: int = 0, **build) -> bytes:
    """The stack as .tflite bytes (int8 models keep int8 input and output unless io="float")."""
    return stack_graph(size, layers).build(dtype, seed=seed, **build)


def random_input(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    """Deterministic test input: normal floats or the full int8 range."""
    rng = np.random.default_rng(seed)
    if dtype == "int8":
        return rng.integers(-128, 128, size=shape, dtype=np.int8)
    return rng.standard_normal(shape).astype(np.float32)


def run_tiled(part: bytes, layout: TileLayout, x: np.ndarray,
              settings: RuntimeSettings | None = None) -> np.ndarray:
    """Run a part tile by tile with one re-resized interpreter and stitch the crops."""
    runner = TileRunner(for_tiles(part), settings)
    pieces = [
        (t.output_region, runner.run(slice_region(x, t.input_region), t.crop)) for t in layout.tiles
    ]
    return stitch(layout.halo.out_shape, runner.output_dtype, pieces)


def run_tiled_all(part: bytes, layout: TileLayout, xs: list[np.ndarray],
                  out_shapes: list[tuple[int, ...]], settings: RuntimeSettings | None = None
                  ) -> list[np.ndarray]:
    """A part of several inputs and outputs tile by tile: each input sliced to its own
    window, each output cropped and stitched on its own (part order)."""
    runner = TileRunner(for_tiles(part), settings)
    pieces: list[list] = [[] for _ in out_shapes]
    for t in layout.tiles:
        outs = runner.run_all(
            [slice_region(x, r) for x, r in zip(xs, t.input_regions, strict=True)], t.crops
        )
        for k, (region, out) in enumerate(zip(t.output_regions, outs, strict=True)):
            pieces[k].append((region, out))
    return [stitch(shape, dtype, ps)
            for shape, dtype, ps in zip(out_shapes, runner.output_dtypes, pieces, strict=True)]


def run_untiled(part: bytes, x: np.ndarray, settings: RuntimeSettings | None = None) -> np.ndarray:
    """The reference: the same part on the whole input, same runtime settings."""
    return run_whole(part, [x], settings or RuntimeSettings())[0]


def split_model(dtype: str, kind: str = "SPLIT", size: int = 24, axis: int = 3) -> bytes:
    """A model with a channel SPLIT (or SPLIT_V) inside a tileable stack.

    The builder has no multi-output ops, so it builds a = conv(x), b = conv(x), s =
    concat(a, b), then conv(a), dw(b) and a strided conv of their concat; the flatbuffer
    is then given a SPLIT of s into (a', b') (s's type and quantization) that the two
    consumers read instead of a and b. Another `axis` makes a model only for refusals.
    """
    from ai_edge_litert import schema_py_generated as schema

    from planner.model.graph import parse_model
    from planner.model.partpack import repack

    g = GraphBuilder("split")
    x = g.input([1, size, size, 3])
    a, b = g.conv2d(x, 4, 3, name="a"), g.conv2d(x, 4, 3, name="b")
    s = g.concatenation([a, b], name="s")
    y = g.concatenation([g.conv2d(a, 4, 3, activation="RELU"), g.depthwise_conv2d(b, 3)])
    g.output(g.conv2d(y, 4, 3, 2), s)
    model = parse_model(g.build(dtype))
    sub = model.subgraphs[0]
    names = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in sub.tensors]
    ia, ib, i_s = names.index("a"), names.index("b"), names.index("s")
    halves = []
    for src in (ia, ib):
        t = copy.copy(sub.tensors[i_s])
        t.shape, t.name, t.buffer = list(sub.tensors[src].shape), f"{names[src]}'", 0
        sub.tensors.append(t)
        halves.append(len(sub.tensors) - 1)

    def const(values: list[int], shape: list[int]) -> int:
        buf = schema.BufferT()
        buf.data = np.array(values, np.int32).view(np.uint8)
        model.buffers.append(buf)
        t = schema.TensorT()
        t.shape, t.type, t.buffer = shape, schema.TensorType.INT32, len(model.buffers) - 1
        t.name = f"split/const{len(sub.tensors)}"
        sub.tensors.append(t)
        return len(sub.tensors) - 1

    code = schema.OperatorCodeT()
    builtin = getattr(schema.BuiltinOperator, kind)
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, builtin, 1
    model.operatorCodes.append(code)
    op = schema.OperatorT()
    op.opcodeIndex, op.outputs = len(model.operatorCodes) - 1, halves
    if kind == "SPLIT":
        op.inputs = [const([axis], []), i_s]
        op.builtinOptionsType, op.builtinOptions = (
            schema.BuiltinOptions.SplitOptions,
            schema.SplitOptionsT(),
        )
        op.builtinOptions.numSplits = 2
    else:
        op.inputs = [i_s, const([4, 4], [2]), const([axis - 4], [])]
        op.builtinOptionsType, op.builtinOptions = (
            schema.BuiltinOptions.SplitVOptions,
            schema.SplitVOptionsT(),
        )
        op.builtinOptions.numSplits = 2
    at = next(k for k, o in enumerate(sub.operators) if i_s in list(o.outputs)) + 1
    for o in sub.operators[at:]:  # the consumers after the concat read the split halves
        o.inputs = [{ia: halves[0], ib: halves[1]}.get(int(t), int(t)) for t in o.inputs]
    sub.operators.insert(at, op)
    model.signatureDefs = None
    return repack(model)


def with_half_pixel_centers(data: bytes) -> bytes:
    """The model with every RESIZE_NEAREST_NEIGHBOR set to half_pixel_centers=True."""
    from planner.model.graph import op_type_name, parse_model
    from planner.model.partpack import repack

    model = parse_model(data)
    for op in model.subgraphs[0].operators:
        if op_type_name(model, op.opcodeIndex) == "RESIZE_NEAREST_NEIGHBOR":
            op.builtinOptions.halfPixelCenters = True
    return repack(model, len(data))
