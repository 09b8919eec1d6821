"""Test harness for node agents: agent processes, an MQTT commander, a result sink.

Shared by tests/node and tests/e2e; the planner's own client lives in planner/.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import zmq

from node.control import parse_broker_url
from node.wire import frames as F
from node.wire import messages as M
from node.wire.topics import Topics

REPO = Path(__file__).resolve().parents[2]


class AgentProc:
    """`python -m node.cli` in a subprocess, logging to a file."""

    def __init__(self, name: str, broker_url: str, state_dir: Path, *extra: str,
                 board: str = "laptop") -> None:
        self.name, self.state_dir = name, state_dir
        self.log = state_dir.parent / f"{name}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "node.cli", "--name", name, "--broker", broker_url,
               "--board", board, "--state-dir", str(state_dir), "--host", "127.0.0.1",
               "--data-port", "0", *extra]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, the broker must publish the Last Will."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Commander:
    """Watches statuses/resources/metrics and sends commands with reply topics."""

    def __init__(self, broker_url: str, fleet: str = "default") -> None:
        self.topics = Topics(fleet)
        self.status: dict[str, dict[str, Any]] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, dict[str, Any]] = {}
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reply_topic = f"tilefleet/{fleet}/clients/{uuid.uuid4().hex[:8]}/replies"
        host, port = parse_broker_url(broker_url)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        c.on_message = self._on_message
        c.on_connect = lambda cl, *a: (cl.subscribe(f"tilefleet/{fleet}/#", qos=1))
        c.connect(host, port)
        c.loop_start()
        self.client = c

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.reply_topic or msg.topic.endswith("/replies"):
            self.replies.put(json.loads(msg.payload))
            return
        parsed = self.topics.parse(msg.topic)
        if parsed is None or not msg.payload:
            return
        node, kind = parsed
        if kind in ("status", "resources", "metrics"):
            getattr(self, kind)[node] = json.loads(msg.payload)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def wait_for(self, cond: Any, timeout: float = 15.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = cond()
            if v:
                return v
            time.sleep(0.02)
        raise TimeoutError(f"timed out waiting for {what}")

    def wait_online(self, node: str, timeout: float = 20.0) -> dict[str, Any]:
        self.wait_for(lambda: self.status.get(node, {}).get("state") == "online", timeout,
                      f"{node} online")
        return self.wait_for(lambda: self.resources.get(node), timeout, f"{node} resources")

    def publish_raw(self, node: str, payload: bytes) -> None:
        self.client.publish(self.topics.cmd(node), payload, qos=1)

    def wait_reply(self, cmd_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = self.replies.get(timeout=0.1)
            except queue.Empty:
                continue
            if r.get("id") == cmd_id:
                return r
        raise TimeoutError(f"no reply to command {cmd_id}")

    def command(self, node: str, cmd: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Send a typed command (its reply_to is replaced by ours); return the reply."""
        d = M.to_dict(cmd)
        d["reply_to"] = self.reply_topic
        self.client.publish(self.topics.cmd(node), json.dumps(d), qos=1)
        return self.wait_reply(d["id"], timeout)


def cid() -> str:
    return uuid.uuid4().hex[:12]


class Client:
    """Sends frames to stage endpoints and receives results/errors on a bound PULL."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sink = self.ctx.socket(zmq.PULL)
        port = self.sink.bind_to_random_port("tcp://127.0.0.1")
        self.reply = f"tcp://127.0.0.1:{port}"
        self._push: dict[str, zmq.Socket] = {}

    def send_frames(self, endpoint: str, frames: list[Any]) -> None:
        s = self._push.get(endpoint)
        if s is None:
            s = self._push[endpoint] = self.ctx.socket(zmq.PUSH)
            s.linger = 0
            s.connect(endpoint)
        s.send_multipart(frames, copy=False)

    def send(self, endpoint: str, deployment: str, stage: str, tensors: dict[str, np.ndarray],
             request: str = "r1", epoch: int = 0, regions: dict[str, Any] | None = None,
             full: dict[str, tuple[int, ...]] | None = None) -> None:
        metas, arrs = [], []
        for name, a in tensors.items():
            region = (regions or {}).get(name)
            metas.append(F.meta_for(name, a, (full or {}).get(name), region))
            arrs.append(a)
        h = F.Header("data", deployment, epoch, request, stage, self.reply, tuple(metas),
                     t0=time.time())
        self.send_frames(endpoint, F.encode(h, arrs))

    def recv(self, timeout: float = 10.0) -> tuple[F.Header, list[np.ndarray]]:
        if not self.sink.poll(int(timeout * 1000)):
            raise TimeoutError("no message on the client's reply endpoint")
        return F.decode(self.sink.recv_multipart(copy=False))

    def close(self) -> None:
        self.ctx.destroy(linger=0)


class Fleet:
    """n agent processes on one broker, plus a Commander; use as a context manager."""

    def __init__(self, broker_url: str, workdir: Path, n: int, prefix: str = "n") -> None:
        self.broker_url, self.workdir = broker_url, workdir
        self.names = [f"{prefix}{i}" for i in range(n)]
        self.cmd = Commander(broker_url)
        self.agents = {n: AgentProc(n, broker_url, workdir / n / "state") for n in self.names}
        self.res: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> Fleet:
        try:
            for n in self.names:
                self.res[n] = self.cmd.wait_online(n, timeout=30)
        except TimeoutError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for a in self.agents.values():
            a.stop()
        self.cmd.close()

    def data(self, name: str) -> str:
        return self.res[name]["data_endpoint"]

    def service(self, name: str) -> str:
        return self.res[name]["service_endpoint"]
