"""ZeroMQ side of the client: PUSH frames to the first stages, PULL results back.

The client binds one PULL socket and names it in every request header (`reply`), so
results and error replies of every stage come straight back. Sends happen on the
caller's thread under a lock (PUSH sockets are not thread-safe); one I/O thread reads
results and re-sends requests whose attempt expired or failed transiently.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from node.errors import WireError
from node.gather import cut
from node.wire.frames import Header, TensorMeta, decode, encode
from node.wire.messages import Route
from planner.fleet.requests import Request, Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """Where requests of one epoch enter: routes from the client to first stages."""

    deployment: str
    epoch: int
    routes: tuple[Route, ...]


def local_address_towards(endpoint: str) -> str:
    """The address of this machine on the interface that reaches `endpoint`'s host."""
    host = urllib.parse.urlsplit(endpoint).hostname or "127.0.0.1"
    if host.startswith("127.") or host == "localhost":
        return "127.0.0.1"
    try:  # a UDP "connect" picks the outgoing interface without sending a packet
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError:
        return "0.0.0.0"


class DataClient:
    """Requests in, results out; `submit` returns a Future of {output name: array}."""

    def __init__(self, entry: Callable[[], Entry], reply_host: str, tracker: Tracker,
                 hwm: int = 64, send_timeout_ms: int = 5000) -> None:
        self.entry, self.tracker = entry, tracker
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.linger = 0
        self.pull.rcvhwm = 0  # results are small and must never be dropped or stall nodes
        bind = "*" if reply_host == "0.0.0.0" else reply_host
        port = self.pull.bind_to_random_port(f"tcp://{bind}", 20000, 60000)
        host = reply_host if reply_host != "0.0.0.0" else socket.gethostname()
        self.reply = f"tcp://{host}:{port}"
        self.hwm, self.send_timeout_ms = hwm, send_timeout_ms
        self._push: dict[str, zmq.Socket] = {}
        self._lock = threading.RLock()  # guards sockets used for sending and the tracker
        self._ids = itertools.count()
        self._prefix = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fleet-results")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            self.tracker.fail_all("the deployment client was closed")
            for s in self._push.values():
                s.close(linger=0)
            self._push.clear()
        self.pull.close(linger=0)
        self.ctx.term()

    def submit(self, inputs: dict[str, np.ndarray]) -> Future[dict[str, np.ndarray]]:
        """Send one request (inputs already validated); the future holds its outputs."""
        rid = f"{self._prefix}-{next(self._ids)}"
        with self._lock:
            req = self.tracker.add(rid, inputs)
            self._send(req)
        return req.future

    def _sock(self, endpoint: str) -> zmq.Socket:
        s = self._push.get(endpoint)
        if s is None:
            s = self.ctx.socket(zmq.PUSH)
            s.sndhwm, s.sndtimeo, s.linger = self.hwm, self.send_timeout_ms, 0
            s.connect(endpoint)
            self._push[endpoint] = s
        return s

    def _send(self, req: Request) -> None:
        """One attempt: slice the inputs per entry route and push them (lock held)."""
        e = self.entry()
        t0 = time.time()
        self.tracker.sent(req, t0)
        groups: dict[tuple[str, str], tuple[list[TensorMeta], list[np.ndarray]]] = {}
        for r in e.routes:
            arr = req.inputs[r.tensor]
            piece = cut(arr, None, r.region)
            full = tuple(int(d) for d in arr.shape)
            metas, arrs = groups.setdefault((r.to, r.stage), ([], []))
            metas.append(TensorMeta(r.dest_name, arr.dtype.name,
                                    tuple(int(d) for d in piece.shape), full, r.region))
            arrs.append(piece)
        try:
            for (to, stage), (metas, arrs) in groups.items():
                h = Header("data", e.deployment, e.epoch, req.rid, stage, self.reply,
                           tuple(metas), src="client", t0=t0)
                self._sock(to).send_multipart(encode(h, arrs), copy=False)
        except zmq.ZMQError as exc:  # Again: the first stage is gone or saturated
            code = "send_timeout" if isinstance(exc, zmq.Again) else "send_failed"
            self.tracker.error(Header("error", e.deployment, e.epoch, req.rid, "", t0=t0,
                                      src="client", error={"code": code, "message": str(exc)}))

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        while not self._stop.is_set():
            if poller.poll(20):
                self._receive()
            with self._lock:
                for req in self.tracker.due():
                    self._send(req)

    def _receive(self) -> None:
        while True:
            try:
                frames = self.pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                h, arrays = decode(frames)
            except WireError as exc:
                log.warning("dropping a malformed result: %s", exc)
                continue
            with self._lock:
                if h.kind == "result":
                    self.tracker.result(h, arrays)
                elif h.kind == "error":
                    self.tracker.error(h)
                    for req in self.tracker.due():
                        self._send(req)  # transient errors retry after a short backoff

    def stats(self) -> dict[str, Any]:
        with self._lock:
            s = self.tracker.stats
            return {"sent": s.sent, "retries": s.retries, "delivered": s.delivered,
                    "failed": s.failed, "duplicates": s.duplicates, "stray": s.stray,
                    "errors": dict(s.errors), "pending": len(self.tracker.pending)}
