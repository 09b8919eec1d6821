"""CPU quota groups for emulated boards (cgroup v1 `cpu`, else v2 `cpu.max`).

One flat group per board, `tilefleet-tb<tag>-<node>`, plus `tilefleet-tb<tag>-infra`
for the testbed's own helpers (link shims, broker) so every process of a testbed can be
found from its groups, as Mininet's CPULimitedHost does. A board's group has quota =
cpus x period with the short period of planner/testbed/calibrate.py and no burst
(cpu.cfs_burst_us = 0: quota saved while idle must not buy a fast burst later). Its
weight is raised so that other load on the machine takes CPU from the board only when the
board is below its quota, never its quota itself (the quota stays the cap).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from planner.testbed.spec import TestbedError

V1 = Path("/sys/fs/cgroup/cpu")
V2_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
PREFIX = "tilefleet-tb"
BOARD_SHARES = 8192  # v1 cpu.shares (default 1024); v2 weight below
BOARD_WEIGHT = 800  # v2 cpu.weight (default 100)


def backend() -> tuple[str, Path] | None:
    """("v1"|"v2", root) of a writable cpu controller, or None."""
    if (V1 / "cpu.cfs_quota_us").exists() and os.access(V1, os.W_OK):
        return "v1", V1
    for root in V2_ROOTS:
        ctl = root / "cgroup.controllers"
        if ctl.is_file() and "cpu" in ctl.read_text().split() and os.access(root, os.W_OK):
            return "v2", root
    return None


def reason() -> str:
    """'' when quota groups can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root for cgroups"
    return "" if backend() else "no writable cgroup cpu controller (v1 'cpu' or v2 'cpu')"


def group_name(tag: str, node: str) -> str:
    return f"{PREFIX}{tag}-{node}"


def _root() -> tuple[str, Path]:
    b = backend()
    if b is None:
        raise TestbedError(reason() or "no cgroup cpu controller")
    return b


def create(tag: str, node: str, cpus: float | None, period_s: float = 0.1) -> Path:
    """A group limited to `cpus` host cores (None: unlimited), weight raised; its path."""
    kind, root = _root()
    g = root / group_name(tag, node)
    g.mkdir(exist_ok=True)
    set_quota(g, cpus, period_s)
    if kind == "v1":
        (g / "cpu.shares").write_text(str(BOARD_SHARES))
    else:
        (g / "cpu.weight").write_text(str(BOARD_WEIGHT))
    return g


def set_quota(group: Path, cpus: float | None, period_s: float) -> None:
    """Hold `group` (a child of the cpu root) to `cpus` host cores per period, no burst."""
    kind, root = _root()
    period_us = max(1000, int(round(period_s * 1e6)))
    quota_us = None if cpus is None else max(1000, int(cpus * period_us))
    if kind == "v1":
        (group / "cpu.cfs_period_us").write_text(str(period_us))
        (group / "cpu.cfs_quota_us").write_text("-1" if quota_us is None else str(quota_us))
        if (group / "cpu.cfs_burst_us").exists():
            (group / "cpu.cfs_burst_us").write_text("0")
    else:
        sub = root / "cgroup.subtree_control"
        if "cpu" not in sub.read_text().split():
            sub.write_text("+cpu")
        (group / "cpu.max").write_text(f"{quota_us or 'max'} {period_us}")
        if (group / "cpu.max.burst").exists():
            (group / "cpu.max.burst").write_text("0")


def enter(group: Path) -> None:
    """Move the calling process into `group` (run in a child before exec)."""
    (group / "cgroup.procs").write_text(str(os.getpid()))


def groups(tag: str | None = None) -> list[Path]:
    """Testbed groups present here (of one testbed tag, or all)."""
    b = backend()
    if b is None:
        return []
    want = f"{PREFIX}{tag}-" if tag is not None else PREFIX
    return sorted(p for p in b[1].iterdir() if p.is_dir() and p.name.startswith(want))


def pids(group: Path) -> list[int]:
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def remove(group: Path, timeout_s: float = 5.0) -> None:
    """Stop every process in `group` (TERM, then KILL) and remove the group."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, timeout_s)):
        for pid in pids(group):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids(group) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pids(group):
            break
    try:
        group.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise TestbedError(f"cannot remove cgroup {group}: {exc.strerror}") from None
