"""Shared fixtures: real MQTT brokers on free ports.

- `mosquitto`: a real Mosquitto process (skipped if the binary is missing).
- `embedded_broker`: amqtt (the zero-setup broker of the demo) in a subprocess.
Both yield a `Broker` with `.url` ("mqtt://127.0.0.1:PORT"), `.port`, `.stop()` and
`.start()` (same port again), so tests can take the broker away and bring it back.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

_AMQTT = """
import asyncio, sys
from amqtt.broker import Broker
cfg = {"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:%d"}},
       "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
async def main():
    b = Broker(cfg)
    await b.start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Broker:
    """A broker process on a fixed port; stop() and start() again to test reconnects."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind, self.workdir = kind, workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        log = open(self.workdir / f"{self.kind}.log", "ab")
        if self.kind == "mosquitto":
            conf = self.workdir / "mosquitto.conf"
            # set_tcp_nodelay: with Nagle on, each small command waits ~40 ms for the
            # peer's delayed ACK (the README recommends it for real fleets too)
            conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                            "persistence false\nset_tcp_nodelay true\n")
            cmd = [MOSQUITTO, "-c", str(conf)]
        else:
            cmd = [sys.executable, "-c", _AMQTT % self.port]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def mosquitto() -> Iterator[Broker]:
    """A fresh Mosquitto on a free port for one test."""
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed")
    with tempfile.TemporaryDirectory(prefix="mosq-") as d:
        b = Broker("mosquitto", Path(d)).start()
        yield b
        b.stop()


@pytest.fixture
def embedded_broker() -> Iterator[Broker]:
    """The amqtt broker (what `tilefleet demo` uses) in a subprocess on a free port."""
    pytest.importorskip("amqtt")
    with tempfile.TemporaryDirectory(prefix="amqtt-") as d:
        b = Broker("amqtt", Path(d)).start()
        yield b
        b.stop()
