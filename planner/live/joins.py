"""A node joins (or comes back): measure it and its links into the running profile.

The joiner is profiled fresh (its kind's cached op times may describe another board of
that kind, or this one under other conditions), then every link between it and the
profile's other online nodes is probed in both directions, as planner.fleet.profiling does
for a whole fleet. What comes back is the old profile plus the joiner, so the watcher
can plan with it and compare against the running plan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from node.wire import messages as m
from planner.errors import FleetError
from planner.model.graph import ModelGraph
from planner.planning.profile import Link, Profile

if TYPE_CHECKING:
    from planner.fleet.client import Fleet

log = logging.getLogger(__name__)


def with_joiners(fleet: Fleet, graph: ModelGraph, profile: Profile, joiners: Sequence[str],
                 cache_dir: str | Path | None = None, probe_bytes: int = 1_000_000
                 ) -> Profile:
    """`profile` plus the measured joiners and their links to the other online nodes."""
    from planner.fleet.profiling import profile_fleet

    measured = profile_fleet(fleet, graph, list(joiners), cache_dir=cache_dir, fresh=True)
    devices = dict(profile.devices)
    devices.update({n: measured.devices[n] for n in joiners})
    links = dict(profile.links)
    links.update({k: v for k, v in measured.links.items() if k[0] != k[1]})
    online = fleet.control.online()
    others = [n for n in profile.compute_devices() if n in online and n not in joiners]
    pair = _pair_latencies(fleet, [*joiners, *others])
    for new in joiners:
        for old in others:
            for a, b in ((new, old), (old, new)):
                ep = online.get(b, {}).get("service_endpoint")
                if not ep:
                    continue
                try:
                    r = fleet.control.command(a, m.Probe, 60, endpoint=ep, nbytes=probe_bytes,
                                              repetitions=3)
                except FleetError as exc:  # judged without this link (default link)
                    log.info("probe %s -> %s failed: %s", a, b, exc)
                    continue
                latency = pair.get((a, b), (profile.link("client", old).latency
                                            + measured.link("client", new).latency) / 2)
                links[(a, b)] = Link(max(r.bandwidth_bps / 8, 1.0), latency)
    return replace(profile, devices=devices, links=links)


def _pair_latencies(fleet: Fleet, names: Sequence[str]) -> dict[tuple[str, str], float]:
    """What a hop a -> b adds, measured through two forward stages like a fresh profile's
    links (planner.fleet.profiling.hop_latencies); {} when it cannot be measured (the caller
    then estimates from the client round trips)."""
    from planner.fleet.profiling import hop_latencies

    infos = {n.name: n for n in fleet.nodes()}
    group = [infos[n] for n in names if n in infos]
    if len(group) < 2:
        return {}
    try:
        return hop_latencies(fleet, group)[1]
    except FleetError as exc:
        log.info("hop latencies of %s not measured: %s", ", ".join(names), exc)
        return {}
