"""Strategy 'tiles': a fused-tile stack over several devices (DeepThings' FTP), then layer ranges.

Problem solved: choose the stack depth e (ops [c, e) from the first op, c > 0 only when
leading ops are pinned to a node), the number k of tiles and the grid r x c (r * c = k),
with the k fastest devices holding one tile each, rows and columns split in proportion
to device speed (uneven splits), and the layer ranges for ops [e, n) on any devices
(optimal chain DP given the stack), minimising the objective (single-frame latency, or
the pipelined bottleneck for --objective throughput) of the whole plan.

Every tileable depth (up to the first untileable op; the stack may end at a cut crossed
by several tensors, inside a residual block or a route), every
k and every grid is scored in closed form (see `_tilesearch`); the best few are built
and simulated exactly, and the best simulated plan is returned. A model whose first
ops cannot be tiled (e.g. FULLY_CONNECTED first) is refused with the op named.
"""

from __future__ import annotations

from planner.errors import PlanError, TileError
from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.plan import Plan
from planner.planning.planbuild import make_plan
from planner.planning.profile import Profile
from planner.planning.strategies._common import allowed, candidates, setup
from planner.planning.strategies._tilesearch import (
    Search,
    no_plan_error,
    stack_cuts,
    stack_ends,
    stack_sizes,
    thin,
    tileable_ops,
    untileable_error,
)

NAME = "tiles"
MAX_ENDS = 48  # stack depths scored per start: spread evenly over the tileable ones


def figure(plan: Plan) -> float:
    """The simulated figure to minimise for the plan's objective."""
    if plan.objective == "throughput":
        return -float(plan.predicted.get("throughput_fps", 0.0))
    return float(plan.predicted.get("latency_s", float("inf")))


def leading_pin(constraints: Constraints) -> tuple[int, str | None]:
    """(c, node) when ops [0, c) are pinned to one node, else (0, None)."""
    c, node = 0, None
    for p in sorted(constraints.pins, key=lambda p: p.start):
        if p.start <= c and (node is None or p.node == node):
            c, node = max(c, p.end), p.node
    return c, node


def first_pinned(constraints: Constraints, after: int, n: int) -> int:
    """The first pinned op at or after `after` (n when none): a stack must stop before it."""
    return min([max(p.start, after) for p in constraints.pins if p.end > after], default=n)


def suffix_devices(names: list[str], objective: str, max_nodes: int | None, head: str | None):
    """Which devices may run the layer ranges after a stack on `devs`."""
    def pick(devs: list[str]) -> tuple[str, ...]:
        if max_nodes is not None:
            return tuple(d for d in names if d in devs or d == head)
        if objective == "throughput":
            # Pipelined frames: tile devices are busy with the stack, keep the rest apart.
            rest = tuple(d for d in names if d not in devs)
            return rest or tuple(names)
        return tuple(names)

    return pick


def verify(
    search: Search, cm: CostModel, constraints: Constraints, strategy: str, notes: dict
) -> Plan:
    """Build and simulate the best-scored candidates; the best simulated plan wins."""
    best, reasons = None, []
    for cand in search.best():
        try:
            stages = search.stages(cand)
            extra = {
                "stack_ops": list(cand.stack),
                "grid": [len(cand.rows) - 1, len(cand.cols) - 1],
                "head_ops": [0, cand.head[0]],
                "closed_form_s": cand.score,
            }
            plan = make_plan(cm, stages, strategy, constraints, notes={**notes, **extra})
        except (PlanError, TileError) as exc:
            reasons.append(str(exc))
            continue
        if best is None or figure(plan) < figure(best):
            best = plan
    if best is None:
        raise no_plan_error(strategy, reasons)
    return best


def plan(graph, profile: Profile, constraints: Constraints) -> Plan:
    """Fused-tile stack from the first op over the fastest devices, then layer ranges."""
    cm = setup(graph, profile, constraints)
    names = candidates(cm, constraints)
    if len(names) < 2:
        raise PlanError(f"strategy {NAME!r} needs at least 2 nodes that compute, the profile "
                        f"offers {len(names)} ({', '.join(names)})")
    c, head = leading_pin(constraints)
    ends = stack_ends(stack_cuts(graph), tileable_ops(graph), c, first_pinned(constraints, c, cm.n))
    if not ends:
        raise untileable_error(graph, c, NAME)
    objective = constraints.objective
    ranked = sorted(names, key=lambda d: cm.range_seconds(d, 0, cm.n))
    names = ranked  # fastest first: the throughput suffix takes devices in this order
    ok = allowed(cm, names, constraints)
    sizes = stack_sizes(NAME, len(ranked), constraints, head)
    search = Search(cm, objective, ok, names)
    holder = head or cm.profile.source
    head_cost = (
        (cm.transfer(cm.profile.source, head, cm.cut_bytes[0]) + cm.stage_seconds(head, 0, c))
        if head
        else 0.0
    )
    pick = suffix_devices(names, objective, constraints.max_nodes, head)
    for e in thin(ends, MAX_ENDS):
        search.score((c, head), head_cost, holder, e, ranked, sizes, pick)
    notes = {
        "problem": f"min {objective}: fused-tile stack from op {c} over the k fastest nodes "
        "(depth, k, grid r x c and speed-proportional splits searched), rest as layer ranges",
        "scored_candidates": len(search.found),
        "optimal": False,
    }
    return verify(search, cm, constraints, NAME, notes)
