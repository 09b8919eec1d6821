"""An agent SIGKILLed in the middle of a stream: every frame delivered once, bit-exact.

4 real agents on a real Mosquitto; the watcher sees the Last Will, re-plans without the
dead node and switches the deployment to a new epoch; the client re-sends the frames
that were in flight. The re-plan time is printed (the < 5 s target is checked by
tools/bench_failover.py); the test only asserts a generous bound.
"""

from __future__ import annotations

import json
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from planner.fleet.reference import LocalModel, random_inputs
from planner.graph import ModelGraph
from planner.live import ReplanPolicy
from tests.e2e import _live

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not _live.HAVE_MOSQUITTO, reason="mosquitto not installed")]


def _listen(url: str, topic: str) -> tuple[mqtt.Client, list[dict]]:
    """A second MQTT client that collects what is published on `topic`."""
    got: list[dict] = []
    host, port = url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.on_message = lambda _c, _u, msg: got.append(json.loads(msg.payload))
    c.connect(host, int(port))
    c.subscribe(topic, qos=1)
    c.loop_start()
    return c, got


def run_failover(frames: int, kill_at: int, distinct: int = 16) -> dict:
    """Stream `frames` frames, SIGKILL a stage's agent after `kill_at`; return the figures."""
    data = _live.model(32)
    graph = ModelGraph(data, "mobilenet_v2_like_32")
    local = LocalModel(data)
    with _live.fleet_env(4) as env:
        profile = env.fleet.profile(graph, progress=False, cache_dir=env.workdir / "profiles")
        dep = env.fleet.deploy(graph, name="failover", strategy="throughput", profile=profile,
                               progress=False, timeout_s=3.0, retries=3)
        watcher = dep.enable_replanning(graph, profile=profile,
                                        policy=ReplanPolicy(cooldown_s=60))
        listener, events = _listen(env.broker.url, "tilefleet/default/deployments/failover/replans")
        xs = [random_inputs(dep.record.model["inputs"], s) for s in range(distinct)]
        want = [local.run(x) for x in xs]
        counted = _live.Deliveries().attach(dep)
        stage_nodes = dep.record.stage_nodes()
        victim = stage_nodes[len(stage_nodes) // 2]
        killed: dict[str, float] = {}

        def frames_in():
            for i in range(frames):
                if i == kill_at:
                    killed["t"] = time.time()
                    env.local.kill(victim)
                yield xs[i % distinct]

        t0 = time.monotonic()
        got = list(dep.infer_many(frames_in(), window=8))
        wall = time.monotonic() - t0
        assert watcher.wait_for(1, 10), f"no re-plan: {watcher.errors}"
        ev = watcher.replans[0]
        stats = dep.stats()
        watcher.stop()
        time.sleep(0.3)  # the event travels through the broker
        listener.loop_stop()
        listener.disconnect()
        ok = sum(1 for i, r in enumerate(got) if all(
            np.array_equal(r[n], w) for n, w in want[i % distinct].items()))
        return {"frames": frames, "results": len(got), "identical": ok,
                "by_id": dict(counted.by_id), "stats": stats, "victim": victim,
                "stage_nodes": stage_nodes, "new_nodes": dep.record.stage_nodes(),
                "replan": ev.to_json(), "events": list(events), "wall_s": wall,
                "replan_after_kill_s": ev.time - killed["t"],
                "epochs": (ev.previous_epoch, dep.epoch)}


def _check(r: dict) -> None:
    print(f"\nfailover: victim {r['victim']} of {r['stage_nodes']} -> {r['new_nodes']}; "
          f"re-plan {r['replan']['seconds']:.2f} s after the Last Will was seen, "
          f"{r['replan_after_kill_s']:.2f} s after the kill ({r['replan']['mode']}); "
          f"re-sent {r['stats']['sent'] - r['frames']}, duplicates dropped {r['stats']['duplicates']}; "
          f"{r['frames']} frames in {r['wall_s']:.1f} s")
    assert r["results"] == r["frames"] == r["identical"]
    assert len(r["by_id"]) == r["frames"] and set(r["by_id"].values()) == {1}
    assert r["stats"]["delivered"] == r["frames"] and r["stats"]["failed"] == 0
    assert r["victim"] not in r["new_nodes"]
    assert r["stats"]["sent"] > r["frames"]  # the frames lost with the victim went again
    assert r["replan"]["reason"] == "node_lost" and r["epochs"][1] == r["epochs"][0] + 1
    assert r["replan_after_kill_s"] < 15  # generous: the 5 s target is benchmarked
    assert [e["epoch"] for e in r["events"]] == [r["epochs"][1]]
    assert r["events"][0]["mode"] in ("partial", "full") and "moved" in r["events"][0]


def test_kill_an_agent_mid_stream_500_frames():
    _check(run_failover(500, 250))
