"""Strategy auto: never worse than any strategy (baselines included) on the same profile."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import TilefleetError
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.planning.constraints import Constraints
from planner.planning.profile import Device, Link, Profile
from planner.planning.strategies import NAMES, STRATEGIES
from planner.planning.strategies.tiles import figure

BASELINES = tuple(n for n in NAMES if n != "auto")  # every other registered strategy
MODELS = {
    "stack": lambda: recipes.conv_stack(32, 8),
    "mobilenet": lambda: recipes.mobilenet_v2_like(64, width=0.35, num_classes=10),
    "dag": lambda: recipes.random_dag(5, 12, input_size=16),
}


@pytest.fixture(scope="module")
def graphs() -> dict[str, ModelGraph]:
    return {k: ModelGraph(f()) for k, f in MODELS.items()}


@st.composite
def profiles(draw) -> Profile:
    """2-5 devices over three tiers, speeds over two decades, random links and memory."""
    n = draw(st.integers(2, 5))
    tiers = ("device", "edge", "cloud")
    devs = {}
    for i in range(n):
        name = f"d{i}"
        devs[name] = Device(name, tier=tiers[0] if i == 0 else draw(st.sampled_from(tiers[1:])),
                            speed=draw(st.floats(1e8, 2e10)),
                            memory_bytes=draw(st.sampled_from([8 << 20, 64 << 20, 1 << 30])))
    links = {}
    for a in devs:
        for b in devs:
            if a < b and draw(st.booleans()):
                links[(a, b)] = Link(draw(st.floats(1e5, 1e9)), draw(st.floats(0, 0.01)))
    return Profile(devs, links, Link(draw(st.floats(1e5, 1e9)), draw(st.floats(0, 0.01))),
                   source="d0", sink=draw(st.sampled_from(list(devs))))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(profile=profiles(), model=st.sampled_from(sorted(MODELS)),
       objective=st.sampled_from(["latency", "throughput"]))
def test_auto_never_worse_than_any_strategy(graphs, profile, model, objective):
    graph, c = graphs[model], Constraints(objective=objective)
    try:
        best = STRATEGIES["auto"](graph, profile, c)
    except TilefleetError:
        # auto fails only when every strategy fails.
        for name in BASELINES:
            with pytest.raises(TilefleetError):
                STRATEGIES[name](graph, profile, c)
        return
    assert best.strategy == "auto" and best.notes["chosen"] in BASELINES
    for name in BASELINES:
        try:
            other = STRATEGIES[name](graph, profile, c)
        except TilefleetError:
            assert "error" in best.notes["candidates"][name]
            continue
        assert figure(best) <= figure(other) + 1e-12, (name, figure(best), figure(other))


def test_auto_picks_tiles_where_tiling_pays(graphs):
    devs = {"cam": Device("cam", tier="device", speed=2e8)}
    devs.update({f"e{i}": Device(f"e{i}", tier="edge", speed=5e8) for i in range(4)})
    profile = Profile(devs, {}, Link(1.25e9, 1e-4), source="cam", sink="cam")
    plan = STRATEGIES["auto"](graphs["mobilenet"], profile, Constraints())
    assert plan.notes["chosen"] in ("tiles", "hybrid")
    assert plan.notes["candidates"]["latency"]["latency_s"] > plan.predicted["latency_s"]
