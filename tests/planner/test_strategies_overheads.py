"""The DP strategies with stage overheads and shared hosts.

Checked against exhaustive search and the simulator.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import PlanError
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.planbuild import make_plan, ranges_to_stages
from planner.planning.profile import Link
from planner.planning.strategies import latency, throughput
from planner.planning.strategies._classes import device_classes
from planner.planning.strategies._common import allowed
from planner.planning.strategies.latency import chain_latency
from planner.planning.strategies.throughput import chain_period

from .planning_helpers import best_latency, best_period, random_profile, with_overheads

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_GRAPHS: dict = {}


def graph(seed: int, n_ops: int) -> ModelGraph:
    if (seed, n_ops) not in _GRAPHS:
        _GRAPHS[(seed, n_ops)] = ModelGraph(recipes.random_dag(seed, n_ops))
    return _GRAPHS[(seed, n_ops)]


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


instances = st.tuples(
    st.integers(0, 30), st.integers(2, 10), st.integers(1, 4), st.integers(0, 10_000)
)


@SETTINGS
@given(instances)
def test_latency_and_throughput_stay_exact_with_stage_overheads(inst):
    mseed, n_ops, nd, pseed = inst
    cm = CostModel(graph(mseed, n_ops), with_overheads(random_profile(pseed, nd), pseed))
    names = [f"d{i}" for i in range(nd)]
    val, cuts, devs, _, optimal = latency.solve(cm, names, Constraints())
    assert (
        optimal
        and _close(val, best_latency(cm, names))
        and _close(chain_latency(cm, cuts, devs), val)
    )
    per, cuts, devs, optimal, _ = throughput.solve(cm, names, Constraints())
    assert (
        optimal
        and _close(per, best_period(cm, names))
        and _close(chain_period(cm, cuts, devs), per)
    )
    plan = make_plan(cm, ranges_to_stages(cuts, devs), "t", Constraints())
    assert _close(plan.predicted["throughput_bound_fps"], 1 / per)
    lat_plan = make_plan(
        cm, ranges_to_stages(*latency.solve(cm, names, Constraints())[1:3]), "t", Constraints()
    )
    assert _close(lat_plan.predicted["latency_s"], val)


@SETTINGS
@given(instances, st.integers(1, 3))
def test_throughput_is_exact_for_alike_devices_on_one_host_with_free_transfers(inst, cores):
    mseed, n_ops, nd, pseed = inst
    prof = replace(random_profile(pseed, nd), links={}, default_link=Link(1e18, 0.0))
    cm = CostModel(graph(mseed, n_ops), with_overheads(prof, pseed, "h", cores, twins=True))
    names = [f"d{i}" for i in range(nd)]
    per, cuts, devs, _, _ = throughput.solve(cm, names, Constraints())
    assert _close(per, best_period(cm, names))
    assert _close(chain_period(cm, cuts, devs), per)


@SETTINGS
@given(instances, st.integers(1, 3))
def test_shared_host_plan_is_exact_and_never_worse_than_ignoring_the_host(inst, cores):
    mseed, n_ops, nd, pseed = inst
    cm = CostModel(
        graph(mseed, n_ops), with_overheads(random_profile(pseed, nd), pseed, "h", cores)
    )
    names = [f"d{i}" for i in range(nd)]
    if math.isinf(best_period(cm, names)):
        with pytest.raises(PlanError):
            throughput.solve(cm, names, Constraints())
        return
    per, cuts, devs, optimal, _ = throughput.solve(cm, names, Constraints())
    assert _close(chain_period(cm, cuts, devs), per)
    assert per >= best_period(cm, names) * (1 - 1e-9)
    cl = device_classes(cm, names, allowed(cm, names, Constraints()), Constraints())
    _, c0, d0, _, _ = throughput._solve(cm, names, cl, len(names))  # the host-blind chain
    assert per <= chain_period(cm, c0, d0) * (1 + 1e-9)
    assert optimal and _close(per, best_period(cm, names))  # one shared host: the exact search
    plan = make_plan(cm, ranges_to_stages(cuts, devs), "t", Constraints())
    assert _close(plan.predicted["throughput_bound_fps"], 1 / per)


def test_shared_host_search_too_big_falls_back_to_the_per_stage_count_heuristic(monkeypatch):
    from planner.planning.strategies import _hostpipe

    cm = CostModel(
        graph(3, 10), with_overheads(random_profile(7, 3), 7, "h", 2, client_on_host=True)
    )
    names = ["d0", "d1", "d2"]
    exact = throughput.solve(cm, names, Constraints())
    monkeypatch.setattr(_hostpipe, "WORK_LIMIT", 0)
    per, cuts, devs, optimal, method = throughput.solve(cm, names, Constraints())
    assert exact[3] and exact[4] == "dp-host-work"
    assert not optimal and method.endswith("+per-stage-count")
    assert _close(chain_period(cm, cuts, devs), per) and per >= exact[0] * (1 - 1e-9)
