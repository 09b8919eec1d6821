"""Failures reach the caller: every request ends with its result or an error naming where."""

from __future__ import annotations

import re
import signal
import time

import pytest

from node.wire import messages as m
from node.wire.results import MemoryUse
from planner.errors import FleetError
from planner.fleet import RequestError
from planner.fleet.reference import LocalModel, mismatches, random_inputs
from planner.planning.plan import chain
from tests.e2e import _fleet

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def env():
    if not _fleet.HAVE_MOSQUITTO:
        pytest.skip("mosquitto not installed")
    yield from _fleet.start("mosquitto")


def test_stage_dropped_behind_the_clients_back_gives_errors_naming_the_node(env):
    g = _fleet.graph()
    dep = env.fleet.deploy(g, name="dropped", stages=chain(len(g.ops), [30], env.names[:2]),
                           timeout_s=10, retries=1)
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
    dep = env.fleet.deploy(g, name="killed", stages=chain(len(g.ops), [30], env.names[1:]),
                           timeout_s=0.5, retries=1)
    other = env.fleet.deploy(g, name="alive", stages=chain(len(g.ops), [], env.names[:1]))
    x = random_inputs(dep.record.model["inputs"], 2)
    want = LocalModel(_fleet.model()).run(x)
    assert not mismatches(dep.infer(x, timeout=30), want)
    env.local.kill(victim)
    with pytest.raises(RequestError, match="no result after 2 attempt"):
        dep.infer(x, timeout=30)
    assert not mismatches(other.infer(x, timeout=30), want)
    doc = env.fleet.undeploy("killed")  # skips the dead node, clears the record
    assert victim in doc["offline"] + doc["unconfirmed"] and doc["nodes"] == [env.names[1]]
    assert env.fleet.control.record("killed") is None
    other.undeploy()


def _add_agent(env, name: str, *args: str) -> None:
    """Start one more real agent on the module's broker and wait until it is online."""
    env.local.spawn_agent(name, *args)
    deadline = time.monotonic() + 60
    while not env.fleet.control.online().get(name):
        assert time.monotonic() < deadline, f"agent {name} did not come online"
        time.sleep(0.05)


def test_undeploy_is_bounded_when_a_node_hangs_before_its_last_will(env):
    g = _fleet.graph()
    _add_agent(env, "frozen")
    try:
        dep = env.fleet.deploy(g, name="hung", stages=chain(len(g.ops), [30],
                                                            [env.names[0], "frozen"]))
        env.local.procs["frozen"].send_signal(signal.SIGSTOP)  # socket open: no Last Will
        t = time.monotonic()
        doc = env.fleet.undeploy("hung")
        took = time.monotonic() - t
        assert doc["unconfirmed"] == ["frozen"] and doc["nodes"] == [env.names[0]], doc
        assert not doc["errors"] and not doc["offline"] and took < 4.0, took  # vs 5 s
        assert env.fleet.control.record("hung") is None
        assert "frozen" in env.fleet.control.online()  # still: the Last Will is ~15 s away
        st = env.fleet.control.command(env.names[0], m.StatusQuery, 10)
        assert "hung" not in st.deployments
        dep.close()
    finally:
        env.local.kill("frozen")  # SIGKILL ends a stopped process too


def test_a_command_waiting_on_a_node_fails_at_its_last_will_not_at_its_time_out(env):
    from planner.fleet.control import CommandError

    _add_agent(env, "doomed")
    try:
        env.local.procs["doomed"].send_signal(signal.SIGSTOP)  # it will never reply
        fut = env.fleet.control.send("doomed", m.StatusQuery)
        time.sleep(0.3)
        assert not fut.done()
        t = time.monotonic()
        env.local.kill("doomed")  # the socket closes: the broker publishes its Last Will
        with pytest.raises(CommandError) as e:
            env.fleet.control.result("doomed", fut, "status", 60)
        took = time.monotonic() - t
        assert e.value.code == "offline" and "Last Will" in str(e.value), e.value
        assert took < 10, took  # the Last Will's delay, not the 60 s time-out
    finally:
        env.local.kill("doomed")


def test_memory_budget_refuses_loads_over_it_and_tight_switches_drop_the_old_epoch_first(
        env, tmp_path):
    board = tmp_path / "tiny.toml"
    board.write_text('[board]\nname = "tiny"\nmemory_mb = 64\n\n[agent]\n'
                     'memory_budget_mb = 1\nhost = "127.0.0.1"\nbenchmark_s = 0.0\n')
    _add_agent(env, "tiny", "--config", str(board))
    g = _fleet.graph()
    assert env.fleet.node("tiny").memory_budget_bytes == 1 << 20
    try:
        with pytest.raises(FleetError) as e:  # ~14 MB of weights after op 30
            env.fleet.deploy(g, name="budget", stages=chain(len(g.ops), [30],
                                                             [env.names[0], "tiny"]))
        msg = str(e.value)
        assert "\n" not in msg and "node 'tiny'" in msg and "memory budget 1.0 MiB" in msg
        assert re.search(r"needs \d+\.\d MiB", msg), msg
        assert env.fleet.control.record("budget") is None
        for node in (env.names[0], "tiny"):  # nothing is left loaded, nobody went down
            st = env.fleet.control.command(node, m.StatusQuery, 10)
            assert "budget" not in st.deployments
        assert env.fleet.control.command("tiny", m.StatusQuery, 10).memory == MemoryUse(
            budget_bytes=1 << 20, in_use_bytes=0)
        # a switch that changes tiny's part: the budget cannot hold both epochs there, so
        # tiny drops the old one first; requests caught in it are re-sent, none is lost
        dep = env.fleet.deploy(g, name="budget", stages=chain(len(g.ops), [10],
                                                               ["tiny", env.names[0]]))
        local = LocalModel(_fleet.model())
        xs = [random_inputs(dep.record.model["inputs"], seed) for seed in range(16)]
        futures = [dep.submit(x) for x in xs[:8]]
        moved = env.fleet.deploy(g, name="budget", stages=chain(len(g.ops), [12],
                                                                 ["tiny", env.names[0]]))
        futures += [dep.submit(x) for x in xs[8:]]
        assert moved.record.extra["switch"]["dropped_first"] == ["tiny"]
        got = [f.result(timeout=60) for f in futures]
        assert [mismatches(g_, local.run(x)) for g_, x in zip(got, xs, strict=True)] == \
            [[]] * len(xs)
        assert dep.stats()["failed"] == 0
        dep.undeploy()
    finally:
        env.local.kill("tiny")
