"""Strategy 'neurosurgeon': the best single cut between the device and one server (Neurosurgeon).

As in the paper, the decision treats the model as a chain and prices a cut before op c
by the size of op c-1's output (the model input for c = 0); every cut position and
every server is tried and the one with the lowest estimate for the objective wins
(latency: sum of device time, transfer and server time; throughput: their maximum).
The plan's predictions then come from the full DAG-aware cost model, which also counts
residual tensors the chain estimate misses — the gap is what the baseline shows.
"""

from __future__ import annotations

from planner.errors import PlanError
from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.plan import Plan
from planner.planning.planbuild import make_plan, ranges_to_stages
from planner.planning.profile import Profile
from planner.planning.strategies._common import check_pins, split_roles

NAME = "neurosurgeon"


def chain_bytes(cm: CostModel, c: int) -> int:
    """Neurosurgeon's data size at a cut before op c: op c-1's output (c = 0: the inputs)."""
    g = cm.graph
    ids = g.inputs if c == 0 else g.ops[c - 1].outputs
    return sum(g.tensors[t].nbytes for t in ids if t >= 0)


def estimate(cm: CostModel, dev: str, srv: str, c: int, objective: str) -> float:
    """The paper's estimate for a cut before op c (ops [0, c) on dev, [c, n) on srv)."""
    p, n = cm.profile, cm.n
    first, last = (dev if c > 0 else srv), (srv if c < n else dev)
    parts = [cm.transfer(p.source, first, chain_bytes(cm, 0)), cm.range_seconds(dev, 0, c),
             cm.transfer(dev, srv, chain_bytes(cm, c)) if 0 < c < n else 0.0,
             cm.range_seconds(srv, c, n), cm.transfer(last, p.sink, chain_bytes(cm, n))]
    return sum(parts) if objective == "latency" else max(parts)


def plan(graph, profile: Profile, constraints: Constraints) -> Plan:
    """Best single device/server cut by the chain estimate."""
    cm, dev, servers = split_roles(graph, profile, constraints)
    best = None
    for srv in servers or [dev]:
        for c in range(cm.n + 1):
            if srv == dev and c < cm.n:
                continue
            cuts = [x for x in (0, c, cm.n) if True]
            stages = ranges_to_stages(
                sorted(set(cuts)), [d for d, (a, b) in ((dev, (0, c)), (srv, (c, cm.n))) if b > a]
            )
            try:
                check_pins(stages, constraints, NAME)
            except PlanError:
                continue
            if constraints.memory and not all(cm.fits(s.device, *s.ops) for s in stages):
                continue
            est = estimate(cm, dev, srv, c, constraints.objective)
            if best is None or est < best[0]:
                best = (est, stages, srv, c)
    if best is None:
        raise PlanError(
            f"neurosurgeon: no single cut between {dev!r} and a server fits memory and pins"
        )
    est, stages, srv, c = best
    notes = {"problem": "best single cut device/server (chain estimate, as Neurosurgeon)",
             "device": dev, "server": srv, "cut": c, "estimate_s": float(est)}
    return make_plan(cm, stages, NAME, constraints, notes=notes)
