"""Partition strategies: the one registry of their names, modules and one-line descriptions.

Each strategy is a module with `NAME` and a pure `plan(graph, profile, constraints) -> Plan`.
`REGISTRY` lists every one in the order of docs/cli.md; the CLI's choices and help text,
`fleetplan.strategies()` and the re-planner read it. Every module is imported by name
here, so a broken one fails the import loudly instead of dropping its strategy.
`auto` imports the strategies it compares itself and never this package (no circle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from planner.planning.constraints import Constraints
from planner.planning.plan import Plan
from planner.planning.profile import Profile
from planner.planning.strategies import (
    auto,
    dads,
    even,
    ftp,
    hybrid,
    latency,
    memory,
    neurosurgeon,
    throughput,
    tiles,
)

PlanFn = Callable[[object, Profile, Constraints], Plan]


@dataclass(frozen=True)
class Strategy:
    """One registered strategy: its CLI name, its module and what it solves."""

    name: str
    module: ModuleType
    summary: str

    @property
    def plan(self) -> PlanFn:
        return self.module.plan


REGISTRY: tuple[Strategy, ...] = (
    Strategy(auto.NAME, auto, "the best of all strategies for the objective, by simulated figure"),
    Strategy(latency.NAME, latency, "minimum single-frame latency with layer ranges (exact)"),
    Strategy(throughput.NAME, throughput, "minimum pipeline period with layer ranges (exact)"),
    Strategy(tiles.NAME, tiles, "a fused-tile stack with uneven splits, then layer ranges"),
    Strategy(hybrid.NAME, hybrid, "D3: device tier, an edge tile stack, then edge/cloud ranges"),
    Strategy(neurosurgeon.NAME, neurosurgeon, "baseline: the best single device/server cut"),
    Strategy(dads.NAME, dads, "baseline: minimum s-t cut of the op DAG, device and one server"),
    Strategy(ftp.NAME, ftp, "baseline: DeepThings' equal-grid fused tiles, gateway tail"),
    Strategy(even.NAME, even, "baseline: equal op counts per device"),
    Strategy(memory.NAME, memory, "baseline: ops in proportion to memory budgets (exo)"),
)
NAMES: tuple[str, ...] = tuple(s.name for s in REGISTRY)
STRATEGIES: dict[str, PlanFn] = {s.name: s.plan for s in REGISTRY}


def describe() -> str:
    """The names with their one-line descriptions, for help texts."""
    return "; ".join(f"{s.name}: {s.summary}" for s in REGISTRY)
