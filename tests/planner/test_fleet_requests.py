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
    assert t.error(_error("r1", "unknown_epoch"), now=0.0) is None
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
    with pytest.raises(RequestError, match="send_timeout.*could not be sent within 2.0 s: node gone"):
        req.future.result(0)
    assert t.stats.failed == 1 and not t.pending and t.stats.errors["unsent"] == 5
