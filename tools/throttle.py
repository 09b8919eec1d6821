#!/usr/bin/env python3
"""Throttle a process tree's CPU with a cgroup quota (emulate a slower board), or release it.

    python tools/throttle.py --pid PID --cpu 0.25      # 25 % of one core
    python tools/throttle.py --pid PID --release       # back to the root group
    python tools/throttle.py --check                   # exit 0 if cgroups are usable here

cgroup v1 (`/sys/fs/cgroup/cpu/tilefleet-<pid>/cpu.cfs_quota_us`) is used when its `cpu`
controller is mounted and writable, else cgroup v2 (`cpu.max` in a child of the unified
hierarchy): the quota is planner/testbed/cgroups.py's, this is its command line for one
process. A short period (default 10 ms) spreads the quota finely, so a throttled agent
looks uniformly slower instead of frozen for most of every 100 ms. Needs root.
Exit codes: 0 done, 2 bad input or cgroups not usable (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from planner.testbed import cgroups  # noqa: E402
from planner.testbed.spec import TestbedError  # noqa: E402


class ThrottleError(Exception):
    """Cgroups are not usable here, or the process is unknown."""


def backend() -> tuple[str, Path]:
    """("v1", cpu root) or ("v2", unified root); ThrottleError says why neither works."""
    b = cgroups.backend()
    if b is None:
        raise ThrottleError(cgroups.reason() or "no writable cgroup cpu controller")
    return b


def group_of(pid: int) -> str:
    return f"tilefleet-{pid}"


def throttle(pid: int, cpu: float, period_us: int = 10_000) -> Path:
    """Move `pid` into its own group limited to `cpu` cores; returns the group directory."""
    if cpu <= 0:
        raise ThrottleError(f"--cpu must be > 0, got {cpu}")
    if not Path(f"/proc/{pid}").exists():
        raise ThrottleError(f"no process {pid}")
    _, root = backend()
    g = root / group_of(pid)
    g.mkdir(exist_ok=True)
    cgroups.set_quota(g, cpu, period_us / 1e6)
    (g / "cgroup.procs").write_text(str(pid))  # the whole process: every thread moves
    return g


def release(pid: int) -> None:
    """Move `pid` back to the root group and remove its group (if it exists)."""
    _, root = backend()
    g = root / group_of(pid)
    if Path(f"/proc/{pid}").exists():
        try:
            (root / "cgroup.procs").write_text(str(pid))
        except OSError as exc:  # e.g. it exited in between
            if Path(f"/proc/{pid}").exists():
                raise ThrottleError(f"cannot move {pid} back: {exc}") from None
    if g.is_dir():
        for p in (g / "cgroup.procs").read_text().split():
            (root / "cgroup.procs").write_text(p)  # children it forked meanwhile
        g.rmdir()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pid", type=int)
    ap.add_argument("--cpu", type=float, help="cores allowed, e.g. 0.25")
    ap.add_argument("--period-us", type=int, default=10_000)
    ap.add_argument("--release", action="store_true")
    ap.add_argument("--check", action="store_true", help="only check that cgroups are usable")
    a = ap.parse_args(argv)
    try:
        if a.check:
            kind, root = backend()
            print(f"cgroup {kind} at {root}")
            return 0
        if a.pid is None or (a.cpu is None) == (not a.release):
            raise ThrottleError("give --pid and exactly one of --cpu or --release")
        if a.release:
            release(a.pid)
            print(f"released {a.pid}")
        else:
            g = throttle(a.pid, a.cpu, a.period_us)
            print(f"throttled {a.pid} to {a.cpu:g} CPU in {g}")
    except (ThrottleError, TestbedError, OSError) as exc:
        print(f"throttle: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
