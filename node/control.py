"""MQTT control plane: status with Last Will, resources, metrics, commands and replies.

Works on MQTT 3.1.1: a command names its reply topic in the payload (`reply_to`).
paho's network thread reconnects with backoff when the broker goes away; the data plane
does not depend on it. Slow commands run on a command thread so pings stay fast.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from node.errors import ConfigError, NodeError, WireError
from node.metrics import Counters
from node.wire import messages as m
from node.wire.codes import Code
from node.wire.topics import Topics

log = logging.getLogger(__name__)
FAST = (m.Ping, m.StatusQuery)  # answered in the network thread


def no_delay(client: mqtt.Client) -> None:
    """Turn Nagle's algorithm off on the client's socket.

    A command and its reply are a few small packets each way (PUBLISH, PUBACK); with
    Nagle on, a small write waits for the peer's delayed ACK (~40 ms on Linux), and a
    command round trip took 88 ms on loopback instead of about 1 ms.
    """
    sock = client.socket()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
    except (AttributeError, OSError):
        pass  # not a TCP socket (a test double, a websocket wrapper): nothing to tune


def parse_broker_url(url: str) -> tuple[str, int]:
    """'mqtt://host:port' (port defaults to 1883) -> (host, port)."""
    p = urllib.parse.urlsplit(url)
    try:
        port = p.port or 1883
    except ValueError:
        raise ConfigError(f"broker URL {url!r}: invalid port") from None
    if p.scheme not in ("mqtt", "tcp") or not p.hostname or p.path not in ("", "/"):
        raise ConfigError(f"broker URL {url!r}: expected mqtt://host:port")
    return p.hostname, port


class Control:
    """One MQTT client for one node; `attach(handler, ...)` says who executes commands."""

    def __init__(self, node: str, broker_url: str, topics: Topics, counters: Counters,
                 metrics_interval_s: float = 2.0, agent_version: str = "") -> None:
        self.node, self.topics, self.counters = node, topics, counters
        self.host, self.port = parse_broker_url(broker_url)
        self.handler: Callable[[Any], dict[str, Any]] | None = None  # set by attach()
        self.resources: Callable[[], m.Resources] | None = None
        self.metrics: Callable[[], m.Metrics] | None = None
        self.interval = metrics_interval_s
        self.agent_version = agent_version
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._cmds: queue.Queue[Any] = queue.Queue(maxsize=64)
        self._threads: list[threading.Thread] = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tilefleet-node-{node}",
                        protocol=mqtt.MQTTv311, clean_session=True)
        c.will_set(topics.status(node), self._status("offline"), qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=15)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    def _status(self, state: str) -> bytes:
        return m.encode(m.Status(self.node, state, time.time(), self.agent_version))

    def attach(self, handler: Callable[[Any], dict[str, Any]],
               resources: Callable[[], m.Resources], metrics: Callable[[], m.Metrics]) -> None:
        """`handler(cmd) -> result dict` executes commands; the others describe the node."""
        self.handler, self.resources, self.metrics = handler, resources, metrics

    def start(self) -> None:
        if self.handler is None or self.resources is None or self.metrics is None:
            raise RuntimeError("Control.start() before attach(handler, resources, metrics)")
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        for target, name in ((self._command_loop, "commands"), (self._metrics_loop, "metrics")):
            t = threading.Thread(target=target, daemon=True, name=name)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Publish offline (clean shutdown), disconnect, stop threads."""
        self._stop.set()
        if self.connected.is_set():
            info = self.client.publish(self.topics.status(self.node), self._status("offline"),
                                       qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self._cmds.put(None)

    def publish(self, topic: str, msg: Any, retain: bool = False, qos: int = 0) -> None:
        self.client.publish(topic, m.encode(msg), qos=qos, retain=retain)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            log.warning("broker %s:%d refused the connection: %s", self.host, self.port, rc)
            return
        log.info("connected to broker %s:%d", self.host, self.port)
        no_delay(client)
        client.subscribe(self.topics.cmd(self.node), qos=1)
        client.publish(self.topics.status(self.node), self._status("online"), qos=1,
                       retain=True)
        try:
            self.publish(self.topics.resources(self.node), self.resources(), retain=True, qos=1)
        except Exception:
            log.exception("could not describe resources")
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("lost the broker (%s); reconnecting with backoff", rc)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            cmd = m.decode_command(msg.payload)
        except WireError as exc:
            self.counters.error(exc.code)
            log.info("bad command on %s: %s", msg.topic, exc)
            self._reply(exc.reply, m.Reply(exc.request or "", False, self.node, str(exc),
                                           exc.code))
            return
        if isinstance(cmd, FAST):
            self._execute(cmd)
            return
        try:
            self._cmds.put_nowait(cmd)
        except queue.Full:
            self.counters.error(Code.BUSY)
            self._reply(cmd.reply_to, m.Reply(cmd.id, False, self.node,
                                              "command queue full", Code.BUSY))

    def _reply(self, topic: str | None, reply: m.Reply) -> None:
        self.publish(topic or self.topics.replies(self.node), reply, qos=1)

    def _execute(self, cmd: Any) -> None:
        try:
            result = self.handler(cmd)
            reply = m.Reply(cmd.id, True, self.node, result=result)
        except NodeError as exc:
            self.counters.error(exc.code)
            reply = m.Reply(cmd.id, False, self.node, str(exc), exc.code, dict(exc.details))
        except Exception as exc:  # never let a command take the agent down
            log.exception("command %s failed", cmd.TYPE)
            self.counters.error(Code.INTERNAL)
            reply = m.Reply(cmd.id, False, self.node, f"{cmd.TYPE}: internal error: {exc}",
                            Code.INTERNAL)
        self._reply(cmd.reply_to, reply)

    def _command_loop(self) -> None:
        while (cmd := self._cmds.get()) is not None:
            self._execute(cmd)

    def _metrics_loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.connected.is_set():
                try:
                    self.publish(self.topics.metrics(self.node), self.metrics())
                except Exception:
                    log.exception("could not publish metrics")
