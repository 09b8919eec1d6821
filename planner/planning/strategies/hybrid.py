"""Strategy 'hybrid': D3's horizontal + vertical decomposition over device, edge and cloud tiers.

Problem solved: the source device (device tier) runs ops [0, c); the edge tier's nodes
share a fused-tile stack [c, e) (k of them, grid r x c, rows and columns split by
speed); ops [e, n) run as layer ranges on edge or cloud nodes (optimal chain DP given the
stack). The device-tier cut c, the stack depth e, k and the grid are chosen jointly to
minimise the objective of the whole plan. c = 0 (no device tier) is one of the choices,
so hybrid is never worse than an edge-only stack from the same scored family.

Tiers come from the profile (`tier`: device, edge, cloud). Without edge nodes, every
node but the source forms the edge tier. A source that does not compute (a laptop
client) has no device tier. The (c, e) grid is searched coarse first (at most MAX_STARTS
x MAX_ENDS pairs), then refined around the best pair; the best few candidates are
simulated exactly (see `_tilesearch`).
"""

from __future__ import annotations

from planner.errors import PlanError
from planner.planning.constraints import Constraints
from planner.planning.plan import Plan
from planner.planning.profile import Profile
from planner.planning.strategies._common import allowed, candidates, setup
from planner.planning.strategies._tilesearch import (
    Search,
    single_cuts,
    stack_ends,
    stack_sizes,
    thin,
    tileable_ops,
    untileable_error,
)
from planner.planning.strategies.tiles import first_pinned, leading_pin, suffix_devices, verify

NAME = "hybrid"
MAX_STARTS, MAX_ENDS, REFINE = 12, 16, 4


def tiers(cm, names: list[str], head: str | None) -> tuple[list[str], list[str]]:
    """(edge pool for the stack, devices for the layer ranges after it)."""
    devs = cm.profile.devices
    edge = [d for d in names if devs[d].tier == "edge" and d != head]
    if len(edge) < 2:
        edge = [d for d in names if d != head]
    rest = [d for d in names if devs[d].tier in ("edge", "cloud")] or list(names)
    return edge, rest


def plan(graph, profile: Profile, constraints: Constraints) -> Plan:
    """Device-tier head, edge-tier tile stack, then edge/cloud layer ranges, chosen jointly."""
    cm = setup(graph, profile, constraints)
    # Fastest first: the throughput suffix takes devices in this order.
    names = sorted(candidates(cm, constraints), key=lambda d: cm.range_seconds(d, 0, cm.n))
    ok = allowed(cm, names, constraints)
    pin_c, pin_node = leading_pin(constraints)
    src = cm.profile.source
    head = pin_node or (src if src in names else None)
    edge, rest = tiers(cm, names, head)
    if len(edge) < 2:
        raise PlanError(f"strategy {NAME!r} needs at least 2 edge nodes besides the source, "
                        f"the profile offers {len(edge)} ({', '.join(edge) or 'none'})")
    ranked = sorted(edge, key=lambda d: cm.range_seconds(d, 0, cm.n))
    objective = constraints.objective
    sizes = stack_sizes(NAME, len(ranked), constraints, head)
    cuts, ok_ops = single_cuts(graph), tileable_ops(graph)
    hk = names.index(head) if head else -1
    # Device-tier cuts: ops [0, c) allowed on the head device and within its memory.
    starts = [c for c in cuts if c >= pin_c and c < cm.n and (c == 0 or (
        head and ok[:c, hk].all() and cm.fits(head, 0, c)))]
    if pin_c and pin_c not in cuts:
        starts = [c for c in starts if c >= pin_c]
    ends_of = {c: stack_ends(cuts, ok_ops, c, first_pinned(constraints, c, cm.n)) for c in starts}
    starts = [c for c in starts if ends_of[c]]
    if not starts:
        raise untileable_error(graph, pin_c, NAME)
    search = Search(cm, objective, ok, names)
    pick_all = suffix_devices(rest, objective, constraints.max_nodes, head)

    def pick(devs: list[str]) -> tuple[str, ...]:
        return tuple(d for d in pick_all(devs) if d in names)

    def head_cost(c: int) -> float:
        if c == 0 or not head:
            return 0.0
        send, comp = cm.transfer(src, head, cm.cut_bytes[0]), cm.stage_seconds(head, 0, c)
        return send + comp if objective == "latency" else max(send, comp)

    def run(c: int, ends: list[int]) -> None:
        holder = head if c > 0 and head else src
        for e in ends:
            search.score((c, head if c > 0 else None), head_cost(c), holder, e, ranked, sizes, pick)

    coarse = thin(starts, MAX_STARTS)
    for c in coarse:
        run(c, thin(ends_of[c], MAX_ENDS))
    if search.found:
        # Refine: every start and end near the best coarse pair.
        best = min(search.found, key=lambda x: x.score)
        c0, e0 = best.stack
        near_c = [
            c
            for c in starts
            if c not in coarse and abs(starts.index(c) - starts.index(c0)) <= REFINE
        ]
        for c in near_c + [c0]:
            ends = ends_of[c]
            pos = min(range(len(ends)), key=lambda i: abs(ends[i] - e0))
            run(c, ends[max(pos - REFINE, 0): pos + REFINE + 1])
    notes = {
        "problem": f"min {objective}: ops [0, c) on the source (device tier), a fused-tile stack "
        "[c, e) on edge nodes (k, grid, speed-proportional splits), the rest as layer "
        "ranges on edge/cloud; c, e, k and grid searched jointly",
        "device_tier": head,
        "edge_tier": ranked,
        "scored_candidates": len(search.found),
        "optimal": False,
    }
    return verify(search, cm, constraints, NAME, notes)
