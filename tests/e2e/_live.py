"""Shared set-up of the recovery tests: Mosquitto, N local agents, a connected Fleet."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from planner.fleet import Fleet
from planner.fleet.reference import LocalModel, random_inputs
from planner.local.drills import Stream
from planner.local.localfleet import LocalFleet
from planner.modelbuild import recipes
from tests.conftest import MOSQUITTO, Broker

HAVE_MOSQUITTO = Path(MOSQUITTO).exists()


@dataclass
class Env:
    broker: Broker
    local: LocalFleet
    fleet: Fleet
    workdir: Path


@contextmanager
def fleet_env(nodes: int = 4) -> Iterator[Env]:
    """Mosquitto, `nodes` local agents and a connected Fleet; everything stops after."""
    with tempfile.TemporaryDirectory(prefix="e2e-live-") as d:
        broker = Broker("mosquitto", Path(d)).start()
        (Path(d) / "agents").mkdir()
        local = LocalFleet(nodes, broker.url, workdir=Path(d) / "agents")
        try:
            local.start()
            with Fleet.connect(broker.url) as fleet:
                fleet.wait_for_nodes(nodes, 60)
                yield Env(broker, local, fleet, Path(d))
        finally:
            local.stop()
            broker.stop()


def model(size: int = 32, dtype: str = "float32") -> bytes:
    """The MobileNetV2-like test model, small enough for a quick stream."""
    return recipes.mobilenet_v2_like(input_size=size, dtype=dtype, seed=0)


def listen(port: int, topic: str) -> tuple[mqtt.Client, list[dict]]:
    """A second MQTT client that collects what is published on `topic`."""
    got: list[dict] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.on_message = lambda _c, _u, msg: got.append(json.loads(msg.payload))
    c.connect("127.0.0.1", port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    return c, got


def checked_stream(dep, data: bytes, distinct: int = 8) -> Stream:
    """A background stream through `dep`, every result checked against a local interpreter."""
    local = LocalModel(data)
    xs = [random_inputs(dep.record.model["inputs"], s) for s in range(distinct)]
    return Stream(dep, xs, [local.run(x) for x in xs]).start()
