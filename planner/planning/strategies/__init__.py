"""Partition strategies: one module each, all pure `plan_fn(graph, profile, constraints) -> Plan`.

Other modules (tile strategies) add themselves with `register(name, fn)`; the CLI lists
`STRATEGIES` in INTERFACES.md order.
"""

from __future__ import annotations

from collections.abc import Callable

from planner.planning.constraints import Constraints
from planner.planning.plan import Plan
from planner.planning.profile import Profile

PlanFn = Callable[[object, Profile, Constraints], Plan]
STRATEGIES: dict[str, PlanFn] = {}
# Names from INTERFACES.md that other modules provide when they exist.
DEFERRED = {"auto": "planner.planning.strategies.auto", "tiles": "planner.planning.strategies.tiles",
            "hybrid": "planner.planning.strategies.hybrid", "ftp": "planner.planning.strategies.ftp"}


def register(name: str, fn: PlanFn) -> None:
    """Add or replace a strategy in the registry."""
    STRATEGIES[name] = fn


def _load() -> None:
    import importlib

    from planner.planning.strategies import dads, even, latency, memory, neurosurgeon, throughput

    for mod in (latency, throughput, neurosurgeon, dads, even, memory):
        register(mod.NAME, mod.plan)
    for name, path in DEFERRED.items():
        try:
            mod = importlib.import_module(path)
        except ModuleNotFoundError as exc:
            if exc.name != path:
                raise
            continue
        register(name, mod.plan)


_load()
