"""Re-plan decisions (pure): when to re-plan, the updated profile, what moved.

A node of the deployment that announces `offline` (its Last Will) triggers at once; a
sustained drift (planner.live.drift) triggers unless a re-plan happened less than the
cool-down ago (the new epoch's stages need a few intervals to set their baselines).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from planner.live.drift import Drift, device_factors, link_bandwidths
from planner.profile import Link, Profile

NODE_LOST, DRIFT = "node_lost", "drift"


@dataclass(frozen=True)
class Trigger:
    """Why a re-plan is due: lost nodes and/or drifts."""

    reason: str  # NODE_LOST or DRIFT
    lost: tuple[str, ...] = ()
    drifts: tuple[Drift, ...] = ()

    def describe(self) -> str:
        parts = [f"node {n} went offline" for n in self.lost]
        parts += [d.describe() for d in self.drifts]
        return "; ".join(parts) or self.reason


def lost_nodes(nodes: Iterable[str], status: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Nodes whose retained status says offline (unknown status is not evidence)."""
    return [n for n in nodes if (status.get(n) or {}).get("state") == "offline"]


def decide(nodes: Iterable[str], status: Mapping[str, Mapping[str, Any]],
           drifts: Sequence[Drift], now: float, quiet_until: float) -> Trigger | None:
    """The trigger to act on now, or None."""
    nodes = list(nodes)
    lost = lost_nodes(nodes, status)
    live = [d for d in drifts if d.kind == "link" or d.subject not in lost]
    if lost:
        return Trigger(NODE_LOST, tuple(lost), tuple(live))
    if live and now >= quiet_until:
        return Trigger(DRIFT, (), tuple(live))
    return None


def adjust_profile(profile: Profile, model_sha256: str, trigger: Trigger) -> Profile:
    """The profile under the new conditions: lost nodes gone, drifting devices scaled."""
    devices = {n: d for n, d in profile.devices.items() if n not in trigger.lost}
    for name, factor in device_factors(trigger.drifts).items():
        d = devices.get(name)
        if d is None or factor <= 0:
            continue
        secs = d.op_seconds.get(model_sha256)
        op_seconds = dict(d.op_seconds)
        if secs is not None:
            op_seconds[model_sha256] = tuple(s * factor for s in secs)
        devices[name] = replace(d, speed=d.speed / factor, bytes_per_s=d.bytes_per_s / factor,
                                op_seconds=op_seconds)
    links = {k: v for k, v in profile.links.items()
             if k[0] not in trigger.lost and k[1] not in trigger.lost}
    for (a, b), bw in link_bandwidths(trigger.drifts).items():
        old = profile.link(a, b)
        links[(a, b)] = Link(max(bw, 1.0), old.latency)
    return replace(profile, devices=devices, links=links)


def stage_places(stages: Mapping[str, Mapping[str, Any]]) -> dict[tuple[int, int], set[str]]:
    """Op range -> nodes that compute it, from a deployment record's stages."""
    out: dict[tuple[int, int], set[str]] = {}
    for st in stages.values():
        out.setdefault(tuple(st["ops"]), set()).add(st["node"])
    return out


def moved_stages(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]
                 ) -> list[dict[str, Any]]:
    """Op ranges of the new epoch that did not run on exactly the same nodes before."""
    before = stage_places(old)
    return [{"ops": list(ops), "from": sorted(before.get(ops, set())), "to": sorted(nodes)}
            for ops, nodes in sorted(stage_places(new).items()) if before.get(ops) != nodes]


def link_baselines(profile: Profile, nodes: Sequence[str]) -> dict[str, float]:
    """Profile bandwidth of every link between the deployment's nodes, keyed "a->b"."""
    return {f"{a}->{b}": profile.link(a, b).bandwidth for a in nodes for b in nodes if a != b}
