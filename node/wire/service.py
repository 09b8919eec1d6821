"""Service socket protocol (ROUTER on data_port+1) and its client.

Request: frames [JSON header, payload...] from a DEALER; the header is
`{"v": 1, "op": "have"|"put"|"probe"|"ping", "seq": n, ...}`. Reply: [JSON header] with
`{"seq", "ok", "error"?, "code"?, ...}`. Ops:
- have  {"parts": [sha...]}                       -> {"have": [...], "missing": [...]}
- put   {"sha256", "size", "offset", "last"} + 1 chunk frame -> {"next": offset}
        (offset 0 restarts; an out_of_order error carries "expected" to resume from)
- probe {"echo": bool} + 1 payload frame           -> {"received": n} (+ payload if echo)
- ping  {}                                          -> {"time": t}
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import zmq

from node.errors import WireError
from node.wire.codes import Code
from node.wire.results import ProbeResult

SERVICE_VERSION = 1
CHUNK_BYTES = 1 << 20
OPS = ("have", "put", "probe", "ping")


def parse_request(frames: list[Any]) -> tuple[dict[str, Any], list[Any]]:
    """Validate a service request (frames after the ROUTER identity)."""
    if not frames:
        raise WireError("empty service request", code=Code.BAD_FRAME)
    raw = frames[0].bytes if hasattr(frames[0], "bytes") else bytes(frames[0])
    if len(raw) > 64 * 1024:
        raise WireError("service header too large", code=Code.OVERSIZED)
    try:
        h = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise WireError("service header is not JSON", code=Code.BAD_HEADER) from None
    if not isinstance(h, dict):
        raise WireError("service header is not an object", code=Code.BAD_HEADER)
    if h.get("v") != SERVICE_VERSION:
        raise WireError(f"unknown service version {h.get('v')!r}", code=Code.BAD_VERSION)
    if h.get("op") not in OPS:
        raise WireError(f"unknown service op {h.get('op')!r}", code=Code.BAD_HEADER)
    return h, list(frames[1:])


def reply_frames(req: dict[str, Any] | None, ok: bool, **fields: Any) -> list[bytes]:
    """A reply header (plus nothing else) echoing the request's seq."""
    seq = req.get("seq") if isinstance(req, dict) else None
    if type(seq) is not int:  # echo only what a client sends (a nested value could not be)
        seq = None
    return [json.dumps({"v": SERVICE_VERSION, "seq": seq, "ok": ok, **fields}).encode()]


class ServiceClient:
    """Blocking client of one node's service endpoint (uploads, probes, pings)."""

    def __init__(self, endpoint: str, ctx: zmq.Context | None = None,
                 timeout_s: float = 30.0) -> None:
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self._sock = (ctx or zmq.Context.instance()).socket(zmq.DEALER)
        self._sock.linger = 0
        self._sock.connect(endpoint)
        self._seq = 0

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, op: str, payload: list[Any] | None = None, **fields: Any
                ) -> tuple[dict[str, Any], list[zmq.Frame]]:
        """Send one request, wait for its reply; WireError on time-out or error reply."""
        self._seq += 1
        head = json.dumps({"v": SERVICE_VERSION, "op": op, "seq": self._seq, **fields}).encode()
        self._sock.send_multipart([head, *(payload or [])], copy=False)
        deadline = time.monotonic() + self.timeout_ms / 1000
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0 or not self._sock.poll(left):
                raise WireError(f"no reply from {self.endpoint} to {op} within "
                                f"{self.timeout_ms / 1000:.0f} s", code=Code.TIMEOUT)
            frames = self._sock.recv_multipart(copy=False)
            rep = json.loads(frames[0].bytes)
            if rep.get("seq") == self._seq:
                break  # replies to timed-out earlier requests are skipped
        if not rep.get("ok"):
            err = WireError(f"{self.endpoint} {op}: {rep.get('error')}",
                            code=rep.get("code") or Code.ERROR)
            err.reply = json.dumps(rep)
            raise err
        return rep, frames[1:]

    def ping(self) -> float:
        """Round-trip seconds."""
        t = time.perf_counter()
        self.request("ping")
        return time.perf_counter() - t

    def missing(self, shas: list[str]) -> list[str]:
        """Which of these parts the node does not have."""
        return list(self.request("have", parts=list(shas))[0]["missing"])

    def upload(self, data: bytes, sha: str | None = None, chunk: int = CHUNK_BYTES,
               skip_if_present: bool = True,
               on_chunk: Callable[[int], None] | None = None) -> str:
        """Upload one part in acknowledged chunks; returns its sha256.

        `on_chunk(n)` hears the bytes each acknowledged chunk adds (negative when the
        upload starts over). A node that lost the partial upload (it restarted) answers
        out_of_order: the upload starts over from 0, once; a second loss is an error.
        """
        sha = sha or hashlib.sha256(data).hexdigest()
        if skip_if_present and not self.missing([sha]):
            return sha
        view = memoryview(data)
        offset, size, restarted = 0, len(data), False
        while True:
            end = min(offset + chunk, size)
            try:
                rep, _ = self.request("put", [view[offset:end]], sha256=sha, size=size,
                                      offset=offset, last=end >= size)
            except WireError as exc:
                if exc.code == Code.OUT_OF_ORDER and offset != 0 and not restarted:
                    if on_chunk:
                        on_chunk(-offset)
                    offset, restarted = 0, True
                    continue
                raise
            if on_chunk:
                on_chunk(end - offset)
            offset = rep["next"]
            if end >= size:
                return sha

    def probe(self, nbytes: int = 1_000_000, repetitions: int = 3) -> ProbeResult:
        """Median round-trip of an empty ping and of an nbytes upload; bandwidth in bit/s."""
        payload = bytes(nbytes)
        rtts, times = [], []
        for _ in range(repetitions):
            rtts.append(self.ping())
            t = time.perf_counter()
            self.request("probe", [payload], echo=False)
            times.append(time.perf_counter() - t)
        rtt = sorted(rtts)[len(rtts) // 2]
        t = sorted(times)[len(times) // 2]
        return ProbeResult(rtt, t, nbytes, 8 * nbytes / max(t - rtt, 1e-9), self.endpoint)
