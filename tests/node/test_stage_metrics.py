"""Per-stage metrics: the cumulative run time lets a reader take interval means."""

from __future__ import annotations

import json

from node.metrics import StageStats
from node.wire import codec
from node.wire import messages as M


def test_run_total_covers_every_frame_beyond_the_window():
    s = StageStats(window=4)
    for k in range(10):
        s.record(0.001 * (k + 1), 0.002, 10)
    snap = s.snapshot()
    assert snap["frames"] == 10 and abs(snap["run_total_s"] - 0.055) < 1e-12
    assert abs(snap["run_mean_s"] - 0.0085) < 1e-12  # the last 4 frames only


def test_interval_mean_from_two_snapshots_sees_a_slow_down_at_once():
    s = StageStats(window=256)
    for _ in range(200):
        s.record(0.001, 0.001, 1)
    a = s.snapshot()
    for _ in range(20):  # 20 slow frames: 10 % of the window
        s.record(0.004, 0.004, 1)
    b = s.snapshot()
    interval = (b["run_total_s"] - a["run_total_s"]) / (b["frames"] - a["frames"])
    assert abs(interval - 0.004) < 1e-12
    assert b["run_mean_s"] < 0.0015  # the window mean has barely moved


def test_metrics_message_carries_run_total_on_the_wire():
    s = StageStats()
    s.record(0.25, 0.5, 100)
    msg = M.Metrics("n", 1.0, 2.0, 3, {"d/0/s0": s.snapshot()}, {})
    back = M.decode(codec.encode(msg))
    assert back.stages["d/0/s0"].run_total_s == 0.25
    assert json.loads(codec.encode(msg))["stages"]["d/0/s0"]["frames"] == 1


def test_busy_total_leaves_out_queue_waits_and_idle_gaps():
    s = StageStats()
    s.record(0.001, 0.002, 0, end=10.0)  # arrived at 9.998, idle before: 2 ms busy
    s.record(0.001, 0.005, 0, end=10.003)  # waited in the queue since 9.998: 3 ms busy
    s.record(0.001, 0.001, 0, end=11.0)  # idle gap, then 1 ms from arrival
    assert abs(s.snapshot()["busy_total_s"] - 0.006) < 1e-12
    assert abs(s.snapshot()["run_total_s"] - 0.003) < 1e-12
