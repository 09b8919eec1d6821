"""ZeroMQ data-plane messages: one JSON header frame, then one raw frame per tensor.

The header is versioned and strict; tensors travel as raw bytes (`copy=False` on send,
`np.frombuffer` on receive) so a 10 MB activation is never pickled or re-encoded.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from node.errors import WireError
from node.wire.codes import Code
from node.wire.regions import Region

WIRE_VERSION = 1
KINDS = ("data", "result", "error")
CLIENT = "client"  # a route destination meaning "the header's reply endpoint"
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32",
          "uint32", "int64", "bool")

_dump = json.JSONEncoder(separators=(",", ":")).encode
_esc = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]  # json's own C escaper
_DECODER = json.JSONDecoder()
# a reply endpoint peers may connect to: printable ASCII (a lone surrogate or a space
# would raise in zmq's connect, in the thread answering, not here)
_ENDPOINT = re.compile(r"(?:tcp|ipc|inproc)://[!-~]{1,255}")

# parsed once: np.dtype("float32") costs more than the rest of a small tensor's checks
_NP_DTYPES = {d: np.dtype(d) for d in DTYPES}



@dataclass(frozen=True)
class TensorMeta:
    """One tensor frame: its name, dtype, shape, and where it sits in the full tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    full_shape: tuple[int, ...]
    region: Region | None = None  # None: the frame is the whole tensor

    @property
    def nbytes(self) -> int:
        dt = _NP_DTYPES.get(self.dtype)
        return math.prod(self.shape) * (dt or np.dtype(self.dtype)).itemsize


@dataclass(frozen=True)
class Header:
    """Frame 0 of every data-plane message."""

    kind: str
    deployment: str
    epoch: int
    request: str
    stage: str
    reply: str = ""  # the client's result endpoint; results and errors go there
    tensors: tuple[TensorMeta, ...] = ()
    src: str = ""  # "node/stage" that sent it, for diagnostics
    error: dict[str, str] | None = None  # {"code", "message"} when kind == "error"
    t0: float = 0.0  # client send time, carried end to end for latency figures
    v: int = WIRE_VERSION
    extra: dict[str, Any] = field(default_factory=dict)


def meta_for(name: str, arr: np.ndarray, full_shape: tuple[int, ...] | None = None,
             region: Region | None = None) -> TensorMeta:
    """TensorMeta describing `arr` (a whole tensor unless region is given)."""
    shape = tuple(int(d) for d in arr.shape)
    return TensorMeta(name, arr.dtype.name, shape, tuple(full_shape or shape), region)


def _num(v: float) -> str:
    # float.__repr__ is what json.dumps writes for a finite float, at a fraction of its cost
    return float.__repr__(v) if type(v) is float and math.isfinite(v) else json.dumps(v)


class HeaderTemplate:
    """A header pre-encoded but for its request, reply and t0, which vary per message.

    A stage sends the same kind, deployment, epoch, stage, src and tensor metadata on
    every message of a route; encoding that once at deploy time saves most of the JSON
    cost per message. `render` gives the bytes `encode` would give for the full header.
    """

    def __init__(self, header: Header) -> None:
        dump = _dump
        tail: dict[str, Any] = {"tensors": [
            {"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
             "full_shape": list(t.full_shape),
             "region": list(t.region) if t.region is not None else None}
            for t in header.tensors]}
        if header.error is not None:
            tail["error"] = header.error
        if header.extra:
            tail["extra"] = header.extra
        # key order as in the v1 header: v, kind, deployment, epoch, request, stage, reply,
        # src, t0, tensors[, error][, extra]
        self._p0 = (f'{{"v":{dump(header.v)},"kind":{dump(header.kind)},'
                    f'"deployment":{dump(header.deployment)},"epoch":{dump(header.epoch)},'
                    '"request":')
        self._p1 = f',"stage":{dump(header.stage)},"reply":'
        self._p2 = f',"src":{dump(header.src)},"t0":'
        self._p3 = "," + dump(tail)[1:]

    def render(self, request: str, reply: str, t0: float) -> bytes:
        req = _esc(request) if type(request) is str else _dump(request)
        rep = _esc(reply) if type(reply) is str else _dump(reply)
        return "".join((self._p0, req, self._p1, rep, self._p2, _num(t0), self._p3)).encode()


def payload(arrays: list[np.ndarray]) -> list[Any]:
    """Tensor frames for `send_multipart(copy=False)`.

    An array that is a whole received frame (a forward stage passing a tensor on) goes
    out as that zmq.Frame: libzmq then shares the message by reference count, where a
    numpy buffer would need a new Frame and pyzmq's garbage-collector thread to free it.
    """
    out: list[Any] = []
    for a in arrays:
        base = a.base
        while isinstance(base, np.ndarray):
            base = base.base
        if isinstance(base, memoryview) and isinstance(base.obj, zmq.Frame) \
                and a.nbytes == base.nbytes and a.flags.c_contiguous:
            out.append(base.obj)  # same bytes: a contiguous view as large as its frame
        else:
            out.append(a if a.flags.c_contiguous else np.ascontiguousarray(a))
    return out


def encode(header: Header, arrays: list[np.ndarray]) -> list[Any]:
    """Header + tensors -> multipart frames for `send_multipart(frames, copy=False)`."""
    if len(arrays) != len(header.tensors):
        raise WireError(f"header lists {len(header.tensors)} tensors, got {len(arrays)} arrays")
    head = HeaderTemplate(header).render(header.request, header.reply, header.t0)
    return [head, *payload(arrays)]


def is_endpoint(v: Any) -> bool:
    """Whether `v` is a ZeroMQ endpoint string a reply may be sent to."""
    return type(v) is str and _ENDPOINT.fullmatch(v) is not None


def _fail(msg: str, code: str, ctx: dict[str, Any]) -> WireError:
    """A WireError carrying the reply context; `ctx` is the raw header (or {})."""
    request, dep = (v if isinstance(v := ctx.get(k), str) else None
                    for k in ("request", "deployment"))
    reply = ctx.get("reply")
    return WireError(msg, code=code, reply=reply if is_endpoint(reply) else None,
                     request=request, deployment=dep)


def _int(v: Any, what: str, ctx: dict[str, Any], lo: int = 0) -> int:
    if type(v) is not int or v < lo:
        raise _fail(f"{what} must be an integer >= {lo}, got {v!r}", Code.BAD_HEADER, ctx)
    return v


def _dims(v: list[Any], what: str, ctx: dict[str, Any]) -> tuple[int, ...]:
    for d in v:  # a plain loop: this runs for every tensor of every message
        if type(d) is not int or d < 0:
            raise _fail(f"{what} must be an integer >= 0, got {d!r}", Code.BAD_HEADER, ctx)
    return tuple(v)


def _str(h: dict[str, Any], key: str, ctx: dict[str, Any], default: str | None = None) -> str:
    v = h.get(key, default)
    if not isinstance(v, str):
        raise _fail(f"header field {key!r} must be a string, got {v!r}", Code.BAD_HEADER, ctx)
    return v


def _region(v: Any, shape: tuple[int, ...], full: tuple[int, ...], what: str,
            ctx: dict[str, Any]) -> Region | None:
    if v is None:
        if shape != full:
            raise _fail(f"{what}: shape {list(shape)} != full_shape {list(full)} "
                        "without a region", Code.BAD_SHAPE, ctx)
        return None
    if not isinstance(v, list) or len(v) != 4 or len(full) != 4:
        raise _fail(f"{what}: region must be [y0,y1,x0,x1] on a 4-d tensor", Code.BAD_SHAPE, ctx)
    y0, y1, x0, x1 = _dims(v, f"{what} region", ctx)
    if not (y0 < y1 <= full[1] and x0 < x1 <= full[2]):
        raise _fail(f"{what}: region {v} outside full_shape {list(full)}", Code.BAD_SHAPE, ctx)
    want = (full[0], y1 - y0, x1 - x0, full[3])
    if shape != want:
        raise _fail(f"{what}: shape {list(shape)} does not match region {v} "
                    f"(want {list(want)})", Code.BAD_SHAPE, ctx)
    return (y0, y1, x0, x1)


def _tensor(t: Any, i: int, ctx: dict[str, Any]) -> TensorMeta:
    if not isinstance(t, dict):
        raise _fail(f"tensor {i}: not an object", Code.BAD_HEADER, ctx)
    name = _str(t, "name", ctx)
    dtype = t.get("dtype")
    if type(dtype) is not str or dtype not in _NP_DTYPES:  # a list is not even hashable
        raise _fail(f"tensor {name!r}: unsupported dtype {dtype!r}", Code.BAD_DTYPE, ctx)
    dims = t.get("shape")
    full = t.get("full_shape", dims)
    if not isinstance(dims, list) or not isinstance(full, list) or len(dims) > 8:
        raise _fail(f"tensor {name!r}: shape must be a list", Code.BAD_SHAPE, ctx)
    shape = _dims(dims, f"tensor {name!r} shape", ctx)
    fshape = shape if full is dims else _dims(full, f"tensor {name!r} full_shape", ctx)
    region = _region(t.get("region"), shape, fshape, f"tensor {name!r}", ctx)
    return TensorMeta(name, dtype, shape, fshape, region)


def _parse(raw: bytes) -> Any:
    # json.loads(bytes) sniffs the encoding in Python first; a header starting with "{"
    # and no NUL after it is UTF-8 by the same rules, so decode it directly (same result)
    if raw[:1] == b"{" and raw[1:2] != b"\0":
        return _DECODER.decode(raw.decode("utf-8", "surrogatepass"))
    return json.loads(raw)


def decode_header(raw: bytes | memoryview) -> Header:
    """Parse and validate frame 0; raises WireError (with reply context when known)."""
    ctx: dict[str, Any] = {}
    if len(raw) > MAX_HEADER_BYTES:
        raise _fail(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}", Code.OVERSIZED, ctx)
    try:
        h = _parse(bytes(raw))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # 60,000 "[": recursion
        raise _fail(f"header is not JSON: {str(exc)[:200]}", Code.BAD_HEADER, ctx) from None
    if not isinstance(h, dict):
        raise _fail("header is not a JSON object", Code.BAD_HEADER, ctx)
    ctx = h  # errors from here on can be answered: _fail reads reply etc. from it
    if h.get("v") != WIRE_VERSION:
        raise _fail(f"unknown wire version {h.get('v')!r} (this node speaks {WIRE_VERSION})",
                    Code.BAD_VERSION, ctx)
    kind = h.get("kind")
    if kind not in KINDS:
        raise _fail(f"unknown message kind {kind!r}", Code.BAD_HEADER, ctx)
    tensors = h.get("tensors", [])
    if not isinstance(tensors, list):
        raise _fail("header field 'tensors' must be a list", Code.BAD_HEADER, ctx)
    err = h.get("error")
    if err is not None and not (isinstance(err, dict) and all(
            isinstance(v, str) for v in err.values())):
        raise _fail("header field 'error' must map strings to strings", Code.BAD_HEADER, ctx)
    t0 = h.get("t0", 0.0)
    if type(t0) not in (int, float) or not -1e300 < t0 < 1e300:  # float(10**400) raises
        raise _fail("header field 't0' must be a number", Code.BAD_HEADER, ctx)
    reply = _str(h, "reply", ctx, "")
    if reply and not is_endpoint(reply):
        raise _fail(f"header field 'reply' is not an endpoint: {ascii(reply)[:80]}",
                    Code.BAD_HEADER, ctx)
    extra = h.get("extra", {})
    return Header(kind=kind, deployment=_str(h, "deployment", ctx, ""),
                  epoch=_int(h.get("epoch", 0), "epoch", ctx),
                  request=_str(h, "request", ctx, ""), stage=_str(h, "stage", ctx, ""),
                  reply=reply, src=_str(h, "src", ctx, ""),
                  tensors=tuple([_tensor(t, i, ctx) for i, t in enumerate(tensors)]),
                  error=err, t0=float(t0), extra=extra if isinstance(extra, dict) else {})


def decode(frames: list[Any], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
           ) -> tuple[Header, list[np.ndarray]]:
    """Frames (zmq.Frame or bytes) -> header and read-only arrays viewing the frames.

    Any malformed input raises WireError only: this runs in the data plane's I/O thread,
    which must survive whatever arrives on the port.
    """
    try:
        return _decode(frames, max_bytes)
    except WireError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError, UnicodeError,
            MemoryError) as exc:  # a check missed above: still one clear error, no crash
        raise WireError(f"malformed message: {type(exc).__name__}: {str(exc)[:200]}",
                        code=Code.BAD_HEADER) from None


def _decode(frames: list[Any], max_bytes: int) -> tuple[Header, list[np.ndarray]]:
    if not frames:
        raise WireError("empty message", code=Code.BAD_FRAME)
    bufs = [f.buffer if type(f) is zmq.Frame else memoryview(f) for f in frames]
    header = decode_header(bufs[0])
    total = 0
    for b in bufs:
        total += b.nbytes
    if total > max_bytes or len(bufs) - 1 != len(header.tensors):
        ctx = {"reply": header.reply, "request": header.request,
               "deployment": header.deployment}
        if total > max_bytes:
            raise _fail(f"message of {total} bytes exceeds the limit of {max_bytes}",
                        Code.OVERSIZED, ctx)
        raise _fail(f"header lists {len(header.tensors)} tensors but {len(bufs) - 1} "
                    "tensor frames arrived", Code.BAD_FRAME, ctx)
    arrays = []
    for i, meta in enumerate(header.tensors):
        buf = bufs[i + 1]
        dt = _NP_DTYPES[meta.dtype]
        if buf.nbytes != math.prod(meta.shape) * dt.itemsize:  # == meta.nbytes, inlined
            raise _fail(f"tensor {meta.name!r}: {buf.nbytes} bytes, expected {meta.nbytes} "
                        f"for {meta.dtype}{list(meta.shape)}", Code.SIZE_MISMATCH,
                        {"reply": header.reply, "request": header.request,
                         "deployment": header.deployment})
        arrays.append(np.frombuffer(buf, dtype=dt).reshape(meta.shape))
    return header, arrays


def error_header(code: str, message: str, *, deployment: str = "", epoch: int = 0,
                 request: str = "", reply: str = "", src: str = "", t0: float = 0.0) -> Header:
    """Header of an error reply sent to a client's reply endpoint."""
    return Header(kind="error", deployment=deployment, epoch=epoch, request=request,
                  stage=CLIENT, reply=reply, src=src, t0=t0,
                  error={"code": code, "message": message})
