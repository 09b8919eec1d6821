"""The in-process model builder: recipes build, run, stay alive, quantize sanely, and the
pitfall options (fp16 weights, SignatureDefs, metadata, duplicate names) do what they say."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb

from node.runtime import RuntimeSettings, make_interpreter, run_whole
from planner.modelbuild import (
    RECIPES,
    SIGNATURE_KEY,
    GraphBuilder,
    StackLayer,
    conv_stack_graph,
    io_details,
    mobilenet_v2_like,
    mobilenet_v2_like_graph,
    resnet_like,
    run_float,
    sample_floats_for,
    sample_inputs,
    yolo_like,
)

OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
IR_TO_OP = {
    "conv2d": "CONV_2D", "depthwise_conv2d": "DEPTHWISE_CONV_2D",
    "fully_connected": "FULLY_CONNECTED",
    "add": "ADD", "mul": "MUL", "concatenation": "CONCATENATION", "max_pool": "MAX_POOL_2D",
    "avg_pool": "AVERAGE_POOL_2D", "pad": "PAD",
    "resize_nearest_neighbor": "RESIZE_NEAREST_NEIGHBOR",
    "reshape": "RESHAPE", "mean": "MEAN", "softmax": "SOFTMAX", "relu": "RELU", "relu6": "RELU6",
    "logistic": "LOGISTIC", "hard_swish": "HARD_SWISH", "leaky_relu": "LEAKY_RELU",
}  # fmt: skip

# Small versions of every recipe: enough to exercise each layer type in well under a second.
SMALL = {
    "mobilenet_v2": {"input_size": 64, "width": 0.5, "num_classes": 10},
    "vgg": {"input_size": 32, "width": 0.125, "fc_units": 64, "num_classes": 10},
    "resnet": {"input_size": 64, "width": 0.25, "num_classes": 10},
    "yolo": {"input_size": 64, "width": 0.25, "num_classes": 3},
    "early_exit": {"input_size": 32, "width": 0.5},
    "conv_stack": {"input_size": 40},
    "random_dag": {"n_ops": 16},
}
XNNPACK = RuntimeSettings(xnnpack=True)
BUILTIN = RuntimeSettings(xnnpack=False)


@cache
def built(name: str, dtype: str, seed: int = 3, **options) -> bytes:
    return RECIPES[name](dtype=dtype, seed=seed, **SMALL[name], **options)


def unpack(model: bytes) -> fb.ModelT:
    return fb.ModelT.InitFromPackedBuf(model, 0)


def op_names(m: fb.ModelT) -> list[str]:
    codes = [OP_NAMES[c.builtinCode] for c in m.operatorCodes]
    return [codes[op.opcodeIndex] for op in m.subgraphs[0].operators]


def rel_std(x: np.ndarray) -> float:
    return float(x.std() / (np.abs(x).mean() + 1e-12))


def test_recipes_cover_the_cli_names():
    assert set(RECIPES) == set(SMALL)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_recipe_builds_runs_and_stays_alive(name, dtype):
    model = built(name, dtype)
    assert model[4:8] == b"TFL3"
    ins, outs = io_details(model)
    assert all(t.dtype == np.dtype(dtype) for t in ins + outs)
    x = sample_inputs(model, seed=1)
    for settings in (XNNPACK, BUILTIN):
        ys = run_whole(model, x, settings)
        assert [y.shape for y in ys] == [t.shape for t in outs]
    for y in run_float(model, sample_floats_for(model, 1)):
        assert np.isfinite(y).all()
        assert rel_std(y) > 1e-3, f"{name}: output has vanished (relative std {rel_std(y):.2e})"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_outputs_depend_on_the_input(name):
    for dtype in ("float32", "int8"):
        model = built(name, dtype)
        a = run_whole(model, sample_inputs(model, 1))
        b = run_whole(model, sample_inputs(model, 2))
        assert any(not np.array_equal(u, v) for u, v in zip(a, b, strict=True)), f"{name} {dtype}"


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet", "yolo"])
def test_no_intermediate_activation_vanishes_or_explodes(name):
    model = built(name, "float32")
    mod = __import__("ai_edge_litert.interpreter", fromlist=["Interpreter"])
    interp = mod.Interpreter(
        model_content=model,
        experimental_op_resolver_type=mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], sample_inputs(model, 1)[0])
    interp.invoke()
    sub = unpack(model).subgraphs[0]
    for op in sub.operators:
        t = op.outputs[0]
        y = interp.get_tensor(t)
        name_t = sub.tensors[t].name.decode()
        assert np.isfinite(y).all(), name_t
        if y.size > 1:
            assert y.std() > 1e-3 * (np.abs(y).mean() + 1e-6), f"{name_t} is constant"
            assert np.abs(y).max() < 1e3, f"{name_t} explodes"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_int8_tracks_float(name):
    f, q = built(name, "float32"), built(name, "int8")
    for seed in (1, 2):
        x = sample_floats_for(f, seed)
        for a, b in zip(run_float(f, x), run_float(q, x), strict=True):
            corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
            assert corr > 0.9, f"{name}: int8/float correlation {corr:.3f}"


@pytest.mark.parametrize("name", ["mobilenet_v2", "random_dag"])
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_same_seed_same_bytes(name, dtype):
    kw = SMALL[name]
    fn = RECIPES[name]
    assert fn(dtype=dtype, seed=7, **kw) == fn(dtype=dtype, seed=7, **kw)
    assert fn(dtype=dtype, seed=7, **kw) != fn(dtype=dtype, seed=8, **kw)


def test_weights_of_an_op_do_not_depend_on_later_ops():
    def graph(extra: bool) -> GraphBuilder:
        g = GraphBuilder("prefix")
        x = g.conv2d(g.input((1, 16, 16, 3)), 8, name="first")
        y = g.conv2d(x, 4, name="second")
        g.output(g.conv2d(y, 4, name="third") if extra else y)
        return g

    def first_weights(model: bytes) -> bytes:
        m = unpack(model)
        sub = m.subgraphs[0]
        t = next(t for t in sub.tensors if t.name == b"first/weights")
        return bytes(m.buffers[t.buffer].data)

    assert first_weights(graph(False).build(seed=1)) == first_weights(graph(True).build(seed=1))


def test_ops_are_emitted_in_the_order_they_were_added():
    g = mobilenet_v2_like_graph(64, 0.5, 10)
    expected = [IR_TO_OP[op.kind] for op in g.ir.ops]
    assert op_names(unpack(g.build("float32"))) == expected
    assert op_names(unpack(g.build("int8", io="int8"))) == expected
    assert op_names(unpack(g.build("int8", io="float"))) == ["QUANTIZE", *expected, "DEQUANTIZE"]


def test_tensor_names_are_unique_and_readable():
    m = unpack(built("mobilenet_v2", "float32"))
    names = [t.name.decode() for t in m.subgraphs[0].tensors]
    assert len(names) == len(set(names))
    for expected in ("input", "stem/conv", "block3/expand", "block3/depthwise", "block3/pad",
                     "block2/add", "block3/project/weights", "block3/project/bias",
                     "head/softmax"):  # fmt: skip
        assert expected in names
    assert io_details(built("yolo", "float32"))[1][0].name == "head1/detect"


def test_default_mobilenet_v2_has_the_real_layer_table():
    kinds = [op.kind for op in mobilenet_v2_like_graph().ir.ops]
    assert len(kinds) == 69
    assert kinds.count("depthwise_conv2d") == 17 and kinds.count("add") == 10
    assert kinds.count("conv2d") == 35 and kinds.count("pad") == 4
    assert kinds[-3:] == ["mean", "fully_connected", "softmax"]


def _quant(t: fb.TensorT) -> tuple[np.ndarray, np.ndarray, int]:
    q = t.quantization
    return np.asarray(q.scale, np.float64), np.asarray(q.zeroPoint), q.quantizedDimension


@pytest.mark.parametrize("name", sorted(SMALL))
def test_int8_model_respects_kernel_constraints(name):
    m = unpack(built(name, "int8"))
    sub = m.subgraphs[0]
    for op, kind in zip(sub.operators, op_names(m), strict=True):
        ins = [sub.tensors[i] for i in op.inputs]
        out = sub.tensors[op.outputs[0]]
        assert out.type == fb.TensorType.INT8
        assert ins[0].type == fb.TensorType.INT8
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w, b = ins[1], ins[2]
            ws, wz, wdim = _quant(w)
            bs, bz, _ = _quant(b)
            assert w.type == fb.TensorType.INT8 and b.type == fb.TensorType.INT32
            assert not wz.any() and not bz.any()
            if kind == "FULLY_CONNECTED":
                assert len(ws) == 1
            else:
                assert wdim == (0 if kind == "CONV_2D" else 3)
                assert len(ws) == w.shape[wdim] == b.shape[0]
            in_scale = _quant(ins[0])[0][0]
            np.testing.assert_allclose(bs, in_scale * ws, rtol=1e-6)
        if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "RESIZE_NEAREST_NEIGHBOR", "PAD",
                    "CONCATENATION"):  # fmt: skip
            for t in ins:
                if t.type == fb.TensorType.INT8:
                    assert np.array_equal(_quant(t)[0], _quant(out)[0]), kind
                    assert np.array_equal(_quant(t)[1], _quant(out)[1]), kind
        if kind in ("SOFTMAX", "LOGISTIC"):
            scale, zp, _ = _quant(out)
            assert scale[0] == pytest.approx(1 / 256) and zp[0] == -128


def test_int8_with_float_io_matches_int8_io():
    q_int = built("early_exit", "int8")
    q_float = built("early_exit", "int8", io="float")
    ins_f, outs_f = io_details(q_float)
    ins_i, outs_i = io_details(q_int)
    assert [t.dtype for t in ins_f + outs_f] == [np.dtype(np.float32)] * 4
    assert [t.name for t in ins_f + outs_f] == [t.name for t in ins_i + outs_i]
    x = sample_floats_for(q_int, 5)
    for a, b, t in zip(run_float(q_int, x), run_float(q_float, x), outs_i, strict=True):
        assert np.abs(a - b).max() <= 2 * t.scale + 1e-7


def test_fp16_weights_are_dequantized_constants():
    plain = built("conv_stack", "float32")
    model = built("conv_stack", "float32", fp16_weights=True)
    m = unpack(model)
    sub = m.subgraphs[0]
    kinds = op_names(m)
    n_deq = kinds.count("DEQUANTIZE")
    assert n_deq == 2 * 9  # weights and bias of 6 convs + 3 depthwise
    assert kinds[:n_deq] == ["DEQUANTIZE"] * n_deq
    produced = {op.outputs[0]: op for op in sub.operators}
    for op, kind in zip(sub.operators, kinds, strict=True):
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            for t in op.inputs[1:]:
                src = sub.tensors[produced[t].inputs[0]]
                assert src.type == fb.TensorType.FLOAT16 and m.buffers[src.buffer].data is not None
                assert sub.tensors[t].type == fb.TensorType.FLOAT32 and sub.tensors[t].buffer == 0
    x = sample_inputs(plain, 1)
    for a, b in zip(run_whole(plain, x), run_whole(model, x), strict=True):
        np.testing.assert_allclose(a, b, rtol=0.05, atol=0.05 * np.abs(a).max())


def test_fp16_weights_need_float32():
    with pytest.raises(ValueError, match="fp16_weights"):
        conv_stack_graph(32).build("int8", fp16_weights=True)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_signature_def_maps_io_names_to_graph_tensors(dtype):
    model = built("early_exit", dtype, signature=True)
    m = unpack(model)
    sig = m.signatureDefs[0]
    sub = m.subgraphs[0]
    assert sig.signatureKey.decode() == SIGNATURE_KEY and sig.subgraphIndex == 0
    assert [t.tensorIndex for t in sig.inputs] == list(sub.inputs)
    assert [t.tensorIndex for t in sig.outputs] == list(sub.outputs)
    assert [t.name.decode() for t in sig.outputs] == [
        "exit1/softmax",
        "exit2/softmax",
        "final/softmax",
    ]
    interp = make_interpreter(model)
    runner = interp.get_signature_runner(SIGNATURE_KEY)
    x = sample_inputs(model, 1)
    got = runner(input=x[0])
    for name, want in zip([t.name.decode() for t in sig.outputs], run_whole(model, x), strict=True):
        # tflite-runtime's signature runner may take another float kernel path (1 ulp).
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=0)
    assert built("early_exit", dtype).__len__() < len(model)


def test_metadata_entries_point_at_buffers():
    m = unpack(built("conv_stack", "int8", metadata=True))
    entries = {e.name.decode(): bytes(m.buffers[e.buffer].data) for e in m.metadata}
    assert entries["min_runtime_version"].rstrip(b"\0") == b"1.14.0"
    info = json.loads(entries["tilefleet_modelbuild"])
    assert info["dtype"] == "int8" and info["seed"] == 3
    assert unpack(built("conv_stack", "int8")).metadata is None


def test_duplicate_names_repeat_but_compute_the_same():
    plain = built("resnet", "int8")
    dup = built("resnet", "int8", duplicate_names=True)
    names = [t.name.decode() for t in unpack(dup).subgraphs[0].tensors]
    assert len(set(names)) < len(names)
    assert names.count("conv2d") > 1 and names.count("add") > 1
    x = sample_inputs(plain, 1)
    for a, b in zip(run_whole(plain, x), run_whole(dup, x), strict=True):
        np.testing.assert_array_equal(a, b)


def test_buffer_zero_is_empty_and_constants_are_aligned():
    model = built("vgg", "float32")
    assert unpack(model).buffers[0].data is None
    root = fb.Model.GetRootAs(model, 0)
    starts = []
    for i in range(1, root.BuffersLength()):
        tab = root.Buffers(i)._tab  # the generated reader has no public vector-offset accessor
        field = tab.Offset(4)  # Buffer.data
        if field:
            starts.append(tab.Vector(field))
    assert starts and all(s % 16 == 0 for s in starts)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda g, x: g.conv2d(x, 8, padding="FULL"), "padding"),
        (lambda g, x: g.conv2d(x, 8, kernel=9, padding="VALID"), "too small"),
        (lambda g, x: g.conv2d(x, 0), "filters"),
        (lambda g, x: g.conv2d(x, 8, activation="TANH"), "activation"),
        (lambda g, x: g.depthwise_conv2d(x, multiplier=0), "multiplier"),
        (lambda g, x: g.conv2d(x, 8, name="input"), "already used"),
        (lambda g, x: g.conv2d(g.conv2d(x, 8, name="a"), 8, name="a/weights"), "already used"),
        (lambda g, x: g.conv2d(g.conv2d(x, 8, name="b/bias"), 8, name="b"), "already used"),
        (lambda g, x: g.add(x, g.conv2d(x, 4)), "broadcast"),
        (lambda g, x: g.concatenation([x, g.max_pool(x)]), "does not match"),
        (lambda g, x: g.reshape(x, (1, 5, -1)), "cannot reshape"),
        (lambda g, x: g.reshape(x, (-1, 8)), "batch"),
        (lambda g, x: g.pad(x, ((1, -1), (0, 0))), "paddings"),
        (lambda g, x: g.leaky_relu(x, alpha=2.0), "alpha"),
        (lambda g, x: g.conv2d(GraphBuilder().input((1, 8, 8, 3)), 4), "this GraphBuilder"),
        (lambda g, x: g.mean(g.reshape(x, (1, -1))), "rank 4"),
    ],
)
def test_invalid_ops_raise_value_error(make, match):
    g = GraphBuilder()
    with pytest.raises(ValueError, match=match):
        make(g, g.input((1, 8, 8, 3)))


def test_invalid_builds_raise_value_error():
    g = GraphBuilder()
    x = g.input((1, 8, 8, 3))
    with pytest.raises(ValueError, match="no output"):
        g.build()
    g.output(g.conv2d(x, 4))
    for kwargs, match in [({"dtype": "int4"}, "dtype"), ({"io": "uint8"}, "io"),
                          ({"seed": -1}, "seed"),
                          ({"calibration_samples": 0}, "calibration_samples")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            g.build(**kwargs)
    with pytest.raises(ValueError, match="multiple of 32"):
        yolo_like(input_size=100)
    with pytest.raises(ValueError, match="depth"):
        resnet_like(input_size=64, depth=7)
    with pytest.raises(ValueError, match="no earlier layer output"):
        conv_stack_graph(32, layers=[StackLayer("conv"), StackLayer("add", skip=5)])


def test_graph_output_must_be_computed():
    g = GraphBuilder()
    g.output(g.input((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="is a graph input"):
        g.build()


def test_mobilenet_v2_224_shapes_without_building():
    g = mobilenet_v2_like_graph(224)
    shapes = {g.ir.tensor_names[op.output]: g.ir.tensor_shapes[op.output] for op in g.ir.ops}
    assert shapes["stem/conv"] == (1, 112, 112, 32)
    assert shapes["block16/project"] == (1, 7, 7, 320)
    assert shapes["head/conv"] == (1, 7, 7, 1280)
    assert mobilenet_v2_like is RECIPES["mobilenet_v2"]


def test_models_over_the_flatbuffer_limit_are_refused(monkeypatch):
    import planner.modelbuild.emit as emit

    monkeypatch.setattr(emit, "_MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="2 GiB"):
        conv_stack_graph(32).build()


def test_batch_dimension_is_carried_through():
    g = GraphBuilder("batch2")
    x = g.conv2d(g.input((2, 12, 12, 3)), 8, 3, 2, activation="RELU")
    g.output(g.softmax(g.fully_connected(g.reshape(x, (2, -1)), 5)), g.mean(x))
    for dtype in ("float32", "int8"):
        model = g.build(dtype)
        assert [y.shape for y in run_whole(model, sample_inputs(model))] == [(2, 5), (2, 8)]
