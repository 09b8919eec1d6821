"""Structure of cut parts: every pitfall of docs/cutting.md, boundary order, and one-line errors."""

from __future__ import annotations

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from node.runtime import make_interpreter
from planner.errors import CutError, ModelError
from planner.model.cut import cut_at, cut_between, cut_range
from planner.model.graph import ModelGraph
from tests.planner.cutkit import (
    SETTINGS,
    assert_chain_exact,
    compute_ops,
    graph_of,
    inputs_for,
    model_bytes,
)


def repack(model: schema.ModelT) -> bytes:
    """Pack an edited ModelT back into .tflite bytes."""
    b = flatbuffers.Builder(1 << 16)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def unpack(data: bytes) -> schema.ModelT:
    return schema.ModelT.InitFromPackedBuf(data, 0)


def residual_cut(graph: ModelGraph) -> int:
    return next(p for p in compute_ops(graph)[1:] if len(graph.live_at(p)) >= 2)


def test_boundary_rules_and_order() -> None:
    g = graph_of("resnet", "float32")
    p = residual_cut(g)
    first, second = cut_at(g, [p])
    live = {g.tensors[t].name for t in g.live_at(p)}
    assert set(first.output_names) == live == set(second.input_names) and len(live) >= 2
    # Outputs in production order; inputs in order of first use.
    assert list(first.output_names) == [
        g.tensors[t].name for t in sorted(g.live_at(p), key=g.producer.get)
    ]
    uses = {n: min(c for c in g.consumers[g.by_name[n]] if c >= p) for n in second.input_names}
    assert list(second.input_names) == sorted(second.input_names, key=uses.get)
    assert first.input_names == ("input",) and second.output_names == ("head/softmax",)
    assert first.span == (0, p) and second.span == (p, len(g.ops))
    assert first.ops == tuple(range(p))


def test_whole_range_keeps_model_io_order() -> None:
    g = graph_of("early_exit", "float32")
    part = cut_range(g, 0, len(g.ops))
    assert part.output_names == tuple(g.tensors[t].name for t in g.outputs)
    assert part.input_names == tuple(g.tensors[t].name for t in g.inputs)


def test_early_exit_outputs_leave_early_parts() -> None:
    g = graph_of("early_exit", "float32")
    exit1 = g.by_name["exit1/softmax"]
    p = g.producer[exit1] + 1
    first, _ = cut_at(g, [p])
    assert "exit1/softmax" in first.output_names
    assert first.output_names[0] == "exit1/softmax"  # model outputs come first


def test_fp16_dequantize_copied_into_every_part_that_needs_it() -> None:
    g = graph_of("mobilenet", "float32", fp16_weights=True)
    c = compute_ops(g)
    parts = cut_at(g, [c[len(c) // 3], c[2 * len(c) // 3]])
    for part in parts:
        pg = ModelGraph(part.data)
        assert all(pg.tensors[t].dtype == "float32" and not pg.is_static(t) for t in pg.inputs)
        deq = [op for op in pg.ops if op.type == "DEQUANTIZE"]
        assert deq and all(pg.tensors[op.inputs[0]].dtype == "float16" for op in deq)
        # No dangling DEQUANTIZE: every copied one feeds an op of the part.
        assert all(op.outputs[0] in pg.consumers for op in deq)
    assert_chain_exact(g, parts, SETTINGS["xnnpack"])


def test_cut_inside_leading_dequantize_block_is_refused() -> None:
    g = graph_of("mobilenet", "float32", fp16_weights=True)
    assert g.ops[0].type == "DEQUANTIZE"
    with pytest.raises(CutError, match=r"ops \[0, 1\) compute nothing"):
        cut_at(g, [1])


def test_buffers_opcodes_and_names() -> None:
    g = graph_of("yolo", "float32", duplicate_names=True)
    names = [t.name for t in g.tensors]
    assert len(set(names)) == len(names) and any(":" in n for n in names)
    for part in cut_at(g, [compute_ops(g)[10]]):
        m = unpack(part.data)
        assert m.buffers[0].data is None or len(m.buffers[0].data) == 0
        assert all(b.data is not None and len(b.data) > 0 for b in m.buffers[1:])
        used = {op.opcodeIndex for op in m.subgraphs[0].operators}
        assert used == set(range(len(m.operatorCodes)))
        pnames = [t.name.decode() for t in m.subgraphs[0].tensors]
        assert len(set(pnames)) == len(pnames) and set(pnames) <= set(names)
        assert set(part.input_names + part.output_names) <= set(pnames)


def test_buffers_are_16_byte_aligned() -> None:
    g = graph_of("vgg", "int8")
    for part in cut_at(g, [compute_ops(g)[5]]):
        m = schema.Model.GetRootAs(part.data, 0)
        for i in range(1, m.BuffersLength()):
            tab = m.Buffers(i)._tab
            assert tab.Vector(tab.Offset(4)) % 16 == 0


def test_shared_buffer_is_copied_once() -> None:
    g0 = graph_of("vgg", "float32")
    convs = [op for op in g0.ops if op.type == "CONV_2D"]
    a, b = next((x, y) for x, y in zip(convs, convs[1:], strict=False)
                if g0.tensors[x.inputs[1]].shape == g0.tensors[y.inputs[1]].shape)
    m = unpack(g0.data)
    tensors = m.subgraphs[0].tensors
    tensors[b.inputs[1]].buffer = tensors[a.inputs[1]].buffer
    g = ModelGraph(repack(m))
    part = cut_range(g, a.index, b.index + 1)
    pm = unpack(part.data)
    wa, wb = (
        pm.subgraphs[0].tensors[op.inputs[1]]
        for op in pm.subgraphs[0].operators[:: b.index - a.index]
    )
    assert wa.buffer == wb.buffer != 0
    assert len(pm.buffers) == len({t.buffer for t in pm.subgraphs[0].tensors if t.buffer}) + 1


def test_signature_rewritten_to_part_boundary() -> None:
    g = graph_of("yolo", "float32", signature=True, metadata=True)
    part = cut_at(g, [residual_cut(g)])[1]
    m = unpack(part.data)
    (sig,) = m.signatureDefs
    assert sig.signatureKey == b"serving_default"
    sub = m.subgraphs[0]
    assert [t.name.decode() for t in sig.inputs] == list(part.input_names)
    assert [sub.tensors[t.tensorIndex].name.decode() for t in sig.inputs] == list(part.input_names)
    assert [sub.tensors[t.tensorIndex].name.decode() for t in sig.outputs] == list(
        part.output_names
    )
    interp = make_interpreter(part.data)
    runner = interp.get_signature_runner("serving_default")
    env = {}
    first = cut_at(g, [residual_cut(g)])[0]
    runner0 = make_interpreter(first.data).get_signature_runner("serving_default")
    env.update(runner0(**inputs_for(g)))
    out = runner(**{n: env[n] for n in part.input_names})
    assert set(out) == set(part.output_names)


def test_metadata_kept_and_remapped() -> None:
    g = graph_of("resnet", "int8", signature=True, metadata=True)
    src = {md.name: bytes(g.model.buffers[md.buffer].data) for md in g.model.metadata}
    for part in cut_at(g, [residual_cut(g)]):
        m = unpack(part.data)
        got = {md.name: bytes(m.buffers[md.buffer].data) for md in m.metadata}
        assert got == src and all(md.buffer > 0 for md in m.metadata)


def test_per_channel_quantization_preserved() -> None:
    g = graph_of("mobilenet", "int8")
    p = residual_cut(g)
    first, second = cut_at(g, [p])
    pm = ModelGraph(second.data)
    per_channel = [t for t in pm.tensors if len(t.scale) > 1]
    assert per_channel
    for t in per_channel:
        src = g.tensors[g.by_name[t.name]]
        assert t.scale == src.scale and t.zero_point == src.zero_point
        assert t.quantized_dimension == src.quantized_dimension
    for spec in second.inputs:
        scale, zp = g.tensors[g.by_name[spec.name]].quant()
        assert spec.dtype == "int8" and spec.scale == scale and spec.zero_point == zp
        assert isinstance(spec.scale, float) and isinstance(spec.zero_point, int)


def test_float_boundaries_have_no_quantization() -> None:
    part = cut_at(graph_of("vgg", "float32"), [3])[0]
    assert all(t.scale is None and t.zero_point is None for t in part.inputs + part.outputs)


def offset_buffers(data: bytes) -> bytes:
    """The same model with every constant stored after the flatbuffer (offset/size)."""
    m = unpack(data)
    blobs = [
        (i, bytes(b.data)) for i, b in enumerate(m.buffers) if b.data is not None and len(b.data)
    ]
    for i, _ in blobs:
        m.buffers[i].data, m.buffers[i].offset, m.buffers[i].size = None, 2, 1  # placeholders
    head = len(repack(m))
    head += -head % 16
    pos, tail = head, bytearray()
    for i, blob in blobs:
        m.buffers[i].offset, m.buffers[i].size = pos, len(blob)
        tail += blob + bytes(-len(blob) % 16)
        pos = head + len(tail)
    packed = repack(m)
    assert len(packed) <= head
    return packed + bytes(head - len(packed)) + bytes(tail)


def test_buffers_stored_after_the_flatbuffer() -> None:
    src = graph_of("resnet", "float32")
    g = ModelGraph(offset_buffers(src.data))
    assert all(b.data is None for b in g.model.buffers)
    parts = cut_at(g, [residual_cut(g)])
    for part in parts:
        assert all(b.offset == 0 for b in unpack(part.data).buffers)
    assert_chain_exact(src, parts, SETTINGS["builtin"])


def test_optional_input_preserved() -> None:
    m = unpack(model_bytes("vgg", "float32"))
    g0 = ModelGraph(model_bytes("vgg", "float32"))
    fc = next(op for op in g0.ops if op.type == "FULLY_CONNECTED")
    op = m.subgraphs[0].operators[fc.index]
    op.inputs = [*op.inputs[:2], -1]
    g = ModelGraph(repack(m))
    parts = cut_at(g, [fc.index])
    pm = unpack(parts[1].data)
    assert list(pm.subgraphs[0].operators[0].inputs)[2] == -1
    assert_chain_exact(g, parts, SETTINGS["xnnpack"])


def test_variable_tensor_split_is_refused() -> None:
    g0 = graph_of("resnet", "float32")
    p = residual_cut(g0)
    shared = next(t for t in g0.live_at(p) if len(g0.consumers[t]) >= 2)
    m = unpack(g0.data)
    m.subgraphs[0].tensors[shared].isVariable = True
    g = ModelGraph(repack(m))
    with pytest.raises(CutError, match="variable tensor"):
        cut_at(g, [p])


def test_control_flow_is_refused() -> None:
    m = unpack(model_bytes("vgg", "float32"))
    op = m.subgraphs[0].operators[2]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.WHILE
    m.operatorCodes.append(code)
    op.opcodeIndex = len(m.operatorCodes) - 1
    g = ModelGraph(repack(m))
    with pytest.raises(CutError, match=r"op 2 \(WHILE\)"):
        cut_at(g, [5])


@pytest.mark.parametrize(
    "points, message",
    [
        ([0], "out of range"),
        ([23], "out of range"),
        ([-1], "out of range"),
        ([9, 4], "strictly increasing"),
        ([4, 4], "strictly increasing"),
        (["3"], "not an op index"),
        ([True], "not an op index"),
    ],
)
def test_impossible_cut_points(points, message) -> None:
    g = graph_of("vgg", "float32")
    assert len(g.ops) == 23
    with pytest.raises(CutError, match=message) as info:
        cut_at(g, points)
    assert "\n" not in str(info.value)


def test_cut_range_bounds() -> None:
    g = graph_of("vgg", "float32")
    for start, end in [(3, 3), (5, 2), (0, 24), (-1, 3)]:
        with pytest.raises(CutError, match="cannot cut ops"):
            cut_range(g, start, end)


def test_cut_between_equals_range_cut() -> None:
    g = graph_of("resnet", "float32")
    c = compute_ops(g)
    p = residual_cut(g)
    q = next(x for x in c if x > p + 3 and len(g.live_at(x)) >= 2)
    ins = [g.tensors[t].name for t in g.live_at(p)]
    outs = [g.tensors[t].name for t in g.live_at(q)]
    part = cut_between(g, ins, outs)
    assert part.input_names == tuple(ins) and part.output_names == tuple(outs)
    ranged = cut_range(g, p, q)
    assert set(part.ops) == set(ranged.ops) and part.span == (p, q)
    assert set(ranged.output_names) == set(outs)
    head, tail = cut_range(g, 0, p), cut_range(g, q, len(g.ops))
    assert_chain_exact(g, [head, part, tail], SETTINGS["xnnpack"])


def test_cut_between_errors() -> None:
    g = graph_of("resnet", "float32")
    p = residual_cut(g)
    live = [g.tensors[t].name for t in g.live_at(p)]
    with pytest.raises(CutError, match="no tensor named 'nope'"):
        cut_between(g, ["nope"], ["head/softmax"])
    with pytest.raises(CutError, match="not computable"):
        cut_between(g, [n for n in live if n != "stem/pool"], ["head/softmax"])
    with pytest.raises(CutError, match="not needed"):
        cut_between(g, ["input", *live], ["head/softmax"])
    with pytest.raises(CutError, match="constant or variable"):
        cut_between(g, ["stem/conv/weights"], ["head/softmax"])


def test_cutting_does_not_touch_the_source_and_is_deterministic() -> None:
    g = graph_of("mobilenet", "int8", signature=True, metadata=True)
    before = repack(g.model)
    a = cut_at(g, [residual_cut(g), compute_ops(g)[-3]])
    b = cut_at(g, [residual_cut(g), compute_ops(g)[-3]])
    assert repack(g.model) == before
    assert [p.sha256 for p in a] == [p.sha256 for p in b]
    assert np.all([len(p.data) > 0 for p in a])


def test_truncated_offset_buffers_are_refused() -> None:
    data = offset_buffers(graph_of("vgg", "float32").data)
    with pytest.raises(ModelError, match="lies outside the file"):
        ModelGraph(data[: len(data) - 1000], "short.tflite")


def test_subgraph_references_are_refused() -> None:
    m = unpack(model_bytes("vgg", "float32"))
    op = m.subgraphs[0].operators[4]
    code = schema.OperatorCodeT()
    code.builtinCode = schema.BuiltinOperator.STABLEHLO_COMPOSITE
    m.operatorCodes.append(code)
    op.opcodeIndex = len(m.operatorCodes) - 1
    op.builtinOptions, op.builtinOptionsType = None, 0
    op.builtinOptions2Type = schema.BuiltinOptions2.StableHLOCompositeOptions
    op.builtinOptions2 = schema.StableHLOCompositeOptionsT()
    g = ModelGraph(repack(m))
    with pytest.raises(CutError, match=r"op 4 \(STABLEHLO_COMPOSITE\) calls another subgraph"):
        cut_at(g, [8])


def test_numpy_cut_points_are_accepted() -> None:
    g = graph_of("vgg", "float32")
    assert [p.span for p in cut_at(g, [np.int64(5)])] == [(0, 5), (5, len(g.ops))]
