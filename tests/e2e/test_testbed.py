"""The testbed's fidelity, tested as Mininet tests its own (mininet/test/test_hifi.py).

One testbed (planner/testbed) in the tiers topology: a Raspberry Pi 3 class device board
behind a link of 20 Mbit/s and 10 ms, and a Pi 4 class edge board on an unshaped LAN
(the baseline for the delay). Measured inside the boards' namespaces and cgroups by
probe processes (tests/e2e/_testbed_probes.py), ratios taken within one run:
- a board's sustained speed is its calibrated target within 5% (its CPU share is its
  quota: target ms = the probe's own CPU ms per inference / quota);
- a profile (node/profiler.py) of the parts of a model on the Pi 3 board sums to
  within 10% of the model's sustained time there (single short invokes timed by wall
  clock, as profiled before, are printed next to it: anywhere in x0.1..x1.0);
- the shaped link carries its rate within 5% (wire bytes counted by its qdisc);
- the added delay is within 1 ms (UDP round trips, delayed board minus baseline);
- a SIGKILLed `tilefleet testbed up` leaves pieces that `cleanup` removes completely;
- without cgroups the boards are padded (`--emulate-speed`) and their profiles say so.
Skipped with the reason without root, namespaces, cgroups or Mosquitto (the padded case
needs only Mosquitto). ~50 s; the slow agent-level profile test ~40 s more.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from planner.fleet.profiling import op_groups
from planner.model.cut import Part, cut_range
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.testbed import Testbed, cgroups, cleanup, leftovers, make_spec, net, state
from tests.e2e._live import HAVE_MOSQUITTO

ROOT = Path(__file__).resolve().parents[2]
PROBES = [sys.executable, "-m", "tests.e2e._testbed_probes"]
RATE_MBIT, DELAY_MS = 20.0, 10.0

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto not installed")]


def _reason() -> str:
    return net.reason() or cgroups.reason()


@pytest.fixture(scope="module")
def tb(tmp_path_factory):
    why = _reason()
    if why:
        pytest.skip(f"testbed not usable here: {why}")
    spec = make_spec("rpi3:1@device,rpi4:1@edge", topology="tiers",
                     link=f"{RATE_MBIT:g},{DELAY_MS:g}", name="pytest-fidelity")
    with Testbed(spec, workdir=tmp_path_factory.mktemp("testbed")) as t:
        assert t.emulation == "cgroup"
        yield t


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, list[Path], list[Part]]:
    """The calibration's reference model and its cut into 8 parts of similar MACs."""
    d = tmp_path_factory.mktemp("models")
    data = recipes.mobilenet_v2_like(input_size=224, dtype="int8", seed=0)
    whole = d / "ref.tflite"
    whole.write_bytes(data)
    graph = ModelGraph(data, "ref")
    parts, cut = [], [cut_range(graph, a, b) for a, b in op_groups(graph, 8)]
    for k, part in enumerate(cut):
        p = d / f"part{k}.tflite"
        p.write_bytes(part.data)
        parts.append(p)
    return whole, parts, cut


def _probe(tb: Testbed, node: str, *args: str, cgroup: bool = False) -> dict:
    r = tb.run_in(node, [*PROBES, *args], cgroup=cgroup, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_board_sustained_speed_is_its_target_within_5_percent(tb, model):
    whole, _, _ = model
    for node in tb.nodes:
        r = _probe(tb, node.name, "sustained", node.cgroup, str(whole), str(node.threads), "2.5")
        target_ms = r["cpu_ms"] / node.cpus
        ratio = r["ms"] / target_ms
        print(f"\n{node.name}: quota {node.cpus:.3f} cores (period {node.period_ms} ms, "
              f"{node.threads} threads): {r['ms']:.1f} ms per inference sustained, target "
              f"{target_ms:.1f} ms -> x{ratio:.3f}; share got {r['share']:.3f}")
        assert abs(ratio - 1) <= 0.05, (node.name, r)


def test_profile_of_an_emulated_board_is_its_sustained_speed_within_10_percent(tb, model):
    whole, parts, _ = model
    node = tb.node("rpi3-0")
    r = _probe(tb, node.name, "profile", node.cgroup, str(node.threads), str(whole),
               *map(str, parts))
    batched, single = sum(r["batched"]), sum(r["single"])
    target, chain = r["sustained_whole_ms"], r["sustained_chain_ms"]
    print(f"\n{node.name} (quota {node.cpus:.3f} cores, period {node.period_ms} ms, "
          f"{node.threads} threads): model sustained {target:.1f} ms; its {len(parts)} parts "
          f"profiled in batches sum to {batched:.1f} ms (x{batched / target:.3f}), by single "
          f"invokes (as before) {single:.1f} ms (x{single / target:.3f}); the parts as 8 "
          f"interpreters in a chain sustain {chain:.1f} ms")
    assert r["quota"] is not None  # the profiler saw its cgroup's quota
    assert abs(batched / target - 1) <= 0.10, r


def _qdisc_bytes(dev: str) -> int:
    out = subprocess.run(["tc", "-s", "-j", "qdisc", "show", "dev", dev], capture_output=True,
                         text=True, check=True).stdout
    return sum(int(q["bytes"]) for q in json.loads(out) if q.get("root"))


def test_shaped_link_carries_its_rate_within_5_percent(tb):
    node = tb.node("rpi3-0")
    i = tb.nodes.index(node)
    port = 7100
    sink = tb.popen_in(node.name, [*PROBES, "sink", node.address, str(port)], cgroup=False,
                       stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(sink.stdout.readline())["listening"]
        s = socket.create_connection((node.address, port), timeout=10)
        chunk = b"\0" * 65536
        dev = net.host_veth(tb.tag, i)  # root -> board: shaped on the host end's egress
        t_end = time.monotonic() + 4.0
        samples = []
        while time.monotonic() < t_end:
            s.sendall(chunk)
            samples.append((time.monotonic(), _qdisc_bytes(dev)))
        s.close()
        out = json.loads(sink.communicate(timeout=30)[0].strip().splitlines()[-1])
    finally:
        sink.kill()
    steady = [x for x in samples if x[0] >= samples[0][0] + 1.0]  # past slow start
    (t0, b0), (t1, b1) = steady[0], steady[-1]
    wire_mbit = (b1 - b0) * 8 / (t1 - t0) / 1e6
    marks = [m for m in out["marks"] if m[0] >= out["marks"][0][0] + 1.0]
    goodput = (marks[-1][1] - marks[0][1]) * 8 / (marks[-1][0] - marks[0][0]) / 1e6
    print(f"\nlink {RATE_MBIT:g} Mbit/s, {DELAY_MS:g} ms: {wire_mbit:.2f} Mbit/s on the wire "
          f"(x{wire_mbit / RATE_MBIT:.3f}), TCP goodput {goodput:.2f} Mbit/s "
          f"(x{goodput / RATE_MBIT:.3f}: Ethernet, IP and TCP headers take ~4.4%)")
    assert abs(wire_mbit / RATE_MBIT - 1) <= 0.05


def _rtts(addr: str, port: int, n: int = 60) -> list[float]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    out = []
    for k in range(n + 3):
        t = time.perf_counter()
        s.sendto(b"%d" % k, (addr, port))
        s.recvfrom(64)
        if k >= 3:  # ARP and the first wake-ups
            out.append(time.perf_counter() - t)
        time.sleep(0.005)
    s.close()
    return out


def test_added_delay_is_within_1_ms(tb):
    port = 7200
    echoes = {n.name: tb.popen_in(n.name, [*PROBES, "echo", n.address, str(port)],
                                  cgroup=False, stdout=subprocess.PIPE, text=True)
              for n in tb.nodes}
    try:
        for p in echoes.values():
            assert json.loads(p.stdout.readline())["listening"]
        rounds = {n.name: [] for n in tb.nodes}
        for _ in range(3):  # interleaved, so load drifts hit both alike
            for n in tb.nodes:
                rounds[n.name] += _rtts(n.address, port, 40)
    finally:
        for p in echoes.values():
            p.kill()
            p.wait()
    delayed, base = (statistics.median(rounds[x]) * 1e3 for x in ("rpi3-0", "rpi4-0"))
    added = delayed - base
    print(f"\nround trip over the {DELAY_MS:g} ms link {delayed:.3f} ms, over the LAN "
          f"{base:.3f} ms: added {added:.3f} ms (expected {2 * DELAY_MS:g} ms)")
    assert abs(added - 2 * DELAY_MS) <= 1.0


def _pieces(tag: str) -> dict[str, list[str]]:
    return {"namespaces": net.namespaces(tag), "links": net.links(tag),
            "cgroups": [g.name for g in cgroups.groups(tag)]}


def test_sigkilled_up_leaves_nothing_after_cleanup(tb):
    name = "pytest-kill"
    up = subprocess.Popen([sys.executable, "-m", "planner.cli", "testbed", "up", "--boards",
                           "rpi3:2", "--link", "10,5", "--name", name, "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = up.stdout.readline()
        assert line, up.stderr.read()
        doc = json.loads(line)
        assert doc["emulation"] == "cgroup" and doc["broker"].startswith("mqtt://")
        recorded = state.read(name)
        assert recorded and recorded["tag"] == doc["tag"]
        pids = [int(p) for p in recorded["pids"]]
        before = _pieces(doc["tag"])
        assert len(before["namespaces"]) == 2 and len(before["cgroups"]) == 3, before
        assert len(pids) == 5  # broker, 2 shims, 2 agents
    finally:
        up.send_signal(signal.SIGKILL)
        up.wait()
    left = _pieces(doc["tag"])
    assert left["namespaces"] and left["links"], "SIGKILL should leave pieces for cleanup"
    r = subprocess.run([sys.executable, "-m", "planner.cli", "testbed", "cleanup"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    print(f"\nSIGKILLed up left {before}; cleanup: {r.stdout.strip()}")
    assert _pieces(doc["tag"]) == {"namespaces": [], "links": [], "cgroups": []}
    assert state.read(name) is None
    deadline = time.monotonic() + 5
    while any(state.alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if state.alive(p)]
    assert tb.tag in {str(d["tag"]) for d in state.all_states()}  # a live one is kept


def test_padded_boards_say_so_and_profile_padded(tmp_path, model, monkeypatch):
    """What a machine without root gets (namespaces and cgroups refused here): plain
    local agents padded to their speed (`--emulate-speed`), and the profile sees it."""
    from planner.fleet import Fleet
    from planner.fleet.profiling import measure
    from planner.testbed import testbed as testbed_mod

    monkeypatch.setattr(testbed_mod.net, "reason", lambda: "needs root (simulated)")
    monkeypatch.setattr(testbed_mod.cgroups, "reason", lambda: "needs root (simulated)")
    _, _, cut = model
    part = cut[0]
    spec = make_spec("rpi4:1", name="pytest-padded")
    with Testbed(spec, workdir=tmp_path / "tb", state_root=tmp_path / "state") as t:
        node = t.nodes[0]
        doc = t.describe()
        assert doc["emulation"] == "padded" and node.emulation == "padded"
        assert any("padded" in n for n in doc["notes"]), doc["notes"]
        assert node.namespace == "" and node.address == "127.0.0.1" and node.cpus is None
        assert 0 < node.speed < 1
        assert "padded to speed" in t.log(node.name)
        with Fleet.connect(t.broker_url) as fleet:
            info = fleet.wait_for_nodes(1, 30)[0]
            padded_s = statistics.median(measure(fleet, info, [part])[0] for _ in range(3))
    from node.profiler import time_part
    from node.runtime import RuntimeSettings

    plain_s = statistics.median(time_part(part.data, RuntimeSettings(node.threads), 7, 1))
    ratio = padded_s / (plain_s / node.speed)
    print(f"\npadded {node.name}: speed {node.speed:.3f}, profiled {padded_s * 1e3:.2f} ms, "
          f"unpadded here {plain_s * 1e3:.2f} ms -> x{ratio:.2f} of 1/speed")
    assert 0.6 <= ratio <= 1.6  # the padding is there (a 1/speed = ~12x effect); load noise


def test_cleanup_is_idempotent_and_leftovers_lists_only_live_testbeds(tb):
    cleanup()
    left = leftovers()
    assert set(left["states"]) == {tb.spec.name}, left
    assert all(n.startswith(f"tfb{tb.tag}-") for n in left["namespaces"]), left
    assert os.path.exists(state.path_of(tb.spec.name))


@pytest.mark.slow
@pytest.mark.parametrize("board", ["rpi4", "rpi3"])
def test_agent_profile_predicts_the_emulated_boards_sustained_stream(tmp_path, board):
    """Through the agent: `fleet.profile` (8 op groups) on an emulated board against the
    whole model streamed to that board: a frame every 1/fps seconds. The interval also
    holds the agent's data plane (receiving, decoding, sending a frame: CPU from the same
    quota), which the planner adds from its overhead probes, so the profile may come out
    a little under it. The stage's own run time in the stream is printed too; under a
    quota it is no measure (throttling stalls fall in or out of it by chance).
    ~15 s, ~30 s."""
    from planner.fleet import Fleet
    from planner.fleet.bench import run_bench
    from planner.planning.plan import Stage

    if _reason():
        pytest.skip(f"testbed not usable here: {_reason()}")
    data = recipes.mobilenet_v2_like(input_size=320, dtype="int8", seed=0)
    graph = ModelGraph(data, "ref320")
    with Testbed(make_spec(f"{board}:1", name="pytest-agent"), workdir=tmp_path / "tb") as t:
        node = t.nodes[0]
        with Fleet.connect(t.broker_url) as fleet:
            fleet.wait_for_nodes(1, 30)
            prof = fleet.profile(graph, [node.name], fresh=True, probe=False, max_groups=8,
                                 cache_dir=tmp_path / "profiles")
            predicted = sum(prof.devices[node.name].op_seconds[graph.sha256])
            dep = fleet.deploy(graph, name="whole", stages=(
                Stage(0, (0, len(graph.ops)), node.name),))
            run_bench(dep, 10, 2)
            fps = run_bench(dep, 80, 2)["throughput_fps"]
            run = _stage_run_s(fleet, node.name, 90)
            dep.undeploy()
    sustained = 1 / fps
    print(f"\n{node.name} (quota {node.cpus:.3f} cores, period {node.period_ms} ms): profile "
          f"{predicted * 1e3:.1f} ms per frame; streamed, a frame every {sustained * 1e3:.1f} "
          f"ms (profile x{predicted / sustained:.3f}); the stage's run {run * 1e3:.1f} ms")
    assert abs(predicted / sustained - 1) <= 0.10


def _stage_run_s(fleet, node: str, frames: int, timeout_s: float = 15.0) -> float:
    """Mean interpreter run per frame of the node's stage, from its metrics (once they
    count `frames` frames: agents publish every few seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        met = fleet.control.metrics.get(node)
        stages = [st for st in (met.stages.values() if met else ()) if st.frames >= frames]
        if stages and stages[0].run_total_s is not None:
            return stages[0].run_total_s / stages[0].frames
        time.sleep(0.2)
    raise AssertionError(f"no metrics of {node} counting {frames} frames in {timeout_s:.0f} s")
