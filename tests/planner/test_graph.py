"""The model reader: costs, live tensors at cuts, names, and errors on bad files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from planner.errors import ModelError
from planner.model.graph import ModelGraph
from planner.modelbuild import GraphBuilder, recipes


def _residual_model(dtype: str = "float32", **build) -> bytes:
    g = GraphBuilder()
    x = g.input((1, 16, 16, 8))
    a = g.conv2d(x, 8, kernel=3, activation="RELU", name="a")
    b = g.conv2d(a, 8, kernel=3, name="b")
    c = g.add(a, b, name="sum")
    d = g.conv2d(c, 4, kernel=1, stride=2, name="d")
    g.output(d)
    return g.build(dtype=dtype, **build)


def test_ops_in_order_with_macs_and_weights() -> None:
    graph = ModelGraph(_residual_model())
    assert [op.type for op in graph.ops] == ["CONV_2D", "CONV_2D", "ADD", "CONV_2D"]
    a, b, add, d = graph.ops
    assert a.macs == 16 * 16 * 8 * 3 * 3 * 8
    assert d.macs == 8 * 8 * 4 * 1 * 1 * 8
    assert add.macs == 16 * 16 * 8
    # float32 weights [8,3,3,8] + bias [8]
    assert a.weight_bytes == (8 * 3 * 3 * 8 + 8) * 4
    assert add.weight_bytes == 0


def test_live_tensors_cross_a_residual_cut() -> None:
    graph = ModelGraph(_residual_model())
    names = lambda i: [graph.tensors[t].name for t in graph.live_at(i)]  # noqa: E731
    assert names(0) == ["input"]
    assert names(1) == ["a"]
    # cut between the two convs of the residual block: the skip branch crosses too
    assert sorted(names(2)) == ["a", "b"]
    assert names(3) == ["sum"]
    assert names(4) == ["d"]
    assert graph.cut_bytes(2) == 2 * 16 * 16 * 8 * 4
    with pytest.raises(IndexError):
        graph.live_at(5)


def test_int8_tensors_carry_quantization() -> None:
    graph = ModelGraph(_residual_model("int8"))
    x = graph.tensor("input")
    assert x.dtype == "int8" and len(x.scale) == 1
    w = graph.tensors[graph.ops[0].inputs[1]]
    assert w.is_constant and len(w.scale) == 8 and w.quantized_dimension == 0
    assert graph.ops[0].weight_bytes == 8 * 3 * 3 * 8 + 8 * 4  # int8 weights + int32 bias


def test_fp16_weights_are_constant_derived_and_never_cross_cuts() -> None:
    graph = ModelGraph(_residual_model(fp16_weights=True))
    deq = [op for op in graph.ops if op.type == "DEQUANTIZE"]
    assert deq, "fp16 model should hold DEQUANTIZE ops"
    for op in deq:
        assert op.macs == 0 and op.weight_bytes == 0
        assert all(t in graph.const_derived for t in op.outputs)
    for i in range(len(graph.ops) + 1):
        assert not set(graph.live_at(i)) & graph.const_derived
    convs = [op for op in graph.ops if op.type == "CONV_2D"]
    assert convs[0].weight_bytes == (8 * 3 * 3 * 8 + 8) * 4


def test_duplicate_names_are_made_unique() -> None:
    graph = ModelGraph(_residual_model(duplicate_names=True))
    names = [t.name for t in graph.tensors]
    assert len(set(names)) == len(names)
    raw = [t.name for t in graph.model.subgraphs[0].tensors]
    assert len(set(raw)) < len(raw), "builder option should repeat a name"


def test_mobilenet_macs_match_the_published_figure() -> None:
    graph = ModelGraph(recipes.mobilenet_v2_like(input_size=224))
    total = sum(op.macs for op in graph.ops)
    # MobileNetV2 1.0/224 is quoted at ~300 M multiply-adds
    assert 290e6 < total < 320e6
    # every cut's bytes equal the sum of its tensors' sizes
    for i in (0, 5, 20, len(graph.ops)):
        assert graph.cut_bytes(i) == sum(graph.tensors[t].nbytes for t in graph.live_at(i))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not a TFLite model"),
        (b"\x00" * 4 + b"XXXX" + b"\x00" * 32, "file identifier"),
        (b"\x10\x00\x00\x00TFL3" + b"\xff" * 40, "damaged or truncated"),
    ],
)
def test_bad_files_raise_model_error(data: bytes, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        ModelGraph(data, "bad.tflite")


def test_truncated_model_raises_model_error() -> None:
    data = _residual_model()
    for cut in (9, 64, len(data) // 2):
        with pytest.raises(ModelError):
            ModelGraph(data[:cut], "short.tflite")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "planner.cli", *args], capture_output=True, text=True
    )


def test_inspect_json_follows_the_contract(tmp_path) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(_residual_model())
    res = _cli("inspect", str(path), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) == {"model", "ops", "cuts"}
    assert doc["model"]["inputs"] == [
        {"name": "input", "shape": [1, 16, 16, 8], "dtype": "float32"}
    ]
    assert [op["index"] for op in doc["ops"]] == [0, 1, 2, 3]
    assert {"index", "type", "inputs", "outputs", "macs", "weight_bytes"} <= set(doc["ops"][0])
    assert doc["cuts"][2]["at"] == 2 and sorted(doc["cuts"][2]["tensors"]) == ["a", "b"]
    assert doc["cuts"][2]["bytes"] == 2 * 16 * 16 * 8 * 4
    table = _cli("inspect", str(path))
    assert table.returncode == 0 and "CONV_2D" in table.stdout


def test_inspect_bad_file_is_one_line_exit_2(tmp_path) -> None:
    path = tmp_path / "junk.tflite"
    path.write_bytes(np.random.default_rng(0).bytes(200))
    res = _cli("inspect", str(path))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "junk.tflite" in res.stderr
    assert "Traceback" not in res.stderr
