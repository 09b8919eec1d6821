"""Processes of a testbed: the broker, link shims and agents, started so they cannot leak.

Every child gets PR_SET_PDEATHSIG (SIGTERM when the testbed's process dies, even by
SIGKILL) and, before it execs, joins its cgroup when there is one, so `cleanup` finds
it from the group as well as from the state file, and enters its board's network
namespace by setns(2). Not `ip netns exec`: that also mounts a fresh /sys without the
cgroup hierarchy, and an agent must read its own CPU quota (node/pacing.py).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import planner.testbed.cgroups as cgroups
from planner.testbed.spec import TestbedError

REPO = Path(__file__).resolve().parents[2]


CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Move the calling process into network namespace `name` (/run/netns/<name>)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if ctypes.CDLL("libc.so.6", use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
    finally:
        os.close(fd)


def child_setup(group: Path | None, netns: str | None, die_with_parent: bool = True
                ) -> Callable[[], None]:
    """A preexec_fn: die with the parent, join the cgroup, enter the namespace."""
    def setup() -> None:  # between fork and exec
        if die_with_parent:
            try:
                ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG
            except OSError:
                pass
        if group is not None:
            cgroups.enter(group)
        if netns:
            enter_netns(netns)
    return setup


def spawn(argv: Sequence[str], log: Path, group: Path | None = None,
          netns: str | None = None) -> subprocess.Popen:
    """Start argv in the background (inside namespace `netns` and cgroup `group`)."""
    with open(log, "ab") as out:
        return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO,
                                preexec_fn=child_setup(group, netns))


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, proc: subprocess.Popen, what: str,
                   timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TestbedError(f"{what} exited with code {proc.returncode} before it listened")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TestbedError(f"{what} does not listen on {host}:{port} after {timeout_s:.0f} s")


def start_broker(host: str, workdir: Path, group: Path | None) -> tuple[subprocess.Popen, str]:
    """Mosquitto (set_tcp_nodelay) on host, else the embedded broker; (process, URL)."""
    port = free_port(host)
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if Path(exe).exists():
        conf = workdir / "mosquitto.conf"
        # nodelay: with Nagle on in the broker every command round trip waits ~40 ms
        conf.write_text(f"listener {port} {host}\nallow_anonymous true\npersistence false\n"
                        "set_tcp_nodelay true\n")
        argv = [exe, "-c", str(conf)]
        what = "mosquitto"
    else:  # a fresh machine without Mosquitto: the demo's broker, on the bridge address
        argv = [sys.executable, "-m", "planner.local.broker", str(port), host]
        what = "the embedded broker"
    proc = spawn(argv, workdir / "broker.log", group)
    wait_listening(host, port, proc, what)
    return proc, f"mqtt://{host}:{port}"


def start_shim(a: str, b: str, delay_ms: float, workdir: Path, group: Path | None
               ) -> subprocess.Popen:
    """A link shim delaying frames between interfaces a and b (planner/testbed/linkshim.py)."""
    return spawn([sys.executable, "-m", "planner.testbed.linkshim", a, b, f"{delay_ms:g}"],
                 workdir / f"shim-{a}.log", group)


def stop(procs: Sequence[subprocess.Popen], timeout_s: float = 5.0) -> None:
    """TERM every process, KILL what is left after timeout_s, reap them all."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
