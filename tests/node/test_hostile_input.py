"""Single hostile messages against a live agent: after each one it still answers on its
data, service and MQTT command ports and serves a deployment bit-identical to one interpreter.

One agent (real data plane, real MQTT control plane on a real Mosquitto) takes every
attack in turn, so each test also proves the previous ones left nothing broken behind.
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import zmq

from node import config
from node.agent import Agent, build_agent
from node.runtime import RuntimeSettings, run_whole
from node.wire import frames as F
from node.wire import messages as M
from node.wire.frames import CLIENT
from node.wire.service import ServiceClient
from tests.conftest import MOSQUITTO, Broker
from tests.node.harness import Client, Commander, cid
from tests.node.models import Chain, three_parts

NODE = "hostile"


def dead_endpoint() -> str:
    """A TCP endpoint nobody listens on (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@dataclass
class Target:
    agent: Agent
    cmd: Commander
    client: Client
    chain: Chain
    ctx: zmq.Context

    def push(self, *frames: bytes) -> None:
        """Frames to the agent's data port, as any host on the network could send them."""
        s = self.ctx.socket(zmq.PUSH)
        s.linger = 1000
        s.connect(self.agent.dataplane.data_endpoint)
        s.send_multipart(list(frames))
        s.close()

    def service(self, *frames: bytes) -> list[bytes] | None:
        """A raw service request; its reply frames, or None when none came within 2 s."""
        s = self.ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(self.agent.dataplane.service_endpoint)
        try:
            s.send_multipart(list(frames))
            return s.recv_multipart() if s.poll(2000) else None
        finally:
            s.close()

    def publish(self, payload: bytes) -> None:
        self.cmd.client.publish(self.cmd.topics.cmd(NODE), payload, qos=1).wait_for_publish(5)

    def infer(self, seed: int) -> float:
        """One request through the deployed chain, checked against one interpreter; s."""
        x = np.random.default_rng(seed).standard_normal((1, 32, 32, 3)).astype(np.float32)
        t = time.monotonic()
        self.client.send(self.agent.dataplane.data_endpoint, "chain", "s0", {"input": x},
                         f"check-{seed}")
        h, arrs = self.client.recv(timeout=10)
        took = time.monotonic() - t
        assert h.kind == "result" and h.request == f"check-{seed}", h.error
        want = run_whole(self.chain.model, [x], RuntimeSettings(threads=1))[0]
        np.testing.assert_array_equal(arrs[0], want)
        return took

    def assert_serves(self, seed: int = 0) -> None:
        """All three ports answer and the deployment is exact; no thread of the agent died."""
        assert self.agent.dataplane.dead() == [] and self.agent.control.dead() == []
        self.infer(seed)
        with ServiceClient(self.agent.dataplane.service_endpoint, self.ctx, 5) as svc:
            assert svc.missing([p.sha256 for p in self.chain.parts]) == []
        assert self.cmd.command(NODE, M.Ping(cid(), ""), timeout=5)["ok"]
        assert self.cmd.status[NODE]["state"] == "online"

    def errors(self) -> dict[str, int]:
        return dict(self.agent.counters.snapshot()["errors"])


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    with tempfile.TemporaryDirectory(prefix="hostile-") as d:
        broker = Broker("mosquitto", Path(d)).start()
        # small store limits, so the quota tests need no gigabytes
        cfg = config.for_board("laptop").override(benchmark_s=0.0, metrics_interval_s=0.5,
                                                  max_part_mb=4, store_limit_mb=8)
        agent = build_agent(NODE, cfg, Path(d) / "state", broker.url)
        agent.start()
        cmd, client, ctx = Commander(broker.url), Client(), zmq.Context()
        try:
            cmd.wait_online(NODE)
            chain = three_parts()
            ep = agent.dataplane.data_endpoint
            with ServiceClient(agent.dataplane.service_endpoint, ctx) as svc:
                for p in chain.parts:
                    svc.upload(p.data)
            stages = tuple(M.StageSpec(
                f"s{k}", p.sha256, tuple(M.InputSpec(t.name, t.dtype, t.shape)
                                         for t in p.inputs),
                tuple(M.Route(o, CLIENT if k == 2 else ep, "" if k == 2 else f"s{k + 1}")
                      for o in p.output_names)) for k, p in enumerate(chain.parts))
            assert cmd.command(NODE, M.Deploy(cid(), "", "chain", 0, stages))["ok"]
            t = Target(agent, cmd, client, chain, ctx)
            t.assert_serves()
            yield t
        finally:
            client.close()
            cmd.close()
            agent.stop()
            ctx.destroy(linger=0)
            broker.stop()


# ---- data port ----------------------------------------------------------------------

SURROGATE_REPLY = b'{"v":1,"kind":"data","deployment":"chain","stage":"s0","reply":"tcp://\\ud800"}'
DATA_ATTACKS = {
    "reply not an endpoint": [json.dumps({"v": 2, "reply": "garbage"}).encode()],
    "reply tcp://garbage": [json.dumps({"v": 2, "reply": "tcp://garbage"}).encode()],
    "reply a lone surrogate (escaped)": [SURROGATE_REPLY],
    "reply a lone surrogate (raw bytes)": [SURROGATE_REPLY.replace(b"\\ud800", b"\xed\xa0\x80")],
    "dtype a list": [json.dumps({"v": 1, "kind": "data", "deployment": "chain", "stage": "s0",
                                 "tensors": [{"name": "input", "dtype": [], "shape": [1]}]}
                                ).encode(), b"\0" * 4],
    "60,000 [": [b"[" * 60_000],
    "t0 too large for a float": [b'{"v":1,"kind":"data","t0":1' + b"0" * 400 + b"}"],
    "huge zero-size shape": [json.dumps({"v": 1, "kind": "data", "deployment": "chain",
                                         "stage": "s0", "tensors": [{
                                             "name": "input", "dtype": "float32",
                                             "shape": [0, 2 ** 62, 2 ** 62]}]}).encode(), b""],
}


@pytest.mark.parametrize("name", sorted(DATA_ATTACKS))
def test_data_port_survives(target: Target, name: str) -> None:
    before = sum(target.errors().values())
    target.push(*DATA_ATTACKS[name])
    target.cmd.wait_for(lambda: sum(target.errors().values()) > before, 5, "error counted")
    target.assert_serves()


def test_error_replies_to_a_dead_endpoint_do_not_stall_the_data_plane(target: Target) -> None:
    dead = dead_endpoint()
    h = json.dumps({"v": 1, "kind": "data", "deployment": "nope", "stage": "s0",
                    "request": "x", "reply": dead}).encode()
    for _ in range(40):  # each one is answered unknown_deployment, to nobody
        target.push(h)
    took = target.infer(1)  # queued behind the 40 on the same port
    # it was 16.5 s (a 1 s send time-out per error reply once the HWM was full)
    assert took < 2.0, f"the data plane stalled {took:.1f} s"
    target.assert_serves()


def test_results_for_a_dead_client_do_not_stall_the_deployment(target: Target) -> None:
    dead = dead_endpoint()
    x = np.zeros((1, 32, 32, 3), np.float32)
    h = F.Header("data", "chain", 0, "", "s0", dead, (F.meta_for("input", x),))
    for i in range(40):  # real requests whose results go to nobody
        target.push(*F.encode(replace(h, request=f"lost-{i}"), [x]))
    took = target.infer(2)
    # the last stage waits 1 s once for the dead client, then drops (was 10 s)
    assert took < 4.0, f"the deployment stalled {took:.1f} s"
    target.assert_serves()


# ---- service port -------------------------------------------------------------------

SERVICE_ATTACKS = {
    "60,000 [": [b"[" * 60_000],
    "not JSON": [b"\xff\xfe"],
    "nested seq": [b'{"v":1,"op":"ping","seq":' + b"[" * 900 + b"]" * 900 + b"}"],
    "put with a list for sha256": [json.dumps({"v": 1, "op": "put", "sha256": [],
                                               "size": 1, "offset": 0, "last": True}).encode(),
                                   b"x"],
    "have of a number": [json.dumps({"v": 1, "op": "have", "parts": 5}).encode()],
}


@pytest.mark.parametrize("name", sorted(SERVICE_ATTACKS))
def test_service_port_survives_and_answers(target: Target, name: str) -> None:
    reply = target.service(*SERVICE_ATTACKS[name])
    assert reply is not None, "no reply"
    rep = json.loads(reply[0])
    # a ping is answered even with a seq it cannot echo; the rest are errors
    assert rep["ok"] is (name == "nested seq") and rep["seq"] is None, rep
    target.assert_serves()


def test_upload_over_the_part_limit_is_refused_at_its_first_chunk(target: Target) -> None:
    with ServiceClient(target.agent.dataplane.service_endpoint, target.ctx, 5) as svc:
        rep, _ = svc.request("have", parts=[])
        head = {"sha256": "ab" * 32, "size": 2 << 30, "offset": 0, "last": False}
        with pytest.raises(Exception, match="max_part_mb") as e:
            svc.request("put", [b"x" * 1000], **head)
        assert getattr(e.value, "code", "") == "oversized"
    assert not (target.agent.store.tmp / f"{'ab' * 32}.part").exists()
    target.assert_serves()


def test_the_store_refuses_blobs_beyond_its_limit(target: Target) -> None:
    store = target.agent.store
    blobs = [bytes([i]) * (3 << 20) for i in range(3)]  # 3 x 3 MiB into 8 MiB
    with ServiceClient(target.agent.dataplane.service_endpoint, target.ctx, 10) as svc:
        svc.upload(blobs[0])
        svc.upload(blobs[1])
        with pytest.raises(Exception, match="store_limit_mb") as e:
            svc.upload(blobs[2])
        assert getattr(e.value, "code", "") == "store_full"
    assert store.stored_bytes() <= store.limit_bytes
    for b in blobs[:2]:  # give the room back for the tests after this one
        store.remove(__import__("hashlib").sha256(b).hexdigest())
    target.assert_serves()


# ---- MQTT command port --------------------------------------------------------------

MQTT_ATTACKS = {
    "unknown type, wildcard reply_to": json.dumps(
        {"type": "nope", "v": 1, "id": "x", "reply_to": "a/#"}).encode(),
    "100,000 [": b"[" * 100_000,
    "reply_to a lone surrogate": b'{"type":"ping","v":1,"id":"s","reply_to":"a/\\ud800"}',
    "undeploy with a wildcard reply_to": json.dumps(
        {"type": "undeploy", "v": 1, "id": "u", "deployment": "none", "reply_to": "a/#"}
    ).encode(),
    "deploy with a + in reply_to": json.dumps(
        {"type": "deploy", "v": 1, "id": "d", "deployment": "x", "epoch": 0, "stages": [],
         "reply_to": "a/+/b"}).encode(),
    "not JSON": b"\xff\x00",
    "probe of a non-endpoint": json.dumps(
        {"type": "probe", "v": 1, "id": "p", "endpoint": "garbage", "reply_to": "a/b"}
    ).encode(),
    "route to a lone surrogate": json.dumps(
        {"type": "deploy", "v": 1, "id": "r", "deployment": "x", "epoch": 0, "reply_to": "a/b",
         "stages": [{"id": "f", "part": None, "inputs": [
             {"name": "i", "dtype": "float32", "shape": [1]}],
             "routes": [{"tensor": "i", "to": "tcp://\ud800"}]}]}).encode(),
}


@pytest.mark.parametrize("name", sorted(MQTT_ATTACKS))
def test_mqtt_command_port_survives(target: Target, name: str) -> None:
    before = sum(target.errors().values())
    target.publish(MQTT_ATTACKS[name])
    target.cmd.wait_for(lambda: sum(target.errors().values()) > before, 5, "error counted")
    target.assert_serves()


def test_a_probe_to_a_dead_endpoint_does_not_hold_up_other_commands(target: Target) -> None:
    probe = M.Probe(cid(), target.cmd.reply_topic, dead_endpoint(), 1000, 1)
    target.cmd.client.publish(target.cmd.topics.cmd(NODE), M.encode(probe), qos=1)
    time.sleep(0.2)  # the probe now waits on its dead endpoint
    t = time.monotonic()
    r = target.cmd.command(NODE, M.Undeploy(cid(), "", "not-deployed"), timeout=5)
    assert r["code"] == "unknown_deployment" and time.monotonic() - t < 3
    target.assert_serves()


# ---- quotas -------------------------------------------------------------------------

def test_a_stage_declaring_3x2_40_elements_is_refused(target: Target) -> None:
    stage = {"id": "f", "part": None, "routes": [],
             "inputs": [{"name": "i", "dtype": "float32", "shape": [3, 1 << 20, 1 << 20]}]}
    d = {"type": "deploy", "v": 1, "id": cid(), "deployment": "big", "epoch": 0,
         "stages": [stage], "reply_to": target.cmd.reply_topic}
    target.cmd.client.publish(target.cmd.topics.cmd(NODE), json.dumps(d), qos=1)
    r = target.cmd.wait_reply(d["id"], 5)
    assert not r["ok"] and r["code"] == "bad_command" and "elements" in r["error"]
    assert "big" not in target.agent.deployments.summary()
    target.assert_serves()


def test_forward_stages_count_against_the_memory_budget(target: Target) -> None:
    deps = target.agent.deployments
    budget, used = deps.settings.memory_budget_bytes, deps.in_use_bytes()
    shape = (1, 1024, 1024, 32)  # 128 MiB of float32 gathered per forward stage
    each = 4 * int(np.prod(shape))
    names, code = [], ""
    for i in range(budget // each + 2):
        spec = M.StageSpec("f", None, (M.InputSpec("i", "float32", shape, pieces=4),), ())
        r = target.cmd.command(NODE, M.Deploy(cid(), "", f"fwd{i}", 0, (spec,)), timeout=10)
        if not r["ok"]:
            code = r["code"]
            break
        names.append(f"fwd{i}")
        assert deps.in_use_bytes() > used + len(names) * each
    assert code == "memory_budget" and 0 < len(names) <= budget // each
    for n in names:
        assert target.cmd.command(NODE, M.Undeploy(cid(), "", n), timeout=10)["ok"]
    assert deps.in_use_bytes() == used
    target.assert_serves()


def test_stages_per_node_are_bounded_before_any_thread_starts(target: Target) -> None:
    threads = threading.active_count()
    stages = tuple(M.StageSpec(f"f{i}", None, (M.InputSpec("i", "float32", (1,)),), ())
                   for i in range(257))
    r = target.cmd.command(NODE, M.Deploy(cid(), "", "many", 0, stages), timeout=10)
    assert not r["ok"] and r["code"] == "bad_stage" and "256" in r["error"]
    assert threading.active_count() <= threads + 1  # (a slow-command worker)
    target.assert_serves()


# ---- the supervisor -----------------------------------------------------------------

def _die_once(obj: object, attr: str) -> None:
    """Make `obj.attr` end its thread once (SystemExit passes every `except Exception`)."""
    real = getattr(obj, attr)

    def die(*args: object) -> object:
        setattr(obj, attr, real)
        raise SystemExit("killed by the test")
    setattr(obj, attr, die)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("thread", ["dataplane", "mqtt", "commands"])
def test_a_dead_thread_is_restarted(target: Target, thread: str) -> None:
    before = target.errors().get("thread_restart", 0)
    if thread == "dataplane":
        _die_once(target.agent.dataplane, "_step")
    elif thread == "mqtt":
        _die_once(target.agent.control, "_receive")
        target.publish(b"{}")  # paho's network thread runs _receive and ends
    else:
        _die_once(target.agent.control, "_execute")
        target.publish(M.encode(M.Undeploy(cid(), target.cmd.reply_topic, "none")))
    target.cmd.wait_for(lambda: target.errors().get("thread_restart", 0) > before, 5,
                        f"{thread} restarted")
    target.cmd.wait_for(lambda: not target.agent.control.dead()
                        and not target.agent.dataplane.dead(), 5, "threads alive")
    target.assert_serves()


class _Broken:
    """A part of the agent whose thread is dead and will not start again."""

    def __init__(self) -> None:
        self.broken = True

    def dead(self) -> list[str]:
        return ["widget"] if self.broken else []

    def restart(self, name: str) -> None:
        raise OSError("no more file descriptors")


def test_an_agent_that_cannot_serve_says_degraded_not_online(target: Target) -> None:
    part = _Broken()
    target.agent.supervisor.parts.append(part)
    try:
        st = target.cmd.wait_for(lambda: target.cmd.status[NODE]["state"] == "degraded"
                                 and target.cmd.status[NODE], 5, "status degraded")
        assert "widget" in st["reason"] and "no more file descriptors" in st["reason"]
        part.broken = False
        target.cmd.wait_for(lambda: target.cmd.status[NODE]["state"] == "online", 5,
                            "online again")
        assert target.cmd.status[NODE]["reason"] == ""
    finally:
        target.agent.supervisor.parts.remove(part)
    target.assert_serves()


def test_uploads_in_progress_are_bounded(target: Target) -> None:
    store = target.agent.store
    with ServiceClient(target.agent.dataplane.service_endpoint, target.ctx, 5) as svc:
        codes = []
        for i in range(20):  # empty-sized uploads reserve no room, but each holds a file
            try:
                svc.request("put", [b""], sha256=f"{i:064x}", size=0, offset=0, last=False)
            except Exception as exc:
                codes.append(getattr(exc, "code", ""))
    assert codes == ["store_full"] * 4
    assert len(list(store.tmp.iterdir())) == 16
    with store._lock:  # abandon them (as 60 s idle would), so later uploads find room
        store._uploads.clear()
    for p in store.tmp.iterdir():
        p.unlink()
    target.assert_serves()
