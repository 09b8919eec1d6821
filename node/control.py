"""MQTT control plane: status with Last Will, resources, metrics, commands and replies.

Works on MQTT 3.1.1: a command names its reply topic in the payload (`reply_to`).
paho's network thread reconnects with backoff when the broker goes away; the data plane
does not depend on it. Commands that change deployments run on a command thread so pings
stay fast; probe and profile (which wait on other nodes or run for long) run on a third,
each within its own time limit, so neither holds up a deploy.

No payload may end a thread: paho's network thread runs `_on_message`, which catches
everything, a reply topic that cannot be published on (a wildcard, a lone surrogate) is
replaced by the node's own replies topic, and errors are counted in `metrics.errors`.
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
from node.wire.results import CommandResult
from node.wire.topics import Topics

log = logging.getLogger(__name__)
FAST = (m.Ping, m.StatusQuery)  # answered in the network thread
SLOW = (m.Probe, m.Profile)  # run off the command thread, each within its time limit
# seconds a slow command may take before it is answered `command_timeout` (the planner
# waits 60 s for a probe and 120 s for a profile by default)
SLOW_LIMIT_S = {m.Probe.TYPE: 60.0, m.Profile.TYPE: 300.0}


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
        self.handler: Callable[[Any], CommandResult] | None = None  # set by attach()
        self.resources: Callable[[], m.Resources] | None = None
        self.metrics: Callable[[], m.Metrics] | None = None
        self.interval = metrics_interval_s
        self.agent_version = agent_version
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._cmds: queue.Queue[Any] = queue.Queue(maxsize=64)
        self._slow: queue.Queue[Any] = queue.Queue(maxsize=8)
        self._threads: dict[str, threading.Thread] = {}
        self._runaway: threading.Thread | None = None  # a slow command past its limit
        self.state, self.reason = "online", ""  # what `status` says while connected
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tilefleet-node-{node}",
                        protocol=mqtt.MQTTv311, clean_session=True)
        c.will_set(topics.status(node), self._status("offline"), qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=15)
        c.max_queued_messages_set(1000)  # replies while the broker is away: bounded
        c.suppress_exceptions = True  # a raising callback is logged, the thread lives on
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    def _status(self, state: str, reason: str = "") -> bytes:
        return m.encode(m.Status(self.node, state, time.time(), self.agent_version, reason))

    def set_state(self, state: str, reason: str = "") -> None:
        """Publish `state` ("online", or "degraded" with why) as the retained status."""
        self.state, self.reason = state, reason
        if self.connected.is_set():
            self.client.publish(self.topics.status(self.node), self._status(state, reason),
                                qos=1, retain=True)

    def attach(self, handler: Callable[[Any], CommandResult],
               resources: Callable[[], m.Resources], metrics: Callable[[], m.Metrics]) -> None:
        """`handler(cmd) -> its result` (node.wire.results) executes commands; the others
        describe the node."""
        self.handler, self.resources, self.metrics = handler, resources, metrics

    def start(self) -> None:
        if self.handler is None or self.resources is None or self.metrics is None:
            raise RuntimeError("Control.start() before attach(handler, resources, metrics)")
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        self._threads["mqtt"] = self.client._thread  # type: ignore[assignment]  # paho's
        for name in self._LOOPS:
            self.restart(name)

    _LOOPS = {"commands": "_command_loop", "slow-commands": "_slow_loop",
              "metrics": "_metrics_loop"}

    def dead(self) -> list[str]:
        """Names of this control plane's threads that died (for the supervisor)."""
        if self._stop.is_set():
            return []
        return [n for n, t in self._threads.items() if t is None or not t.is_alive()]

    def restart(self, name: str) -> None:
        """Start thread `name` (again): one of _LOOPS, or "mqtt" (paho's network thread)."""
        if name == "mqtt":
            self.client._thread = None  # paho clears it when its thread ends; be sure
            self.client.loop_start()
            self._threads[name] = self.client._thread  # type: ignore[assignment]
            return
        t = threading.Thread(target=getattr(self, self._LOOPS[name]), daemon=True, name=name)
        t.start()
        self._threads[name] = t

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
        for q in (self._cmds, self._slow):
            try:
                q.put_nowait(None)
            except queue.Full:  # its thread sees _stop after the command at hand
                pass

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
        client.publish(self.topics.status(self.node), self._status(self.state, self.reason),
                       qos=1, retain=True)
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
        try:  # paho's network thread: an exception here would end it (no command answered)
            self._receive(msg.payload)
        except Exception:
            log.exception("command payload not handled")
            self.counters.error(Code.INTERNAL)

    def _receive(self, payload: bytes) -> None:
        try:
            cmd = m.decode_command(payload)
        except WireError as exc:
            self.counters.error(exc.code)
            log.debug("bad command: %s", str(exc)[:200])  # counted; a flood must not fill logs
            self._reply(exc.reply, m.Reply(exc.request or "", False, self.node, str(exc),
                                           exc.code))
            return
        if isinstance(cmd, FAST):
            self._execute(cmd)
            return
        try:
            (self._slow if isinstance(cmd, SLOW) else self._cmds).put_nowait(cmd)
        except queue.Full:
            self.counters.error(Code.BUSY)
            self._reply(cmd.reply_to, m.Reply(cmd.id, False, self.node,
                                              "command queue full", Code.BUSY))

    def _reply(self, topic: str | None, reply: m.Reply) -> None:
        """Publish a reply; never raises (a topic paho refuses goes to our replies topic)."""
        if not m.is_publish_topic(topic):
            topic = self.topics.replies(self.node)
        try:
            self.publish(topic, reply, qos=1)  # type: ignore[arg-type]
        except Exception as exc:  # an unencodable result: say so rather than stay silent
            log.warning("reply to %s not sent: %s", reply.id[:40], exc)
            self.counters.error(Code.INTERNAL)

    def _run(self, cmd: Any) -> m.Reply:
        try:
            result = self.handler(cmd)  # type: ignore[misc]
            return m.Reply(cmd.id, True, self.node, result=result)
        except NodeError as exc:
            self.counters.error(exc.code)
            return m.Reply(cmd.id, False, self.node, str(exc), exc.code, dict(exc.details))
        except Exception as exc:  # never let a command take the agent down
            log.exception("command %s failed", cmd.TYPE)
            self.counters.error(Code.INTERNAL)
            return m.Reply(cmd.id, False, self.node, f"{cmd.TYPE}: internal error: {exc}",
                           Code.INTERNAL)

    def _execute(self, cmd: Any) -> None:
        self._reply(cmd.reply_to, self._run(cmd))

    def _command_loop(self) -> None:
        while not self._stop.is_set() and (cmd := self._cmds.get()) is not None:
            self._execute(cmd)

    def _slow_loop(self) -> None:
        """Probe and profile, each in a worker thread answered at its time limit.

        A worker past its limit cannot be interrupted (an invoke, a blocking socket):
        its late result is dropped, and slow commands are refused (busy) until it ends,
        so at most one runaway exists.
        """
        while not self._stop.is_set() and (cmd := self._slow.get()) is not None:
            if self._runaway is not None and self._runaway.is_alive():
                self.counters.error(Code.BUSY)
                self._reply(cmd.reply_to, m.Reply(cmd.id, False, self.node, "a previous "
                                                  f"{cmd.TYPE} still runs past its limit",
                                                  Code.BUSY))
                continue
            out: list[m.Reply] = []
            worker = threading.Thread(target=lambda c=cmd, o=out: o.append(self._run(c)),
                                      daemon=True, name=f"slow-{cmd.TYPE}")
            worker.start()
            limit = SLOW_LIMIT_S[cmd.TYPE]
            worker.join(limit)
            if out:
                self._reply(cmd.reply_to, out[0])
                continue
            self._runaway = worker
            self.counters.error(Code.COMMAND_TIMEOUT)
            self._reply(cmd.reply_to, m.Reply(cmd.id, False, self.node,
                                              f"{cmd.TYPE} did not finish within {limit:g} s",
                                              Code.COMMAND_TIMEOUT))

    def _metrics_loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.connected.is_set():
                try:
                    self.publish(self.topics.metrics(self.node), self.metrics())
                except Exception:
                    log.exception("could not publish metrics")
