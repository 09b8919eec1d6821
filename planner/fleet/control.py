"""MQTT side of the client: retained node state, commands with replies, deployment records.

MQTT 3.1.1 only: a command names its reply topic in the payload (`reply_to`), and the
client subscribes to its own `tilefleet/<fleet>/clients/<id>/replies`. Node status and
resources are retained, so they arrive right after subscribing; deployment records are
retained under `tilefleet/<fleet>/deployments/<name>`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import paho.mqtt.client as mqtt

from node.control import no_delay, parse_broker_url
from node.errors import ConfigError, WireError
from node.wire import messages as m
from node.wire.codes import Code
from node.wire.results import CommandResult, decode_result
from node.wire.topics import Topics
from planner.errors import FleetError

log = logging.getLogger(__name__)


class CommandError(FleetError):
    """A node answered a command with an error (or did not answer in time)."""

    def __init__(self, message: str, node: str, code: str = Code.ERROR,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.node, self.code, self.details = node, code, details or {}


class Control:
    """One paho client: `status`/`resources`/`metrics` by node, `command()`, records."""

    def __init__(self, url: str, fleet: str = "default", connect_timeout_s: float = 5.0,
                 watch_metrics: bool = True) -> None:
        try:
            self.host, self.port = parse_broker_url(url)
        except ConfigError as exc:
            raise FleetError(str(exc)) from None
        self.url, self.fleet, self.topics = url, fleet, Topics(fleet)
        self.client_id = f"tilefleet-client-{uuid.uuid4().hex[:10]}"
        self.reply_topic = self.topics.client_replies(self.client_id)
        self.status: dict[str, dict[str, Any]] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, m.Metrics] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.record_listeners: list[Callable[[str, dict[str, Any] | None], None]] = []
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[str, Future[dict[str, Any]]]] = {}
        self._subs = [self.reply_topic, self.topics.all_nodes("status"),
                      self.topics.all_nodes("resources"), self.record_topic("+")]
        if watch_metrics:
            self._subs.append(self.topics.all_nodes("metrics"))
        self._subscribed = threading.Event()
        self._connected = threading.Event()
        self._pending_mids: set[int] = set()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv311, clean_session=True)
        c.on_connect, c.on_message, c.on_subscribe = (self._on_connect, self._on_message,
                                                      self._on_subscribe)
        c.on_disconnect = self._on_disconnect
        c.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client = c
        self._connect(connect_timeout_s)

    def record_topic(self, name: str) -> str:
        return self.topics.deployment(name)

    def _connect(self, timeout_s: float) -> None:
        try:
            self.client.connect(self.host, self.port, keepalive=15)
        except (OSError, ValueError) as exc:
            raise FleetError(f"broker unreachable: {self.url}: {exc}") from None
        self.client.loop_start()
        if not self._connected.wait(timeout_s):
            self.close()
            raise FleetError(f"broker unreachable: {self.url}: no CONNACK in {timeout_s:.0f} s")
        if not self._subscribed.wait(timeout_s):
            self.close()
            raise FleetError(f"broker {self.url}: subscriptions not acknowledged")
        time.sleep(0.2)  # retained messages follow the SUBACKs; give them a moment

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for node, fut in waiting.values():
            if not fut.done():
                fut.set_exception(CommandError(f"{node}: client closed", node, "closed"))

    # ---- paho callbacks (network thread) ------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            log.warning("broker %s refused the connection: %s", self.url, rc)
            return
        no_delay(client)
        result, mid = client.subscribe([(t, 1) for t in self._subs])
        self._pending_mids.add(mid)
        self._connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any,
                      props: Any = None) -> None:
        self._pending_mids.discard(mid)
        if not self._pending_mids:
            self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._handle(msg.topic, msg.payload)
        except Exception:  # a bad payload from someone else must not stop the client
            log.debug("ignoring message on %s", msg.topic, exc_info=True)

    def _handle(self, topic: str, payload: bytes) -> None:
        if topic == self.reply_topic:
            rep = json.loads(payload)
            with self._lock:
                node, fut = self._waiting.pop(rep.get("id", ""), ("", None))
            if fut is not None and not fut.done():
                fut.set_result(rep)
            return
        name = self.topics.parse_deployment(topic)
        if name is not None:
            rec = json.loads(payload) if payload else None
            with self._lock:
                if rec is None:
                    self.records.pop(name, None)
                else:
                    self.records[name] = rec
            for fn in list(self.record_listeners):
                fn(name, rec)
            return
        parsed = self.topics.parse(topic)
        if parsed is None:
            return
        node, kind = parsed
        table = {"status": self.status, "resources": self.resources,
                 "metrics": self.metrics}.get(kind)
        if table is not None:
            # metrics are decoded here, at the edge (typed stages); a malformed one is dropped
            doc = (m.decode(payload) if kind == "metrics" else json.loads(payload)) \
                if payload else None
            orphaned: list[Future[dict[str, Any]]] = []
            with self._lock:
                if doc is not None:
                    table[node] = doc
                else:
                    table.pop(node, None)
                if kind == "status" and (doc or {}).get("state") == "offline":
                    # Its Last Will: no reply will come. Fail what waits for one now
                    # rather than at its time-out (a deploy waits up to a minute).
                    for cid in [c for c, (n, _) in self._waiting.items() if n == node]:
                        orphaned.append(self._waiting.pop(cid)[1])
            for fut in orphaned:
                if not fut.done():
                    fut.set_result({"ok": False, "code": Code.OFFLINE,
                                    "error": "went offline (Last Will) before it replied"})

    # ---- commands -------------------------------------------------------------------
    def send(self, node: str, cmd_cls: type, **fields: Any) -> Future[dict[str, Any]]:
        """Publish a command to `node`; the future resolves to the raw reply dict."""
        cmd = cmd_cls(id=uuid.uuid4().hex, reply_to=self.reply_topic, **fields)
        fut: Future[dict[str, Any]] = Future()
        with self._lock:
            self._waiting[cmd.id] = (node, fut)
        self.client.publish(self.topics.cmd(node), m.encode(cmd), qos=1)
        fut.cmd_id = cmd.id  # type: ignore[attr-defined]
        fut.cmd_type = cmd.TYPE  # type: ignore[attr-defined]  # what its result decodes to
        return fut

    def forget(self, fut: Future[dict[str, Any]]) -> None:
        """Stop waiting for a command's reply (a late reply is then ignored)."""
        with self._lock:
            self._waiting.pop(getattr(fut, "cmd_id", ""), None)

    def result(self, node: str, fut: Future[dict[str, Any]], what: str, timeout_s: float
               ) -> CommandResult:
        """Wait for a reply and decode its result (node.wire.results, by the command sent);
        CommandError naming the node on error, time-out or a malformed result."""
        try:
            rep = fut.result(timeout=timeout_s)
        except TimeoutError:
            with self._lock:
                self._waiting.pop(getattr(fut, "cmd_id", ""), None)
            raise CommandError(f"node {node!r} did not answer {what} within {timeout_s:.0f} s",
                               node, Code.TIMEOUT) from None
        if not rep.get("ok"):
            error = str(rep.get("error"))
            error = error.removeprefix(f"node {node!r}: ")  # named once is enough
            raise CommandError(f"node {node!r}: {what} failed: {error}", node,
                               rep.get("code") or Code.ERROR, rep.get("result") or {})
        try:
            return decode_result(getattr(fut, "cmd_type", what), rep.get("result") or {})
        except WireError as exc:
            raise CommandError(f"node {node!r}: {what}: malformed result: {exc}", node,
                               exc.code) from None

    def command(self, node: str, cmd_cls: type, timeout_s: float = 30.0, **fields: Any
                ) -> CommandResult:
        """Send one command and wait for its result."""
        return self.result(node, self.send(node, cmd_cls, **fields), cmd_cls.TYPE, timeout_s)

    # ---- state ------------------------------------------------------------------------
    def online(self) -> dict[str, dict[str, Any]]:
        """Online nodes -> their resources (empty dict while not yet announced)."""
        with self._lock:
            return {n: dict(self.resources.get(n, {})) for n, s in sorted(self.status.items())
                    if s.get("state") == "online"}

    def publish_record(self, name: str, record: dict[str, Any] | None) -> None:
        """Retain (or with None clear) a deployment record and wait until it is sent."""
        payload = json.dumps(record, separators=(",", ":")).encode() if record else b""
        info = self.client.publish(self.record_topic(name), payload, qos=1, retain=True)
        info.wait_for_publish(timeout=10)
        with self._lock:
            if record is None:
                self.records.pop(name, None)
            else:
                self.records[name] = record

    def record(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self.records.get(name)
