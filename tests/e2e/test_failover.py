"""An agent SIGKILLed in the middle of a stream: every frame delivered once, bit-exact.

4 real agents on a real Mosquitto, a 500-frame stream; the watcher sees the Last Will,
re-plans without the dead node and switches the deployment to a new epoch; the client
re-sends the frames that were in flight. The re-plan time is printed (the < 5 s target
is checked by tools/bench_failover.py); the test only asserts a generous bound.
"""

from __future__ import annotations

import time

import pytest

from planner.local.drills import failover_drill
from tests.e2e import _live

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not _live.HAVE_MOSQUITTO, reason="mosquitto not installed")]



def test_kill_an_agent_mid_stream_500_frames(mosquitto):
    listener, events = _live.listen(mosquitto.port,
                               "tilefleet/default/deployments/drill-failover/replans")
    try:
        r = failover_drill(mosquitto.url, frames=500, kill_at=250)
        time.sleep(0.3)  # the event travels through the broker
    finally:
        listener.loop_stop()
        listener.disconnect()
    ev = r["replan"]
    print(f"\nfailover: killed {r['victim']} of {r['stage_nodes']} -> {r['new_nodes']}; "
          f"re-plan {ev['seconds']:.2f} s after the Last Will was seen, "
          f"{r['replan_after_kill_s']:.2f} s after the kill ({ev['mode']}); "
          f"re-sent {r['resent']}, duplicates dropped {r['duplicates']}; "
          f"{r['frames']} frames in {r['wall_s']:.1f} s")
    assert r["results"] == r["identical"] == 500 and not r["errors"]
    assert r["ids"] == r["delivered_once"] == 500  # each request id completed exactly once
    assert r["client"]["delivered"] == 500 and r["client"]["failed"] == 0
    assert r["resent"] > 0  # the frames lost with the victim went again
    assert r["victim"] not in r["new_nodes"] and not r["replan_errors"]
    assert ev["reason"] == "node_lost" and ev["epoch"] == ev["previous_epoch"] + 1
    assert r["replan_after_kill_s"] < 15  # generous: the 5 s target is benchmarked
    # No send waits out the client's 5 s send time-out on the dead node: once the new
    # epoch is live the waiting frame goes there (the stream takes ~0.3 s here). What the
    # re-plan itself took is left out: its bound is the one above.
    stall = r["wall_s"] - r["replan_after_kill_s"]
    assert stall < 4.0, f"the stream stalled: {r['wall_s']:.1f} s in all"
    assert [e["epoch"] for e in events] == [ev["epoch"]]
    assert events[0]["mode"] in ("partial", "full") and "moved" in events[0]
