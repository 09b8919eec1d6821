"""One re-plan: updated profile -> partial plan (or a full one) -> next epoch -> event.

The switch itself is `planner.fleet.deploy.deploy_plan`: the new epoch's parts are uploaded
and its stages loaded next to the old ones, the deployment record is published (clients
move new requests and their in-flight ones to the new epoch), then the new epoch is
activated, which drops the old one. Every re-plan is logged and published, not
retained, on `tilefleet/<fleet>/deployments/<name>/replans` as a `Replan` document.
Re-plans optimise the deployment's own objective (its record's; `objective_of`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from planner.errors import FleetError, PlanError, TilefleetError
from planner.fleet.control import Control
from planner.fleet.record import Record
from planner.live.drift import device_factors, link_bandwidths
from planner.live.policy import MovedStage, Trigger, adjust_profile, moved_stages
from planner.model.graph import ModelGraph
from planner.planning.constraints import Constraints
from planner.planning.profile import Profile

log = logging.getLogger(__name__)
FALLBACK_STRATEGY = "throughput"


REPLAN_VERSION = 1


@dataclass(frozen=True)
class Replan:
    """What one re-plan did (the JSON published on the replans topic, version 1)."""

    deployment: str
    epoch: int  # the new epoch
    previous_epoch: int
    reason: str
    detail: str
    mode: str  # "partial" or "full"
    strategy: str
    moved: tuple[MovedStage, ...] = ()
    seconds: float = 0.0  # trigger seen -> new epoch active
    plan_seconds: float = 0.0
    predicted: dict[str, Any] = field(default_factory=dict)  # simulate's document
    time: float = 0.0  # wall clock when it completed
    objective: str = ""  # what the new plan optimises (the deployment's objective)

    def to_json(self) -> dict[str, Any]:
        """The published JSON document."""
        return {"type": "replan", "v": REPLAN_VERSION, "deployment": self.deployment,
                "epoch": self.epoch, "previous_epoch": self.previous_epoch,
                "reason": self.reason, "detail": self.detail, "mode": self.mode,
                "strategy": self.strategy, "objective": self.objective,
                "moved": [mv.to_json() for mv in self.moved], "seconds": self.seconds,
                "plan_seconds": self.plan_seconds, "predicted": self.predicted,
                "time": self.time}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Replan:
        """Parse a published re-plan document; FleetError names what is wrong."""
        if not isinstance(d, dict) or d.get("type") != "replan":
            raise FleetError("not a re-plan document")
        if d.get("v") != REPLAN_VERSION:
            raise FleetError(f"re-plan document version {d.get('v')!r} is not {REPLAN_VERSION}")
        try:
            return cls(str(d["deployment"]), int(d["epoch"]), int(d["previous_epoch"]),
                       str(d["reason"]), str(d.get("detail", "")), str(d["mode"]),
                       str(d.get("strategy", "")),
                       tuple(MovedStage.from_json(mv) for mv in d.get("moved") or ()),
                       float(d.get("seconds", 0.0)), float(d.get("plan_seconds", 0.0)),
                       dict(d.get("predicted") or {}), float(d.get("time", 0.0)),
                       str(d.get("objective", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise FleetError(f"re-plan document of {d.get('deployment')!r}: bad or missing "
                             f"key {exc}") from None


def objective_of(record: Record, override: str | None, default: str) -> str:
    """The objective a re-plan of `record` optimises: an explicit override, else the
    deployment's own (its record's), else `default` (a hand-written deployment)."""
    return override or record.objective or default


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
    from planner.fleet.deploy import deploy_plan

    t0 = time.monotonic() if seen_at is None else seen_at
    new_profile = adjust_profile(profile, graph.sha256, trigger)
    tp = time.monotonic()
    changed = set(device_factors(trigger.drifts)) | {
        n for a, b in link_bandwidths(trigger.drifts) for n in (a, b)}
    changed |= set(trigger.joined)
    plan, mode = planned or plan_next(graph, new_profile, record.plan, strategy, constraints,
                                      partial, changed - set(trigger.lost))
    plan_s = time.monotonic() - tp
    if plan.strategy != strategy:  # the record names the strategy its re-plans use
        plan = replace(plan, strategy=strategy)
    rec = deploy_plan(control, graph, plan, record.name, timeout_s=timeout_s)
    ev = Replan(record.name, rec.epoch, record.epoch, trigger.reason, trigger.describe(), mode,
                strategy, moved_stages(record.stages, rec.stages), time.monotonic() - t0,
                plan_s, dict(plan.predicted), time.time(), plan.objective)
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
