"""Hostile input against a real agent process on a real Mosquitto (issue 12): every single
message of tests/node/test_hostile_input.py, sent the way an attacker on the LAN would,
leaves the process answering on its data, service and MQTT command ports and serving a
deployment bit-identical to one interpreter; a process-level fuzz run (slow) throws
random, truncated, deeply nested and oversized messages at all three ports and the
agent's RSS and thread count stay within 10% of before.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zmq

from node.runtime import RuntimeSettings, run_whole
from node.wire import messages as M
from node.wire.frames import CLIENT
from node.wire.service import ServiceClient
from tests.node.harness import Client, Fleet, cid
from tests.node.models import Chain, three_parts
from tests.node.test_hostile_input import DATA_ATTACKS, MQTT_ATTACKS, SERVICE_ATTACKS

pytestmark = pytest.mark.e2e


class Live:
    """One agent process with the whole chain deployed, and raw access to its ports."""

    def __init__(self, fleet: Fleet, chain: Chain) -> None:
        self.fleet, self.chain = fleet, chain
        self.ctx = zmq.Context()
        self.client = Client()
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.linger = 0
        self.push.sndhwm = 100_000
        self.push.connect(fleet.data("n0"))
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.linger = 0
        self.dealer.connect(fleet.service("n0"))

    def close(self) -> None:
        self.client.close()
        self.ctx.destroy(linger=0)

    def publish(self, payload: bytes) -> None:
        c = self.fleet.cmd
        c.client.publish(c.topics.cmd("n0"), payload, qos=1).wait_for_publish(5)

    def service(self, frames: list[bytes]) -> None:
        self.dealer.send_multipart(frames)

    def drain_service(self) -> None:
        while self.dealer.poll(0):
            self.dealer.recv_multipart()

    def assert_serves(self, seed: int) -> None:
        """The process lives, answers on all three ports, and the chain is exact."""
        assert self.fleet.agents["n0"].alive()
        x = np.random.default_rng(seed).standard_normal((1, 32, 32, 3)).astype(np.float32)
        self.client.send(self.fleet.data("n0"), "c", "s0", {"input": x}, f"ok-{seed}")
        while True:  # error replies of the attack may arrive first: skip them
            h, arrs = self.client.recv(timeout=10)
            if h.request == f"ok-{seed}":
                break
        assert h.kind == "result", h.error
        np.testing.assert_array_equal(arrs[0], run_whole(self.chain.model, [x],
                                                          RuntimeSettings(threads=1))[0])
        with ServiceClient(self.fleet.service("n0"), self.ctx, 5) as svc:
            svc.ping()
        assert self.fleet.cmd.command("n0", M.Ping(cid(), ""), timeout=5)["ok"]
        assert self.fleet.cmd.status["n0"]["state"] == "online"


def start(fleet: Fleet) -> Live:
    chain = three_parts()
    with ServiceClient(fleet.service("n0")) as svc:
        for p in chain.parts:
            svc.upload(p.data)
    ep = fleet.data("n0")
    stages = tuple(M.StageSpec(
        f"s{k}", p.sha256, tuple(M.InputSpec(t.name, t.dtype, t.shape) for t in p.inputs),
        tuple(M.Route(o, CLIENT if k == 2 else ep, "" if k == 2 else f"s{k + 1}")
              for o in p.output_names)) for k, p in enumerate(chain.parts))
    assert fleet.cmd.command("n0", M.Deploy(cid(), "", "c", 0, stages))["ok"]
    live = Live(fleet, chain)
    live.assert_serves(0)
    return live


def test_every_listed_message_leaves_the_agent_process_serving(mosquitto, tmp_path: Path
                                                                ) -> None:
    with Fleet(mosquitto.url, tmp_path, 1) as fleet:
        live = start(fleet)
        try:
            attacks = [*((live.publish, p) for p in MQTT_ATTACKS.values()),
                       *((live.push.send_multipart, f) for f in DATA_ATTACKS.values()),
                       *((live.service, f) for f in SERVICE_ATTACKS.values())]
            for seed, (send, message) in enumerate(attacks, 1):
                send(message)
                live.assert_serves(seed)
            errors = fleet.cmd.wait_for(lambda: (fleet.cmd.metrics.get("n0") or {}).get(
                "errors", {}).get("bad_header", 0) >= 5 and fleet.cmd.metrics["n0"]["errors"],
                10, "errors counted in metrics")
            assert errors["bad_command"] >= len(MQTT_ATTACKS) - 1, errors
            assert "internal" not in errors and "thread_restart" not in errors, errors
        finally:
            live.close()


# ---- process-level fuzz -------------------------------------------------------------

def hostile(rng: random.Random, good: bytes) -> bytes:
    """One random, truncated, deeply nested, oversized or field-mangled JSON message."""
    k = rng.randrange(6)
    if k == 0:
        return rng.randbytes(rng.randrange(300))
    if k == 1:
        return good[:rng.randrange(len(good) + 1)]
    if k == 2:
        return rng.choice([b"[", b'{"a":']) * rng.randrange(1, 120_000)
    if k == 3:
        return b"{" + b" " * rng.randrange(60_000, 80_000) + b"}"
    doc = json.loads(good)
    for key in rng.sample(sorted(doc), min(len(doc), rng.randrange(1, 4))):
        doc[key] = rng.choice([None, [], {}, -1, 2 ** 70, "a/#", "\ud800", "tcp://garbage",
                               [[[[]]]], "x" * 300, 1.5, True])
    return json.dumps(doc).encode()


def footprint(pid: int) -> tuple[int, int]:
    p = psutil.Process(pid)
    return p.memory_info().rss, p.num_threads()


@pytest.mark.slow
def test_process_level_fuzz_keeps_the_agent_serving_within_its_footprint(
        mosquitto, tmp_path: Path) -> None:
    n_data, n_service, n_mqtt = 5000, 2000, 2000
    rng = random.Random(12)
    data_good = json.dumps({"v": 1, "kind": "data", "deployment": "c", "epoch": 0,
                            "request": "f", "stage": "s0", "reply": "tcp://127.0.0.1:9",
                            "tensors": [{"name": "input", "dtype": "float32",
                                         "shape": [1, 32, 32, 3]}]}).encode()
    svc_good = json.dumps({"v": 1, "op": "put", "seq": 1, "sha256": "ab" * 32, "size": 10,
                           "offset": 0, "last": False}).encode()
    cmd_good = json.dumps({"type": "deploy", "v": 1, "id": "f", "reply_to": "x/replies",
                           "deployment": "f", "epoch": 0, "stages": []}).encode()
    with Fleet(mosquitto.url, tmp_path, 1) as fleet:
        live = start(fleet)
        pid = fleet.agents["n0"].proc.pid
        try:
            def round_(n: int) -> None:
                for i in range(n):
                    live.push.send_multipart([hostile(rng, data_good)]
                                             + [rng.randbytes(8)] * rng.randrange(2))
                    if i % 5 < 2:
                        live.service([hostile(rng, svc_good), rng.randbytes(10)])
                        live.publish(hostile(rng, cmd_good))
                    if i % 200 == 0:
                        live.drain_service()
                live.drain_service()

            round_(500)  # warm-up: first-time allocations are not growth
            live.assert_serves(1)
            rss0, threads0 = footprint(pid)
            t = time.monotonic()
            round_(n_data)
            took = time.monotonic() - t
            live.assert_serves(2)
            time.sleep(2)  # let queued replies and reconnect attempts settle
            rss1, threads1 = footprint(pid)
            print(f"fuzz: {n_data} data, {n_service} service, {n_mqtt} MQTT messages in "
                  f"{took:.1f} s; RSS {rss0 >> 20} -> {rss1 >> 20} MiB, threads "
                  f"{threads0} -> {threads1}")
            assert rss1 <= rss0 * 1.1, (rss0, rss1)
            assert threads1 <= threads0 * 1.1, (threads0, threads1)
            errors = fleet.cmd.command("n0", M.StatusQuery(cid(), ""))["result"]["errors"]
            assert "internal" not in errors and "thread_restart" not in errors, errors
        finally:
            live.close()
