"""Wire contract: frames, MQTT messages, topics; strict decoding and a fuzz test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import WireError
from node.wire import frames as F
from node.wire import messages as M
from node.wire.topics import Topics


def header(*metas: F.TensorMeta, **kw) -> F.Header:
    return F.Header(kind="data", deployment="d", epoch=3, request="r", stage="s",
                    reply="tcp://127.0.0.1:1", tensors=metas, **kw)


def test_frames_round_trip_without_copy() -> None:
    a = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    b = np.arange(10, dtype=np.int8)
    h = header(F.meta_for("a", a[:, 1:3], a.shape, (1, 3, 0, 6)), F.meta_for("b", b))
    frames = F.encode(h, [a[:, 1:3], b])
    assert frames[2] is b  # contiguous arrays go out as they are
    got, arrs = F.decode([bytes(f) for f in frames])
    assert got == h
    np.testing.assert_array_equal(arrs[0], a[:, 1:3])
    assert arrs[1].dtype == np.int8 and not arrs[1].flags.writeable


@pytest.mark.parametrize("mutate, code", [
    (lambda h: {**h, "v": 2}, "bad_version"),
    (lambda h: {**h, "kind": "weird"}, "bad_header"),
    (lambda h: {**h, "epoch": -1}, "bad_header"),
    (lambda h: {**h, "tensors": [{**h["tensors"][0], "dtype": "complex64"}]}, "bad_dtype"),
    (lambda h: {**h, "tensors": [{**h["tensors"][0], "shape": [1, 2, 2, "x"]}]}, "bad_header"),
    (lambda h: {**h, "tensors": [{**h["tensors"][0], "region": [0, 9, 0, 2]}]}, "bad_shape"),
    (lambda h: {**h, "tensors": [{**h["tensors"][0], "full_shape": [1, 4, 4, 1]}]},
     "bad_shape"),
    (lambda h: {**h, "tensors": []}, "bad_frame"),
])
def test_strict_header(mutate, code) -> None:
    a = np.zeros((1, 2, 2, 1), np.float32)
    frames = F.encode(header(F.meta_for("a", a)), [a])
    h = mutate(json.loads(frames[0]))
    with pytest.raises(WireError) as e:
        F.decode([json.dumps(h).encode(), a.tobytes()])
    assert e.value.code == code
    assert e.value.reply == "tcp://127.0.0.1:1"  # the error can still be answered


def test_size_frame_count_and_limit() -> None:
    a = np.zeros((1, 8, 8, 2), np.float32)
    frames = F.encode(header(F.meta_for("a", a)), [a])
    with pytest.raises(WireError, match="expected 512") as e:
        F.decode([frames[0], b"\0" * 511])
    assert e.value.code == "size_mismatch"
    with pytest.raises(WireError) as e:
        F.decode([frames[0], a, a])
    assert e.value.code == "bad_frame"
    with pytest.raises(WireError) as e:
        F.decode(frames, max_bytes=500)
    assert e.value.code == "oversized"
    with pytest.raises(WireError):
        F.decode([])


def test_messages_round_trip_and_validation() -> None:
    stage = M.StageSpec("t0", "a" * 64, (M.InputSpec("x", "int8", (1, 8, 8, 3), 2),),
                        (M.Route("y", "tcp://h:1", "s1", "y2", (0, 4, 0, 8)),
                         M.Route("y", "client")),
                        M.TileSpec((0, 6, 0, 8), (0, 4, 0, 8), (0, 4, 0, 8)), threads=1)
    cmd = M.Deploy("id", "reply/topic", "dep", 2, (stage,))
    assert M.decode_command(M.encode(cmd)) == cmd
    reply = M.Reply("id", False, "n", "boom", "code", {"missing": ["x"]})
    assert M.decode(M.encode(reply)) == reply
    for bad in [{"part": "XYZ"}, {"inputs": []}, {"id": ""},
                {"routes": [{"tensor": "y", "to": "nowhere"}]},
                {"inputs": [{"name": "x", "dtype": "f", "shape": [1]}]},
                {"tile": {"input_region": [3, 1, 0, 1], "output_region": [0, 1, 0, 1],
                          "crop": [0, 1, 0, 1]}}]:
        d = M.to_dict(cmd)
        d["stages"] = [{**d["stages"][0], **bad}]
        with pytest.raises(WireError) as e:
            M.decode_command(json.dumps(d).encode())
        assert e.value.reply == "reply/topic" and e.value.request == "id"
    with pytest.raises(WireError, match="unknown command"):
        M.decode_command(b'{"type": "reboot", "v": 1, "id": "x", "reply_to": "t"}')


def test_topics() -> None:
    t = Topics("lab")
    assert t.status("n1") == "tilefleet/lab/nodes/n1/status"
    assert t.parse("tilefleet/lab/nodes/n1/metrics") == ("n1", "metrics")
    assert t.parse("tilefleet/other/nodes/n1/metrics") is None
    assert t.all_nodes("status") == "tilefleet/lab/nodes/+/status"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=4))
def test_fuzz_frame_decoder(frames: list[bytes]) -> None:
    try:
        F.decode(frames, max_bytes=1 << 20)
    except WireError:
        pass


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=10),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                          max_size=4),
                     max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), _json.map(lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"type": st.sampled_from(sorted(M.COMMANDS)),
                                        "v": st.just(1), "id": st.text(max_size=5)},
                                       optional={"stages": _json, "parts": _json,
                                                 "epoch": _json, "deployment": _json,
                                                 "endpoint": _json, "nbytes": _json}
                                       ).map(lambda v: json.dumps(v).encode())))
def test_fuzz_command_parser(payload: bytes) -> None:
    try:
        M.decode_command(payload)
    except WireError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "kind", "tensors", "epoch", "reply", "error",
                                        "t0", "extra", "stage"]), _json, max_size=6))
def test_fuzz_header_fields(h: dict) -> None:
    try:
        F.decode([json.dumps({"v": 1, "kind": "data", **h}).encode()])
    except WireError:
        pass
