"""Ranges that cannot be tiled are refused with the op index and type; tileable_prefix."""

from __future__ import annotations

import flatbuffers
import pytest
from ai_edge_litert import schema_py_generated as schema

from planner.errors import TileError
from planner.model.graph import ModelGraph
from planner.model.tile import check_tileable, tile_layout, tileable_prefix
from planner.modelbuild import GraphBuilder
from tests.planner.test_tile_exact import stack


def _classifier(tail: str) -> ModelGraph:
    g = GraphBuilder()
    x = g.conv2d(g.input([1, 16, 16, 3]), 8, 3, 2)  # op 0
    x = g.relu6(x)  # op 1
    if tail == "mean":
        x = g.softmax(g.fully_connected(g.mean(x), 10))  # ops 2, 3, 4
    elif tail == "reshape":
        x = g.fully_connected(g.reshape(x, [1, -1]), 10)
    elif tail == "resize":  # 8x8 -> 12x12: a tile boundary would fall inside an input pixel
        x = g.conv2d(g.resize_nearest_neighbor(x, size=(12, 12)), 4, 3)
    elif tail == "resize_xy":
        x = g.conv2d(g.resize_nearest_neighbor(x, size=(16, 24)), 4, 3)
    elif tail == "concat_h":
        x = g.concatenation([x, g.conv2d(x, 8, 1)], axis=1)  # ops 2 (conv), 3 (concat)
    g.output(x)
    return ModelGraph(g.build("float32"))


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("mean", r"op 2 \(MEAN\) cannot be tiled"),
        ("reshape", r"op 2 \(RESHAPE\) cannot be tiled"),
        (
            "resize",
            r"op 2 \(RESIZE_NEAREST_NEIGHBOR\) cannot be tiled: it scales 8x8 to 12x12, "
            "not by integers",
        ),
        ("resize_xy", r"op 2 \(RESIZE_NEAREST_NEIGHBOR\) cannot be tiled: its scales differ"),
        (
            "concat_h",
            r"op 3 \(CONCATENATION\) cannot be tiled: it concatenates along a non-channel axis",
        ),
    ],
)
def test_untileable_ops_are_named(tail: str, message: str) -> None:
    g = _classifier(tail)
    with pytest.raises(TileError, match=message):
        check_tileable(g, 0, len(g.ops))
    with pytest.raises(TileError, match=message):
        tile_layout(g, 0, len(g.ops), 2, 2)
    check_tileable(g, 0, 2)


def test_fully_connected_and_softmax_are_named() -> None:
    g = _classifier("mean")
    with pytest.raises(TileError, match=r"op 3 \(FULLY_CONNECTED\) cannot be tiled"):
        check_tileable(g, 3, 4)
    with pytest.raises(TileError, match=r"op 4 \(SOFTMAX\) cannot be tiled"):
        check_tileable(g, 4, 5)


def test_tileable_prefix_stops_before_the_first_untileable_op() -> None:
    g = _classifier("mean")
    assert tileable_prefix(g, 0) == 2
    assert tileable_prefix(g, 1) == 2
    assert tileable_prefix(g, 2) == 2  # MEAN: nothing tileable from here


def _retype(data: bytes, op_index: int, new_type: int) -> ModelGraph:
    """The same model with one op's code swapped (only the analysis looks at it)."""
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = new_type
    model.operatorCodes.append(code)
    model.subgraphs[0].operators[op_index].opcodeIndex = len(model.operatorCodes) - 1
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return ModelGraph(bytes(b.Output()))


def test_transpose_conv_is_refused_with_the_reason() -> None:
    g = _retype(stack("same_s1", 16, "float32"), 2, schema.BuiltinOperator.TRANSPOSE_CONV)
    with pytest.raises(
        TileError, match=r"op 2 \(TRANSPOSE_CONV\) cannot be tiled: its output shape"
    ):
        check_tileable(g, 0, len(g.ops))
    assert tileable_prefix(g, 0) == 2


def test_parts_with_several_activation_inputs_and_outputs_tile() -> None:
    g = ModelGraph(stack("residual", 32, "float32"))
    # Ops: stem, conv, add(stem, conv), conv/2, conv, add, relu6. A cut inside the first
    # residual block: [2, 7) reads stem and conv2d_0, [0, 2) writes both.
    check_tileable(g, 2, 7)
    check_tileable(g, 0, 2)
    ins = tile_layout(g, 2, 7, 2, 2).tiles[0].input_regions
    outs = tile_layout(g, 0, 2, 2, 2).tiles[0].output_regions
    assert len(ins) == 2 and len(outs) == 2
    assert tileable_prefix(g, 0) == len(g.ops)
    assert tileable_prefix(g, 2) == len(g.ops)  # two inputs: tileable now
    assert tileable_prefix(g, 3) == len(g.ops)


def test_bad_ranges() -> None:
    g = ModelGraph(stack("same_s1", 16, "float32"))
    for start, end in [(0, 0), (2, 1), (-1, 2), (0, 99)]:
        with pytest.raises(TileError, match="empty or outside"):
            check_tileable(g, start, end)
