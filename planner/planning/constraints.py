"""Planning constraints: where frames start and end, pinned ops, excluded nodes, limits."""

from __future__ import annotations

import re
from dataclasses import dataclass

from planner.errors import PlanError

OBJECTIVES = ("latency", "throughput")


@dataclass(frozen=True)
class Pin:
    """Ops [start, end) must run on `node` (privacy: keep the first ops on the camera)."""

    start: int
    end: int
    node: str


@dataclass(frozen=True)
class Constraints:
    """Everything a strategy must respect besides the profile itself."""

    source: str | None = None  # None: the profile's source
    sink: str | None = None  # None: the profile's sink
    pins: tuple[Pin, ...] = ()
    exclude: tuple[str, ...] = ()
    max_nodes: int | None = None
    memory: bool = True  # enforce per-device memory budgets
    objective: str = "latency"


def default_objective(strategy: str) -> str:
    """The objective when none is asked for: throughput for the throughput strategy (what
    it optimises), else latency (`tilefleet plan`, `deploy` and `Fleet.deploy` alike)."""
    return "throughput" if strategy == "throughput" else "latency"


_PIN = re.compile(r"^(\d+)(?::(\d+))?@(.+)$")


def parse_pin(text: str) -> Pin:
    """'0:5@cam' -> ops [0, 5) on cam; '3@cam' -> op 3 only."""
    m = _PIN.match(text.strip())
    if not m:
        raise PlanError(f"--pin {text!r}: expected START[:END]@NODE, e.g. 0:5@camera")
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) is not None else start + 1
    if end <= start:
        raise PlanError(f"--pin {text!r}: empty op range [{start}, {end})")
    return Pin(start, end, m.group(3))


def check_constraints(c: Constraints, n_ops: int, device_names) -> None:
    """Every node named exists, pins are inside the model, limits make sense."""
    names = set(device_names)
    for label, node in (("source", c.source), ("sink", c.sink)):
        if node is not None and node not in names:
            raise PlanError(
                f"--{label}: unknown node {node!r} (profile has: {', '.join(sorted(names))})"
            )
    for node in c.exclude:
        if node not in names:
            raise PlanError(
                f"--exclude: unknown node {node!r} (profile has: {', '.join(sorted(names))})"
            )
    for p in c.pins:
        if p.node not in names:
            raise PlanError(f"--pin {p.start}:{p.end}@{p.node}: unknown node {p.node!r}")
        if p.node in c.exclude:
            raise PlanError(f"--pin {p.start}:{p.end}@{p.node}: node is also excluded")
        if not 0 <= p.start < p.end <= n_ops:
            raise PlanError(f"--pin {p.start}:{p.end}@{p.node}: ops outside the model's 0..{n_ops}")
    for a in c.pins:
        for b in c.pins:
            if a is not b and a.start < b.end and b.start < a.end and a.node != b.node:
                raise PlanError(
                    f"--pin: ops [{max(a.start, b.start)}, {min(a.end, b.end)}) pinned to "
                    f"both {a.node!r} and {b.node!r}"
                )
    if c.max_nodes is not None and c.max_nodes < 1:
        raise PlanError(f"--max-nodes must be >= 1, got {c.max_nodes}")
    if c.objective not in OBJECTIVES:
        raise PlanError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {c.objective!r}")
