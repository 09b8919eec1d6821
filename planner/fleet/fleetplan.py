"""Glue between the fleet and the planner: profile the online nodes, run a strategy."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from planner.errors import FleetError
from planner.model.graph import ModelGraph

if TYPE_CHECKING:
    from planner.fleet.nodes import FleetAccess as Fleet
    from planner.fleet.progress import OnProgress

log = logging.getLogger(__name__)


def strategies() -> list[str]:
    """Names of the registered strategies, in the order of docs/cli.md."""
    from planner.planning.strategies import NAMES

    return list(NAMES)


def plan_for_fleet(fleet: Fleet, graph: ModelGraph, strategy: str, constraints: Any = None,
                   profile: Any = None, on_progress: OnProgress | None = None) -> Any:
    """A Plan for `graph` on the online nodes (profiled unless `profile` is given).

    Without `constraints` the objective is the strategy's own (default_objective), as
    `tilefleet plan` chooses it; the deployment keeps that objective for its re-plans.
    """
    from planner.planning.constraints import Constraints, default_objective
    from planner.planning.strategies import STRATEGIES

    fn = STRATEGIES.get(strategy)
    if fn is None:
        raise FleetError(f"unknown strategy {strategy!r} (available: "
                         f"{', '.join(STRATEGIES) or 'none'})")
    if profile is None:
        from planner.fleet.profiling import profile_fleet

        profile = profile_fleet(fleet, graph, on_progress=on_progress)
    t = time.perf_counter()
    plan = fn(graph, profile, constraints or Constraints(objective=default_objective(strategy)))
    log.info("strategy %s planned %d stage(s) in %.3f s", strategy, len(plan.stages),
             time.perf_counter() - t)
    return plan
