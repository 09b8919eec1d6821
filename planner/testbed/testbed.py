"""Emulated boards on this machine: `with Testbed(spec) as tb:` -> tb.broker_url, tb.nodes.

Each board is a `tilefleet-node` in its own network namespace on a bridge
(planner/testbed/net.py), its CPU held to the board's calibrated speed by a cgroup quota
(planner/testbed/calibrate.py, cgroups.py), its link shaped by tc tbf and delayed by
netem or a link shim. Mosquitto and the planner side stay in the root namespace, on
the bridge's address. Without root, namespaces or cgroups the boards are plain local
agents padded to their speed (`tilefleet-node --emulate-speed F`), links unshaped, and
`emulation` says "padded". Everything made is recorded in the state file
(planner/testbed/state.py) as it is made; `down()` (and `cleanup` after a killed
process) removes it all.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import planner.testbed.calibrate as calibrate
import planner.testbed.cgroups as cgroups
import planner.testbed.net as net
import planner.testbed.procs as procs
import planner.testbed.state as state
from planner.testbed.calibrate import BoardEmulation
from planner.testbed.cleanup import remove_tag
from planner.testbed.spec import LinkSpec, TestbedError, TestbedSpec


@dataclass
class TestbedNode:
    """One emulated board as the planner sees it."""

    __test__ = False

    name: str
    board: str
    tier: str
    address: str  # where its agent binds and is reached
    threads: int
    emulation: str  # cgroup | padded | none
    cpus: float | None  # cgroup quota in host cores (None: unlimited)
    speed: float  # of one host core per board core (padded: the --emulate-speed factor)
    capped: bool
    link: LinkSpec
    namespace: str = ""
    cgroup: str = ""
    period_ms: float = 0.0
    pid: int = 0
    # peer node -> this pair's own link at this board's end (Testbed.set_link(peer=))
    pairs: dict[str, LinkSpec] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["link"] = self.link.to_json()
        d["pairs"] = {peer: spec.to_json() for peer, spec in self.pairs.items()}
        return d


def choose_emulation(wanted: str) -> tuple[str, bool, list[str]]:
    """(cpu emulation, use namespaces, notes) for `wanted` on this machine."""
    notes: list[str] = []
    why_net = net.reason()
    why_cpu = cgroups.reason()
    if wanted in ("auto", "cgroup"):
        if not why_net and not why_cpu:
            return "cgroup", True, notes
        if wanted == "cgroup":
            raise TestbedError(f"cgroup emulation is not possible here: {why_net or why_cpu}")
        notes.append(f"boards padded, not throttled: {why_net or why_cpu}")
        return "padded", False, notes
    if why_net:
        notes.append(f"no namespaces, links not shaped: {why_net}")
    return wanted, not why_net, notes


class Testbed:
    """A running testbed; `up()`/`down()` or a `with` block (down even on errors)."""

    __test__ = False

    def __init__(self, spec: TestbedSpec, workdir: str | Path | None = None,
                 state_root: Path | None = None, fresh_calibration: bool = False) -> None:
        self.spec = spec
        self.state_root = state_root or state.state_dir()
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"tilefleet-testbed-{spec.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.fresh_calibration = fresh_calibration
        self.tag = ""
        self.broker_url = ""
        self.gateway = ""  # the planner side's address, as the boards reach it
        self.nodes: list[TestbedNode] = []
        self.emulation = "none"
        self.notes: list[str] = []
        self.host_ms = 0.0
        self._procs: list[subprocess.Popen] = []
        self._agents: dict[str, subprocess.Popen] = {}
        self._doc: dict[str, Any] = {}

    # ---- lifecycle ---------------------------------------------------------------------------
    def up(self, wait_s: float = 60.0) -> Testbed:
        """Build everything, start broker and agents, wait until every agent is online."""
        try:
            self._up(wait_s)
        except BaseException:
            self.down()
            raise
        return self

    def _up(self, wait_s: float) -> None:
        emulation, use_ns, self.notes = choose_emulation(self.spec.emulation)
        self.emulation = emulation
        boards = {b.kind: b for b in self.spec.boards}
        emus: dict[str, BoardEmulation] = {}
        if emulation in ("cgroup", "padded"):
            self.host_ms = calibrate.host_ms(self.state_root, self.fresh_calibration)
            emus = {k: calibrate.emulate(k, self.host_ms) for k in boards}
            self.notes += [f"{e.kind}: faster than this machine can emulate, capped at "
                           f"{e.cpus:g} cores" for e in emus.values() if e.capped]
        self._claim(use_ns)
        subnet = ipaddress.ip_network(self._doc["subnet"]) if use_ns else None
        gateway = str(subnet.network_address + 1) if subnet else "127.0.0.1"
        self.gateway = gateway
        infra = None
        if use_ns:
            assert subnet is not None
            net.create_bridge(self.tag, gateway, subnet.prefixlen)
        if emulation == "cgroup":
            infra = cgroups.create(self.tag, "infra", None)
        broker, self.broker_url = procs.start_broker(gateway, self.workdir, infra)
        self._procs.append(broker)
        self._record()
        for i, (name, b) in enumerate(self.spec.nodes()):
            link = self.spec.link_of(b) if use_ns else LinkSpec()
            e = emus.get(b.kind)
            node = TestbedNode(name, b.kind, b.tier, "127.0.0.1", e.threads if e else 0,
                               emulation, e.cpus if e and emulation == "cgroup" else None,
                               e.share if e else 1.0, bool(e and e.capped), link)
            if use_ns:
                assert subnet is not None
                node.address = str(subnet.network_address + 2 + i)
                node.namespace = net.namespace(self.tag, name)
                shim = net.add_board(self.tag, i, name, node.address, subnet.prefixlen, link)
                if shim:
                    self._procs.append(procs.start_shim(*shim, link.delay_ms, self.workdir, infra))
            group = None
            if emulation == "cgroup" and e is not None:
                node.period_ms = round(e.period_s * 1e3, 3)
                group = cgroups.create(self.tag, name, e.cpus, e.period_s)
                node.cgroup = str(group)
            self.nodes.append(node)
            self._start_agent(node, group)
            self._record()
        self._wait_online(wait_s)
        self._record()

    def _claim(self, use_ns: bool) -> None:
        """Pick a free tag (and subnet) and write the first state file, under the lock."""
        with state.locked(self.state_root):
            old = state.read(self.spec.name, self.state_root)
            if old and state.alive(int(old.get("pid", 0))):
                raise TestbedError(f"testbed {self.spec.name!r} is already up (pid "
                                   f"{old['pid']}); `tilefleet testbed down --name "
                                   f"{self.spec.name}` first")
            if old:  # left by a killed `up`: clear it first
                remove_tag(str(old["tag"]), [int(p) for p in old.get("pids", [])])
            used = {str(d.get("tag")) for d in state.all_states(self.state_root)}
            used |= net.tags_present() | {g.name[len(cgroups.PREFIX):].split("-")[0]
                                          for g in cgroups.groups()}
            self.tag = next(str(k) for k in range(1000) if str(k) not in used)
            self._doc = {"name": self.spec.name, "tag": self.tag, "pid": os.getpid(),
                         "started_at": time.time(), "workdir": str(self.workdir),
                         "subnet": str(net.free_subnet()) if use_ns else "",
                         "ready": False}
            state.write(self._doc, self.state_root)

    def _start_agent(self, node: TestbedNode, group: Path | None) -> None:
        argv = [sys.executable, "-m", "node.cli", "--name", node.name, "--broker",
                self.broker_url, "--board", node.board, "--host", node.address,
                "--data-port", "0", "--state-dir", str(self.workdir / node.name)]
        if node.threads:
            argv += ["--threads", str(node.threads)]
        if node.emulation == "padded" and node.speed < 1:
            argv += ["--emulate-speed", f"{node.speed:.6g}"]
        p = procs.spawn(argv, self.workdir / f"{node.name}.log", group, node.namespace or None)
        node.pid = p.pid
        self._agents[node.name] = p
        self._procs.append(p)

    def _wait_online(self, wait_s: float) -> None:
        from planner.fleet import Fleet

        deadline = time.monotonic() + wait_s
        with Fleet.connect(self.broker_url) as fleet:
            while True:
                online = {n.name for n in fleet.nodes()}
                if all(n.name in online for n in self.nodes):
                    return
                dead = [n for n, p in self._agents.items() if p.poll() is not None]
                if dead:
                    raise TestbedError(f"agent {dead[0]} exited: "
                                       f"{self.log(dead[0]).strip().splitlines()[-1:]}")
                if time.monotonic() > deadline:
                    missing = sorted(n.name for n in self.nodes if n.name not in online)
                    raise TestbedError(f"agents {', '.join(missing)} not online after "
                                       f"{wait_s:.0f} s (logs in {self.workdir})")
                time.sleep(0.1)

    def down(self) -> None:
        """Stop every process, remove namespaces, links, qdiscs, cgroups, the state file."""
        procs.stop(self._procs)
        self._procs.clear()
        self._agents.clear()
        if self.tag:
            remove_tag(self.tag)
            cur = state.read(self.spec.name, self.state_root)
            if cur and str(cur.get("tag")) == self.tag:
                state.remove(self.spec.name, self.state_root)
            self.tag = ""
        if self._own_dir and not os.environ.get("TILEFLEET_KEEP_TESTBED_DIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Testbed:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---- what it holds -----------------------------------------------------------------------
    def _record(self) -> None:
        self._doc.update(self.describe())
        self._doc["ready"] = bool(self.nodes) and all(p.poll() is None for p in self._procs)
        self._doc["pids"] = [p.pid for p in self._procs]
        state.write(self._doc, self.state_root)

    def describe(self) -> dict[str, Any]:
        """The testbed as JSON: broker, emulation, nodes, calibration, notes."""
        return {"name": self.spec.name, "tag": self.tag, "broker": self.broker_url,
                "emulation": self.emulation, "topology": self.spec.topology,
                "boards": [asdict(b) for b in self.spec.boards],
                "nodes": [n.to_json() for n in self.nodes],
                "calibration": {"host_ms": round(self.host_ms, 3),
                                "reference": calibrate.REFERENCE} if self.host_ms else None,
                "notes": list(self.notes)}

    def node(self, name: str) -> TestbedNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise TestbedError(f"no node {name!r} in testbed {self.spec.name!r}")

    def log(self, name: str) -> str:
        try:
            return (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def dead(self) -> list[str]:
        """Agents whose process has exited."""
        return [n for n, p in self._agents.items() if p.poll() is not None]

    def set_link(self, name: str, rate_mbit: float, delay_ms: float | None = None,
                 peer: str | None = None) -> None:
        """Change a board's link while running, or with `peer` only its link to that board.

        A board's link: `delay_ms` None keeps its delay (without netem the delay is its
        link shim's, fixed at `up`). A pair's link, at this board's end (both ways): the
        rate instead of the board's, `delay_ms` added to the board's (needs netem); the
        board's other traffic keeps the board's link, the peer's end keeps the peer's.
        """
        n = self._shapeable(name)
        if rate_mbit < 0 or (delay_ms or 0) < 0:
            raise TestbedError(f"link of {name}: rate and delay must be >= 0")
        if peer is None:
            delay = n.link.delay_ms if delay_ms is None else delay_ms
            if delay != n.link.delay_ms and not net.netem_available():
                raise TestbedError(f"{name}'s delay is fixed at {n.link.delay_ms:g} ms here "
                                   "(no netem: its link shim was started with it)")
            n.link = LinkSpec(rate_mbit, delay)
        else:
            if self.node(peer) is n:
                raise TestbedError(f"a pair needs two boards, not {name} and itself")
            if delay_ms and not net.netem_available():
                raise TestbedError("a pair's own delay needs the netem qdisc, missing here")
            n.pairs[peer] = LinkSpec(rate_mbit, delay_ms or 0.0)
        self._reshape(n)

    def clear_link(self, name: str, peer: str | None = None) -> None:
        """Undo set_link: drop the pair's link to `peer`, or all of them and restore the
        board's link to the spec's."""
        n = self._shapeable(name)
        if peer is None:
            n.pairs.clear()
            n.link = self.spec.link_of(next(b for b in self.spec.boards if b.kind == n.board))
        else:
            self.node(peer)
            n.pairs.pop(peer, None)
        self._reshape(n)

    def _shapeable(self, name: str) -> TestbedNode:
        n = self.node(name)
        if not n.namespace:
            raise TestbedError("links can only be shaped with namespaces (root)")
        return n

    def _reshape(self, n: TestbedNode) -> None:
        # a pair's delay comes on top of the board's (a shim, if any, delays it already)
        pairs = {self.node(p).address: LinkSpec(spec.rate_mbit, n.link.delay_ms + spec.delay_ms)
                 for p, spec in n.pairs.items()}
        net.shape(self.tag, self.nodes.index(n), n.name, n.link, pairs)
        self._record()

    def popen_in(self, name: str, argv: list[str], cgroup: bool = True, **kw: Any
                 ) -> subprocess.Popen:
        """Start argv inside a board's namespace, and its cgroup unless cgroup=False."""
        n = self.node(name)
        group = Path(n.cgroup) if n.cgroup and cgroup else None
        return subprocess.Popen(argv, cwd=procs.REPO, **kw,
                                preexec_fn=procs.child_setup(group, n.namespace or None, False))

    def run_in(self, name: str, argv: list[str], cgroup: bool = True, timeout: float = 120,
               **kw: Any) -> subprocess.CompletedProcess:
        """Run argv to its end inside a board's namespace (and cgroup): tests, benchmarks."""
        if kw.pop("capture_output", False):
            kw["stdout"] = kw["stderr"] = subprocess.PIPE
        with self.popen_in(name, argv, cgroup, **kw) as p:
            try:
                out, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                raise
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)
