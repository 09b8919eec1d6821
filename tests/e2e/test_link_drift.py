"""A link that slows down mid-stream makes the planner move the traffic off it.

Three real agents, each in its own network namespace of a testbed (planner/testbed:
plain laptop boards, no CPU emulation), talk to a real Mosquitto and to this process
through a bridge. A 2-stage layer-range deployment cuts the model where a big activation
crosses n0 -> n1. Mid-stream, that pair's link is shaped to a few Mbit/s with tc tbf
(`Testbed.set_link(n0, 4, peer=n1)`: only the n0 <-> n1 traffic, the rest of n0's link
stays fast), so the transfer becomes the bottleneck. The watcher's link probe sees the
bandwidth drop for several probes in a row, re-plans (the detail names the link), and
the new epoch sends fewer bytes over n0 -> n1 per frame; once the shaping is removed,
the link probes healthy again and its profiled entry is restored. Every frame is
delivered once and is bit-identical to a local interpreter. Skipped without root /
netns / tbf.
The pair shaping itself is checked too: it slows that pair only, and the testbed (with
the processes started in its namespaces) is gone after the `with` block.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from planner.fleet import Fleet
from planner.live import DriftRule, ReplanPolicy, enable_replanning
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.planning.constraints import Constraints, Pin
from planner.testbed import Testbed, TestbedError, leftovers, make_spec, net
from tests.e2e import _live
from tests.e2e._live import HAVE_MOSQUITTO

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto not installed")]


def laptops(nodes: int, name: str) -> Testbed:
    """A testbed of full-speed laptop boards in namespaces (skips where it cannot run)."""
    reason = net.reason()
    if reason:
        pytest.skip(f"testbed namespaces not usable here: {reason}")
    return Testbed(make_spec(f"laptop:{nodes}", name=name, emulation="none"))


@contextmanager
def lab_fleet(nodes: int) -> Iterator[tuple[Testbed, Fleet, list[str]]]:
    """(testbed, connected Fleet, agent names): agents in namespaces, Mosquitto on the bridge."""
    with laptops(nodes, "pytest-linkdrift") as tb, Fleet.connect(tb.broker_url) as fleet:
        fleet.wait_for_nodes(nodes, 60)
        yield tb, fleet, [n.name for n in tb.nodes]


def link_bytes(graph: ModelGraph, stages: dict, a: str, b: str) -> int:
    """Bytes per frame the deployment sends from node a to node b (layer-range chains)."""
    chain = sorted(stages.values(), key=lambda s: s.ops[0])
    return sum(graph.cut_bytes(y.ops[0]) for x, y in zip(chain, chain[1:], strict=False)
               if (x.node, y.node) == (a, b))


def test_shaped_link_mid_stream_moves_traffic_off_it():
    data = recipes.mobilenet_v2_like(input_size=64, dtype="float32", seed=0)
    graph = ModelGraph(data, "mobilenet_v2_like_64")
    with lab_fleet(3) as (tb, fleet, names):
        n0, n1 = names[:2]
        profile = fleet.profile(graph)
        # The first deploy is pinned to a cut where 98 KB cross n0 -> n1 per frame.
        pins = (Pin(0, 6, n0), Pin(6, len(graph.ops), n1))
        dep = fleet.deploy(graph, name="linkdrift", strategy="throughput", profile=profile,
                               constraints=Constraints(pins=pins, objective="throughput"),
                               timeout_s=3.0, retries=5)
        assert dep.record.stage_nodes() == [n0, n1]
        before = link_bytes(graph, dep.record.stages, n0, n1)
        policy = ReplanPolicy(rule=DriftRule(threshold=1.0), link_probe_s=0.5,
                              cooldown_s=600,
                              constraints=Constraints(objective="throughput"))
        watcher = enable_replanning(dep, graph, profile=profile, policy=policy)
        s = _live.checked_stream(dep, data)
        try:
            # probes every 0.5 s set the link's baseline (its first 2 samples): wait for
            # them rather than for a time, which a loaded machine may stretch
            deadline = time.monotonic() + 20
            while len(getattr(watcher._history, "links", {}).get(f"{n0}->{n1}", ())) < 3:
                assert time.monotonic() < deadline, "no link probes before the shaping"
                time.sleep(0.1)
            t_shape = time.monotonic()
            tb.set_link(n0, 4, peer=n1)  # the 32 KB probe > tbf's burst (2 ms at 4 Mbit/s)
            replanned = watcher.wait_for(1, 30)
            t_rep = time.monotonic()
            time.sleep(0.5)  # frames through the new epoch
            tb.clear_link(n0, peer=n1)  # the link recovers: probed on, its profile entry comes back
            deadline = time.monotonic() + 15
            while watcher.links.degraded and time.monotonic() < deadline:
                time.sleep(0.1)
            restored = watcher.profile.link(n0, n1)
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
        assert restored == profile.link(n0, n1)  # no longer degraded: the profiled link
        assert s.results == s.identical > 0 and not s.errors
        assert all(c == 1 for c in s.by_id.values()) and len(s.by_id) == s.results


_SINK = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(4)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    while c.recv(1 << 16):
        pass
    c.sendall(b"k")
    c.close()
"""
_SEND = """
import socket, sys, time
t = time.perf_counter()
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20) as c:
    c.sendall(bytes(int(sys.argv[3])))
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
print(int(sys.argv[3]) / (time.perf_counter() - t))
"""


def test_pair_shaping_slows_that_pair_only_and_leaves_nothing_behind():
    with laptops(2, "pytest-pairshape") as tb:
        n0, n1 = (n.name for n in tb.nodes)
        a1 = tb.node(n1).address
        sinks = [tb.popen_in(n1, [sys.executable, "-c", _SINK, a1, "5999"],
                             stdout=subprocess.PIPE),  # node 1, and the host on the bridge:
                 subprocess.Popen([sys.executable, "-c", _SINK, tb.gateway, "5999"],
                                  stdout=subprocess.PIPE)]
        try:
            assert [p.stdout.readline().strip() for p in sinks] == [b"ready"] * 2

            def rate(dst: str, nbytes: int) -> float:
                r = tb.run_in(n0, [sys.executable, "-c", _SEND, dst, "5999", str(nbytes)],
                              capture_output=True, text=True, timeout=30)
                assert r.returncode == 0, r.stderr
                return float(r.stdout)

            tb.set_link(n0, 4, peer=n1)
            assert tb.node(n0).to_json()["pairs"] == {n1: {"rate_mbit": 4, "delay_ms": 0.0}}
            shaped = rate(a1, 300_000)  # 4 Mbit/s = 500 KB/s (plus a small burst)
            to_host = rate(tb.gateway, 30_000_000)  # n0's other traffic is not shaped
            tb.clear_link(n0, peer=n1)
            free = rate(a1, 30_000_000)
            assert tb.node(n0).pairs == {}
            with pytest.raises(TestbedError, match="two boards"):
                tb.set_link(n0, 4, peer=n0)
            if not net.netem_available():  # a pair's delay has no shim to come from
                with pytest.raises(TestbedError, match="netem"):
                    tb.set_link(n0, 4, delay_ms=5, peer=n1)
        finally:
            sinks[1].kill()
            sinks[1].wait()
        print(f"\npair shaping: {n0} -> {n1} {shaped / 1e6:.2f} MB/s shaped to 4 Mbit/s, "
              f"{free / 1e6:.0f} MB/s unshaped; {n0} -> host {to_host / 1e6:.0f} MB/s meanwhile")
        assert 0.25e6 < shaped < 0.75e6 and min(free, to_host) > 20 * shaped
        tag = tb.tag
        assert net.namespaces(tag) and net.links(tag)
    assert not net.namespaces(tag) and not net.links(tag)
    assert sinks[0].poll() is not None  # the processes started in its namespaces too
    assert "pytest-pairshape" not in leftovers()["states"]
