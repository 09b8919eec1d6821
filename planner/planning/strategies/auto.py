"""Strategy 'auto': run every strategy for the requested objective, keep the best simulated plan.

Every other strategy (the optimal DPs, the tile strategies and the baselines, imported
here by module: the registry in `strategies/__init__` imports this one) plans under the
same constraints; each plan's figure is the simulator's (latency_s for
--objective latency, throughput_fps for throughput), so `auto` is by construction never
worse than any of them on the same profile. Strategies that cannot plan (too few nodes,
an untileable model for the tile strategies, memory) are skipped and listed with their
reason; only when every one fails does `auto` fail, with all the reasons.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import planner.planning.strategies.dads as dads
import planner.planning.strategies.even as even
import planner.planning.strategies.ftp as ftp
import planner.planning.strategies.hybrid as hybrid
import planner.planning.strategies.latency as latency
import planner.planning.strategies.memory as memory
import planner.planning.strategies.neurosurgeon as neurosurgeon
import planner.planning.strategies.throughput as throughput
import planner.planning.strategies.tiles as tiles
from planner.errors import PlanError, TilefleetError
from planner.planning.constraints import Constraints
from planner.planning.plan import Plan
from planner.planning.profile import Profile

NAME = "auto"
# Tried in this order; on equal figures the earlier (simpler to deploy) plan is kept.
CANDIDATES = (latency, throughput, neurosurgeon, dads, even, memory, ftp, tiles, hybrid)
log = logging.getLogger(__name__)


def plan(graph, profile: Profile, constraints: Constraints) -> Plan:
    """The best plan among all strategies for constraints.objective (simulated figure)."""
    best: Plan | None = None
    tried: dict[str, dict] = {}
    for mod in CANDIDATES:
        name = mod.NAME
        try:
            p = mod.plan(graph, profile, constraints)
        except TilefleetError as exc:
            tried[name] = {"error": str(exc)}
            log.info("auto: %s skipped: %s", name, exc)
            continue
        tried[name] = {
            "latency_s": p.predicted.get("latency_s"),
            "throughput_fps": p.predicted.get("throughput_fps"),
        }
        if best is None or tiles.figure(p) < tiles.figure(best):
            best = p
    if best is None:
        raise PlanError(refusal(constraints.objective, {n: r["error"] for n, r in tried.items()}))
    notes = {**best.notes, "chosen": best.strategy, "candidates": tried,
             "problem": f"best {constraints.objective} over all strategies under the simulator"}
    return replace(best, strategy=NAME, notes=notes)


def refusal(objective: str, errors: dict[str, str], limit: int = 170) -> str:
    """One short line: the objective and the main reason (the objective's own strategy's,
    else the first tried); every strategy's reason is logged (`tilefleet -v`)."""
    name = objective if objective in errors else next(iter(errors), "")
    others = len(errors) - 1
    head = f"strategy 'auto' found no plan for {objective}; {name or 'auto'} says: "
    tail = f" (+{others} other refusal{'s' if others > 1 else ''}; -v lists them)" if others else ""
    reason = errors.get(name, "no strategy is registered")
    room = limit - len(head) - len(tail)
    if len(reason) > room:  # cut at a word, the shortfall's figures come first in the text
        reason = reason[: room - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return head + reason + tail
