"""Namespaces on a bridge, one veth per board, links shaped with tc (tbf; netem if built).

Layout of testbed `<tag>`: a bridge `tfb<tag>br` in the root namespace holds the gateway
(.1 of a free 10.223.K.0/24), where the broker and the planner side are reachable; board
i lives in namespace `tfb<tag>-<node>` with `eth0` at .(i+2). Its veth's host end is
`tfb<tag>h<i>`:
- without delay, `h<i>` is a port of the bridge;
- with a delay and no netem, `h<i>` stays out of the bridge and a link shim
  (planner/testbed/linkshim.py) forwards frames between it and `tfb<tag>s<i>`, whose
  veth peer `tfb<tag>b<i>` is the bridge port: each direction gains the delay.
The rate is a tbf on `eth0` (the board's egress) and on `h<i>` (its ingress: the
bridge's or the shim's egress towards it), so a board's link is shaped both ways and
traffic between two boards crosses both boards' links (rates: the slower; delays add).
One pair's link can differ from the rest of a board's (`shape(..., pairs=)`): then each
end's root is an htb whose default class holds the board's link and one class per peer
holds that pair's, a u32 filter on the peer's address (dst on eth0, src on h<i>) sending
the pair's packets there, so the pair slows without touching the board's other traffic.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence

import planner.testbed.state as state
from planner.testbed.spec import LinkSpec, TestbedError

PREFIX = "tfb"
SUBNET_BASE = "10.223"
_LINK = re.compile(rf"^{PREFIX}(\d+)(br|[hsbp]\d+)$")
_NS = re.compile(rf"^{PREFIX}(\d+)-")
TBF_LATENCY_MS = 50  # queue of a shaped link, in time at its rate


def _run(cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or ["no message"])[-1]
        raise TestbedError(f"{' '.join(cmd)}: {msg}")
    return r


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *(["-n", ns] if ns else []), *args], check)


def tc(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["tc", *(["-n", ns] if ns else []), *args], check)


def names(tag: str) -> dict[str, str]:
    return {"bridge": f"{PREFIX}{tag}br"}


def namespace(tag: str, node: str) -> str:
    return f"{PREFIX}{tag}-{node}"


def host_veth(tag: str, i: int) -> str:
    return f"{PREFIX}{tag}h{i}"


def shim_pair(tag: str, i: int) -> tuple[str, str]:
    """(shim's end, bridge port) of board i's second veth."""
    return f"{PREFIX}{tag}s{i}", f"{PREFIX}{tag}b{i}"


def reason() -> str:
    """'' when namespaces, veths and tbf can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (iproute2)"
    probe = f"{PREFIX}chk{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except TestbedError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        ip("link", "set", "lo", "up", ns=probe)
        tc("qdisc", "add", "dev", "lo", "root", "tbf", "rate", "8mbit", "burst", "16kb",
           "latency", "50ms", ns=probe)
    except TestbedError as exc:
        return f"tc tbf is not usable: {exc}"
    finally:
        ip("netns", "del", probe, check=False)
    return ""


@functools.cache
def netem_available() -> bool:
    """Whether this kernel has the netem qdisc (then delays need no shim)."""
    probe = f"{PREFIX}nem{os.getpid()}"
    if ip("netns", "add", probe, check=False).returncode != 0:
        return False
    try:
        return tc("qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", ns=probe,
                  check=False).returncode == 0
    finally:
        ip("netns", "del", probe, check=False)


def _used_subnets() -> set[str]:
    out = ip("-o", "-4", "addr", "show", check=False).stdout
    return {str(ipaddress.ip_interface(w).network) for line in out.splitlines()
            for w in line.split() if re.match(r"^\d+\.\d+\.\d+\.\d+/\d+$", w)}


def free_subnet() -> ipaddress.IPv4Network:
    used = _used_subnets()
    for k in range(256):
        net = ipaddress.ip_network(f"{SUBNET_BASE}.{k}.0/24")
        if str(net) not in used:
            return net
    raise TestbedError(f"no free /24 left in {SUBNET_BASE}.0.0/16")


def create_bridge(tag: str, gateway: str, prefixlen: int) -> str:
    br = names(tag)["bridge"]
    ip("link", "add", br, "type", "bridge")
    ip("addr", "add", f"{gateway}/{prefixlen}", "dev", br)
    ip("link", "set", br, "up")
    return br


def add_board(tag: str, i: int, node: str, address: str, prefixlen: int, link: LinkSpec
              ) -> tuple[str, str] | None:
    """Namespace, veth and shaping of board i; (a, b) interfaces for a shim, or None."""
    ns, h, br = namespace(tag, node), host_veth(tag, i), names(tag)["bridge"]
    peer = f"{PREFIX}{tag}p{i}"
    ip("netns", "add", ns)
    ip("link", "add", h, "type", "veth", "peer", "name", peer)
    ip("link", "set", peer, "netns", ns)
    ip("link", "set", peer, "name", "eth0", ns=ns)
    ip("addr", "add", f"{address}/{prefixlen}", "dev", "eth0", ns=ns)
    ip("link", "set", "eth0", "up", ns=ns)
    ip("link", "set", "lo", "up", ns=ns)
    shim = None
    if link.delay_ms > 0 and not netem_available():
        s, b = shim_pair(tag, i)
        ip("link", "add", s, "type", "veth", "peer", "name", b)
        ip("link", "set", b, "master", br, "up")
        ip("link", "set", s, "up")
        ip("link", "set", h, "up")
        shim = (h, s)
    else:
        ip("link", "set", h, "master", br, "up")
    shape(tag, i, node, link)
    return shim


def shape(tag: str, i: int, node: str, link: LinkSpec,
          pairs: Mapping[str, LinkSpec] | None = None) -> None:
    """(Re)set board i's link both ways; `pairs`: peer address -> the link of that pair."""
    ends = (("eth0", namespace(tag, node), "dst"), (host_veth(tag, i), None, "src"))
    for dev, ns, match in ends:
        tc("qdisc", "del", "dev", dev, "root", ns=ns, check=False)
        if not pairs:
            if leaf := leaf_args(link):
                tc("qdisc", "add", "dev", dev, "root", *leaf, ns=ns)
            continue
        # htb passes each class through unlimited; its leaf qdisc is the link. r2q keeps
        # the quantum of a 100 Gbit class sane.
        tc("qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1",
           "r2q", "100000", ns=ns)
        classes = [(1, link, None)] + [(k, spec, addr) for k, (addr, spec)
                                       in enumerate(sorted(pairs.items()), start=2)]
        for k, spec, addr in classes:
            tc("class", "add", "dev", dev, "parent", "1:", "classid", f"1:{k:x}", "htb",
               "rate", "100gbit", ns=ns)
            if leaf := leaf_args(spec):
                tc("qdisc", "add", "dev", dev, "parent", f"1:{k:x}", "handle", f"{k:x}0:",
                   *leaf, ns=ns)
            if addr is not None:
                tc("filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
                   "u32", "match", "ip", match, f"{addr}/32", "flowid", f"1:{k:x}", ns=ns)


def leaf_args(link: LinkSpec) -> list[str]:
    """The qdisc of a link: netem (delay, rate) where it exists, else a tbf for the rate.

    Without netem a delay is the link shim's, so only the rate is left to tc here.
    """
    if link.delay_ms > 0 and netem_available():
        rate = ["rate", f"{link.rate_mbit}mbit"] if link.rate_mbit > 0 else []
        return ["netem", "delay", f"{link.delay_ms}ms", *rate, "limit", "100000"]
    return tbf_args(link.rate_mbit) if link.rate_mbit > 0 else []


def tbf_args(rate_mbit: float) -> list[str]:
    """tbf with a bucket of 2 ms at the rate (at least 2 full frames) and a 50 ms queue."""
    burst = max(int(rate_mbit * 1e6 / 8 * 0.002), 2 * 1514 + 64)
    return ["tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst),
            "latency", f"{TBF_LATENCY_MS}ms"]


# ---- finding and removing -------------------------------------------------------------------
def namespaces(tag: str | None = None) -> list[str]:
    out = ip("netns", "list", check=False).stdout
    found = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in found if (m := _NS.match(n)) and (tag is None or m.group(1) == tag)]


def links(tag: str | None = None) -> list[str]:
    out = ip("-o", "link", "show", check=False).stdout
    found = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
             if line.count(":") >= 2]
    return [n for n in found if (m := _LINK.match(n)) and (tag is None or m.group(1) == tag)]


def tags_present() -> set[str]:
    return ({_NS.match(n).group(1) for n in namespaces()}  # type: ignore[union-attr]
            | {_LINK.match(n).group(1) for n in links()})  # type: ignore[union-attr]


def remove(tag: str) -> None:
    """Stop the processes in testbed `tag`'s namespaces; delete its links and namespaces."""
    mine = namespaces(tag)
    pids = {int(p) for ns in mine for p in ip("netns", "pids", ns, check=False).stdout.split()}
    state.terminate(pids)
    for link in links(tag):  # one end of a veth takes the other with it
        ip("link", "del", link, check=False)
    for ns in mine:
        ip("netns", "del", ns, check=False)
