"""Where running testbeds are recorded: one JSON file per testbed name.

`/run/tilefleet-testbed/<name>.json` as root (TILEFLEET_TESTBED_DIR overrides; without
root `$XDG_RUNTIME_DIR/tilefleet-testbed` or ~/.cache/tilefleet/testbed). The file is
written as soon as a testbed's tag is chosen and again after every piece is made, so
`status`, `down` and `cleanup` find everything a killed `up` left. Tags (numbers that
name the namespaces, links and cgroups) are handed out under a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def state_dir() -> Path:
    """The state directory for this user (created on demand)."""
    env = os.environ.get("TILEFLEET_TESTBED_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/tilefleet-testbed")
    run = os.environ.get("XDG_RUNTIME_DIR")
    return (
        Path(run) / "tilefleet-testbed" if run else Path.home() / ".cache" / "tilefleet" / "testbed"
    )


def path_of(name: str, root: Path | None = None) -> Path:
    return (root or state_dir()) / f"{name}.json"


def read(name: str, root: Path | None = None) -> dict[str, Any] | None:
    try:
        return json.loads(path_of(name, root).read_text())
    except (OSError, ValueError):
        return None


def write(doc: dict[str, Any], root: Path | None = None) -> Path:
    """Atomically (re)write the state of testbed doc["name"]."""
    p = path_of(doc["name"], root)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(p)
    return p


def remove(name: str, root: Path | None = None) -> None:
    path_of(name, root).unlink(missing_ok=True)


def all_states(root: Path | None = None) -> list[dict[str, Any]]:
    d = root or state_dir()
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        if p.name == "calibration.json":
            continue
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return out


def terminate(pids: list[int] | set[int], timeout_s: float = 5.0) -> None:
    """SIGTERM the processes, wait up to timeout_s, then SIGKILL and wait for what is left."""
    left = [p for p in pids if alive(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in left:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        while any(alive(p) for p in left) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in left if alive(p)]
        if not left:
            return


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def locked(root: Path | None = None) -> Iterator[None]:
    """Hold the state directory's lock (tag allocation, state file creation)."""
    d = root or state_dir()
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
