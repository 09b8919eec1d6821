"""ZeroMQ sockets: PULL (activations in) on the data port, ROUTER (service) on port+1.

One I/O thread owns both bound sockets. Data messages are decoded and handed to
`dispatch`; when a stage queue is full the message is held and the PULL socket is not
read until it fits, so the high-water marks push back to the senders. Each sending
thread owns a `Sender` (PUSH sockets cached per destination endpoint).

A message for a stage of this same process (a tile stage feeding the next stage on its
node) skips the sockets: `local_delivery(endpoint)` gives the receiving data plane's
`deliver`, which hands the header and arrays straight to the stage, so the hand-off
costs what the cost model says it does on one device (no encode, no TCP, no decode).
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from node.errors import NodeError, WireError
from node.metrics import Counters
from node.wire.codes import Code
from node.wire.frames import Header, decode, encode, error_header
from node.wire.service import reply_frames

log = logging.getLogger(__name__)
_MORE = int(zmq.SNDMORE)  # a plain int: `zmq.SNDMORE | 0` is an enum operation per frame
_NOBLOCK = int(zmq.NOBLOCK)

Dispatch = Callable[[Header, list[np.ndarray], Callable[[str, list[Any]], int]], bool]
Service = Callable[[list[zmq.Frame]], list[Any]]

# data endpoint -> `DataPlane.deliver` of the data planes running in this process
_LOCAL: dict[str, Callable[[Header, list[np.ndarray], Callable[[str, list[Any]], int], float],
                           int]] = {}


def local_delivery(endpoint: str
                   ) -> Callable[[Header, list[np.ndarray], Callable[[str, list[Any]], int],
                                  float], int] | None:
    """The in-process delivery of a data plane of this process bound at `endpoint`, if any."""
    return _LOCAL.get(endpoint)


class Sender:
    """PUSH sockets cached per endpoint (LRU); use from one thread only.

    A send waits up to `timeout_ms` for room (the receiver's high-water mark pushes
    back; `reply_timeout_ms` for a client's reply endpoint, `send(..., reply=True)`,
    whose own queue takes ~1000 messages before that happens), except to an endpoint
    whose last send timed out: that one is tried without waiting until a send gets
    through again, so a dead receiver (a client gone, a bogus reply endpoint) costs one
    time-out, not one per message.
    """

    def __init__(self, ctx: zmq.Context, counters: Counters, hwm: int = 16,
                 timeout_ms: int = 10_000, max_sockets: int = 64, linger_ms: int = 1000,
                 reply_timeout_ms: int = 1000) -> None:
        self.ctx, self.counters, self.hwm, self.timeout_ms = ctx, counters, hwm, timeout_ms
        self.max_sockets, self.linger_ms = max_sockets, linger_ms
        self.reply_timeout_ms = min(reply_timeout_ms, timeout_ms)
        self._socks: OrderedDict[str, zmq.Socket] = OrderedDict()
        self._stalled: set[str] = set()  # endpoints whose last send timed out

    def _sock(self, endpoint: str, reply: bool) -> zmq.Socket:
        s = self._socks.get(endpoint)
        if s is not None:
            self._socks.move_to_end(endpoint)
            return s
        if len(self._socks) >= self.max_sockets:
            gone, old = self._socks.popitem(last=False)
            self._stalled.discard(gone)
            old.close(linger=self.linger_ms)
        s = self.ctx.socket(zmq.PUSH)
        s.sndhwm = self.hwm
        s.sndtimeo = self.reply_timeout_ms if reply else self.timeout_ms
        s.linger = self.linger_ms
        try:
            s.connect(endpoint)
        except (zmq.ZMQError, UnicodeError, TypeError) as exc:  # "tcp://garbage" and such
            s.close(linger=0)
            raise WireError(f"cannot connect to {ascii(endpoint)[:80]}: {exc}",
                            code=Code.SEND_FAILED) from None
        self._socks[endpoint] = s
        return s

    def send(self, endpoint: str, frames: list[Any], reply: bool = False) -> int:
        """Send one multipart message; returns its size; WireError if it cannot leave."""
        sock, last = self._sock(endpoint, reply), len(frames) - 1
        stalled = endpoint in self._stalled
        try:
            # send_multipart's per-frame type check and enum flags cost more than the send;
            # our frames are bytes, zmq.Frames and numeric arrays, all buffers; only the
            # first frame can find the queue full (a multipart message is atomic)
            sock.send(frames[0], (_MORE if last else 0) | (_NOBLOCK if stalled else 0),
                      copy=False)
            for i in range(1, last + 1):
                sock.send(frames[i], _MORE if i < last else 0, copy=False)
        except zmq.Again:
            self.counters.error(Code.SEND_TIMEOUT)
            self._stalled.add(endpoint)
            raise WireError(f"send to {endpoint} timed out after "
                            f"{0 if stalled else sock.sndtimeo} ms "
                            "(receiver gone or saturated)", code=Code.SEND_TIMEOUT) from None
        except zmq.ZMQError as exc:
            raise WireError(f"send to {endpoint} failed: {exc}", code=Code.SEND_FAILED) from None
        if stalled:
            self._stalled.discard(endpoint)
        n = 0
        for f in frames:  # len() of an ndarray is its first dimension, not its size
            n += f.nbytes if type(f) is np.ndarray else len(f)
        self.counters.sent(n)
        return n

    def close(self) -> None:
        for s in self._socks.values():
            s.close(linger=self.linger_ms)
        self._socks.clear()


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Let glibc reuse freed message buffers instead of returning them to the kernel.

    With glibc's adaptive defaults a stream of 1 MB messages, several in flight, keeps
    trimming the heap the ZeroMQ I/O thread allocates from, and every new buffer then
    page-faults back in (~25 faults per 1 MB message here): more CPU than all of the
    agent's Python per message. Fixed thresholds keep at most `trim_threshold` of free
    heap per arena. Skipped when the operator set malloc tunables; a no-op off glibc
    or where the value is too large (32-bit). True if applied.
    """
    if any(k in os.environ for k in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_",
                                     "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, mmap_threshold)) and bool(
        mallopt(m_trim_threshold, trim_threshold))


def advertised_host(bind_host: str) -> str:
    """The address peers should use: bind_host, or this machine's outward IP for 0.0.0.0."""
    if bind_host not in ("0.0.0.0", "*", ""):
        return bind_host
    try:  # a UDP "connect" picks the outgoing interface without sending a packet
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())


class DataPlane:
    """Binds the data and service sockets and runs the I/O loop in a thread."""

    def __init__(self, ctx: zmq.Context, counters: Counters, host: str = "127.0.0.1",
                 port: int = 0, hwm: int = 16, max_message_bytes: int = 256 << 20,
                 node: str = "") -> None:
        self.ctx, self.counters = ctx, counters
        self.dispatch: Dispatch | None = None  # set by attach(), before start()
        self.service: Service | None = None
        self.host, self.port, self.hwm, self.max_bytes = host, port, hwm, max_message_bytes
        self.node = node
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pull: zmq.Socket | None = None
        self.router: zmq.Socket | None = None
        self.sender: Sender | None = None
        self.forwarder: Sender | None = None

    def attach(self, dispatch: Dispatch, service: Service) -> None:
        """Who handles data messages and service requests (the agent's deployments and store)."""
        self.dispatch, self.service = dispatch, service

    @property
    def data_endpoint(self) -> str:
        return f"tcp://{advertised_host(self.host)}:{self.port}"

    @property
    def service_endpoint(self) -> str:
        return f"tcp://{advertised_host(self.host)}:{self.port + 1}"

    def bind(self) -> None:
        """Bind PULL on port and ROUTER on port+1; port 0 picks a free pair."""
        bind_host = "*" if self.host in ("0.0.0.0", "") else self.host
        for _ in range(50):
            pull = self.ctx.socket(zmq.PULL)
            pull.rcvhwm = self.hwm
            pull.maxmsgsize = self.max_bytes  # a single larger frame drops the connection
            pull.linger = 0
            router = self.ctx.socket(zmq.ROUTER)
            router.linger = 0
            router.maxmsgsize = self.max_bytes
            try:
                if self.port:
                    pull.bind(f"tcp://{bind_host}:{self.port}")
                    port = self.port
                else:
                    port = pull.bind_to_random_port(f"tcp://{bind_host}", 20000, 60000)
                router.bind(f"tcp://{bind_host}:{port + 1}")
            except zmq.ZMQError as exc:
                pull.close()
                router.close()
                if self.port:
                    raise NodeError(f"cannot bind data port {self.port} or service port "
                                    f"{self.port + 1} on {self.host}: {exc}",
                                    code=Code.BIND) from None
                continue
            self.pull, self.router, self.port = pull, router, port
            return
        raise NodeError(f"no free port pair on {self.host}", code=Code.BIND)

    def start(self) -> None:
        if self.dispatch is None or self.service is None:
            raise RuntimeError("DataPlane.start() before attach(dispatch, service)")
        if self.pull is None:
            self.bind()
        log.debug("allocator tuned for the data plane: %s", tune_allocator())
        self.restart("dataplane")
        _LOCAL[self.data_endpoint] = self.deliver

    def dead(self) -> list[str]:
        """["dataplane"] if the I/O thread died (for the supervisor), else []."""
        t = self._thread
        return [] if self._stop.is_set() or t is None or t.is_alive() else ["dataplane"]

    def restart(self, name: str = "dataplane") -> None:
        """Start the I/O thread (again, after it died) on the bound sockets."""
        self._thread = threading.Thread(target=self._loop, daemon=True, name=name)
        self._thread.start()

    def stop(self) -> None:
        if _LOCAL.get(self.data_endpoint) == self.deliver:
            del _LOCAL[self.data_endpoint]
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        assert self.pull is not None and self.router is not None
        for old in (self.sender, self.forwarder):  # restarted after the thread died
            if old is not None:
                old.close()
        # error replies never wait and never linger: a dead or bogus reply endpoint costs
        # a dropped message (counted send_timeout), and at most 32 sockets are kept
        self.sender = Sender(self.ctx, self.counters, self.hwm, timeout_ms=0,
                             max_sockets=32, linger_ms=0)
        self.forwarder = Sender(self.ctx, self.counters, self.hwm)  # inline forward stages
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        held: tuple[Header, list[np.ndarray]] | None = None
        while not self._stop.is_set():
            try:
                held = self._step(poller, held)
            except Exception:  # a bug must not end the thread that reads both ports
                log.exception("data-plane I/O step failed")
                self.counters.error(Code.INTERNAL)
                held = None
                poller.register(self.pull, zmq.POLLIN)  # (re-registering only updates)
        self.sender.close()
        self.forwarder.close()
        self.pull.close(linger=0)
        self.router.close(linger=0)

    def _step(self, poller: zmq.Poller, held: tuple[Header, list[np.ndarray]] | None
              ) -> tuple[Header, list[np.ndarray]] | None:
        """One poll: serve a service request, drain data messages; the message held back."""
        if held is not None:  # a stage queue was full: retry before reading more
            if self._dispatch(*held):
                held = None
                poller.register(self.pull, zmq.POLLIN)
        events = dict(poller.poll(2 if held else 100))
        if self.router in events:
            self._serve()
        if held is None and self.pull in events:
            held = self._drain()
            if held is not None:
                poller.unregister(self.pull)
        return held

    def _drain(self, batch: int = 16) -> tuple[Header, list[np.ndarray]] | None:
        """Receive what is queued (up to `batch`): one poll per burst, not per message."""
        pull = self.pull
        assert pull is not None
        for _ in range(batch):
            try:
                f = pull.recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return None
            frames = [f]
            while f.more:  # the rest of a multipart message is already here (atomic)
                f = pull.recv(_NOBLOCK, copy=False)
                frames.append(f)
            held = self._receive(frames)
            if held is not None:
                return held
        return None

    def _receive(self, frames: list[zmq.Frame]) -> tuple[Header, list[np.ndarray]] | None:
        self.counters.received(sum(map(len, frames)))
        try:
            header, arrays = decode(frames, self.max_bytes)
        except WireError as exc:
            self._error(exc.code, str(exc), exc.reply, exc.request, exc.deployment)
            return None
        return None if self._dispatch(header, arrays) else (header, arrays)

    def _dispatch(self, header: Header, arrays: list[np.ndarray]) -> bool:
        try:
            return self.dispatch(header, arrays, self.forwarder.send)  # type: ignore[misc]
        except NodeError as exc:
            self._error(exc.code, str(exc), header.reply, header.request, header.deployment,
                        header.epoch, header.t0)
            return True
        except Exception as exc:  # a message a stage choked on: answered, thread lives on
            log.exception("dispatch of request %r failed", header.request[:40])
            self._error(Code.INTERNAL, f"internal error: {exc}", header.reply, header.request,
                        header.deployment, header.epoch, header.t0)
            return True

    def deliver(self, header: Header, arrays: list[np.ndarray],
                send: Callable[[str, list[Any]], int], timeout_s: float = 10.0) -> int:
        """A message from a stage of this process: dispatched without sockets; its bytes.

        Runs in the sending stage's thread (`send` is that thread's sender, for a forward
        stage handling it inline). A full stage queue is waited on like a full socket, up to
        `timeout_s`; errors (unknown stage, bad tensors) raise to the sender, which reports
        them to the request's reply endpoint as the receiving data plane would.
        """
        deadline = 0.0
        while not self.dispatch(header, arrays, send):
            now = time.monotonic()
            if not deadline:
                deadline = now + timeout_s
            elif now > deadline:
                self.counters.error(Code.SEND_TIMEOUT)
                raise WireError(f"stage {header.stage!r} of this node did not take a message "
                                f"within {timeout_s:g} s (queue full)", code=Code.SEND_TIMEOUT)
            time.sleep(0.0005)
        n = 0
        for a in arrays:
            n += a.nbytes
        self.counters.received(n)
        return n

    def _error(self, code: str, message: str, reply: str | None, request: str | None,
               deployment: str | None, epoch: int = 0, t0: float = 0.0) -> None:
        self.counters.error(code)
        log.debug("data-plane error %s: %s", code, message)
        if not reply or self.sender is None:
            return
        h = error_header(code, message, deployment=deployment or "", epoch=epoch,
                         request=request or "", reply=reply, src=self.node, t0=t0)
        try:
            self.sender.send(reply, encode(h, []), reply=True)
        except WireError as exc:  # the sender counted send_timeout itself
            if exc.code != Code.SEND_TIMEOUT:
                self.counters.error(exc.code)

    def _serve(self) -> None:
        frames = self.router.recv_multipart(copy=False)  # type: ignore[union-attr]
        if len(frames) < 2:
            self.counters.error(Code.BAD_FRAME)
            return
        t = time.perf_counter()
        try:
            reply = self.service(frames[1:])  # type: ignore[misc]
        except Exception:  # the handler answers what it knows; anything else ends here
            log.exception("service request failed")
            self.counters.error(Code.INTERNAL)
            reply = reply_frames(None, False, error="internal error", code=Code.INTERNAL)
        # a ROUTER drops a reply to a peer that is gone or full: this never blocks
        self.router.send_multipart([frames[0], *reply], copy=False)  # type: ignore[union-attr]
        log.debug("service request took %.3f ms", (time.perf_counter() - t) * 1e3)
