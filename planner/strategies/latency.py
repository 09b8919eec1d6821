"""Strategy 'latency' (stub, being implemented)."""

from __future__ import annotations

from planner.constraints import Constraints
from planner.errors import PlanError
from planner.plan import Plan
from planner.profile import Profile

NAME = "latency"


def plan(graph, profile: Profile, constraints: Constraints) -> Plan:
    """Not implemented yet."""
    raise PlanError("strategy 'latency' is not available yet")
