"""Remove testbeds: one by name (`down`), or whatever dead ones left (`cleanup`, as `mn -c`).

A testbed's pieces carry its tag: namespaces `tfb<tag>-*`, links `tfb<tag>*`, cgroups
`tilefleet-tb<tag>-*` (their processes: agents, shims, broker), and the state file lists
the pids of its processes (the only record of them when there are no cgroups, padded
mode). Removing a tag kills those processes, then deletes groups, links (their qdiscs go
with them) and namespaces. `cleanup` also removes pieces with a tag no state file owns.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import planner.testbed.cgroups as cgroups
import planner.testbed.net as net
import planner.testbed.state as state

# a recorded pid is only killed if it still runs one of these (the pid may be reused)
_OURS = ("node.cli", "mosquitto", "planner.testbed.linkshim", "planner.local.broker")


def _is_ours(pid: int) -> bool:
    try:
        cmd = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return False
    return any(word in cmd for word in _OURS)


def kill_pids(pids: list[int], timeout_s: float = 5.0) -> None:
    """TERM, then KILL, the listed processes that are still testbed processes."""
    state.terminate([p for p in pids if p != os.getpid() and state.alive(p) and _is_ours(p)],
                    timeout_s)


def remove_tag(tag: str, pids: list[int] | None = None) -> None:
    """Everything of testbed tag `tag`: processes, cgroups, links, qdiscs, namespaces."""
    if pids:
        kill_pids(pids)
    for g in cgroups.groups(tag):
        cgroups.remove(g)
    if os.geteuid() == 0:
        net.remove(tag)


def down(name: str, root: Path | None = None, timeout_s: float = 30.0) -> bool:
    """Stop testbed `name` (its `up` process first, then what is left); False if unknown."""
    doc = state.read(name, root)
    if doc is None:
        return False
    owner = int(doc.get("pid", 0))
    if owner != os.getpid() and state.alive(owner):
        os.kill(owner, signal.SIGTERM)  # `up` tears down itself; wait for it
        deadline = time.monotonic() + timeout_s
        while state.alive(owner) and time.monotonic() < deadline:
            time.sleep(0.1)
    remove_tag(str(doc["tag"]), [int(p) for p in doc.get("pids", [])])
    state.remove(name, root)
    return True


def cleanup(everything: bool = False, root: Path | None = None) -> list[str]:
    """Remove testbeds whose `up` is gone (all with `everything`) and orphaned pieces."""
    removed = []
    owned = set()
    for doc in state.all_states(root):
        tag = str(doc.get("tag"))
        if everything or not state.alive(int(doc.get("pid", 0))):
            if everything:
                down(doc["name"], root)
            else:
                remove_tag(tag, [int(p) for p in doc.get("pids", [])])
                state.remove(doc["name"], root)
            removed.append(f"{doc['name']} (tag {tag})")
        else:
            owned.add(tag)
    present = ({g.name[len(cgroups.PREFIX):].split("-")[0] for g in cgroups.groups()}
               | (net.tags_present() if os.geteuid() == 0 else set()))
    for tag in sorted(present - owned):
        remove_tag(tag)
        removed.append(f"orphaned pieces of tag {tag}")
    return removed


def leftovers() -> dict[str, list[str]]:
    """What testbeds have here now: namespaces, links, cgroups, state files, processes."""
    pids = []
    for d in state.all_states():
        pids += [int(p) for p in d.get("pids", []) if state.alive(int(p)) and _is_ours(int(p))]
    for g in cgroups.groups():
        pids += cgroups.pids(g)
    return {"namespaces": net.namespaces() if os.geteuid() == 0 else [],
            "links": net.links() if os.geteuid() == 0 else [],
            "cgroups": [g.name for g in cgroups.groups()],
            "states": [d["name"] for d in state.all_states()],
            "processes": [str(p) for p in sorted(set(pids))]}
