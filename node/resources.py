"""What this node offers: board facts, live load and memory, runtime, a speed figure."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from pathlib import Path

import numpy as np
import psutil

from node import __version__
from node.config import NodeConfig
from node.runtime import runtime_name, runtime_version
from node.wire.messages import Resources

log = logging.getLogger(__name__)


def temperature_c() -> float | None:
    """Hottest readable sensor in degrees C, or None where none is readable."""
    try:
        temps = psutil.sensors_temperatures()  # type: ignore[attr-defined]
        vals = [t.current for ts in temps.values() for t in ts if t.current]
        if vals:
            return float(max(vals))
    except (AttributeError, OSError):
        pass
    zone = Path("/sys/class/thermal/thermal_zone0/temp")
    try:
        return int(zone.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def micro_benchmark(seconds: float = 0.2, n: int = 96) -> float:
    """GFLOP/s of repeated float32 n x n matrix products for about `seconds`."""
    if seconds <= 0:
        return 0.0
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    reps, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(10):
            a @ b
        reps += 10
    return 2 * n**3 * reps / elapsed / 1e9


def frequency_mhz() -> float:
    try:
        f = psutil.cpu_freq()
        return float(f.current) if f else 0.0
    except (OSError, NotImplementedError, FileNotFoundError):
        return 0.0


def host_identity() -> str:
    """A stable id of this machine: agents that share it share its CPU cores."""
    parts = [socket.gethostname()]
    for f in ("/etc/machine-id", "/var/lib/dbus/machine-id", "/proc/sys/kernel/random/boot_id"):
        try:
            parts.append(Path(f).read_text().strip())
            break  # machine-id when present; else the boot id (same machine until reboot)
        except OSError:
            continue
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 0


def describe(node: str, cfg: NodeConfig, data_endpoint: str, service_endpoint: str,
             speed_gflops: float) -> Resources:
    """The retained resources announcement."""
    mem = psutil.virtual_memory()
    delegates = tuple(d for d in cfg.agent.delegates if d == "xnnpack")  # what is wired in
    return Resources(
        node=node, board=cfg.board.name, cores=os.cpu_count() or cfg.board.cores,
        frequency_mhz=frequency_mhz() or float(cfg.board.frequency_mhz),
        memory_bytes=int(mem.total), memory_available_bytes=int(mem.available),
        memory_budget_bytes=cfg.agent.memory_budget_mb << 20,
        temperature_c=temperature_c(), load=os.getloadavg()[0] if hasattr(os, "getloadavg")
        else 0.0, runtime=runtime_name(), runtime_version=runtime_version(),
        delegates=delegates, speed_gflops=round(speed_gflops, 3),
        speed_prior=cfg.board.speed_prior, threads=cfg.agent.threads,
        data_endpoint=data_endpoint, service_endpoint=service_endpoint,
        agent_version=__version__, host=host_identity(), host_cores=usable_cores())
