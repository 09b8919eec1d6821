"""`throughput` against every baseline and `auto` against every strategy, shared hosts included.

The judge is the simulator: a plan's period is 1 / its `throughput_bound_fps` (the busiest
resource's seconds per frame, a shared host's being its work over its cores), which is
what `throughput` minimises exactly over layer-range chains; `auto` is judged by the
stream figure it compares (`tiles.figure`). DADS plans that put several op ranges on one
device lie outside the chain space and are left out of the first comparison only.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import TilefleetError
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.planning.constraints import Constraints
from planner.planning.profile import Device, Link, Profile
from planner.planning.strategies import NAMES, STRATEGIES, auto
from planner.planning.strategies.tiles import figure

from .planning_helpers import random_profile, with_overheads

CHAIN_BASELINES = ("even", "memory", "neurosurgeon", "dads", "latency")
_GRAPHS: dict = {}

fleets = st.fixed_dictionaries({
    "model": st.integers(0, 30), "ops": st.integers(2, 12), "devices": st.integers(1, 4),
    "seed": st.integers(0, 10_000), "cores": st.integers(0, 3),  # 0: every device on its own
    "client_on_host": st.booleans(), "off_host": st.integers(0, 2),
    "max_nodes": st.sampled_from([None, None, 1, 2, 3]), "tight": st.booleans()})


def instance(f: dict) -> tuple[ModelGraph, Profile]:
    key = (f["model"], f["ops"])
    if key not in _GRAPHS:
        _GRAPHS[key] = ModelGraph(recipes.random_dag(*key))
    memory = (20_000, 150_000) if f["tight"] else (1 << 40, 1 << 40)
    prof = random_profile(f["seed"], f["devices"], memory=memory)
    host = "h" if f["cores"] else ""
    prof = with_overheads(
        prof,
        f["seed"],
        host,
        f["cores"],
        client_on_host=f["client_on_host"] and bool(host),
        off_host=min(f["off_host"], f["devices"] - 1),
    )
    return _GRAPHS[key], prof


def period(plan) -> float:
    return 1.0 / plan.predicted["throughput_bound_fps"]


def one_range_per_device(plan) -> bool:
    return len({s.device for s in plan.stages}) == len(plan.stages)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets)
def test_throughput_is_never_beaten_by_a_baseline(f):
    graph, prof = instance(f)
    c = Constraints(objective="throughput", max_nodes=f["max_nodes"])
    others = {}
    for name in CHAIN_BASELINES:
        try:
            others[name] = STRATEGIES[name](graph, prof, c)
        except TilefleetError:
            continue
    try:
        best = STRATEGIES["throughput"](graph, prof, c)
    except TilefleetError:  # no chain fits: no chain baseline found one either
        assert not [n for n, p in others.items() if one_range_per_device(p)]
        return
    assert best.notes["optimal"] or len({d.host for d in prof.devices.values()} - {""}) > 1
    for name, other in others.items():
        if name == "dads" and not one_range_per_device(other):
            continue
        assert period(best) <= period(other) * (1 + 1e-9), (name, period(best), period(other))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets, st.sampled_from(["latency", "throughput"]))
def test_auto_is_never_beaten_by_any_strategy_on_shared_hosts(f, objective):
    graph, prof = instance(f)
    c = Constraints(objective=objective, max_nodes=f["max_nodes"])
    try:
        best = STRATEGIES["auto"](graph, prof, c)
    except TilefleetError:
        best = None
    for name in NAMES[1:]:
        try:
            other = STRATEGIES[name](graph, prof, c)
        except TilefleetError:
            continue
        assert best is not None, name
        assert figure(best) <= figure(other) + 1e-12 * abs(figure(other)), (
            name,
            figure(best),
            figure(other),
        )


def test_three_local_agents_on_two_cores_throughput_beats_even():
    # The reported case: a MobileNetV2 on three agents and the client sharing a 2-core host
    # (throughput's plan was 241 fps against even's 268 in the simulator's stream figure).
    graph = ModelGraph(recipes.mobilenet_v2_like(96, width=1.0, num_classes=100))
    devs = {f"n{i}": Device(f"n{i}", speed=4e9, stage_overhead_s=4e-4, host="h", host_cores=2)
            for i in range(3)}
    devs["client"] = Device("client", compute=False, stage_overhead_s=3e-4, host="h", host_cores=2)
    prof = Profile(devs, {}, Link(5e8, 2e-4), "client", "client")
    c = Constraints(objective="throughput")
    plans = {n: STRATEGIES[n](graph, prof, c) for n in ("throughput", "even", "memory", "auto")}
    fps = {n: p.predicted["throughput_fps"] for n, p in plans.items()}
    assert plans["throughput"].notes["optimal"]
    for name in ("even", "memory"):
        assert period(plans["throughput"]) <= period(plans[name])
        assert fps["throughput"] >= fps[name], fps
    assert fps["auto"] >= max(fps.values())


def test_the_registry_names_every_strategy_once_and_auto_compares_all_others():
    assert NAMES == (
        "auto",
        "latency",
        "throughput",
        "tiles",
        "hybrid",
        "neurosurgeon",
        "dads",
        "ftp",
        "even",
        "memory",
    )
    assert sorted(m.NAME for m in auto.CANDIDATES) == sorted(set(NAMES) - {"auto"})
