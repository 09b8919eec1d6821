"""JSON codec of the frozen message types: encode, and decode with type validation."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, fields, is_dataclass
from typing import Any

from node.errors import WireError
from node.wire.codes import Code

MSG_VERSION = 1
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise WireError(msg, code=Code.BAD_COMMAND)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def to_dict(msg: Any) -> dict[str, Any]:
    """A message as a JSON-ready dict with its type tag and version."""
    return {"type": msg.TYPE, "v": MSG_VERSION, **_jsonable(asdict(msg))}


def encode(msg: Any) -> bytes:
    """Any message -> JSON bytes."""
    return json.dumps(to_dict(msg), separators=(",", ":")).encode()


def _convert(tp: Any, v: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return v
    if origin in (typing.Union, types.UnionType):
        for alt in typing.get_args(tp):
            try:
                return _convert(alt, v, where)
            except WireError:
                continue
        raise WireError(f"{where}: {v!r} is not a valid {tp}", code=Code.BAD_COMMAND)
    if tp is type(None):
        _check(v is None, f"{where}: expected null")
        return None
    if is_dataclass(tp):
        _check(isinstance(v, dict), f"{where}: expected an object")
        return build(tp, v, where)
    if origin is tuple:
        args = typing.get_args(tp)
        _check(isinstance(v, list), f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], x, f"{where}[{i}]") for i, x in enumerate(v))
        _check(len(v) == len(args), f"{where}: expected {len(args)} items")
        return tuple(
            _convert(a, x, f"{where}[{i}]") for i, (a, x) in enumerate(zip(args, v, strict=True))
        )
    if origin is dict:
        _check(isinstance(v, dict), f"{where}: expected an object")
        args = typing.get_args(tp)
        if not args or args[1] is Any:
            return dict(v)
        return {k: _convert(args[1], x, f"{where}[{k!r}]") for k, x in v.items()}
    if tp is float:
        _check(type(v) in (int, float), f"{where}: expected a number")
        return float(v)
    if tp is int:
        _check(type(v) is int, f"{where}: expected an integer")
        return v
    _check(type(v) is tp, f"{where}: expected {tp.__name__}, got {type(v).__name__}")
    return v


def build(cls: type, d: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name in d:
            kwargs[f.name] = _convert(hints[f.name], d[f.name], f"{where}.{f.name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a missing required field
        raise WireError(f"{where}: {exc}", code=Code.BAD_COMMAND) from None


def load(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}",
                        code=Code.OVERSIZED)
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError, TypeError) as exc:
        # RecursionError: 100,000 "[" nest deeper than the parser's stack allows
        raise WireError(f"payload is not JSON: {str(exc)[:200]}", code=Code.BAD_COMMAND
                        ) from None
    if not isinstance(d, dict):
        raise WireError("payload is not a JSON object", code=Code.BAD_COMMAND)
    return d
