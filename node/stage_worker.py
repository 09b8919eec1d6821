"""A deployed stage at work on a node: `StageWorker`, one thread with a bounded queue.

The plan's stage (planner.planning.plan.Stage) becomes a wire `StageSpec`; on the node
each loaded StageSpec runs as one StageWorker.

`StageWorker.dispatch` (data-plane thread) hands each message to its stage's queue or
reports the queue full (the data plane then stops reading, and ZeroMQ high-water marks
push back to the senders). A stage worker gathers pieces, runs its part, slices each
routed tensor and sends it on. Epochs of one deployment live side by side until retired.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from node.dataplane import local_delivery
from node.errors import DeployError, NodeError
from node.gather import Gather, Want, contains, cut, full_region
from node.metrics import Counters, StageStats
from node.runner import PartRunner
from node.wire.codes import Code
from node.wire.frames import (
    CLIENT,
    Header,
    HeaderTemplate,
    Region,
    TensorMeta,
    encode,
    error_header,
    payload,
)
from node.wire.messages import StageSpec
from node.wire.regions import region_shape
from node.wire.results import StageMetrics

log = logging.getLogger(__name__)
_STOP = object()
_LOST = object()  # queue mark: a request evicted from the gather, to be reported

# (endpoint, frames, reply=False) -> bytes sent; reply: to a client's reply endpoint,
# which gets a shorter wait (node/dataplane.py Sender)
SendFn = Callable[..., int]
_MAX_CHECKED = 256  # metadata variants remembered as valid per stage (tiles: a few)


class _Piece(NamedTuple):
    """One routed tensor: what the stage holds of it, the window sent, and its metadata."""

    tensor: str
    have: Region | None
    want: Region | None
    meta: TensorMeta  # as sent when the piece has the expected shape and dtype
    dtype: np.dtype[Any]  # meta.dtype parsed once (comparing to a str parses it each time)


class _Group(NamedTuple):
    """Routes sharing one message: destination, target stage and the pre-encoded header."""

    to: str  # endpoint, or CLIENT for the request's reply endpoint
    stage: str
    pieces: tuple[_Piece, ...]
    template: HeaderTemplate
    header: Header  # the same header unencoded, for a stage of this process (no socket)


class StageWorker:
    """One loaded stage; `offer` is non-blocking, the worker thread does the rest."""

    def __init__(self, node: str, deployment: str, epoch: int, spec: StageSpec,
                 runner: PartRunner | None, counters: Counters,
                 sender_factory: Callable[[], tuple[SendFn, Callable[[], None]]],
                 queue_size: int = 8, gather_timeout_s: float = 30.0) -> None:
        self.node, self.deployment, self.epoch, self.spec = node, deployment, epoch, spec
        self.runner = runner
        self.counters = counters
        self.stats = StageStats()
        # SimpleQueue is C code (a bounded queue.Queue costs a Condition per put and get);
        # checking qsize before a put keeps the bound within the number of producers (the
        # data-plane thread, and the workers of stages on this node handing over in-process)
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.queue_size = queue_size
        window = None if spec.tile is None else {  # each input its own window of the tile
            i.name: spec.tile.input_window(k) for k, i in enumerate(spec.inputs)}
        self.gather = Gather({i.name: Want(i.dtype, i.shape, i.pieces) for i in spec.inputs},
                             window)
        self.gather_timeout_s = gather_timeout_s
        self._waiting: dict[str, Header] = {}
        self._busy = threading.Lock()  # one message at a time, worker or inline
        self._gathering = threading.Lock()  # the gather and _waiting: receiver and worker
        # an input arriving in region pieces (after a tile stage) is gathered by the
        # receiving thread, so the worker wakes once per request, not once per piece
        self._pieces = any(i.pieces > 1 for i in spec.inputs)
        self._sender_factory = sender_factory
        self._coverage, self._full = self._coverage_table()
        self._groups = self._route_plan()
        self._checked: set[TensorMeta] = set()  # metadata that passed gather.check
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"stage-{deployment}-{epoch}-{spec.id}")

    def _coverage_table(self) -> tuple[dict[str, Region | None], dict[str, tuple[int, ...]]]:
        cov: dict[str, Region | None] = {}
        full: dict[str, tuple[int, ...]] = {}
        for i in self.spec.inputs:
            full[i.name] = i.shape
            cov[i.name] = self.gather.window_of(i.name)
        if self.runner is not None:
            for k, (name, shape) in enumerate(self.runner.out_shapes.items()):  # part order
                full[name] = shape
                cov[name] = (
                    self.spec.tile.output_window(k) if self.spec.tile else full_region(shape)
                )
        for r in self.spec.routes:
            if r.tensor not in full:
                raise DeployError(f"stage {self.spec.id!r}: route names tensor {r.tensor!r}, "
                                  f"which is neither an input nor an output "
                                  f"({sorted(full)})", code=Code.BAD_STAGE)
            if r.region is not None and not contains(cov[r.tensor], r.region):
                raise DeployError(f"stage {self.spec.id!r}: route region {list(r.region)} of "
                                  f"{r.tensor!r} lies outside what the stage holds "
                                  f"{cov[r.tensor]}", code=Code.BAD_STAGE)
        return cov, full

    def _route_plan(self) -> tuple[_Group, ...]:
        """Group routes by (destination, stage) and pre-encode each message's header."""
        dtypes = {i.name: i.dtype for i in self.spec.inputs}
        if self.runner is not None:
            dtypes.update(self.runner.out_dtypes)
        groups: dict[tuple[str, str], list[_Piece]] = {}
        for r in self.spec.routes:
            have, full = self._coverage[r.tensor], self._full[r.tensor]
            want = r.region or have
            shape = region_shape(full, want)
            region = None if want == full_region(full) else want
            meta = TensorMeta(r.dest_name, dtypes[r.tensor], shape, full, region)
            key = (r.to, CLIENT if r.to == CLIENT else r.stage)
            groups.setdefault(key, []).append(_Piece(r.tensor, have, want, meta,
                                                     np.dtype(meta.dtype)))
        src = f"{self.node}/{self.spec.id}"
        out = []
        for (to, stage), ps in groups.items():
            h = Header(kind="result" if stage == CLIENT else "data", deployment=self.deployment,
                       epoch=self.epoch, request="", stage=stage,
                       tensors=tuple(p.meta for p in ps), src=src)
            out.append(_Group(to, stage, tuple(ps), HeaderTemplate(h), h))
        return tuple(out)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.queue.put(_STOP)  # unbounded: the stop mark always gets in

    def offer(self, header: Header, arrays: list[np.ndarray], inline: SendFn | None = None
              ) -> bool:
        """Queue a message; False when the queue is full (caller retries later).

        A forward stage (no part) with nothing queued handles the message right here with
        `inline` (the receiving thread's sender): forwarding is a slice and a send, and
        skipping the thread hand-off halves the hop's overhead.
        """
        for m in header.tensors:  # reject bad pieces early, in the receiving thread
            if m not in self._checked:  # check is a pure function of m and the stage
                self.gather.check(m)
                if len(self._checked) < _MAX_CHECKED:
                    self._checked.add(m)
        t_in = time.perf_counter()
        gathered = False
        if self._pieces:
            if self.queue.qsize() >= self.queue_size:
                return False
            inputs, lost = self._collect(header, arrays)  # WireError: the receiver reports it
            for key, h in lost:
                self.queue.put((_LOST, key, h))
            if inputs is None:
                return True
            arrays, gathered = inputs, True  # type: ignore[assignment]
        if inline is not None and self.runner is None and self.queue.empty() \
                and self._busy.acquire(blocking=False):
            try:
                self._handle(inline, header, arrays, t_in, gathered)
            finally:
                self._busy.release()
            return True
        if not gathered and self.queue.qsize() >= self.queue_size:
            return False
        self.queue.put((header, arrays, t_in, gathered))
        return True

    def _collect(self, header: Header, arrays: list[np.ndarray]
                 ) -> tuple[dict[str, np.ndarray] | None, list[tuple[str, Header | None]]]:
        """Add a message's pieces; (the inputs once complete, requests evicted for room)."""
        with self._gathering:
            inputs, evicted = self.gather.add(header.request, header.tensors, arrays,
                                              checked=True)  # offer checked them
            lost = [(key, self._waiting.pop(key, None)) for key in evicted]
            if inputs is None:
                self._waiting[header.request] = header
            else:
                self._waiting.pop(header.request, None)
        return inputs, lost

    def _loop(self) -> None:
        send, close = self._sender_factory()
        try:
            while True:
                try:
                    item = self.queue.get(timeout=1.0)
                except queue.Empty:
                    with self._busy:
                        self._expire(send)
                    continue
                if item is _STOP:
                    return
                with self._busy:
                    if item[0] is _LOST:
                        self._evicted(send, item[1], item[2])
                    else:
                        self._handle(send, *item)
        finally:
            close()

    def _evicted(self, send: SendFn, key: str, header: Header | None) -> None:
        self._fail(send, header, Code.EVICTED, f"request {key!r} evicted: too many incomplete "
                   "requests")

    def _handle(
        self,
        send: SendFn,
        header: Header,
        arrays: list[np.ndarray] | dict[str, np.ndarray],
        t_in: float,
        gathered: bool = False,
    ) -> None:
        try:
            if gathered:
                inputs = arrays
            else:
                inputs, lost = self._collect(header, arrays)  # type: ignore[arg-type]
                for key, h in lost:
                    self._evicted(send, key, h)
                if inputs is None:
                    return
            t = time.perf_counter()
            outputs = self.runner.run(inputs) if self.runner is not None else {}
            run_s = time.perf_counter() - t
            sent = self._route(send, header, {**inputs, **outputs})
            self.stats.record(run_s, time.perf_counter() - t_in, sent)
        except NodeError as exc:
            self._fail(send, header, exc.code, str(exc))
        except Exception as exc:  # a runtime failure must not kill the worker
            log.exception("stage %s failed on request %s", self.spec.id, header.request)
            self._fail(send, header, Code.RUN_FAILED, f"stage {self.spec.id!r}: {exc}")

    def _route(self, send: SendFn, header: Header, tensors: dict[str, np.ndarray]) -> int:
        total = 0
        for g in self._groups:
            to = header.reply if g.to == CLIENT else g.to
            if not to:
                self._fail(send, None, Code.NO_REPLY, "a route goes to the client but the "
                           f"request {header.request!r} names no reply endpoint")
                continue
            arrs = [cut(tensors[p.tensor], p.have, p.want) for p in g.pieces]
            planned = all(a.shape == p.meta.shape and a.dtype == p.dtype
                          for a, p in zip(arrs, g.pieces, strict=True))
            deliver = local_delivery(to) if g.to != CLIENT else None
            if deliver is not None:  # a stage of this process: hand the arrays over as they
                # are (outputs are fresh per run and nobody writes to a sent tensor)
                h = g.header if planned else self._header(g, arrs)
                arrs = [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in arrs]
                n = deliver(replace(h, request=header.request, reply=header.reply,
                                    t0=header.t0), arrs, send)
                self.counters.sent(n)
                total += n
                continue
            if planned:
                head = g.template.render(header.request, header.reply, header.t0)
            else:  # not the planned shape or dtype: describe what is actually sent
                head = HeaderTemplate(self._header(g, arrs)).render(header.request,
                                                                     header.reply, header.t0)
            total += send(to, [head, *payload(arrs)], reply=g.to == CLIENT)
        return total

    def _header(self, g: _Group, arrs: list[np.ndarray]) -> Header:
        metas = tuple(TensorMeta(p.meta.name, a.dtype.name, tuple(int(d) for d in a.shape),
                                 p.meta.full_shape, p.meta.region)
                      for a, p in zip(arrs, g.pieces, strict=True))
        return Header(kind="result" if g.stage == CLIENT else "data",
                      deployment=self.deployment, epoch=self.epoch, request="",
                      stage=g.stage, tensors=metas, src=f"{self.node}/{self.spec.id}")

    def _fail(self, send: SendFn, header: Header | None, code: str, message: str) -> None:
        self.counters.error(code)
        self.stats.error()
        log.debug("stage %s: %s: %s", self.spec.id, code, message)
        if header is None or not header.reply:
            return
        h = error_header(code, message, deployment=self.deployment, epoch=self.epoch,
                         request=header.request, reply=header.reply,
                         src=f"{self.node}/{self.spec.id}", t0=header.t0)
        try:
            send(header.reply, encode(h, []), reply=True)
        except Exception:
            self.counters.error(Code.SEND_FAILED)

    def _expire(self, send: SendFn) -> None:
        with self._gathering:
            gone = [(key, self._waiting.pop(key, None))
                    for key in self.gather.expire(self.gather_timeout_s)]
        for key, header in gone:
            self._fail(send, header, Code.INCOMPLETE,
                       f"request {key!r}: inputs of stage {self.spec.id!r} incomplete after "
                       f"{self.gather_timeout_s:.0f} s")

    def snapshot(self) -> dict[str, Any]:
        return StageMetrics(**self.stats.snapshot(), queue=self.queue.qsize(),
                            pending=self.gather.pending, part=self.spec.part,
                            tile=self.spec.tile is not None)
