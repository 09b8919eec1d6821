"""Strategy 'ftp': DeepThings baseline as published — equal grid, fixed fused depth, gateway tail.

DeepThings (Zhao et al., 2018) fuses the first layers of YOLOv2 (16 of its 31, about
half) into one stack, cuts the stack's output into an equal N x M grid of tiles that the
edge nodes compute (each with its own halo), and lets the gateway gather the tiles and
run the remaining layers. Nothing is optimised; this is the rule, reproduced:

- gateway: the sink if it computes, else the source if it computes, else the fastest node;
- edge nodes: the other candidates in profile order (the gateway too when fewer than 2);
- grid: g x g with g = floor(sqrt(nodes)) (4-8 nodes: 2x2, 9-15: 3x3, ...), 1 x nodes for
  2 or 3 nodes, shrunk to fit the stack's output; one tile per node, equal splits;
- fused depth: the deepest tileable cut (one tensor crossing it) within the first
  FUSED_FRACTION of the ops, else the shallowest tileable cut;
- ops after the stack: one stage on the gateway.
"""

from __future__ import annotations

import math

from planner.errors import PlanError
from planner.model.tile import halo
from planner.planning.constraints import Constraints
from planner.planning.plan import Plan, Stage
from planner.planning.planbuild import make_plan
from planner.planning.profile import Profile
from planner.planning.strategies._common import candidates, check_pins, setup
from planner.planning.strategies._tilesearch import (
    single_cuts,
    stack_ends,
    tile_stage,
    tileable_ops,
    untileable_error,
)

NAME = "ftp"
FUSED_FRACTION = 0.5  # DeepThings fused 16 of YOLOv2's 31 layers


def gateway(cm, names: list[str]) -> str:
    """The node that gathers the tiles and runs the rest of the model."""
    p = cm.profile
    for d in (p.sink, p.source):
        if d in names:
            return d
    return min(names, key=lambda d: cm.range_seconds(d, 0, cm.n))


def equal_grid(nodes: int, out_h: int, out_w: int) -> tuple[int, int]:
    """DeepThings-style square grid for the number of edge nodes, fitted to the output."""
    g = math.isqrt(nodes)
    r, c = (g, g) if g >= 2 else (1, nodes)
    return min(r, out_h), min(c, out_w)


def plan(graph, profile: Profile, constraints: Constraints) -> Plan:
    """Equal-grid fused stack over the edge nodes, the rest on the gateway."""
    cm = setup(graph, profile, constraints)
    names = candidates(cm, constraints)
    if constraints.max_nodes:
        names = names[: constraints.max_nodes]
    if len(names) < 2:
        raise PlanError(
            f"strategy {NAME!r} needs at least 2 nodes that compute, the profile offers "
            f"{len(names)} ({', '.join(names)})"
        )
    gate = gateway(cm, names)
    if gate not in names:
        gate = names[0]
    edge = [d for d in names if d != gate]
    if len(edge) < 2:
        edge = names
    ends = stack_ends(single_cuts(graph), tileable_ops(graph), 0, cm.n)
    if not ends:
        raise untileable_error(graph, 0, NAME)
    within = [e for e in ends if e <= FUSED_FRACTION * cm.n]
    e = within[-1] if within else ends[0]
    h = halo(graph, 0, e)
    r, c = equal_grid(len(edge), h.out_shape[1], h.out_shape[2])
    stack = (
        tile_stage(cm, 0, (0, e), r, c, edge[: r * c]) if r * c > 1 else Stage(0, (0, e), edge[0])
    )
    stages = [stack] + ([Stage(1, (e, cm.n), gate)] if e < cm.n else [])
    for s in stages:
        if s.tiles and any(p.start < e for p in constraints.pins):
            raise PlanError(f"strategy {NAME!r} tiles ops [0, {e}) over several nodes, but some of "
                            "them are pinned to one node")
    check_pins([s for s in stages if not s.tiles], constraints, NAME)
    notes = {
        "problem": (
            "DeepThings FTP rule: equal grid, fixed fused depth, rest on the gateway "
            "(not optimised)"
        ),
        "stack_ops": [0, e],
        "grid": [r, c],
        "gateway": gate,
        "optimal": False,
    }
    return make_plan(cm, stages, NAME, constraints, notes=notes)
