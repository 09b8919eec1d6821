"""Strategy 'auto': run every strategy for the requested objective, keep the best simulated plan.

Every registered strategy (the optimal DPs, the tile strategies and the baselines) plans
under the same constraints; each plan's figure is the simulator's (latency_s for
--objective latency, throughput_fps for throughput), so `auto` is by construction never
worse than any of them on the same profile. Strategies that cannot plan (too few nodes,
an untileable model for the tile strategies, memory) are skipped and listed with their
reason; only when every one fails does `auto` fail, with all the reasons.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from planner.errors import PlanError, TilefleetError
from planner.planning.constraints import Constraints
from planner.planning.plan import Plan
from planner.planning.profile import Profile
from planner.planning.strategies.tiles import figure

NAME = "auto"
# Tried in this order; on equal figures the earlier (simpler to deploy) plan is kept.
ORDER = ("latency", "throughput", "neurosurgeon", "dads", "even", "memory", "ftp", "tiles", "hybrid")
log = logging.getLogger(__name__)


def plan(graph, profile: Profile, constraints: Constraints) -> Plan:
    """The best plan among all strategies for constraints.objective (simulated figure)."""
    from planner.planning.strategies import STRATEGIES  # the registry imports this module

    names = [n for n in ORDER if n in STRATEGIES] + sorted(set(STRATEGIES) - set(ORDER) - {NAME})
    best: Plan | None = None
    tried: dict[str, dict] = {}
    for name in names:
        try:
            p = STRATEGIES[name](graph, profile, constraints)
        except TilefleetError as exc:
            tried[name] = {"error": str(exc)}
            log.info("auto: %s skipped: %s", name, exc)
            continue
        tried[name] = {"latency_s": p.predicted.get("latency_s"), "throughput_fps": p.predicted.get("throughput_fps")}
        if best is None or figure(p) < figure(best):
            best = p
    if best is None:
        why = "; ".join(f"{n}: {r['error']}" for n, r in tried.items())
        raise PlanError(f"strategy 'auto': no strategy could plan ({why})")
    notes = {**best.notes, "chosen": best.strategy, "candidates": tried,
             "problem": f"best {constraints.objective} over all strategies under the simulator"}
    return replace(best, strategy=NAME, notes=notes)
