"""Shared end-to-end set-up: a broker, three real agent processes, a connected Fleet."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from planner.fleet import Fleet
from planner.local.localfleet import LocalFleet
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from tests.conftest import MOSQUITTO, Broker


@dataclass
class Env:
    broker: Broker
    local: LocalFleet
    fleet: Fleet

    @property
    def names(self) -> list[str]:
        return self.local.names


def start(kind: str = "mosquitto", nodes: int = 3) -> Iterator[Env]:
    """Yield a broker of `kind`, `nodes` agents and a Fleet; stop everything after."""
    with tempfile.TemporaryDirectory(prefix=f"e2e-{kind}-") as d:
        broker = Broker(kind, Path(d)).start()
        local = LocalFleet(nodes, broker.url, workdir=Path(d) / "agents")
        (Path(d) / "agents").mkdir()
        try:
            local.start()
            fleet = Fleet.connect(broker.url)
            try:
                fleet.wait_for_nodes(nodes, 60)
                yield Env(broker, local, fleet)
            finally:
                fleet.close()
        finally:
            local.stop()
            broker.stop()


@cache
def model(dtype: str = "float32", size: int = 64) -> bytes:
    """The MobileNetV2-like test model (69 ops), built once per dtype and size."""
    return recipes.mobilenet_v2_like(input_size=size, dtype=dtype, seed=0)


def graph(dtype: str = "float32", size: int = 64) -> ModelGraph:
    return ModelGraph(model(dtype, size), f"mobilenet_v2_like_{size}_{dtype}")


HAVE_MOSQUITTO = Path(MOSQUITTO).exists()


def spawn_tiny(env: Env, tmp_path: Path, budget_mb: int) -> None:
    """Start agent "tiny" with a `budget_mb` memory budget; wait until it is online."""
    board = tmp_path / "tiny.toml"
    board.write_text('[board]\nname = "tiny"\nmemory_mb = 64\n\n[agent]\n'
                     f'memory_budget_mb = {budget_mb}\nhost = "127.0.0.1"\nbenchmark_s = 0.0\n')
    env.local.spawn_agent("tiny", "--config", str(board))
    deadline = time.monotonic() + 60
    while not env.fleet.control.online().get("tiny"):
        assert time.monotonic() < deadline, "agent tiny did not come online"
        time.sleep(0.05)
