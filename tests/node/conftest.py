"""Fixtures of the node tests: an agent in this process (no broker) and a data client."""

from __future__ import annotations

from pathlib import Path

import pytest

from node import config
from node.agent import Agent
from tests.node.harness import Client


@pytest.fixture
def agent(tmp_path: Path):
    """A laptop-board agent whose MQTT side points nowhere: commands go through `handle`."""
    cfg = config.for_board("laptop").override(benchmark_s=0.0)
    a = Agent("inproc", "mqtt://127.0.0.1:9", cfg, tmp_path / "state")
    a.start()
    yield a
    a.stop()


@pytest.fixture
def client():
    """PUSH/PULL client for data messages to and results from an agent."""
    c = Client()
    yield c
    c.close()
