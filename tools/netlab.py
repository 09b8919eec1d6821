#!/usr/bin/env python3
"""A network testbed on one machine: N network namespaces on a bridge, with shaped links.

    python tools/netlab.py --check                 # exit 0 if it can run here (root, netns, tbf)
    python tools/netlab.py up 3                    # prints the lab's JSON (tag, addresses)
    python tools/netlab.py exec TAG 0 -- CMD ...   # run CMD inside namespace 0
    python tools/netlab.py shape TAG 0 4 [--peer 1] [--direction egress|ingress|both]
    python tools/netlab.py unshape TAG 0
    python tools/netlab.py down TAG                # or: cleanup [--all]
    python tools/netlab.py list

Layout: a bridge `tfl<tag>b` in the root namespace holds the gateway address (.1 of a free
10.222.K.0/24), so a broker or client on the host is reachable from every namespace at
that address; namespace i (`tfl<tag>n<i>`) has `eth0` at .(i+2), the other end of a veth
(`tfl<tag>h<i>`) enslaved to the bridge. Every node-to-node packet crosses the sender's
eth0 and the receiver's host-side veth, so:
- egress of node i is shaped on its eth0 (inside the namespace),
- ingress of node i on its host-side veth (the bridge's egress towards it): no ifb needed;
- `--peer J` shapes only the traffic between i and j (an htb root with one tbf leaf and a
  u32 filter on the peer's address), so the pair's link slows without touching i's
  traffic to the host or other nodes.
netem is not available on every kernel (not here): tbf only limits the rate.

`agents_on_lab(nodes, workdir)` is the tilefleet set-up on top: Mosquitto listening on
the bridge address and one `tilefleet-node` per namespace (`--host` its address).

Names carry the owner's pid (`tfl<pid><letter>`): `cleanup` removes labs whose owner is
gone (a crashed test), `cleanup --all` every lab, `down` one. Labs made by `up` belong to
no process (pid 0) and stay until `down` or `cleanup --all`. Needs root.
Exit codes: 0 done, 2 bad input or not usable here (one line on stderr).
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "tfl"
_TAG = re.compile(rf"^{PREFIX}(\d+)([a-z])")
SUBNET_BASE = "10.222"  # labs take 10.222.K.0/24, K free at creation
_counter = itertools.count()  # labs made by this process: tag letters a, b, ...


class NetlabError(Exception):
    """The testbed cannot be built or changed here (the message says why, on one line)."""


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    return _run(cmd, check)


def _tc(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["tc", *(["-n", ns] if ns else []), *args]
    return _run(cmd, check)


def _run(cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or ["no message"])[-1]
        raise NetlabError(f"{' '.join(cmd)}: {msg}")
    return r


def check() -> str:
    """'' if a lab can run here, else why not (root, ip netns, tc tbf)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (iproute2)"
    probe = f"{PREFIX}chk{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except NetlabError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _ip("link", "set", "lo", "up", ns=probe)
        _tc("qdisc", "add", "dev", "lo", "root", "tbf", "rate", "8mbit", "burst", "16kb",
            "latency", "50ms", ns=probe)
    except NetlabError as exc:
        return f"tc tbf is not usable: {exc}"
    finally:
        _ip("netns", "del", probe, check=False)
    return ""


def _used_subnets() -> set[str]:
    out = _ip("-o", "-4", "addr", "show", check=False).stdout
    return {str(ipaddress.ip_interface(w).network) for line in out.splitlines()
            for w in line.split() if re.match(r"^\d+\.\d+\.\d+\.\d+/\d+$", w)}


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_subnets()
    for k in range(256):
        net = ipaddress.ip_network(f"{SUBNET_BASE}.{k}.0/24")
        if str(net) not in used:
            return net
    raise NetlabError(f"no free /24 left in {SUBNET_BASE}.0.0/16")


def _letter() -> str:
    return "abcdefghijklmnopqrstuvwxyz"[next(_counter) % 26]


def _pid_alive(pid: int) -> bool:
    return pid > 0 and Path(f"/proc/{pid}").exists()


@dataclass
class Lab:
    """N namespaces on a bridge; `up()`/`down()` or a `with` block (down even on errors)."""

    nodes: int
    tag: str = ""
    net: ipaddress.IPv4Network | None = None
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= 200:
            raise NetlabError(f"a lab has 1..200 nodes, not {self.nodes}")
        if not self.tag:
            self.tag = f"{os.getpid()}{_letter()}"
        if not _TAG.match(f"{PREFIX}{self.tag}"):
            raise NetlabError(f"bad lab tag {self.tag!r} (digits then one letter, e.g. 0a)")

    # ---- names and addresses ------------------------------------------------------------
    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.tag}b"

    def ns(self, i: int) -> str:
        return f"{PREFIX}{self.tag}n{i}"

    def host_veth(self, i: int) -> str:
        return f"{PREFIX}{self.tag}h{i}"

    @property
    def gateway(self) -> str:
        """The bridge's address: where host services (broker, client) are reachable."""
        assert self.net is not None, "lab is not up"
        return str(self.net.network_address + 1)

    def addr(self, i: int) -> str:
        assert self.net is not None, "lab is not up"
        return str(self.net.network_address + 2 + i)

    def describe(self) -> dict:
        return {"tag": self.tag, "bridge": self.bridge, "gateway": self.gateway,
                "subnet": str(self.net), "nodes": [
                    {"index": i, "namespace": self.ns(i), "address": self.addr(i),
                     "host_veth": self.host_veth(i)} for i in range(self.nodes)]}

    # ---- lifecycle ----------------------------------------------------------------------
    def up(self) -> Lab:
        """Create bridge, namespaces and veths; on any failure remove what was made."""
        try:
            self.net = self.net or _free_subnet()
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(self.nodes):
                ns, h, peer = self.ns(i), self.host_veth(i), f"{PREFIX}{self.tag}p{i}"
                _ip("netns", "add", ns)
                _ip("link", "add", h, "type", "veth", "peer", "name", peer)
                _ip("link", "set", peer, "netns", ns)
                _ip("link", "set", peer, "name", "eth0", ns=ns)
                _ip("addr", "add", f"{self.addr(i)}/{self.net.prefixlen}", "dev", "eth0", ns=ns)
                _ip("link", "set", "eth0", "up", ns=ns)
                _ip("link", "set", "lo", "up", ns=ns)
                _ip("link", "set", h, "master", self.bridge, "up")
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop every process in the namespaces, remove veths, namespaces and the bridge."""
        _remove(self.tag, self._procs)
        self._procs.clear()

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---- processes ----------------------------------------------------------------------
    def command(self, i: int, argv: Sequence[str]) -> list[str]:
        """argv wrapped to run inside namespace i."""
        return ["ip", "netns", "exec", self.ns(i), *argv]

    def popen(self, i: int, argv: Sequence[str], **kw) -> subprocess.Popen:
        """Start argv inside namespace i (`ip netns exec` execs it: the pid is argv's)."""
        p = subprocess.Popen(self.command(i, argv), **kw)
        self._procs.append(p)
        return p

    def run(self, i: int, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(i, argv), **kw)

    # ---- shaping ------------------------------------------------------------------------
    def shape(self, i: int, rate_mbit: float, direction: str = "egress", peer: int | None = None,
              burst_kb: int = 32, latency_ms: int = 100) -> None:
        """Limit node i's egress/ingress/both to rate_mbit (only towards `peer` if given)."""
        if rate_mbit <= 0:
            raise NetlabError(f"rate must be > 0 Mbit/s, got {rate_mbit}")
        if direction not in ("egress", "ingress", "both"):
            raise NetlabError(f"direction must be egress, ingress or both, not {direction!r}")
        self._index(i)
        if peer is not None:
            self._index(peer)
        self.unshape(i)
        tbf = ["tbf", "rate", f"{rate_mbit}mbit", "burst", f"{burst_kb}kb",
               "latency", f"{latency_ms}ms"]
        ends = []
        if direction in ("egress", "both"):  # leaves i through eth0, to the peer's address
            ends.append(("eth0", self.ns(i), "dst", peer))
        if direction in ("ingress", "both"):  # reaches i through the bridge's veth, from the peer
            ends.append((self.host_veth(i), None, "src", peer))
        for dev, ns, match, who in ends:
            if who is None:
                _tc("qdisc", "add", "dev", dev, "root", *tbf, ns=ns)
                continue
            # htb passes everything through class 1:1 (unlimited) except the peer's
            # packets, which the u32 filter sends to 1:2 and its tbf leaf.
            _tc("qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1",
                "r2q", "100000", ns=ns)
            for cls in ("1:1", "1:2"):
                _tc("class", "add", "dev", dev, "parent", "1:", "classid", cls, "htb",
                    "rate", "100gbit", ns=ns)
            _tc("qdisc", "add", "dev", dev, "parent", "1:2", "handle", "20:", *tbf, ns=ns)
            _tc("filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
                "u32", "match", "ip", match, f"{self.addr(who)}/32", "flowid", "1:2", ns=ns)

    def unshape(self, i: int) -> None:
        """Remove any shaping of node i (both directions)."""
        self._index(i)
        _tc("qdisc", "del", "dev", "eth0", "root", ns=self.ns(i), check=False)
        _tc("qdisc", "del", "dev", self.host_veth(i), "root", check=False)

    def _index(self, i: int) -> None:
        if not 0 <= i < self.nodes:
            raise NetlabError(f"lab {self.tag} has nodes 0..{self.nodes - 1}, not {i}")

    @classmethod
    def attach(cls, tag: str) -> Lab:
        """The running lab `tag` (as `up` printed it)."""
        namespaces = [n for n in _namespaces() if n.startswith(f"{PREFIX}{tag}n")]
        if not namespaces:
            raise NetlabError(f"no lab {tag!r} here (see: netlab.py list)")
        out = _ip("-o", "-4", "addr", "show", "dev", f"{PREFIX}{tag}b").stdout.split()
        cidr = next((w for w in out if "/" in w), None)
        if cidr is None:
            raise NetlabError(f"lab {tag!r} has no bridge address")
        return cls(len(namespaces), tag, ipaddress.ip_interface(cidr).network)


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links() -> list[str]:
    out = _ip("-o", "link", "show", check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
            if line.count(":") >= 2]


def _remove(tag: str, procs: Sequence[subprocess.Popen] = ()) -> None:
    """Tear down lab `tag`: processes in its namespaces (TERM, then KILL), links, namespaces."""
    mine = [n for n in _namespaces() if n.startswith(f"{PREFIX}{tag}n")]
    pids = {int(p) for ns in mine for p in _ip("netns", "pids", ns, check=False).stdout.split()}
    pids |= {p.pid for p in procs if p.poll() is None}
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while any(_pid_alive(p) and not _zombie(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _pid_alive(pid):
            _signal(pid, signal.SIGKILL)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    for link in _links():  # deleting one end of a veth removes both, without waiting for
        if link.startswith(f"{PREFIX}{tag}h") or link == f"{PREFIX}{tag}b":  # the ns to go
            _ip("link", "del", link, check=False)
    for ns in mine:
        _ip("netns", "del", ns, check=False)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def labs() -> dict[str, int]:
    """Tags of the labs present here -> owner pid (0: made by `up`, owned by no process)."""
    out: dict[str, int] = {}
    for name in _namespaces() + _links():
        if (m := _TAG.match(name)) and not name.startswith(f"{PREFIX}chk"):
            out[m.group(1) + m.group(2)] = int(m.group(1))
    return out


def cleanup(everything: bool = False) -> list[str]:
    """Remove labs whose owner process is gone (all of them with `everything`)."""
    gone = [t for t, pid in labs().items() if everything or (pid > 0 and not _pid_alive(pid))]
    for tag in gone:
        _remove(tag)
    return gone


def die_with_parent() -> None:  # in a child before exec: SIGTERM when its parent dies
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def wait_listening(host: str, port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise NetlabError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s")


@dataclass
class AgentsOnLab:
    lab: Lab
    broker_url: str
    names: list[str]


@contextmanager
def agents_on_lab(nodes: int, workdir: Path, board: str = "laptop",
                  mosquitto: str | None = None) -> Iterator[AgentsOnLab]:
    """A lab, Mosquitto on its bridge and agent n<i> in namespace i; all gone afterwards.

    Logs go to workdir (mosquitto.log, n<i>.log). Children die with this process
    (PR_SET_PDEATHSIG), and the lab's teardown kills whatever is left in its namespaces.
    """
    exe = mosquitto or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with Lab(nodes) as lab:
        with socket.socket() as s:
            s.bind((lab.gateway, 0))
            port = s.getsockname()[1]
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} {lab.gateway}\nallow_anonymous true\n"
                        "persistence false\nset_tcp_nodelay true\n")
        with open(workdir / "mosquitto.log", "ab") as log:
            broker = subprocess.Popen([exe, "-c", str(conf)], stdout=log,
                                      stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        try:
            wait_listening(lab.gateway, port)
            url = f"mqtt://{lab.gateway}:{port}"
            names = [f"n{i}" for i in range(nodes)]
            for i, name in enumerate(names):
                with open(workdir / f"{name}.log", "ab") as out:
                    lab.popen(i, [sys.executable, "-m", "node.cli", "--name", name,
                                  "--broker", url, "--board", board, "--host", lab.addr(i),
                                  "--data-port", "0", "--state-dir", str(workdir / name)],
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              preexec_fn=die_with_parent, cwd=Path(__file__).resolve().parents[1])
            yield AgentsOnLab(lab, url, names)
        finally:
            broker.terminate()
            try:
                broker.wait(5)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that a lab can run here")
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("up", help="create a lab of N namespaces; prints its JSON")
    p.add_argument("nodes", type=int)
    p = sub.add_parser("down", help="remove lab TAG")
    p.add_argument("tag")
    p = sub.add_parser("cleanup", help="remove labs whose owner process is gone")
    p.add_argument("--all", action="store_true", help="remove every lab")
    sub.add_parser("list", help="labs present here")
    p = sub.add_parser("exec", help="run a command inside node I of lab TAG")
    p.add_argument("tag")
    p.add_argument("index", type=int)
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = sub.add_parser("shape", help="limit node I's link to RATE Mbit/s (tc tbf)")
    p.add_argument("tag")
    p.add_argument("index", type=int)
    p.add_argument("rate", type=float, help="Mbit/s")
    p.add_argument("--peer", type=int, help="only the traffic between I and this node")
    p.add_argument("--direction", default="both", choices=("egress", "ingress", "both"))
    p.add_argument("--burst-kb", type=int, default=32)
    p = sub.add_parser("unshape", help="remove node I's shaping")
    p.add_argument("tag")
    p.add_argument("index", type=int)
    a = ap.parse_args(argv)
    try:
        if a.check:
            reason = check()
            if reason:
                raise NetlabError(reason)
            print("netlab: root, ip netns and tc tbf are usable")
            return 0
        if a.cmd == "up":
            lab = Lab(a.nodes, tag=f"0{_letter()}")
            while lab.tag in labs():
                lab = Lab(a.nodes, tag=f"0{_letter()}")
            print(json.dumps(lab.up().describe(), indent=2))
        elif a.cmd == "down":
            Lab.attach(a.tag)
            _remove(a.tag)
        elif a.cmd == "cleanup":
            print(" ".join(cleanup(a.all)) or "nothing to clean")
        elif a.cmd == "list":
            for tag, pid in sorted(labs().items()):
                print(
                    f"{tag}\towner {pid or 'none'}"
                    f"{'' if pid == 0 or _pid_alive(pid) else ' (gone)'}"
                )
        elif a.cmd == "exec":
            argv_ = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
            if not argv_:
                raise NetlabError("exec: give a command after --")
            lab = Lab.attach(a.tag)
            lab._index(a.index)
            return lab.run(a.index, argv_).returncode
        elif a.cmd == "shape":
            Lab.attach(a.tag).shape(a.index, a.rate, a.direction, a.peer, a.burst_kb)
        elif a.cmd == "unshape":
            Lab.attach(a.tag).unshape(a.index)
        else:
            ap.print_usage(sys.stderr)
            return 2
    except NetlabError as exc:
        print(f"netlab: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
