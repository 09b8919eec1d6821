"""Turn a strategy's stage list into a complete Plan: routes, memory check, predictions.

Two routing rules, both recorded explicitly in the plan's routes:
- "relay" (layer-range pipelines): at each boundary the stage before sends every tensor
  live across it to the stage after, forwarding residuals it does not consume itself;
  this is the "every live tensor at a cut counts" cost the DP strategies optimise.
- "direct" (DAG partitions such as DADS): each tensor goes from its producing stage to
  every stage that reads it.
Graph outputs always go from their producing stage to the sink.
"""

from __future__ import annotations

from dataclasses import replace

from planner.errors import PlanError
from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.plan import SINK, SOURCE, Plan, Route, Stage
from planner.planning.simulate import plan_memory, simulate


def _route(cm: CostModel, src, dst, tensors) -> Route:
    g = cm.graph
    ts = sorted(set(tensors))
    return Route(
        src, dst, tuple(g.tensors[t].name for t in ts), int(sum(g.tensors[t].nbytes for t in ts))
    )


def relay_routes(cm: CostModel, stages: list[Stage]) -> list[Route]:
    """Routes of a pipeline: boundary k carries every live tensor at its cut."""
    out = [_route(cm, SOURCE, stages[0].id, cm.cut_tensors(0))]
    for prev, nxt in zip(stages, stages[1:], strict=False):
        ts = cm.cut_tensors(nxt.ops[0])
        if ts:
            out.append(_route(cm, prev.id, nxt.id, ts))
    out.extend(_sink_routes(cm, stages))
    return out


def direct_routes(cm: CostModel, stages: list[Stage]) -> list[Route]:
    """Routes of a DAG partition: producer stage -> each consumer stage."""
    g = cm.graph
    owner = {}
    for s in stages:
        for k in range(*s.ops):
            owner[k] = s.id
    pairs: dict[tuple, set[int]] = {}
    for s in stages:
        a, b = s.ops
        for k in range(a, b):
            for t in g.ops[k].inputs:
                if t < 0 or g.is_static(t):
                    continue
                p = g.producer.get(t)
                src = SOURCE if p is None else owner[p]
                if p is None or not a <= p < b:
                    pairs.setdefault((src, s.id), set()).add(t)
    out = [_route(cm, src, dst, ts) for (src, dst), ts in pairs.items()]
    out.extend(_sink_routes(cm, stages))
    return out


def _sink_routes(cm: CostModel, stages: list[Stage]) -> list[Route]:
    out = []
    for s in stages:
        ts = cm.outputs_in(*s.ops)
        if ts:
            out.append(_route(cm, s.id, SINK, ts))
    return out


def ranges_to_stages(cuts: list[int], devices: list[str]) -> list[Stage]:
    """Stages from cut points [0, c1, ..., n] and one device per range."""
    return [
        Stage(i, (a, b), d)
        for i, (a, b, d) in enumerate(zip(cuts, cuts[1:], devices, strict=False))
    ]


def check_memory(plan: Plan, cm: CostModel) -> None:
    """PlanError naming the device and the bytes when a device's parts do not fit."""
    for dev, need in plan_memory(plan, cm).items():
        budget = cm.profile.devices[dev].memory_bytes
        if need > budget:
            raise PlanError(f"plan does not fit memory: device {dev!r} needs {need} bytes, "
                            f"its budget is {budget} bytes ({need - budget} over)")


def make_plan(cm: CostModel, stages: list[Stage], strategy: str, constraints: Constraints,
              routing: str = "relay", notes: dict | None = None, frames: int = 32) -> Plan:
    """A Plan with routes and predicted figures; memory is checked when constraints ask."""
    p = cm.profile
    routes = relay_routes(cm, stages) if routing == "relay" else direct_routes(cm, stages)
    plan = Plan(
        model_file=cm.graph.source,
        model_sha256=cm.graph.sha256,
        profile_sha256=p.sha256(),
        strategy=strategy,
        objective=constraints.objective,
        source=constraints.source or p.source,
        sink=constraints.sink or p.sink,
        stages=tuple(stages),
        routes=tuple(routes),
        notes={"routing": routing, **(notes or {})},
        profile=p,
    )  # embedded: simulate/explain need no profile file
    if constraints.memory:
        check_memory(plan, cm)
    return replace(plan, predicted=simulate(plan, cm, frames))
