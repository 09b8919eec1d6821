"""A link that slows down mid-stream makes the planner move the traffic off it.

Three real agents, each in its own network namespace (tools/netlab.py), talk to a real
Mosquitto and to this process through a bridge. A 2-stage layer-range deployment cuts
the model where a big activation crosses n0 -> n1. Mid-stream, that pair's link is
shaped to a few Mbit/s with tc tbf (only the n0 <-> n1 traffic: the rest of n0's
link stays fast), so the transfer becomes the bottleneck. The watcher's link probe sees
the bandwidth drop for several probes in a row, re-plans (the detail names the link),
and the new epoch sends fewer bytes over n0 -> n1 per frame. Every frame is delivered
once and is bit-identical to a local interpreter. Skipped without root / netns / tbf.
"""

from __future__ import annotations

import ctypes
import importlib.util
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from planner.constraints import Constraints, Pin
from planner.fleet import Fleet
from planner.fleet.reference import LocalModel, random_inputs
from planner.graph import ModelGraph
from planner.live import DriftRule, ReplanPolicy
from planner.live.drills import Stream
from planner.modelbuild import recipes
from tests.conftest import MOSQUITTO
from tests.e2e._live import HAVE_MOSQUITTO

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("netlab", ROOT / "tools" / "netlab.py")
netlab = importlib.util.module_from_spec(_spec)
sys.modules["netlab"] = netlab  # dataclasses look the module up while building the class
_spec.loader.exec_module(netlab)

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto not installed")]


def _die_with_parent() -> None:  # in the child, before exec: die if the test process dies
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class LabFleet:
    lab: object
    fleet: Fleet
    names: list[str]
    workdir: Path


@contextmanager
def lab_fleet(nodes: int) -> Iterator[LabFleet]:
    """A netlab of `nodes` namespaces, Mosquitto on its bridge, one agent per namespace."""
    reason = netlab.check()
    if reason:
        pytest.skip(f"network lab not usable here: {reason}")
    netlab.cleanup()  # labs left by a crashed run of this test
    with tempfile.TemporaryDirectory(prefix="e2e-netlab-") as d, netlab.Lab(nodes) as lab:
        work = Path(d)
        import socket

        with socket.socket() as s:
            s.bind((lab.gateway, 0))
            port = s.getsockname()[1]
        (work / "mosquitto.conf").write_text(f"listener {port} {lab.gateway}\n"
                                             "allow_anonymous true\npersistence false\n")
        log = open(work / "mosquitto.log", "ab")
        broker = subprocess.Popen([MOSQUITTO, "-c", str(work / "mosquitto.conf")], stdout=log,
                                  stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        try:
            wait_port_on(lab.gateway, port)
            url = f"mqtt://{lab.gateway}:{port}"
            names = [f"n{i}" for i in range(nodes)]
            for i, name in enumerate(names):
                out = open(work / f"{name}.log", "ab")
                lab.popen(i, [sys.executable, "-m", "node.cli", "--name", name, "--broker", url,
                              "--board", "laptop", "--host", lab.addr(i), "--data-port", "0",
                              "--state-dir", str(work / name)],
                          stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          preexec_fn=_die_with_parent, cwd=ROOT)
                out.close()
            with Fleet.connect(url) as fleet:
                fleet.wait_for_nodes(nodes, 60)
                yield LabFleet(lab, fleet, names, work)
        finally:
            broker.terminate()
            broker.wait(5)
            log.close()


def wait_port_on(host: str, port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def link_bytes(graph: ModelGraph, stages: dict, a: str, b: str) -> int:
    """Bytes per frame the layout sends from node a to node b (layer-range chains)."""
    chain = sorted(stages.values(), key=lambda s: s["ops"][0])
    return sum(graph.cut_bytes(y["ops"][0]) for x, y in zip(chain, chain[1:], strict=False)
               if (x["node"], y["node"]) == (a, b))


def test_shaped_link_mid_stream_moves_traffic_off_it():
    data = recipes.mobilenet_v2_like(input_size=64, dtype="float32", seed=0)
    graph = ModelGraph(data, "mobilenet_v2_like_64")
    with lab_fleet(3) as env:
        n0, n1 = env.names[:2]
        profile = env.fleet.profile(graph, progress=False)
        # The first deploy is pinned to a cut where 98 KB cross n0 -> n1 per frame.
        pins = (Pin(0, 6, n0), Pin(6, len(graph.ops), n1))
        dep = env.fleet.deploy(graph, name="linkdrift", strategy="throughput", profile=profile,
                               constraints=Constraints(pins=pins, objective="throughput"),
                               progress=False, timeout_s=3.0, retries=5)
        assert dep.record.stage_nodes() == [n0, n1]
        before = link_bytes(graph, dep.record.stages, n0, n1)
        policy = ReplanPolicy(rule=DriftRule(threshold=1.0), link_probe_s=0.5,
                              probe_bytes=16_000, cooldown_s=600,
                              constraints=Constraints(objective="throughput"))
        watcher = dep.enable_replanning(graph, profile=profile, policy=policy)
        local = LocalModel(data)
        xs = [random_inputs(dep.record.model["inputs"], s) for s in range(8)]
        s = Stream(dep, xs, [local.run(x) for x in xs]).start()
        try:
            time.sleep(3.0)  # probes set the link's baseline
            t_shape = time.monotonic()
            env.lab.shape(0, 4, "egress", peer=1)
            replanned = watcher.wait_for(1, 30)
            t_rep = time.monotonic()
            time.sleep(1.0)
        finally:
            s.stop()
            watcher.stop()
        ev = watcher.replans[0] if watcher.replans else None
        after = link_bytes(graph, dep.record.stages, n0, n1)
        print(f"\nlink drift: {before} B/frame over {n0}->{n1}, shaped to 4 Mbit/s; re-plan "
              f"{t_rep - t_shape:.1f} s later ({ev and ev.mode}): {ev and ev.detail}; "
              f"now {after} B/frame, stages {dep.record.stage_nodes()}; "
              f"{s.results} frames, {s.identical} identical")
        assert replanned, watcher.errors
        assert f"{n0}->{n1}" in ev.detail
        assert after < before
        assert s.results == s.identical > 0 and not s.errors
        assert all(c == 1 for c in s.by_id.values()) and len(s.by_id) == s.results
