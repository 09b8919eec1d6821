"""The deployment client's PUSH sockets against real agent processes.

Two agents each run a forward stage that echoes its input to the client. The client
follows an entry that moves from node A (epoch 0) to node B (epoch 1): A's socket is
closed once no route uses it. Then B is SIGKILLed: the caller's own send waits at most
the send time-out (back-pressure); the retries from the client's result thread never
wait, so the request stays pending within its time budget and, once the entry moves
back to A (epoch 2, as a re-plan would), completes within milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from node.wire import messages as m
from node.wire.frames import CLIENT
from planner.fleet.dataclient import DataClient, Entry
from planner.fleet.requests import Tracker
from tests.e2e import _fleet

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not _fleet.HAVE_MOSQUITTO, reason="mosquitto not installed")]

SHAPE = (1, 8, 8, 4)
SEND_TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def env() -> Iterator[_fleet.Env]:
    yield from _fleet.start("mosquitto", nodes=2)


def _echo(env: _fleet.Env, node: str, epoch: int) -> tuple[m.Route, ...]:
    """Deploy a forward stage on `node` for `epoch`; the entry routes to it."""
    spec = m.StageSpec("echo", None, (m.InputSpec("x", "float32", SHAPE),), (m.Route("x", CLIENT),))
    env.fleet.control.command(node, m.Deploy, 30, deployment="sockets", epoch=epoch, stages=(spec,))
    endpoint = next(n.data_endpoint for n in env.fleet.nodes() if n.name == node)
    return (m.Route("x", endpoint, "echo"),)


def test_sockets_follow_the_routes_and_a_dead_node_never_stalls_the_result_thread(env):
    a, b = env.names
    entry = {"now": Entry("sockets", 0, _echo(env, a, 0))}
    tracker = Tracker(timeout_s=5.0, retries=2)
    for epoch in (0, 1, 2):
        tracker.set_results(epoch, {"x": {"dtype": "float32", "shape": list(SHAPE)}})
    client = DataClient(lambda: entry["now"], "127.0.0.1", tracker, send_timeout_ms=SEND_TIMEOUT_MS)
    x = {"x": np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)}
    try:
        np.testing.assert_array_equal(client.submit(x).result(10)["x"], x["x"])
        a_ep = entry["now"].routes[0].to
        assert client.endpoints == [a_ep]

        entry["now"] = Entry("sockets", 1, _echo(env, b, 1))
        np.testing.assert_array_equal(client.submit(x).result(10)["x"], x["x"])
        b_ep = entry["now"].routes[0].to
        assert client.endpoints == [b_ep], "the socket to the node no route uses was kept"

        env.local.kill(b)
        time.sleep(0.3)  # the client's connection to B notices the reset
        t = time.monotonic()
        fut = client.submit(x)  # the caller waits for the dead node up to the send time-out
        assert time.monotonic() - t < SEND_TIMEOUT_MS / 1000 + 1.0
        time.sleep(0.5)  # retries from the result thread find no connected peer for B
        assert not fut.done(), "a request failed while its time budget lasted"
        assert client.stats()["errors"].get("unsent", 0) >= 3

        # the deployment moves back to A: the next retry goes there at once; a result
        # thread blocked in a send to B would hold it for the send time-out
        entry["now"] = Entry("sockets", 2, _echo(env, a, 2))
        t = time.monotonic()
        np.testing.assert_array_equal(fut.result(10)["x"], x["x"])
        assert time.monotonic() - t < 0.5
        assert client.endpoints == [a_ep]
        np.testing.assert_array_equal(client.submit(x).result(10)["x"], x["x"])
        assert client.stats()["pending"] == 0 and client.stats()["failed"] == 0
    finally:
        client.close()
