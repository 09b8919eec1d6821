"""Client side of an epoch switch: send the requests still in flight again, at once.

Frames in flight under the old epoch may sit on a node that died, or in a stage that
the activation of the new epoch drops; waiting for their time-out would stall the
stream for seconds. A new attempt under the new epoch is harmless: nodes re-execute
per request id, whichever result arrives first is delivered, later copies are dropped.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager

from planner.fleet.requests import Tracker

log = logging.getLogger(__name__)


def resend_in_flight(tracker: Tracker, lock: AbstractContextManager, now: float | None = None
                     ) -> int:
    """Schedule every sent, pending request for an immediate new attempt; returns how many."""
    now = time.monotonic() if now is None else now
    n = 0
    with lock:
        for req in tracker.pending.values():
            if req.attempts and req.retry_at is None:
                req.retry_at = now
                req.attempts -= 1  # a re-plan is not the request's fault: keep its retries
                n += 1
    if n:
        log.info("epoch switch: re-sending %d request(s) in flight", n)
    return n
