"""Failures reach the caller: every request ends with its result or an error naming where."""

from __future__ import annotations

import pytest

from node.wire import messages as m
from planner.fleet import RequestError
from planner.fleet.reference import LocalModel, mismatches, random_inputs
from planner.layout import chain
from tests.e2e import _fleet

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def env():
    if not _fleet.HAVE_MOSQUITTO:
        pytest.skip("mosquitto not installed")
    yield from _fleet.start("mosquitto")


def test_stage_dropped_behind_the_clients_back_gives_errors_naming_the_node(env):
    g = _fleet.graph()
    dep = env.fleet.deploy(g, name="dropped", layout=chain(len(g.ops), [30], env.names[:2]),
                           progress=False, timeout_s=10, retries=1)
    x = random_inputs(dep.record.model["inputs"], 1)
    dep.infer(x, timeout=30)
    env.fleet.control.command(env.names[1], m.Undeploy, 10, deployment="dropped")
    results = list(dep.infer_many([x] * 5, window=5, return_errors=True))
    assert len(results) == 5 and all(isinstance(r, RequestError) for r in results)
    assert f"node {env.names[1]} (stage s1): unknown_deployment" in str(results[0])
    assert dep.stats()["retries"] >= 5  # transient codes are retried before giving up
    with pytest.raises(RequestError, match="stage s1"):
        dep.infer(x, timeout=30)
    env.fleet.undeploy("dropped")


def test_killed_agent_times_out_then_fails_and_others_keep_working(env):
    g = _fleet.graph()
    victim = env.names[2]
    dep = env.fleet.deploy(g, name="killed", layout=chain(len(g.ops), [30], env.names[1:]),
                           progress=False, timeout_s=0.5, retries=1)
    other = env.fleet.deploy(g, name="alive", layout=chain(len(g.ops), [], env.names[:1]),
                             progress=False)
    x = random_inputs(dep.record.model["inputs"], 2)
    want = LocalModel(_fleet.model()).run(x)
    assert not mismatches(dep.infer(x, timeout=30), want)
    env.local.kill(victim)
    with pytest.raises(RequestError, match="no result after 2 attempt"):
        dep.infer(x, timeout=30)
    assert not mismatches(other.infer(x, timeout=30), want)
    env.fleet.undeploy("killed")  # skips the dead node, clears the record
    assert env.fleet.control.record("killed") is None
    other.undeploy()
