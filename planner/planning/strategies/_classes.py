"""Interchangeable devices: classes of devices with identical costs, memory, pins and links.

Pipelines over many boards of the same type are only tractable because swapping two
identical boards changes nothing; the throughput DP counts devices per class instead of
tracking which ones are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.profile import Link


@dataclass(frozen=True)
class Classes:
    """Device classes: members, a representative, per-class allowed ops and pin spans."""

    members: tuple[tuple[str, ...], ...]
    links: tuple[tuple[Link | None, ...], ...]  # links[i][j]: member of i -> another member of j
    allowed: np.ndarray  # (n, classes)
    pin_span: tuple[tuple[int, int] | None, ...]  # pinned class: its range must cover [start, end)
    uniform: bool  # one link value between any two different candidate devices

    @property
    def reps(self) -> list[str]:
        return [m[0] for m in self.members]

    @property
    def counts(self) -> list[int]:
        return [len(m) for m in self.members]

    def send_times(self, i: int, j: int, cut_bytes: np.ndarray) -> np.ndarray:
        """Seconds to send each cut's bytes from a member of class i to another of class j."""
        ln = self.links[i][j]
        if ln is None:
            return np.full(len(cut_bytes), np.inf)
        return np.where(cut_bytes > 0, ln.latency + cut_bytes / ln.bandwidth, 0.0)


def device_classes(
    cm: CostModel, names: list[str], ok: np.ndarray, constraints: Constraints
) -> Classes:
    """Group candidates by (op times, memory, overheads, host, pin, source/sink links), then keep a
    grouping only if links between classes are constant; otherwise one class per device."""
    p = cm.profile
    pins = {q.node for q in constraints.pins}

    def local(d: str):
        dev = p.devices[d]
        pin = d if d in pins else None
        return (
            cm.times[d].tobytes(),
            dev.memory_bytes,
            dev.overhead_bytes,
            dev.stage_overhead_s,
            dev.piece_overhead_s,
            dev.copy_s_per_byte,
            dev.host,
            pin,
            d == p.source,
            d == p.sink,
            p.link(p.source, d),
            p.link(d, p.sink),
            ok[:, names.index(d)].tobytes(),
        )

    groups: dict = {}
    for d in names:
        groups.setdefault(local(d), []).append(d)
    members = list(groups.values())
    if not _constant_links(p, members):
        members = [[d] for d in names]
    k = len(members)
    links = tuple(
        tuple(_link_between(p, members[i], members[j]) for j in range(k)) for i in range(k)
    )
    allowed = np.stack([ok[:, names.index(m[0])] for m in members], axis=1)
    spans = []
    for m in members:
        mine = [q for q in constraints.pins if q.node == m[0]]
        spans.append((min(q.start for q in mine), max(q.end for q in mine)) if mine else None)
    distinct = {p.link(a, b) for a in names for b in names if a != b}
    return Classes(
        tuple(tuple(m) for m in members), links, allowed, tuple(spans), len(distinct) <= 1
    )


def _link_between(p, a_members: list[str], b_members: list[str]) -> Link | None:
    for a in a_members:
        for b in b_members:
            if a != b:
                return p.link(a, b)
    return None


def _constant_links(p, members: list[list[str]]) -> bool:
    for ma in members:
        for mb in members:
            seen = {p.link(a, b) for a in ma for b in mb if a != b}
            if len(seen) > 1:
                return False
    return True
