"""A userspace link that delays every frame between two interfaces by a fixed time.

This kernel's tc has no netem, so link latency comes from here: the shim holds the two
inner ends of a node's link (its namespace's veth peer on one side, a veth enslaved to
the testbed bridge on the other), reads each Ethernet frame with an AF_PACKET socket,
and sends it out of the other side `delay` seconds after it arrived. Both directions
are delayed, so a round trip over the link gains 2 x delay, for every protocol (ZeroMQ,
MQTT, anything): nothing has to know about it. Frames keep their order (a FIFO per
direction: the delay is constant), and the delay counts from the kernel's receive time
stamp of each frame, so the shim's own wake-up latency does not add to it.

The sockets use PACKET_VNET_HDR: the kernel hands over (and takes back) each frame with
its offload header, so checksums left to the NIC and TCP segmentation super-frames
cross the shim intact (without it, veth's checksum offload makes the receiver drop
every TCP segment). Runs as `python -m planner.testbed.linkshim A B DELAY_MS`; exits on
SIGTERM. Needs root (CAP_NET_RAW).
"""

from __future__ import annotations

import collections
import os
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23  # our own sends on a socket are not read back by it
MAX_FRAME = 65536 + 64
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def open_side(ifname: str) -> socket.socket:
    """A raw socket bound to one interface, carrying the offload header with each frame."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    try:
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass  # older kernels: outgoing frames are filtered by pkttype below
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # arrival times from the kernel
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def _arrival(anc: list) -> float:
    """The kernel's receive time of a frame (CLOCK_REALTIME), else now."""
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec * 1e-9
    return time.time()


def _wait(poller: select.epoll, until: float | None) -> list:
    """Events, waiting at most until `until` (epoll only has ms: the last ms is slept)."""
    if until is None:
        return poller.poll(0.5)
    left = until - time.time()
    if left > 0.0015:  # epoll rounds its time-out up to whole ms: wake a little early
        return poller.poll(int((left - 0.001) * 1000) / 1000)
    if left > 0:
        time.sleep(left)  # frames arriving meanwhile keep their kernel time stamps
    return poller.poll(0)


def run(a: str, b: str, delay_s: float) -> None:
    """Forward frames a <-> b, each `delay_s` after the kernel received it, until SIGTERM."""
    sides = {0: open_side(a), 1: open_side(b)}
    queues: dict[int, collections.deque[tuple[float, bytes]]] = {0: collections.deque(),
                                                                 1: collections.deque()}
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    by_fd = {s.fileno(): k for k, s in sides.items()}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    anc_size = socket.CMSG_SPACE(16)
    while not stop:
        due = [q[0][0] for q in queues.values() if q]
        try:
            events = _wait(poller, min(due) if due else None)
        except InterruptedError:
            continue
        for fd, _ in events:
            k = by_fd[fd]
            while True:
                try:
                    frame, anc, _, addr = sides[k].recvmsg(MAX_FRAME, anc_size)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                queues[k].append((_arrival(anc) + delay_s, frame))  # k -> the other side
        now = time.time()
        for k, q in queues.items():
            out = sides[1 - k]
            while q and q[0][0] <= now:
                try:
                    out.send(q.popleft()[1])
                except (BlockingIOError, OSError):
                    pass  # a full queue or a vanished interface drops the frame, as a wire would


def main(argv: list[str]) -> int:
    """`linkshim A B DELAY_MS`."""
    if len(argv) != 3:
        sys.stderr.write("usage: python -m planner.testbed.linkshim IFACE_A IFACE_B DELAY_MS\n")
        return 2
    try:
        os.nice(-10)  # wake on time under load: the delay is a deadline, not a minimum
    except OSError:
        pass
    run(argv[0], argv[1], float(argv[2]) / 1000.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
