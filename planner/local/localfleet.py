"""A fleet on this machine: an embedded broker and N agent processes, torn down reliably.

Used by `tilefleet demo`, tools/bench_e2e.py and end-to-end tests. Children get
PR_SET_PDEATHSIG on Linux so they die with this process even if it is killed hard;
`stop()` (also run by the context manager) terminates them, then kills stragglers.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from planner.errors import FleetError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FleetError(f"the embedded broker exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise FleetError(f"the embedded broker did not listen on port {port} in {timeout_s:.0f} s")


class LocalFleet:
    """Start with `start()` (or `with`); `broker_url` and `agents` are then set."""

    def __init__(self, nodes: int = 3, broker_url: str | None = None, board: str = "laptop",
                 threads: int | None = None, workdir: str | Path | None = None,
                 agent_args: Mapping[str, Sequence[str]] | None = None) -> None:
        """`agent_args`: extra command-line arguments by agent name (e.g. a --config)."""
        self.nodes, self.board, self.threads = nodes, board, threads
        self.agent_args = dict(agent_args or {})
        self.broker_url = broker_url
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tilefleet-demo-"))
        self.procs: dict[str, subprocess.Popen] = {}
        self.broker: subprocess.Popen | None = None
        self.names = [f"demo-{i}" for i in range(nodes)]

    def _spawn(self, cmd: list[str], log_name: str) -> subprocess.Popen:
        out = open(self.workdir / log_name, "ab")
        try:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent if sys.platform == "linux"
                                    else None)
        finally:
            out.close()

    def start(self) -> LocalFleet:
        try:
            if self.broker_url is None:
                port = free_port()
                self.broker = self._spawn([sys.executable, "-m", "planner.local.broker", str(port)],
                                          "broker.log")
                _wait_port(port, self.broker, 20)
                self.broker_url = f"mqtt://127.0.0.1:{port}"
            for name in self.names:
                self.spawn_agent(name)
        except BaseException:
            self.stop()
            raise
        return self

    def spawn_agent(self, name: str, *args: str) -> subprocess.Popen:
        """Start (or add) agent `name` on the broker; `args` go after the defaults."""
        assert self.broker_url is not None, "start() first"
        extra = [*self.agent_args.get(name, ()), *args]
        board = [] if "--config" in extra else ["--board", self.board]
        cmd = [sys.executable, "-m", "node.cli", "--name", name, "--broker", self.broker_url,
               *board, "--host", "127.0.0.1", "--data-port", "0", "--state-dir",
               str(self.workdir / name)]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        self.procs[name] = self._spawn([*cmd, *extra], f"{name}.log")
        return self.procs[name]  # an added agent is not in `names` (the fleet as started)

    def dead(self) -> list[str]:
        """Agents whose process has exited."""
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def log(self, name: str) -> str:
        try:
            return (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def kill(self, name: str) -> None:
        """SIGKILL one agent (no clean shutdown: the broker publishes its Last Will)."""
        p = self.procs[name]
        if p.poll() is None:
            p.kill()
            p.wait()

    def stop(self) -> None:
        """Terminate every child (agents first, then the broker) and remove the workdir."""
        children = list(self.procs.values()) + ([self.broker] if self.broker else [])
        for p in children:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in children:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        self.broker = None
        if self._own_dir and not os.environ.get("TILEFLEET_KEEP_DEMO_DIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
