"""Failure handling through the client: broker restart, agent restart, CLI watcher.

- The data plane does not depend on the broker: a client keeps streaming while Mosquitto
  is down, and its control connection comes back with it.
- An agent restarted with the same state directory still holds its parts: a redeploy
  onto it uploads nothing, and its results are exact.
- `tilefleet watch` re-plans a deployment whose node dies and reports it as JSON.
- A node that comes back after its Last Will is profiled again and, since a plan using it
  beats the one without it, gets work again (reason "join").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from node.wire.service import ServiceClient
from planner.fleet.reference import LocalModel, random_inputs
from planner.live import DriftRule, ReplanPolicy, enable_replanning
from planner.model.graph import ModelGraph
from planner.planning.constraints import Constraints
from planner.planning.plan import chain
from tests.e2e import _live

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not _live.HAVE_MOSQUITTO, reason="mosquitto not installed")]


def _same(got: dict, want: dict) -> bool:
    return all(np.array_equal(got[n], w) for n, w in want.items())


def test_stream_continues_while_the_broker_is_down():
    data = _live.model(32)
    g = ModelGraph(data, "m32")
    with _live.fleet_env(2) as env:
        dep = env.fleet.deploy(g, name="nobroker", stages=chain(len(g.ops), [30], ["demo-0",
                                                                                   "demo-1"]))
        xs = [random_inputs(dep.record.model["inputs"], s) for s in range(4)]
        want = [LocalModel(data).run(x) for x in xs]
        env.broker.stop()
        got = list(dep.infer_many([xs[i % 4] for i in range(100)], window=8))
        assert all(_same(r, want[i % 4]) for i, r in enumerate(got))
        assert dep.stats()["failed"] == 0
        env.broker.start()
        deadline = time.monotonic() + 30  # paho reconnects with back-off (<= 10-15 s)
        while len(env.fleet.nodes()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(n.name for n in env.fleet.nodes()) == ["demo-0", "demo-1"]
        assert _same(dep.infer(xs[0], timeout=10), want[0])
        env.fleet.undeploy("nobroker")


def _restart(env: _live.Env, name: str) -> None:
    """Start agent `name` again with its state directory (new ports, same store)."""
    cmd = [sys.executable, "-m", "node.cli", "--name", name, "--broker", env.broker.url,
           "--board", "laptop", "--host", "127.0.0.1", "--data-port", "0",
           "--state-dir", str(env.local.workdir / name)]
    env.local.procs[name] = env.local._spawn(cmd, f"{name}.log")


def test_restarted_agent_keeps_its_parts_and_serves_again():
    data = _live.model(32)
    g = ModelGraph(data, "m32")
    with _live.fleet_env(2) as env:
        stages = chain(len(g.ops), [30], ["demo-0", "demo-1"])
        dep = env.fleet.deploy(g, name="restart", stages=stages)
        parts = sorted({s.part for s in dep.record.stages.values() if s.node == "demo-1"})
        old_ep = env.fleet.node("demo-1").service_endpoint
        env.local.kill("demo-1")
        deadline = time.monotonic() + 10
        while any(n.name == "demo-1" for n in env.fleet.nodes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        _restart(env, "demo-1")
        deadline = time.monotonic() + 30
        while (ep := next((n.service_endpoint for n in env.fleet.nodes()
                           if n.name == "demo-1"), old_ep)) == old_ep:
            assert time.monotonic() < deadline, "the restarted agent did not come back"
            time.sleep(0.05)
        with ServiceClient(ep) as svc:
            assert svc.missing(parts) == []  # found in its store after the restart
        first = dep.epoch
        again = env.fleet.deploy(g, name="restart", stages=stages)
        assert again.epoch == first + 1
        x = random_inputs(again.record.model["inputs"], 7)
        assert _same(again.infer(x, timeout=10), LocalModel(data).run(x))
        assert _same(dep.infer(x, timeout=10), LocalModel(data).run(x))  # old handle follows
        env.fleet.undeploy("restart")


def test_watch_command_replans_when_a_node_dies(tmp_path):
    data = _live.model(32)
    (tmp_path / "m.tflite").write_bytes(data)
    g = ModelGraph(data, "m32")
    with _live.fleet_env(3) as env:
        dep = env.fleet.deploy(g, name="cli", stages=chain(len(g.ops), [20, 45],
                                                           ["demo-0", "demo-1", "demo-2"]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "planner.cli", "watch", "cli", "--broker", env.broker.url,
             "--model", str(tmp_path / "m.tflite"), "--strategy", "throughput",
             "--max-replans", "1", "--duration", "60", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(4)  # profiling the nodes (cached afterwards) and the first poll
        env.local.kill("demo-1")
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        doc = json.loads(out)
        assert [e["reason"] for e in doc["replans"]] == ["node_lost"], doc
        assert "demo-1" not in {s["node"] for s in env.fleet.control.record("cli")["stages"]
                                .values()}
        x = random_inputs(dep.record.model["inputs"], 3)
        assert _same(dep.infer(x, timeout=10), LocalModel(data).run(x))


def test_watch_command_unknown_deployment_exits_2(tmp_path):
    (tmp_path / "m.tflite").write_bytes(_live.model(32))
    with _live.fleet_env(1) as env:
        r = subprocess.run([sys.executable, "-m", "planner.cli", "watch", "nope", "--broker",
                            env.broker.url, "--model", str(tmp_path / "m.tflite")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "unknown deployment 'nope'" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_a_node_back_after_its_last_will_gets_work_again(tmp_path):
    """Kill one of two pipeline agents: node_lost re-plan; restart it: join re-plan."""
    data = _live.model(128)
    g = ModelGraph(data, "m128")
    with _live.fleet_env(2) as env:
        cache = tmp_path / "profiles"
        profile = env.fleet.profile(g, cache_dir=cache)
        dep = env.fleet.deploy(g, name="comeback", strategy="throughput", profile=profile,
                               timeout_s=3.0, retries=5)
        first = dep.record.stage_nodes()
        assert len(first) == 2, "two agents on two cores: the throughput plan uses both"
        # 2 agents vs 1 on this 2-core host: +15-20% predicted, so a 5% margin
        policy = ReplanPolicy(rule=DriftRule(threshold=1.0), cooldown_s=1.0, join_settle_s=0.5,
                              margin=0.05, profile_cache=str(cache),
                              constraints=Constraints(objective="throughput"))
        watcher = enable_replanning(dep, g, profile=profile, policy=policy)
        s = _live.checked_stream(dep, data)
        try:
            time.sleep(0.5)
            env.local.kill(first[1])
            lost = watcher.wait_for(1, 20)
            alone = dep.record.stage_nodes()
            _restart(env, first[1])
            back = watcher.wait_for(2, 40)
            time.sleep(0.5)  # frames through the last epoch
        finally:
            s.stop()
            watcher.stop()
        evs = [e.to_json() for e in watcher.replans]
        print(f"\ncome-back: {first} -> {alone} -> {dep.record.stage_nodes()}: "
              + "; ".join(f"{e['reason']} ({e['detail']})" for e in evs))
        assert lost and back, watcher.errors
        assert [e["reason"] for e in evs] == ["node_lost", "join"]
        assert first[1] not in alone and first[1] in dep.record.stage_nodes()
        assert s.results == s.identical > 0 and not s.errors
        assert all(c == 1 for c in s.by_id.values()) and len(s.by_id) == s.results
