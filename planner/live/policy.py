"""Re-plan decisions (pure): when to re-plan, the updated profile, what moved.

A node of the deployment that announces `offline` (its Last Will) triggers at once; a
sustained drift (planner.live.drift) triggers unless a re-plan happened less than the
cool-down ago (the new epoch's stages need a few intervals to set their baselines).
A link drift counts only when it moves the running plan's simulated figure by more than
the policy's margin (`material_links`): probes of a fast link swing a lot on a busy host
without any effect on a plan whose transfers take microseconds. A node that joins
triggers a re-plan when a plan that may use it beats the running one by the margin
(`gain`; the watcher profiles the joiner first).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from planner.fleet.record import StageEntry
from planner.live.drift import Drift, device_factors
from planner.planning.plan import Plan
from planner.planning.profile import Link, Profile

NODE_LOST, DRIFT, JOIN = "node_lost", "drift", "join"


@dataclass(frozen=True)
class Trigger:
    """Why a re-plan is due: lost nodes and/or drifts."""

    reason: str  # NODE_LOST, DRIFT or JOIN
    lost: tuple[str, ...] = ()
    drifts: tuple[Drift, ...] = ()
    joined: tuple[str, ...] = ()
    note: str = ""  # why it matters, e.g. the predicted gain of a join

    def describe(self) -> str:
        parts = [f"node {n} went offline" for n in self.lost]
        parts += [d.describe() for d in self.drifts]
        parts += [f"node {n} joined" for n in self.joined]
        parts += [self.note] if self.note else []
        return "; ".join(parts) or self.reason


def lost_nodes(nodes: Iterable[str], status: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Nodes whose retained status says offline or degraded (an agent that cannot serve:
    node/README_WIRE.md); an unknown status is not evidence."""
    return [n for n in nodes if (status.get(n) or {}).get("state") in ("offline", "degraded")]


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


def without_nodes(profile: Profile, names: Iterable[str]) -> Profile:
    """`profile` without these devices and every link to or from them."""
    gone = set(names)
    return replace(profile,
                   devices={n: d for n, d in profile.devices.items() if n not in gone},
                   links={k: v for k, v in profile.links.items()
                          if k[0] not in gone and k[1] not in gone})


def adjust_profile(profile: Profile, model_sha256: str, trigger: Trigger) -> Profile:
    """The profile under the new conditions: lost nodes gone, drifting devices scaled."""
    profile = without_nodes(profile, trigger.lost)
    devices = dict(profile.devices)
    for name, factor in device_factors(trigger.drifts).items():
        d = devices.get(name)
        if d is None or factor <= 0:
            continue
        secs = d.op_seconds.get(model_sha256)
        op_seconds = dict(d.op_seconds)
        if secs is not None:
            op_seconds[model_sha256] = tuple(s * factor for s in secs)
        # A CPU quota or a busy board slows everything the node does per frame, not only
        # the interpreter (the drift factor is measured on busy time, which includes it).
        devices[name] = replace(d, speed=d.speed / factor, bytes_per_s=d.bytes_per_s / factor,
                                op_seconds=op_seconds,
                                op_overhead_s=d.op_overhead_s * factor,
                                stage_overhead_s=d.stage_overhead_s * factor,
                                piece_overhead_s=d.piece_overhead_s * factor,
                                copy_s_per_byte=d.copy_s_per_byte * factor)
    links = dict(profile.links)
    # Probes measure another quantity than the profile (a small payload over its round
    # trip vs a large transfer less a ping): carry over their ratio, not their value.
    for d in trigger.drifts:
        if d.kind != "link" or d.baseline <= 0:
            continue
        a, _, b = d.key.partition("->")
        if a not in devices or b not in devices:  # a lost node's links went with it
            continue
        old = profile.link(a, b)
        links[(a, b)] = Link(max(old.bandwidth * d.measured / d.baseline, 1.0), old.latency)
    return replace(profile, devices=devices, links=links)


@dataclass(frozen=True)
class MovedStage:
    """An op range of a new epoch that did not run on exactly the same nodes before."""

    ops: tuple[int, int]
    before: tuple[str, ...]  # JSON "from": the nodes that ran it ([] if no one did)
    after: tuple[str, ...]  # JSON "to"

    def to_json(self) -> dict[str, Any]:
        """{"ops": [a, b], "from": [...], "to": [...]}, as the replans topic carries it."""
        return {"ops": list(self.ops), "from": list(self.before), "to": list(self.after)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MovedStage:
        """Inverse of to_json."""
        start, end = (int(v) for v in d["ops"])
        return cls((start, end), tuple(d.get("from", ())), tuple(d["to"]))


def stage_places(stages: Mapping[str, StageEntry]) -> dict[tuple[int, int], set[str]]:
    """Op range -> nodes that compute it, from a deployment record's stages."""
    out: dict[tuple[int, int], set[str]] = {}
    for st in stages.values():
        out.setdefault(tuple(st.ops), set()).add(st.node)
    return out


def moved_stages(old: Mapping[str, StageEntry], new: Mapping[str, StageEntry]
                 ) -> tuple[MovedStage, ...]:
    """Op ranges of the new epoch that did not run on exactly the same nodes before."""
    before = stage_places(old)
    return tuple(MovedStage(ops, tuple(sorted(before.get(ops, set()))), tuple(sorted(nodes)))
                 for ops, nodes in sorted(stage_places(new).items()) if before.get(ops) != nodes)


def plan_figure(graph: Any, plan: Plan, profile: Profile, objective: str | None = None
                ) -> float:
    """The plan's simulated figure under `profile` for `objective` (default: the plan's own;
    lower is better: seconds of latency, or minus frames per second)."""
    from planner.planning.costmodel import CostModel
    from planner.planning.simulate import simulate

    sim = simulate(plan, CostModel(graph, replace(profile, source=plan.source, sink=plan.sink)))
    if (objective or plan.objective) == "throughput":
        return -float(sim["throughput_fps"])
    return float(sim["latency_s"])


def gain(before: float, after: float) -> float:
    """Relative improvement of a figure (lower is better): 0.2 means 20% better."""
    if before == after:
        return 0.0
    return (before - after) / abs(before) if before else float("inf")


def figures(objective: str, before: float, after: float, gained: float) -> str:
    """'predicted throughput 100 -> 150 (+50%)' from two plan figures."""
    if objective == "throughput":
        return f"predicted throughput {-before:.4g} -> {-after:.4g} fps ({gained:+.0%})"
    return f"predicted latency {before:.4g} -> {after:.4g} s ({gained:+.0%})"


def material_links(graph: Any, plan: Plan, profile: Profile, drifts: Sequence[Drift],
                   model_sha256: str, margin: float) -> list[Drift]:
    """The link drifts that alone move the plan's figure by more than `margin` (either way)."""
    links = [d for d in drifts if d.kind == "link"]
    if not links:
        return []
    base = plan_figure(graph, plan, profile)
    out = []
    for d in links:
        changed = adjust_profile(profile, model_sha256, Trigger(DRIFT, (), (d,)))
        if abs(gain(base, plan_figure(graph, plan, changed))) > margin:
            out.append(d)
    return out


def settled_joiners(online_since: Mapping[str, float], in_use: Iterable[str],
                    excluded: Iterable[str], last_tried: Mapping[str, float], now: float,
                    settle_s: float, cooldown_s: float) -> list[str]:
    """Nodes online for `settle_s`, not in the deployment, not tried within `cooldown_s`.

    The cool-down is per node, so a flapping node is judged at most once per cool-down
    however often it comes back.
    """
    skip = set(in_use) | set(excluded)
    return sorted(n for n, t in online_since.items()
                  if n not in skip and now - t >= settle_s
                  and now - last_tried.get(n, -float("inf")) >= cooldown_s)
