"""Strategy 'dads': minimum s-t cut of the op DAG between the device and one server (DADS).

Graph (DADS, light-load case): s = device side, t = server side. Op v gets s->v with its
server time (paid when v runs on the server) and v->t with its device time. A tensor
produced by u gets a virtual node x: u->x with the device-to-server transfer time and
x->consumer edges of infinite capacity, so a tensor read by several server ops is paid
once. Infinite reverse edges (consumer -> producer) forbid server-to-device data flow,
so the device side is closed under predecessors. Graph inputs and outputs add their
transfers from the source and to the sink to the side that receives or produces them.
The cut minimises total time; every server is tried. The device side need not be a
prefix in op order, so the plan can alternate stages and uses direct routes.
"""

from __future__ import annotations

import networkx as nx

from planner.errors import PlanError
from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.plan import Plan, Stage
from planner.planning.planbuild import make_plan
from planner.planning.profile import Profile
from planner.planning.strategies._common import split_roles

NAME = "dads"
INF = float("inf")


def min_cut(cm: CostModel, dev: str, srv: str, constraints: Constraints) -> tuple[float, set[int]]:
    """(cut value, ops on the device) of the DADS graph."""
    g, p = cm.graph, cm.profile
    G = nx.DiGraph()
    s, t = "s", "t"

    def add(u, v, cap):
        if cap <= 0:
            return
        old = G.get_edge_data(u, v, {}).get("capacity", 0.0)
        G.add_edge(u, v, capacity=old + cap)

    for v in range(cm.n):
        add(s, v, float(cm.times[srv][v]))
        add(v, t, float(cm.times[dev][v]))
    for x, cons in g.consumers.items():
        if g.is_static(x):
            continue
        nbytes = g.tensors[x].nbytes
        u = g.producer.get(x)
        if u is None:  # a graph input: delivered by the source to whichever side reads it
            u = ("in", x)
            add(s, u, cm.transfer(p.source, srv, nbytes))
            add(u, t, cm.transfer(p.source, dev, nbytes))
        node = ("x", x)
        add(u, node, cm.transfer(dev, srv, nbytes))
        for c in cons:
            G.add_edge(node, c, capacity=INF)
            G.add_edge(c, u, capacity=INF)
    for x in g.outputs:
        u = g.producer.get(x)
        if u is not None:
            add(s, u, cm.transfer(srv, p.sink, g.tensors[x].nbytes))
            add(u, t, cm.transfer(dev, p.sink, g.tensors[x].nbytes))
    for pin in constraints.pins:
        for v in range(pin.start, pin.end):
            if pin.node == dev:
                G.add_edge(s, v, capacity=INF)
            elif pin.node == srv:
                G.add_edge(v, t, capacity=INF)
            else:
                raise PlanError(
                    f"dads: op {v} is pinned to {pin.node!r}, which is neither the device "
                    f"{dev!r} nor the server {srv!r}"
                )
    G.add_nodes_from([s, t])
    value, (side_s, _) = nx.minimum_cut(G, s, t)
    return value, {v for v in side_s if isinstance(v, int)}


def stages_of(n: int, on_dev: set[int], dev: str, srv: str) -> list[Stage]:
    """Maximal runs of ops on one side, in op order."""
    stages, start = [], 0
    for k in range(1, n + 1):
        if k == n or ((k in on_dev) != (start in on_dev)):
            stages.append(Stage(len(stages), (start, k), dev if start in on_dev else srv))
            start = k
    return stages


def plan(graph, profile: Profile, constraints: Constraints) -> Plan:
    """Min-cut partition between the device and the best server."""
    cm, dev, servers = split_roles(graph, profile, constraints)
    best = None
    for srv in servers or [dev]:
        if srv == dev:
            value, on_dev = sum(cm.times[dev]), set(range(cm.n))
        else:
            value, on_dev = min_cut(cm, dev, srv, constraints)
        if best is None or value < best[0]:
            best = (value, on_dev, srv)
    if best is None:
        raise PlanError("dads: no server to cut against")
    value, on_dev, srv = best
    notes = {"problem": "min s-t cut of the op DAG, device vs one server (DADS light load)",
             "device": dev, "server": srv, "cut_value_s": float(value), "device_ops": len(on_dev)}
    return make_plan(
        cm, stages_of(cm.n, on_dev, dev, srv), NAME, constraints, routing="direct", notes=notes
    )
