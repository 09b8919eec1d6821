"""Routes between stages of one agent skip the sockets: in-process hand-off, same errors.

A two-stage chain on an agent in this process: results bit-identical to the whole
model while the receiving data plane never sees the hand-off; a route to a stage the
node does not have fails in the sending stage with the code the data plane would send;
a stage that stays full makes the hand-off time out instead of hanging.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from node.agent import Agent
from node.dataplane import DataPlane, local_delivery
from node.errors import WireError
from node.metrics import Counters
from node.runtime import RuntimeSettings, run_whole
from node.wire import messages as M
from node.wire.frames import CLIENT, Header, meta_for
from node.wire.service import ServiceClient
from tests.node.models import three_parts


def _chain(agent: Agent, last_stage: str) -> object:
    """s0 -> s1 -> s2 on this agent, s1 routing to `last_stage`; returns the chain."""
    chain = three_parts()
    ep = agent.dataplane.data_endpoint
    with ServiceClient(agent.dataplane.service_endpoint) as svc:
        for p in chain.parts:
            svc.upload(p.data)
    stages = []
    for k, p in enumerate(chain.parts):
        last = k == len(chain.parts) - 1
        nxt = last_stage if k == 1 else f"s{k + 1}"
        routes = tuple(
            M.Route(o, CLIENT if last else ep, "" if last else nxt) for o in p.output_names
        )
        stages.append(M.StageSpec(f"s{k}", p.sha256, tuple(M.InputSpec(t.name, t.dtype, t.shape)
                                                            for t in p.inputs), routes))
    agent.handle(M.Deploy("c1", "", "chain", 0, tuple(stages)))
    return chain


def test_hand_off_between_stages_of_one_agent_skips_the_socket(agent, client):
    chain = _chain(agent, "s2")
    ep = agent.dataplane.data_endpoint
    assert local_delivery(ep) == agent.dataplane.deliver
    polled = agent.dataplane.counters.snapshot()
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
    for i in range(3):
        client.send(ep, "chain", "s0", {"input": x}, f"r{i}")
        h, arrs = client.recv()
        assert h.kind == "result" and h.src == "inproc/s2"
        np.testing.assert_array_equal(
            arrs[0], run_whole(chain.model, [x], RuntimeSettings(threads=1))[0]
        )
    # 3 frames in from the client + 2 hand-offs each, all counted as received
    assert agent.dataplane.counters.snapshot()["frames_in"] - polled["frames_in"] == 9
    # a stage counts a frame after sending it on (the count carries the bytes sent), so
    # the last stage's count may trail its result by a moment
    deadline = time.monotonic() + 2.0
    while (any(agent.metrics().stages[f"chain/0/s{k}"].frames != 3 for k in range(3))
           and time.monotonic() < deadline):
        time.sleep(0.01)
    stats = agent.metrics().stages
    assert all(stats[f"chain/0/s{k}"].frames == 3 for k in range(3))


def test_an_unknown_stage_fails_in_the_sender_with_the_data_planes_code(agent, client):
    _chain(agent, "nowhere")
    x = np.zeros((1, 32, 32, 3), np.float32)
    client.send(agent.dataplane.data_endpoint, "chain", "s0", {"input": x}, "bad")
    h, _ = client.recv()
    assert h.kind == "error" and h.request == "bad"
    assert h.error["code"] == "unknown_stage" and "'nowhere'" in h.error["message"]
    assert h.src == "inproc/s1"  # reported by the stage whose route is wrong


def test_a_stage_that_stays_full_times_the_hand_off_out():
    plane = DataPlane(zmq.Context.instance(), Counters(), port=0)
    plane.attach(lambda h, a, s: False, lambda frames: [])
    h = Header("data", "d", 0, "r", "s", "", (meta_for("x", np.zeros(4, np.float32)),))
    with pytest.raises(WireError, match="did not take a message within 0.05 s") as info:
        plane.deliver(h, [np.zeros(4, np.float32)], lambda ep, frames: 0, timeout_s=0.05)
    assert info.value.code == "send_timeout"
    assert plane.counters.snapshot()["errors"] == {"send_timeout": 1}
