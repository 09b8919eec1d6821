"""Client request book-keeping: stitching, duplicates, retries, time-outs, error messages."""

from __future__ import annotations

import numpy as np
import pytest

from node.wire.frames import Header, TensorMeta
from planner.fleet.requests import RequestError, Tracker

OUT = {"y": {"shape": [1, 4, 4, 2], "dtype": "float32", "pieces": 1}}


def _result(rid, arr, epoch=1, region=None, full=(1, 4, 4, 2), t0=1.0):
    meta = TensorMeta("y", "float32", tuple(arr.shape), full, region)
    return Header("result", "d", epoch, rid, "client", tensors=(meta,), src="n1/s2", t0=t0), [arr]


def _error(rid, code, t0=1.0, src="n2/s1"):
    return Header("error", "d", 1, rid, "client", src=src, t0=t0,
                  error={"code": code, "message": "boom"})


def _tracker(**kw) -> Tracker:
    t = Tracker(**kw)
    t.set_results(1, OUT)
    return t


def test_first_result_wins_and_duplicates_are_dropped():
    t = _tracker()
    req = t.add("r1", {})
    t.sent(req, 1.0)
    y = np.arange(32, dtype=np.float32).reshape(1, 4, 4, 2)
    assert t.result(*_result("r1", y)) is req
    assert np.array_equal(req.future.result()["y"], y)
    assert t.result(*_result("r1", y)) is None
    assert t.stats.delivered == 1 and t.stats.duplicates == 1 and not t.pending


def test_pieces_are_stitched_per_epoch():
    t = _tracker()
    t.set_results(2, {"y": {**OUT["y"], "pieces": 2}})
    req = t.add("r1", {})
    t.sent(req, 1.0)
    y = np.arange(32, dtype=np.float32).reshape(1, 4, 4, 2)
    assert t.result(*_result("r1", y[:, :2].copy(), epoch=2, region=(0, 2, 0, 4))) is None
    assert t.result(*_result("r1", y[:, 2:].copy(), epoch=2, region=(2, 4, 0, 4))) is req
    assert np.array_equal(req.future.result()["y"], y)


def test_transient_error_retries_with_the_same_id_then_succeeds():
    t = _tracker(retries=2)
    req = t.add("r1", {})
    t.sent(req, 1.0, now=0.0)
    assert t.error(_error("r1", "busy"), now=0.0) is None
    assert t.due(now=0.01) == []  # backoff
    assert t.due(now=1.0) == [req]
    t.sent(req, 2.0, now=1.0)
    assert t.error(_error("r1", "evicted", t0=1.0), now=1.0) is None  # older attempt: ignored
    assert req.retry_at is None and req.attempts == 2
    y = np.zeros((1, 4, 4, 2), np.float32)
    assert t.result(*_result("r1", y, t0=1.0)) is req  # a result of any attempt is fine
    assert t.stats.retries == 1


def test_fatal_error_names_stage_and_node():
    t = _tracker()
    req = t.add("r1", {})
    t.sent(req, 1.0)
    t.error(_error("r1", "wrong_tensor", src="pi4-a/s1t3"))
    with pytest.raises(RequestError, match="stage s1t3 on node pi4-a: wrong_tensor: boom"):
        req.future.result()


def test_time_outs_retry_then_fail_with_the_last_error():
    t = _tracker(timeout_s=1.0, retries=1)
    req = t.add("r1", {})
    t.sent(req, 1.0, now=0.0)
    assert t.due(now=0.5) == []
    assert t.due(now=1.1) == [req]
    t.sent(req, 2.0, now=1.1)
    assert t.due(now=2.2) == []  # out of attempts: failed, not re-sent
    with pytest.raises(RequestError, match="no result after 2 attempt"):
        req.future.result()
    assert t.stats.failed == 1


def test_every_request_ends_with_a_result_or_an_error_on_close():
    t = _tracker()
    reqs = [t.add(f"r{i}", {}) for i in range(3)]
    t.fail_all("closed")
    assert all(isinstance(r.future.exception(), RequestError) for r in reqs)


def test_an_attempt_that_could_not_leave_waits_within_the_budget_then_fails():
    t = _tracker(timeout_s=1.0, retries=1)  # budget: 2 attempts x 1 s from the first try
    req = t.add("r1", {}, now=0.0)
    t.sent(req, 1.0, now=0.0)
    assert t.unsent(req, "node gone", now=0.1) is None
    assert req.attempts == 0 and t.stats.sent == 0 and req.retry_at == pytest.approx(0.15)
    assert t.due(now=0.12) == [] and t.due(now=0.16) == [req]
    for now in (0.2, 1.0, 1.9):  # retried as often as it takes, never counted as attempts
        t.sent(req, 2.0, now=now)
        assert t.unsent(req, "node gone", now=now) is None and req.attempts == 0
    t.sent(req, 3.0, now=2.0)
    assert t.unsent(req, "node gone", now=2.0) is req
    with pytest.raises(
        RequestError, match="send_timeout.*could not be sent within 2.0 s: node gone"
    ):
        req.future.result(0)
    assert t.stats.failed == 1 and not t.pending and t.stats.errors["unsent"] == 5


def test_a_moot_unsent_attempt_neither_goes_negative_nor_hangs_the_request():
    # the caller's send waits on a dead node; the epoch switch re-sends the request (its
    # attempt given back, a retry scheduled), the result thread's retry cannot take the
    # sockets at once, then the caller's send gives up: one attempt is taken back once
    t = Tracker(timeout_s=1.0, retries=2)
    req = t.add("r", {}, now=0.0)
    t.sent(req, 100.0, now=0.0)  # the caller's attempt
    req.retry_at, req.attempts = 0.1, req.attempts - 1  # resend_in_flight
    assert t.due(now=0.1) == [req]
    t.sent(req, 101.0, now=0.1)  # the result thread's retry ...
    assert t.unsent(req, "sockets busy", now=0.11, t0=101.0) is None  # ... could not leave
    assert req.attempts == 0 and req.retry_at is not None
    assert t.unsent(req, "superseded", now=0.12, t0=100.0) is None  # the caller's: moot
    assert req.attempts == 0
    assert t.due(now=0.2) == [req]
    t.sent(req, 102.0, now=0.2)  # goes out; no reply ever comes
    assert req.attempts == 1
    due = t.due(now=1.3)  # it times out and is retried, then fails: never hangs
    assert due == [req]
    t.sent(req, 103.0, now=1.3)
    t.sent(req, 104.0, now=2.4)
    t.due(now=3.5)
    assert req.future.done() and "r" not in t.pending


def test_unknown_epoch_is_retried_without_using_an_attempt_within_the_budget():
    # a node that dropped the old epoch before the switch (short of memory): the request
    # is tried again until the new record arrives, not failed after its retries
    t = _tracker(timeout_s=1.0, retries=1)
    req = t.add("r1", {}, now=0.0)
    for k in range(10):
        t.sent(req, float(k), now=k * 0.1)
        assert t.error(_error("r1", "unknown_epoch", t0=float(k)), now=k * 0.1) is None
        assert req.attempts == 0 and t.due(now=k * 0.1 + 0.06) == [req]
    t.sent(req, 99.0, now=2.5)
    assert t.error(_error("r1", "unknown_epoch", t0=99.0), now=2.5) is None  # budget: 2 s
    assert req.attempts == 1 and not req.future.done()  # now an ordinary transient error
