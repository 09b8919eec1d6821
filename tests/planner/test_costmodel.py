"""Cost model building blocks: cut bytes, ranges, transfers, memory."""

from __future__ import annotations

import numpy as np
import pytest

from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.planning.costmodel import CostModel
from planner.planning.profile import Device, Link, Profile


def model(seed=2, n=8):
    return ModelGraph(recipes.random_dag(seed, n))


def prof(memory=10**9):
    devs = {"a": Device("a", speed=1e8, memory_bytes=memory, overhead_bytes=100),
            "b": Device("b", speed=4e8, memory_bytes=memory)}
    return Profile(devs, {("a", "b"): Link(1e6, 0.002)}, Link(1e7, 0.001), "a", "b")


def test_cut_bytes_count_every_live_tensor_but_finished_outputs():
    for seed in range(6):
        g = model(seed)
        cm = CostModel(g, prof())
        for c in range(len(g.ops) + 1):
            live = g.live_at(c)
            dead_outputs = [
                t for t in live if t in g.outputs and all(k < c for k in g.consumers.get(t, []))
            ]
            assert cm.cut_bytes[c] == sum(g.tensors[t].nbytes for t in live) - sum(
                g.tensors[t].nbytes for t in dead_outputs
            )
        assert cm.cut_bytes[0] == sum(g.tensors[t].nbytes for t in g.inputs)
        assert cm.out_bytes(0, len(g.ops)) == sum(g.tensors[t].nbytes for t in g.outputs)


def test_ranges_and_transfers():
    g = model()
    cm = CostModel(g, prof())
    assert cm.range_seconds("a", 2, 5) == pytest.approx(sum(cm.times["a"][2:5]))
    assert cm.range_seconds("a", 3, 3) == 0
    assert cm.transfer("a", "a", 10**6) == 0
    assert cm.transfer("b", "a", 10**6) == pytest.approx(1.002)
    assert cm.transfer("a", "b", 0) == 0


def test_memory_is_weights_plus_peak_activations_plus_overhead():
    g = model()
    cm = CostModel(g, prof())
    for a in range(len(g.ops)):
        for b in range(a + 1, len(g.ops) + 1):
            w = sum(op.weight_bytes for op in g.ops[a:b])
            peak = max(cm.working_set[a:b])
            assert cm.memory("a", a, b) == int(w + peak) + 100
    ws = cm.working_set
    assert all(ws[i] >= sum(g.tensors[t].nbytes for t in g.live_at(i)) for i in range(len(g.ops)))


def test_memory_reach_matches_fits():
    g = model(5, 10)
    for budget in (2_000, 20_000, 60_000, 10**9):
        cm = CostModel(g, prof(budget))
        reach = cm.memory_reach("a")
        for a in range(len(g.ops)):
            fit = [b for b in range(a + 1, len(g.ops) + 1) if cm.fits("a", a, b)]
            assert reach[a] == (max(fit) if fit else a)
            assert fit == list(range(a + 1, reach[a] + 1))
    assert isinstance(reach, np.ndarray)
