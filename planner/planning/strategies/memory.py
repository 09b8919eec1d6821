"""Strategy 'memory': ops in proportion to each device's memory budget, as exo's placement.

exo sorts nodes by memory (largest first) and gives each a share of layers proportional
to its memory; compute speed and links are ignored, which is the baseline's point.
"""

from __future__ import annotations

from planner.planning.constraints import Constraints
from planner.planning.plan import Plan
from planner.planning.planbuild import make_plan, ranges_to_stages
from planner.planning.profile import Profile
from planner.planning.strategies._common import candidates, check_pins, proportional_cuts, setup

NAME = "memory"


def plan(graph, profile: Profile, constraints: Constraints) -> Plan:
    """Contiguous ranges sized by memory budget, devices ordered by memory (ties: profile order)."""
    cm = setup(graph, profile, constraints)
    names = candidates(cm, constraints)
    mem = {d: cm.profile.devices[d].memory_bytes for d in names}
    order = sorted(names, key=lambda d: -mem[d])
    k = min(len(order), constraints.max_nodes or len(order), cm.n)
    devices = order[:k]
    stages = ranges_to_stages(proportional_cuts(cm.n, [float(mem[d]) for d in devices]), devices)
    check_pins(stages, constraints, NAME)
    return make_plan(
        cm, stages, NAME, constraints, notes={"problem": "ops proportional to memory (exo)"}
    )
