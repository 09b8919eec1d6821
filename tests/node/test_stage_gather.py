"""A stage whose input comes in region pieces gathers them in the receiving thread.

A real StageWorker (worker thread, real Sender, the client's real PULL socket): pieces offered
one by one complete exactly once and the result is the stitched tensor; a request that
stays incomplete is reported `incomplete` after the gather time-out; when more requests
wait than the gather holds, the oldest is reported `evicted`; a full queue refuses a
piece before gathering it (the data plane retries it later).
"""

from __future__ import annotations

import numpy as np
import zmq

from node.dataplane import Sender
from node.metrics import Counters
from node.stage_worker import StageWorker
from node.wire import messages as M
from node.wire.frames import CLIENT, Header, meta_for

FULL = (1, 4, 4, 2)


def _stage(queue_size: int = 8, gather_timeout_s: float = 30.0) -> StageWorker:
    spec = M.StageSpec("g", None, (M.InputSpec("x", "float32", FULL, 2),), (M.Route("x", CLIENT),))

    def sender():
        s = Sender(zmq.Context.instance(), Counters())
        return s.send, s.close

    return StageWorker("n", "d", 0, spec, None, Counters(), sender, queue_size, gather_timeout_s)


def _piece(x: np.ndarray, rows: tuple[int, int], request: str, reply: str) -> tuple[Header, list]:
    part = np.ascontiguousarray(x[:, rows[0]:rows[1]])
    meta = meta_for("x", part, FULL, (rows[0], rows[1], 0, FULL[2]))
    return Header("data", "d", 0, request, "g", reply, (meta,)), [part]


def test_pieces_are_gathered_on_receipt_and_run_once(client):
    st = _stage()
    st.start()
    try:
        x = np.arange(np.prod(FULL), dtype=np.float32).reshape(FULL)
        assert st.offer(*_piece(x, (0, 2), "r", client.reply))
        assert st.gather.pending == 1 and st.queue.qsize() == 0  # the worker was not woken
        assert st.offer(*_piece(x, (2, 4), "r", client.reply))
        h, arrs = client.recv()
        assert h.kind == "result" and h.request == "r"
        np.testing.assert_array_equal(arrs[0], x)
        assert st.gather.pending == 0 and st.stats.snapshot()["frames"] == 1
    finally:
        st.stop()


def test_incomplete_and_evicted_requests_are_reported(client):
    st = _stage(gather_timeout_s=0.2)
    st.gather.max_pending = 2
    st.start()
    try:
        x = np.zeros(FULL, np.float32)
        for rid in ("a", "b", "c"):  # "a" makes room for "c"
            assert st.offer(*_piece(x, (0, 2), rid, client.reply))
        got = {}
        for _ in range(3):  # "a" evicted at once; "b" and "c" expire on the worker's idle tick
            h, _ = client.recv(timeout=5)
            got[h.request] = h.error["code"]
        assert got == {"a": "evicted", "b": "incomplete", "c": "incomplete"}
        assert st.stats.snapshot()["errors"] == 3
    finally:
        st.stop()


def test_a_full_queue_refuses_a_piece_before_gathering_it(client):
    st = _stage(queue_size=1)  # not started: nothing drains the queue
    x = np.zeros(FULL, np.float32)
    assert st.offer(*_piece(x, (0, 2), "r", client.reply))
    assert st.offer(*_piece(x, (2, 4), "r", client.reply))  # complete: queued for the worker
    assert not st.offer(*_piece(x, (0, 2), "s", client.reply))
    assert st.gather.pending == 0  # "s" was refused, not half-gathered
