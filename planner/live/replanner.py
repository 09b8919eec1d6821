"""One re-plan: updated profile -> partial plan (or a full one) -> next epoch -> event.

The switch itself is `planner.fleet.deploy.deploy_layout`: the new epoch's parts are uploaded
and its stages loaded next to the old ones, the deployment record is published (clients
move new requests and their in-flight ones to the new epoch), then the new epoch is
activated, which drops the old one. Every re-plan is logged and published, not
retained, on `tilefleet/<fleet>/deployments/<name>/replans`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from planner.errors import PlanError, TilefleetError
from planner.fleet.control import Control
from planner.fleet.record import Record
from planner.live.drift import device_factors, link_bandwidths
from planner.live.policy import Trigger, adjust_profile, moved_stages
from planner.model.graph import ModelGraph
from planner.planning.constraints import Constraints
from planner.planning.profile import Profile

log = logging.getLogger(__name__)
FALLBACK_STRATEGY = "throughput"


@dataclass(frozen=True)
class Replan:
    """What one re-plan did (the JSON published on the replans topic)."""

    deployment: str
    epoch: int  # the new epoch
    previous_epoch: int
    reason: str
    detail: str
    mode: str  # "partial" or "full"
    strategy: str
    moved: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # trigger seen -> new epoch active
    plan_seconds: float = 0.0
    predicted: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0  # wall clock when it completed

    def to_json(self) -> dict[str, Any]:
        return {"type": "replan", "v": 1, "deployment": self.deployment, "epoch": self.epoch,
                "previous_epoch": self.previous_epoch, "reason": self.reason,
                "detail": self.detail, "mode": self.mode, "strategy": self.strategy,
                "moved": self.moved, "seconds": self.seconds,
                "plan_seconds": self.plan_seconds, "predicted": self.predicted,
                "time": self.time}


def replans_topic(control: Control, name: str) -> str:
    return control.topics.replans(name)


def plan_next(graph: ModelGraph, profile: Profile, old_plan: dict[str, Any] | None,
              strategy: str, constraints: Constraints, partial: bool = True,
              changed: set[str] | None = None) -> tuple[Any, str]:
    """(Plan, "partial"|"full"): D3's partial adjustment of the old plan, else a full plan.

    planner.planning.partial keeps the adjusted old plan only when it is within its tolerance of
    a full re-plan with the same strategy; `changed` names the devices that drifted.
    """
    from planner.planning.strategies import STRATEGIES

    fn = STRATEGIES.get(strategy) or STRATEGIES.get(FALLBACK_STRATEGY)
    if fn is None:
        raise PlanError(f"unknown strategy {strategy!r}")
    if partial and old_plan:
        from planner.planning.partial import replan as partial_replan
        from planner.planning.plan import plan_from_json

        try:
            plan = partial_replan(graph, plan_from_json(old_plan, "<deployment record>"),
                                  profile, constraints, fn, changed=changed)
            return plan, str(plan.notes.get("replan", {}).get("mode", "partial"))
        except TilefleetError as exc:
            log.info("partial re-plan refused (%s); planning from scratch", exc)
    return fn(graph, profile, constraints), "full"


def execute(control: Control, graph: ModelGraph, record: Record, profile: Profile,
            trigger: Trigger, strategy: str, constraints: Constraints, *, partial: bool = True,
            seen_at: float | None = None, timeout_s: float = 30.0,
            planned: tuple[Any, str] | None = None) -> tuple[Replan, Record, Profile]:
    """Re-plan `record` for `trigger` and switch to the next epoch; returns what happened.

    `planned` is a (Plan, mode) the caller already made for this trigger and profile
    (a join is judged by planning it).
    """
    from planner.fleet.deploy import deploy_layout
    from planner.planning.layout import from_plan

    t0 = time.monotonic() if seen_at is None else seen_at
    new_profile = adjust_profile(profile, graph.sha256, trigger)
    tp = time.monotonic()
    changed = set(device_factors(trigger.drifts)) | {
        n for a, b in link_bandwidths(trigger.drifts) for n in (a, b)}
    changed |= set(trigger.joined)
    plan, mode = planned or plan_next(graph, new_profile, record.plan, strategy, constraints,
                                      partial, changed - set(trigger.lost))
    plan_s = time.monotonic() - tp
    rec = deploy_layout(control, graph, from_plan(plan), record.name, strategy=strategy,
                        plan=plan.to_json(), predicted=dict(plan.predicted),
                        timeout_s=timeout_s)
    ev = Replan(record.name, rec.epoch, record.epoch, trigger.reason, trigger.describe(), mode,
                strategy, moved_stages(record.stages, rec.stages), time.monotonic() - t0,
                plan_s, dict(plan.predicted), time.time())
    log.warning("re-planned %s: epoch %d -> %d (%s, %s) in %.2f s: %s", record.name,
                record.epoch, rec.epoch, ev.mode, ev.reason, ev.seconds, ev.detail)
    publish(control, ev)
    return ev, rec, new_profile


def publish(control: Control, ev: Replan) -> None:
    """Publish a re-plan event (QoS 1, not retained); a broker outage only loses the event."""
    payload = json.dumps(ev.to_json(), separators=(",", ":"))
    try:
        control.client.publish(replans_topic(control, ev.deployment), payload, qos=1)
    except (OSError, ValueError) as exc:
        log.warning("could not publish the re-plan event: %s", exc)
