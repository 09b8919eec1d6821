"""Property tests of the agent's edge decoders: the data-plane frame decoder, the service
request parser and the MQTT command decoder take random bytes, truncated and deeply nested
JSON, oversized input and headers with hostile field values, and raise nothing but
WireError; what they do return (or name as a reply address) is safe to use. The board
file loader takes random TOML and raises nothing but ConfigError.

The default run tries a few hundred inputs per decoder; `-m slow` runs 10,000 each.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import config
from node.errors import WireError
from node.wire import frames as F
from node.wire import messages as M
from node.wire.service import parse_request

# any code point, lone surrogates included (json.dumps writes them as \udXXX escapes)
_text = st.text(st.characters(blacklist_categories=()), max_size=12)
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | _text,
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(_text, c, max_size=4),
                     max_leaves=16)


def _dump(v: Any) -> bytes:
    return json.dumps(v).encode()


def _nested(prefix: bytes) -> st.SearchStrategy[bytes]:
    """`prefix` then 1..120,000 levels of list or object nesting, unclosed or closed."""
    return st.tuples(st.integers(1, 120_000), st.sampled_from([b"[", b'{"a":']),
                     st.booleans()).map(
        lambda t: prefix + t[1] * t[0] + ((b"]" if t[1] == b"[" else b"}") * t[0]
                                          if t[2] else b""))


def _truncated(doc: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(0, len(doc)).map(lambda n: doc[:n])


_GOOD = F.encode(F.Header("data", "d", 0, "r", "s", "tcp://127.0.0.1:5000",
                          (F.meta_for("x", np.zeros((1, 4, 4, 2), np.float32)),), t0=1.0),
                 [np.zeros((1, 4, 4, 2), np.float32)])
_GOOD_HEAD = bytes(_GOOD[0])
_FIELDS = ["v", "kind", "deployment", "epoch", "request", "stage", "reply", "src",
           "tensors", "error", "t0", "extra"]
_TENSOR = st.fixed_dictionaries({}, optional={k: _json for k in (
    "name", "dtype", "shape", "full_shape", "region")}) | _json

_HEADERS = st.one_of(
    st.binary(max_size=400),
    _truncated(_GOOD_HEAD),
    _nested(b""), _nested(b'{"v":1,"kind":"data","tensors":'),
    st.just(b"{" + b" " * (F.MAX_HEADER_BYTES + 1) + b"}"),  # oversized
    st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=6).map(
        lambda h: _dump({"v": 1, "kind": "data", **h})),
    st.lists(_TENSOR, max_size=3).map(
        lambda ts: _dump({"v": 1, "kind": "data", "reply": "tcp://127.0.0.1:1", "tensors": ts})),
    _text.map(lambda r: _dump({"v": 2, "kind": "data", "reply": r})),
)
FRAMES = st.tuples(_HEADERS, st.lists(st.binary(max_size=64), max_size=3)).map(
    lambda t: [t[0], *t[1]]) | st.just([]) | st.just(_GOOD[:1])

_COMMAND_FIELDS = {"id": _json, "reply_to": _json | _text, "deployment": _json,
                   "epoch": _json, "stages": _json, "parts": _json, "endpoint": _json,
                   "nbytes": _json, "repetitions": _json, "epochs": _json}
COMMANDS = st.one_of(
    st.binary(max_size=400),
    _nested(b""), _nested(b'{"type":"deploy","v":1,"stages":'),
    _truncated(M.encode(M.Ping("p", "tilefleet/x/replies"))),
    st.just(b'"' + b"x" * (4 << 20) + b'"'),  # oversized
    st.fixed_dictionaries({"type": st.sampled_from(sorted(M.COMMANDS) + ["nope"]),
                           "v": st.sampled_from([1, 1, 2, "1"])},
                          optional=_COMMAND_FIELDS).map(_dump),
)
SERVICE = st.tuples(st.one_of(
    st.binary(max_size=200), _nested(b""), _nested(b'{"v":1,"op":"ping","seq":'),
    st.dictionaries(st.sampled_from(["v", "op", "seq", "parts", "sha256", "size", "offset",
                                     "last", "echo"]), _json, max_size=6).map(_dump),
), st.lists(st.binary(max_size=16), max_size=2)).map(lambda t: [t[0], *t[1]])


def _frames(frames: list[bytes]) -> None:
    try:
        header, arrays = F.decode(frames, max_bytes=1 << 20)
    except WireError as exc:
        assert exc.reply is None or F.is_endpoint(exc.reply)  # safe to connect to
        return
    assert header.reply == "" or F.is_endpoint(header.reply)
    for meta, a in zip(header.tensors, arrays, strict=True):
        assert a.nbytes == meta.nbytes and a.shape == meta.shape


def _command(payload: bytes) -> None:
    try:
        cmd = M.decode_command(payload)
    except WireError as exc:
        assert exc.reply is None or M.is_publish_topic(exc.reply)
        return
    assert cmd.reply_to == "" or M.is_publish_topic(cmd.reply_to)


def _service(frames: list[bytes]) -> None:
    try:
        parse_request(frames)
    except WireError:
        pass


_QUICK = settings(max_examples=300, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_LONG = settings(_QUICK, max_examples=10_000)

test_frame_decoder_raises_only_wire_errors = _QUICK(given(FRAMES)(_frames))
test_command_decoder_raises_only_wire_errors = _QUICK(given(COMMANDS)(_command))
test_service_parser_raises_only_wire_errors = _QUICK(given(SERVICE)(_service))
test_frame_decoder_long = pytest.mark.slow(_LONG(given(FRAMES)(_frames)))
test_command_decoder_long = pytest.mark.slow(_LONG(given(COMMANDS)(_command)))
test_service_parser_long = pytest.mark.slow(_LONG(given(SERVICE)(_service)))


# ---- board files ----------------------------------------------------------------------

_KEYS = sorted({f.name for c in (config.BoardFacts, config.AgentSettings)
                for f in fields(c)}) + ["nope"]
_TOML_VALUE = st.one_of(
    st.integers(-(2 ** 63), 2 ** 63 - 1).map(str), st.floats().map(
        lambda f: "nan" if f != f else ("inf" if f == float("inf") else
                                        "-inf" if f == float("-inf") else repr(f))),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8).map(json.dumps),
    st.lists(st.sampled_from(['"xnnpack"', '"gpu"', "1", '"x"']), max_size=3).map(
        lambda xs: "[" + ", ".join(xs) + "]"))
_TABLE = st.dictionaries(st.sampled_from(_KEYS), _TOML_VALUE, max_size=5)


def _render(board: dict[str, str], agent: dict[str, str] | None, board_value: str | None
            ) -> str:
    lines = [f"board = {board_value}"] if board_value else [
        "[board]", *(f"{k} = {v}" for k, v in {"name": '"b"', **board}.items())]
    if agent is not None:
        lines += ["[agent]", *(f"{k} = {v}" for k, v in agent.items())]
    return "\n".join(lines) + "\n"


BOARD_FILES = st.one_of(
    st.text(max_size=200),
    st.builds(_render, _TABLE, st.none() | _TABLE,
              st.none() | st.sampled_from(["5", '"b"', "[1]", "{}"])),
)


def _board_file(text: str, path: Path) -> None:
    path.write_text(text, errors="surrogatepass")
    try:
        cfg = config.load(path)
    except config.ConfigError as exc:
        assert "\n" not in str(exc).strip() or "TOML" in str(exc)  # one line (TOML's own)
        return
    assert cfg.board.cores >= 1 and cfg.board.speed_prior > 0 and cfg.agent.threads >= 1


def _board_prop(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        _board_file(text, Path(d) / "b.toml")


test_board_file_loader_raises_only_config_errors = _QUICK(given(BOARD_FILES)(_board_prop))
test_board_file_loader_long = pytest.mark.slow(_LONG(given(BOARD_FILES)(_board_prop)))


@pytest.mark.parametrize("payload", [b"[" * 60_000, b"[" * 100_000, b'{"a":' * 60_000])
def test_deep_nesting_is_a_wire_error_not_a_recursion_error(payload: bytes) -> None:
    with pytest.raises(WireError):
        F.decode([payload])
    with pytest.raises(WireError):
        M.decode_command(payload)
    with pytest.raises(WireError):
        parse_request([payload])
