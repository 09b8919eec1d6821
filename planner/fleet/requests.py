"""Request book-keeping of the client (pure: no sockets): results, errors, retries.

Each request keeps its id across attempts, so nodes re-execute idempotently and the
first complete result wins; later copies are counted as duplicates and dropped. Pieces
of a result are stitched per epoch (tile layouts differ between epochs). An attempt is
recognised by the `t0` it was sent with (nodes carry it end to end), so an error from
an older attempt does not trigger a second retry.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from node.errors import WireError
from node.gather import Gather, Want
from node.wire.codes import Code, is_transient
from node.wire.frames import Header
from planner.errors import FleetError


class RequestError(FleetError):
    """A request that failed for good; names the stage and node that reported it."""

    def __init__(self, message: str, request: str, code: str = Code.ERROR, src: str = "") -> None:
        super().__init__(message)
        self.request, self.code, self.src = request, code, src


@dataclass
class Request:
    """One in-flight request and its attempts."""

    rid: str
    inputs: dict[str, np.ndarray]
    future: Future[dict[str, np.ndarray]]
    started: float  # monotonic, first attempt
    deadline: float = 0.0
    attempts: int = 0
    t0: float = 0.0  # wall time the current attempt was sent with
    retry_at: float | None = None
    gathers: dict[int, Gather] = field(default_factory=dict)
    last_error: str = ""


@dataclass
class Stats:
    """Counters a bench or monitor can read."""

    sent: int = 0
    retries: int = 0
    delivered: int = 0
    failed: int = 0
    duplicates: int = 0
    stray: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class Tracker:
    """Pending requests by id; the I/O layer calls `sent`, `result`, `error`, `due`."""

    def __init__(self, timeout_s: float = 10.0, retries: int = 2,
                 remember: int = 100_000, where: Callable[[str], str] | None = None) -> None:
        self.timeout_s, self.retries, self.remember = timeout_s, retries, remember
        self.where = where or describe_src
        self.pending: dict[str, Request] = {}
        self.done: OrderedDict[str, None] = OrderedDict()
        self.wants: dict[int, dict[str, Want]] = {}
        self.stats = Stats()

    def set_results(self, epoch: int, results: dict[str, dict[str, Any]]) -> None:
        """The result tensors (shape, dtype, pieces) an epoch delivers."""
        self.wants[epoch] = {n: Want(r["dtype"], tuple(r["shape"]), int(r.get("pieces", 1)))
                             for n, r in results.items()}

    def add(self, rid: str, inputs: dict[str, np.ndarray], now: float | None = None
            ) -> Request:
        now = time.monotonic() if now is None else now
        req = Request(rid, inputs, Future(), now)
        self.pending[rid] = req
        return req

    def sent(self, req: Request, t0: float, now: float | None = None) -> None:
        """Record an attempt that left with wall time t0."""
        now = time.monotonic() if now is None else now
        req.attempts += 1
        req.t0, req.deadline, req.retry_at = t0, now + self.timeout_s, None
        self.stats.sent += 1
        if req.attempts > 1:
            self.stats.retries += 1

    def unsent(self, req: Request, why: str, now: float | None = None, every_s: float = 0.05,
               t0: float | None = None) -> Request | None:
        """An attempt that could not leave (no connected or no free socket): not counted
        as an attempt; tried again every `every_s` until the request's whole budget
        (timeout x attempts since its first try) is spent, then failed (returned).

        `t0`: the attempt's; when a newer attempt left meanwhile, or a retry is already
        scheduled (an epoch switch re-sends what is in flight), this one is moot.
        """
        now = time.monotonic() if now is None else now
        if (req.rid not in self.pending or req.retry_at is not None
                or (t0 is not None and t0 != req.t0)):
            return None
        req.attempts = max(req.attempts - 1, 0)
        self.stats.sent -= 1
        if req.attempts:
            self.stats.retries -= 1
        self.stats.errors[Code.UNSENT] = self.stats.errors.get(Code.UNSENT, 0) + 1
        if now - req.started >= self.timeout_s * (self.retries + 1):
            return self._fail(req, Code.SEND_TIMEOUT, f"could not be sent within "
                              f"{now - req.started:.1f} s: {why}")
        req.last_error = f"client: send_timeout: {why}"
        req.retry_at = now + every_s
        return None

    def _finish(self, req: Request) -> None:
        self.pending.pop(req.rid, None)
        self.done[req.rid] = None
        while len(self.done) > self.remember:
            self.done.popitem(last=False)

    def result(self, h: Header, arrays: list[np.ndarray]) -> Request | None:
        """A result message; returns the request when it completed."""
        req = self.pending.get(h.request)
        if req is None:
            if h.request in self.done:
                self.stats.duplicates += 1
            else:
                self.stats.stray += 1
            return None
        wants = self.wants.get(h.epoch)
        if wants is None:
            return self._fail(req, Code.UNKNOWN_EPOCH, f"result of epoch {h.epoch}, which this "
                              "client does not know", h.src)
        g = req.gathers.get(h.epoch)
        if g is None:
            g = req.gathers[h.epoch] = Gather(wants)
        try:
            out, _ = g.add(h.request, h.tensors, arrays)
        except WireError as exc:
            return self._fail(req, exc.code, str(exc), h.src)
        if out is None:
            return None
        self._finish(req)
        self.stats.delivered += 1
        if not req.future.done():
            req.future.set_result({n: np.array(a) for n, a in out.items()})
        return req

    def error(self, h: Header, now: float | None = None) -> Request | None:
        """An error message; schedules a retry or fails the request (returned)."""
        now = time.monotonic() if now is None else now
        err = h.error or {}
        code, msg = err.get("code", Code.ERROR), err.get("message", "")
        self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
        req = self.pending.get(h.request)
        if req is None or h.t0 != req.t0 or req.retry_at is not None:
            return None  # finished, or an older attempt's error: the retry is under way
        req.last_error = f"{self.where(h.src)}: {code}: {msg}"
        if code == Code.UNKNOWN_EPOCH and now - req.started < self.timeout_s * (self.retries + 1):
            # The node has moved on to a newer epoch whose record is on its way (a node
            # short of memory drops its old epoch before the switch): not the request's
            # fault, so not an attempt; tried again shortly within the request's budget.
            req.attempts = max(req.attempts - 1, 0)
            req.retry_at = now + 0.05
            return None
        if is_transient(code) and req.attempts <= self.retries:  # see Code.transient
            req.retry_at = now + min(0.05 * 2 ** req.attempts, 1.0)
            return None
        return self._fail(req, code, msg, h.src)

    def _fail(self, req: Request, code: str, msg: str, src: str = "") -> Request:
        self._finish(req)
        self.stats.failed += 1
        text = f"request {req.rid}: {self.where(src)}: {code}: {msg}" if src else \
            f"request {req.rid}: {code}: {msg}"
        if not req.future.done():
            req.future.set_exception(RequestError(text, req.rid, code, src))
        return req

    def due(self, now: float | None = None) -> list[Request]:
        """Requests to send again now (scheduled retries, expired attempts).

        Requests out of attempts are failed here and not returned.
        """
        now = time.monotonic() if now is None else now
        out = []
        for req in list(self.pending.values()):
            if req.retry_at is not None and now >= req.retry_at:
                out.append(req)
            elif req.retry_at is None and req.attempts and now >= req.deadline:
                if req.attempts > self.retries:
                    why = f" (last error: {req.last_error})" if req.last_error else ""
                    self._fail(req, Code.TIMEOUT, f"no result after {req.attempts} attempt(s) of "
                               f"{self.timeout_s:g} s{why}")
                else:
                    req.last_error = req.last_error or "timed out"
                    out.append(req)
        return out

    def fail_all(self, message: str) -> None:
        for req in list(self.pending.values()):
            self._fail(req, Code.CLOSED, message)


def describe_src(src: str, stages_of: Callable[[str], list[str]] | None = None) -> str:
    """'n2/s1' -> 'stage s1 on node n2'; 'n2' -> 'node n2' (+ its stages when known)."""
    node, _, stage = src.partition("/")
    if stage:
        return f"stage {stage} on node {node}"
    known = stages_of(node) if stages_of and node else []
    if known:
        return f"node {node} (stage{'s' if len(known) > 1 else ''} {', '.join(known)})"
    return f"node {node}" if node else "fleet"
