"""Deploy layer-range chains and tile stages on real agents; results equal a local run."""

from __future__ import annotations

import time

import numpy as np
import pytest

from node.wire import messages as m
from planner.errors import FleetError, TilefleetError
from planner.fleet.reference import LocalModel, mismatches, random_inputs
from planner.planning.plan import Stage, chain, tile_stage
from tests.e2e import _fleet

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not _fleet.HAVE_MOSQUITTO, reason="mosquitto not installed")]


@pytest.fixture(scope="module")
def env():
    yield from _fleet.start("mosquitto")


def _check(env, name, dtype, stages):
    g = _fleet.graph(dtype)
    dep = env.fleet.deploy(g, name=name, stages=stages, ready_timeout_s=30)
    local = LocalModel(_fleet.model(dtype))
    xs = [random_inputs(dep.record.model["inputs"], seed) for seed in range(12)]
    want = [local.run(x) for x in xs]
    assert not mismatches(dep.infer(xs[0], timeout=30), want[0])
    got = list(dep.infer_many(xs, window=4))  # pipelined; must come back in input order
    assert [mismatches(g_, w) for g_, w in zip(got, want, strict=True)] == [[]] * len(xs)
    assert dep.stats()["failed"] == 0 and dep.stats()["duplicates"] == 0
    return dep


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_three_stage_chain_is_bit_identical(env, dtype):
    n = len(_fleet.graph(dtype).ops)
    dep = _check(env, f"chain-{dtype}", dtype, chain(n, [20, 45], env.names))
    assert [s.node for s in dep.record.stages.values()] == env.names
    dep.undeploy()
    assert env.fleet.control.record(f"chain-{dtype}") is None
    for node in env.names:  # every node freed the stages
        st = env.fleet.control.command(node, m.StatusQuery, 10)
        assert f"chain-{dtype}" not in st.deployments


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_tile_stage_then_chain_is_bit_identical(env, dtype):
    n = len(_fleet.graph(dtype).ops)
    a, b, c = env.names
    stages = (tile_stage(_fleet.graph(dtype), 0, (0, 11), 2, 2, (a, b, c, a)),
              Stage(1, (11, 40), b), Stage(2, (40, n), c))
    dep = _check(env, f"tiles-{dtype}", dtype, stages)
    assert sum(1 for s in dep.record.stages.values() if s.tile) == 4
    dep.undeploy()


def test_redeploy_moves_to_the_next_epoch_and_old_handles_follow(env):
    g = _fleet.graph()
    n = len(g.ops)
    first = env.fleet.deploy(g, name="epochs", stages=chain(n, [30], env.names[:2]))
    other = env.fleet.deployment("epochs")  # a second client attached by name
    x = random_inputs(first.record.model["inputs"], 3)
    want = LocalModel(_fleet.model()).run(x)
    e1 = first.epoch
    second = env.fleet.deploy(g, name="epochs", stages=chain(n, [10], env.names[1:]))
    assert second.epoch == e1 + 1
    deadline = time.monotonic() + 5
    while other.epoch != second.epoch and time.monotonic() < deadline:
        time.sleep(0.02)
    assert other.epoch == first.epoch == second.epoch  # handles follow the retained record
    assert not mismatches(other.infer(x, timeout=30), want)
    second.undeploy()
    with pytest.raises(FleetError, match="unknown deployment"):
        env.fleet.deployment("epochs")


def test_switch_moving_one_stage_ships_one_part_and_reuses_the_other_stages(env):
    g = _fleet.graph()
    n, (a, b, c) = len(g.ops), env.names
    cuts = [25, 50]  # parts no other test of this module ships
    dep = env.fleet.deploy(g, name="move", stages=chain(n, cuts, [a, b, c]))
    local = LocalModel(_fleet.model())
    xs = [random_inputs(dep.record.model["inputs"], seed) for seed in range(24)]
    want = [local.run(x) for x in xs]
    mem = {node: env.fleet.control.command(node, m.StatusQuery, 10).memory.in_use_bytes
           for node in (a, b, c)}
    futures = [dep.submit(x) for x in xs[:12]]  # in flight while the epoch switches
    moved = env.fleet.deploy(g, name="move", stages=chain(n, cuts, [a, a, c]))
    futures += [dep.submit(x) for x in xs[12:]]
    switch = moved.record.extra["switch"]
    s1 = moved.record.stages["s1"].part
    assert switch["loaded"] == 1 and switch["reused"] == 2  # only s1, now on a, loads
    assert switch["bytes_shipped"] == _part_bytes(g, cuts[0], cuts[1], s1)  # to a, once
    got = [f.result(timeout=60) for f in futures]
    assert [mismatches(g_, w) for g_, w in zip(got, want, strict=True)] == [[]] * len(xs)
    assert dep.stats()["failed"] == 0 and dep.stats()["delivered"] == len(xs)
    status = {node: env.fleet.control.command(node, m.StatusQuery, 10) for node in (a, b, c)}
    assert "move" not in status[b].deployments  # b left the deployment and freed it
    assert status[c].memory.in_use_bytes == mem[c]  # c kept its one interpreter
    assert status[a].memory.in_use_bytes > mem[a]  # a holds s0 and s1 now
    again = env.fleet.deploy(g, name="move", stages=chain(n, cuts, [a, b, c]))
    assert again.record.extra["switch"]["bytes_shipped"] == 0  # b still stores s1's part
    assert not mismatches(again.infer(xs[0], timeout=30), want[0])
    again.undeploy()


def _part_bytes(g, start: int, end: int, sha: str) -> int:
    from planner.fleet.wiring import cut_cached

    part = cut_cached(g, start, end)
    assert part.sha256 == sha
    return len(part.data)


def test_wrong_inputs_and_unknown_nodes_are_refused(env):
    g = _fleet.graph()
    with pytest.raises(TilefleetError, match="unknown node 'nope'"):
        env.fleet.deploy(g, name="bad", stages=chain(len(g.ops), [5], ["nope", env.names[0]]))
    dep = env.fleet.deploy(g, name="shape", stages=chain(len(g.ops), [], env.names[:1]))
    with pytest.raises(FleetError, match=r"expected float32\[1, 64, 64, 3\]"):
        dep.infer(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(FleetError, match="expected float32"):
        dep.infer(np.zeros((1, 64, 64, 3), np.int8))
    dep.undeploy()
