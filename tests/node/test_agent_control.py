"""An in-process agent given a real MQTT control plane (Mosquitto) and a real data plane:
announcement, commands and replies, metrics, a clean offline; and the board's imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zmq

from node import config
from node.agent import Agent
from node.control import Control
from node.dataplane import DataPlane
from node.metrics import Counters
from node.runtime import run_whole
from node.store import Store
from node.wire import messages as M
from node.wire.frames import CLIENT
from node.wire.service import ServiceClient
from node.wire.topics import Topics
from tests.node.harness import REPO, Client, Commander, cid
from tests.node.models import three_parts


def test_commands_over_mqtt_reach_the_agent_and_its_data_plane(
        mqtt_agent: Agent, mosquitto, client: Client) -> None:
    cmd = Commander(mosquitto.url)
    try:
        res = cmd.wait_online("inproc")
        assert res["data_endpoint"] == mqtt_agent.dataplane.data_endpoint
        assert res["service_endpoint"] == mqtt_agent.dataplane.service_endpoint
        assert cmd.command("inproc", M.Ping(cid(), ""))["ok"] is True
        chain = three_parts()
        with ServiceClient(mqtt_agent.dataplane.service_endpoint) as svc:
            for p in chain.parts:
                svc.upload(p.data)
        ep = mqtt_agent.dataplane.data_endpoint
        stages = tuple(
            M.StageSpec(f"s{k}", p.sha256,
                        tuple(M.InputSpec(t.name, t.dtype, t.shape) for t in p.inputs),
                        tuple(M.Route(o, CLIENT if k == 2 else ep, "" if k == 2 else f"s{k + 1}")
                              for o in p.output_names))
            for k, p in enumerate(chain.parts))
        reply = cmd.command("inproc", M.Deploy(cid(), "", "mq", 1, stages))
        assert reply["ok"] is True and sorted(reply["result"]["loaded"]) == ["s0", "s1", "s2"]
        x = np.random.default_rng(3).standard_normal((1, 32, 32, 3)).astype(np.float32)
        client.send(ep, "mq", "s0", {"input": x}, "m1", epoch=1)
        h, arrs = client.recv()
        assert h.kind == "result", h.error
        np.testing.assert_array_equal(arrs[0], run_whole(chain.model, [x])[0])
        # the metrics the control plane publishes count what the data plane did
        cmd.wait_for(lambda: cmd.metrics.get("inproc", {}).get("frames_in", 0) >= 3, 10,
                     "metrics counting the chain's three frames")
        bad = cmd.command("inproc", M.Undeploy(cid(), "", "nope"))
        assert bad["ok"] is False and bad["code"] == "unknown_deployment"
        mqtt_agent.stop()  # a clean stop says offline itself (no Last Will needed)
        cmd.wait_for(lambda: cmd.status.get("inproc", {}).get("state") == "offline", 10,
                     "offline status")
    finally:
        cmd.close()


def test_the_control_plane_must_share_the_data_planes_counters(tmp_path, mosquitto) -> None:
    cfg = config.for_board("laptop").override(benchmark_s=0.0)
    ctx = zmq.Context()
    try:
        plane = DataPlane(ctx, Counters())
        control = Control("x", mosquitto.url, Topics("default"), Counters())
        with pytest.raises(ValueError, match="Counters"):
            Agent("x", cfg, Store(tmp_path / "s"), plane, control)
    finally:
        ctx.destroy(linger=0)


def test_the_board_install_needs_neither_rich_nor_the_planner() -> None:
    # the board runs `pip install --no-deps -e .` plus numpy pyzmq paho-mqtt psutil and a
    # TFLite runtime: importing the agent must not touch rich or anything of planner/
    code = ("import sys\n"
            "for name in ('rich', 'planner', 'flatbuffers', 'networkx', 'amqtt'):\n"
            "    sys.modules[name] = None  # any import of them raises ImportError\n"
            "import node.agent, node.cli, node.control, node.dataplane\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
