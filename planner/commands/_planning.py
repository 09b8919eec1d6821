"""Loading helpers shared by plan, simulate and explain: plan + model + profile, one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

from planner.errors import PlanError
from planner.model.graph import ModelGraph
from planner.planning.costmodel import CostModel
from planner.planning.plan import Plan, check_plan, load_plan
from planner.planning.profile import load_profile


def _resolve(name: str, base: Path) -> Path:
    """A path recorded in a plan: as written, else relative to the plan's directory."""
    p = Path(name)
    return p if p.exists() or p.is_absolute() else base / p


def plan_model(plan: Plan, plan_path: str, model: str | None = None) -> Path:
    """The model file of a plan: `model` if given, else the path the plan names."""
    return Path(model) if model else _resolve(plan.model_file, Path(plan_path).parent)


def load_context(plan_path: str, model: str | None, profile: str | None, need: bool = True):
    """(plan, cost model or None): the model and profile come from options or the plan.

    The profile is `--profile FILE` if given, else the one the plan embeds, else (older
    plans) the file it names.
    """
    plan = load_plan(plan_path)
    base = Path(plan_path).parent
    model_path = plan_model(plan, plan_path, model)
    prof_path = (
        Path(profile)
        if profile
        else (_resolve(plan.profile_file, base) if plan.profile_file else None)
    )
    prof = None if profile else plan.profile
    if not need and (
        not model_path.exists() or (prof is None and (prof_path is None or not prof_path.exists()))
    ):
        return plan, None
    if prof is None and prof_path is None:
        raise PlanError(
            f"{plan_path}: the plan neither embeds nor names a profile; pass --profile FILE"
        )
    graph = ModelGraph.load(model_path)
    if prof is None:
        prof = load_profile(prof_path)
    check_plan(plan, graph, prof.devices)
    if prof.sha256() != plan.profile_sha256:
        print(
            f"tilefleet: note: {prof_path} differs from the profile the plan was made with",
            file=sys.stderr,
        )
    return plan, CostModel(graph, _with_ends(prof, plan))


def _with_ends(prof, plan: Plan):
    from dataclasses import replace

    for end in (plan.source, plan.sink):
        if end not in prof.devices:
            raise PlanError(f"plan sends frames from/to {end!r}, which the profile does not know")
    return replace(prof, source=plan.source, sink=plan.sink)
