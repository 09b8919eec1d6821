"""Live re-planning: watch status, metrics and links; re-plan on node loss, drift or a join."""

from planner.live.drift import Drift, DriftRule, History, Sample
from planner.live.policy import JOIN, Trigger, adjust_profile, decide, moved_stages
from planner.live.replanner import Replan, plan_next
from planner.live.watcher import ReplanPolicy, Watcher, enable_replanning, watch

__all__ = [
    "JOIN",
    "Drift",
    "DriftRule",
    "History",
    "Replan",
    "ReplanPolicy",
    "Sample",
    "Trigger",
    "Watcher",
    "adjust_profile",
    "enable_replanning",
    "decide",
    "moved_stages",
    "plan_next",
    "watch",
]
