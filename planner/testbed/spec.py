"""What a testbed holds: boards by kind and count, links (rate, delay) and the topology.

    --boards rpi3:4,rpi4:2,edge_server:1@cloud      kind:count[@tier]
    --link 20[,5]      Mbit/s [, one-way ms] of every device board's link
    --lan 100[,1]      edge boards' links (tiers topology)
    --backbone 10,20   the cloud boards' link (tiers topology)

Topologies: `star` — every board hangs off one switch (the bridge) by its own link of
`--link`; `tiers` — device boards by `--link`, edge boards by `--lan`, cloud boards by
`--backbone`, so device -> cloud crosses the device link and the backbone. A board's
tier comes from `@tier` or its board file (planner/planning/profile.py's guess from the
speed prior). The planner side (broker, client) sits on the switch itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from node import config
from node.errors import ConfigError
from planner.errors import TilefleetError

TOPOLOGIES = ("star", "tiers")
TIERS = ("device", "edge", "cloud")
_BOARD = re.compile(r"^([A-Za-z0-9_.-]+):(\d+)(?:@([a-z]+))?$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class TestbedError(TilefleetError):
    """The testbed cannot be specified, built or found (one line says why)."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True)
class LinkSpec:
    """A board's link: rate in Mbit/s (0: not shaped) and one-way delay in ms."""

    rate_mbit: float = 0.0
    delay_ms: float = 0.0

    def shaped(self) -> bool:
        return self.rate_mbit > 0 or self.delay_ms > 0

    def to_json(self) -> dict:
        return {"rate_mbit": self.rate_mbit, "delay_ms": self.delay_ms}


@dataclass(frozen=True)
class BoardSpec:
    kind: str
    count: int
    tier: str


@dataclass(frozen=True)
class TestbedSpec:
    __test__ = False

    boards: tuple[BoardSpec, ...]
    topology: str = "star"
    link: LinkSpec = LinkSpec()
    lan: LinkSpec = LinkSpec()
    backbone: LinkSpec = LinkSpec()
    name: str = "default"
    emulation: str = "auto"  # auto (cgroup if root, else padded), cgroup, padded, none

    def nodes(self) -> list[tuple[str, BoardSpec]]:
        """(node name, board) in order: <kind>-<i>, numbered per kind from 0."""
        return [(f"{b.kind}-{i}", b) for b in self.boards for i in range(b.count)]

    def link_of(self, board: BoardSpec) -> LinkSpec:
        """The link this board hangs off the switch by."""
        if self.topology == "star":
            return self.link
        return {"device": self.link, "edge": self.lan, "cloud": self.backbone}[board.tier]


def parse_link(text: str | None, what: str = "--link") -> LinkSpec:
    """'RATE[,DELAY]' (Mbit/s, ms) -> LinkSpec; None or '' -> unshaped."""
    if not text:
        return LinkSpec()
    parts = text.split(",")
    try:
        rate = float(parts[0])
        delay = float(parts[1]) if len(parts) > 1 else 0.0
    except ValueError:
        raise TestbedError(f"{what} {text!r}: expected RATE[,DELAY] in Mbit/s and ms, "
                           "e.g. 20,5") from None
    if len(parts) > 2 or rate < 0 or delay < 0 or rate > 100_000 or delay > 10_000:
        raise TestbedError(f"{what} {text!r}: expected RATE[,DELAY] with 0 <= RATE <= 100000 "
                           "Mbit/s and 0 <= DELAY <= 10000 ms")
    return LinkSpec(rate, delay)


def default_tier(kind: str) -> str:
    """The board file's tier: cloud for speed priors >= 20, edge >= 4, else device."""
    prior = config.for_board(kind).board.speed_prior
    return "cloud" if prior >= 20 else "edge" if prior >= 4 else "device"


def parse_boards(text: str) -> tuple[BoardSpec, ...]:
    """'rpi3:4,rpi4:2,edge_server:1@cloud' -> boards (kinds checked against node/boards/)."""
    out: list[BoardSpec] = []
    for item in (x.strip() for x in text.split(",")):
        m = _BOARD.match(item)
        if not m:
            raise TestbedError(f"--boards: {item!r} is not KIND:COUNT[@TIER] "
                               "(e.g. rpi3:4,edge_server:1@cloud)")
        kind, count, tier = m.group(1), int(m.group(2)), m.group(3)
        try:
            tier = tier or default_tier(kind)
        except ConfigError as exc:
            raise TestbedError(f"--boards: {exc}") from None
        if tier not in TIERS:
            raise TestbedError(f"--boards: tier {tier!r} of {kind} is not one of "
                               f"{', '.join(TIERS)}")
        if not 1 <= count <= 64:
            raise TestbedError(f"--boards: {kind} count must be 1..64, not {count}")
        if any(b.kind == kind for b in out):
            raise TestbedError(f"--boards: {kind} is given twice")
        out.append(BoardSpec(kind, count, tier))
    if not out:
        raise TestbedError("--boards: give at least one KIND:COUNT")
    if sum(b.count for b in out) > 64:
        raise TestbedError("--boards: a testbed holds at most 64 boards")
    return tuple(out)


def make_spec(boards: str, topology: str = "star", link: str | None = None,
              lan: str | None = None, backbone: str | None = None, name: str = "default",
              emulation: str = "auto") -> TestbedSpec:
    """A validated TestbedSpec from the command line's strings."""
    if topology not in TOPOLOGIES:
        raise TestbedError(f"--topology must be one of {', '.join(TOPOLOGIES)}, not {topology!r}")
    if not _NAME.match(name):
        raise TestbedError(f"--name {name!r}: lower-case letters, digits, _ and - (max 32)")
    if emulation not in ("auto", "cgroup", "padded", "none"):
        raise TestbedError(f"emulation must be auto, cgroup, padded or none, not {emulation!r}")
    spec = TestbedSpec(parse_boards(boards), topology, parse_link(link, "--link"),
                       parse_link(lan, "--lan"), parse_link(backbone, "--backbone"), name,
                       emulation)
    if topology == "star" and (spec.lan.shaped() or spec.backbone.shaped()):
        raise TestbedError("--lan and --backbone need --topology tiers")
    return spec
