"""Shared set-up of every strategy: validated constraints, the cost model, candidate devices."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from planner.errors import PlanError
from planner.planning.constraints import Constraints, check_constraints
from planner.planning.costmodel import CostModel
from planner.planning.profile import Profile


def setup(graph, profile: Profile, constraints: Constraints) -> CostModel:
    """Check the constraints and build the cost model with their source and sink applied."""
    check_constraints(constraints, len(graph.ops), profile.devices)
    profile = replace(
        profile, source=constraints.source or profile.source, sink=constraints.sink or profile.sink
    )
    return CostModel(graph, profile)


def candidates(cm: CostModel, constraints: Constraints) -> list[str]:
    """Devices that may run stages: computing, not excluded (pinned nodes always included)."""
    names = [n for n in cm.profile.compute_devices() if n not in constraints.exclude]
    for p in constraints.pins:
        if not cm.profile.devices[p.node].compute:
            raise PlanError(f"--pin {p.start}:{p.end}@{p.node}: node {p.node!r} does not compute")
    if not names:
        raise PlanError("no node left to compute on (all excluded or non-computing)")
    return names


def allowed(cm: CostModel, names: list[str], constraints: Constraints) -> np.ndarray:
    """allowed[op, k]: may op run on names[k]? Pinned ops only on their node."""
    mask = np.ones((cm.n, len(names)), dtype=bool)
    for p in constraints.pins:
        mask[p.start:p.end, :] = False
        mask[p.start:p.end, names.index(p.node)] = True
    return mask


def pinned_devices(constraints: Constraints) -> set[str]:
    """Nodes that must appear in every plan."""
    return {p.node for p in constraints.pins}


def fastest(cm: CostModel, names: list[str]) -> str:
    """The device with the smallest whole-model compute time."""
    return min(names, key=lambda d: cm.range_seconds(d, 0, cm.n))


def check_pins(stages, constraints: Constraints, strategy: str) -> None:
    """PlanError when a baseline's fixed rule put a pinned op elsewhere."""
    for p in constraints.pins:
        for s in stages:
            a, b = s.ops
            if a < p.end and p.start < b and s.device != p.node:
                raise PlanError(
                    f"strategy {strategy!r} puts ops [{max(a, p.start)}, {min(b, p.end)}) on "
                    f"{s.device!r}, but they are pinned to {p.node!r}"
                )


def proportional_cuts(n: int, weights: list[float]) -> list[int]:
    """Cut points [0, ..., n] giving each range a share of ops proportional to its weight
    (at least one op each)."""
    total = sum(weights)
    cuts, acc = [0], 0.0
    for k, w in enumerate(weights[:-1]):
        acc += w
        lo, hi = cuts[-1] + 1, n - (len(weights) - 1 - k)
        cuts.append(min(max(round(n * acc / total), lo), hi))
    cuts.append(n)
    return cuts


def source_first(cm: CostModel, names: list[str]) -> list[str]:
    """Candidate order for the simple baselines: the source device first when it computes."""
    src = cm.profile.source
    return ([src] if src in names else []) + [d for d in names if d != src]


def device_and_servers(cm: CostModel, names: list[str]) -> tuple[str, list[str]]:
    """Split-computing roles: the source if it computes (else the first 'device'-tier
    candidate) is the device; edge/cloud candidates (else all others) are servers."""
    p = cm.profile
    if p.source in names:
        dev = p.source
    else:
        tiers = [d for d in names if p.devices[d].tier == "device"]
        dev = tiers[0] if tiers else min(names, key=lambda d: p.devices[d].speed)
    servers = [d for d in names if d != dev and p.devices[d].tier != "device"] or [
        d for d in names if d != dev
    ]
    return dev, servers


def split_roles(graph, profile: Profile, constraints: Constraints
                ) -> tuple[CostModel, str, list[str]]:
    """(cost model, device, servers) for the two-tier baselines (Neurosurgeon, DADS).

    With `--max-nodes 1` there is no second node to offload to: no servers, all on the
    device."""
    cm = setup(graph, profile, constraints)
    dev, servers = device_and_servers(cm, candidates(cm, constraints))
    return cm, dev, [] if constraints.max_nodes == 1 else servers
