"""ZeroMQ side of the client: PUSH frames to the first stages, PULL results back.

The client binds one PULL socket and names it in every request header (`reply`), so
results and error replies of every stage come straight back. Sends happen on the
caller's thread under a lock (PUSH sockets are not thread-safe); one I/O thread reads
results and re-sends requests whose attempt expired or failed transiently. Headers are
pre-encoded per epoch (only request id, reply and t0 vary), and sockets to endpoints
that no route of the current epoch uses are closed when the epoch changes.
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
from typing import Any, NamedTuple

import numpy as np
import zmq

from node.errors import WireError
from node.gather import cut
from node.wire.codes import Code
from node.wire.frames import Header, HeaderTemplate, Region, TensorMeta, decode, payload
from node.wire.messages import Route
from node.wire.regions import region_shape
from planner.fleet.requests import Request, Tracker

log = logging.getLogger(__name__)
_MORE, _NOBLOCK = int(zmq.SNDMORE), int(zmq.NOBLOCK)  # plain ints: enum flags cost per frame
_SEND_SLICE_MS = 20  # a waiting send re-checks for a new epoch this often


class _Superseded(Exception):
    """The deployment moved to a new epoch while a send to the old one waited."""


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


class _Message(NamedTuple):
    """One message of an attempt's plan: destination, target stage, its header template
    (all but request id, reply and t0 pre-encoded) and the pieces of inputs it carries."""

    to: str
    stage: str
    template: HeaderTemplate
    pieces: tuple[tuple[str, Region | None], ...]  # (input name, region or whole)


class DataClient:
    """Requests in, results out; `submit` returns a Future of {output name: array}.

    Two locks: `_lock` guards the tracker (the result thread takes it per result),
    `_send_lock` the PUSH sockets, so a send that waits for a saturated or departed
    node never holds up results. The caller's send waits up to `send_timeout_ms`
    (back-pressure), then counts as a failed attempt. The result thread's own sends
    (retries) never wait: a full or unconnected socket (ZMQ_IMMEDIATE: nothing is queued
    for a peer that is not connected) leaves the request to be tried again 50 ms later,
    not counted as an attempt, until its whole time budget is spent (`Tracker.unsent`),
    so requests ride out a re-plan instead of failing while a node is being replaced.
    """

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
        self._lock = threading.RLock()  # guards the tracker
        self._send_lock = threading.Lock()  # guards the PUSH sockets
        self._routes: tuple[Route, ...] | None = None  # routes the sockets were kept for
        self._plans: dict[tuple[Any, ...], tuple[_Message, ...]] = {}
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
        with self._send_lock:
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
        self._attempt(req, wait=True)
        return req.future

    @property
    def endpoints(self) -> list[str]:
        """Endpoints this client holds a PUSH socket to."""
        with self._send_lock:
            return sorted(self._push)

    def _sock(self, endpoint: str) -> zmq.Socket:
        s = self._push.get(endpoint)
        if s is None:
            s = self.ctx.socket(zmq.PUSH)
            s.sndhwm, s.sndtimeo, s.linger = self.hwm, self.send_timeout_ms, 0
            s.immediate = True  # queue only for a connected peer, not for a vanished one
            s.connect(endpoint)
            self._push[endpoint] = s
        return s

    def _keep_only(self, routes: tuple[Route, ...]) -> None:
        """Close the sockets to endpoints no entry route uses any more (send lock held).

        Requests only ever enter through the current epoch's routes (retries and the
        re-sends of an epoch switch included), so that is every route still in use.
        """
        if routes is self._routes:
            return
        self._routes = routes
        used = {r.to for r in routes}
        for ep in [ep for ep in self._push if ep not in used]:
            self._push.pop(ep).close(linger=0)
        if len(self._plans) > 64:  # plans of retired epochs
            self._plans.clear()

    def _plan(self, e: Entry, inputs: dict[str, np.ndarray]) -> tuple[_Message, ...]:
        """The messages of one attempt, cached per entry and input signature."""
        key = (e.deployment, e.epoch, e.routes,
               tuple((n, a.dtype.str, a.shape) for n, a in inputs.items()))
        plan = self._plans.get(key)
        if plan is None:
            groups: dict[
                tuple[str, str], tuple[list[TensorMeta], list[tuple[str, Region | None]]]
            ] = {}
            for r in e.routes:
                arr = inputs[r.tensor]
                full = tuple(int(d) for d in arr.shape)
                shape = region_shape(full, r.region)
                metas, pieces = groups.setdefault((r.to, r.stage), ([], []))
                metas.append(TensorMeta(r.dest_name, arr.dtype.name, shape, full, r.region))
                pieces.append((r.tensor, r.region))
            plan = self._plans[key] = tuple(
                _Message(to, stage, HeaderTemplate(Header("data", e.deployment, e.epoch, "", stage,
                                                          "", tuple(metas), src="client")),
                         tuple(pieces))
                for (to, stage), (metas, pieces) in groups.items())
        return plan

    def _attempt(self, req: Request, wait: bool) -> None:
        """One attempt: slice the inputs per entry route and push them.

        `wait`: block on a full socket up to the send time-out (the caller's thread: that
        is back-pressure); else give up at once (the result thread must keep reading).
        """
        e = self.entry()
        t0 = time.time()
        with self._lock:
            self.tracker.sent(req, t0)
        error, superseded = "", False
        if self._send_lock.acquire(timeout=-1 if wait else 0.01):
            try:
                # read again under the lock: a caller that waited for it behind another
                # send may hold a retired epoch's entry, and must not close the sockets
                # of the current one (nor send to the old stages)
                e = self.entry()
                plan = self._plan(e, req.inputs)
                self._keep_only(e.routes)
                deadline = time.monotonic() + self.send_timeout_ms / 1000
                for msg in plan:
                    head = msg.template.render(req.rid, self.reply, t0)
                    arrs = [cut(req.inputs[name], None, region) for name, region in msg.pieces]
                    self._send(self._sock(msg.to), [head, *payload(arrs)],
                               deadline if wait else None, lambda: self.entry() != e)
            except zmq.Again:
                error = f"{Code.SEND_TIMEOUT}:{msg.to} takes no message (gone or saturated)"
            except _Superseded:
                error, superseded = f"{Code.SEND_TIMEOUT}:{msg.to} was replaced by epoch " \
                                    f"{self.entry().epoch} while the send waited", True
            except zmq.ZMQError as exc:
                error = f"{Code.SEND_FAILED}:{exc}"
            finally:
                self._send_lock.release()
        else:
            error = f"{Code.SEND_TIMEOUT}:another send holds the sockets"
        if not error:
            return
        code, _, why = error.partition(":")
        with self._lock:
            if (wait and not superseded) or code != Code.SEND_TIMEOUT:  # retried with a back-off
                self.tracker.error(Header("error", e.deployment, e.epoch, req.rid, "", t0=t0,
                                          src="client", error={"code": code, "message": why}))
            else:  # not an attempt: tried again shortly (under the new epoch), within budget
                self.tracker.unsent(req, why, t0=t0)

    @staticmethod
    def _send(sock: zmq.Socket, frames: list[Any], deadline: float | None,
              superseded: Callable[[], bool]) -> None:
        """Push one multipart message; `deadline` None: give up at once if it cannot leave.

        The caller's wait (back-pressure) is sliced: a node that died leaves the socket
        with no connected peer (ZMQ_IMMEDIATE), and once the deployment has switched to a
        new epoch waiting for it out is pointless, so the attempt is handed back
        (`_Superseded`) and goes out under the new epoch's routes at once.
        """
        while True:  # only the first frame can block: ZeroMQ takes a started message whole
            try:
                sock.send(frames[0], _NOBLOCK | (_MORE if len(frames) > 1 else 0), copy=False)
                break
            except zmq.Again:
                if deadline is None or time.monotonic() >= deadline:
                    raise
                if superseded():
                    raise _Superseded from None
                sock.poll(_SEND_SLICE_MS, zmq.POLLOUT)
        last = len(frames) - 1
        for i in range(1, len(frames)):  # frames are bytes and contiguous arrays: no checks
            sock.send(frames[i], _MORE if i < last else 0, copy=False)

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        next_due = 0.0
        while not self._stop.is_set():
            if poller.poll(20):
                self._receive()
            now = time.monotonic()
            if now >= next_due:  # retries and time-outs: milliseconds matter, not microseconds
                next_due = now + 0.005
                self._retry()

    def _retry(self) -> None:
        with self._lock:
            due = self.tracker.due()
        for req in due:
            self._attempt(req, wait=False)

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
            if h.kind == "error":
                self._retry()  # transient errors retry after a short back-off

    def stats(self) -> dict[str, Any]:
        with self._lock:
            s = self.tracker.stats
            return {"sent": s.sent, "retries": s.retries, "delivered": s.delivered,
                    "failed": s.failed, "duplicates": s.duplicates, "stray": s.stray,
                    "errors": dict(s.errors), "pending": len(self.tracker.pending)}
