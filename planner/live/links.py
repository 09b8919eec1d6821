"""Link probes of a watched deployment, and the links it moved traffic off, until they recover.

A probe is a `probe` command: node a uploads `nbytes` to node b's service socket twice.
Its sample is the payload over the median message time, round trip included: finite and
monotonic in the link's speed (the agent's `bandwidth_bps` subtracts a ping and
explodes when, on a fast link, the payload takes about as long as the ping). Samples of
links between adjacent stages go to the epoch's History (drift detection); a link that
a re-plan moved traffic off stays "degraded" and keeps being probed even when no stage
pair uses it any more, so its recovery can be noticed and the profile's link restored.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from node.wire import messages as m
from planner.errors import FleetError
from planner.fleet.record import Record
from planner.live.drift import Drift, DriftRule, History
from planner.planning.profile import Link, Profile

log = logging.getLogger(__name__)
Pair = tuple[str, str]


@dataclass
class Degraded:
    """A link a re-plan slowed down in the profile: what it was before, and new probes."""

    before: Link  # the profile's link before the drift
    baseline: float  # probe bytes/s before the drift
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=16))


class LinkProber:
    """Probes links through the fleet's control client (`command`, `online`)."""

    def __init__(self, control: Any, nbytes: int) -> None:
        self.control, self.nbytes = control, nbytes
        self.degraded: dict[Pair, Degraded] = {}

    def sample(self, a: str, b: str) -> float | None:
        """Probe bytes/s a -> b now, or None when a or b is offline or the probe fails."""
        online = self.control.online()
        ep = (online.get(b) or {}).get("service_endpoint")
        if not ep or a == b or a not in online:  # an offline `a` would hold the watcher 10 s
            return None
        try:
            r = self.control.command(a, m.Probe, 10, endpoint=ep, nbytes=self.nbytes,
                                     repetitions=2)
        except FleetError as exc:
            log.info("link probe %s -> %s failed: %s", a, b, exc)
            return None
        secs = r.transfer_s
        bw = self.nbytes / secs if secs > 0 else r.bandwidth_bps / 8
        return max(bw, 1.0)

    def round(self, rec: Record, hist: History, now: float) -> None:
        """One probe of each link between adjacent stages and of each degraded link."""
        order = rec.stage_nodes()
        used = [(a, b) for a, b in zip(order, order[1:], strict=False) if a != b]
        online = self.control.online()
        for pair in [p for p in self.degraded if p[0] not in online or p[1] not in online]:
            del self.degraded[pair]  # a node that left: nothing to watch recover
        for a, b in dict.fromkeys(used + list(self.degraded)):
            bw = self.sample(a, b)
            if bw is None:
                continue
            if (a, b) in used:
                hist.add_link(a, b, bw, now)
            if (a, b) in self.degraded:
                self.degraded[(a, b)].samples.append(bw)

    def degrade(self, drifts: Iterable[Drift], profile: Profile) -> None:
        """Remember links a re-plan slowed down (their healthy state stays the first one)."""
        for d in drifts:
            if d.kind != "link" or d.measured >= d.baseline:
                continue
            a, _, b = d.key.partition("->")
            self.degraded.setdefault((a, b), Degraded(profile.link(a, b), d.baseline))

    def recovered(self, rule: DriftRule) -> dict[Pair, float]:
        """Degraded links whose last `intervals` probes are back within the band of their
        healthy baseline (not slower than baseline / (1 + threshold)), with the median."""
        out = {}
        for pair, deg in self.degraded.items():
            last = list(deg.samples)[-rule.intervals:]
            if len(last) == rule.intervals and all(rule.beyond(x / deg.baseline) >= 0
                                                   for x in last):
                out[pair] = sorted(last)[len(last) // 2]
        return out

    def restore(self, profile: Profile, pairs: Iterable[Pair]) -> Profile:
        """`profile` with these links as they were before they degraded; forgets them."""
        links = dict(profile.links)
        for pair in pairs:
            deg = self.degraded.pop(pair, None)
            if deg is not None:
                links[pair] = deg.before
        return replace(profile, links=links)
