"""Strategy 'even': equal op counts per device, the naive pipeline baseline.

Devices are taken in profile order (the source first when it computes), up to
--max-nodes and at most one per op; nothing about speed, links or memory is considered
except that the result must fit memory.
"""

from __future__ import annotations

from planner.planning.constraints import Constraints
from planner.planning.plan import Plan
from planner.planning.planbuild import make_plan, ranges_to_stages
from planner.planning.profile import Profile
from planner.planning.strategies._common import (
    candidates,
    check_pins,
    proportional_cuts,
    setup,
    source_first,
)

NAME = "even"


def plan(graph, profile: Profile, constraints: Constraints) -> Plan:
    """Split the ops into equal contiguous ranges over the candidate devices."""
    cm = setup(graph, profile, constraints)
    names = source_first(cm, candidates(cm, constraints))
    k = min(len(names), constraints.max_nodes or len(names), cm.n)
    devices = names[:k]
    stages = ranges_to_stages(proportional_cuts(cm.n, [1.0] * k), devices)
    check_pins(stages, constraints, NAME)
    return make_plan(cm, stages, NAME, constraints, notes={"problem": "equal op counts per device"})
