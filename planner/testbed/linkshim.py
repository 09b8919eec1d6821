"""A userspace link that delays every frame between two interfaces by a fixed time.

This kernel's tc has no netem, so link latency comes from here: the shim holds the two
inner ends of a node's link (its namespace's veth peer on one side, a veth enslaved to
the testbed bridge on the other), reads each Ethernet frame with an AF_PACKET socket,
and sends it out of the other side `delay` seconds after it arrived. Both directions
are delayed, so a round trip over the link gains 2 x delay, for every protocol (ZeroMQ,
MQTT, anything): nothing has to know about it. Frames keep their order (a FIFO per
direction: the delay is constant).

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
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23  # our own sends on a socket are not read back by it
MAX_FRAME = 65536 + 64


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
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def run(a: str, b: str, delay_s: float) -> None:
    """Forward frames a <-> b, each `delay_s` after it arrived, until SIGTERM."""
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
    while not stop:
        now = time.monotonic()
        due = [q[0][0] for q in queues.values() if q]
        timeout = max(0.0, min(due) - now) if due else 0.5
        try:
            events = poller.poll(timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd, _ in events:
            k = by_fd[fd]
            while True:
                try:
                    frame, addr = sides[k].recvfrom(MAX_FRAME)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                queues[k].append((now + delay_s, frame))  # k -> the other side
        now = time.monotonic()
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
