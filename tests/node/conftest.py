"""Fixtures of the node tests: an agent in this process on real sockets, and a data client.

`agent` has a real data plane (PULL and ROUTER sockets on free ports) and no control plane:
commands go through `Agent.handle`. `mqtt_agent` adds a real MQTT control plane on the
`mosquitto` broker of tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node import config
from node.agent import build_agent
from tests.node.harness import Client


@pytest.fixture
def agent(tmp_path: Path):
    """A laptop-board agent driven in-process: real data plane, no MQTT client."""
    cfg = config.for_board("laptop").override(benchmark_s=0.0)
    a = build_agent("inproc", cfg, tmp_path / "state")
    a.start()
    yield a
    a.stop()


@pytest.fixture
def mqtt_agent(tmp_path: Path, mosquitto):
    """The same agent with its MQTT control plane on the test's real Mosquitto."""
    cfg = config.for_board("laptop").override(benchmark_s=0.0, metrics_interval_s=0.2)
    a = build_agent("inproc", cfg, tmp_path / "state", mosquitto.url)
    a.start()
    yield a
    a.stop()


@pytest.fixture
def client():
    """PUSH/PULL client for data messages to and results from an agent."""
    c = Client()
    yield c
    c.close()
