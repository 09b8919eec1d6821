"""How this process's compute is slowed to a board's speed, and what a timing must span.

Two emulations of a slower board reach the interpreter runs of an agent:
- padded (`tilefleet-node --emulate-speed F`, no root needed): every stage run and every
  profiled invoke sleeps after the interpreter so it takes 1/F as long (`pad`). An
  approximation: the padding frees the CPU that a real slow board would keep busy.
- a cgroup CPU quota (the testbed, as root): the kernel throttles the process. CFS lets
  a burst shorter than the group's remaining quota run at full speed, so a timing must
  span several CFS periods to see the sustained speed (`min_timing_s`).
"""

from __future__ import annotations

import time
from pathlib import Path

_speed = 1.0
# a timed batch spans this many CFS periods: long enough that its CPU time is what the
# quota lets through (node/profiler.py counts CPU time over the quota, not the lumps)
PERIODS_PER_TIMING = 4
_CGROUP_ROOTS = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpu,cpuacct"))
_CGROUP2_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))


def set_speed(speed: float) -> None:
    """Pad interpreter runs to 1/speed their time from now on (1.0: no padding)."""
    global _speed
    if not 0 < speed <= 1:
        raise ValueError(f"emulated speed must be in (0, 1], got {speed}")
    _speed = float(speed)


def speed() -> float:
    """The padding speed factor (1.0 when not padded)."""
    return _speed


def emulation() -> str:
    """"padded" when runs are padded, "cgroup" under a CPU quota, else "none"."""
    if _speed < 1.0:
        return "padded"
    return "cgroup" if cpu_quota() is not None else "none"


def pad(elapsed_s: float) -> None:
    """Sleep so a run that took `elapsed_s` takes elapsed_s / speed in all."""
    if _speed < 1.0 and elapsed_s > 0:
        time.sleep(elapsed_s * (1.0 / _speed - 1.0))


def cpu_quota() -> tuple[float, float] | None:
    """(quota_s, period_s) of this process's cgroup CPU limit, or None when unlimited."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hid, ctrls, path = line.split(":", 2)
        if "cpu" in ctrls.split(","):  # cgroup v1
            for root in _CGROUP_ROOTS:
                q, p = (
                    root / path.lstrip("/") / "cpu.cfs_quota_us",
                    root / path.lstrip("/") / "cpu.cfs_period_us",
                )
                try:
                    quota, period = int(q.read_text()), int(p.read_text())
                except (OSError, ValueError):
                    continue
                return (quota / 1e6, period / 1e6) if quota > 0 else None
        if hid == "0" and ctrls == "":  # cgroup v2
            for root in _CGROUP2_ROOTS:
                try:
                    quota, period = (root / path.lstrip("/") / "cpu.max").read_text().split()
                except (OSError, ValueError):
                    continue
                return None if quota == "max" else (int(quota) / 1e6, int(period) / 1e6)
    return None


def min_timing_s() -> float:
    """Shortest wall time one timed batch of invokes must span (0: any, no quota)."""
    q = cpu_quota()
    return PERIODS_PER_TIMING * q[1] if q else 0.0
