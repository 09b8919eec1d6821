"""Optimality of the DP strategies against exhaustive search under the same cost model."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import PlanError
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.planning.constraints import Constraints, Pin
from planner.planning.costmodel import CostModel
from planner.planning.strategies import STRATEGIES, latency, throughput
from planner.planning.strategies.latency import chain_latency
from planner.planning.strategies.throughput import chain_period

from .planning_helpers import best_latency, best_period, random_profile

_GRAPHS: dict = {}


def graph(seed: int, n_ops: int) -> ModelGraph:
    key = (seed, n_ops)
    if key not in _GRAPHS:
        _GRAPHS[key] = ModelGraph(recipes.random_dag(seed, n_ops))
    return _GRAPHS[key]


instances = st.tuples(
    st.integers(0, 40),  # model seed
    st.integers(2, 12),  # ops
    st.integers(1, 4),  # devices
    st.integers(0, 10_000),  # profile seed
    st.sampled_from(["loose", "tight"]),
    st.sampled_from(["random", "uniform", "twins"]),  # links; twins: identical devices too
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _setup(inst):
    mseed, n_ops, nd, pseed, mem, links = inst
    g = graph(mseed, n_ops)
    prof = random_profile(
        pseed, nd, memory=(1 << 40, 1 << 40) if mem == "loose" else (20_000, 150_000)
    )
    if links != "random":
        prof = replace(prof, links={})
    if links == "twins":
        d0 = prof.devices["d0"]
        devs = {n: replace(d0, name=n) if n != "client" and int(n[1:]) % 2 == 0 else d
                for n, d in prof.devices.items()}
        prof = replace(prof, devices=devs)
    return CostModel(g, prof), [f"d{i}" for i in range(nd)]


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


@SETTINGS
@given(instances)
def test_latency_equals_exhaustive_search(inst):
    cm, names = _setup(inst)
    brute = best_latency(cm, names)
    if math.isinf(brute):
        with pytest.raises(PlanError, match="does not fit memory"):
            latency.solve(cm, names, Constraints())
        return
    val, cuts, devs, _, optimal = latency.solve(cm, names, Constraints())
    assert optimal
    assert _close(val, brute)
    assert _close(chain_latency(cm, cuts, devs), val)
    assert len(set(devs)) == len(devs)


@SETTINGS
@given(instances)
def test_throughput_equals_exhaustive_search(inst):
    cm, names = _setup(inst)
    brute = best_period(cm, names)
    if math.isinf(brute):
        with pytest.raises(PlanError, match="does not fit memory"):
            throughput.solve(cm, names, Constraints())
        return
    val, cuts, devs, optimal, _ = throughput.solve(cm, names, Constraints())
    assert optimal
    assert _close(val, brute)
    assert _close(chain_period(cm, cuts, devs), val)


@SETTINGS
@given(instances, st.integers(1, 3), st.integers(0, 3))
def test_max_nodes_and_pins_are_respected_optimally(inst, max_nodes, pin_end):
    cm, names = _setup(inst)
    pin_end = min(pin_end, cm.n)
    pins = (Pin(0, pin_end, names[-1]),) if pin_end > 0 else ()
    c = Constraints(max_nodes=max_nodes, pins=pins)

    def ok(d, a, b):
        return all(d == names[-1] for k in range(a, b) if k < pin_end)

    for solve, chain, brute_fn in ((latency.solve, chain_latency, best_latency),
                                   (throughput.solve, chain_period, best_period)):
        brute = brute_fn(cm, names, max_nodes=max_nodes, ok=ok)
        if math.isinf(brute):
            with pytest.raises(PlanError):
                solve(cm, names, c)
            continue
        out = solve(cm, names, c)
        cuts, devs = out[1], out[2]
        assert _close(out[0], brute)
        assert _close(chain(cm, cuts, devs), brute)
        assert len(devs) <= max_nodes
        assert all(ok(d, a, b) for a, b, d in zip(cuts, cuts[1:], devs, strict=False))


def test_early_exit_outputs_go_to_the_sink_and_latency_is_still_optimal():
    g = ModelGraph(recipes.early_exit_like(32, width=0.5))
    for seed in range(4):
        cm = CostModel(g, random_profile(seed, 3))
        names = ["d0", "d1", "d2"]
        val, cuts, devs, _, _ = latency.solve(cm, names, Constraints())
        assert _close(val, best_latency(cm, names))
        assert _close(chain_latency(cm, cuts, devs), val)


def test_every_registered_strategy_gives_a_complete_plan():
    g = graph(3, 10)
    prof = random_profile(7, 3)
    for name, fn in STRATEGIES.items():
        if name in ("tiles", "hybrid", "ftp", "auto"):
            continue
        plan = fn(g, prof, Constraints())
        assert plan.stages[0].ops[0] == 0 and plan.stages[-1].ops[1] == len(g.ops), name
        assert plan.predicted["latency_s"] > 0, name


def test_dads_min_cut_never_worse_than_neurosurgeon_on_a_chain_estimate():
    g = ModelGraph(recipes.conv_stack(32))
    prof = random_profile(11, 2)
    prof = replace(prof, source="d0", sink="d0")
    d = STRATEGIES["dads"](g, prof, Constraints())
    assert (
        d.notes["cut_value_s"]
        <= STRATEGIES["neurosurgeon"](g, prof, Constraints()).predicted["latency_s"] + 1e-12
    )


def test_memory_failure_names_device_and_bytes():
    g = graph(5, 8)
    prof = random_profile(1, 2, memory=(100, 200))
    for name in ("latency", "throughput", "even"):
        with pytest.raises(PlanError, match=r"does not fit memory.*'d\d'.*bytes"):
            STRATEGIES[name](g, prof, Constraints())
