"""Plan stages -> parts and per-node StageSpecs with routes (pure: no sockets, no broker).

`wire` is the one step from the planner's stage type (planner.planning.plan.Stage) to the
wire's (node.wire.specs.StageSpec): parts are cut and tiled by the code `tilefleet slice`
uses (planner.model.slicer: `cut_at`'s ranges, `tile_part`'s tile records from the plan's
own split points), so a deployed plan runs exactly the parts a slice of it writes.

Every tensor a stage consumes is routed from whoever holds it: the client (model inputs)
or the stage(s) that produce it. A holder of a region P (a tile's region of that output, or the
whole tensor) sends each consumer window W (a tile's window of that input, or the whole tensor)
the piece P ∩ W; the consumer's InputSpec.pieces counts the pieces it will receive, and
the node's gather stitches them. So a tiled stage feeding a whole-tensor stage makes the
latter the gather stage, and two tiled stages in a row exchange only overlaps.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.wire.frames import CLIENT, Region
from node.wire.messages import InputSpec, Route, StageSpec, TileSpec
from planner.errors import PlanError
from planner.fleet.record import StageEntry
from planner.model import slicer
from planner.model.cut import Part, cut_range
from planner.model.graph import ModelGraph
from planner.model.manifest import TensorSpec
from planner.planning.plan import Stage, check_coverage


@dataclass
class Wiring:
    """What deploy ships: parts by sha, StageSpecs by node, the client's entry routes."""

    parts: dict[str, Part] = field(default_factory=dict)
    specs: dict[str, list[StageSpec]] = field(default_factory=dict)
    stages: dict[str, StageEntry] = field(default_factory=dict)
    entry: list[Route] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> shape, pieces

    def parts_of(self, node: str) -> list[str]:
        """Sha256 of every part `node` needs, without repeats."""
        return list(dict.fromkeys(s.part for s in self.specs.get(node, []) if s.part))


def intersect(a: Region | None, b: Region | None, shape: tuple[int, ...]) -> Region | None:
    """a ∩ b (None = whole tensor); raises ValueError when empty."""
    if len(shape) != 4 or (a is None and b is None):
        return None
    full = (0, shape[1], 0, shape[2])
    a, b = a or full, b or full
    r = (max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3]))
    if r[0] >= r[1] or r[2] >= r[3]:
        raise ValueError("empty")
    return r


@dataclass
class _Holder:
    stage: str  # stage id or CLIENT
    region: Region | None  # what it holds of the tensor (None: all)


@dataclass
class _Consumer:
    stage: str
    endpoint: str
    window: Region | None


def wire(graph: ModelGraph, stages: Sequence[Stage], endpoints: Mapping[str, str]
         ) -> Wiring:
    """Cut the plan stages' parts and wire every stage; PlanError for unknown devices.

    Wire stage ids are `s<id>` for a plan stage, `s<id>t<k>` for tile k of a tile stage.
    """
    stages = check_coverage(tuple(stages), len(graph.ops))
    for s in stages:
        for d in s.devices:
            if d not in endpoints:
                raise PlanError(f"unknown node {d!r}: the plan uses it but it is not "
                                f"online (online: {', '.join(sorted(endpoints)) or 'none'})")
    w = Wiring()
    holders: dict[str, list[_Holder]] = {graph.tensors[i].name: [_Holder(CLIENT, None)]
                                         for i in graph.inputs}
    routes: dict[str, list[Route]] = {CLIENT: []}
    pending: list[tuple[str, str, Part, TileSpec | None, dict[str, int]]] = []
    for st in stages:
        part = cut_cached(graph, *st.ops)
        members = _members(graph, st, part)
        if st.tiles is not None:  # the file tiles run (upsamples follow the tile's size)
            part = slicer.tile_ready_part(graph, part)
        w.parts[part.sha256] = part
        for sid, node, tile in members:
            # each input of a tile has its own window, each output its own region (part order)
            pieces = {t.name: _feed(t, holders, routes, _Consumer(
                sid, endpoints[node], tile.input_window(k) if tile else None))
                for k, t in enumerate(part.inputs)}
            pending.append((sid, node, part, tile, pieces))
            w.stages[sid] = StageEntry(node, part.sha256, st.ops, tile)
            routes.setdefault(sid, [])
        for k, t in enumerate(part.outputs):
            holders[t.name] = [_Holder(sid, tile.output_window(k) if tile else None)
                               for sid, _, tile in members]
    for i in graph.outputs:
        t = graph.tensors[i]
        spec = TensorSpec(t.name, t.shape, t.dtype)
        n = _feed(spec, holders, routes, _Consumer(CLIENT, CLIENT, None))
        w.results[t.name] = {"shape": list(t.shape), "dtype": t.dtype, "pieces": n}
    for sid, node, part, tile, pieces in pending:
        w.specs.setdefault(node, []).append(stage_spec(sid, part, tile, pieces, routes[sid]))
    w.entry = routes[CLIENT]
    return w


def stage_spec(sid: str, part: Part, tile: TileSpec | None, pieces: Mapping[str, int],
               routes: Sequence[Route]) -> StageSpec:
    """The wire StageSpec of one member of a plan stage: its part, inputs (with the number
    of region pieces each gathers), next-hop routes and tile."""
    inputs = tuple(InputSpec(t.name, t.dtype, tuple(t.shape), pieces[t.name])
                   for t in part.inputs)
    return StageSpec(sid, part.sha256, inputs, tuple(routes), tile)


# Re-plans cut the same ranges again and again (a switch that moves one stage re-cuts
# every unchanged one); cutting a 14 MB model's 4 parts takes ~15 ms, a lookup nothing.
_CUTS: weakref.WeakKeyDictionary[ModelGraph, dict[tuple[int, int], Part]] = \
    weakref.WeakKeyDictionary()
_CUTS_LOCK = threading.Lock()
_CUTS_PER_GRAPH = 64


def cut_cached(graph: ModelGraph, start: int, end: int) -> Part:
    """cut_range (what slicer's cut_at runs per range), remembered per graph (the graph's
    parts go when the graph goes)."""
    with _CUTS_LOCK:
        part = _CUTS.setdefault(graph, {}).get((start, end))
    if part is None:
        part = cut_range(graph, start, end)
        with _CUTS_LOCK:
            cuts = _CUTS.setdefault(graph, {})
            if len(cuts) >= _CUTS_PER_GRAPH:
                del cuts[next(iter(cuts))]  # the oldest
            cuts[(start, end)] = part
    return part


def _members(graph: ModelGraph, st: Stage, part: Part
             ) -> list[tuple[str, str, TileSpec | None]]:
    """(wire stage id, node, tile) of every member of plan stage `st`."""
    if st.tiles is None:
        return [(f"s{st.id}", st.device, None)]
    grid = slicer.TileRequest(tuple(st.tiles.rows), tuple(st.tiles.cols))
    tiles = slicer.tile_part(graph, part, grid)
    if len(tiles) != len(st.tiles.devices):
        raise PlanError(f"stage {st.id}: {len(tiles)} tiles but "
                        f"{len(st.tiles.devices)} devices")
    return [(f"s{st.id}t{k}", st.tiles.devices[k], t) for k, t in enumerate(tiles)]


def _feed(t: TensorSpec, holders: dict[str, list[_Holder]], routes: dict[str, list[Route]],
          consumer: _Consumer) -> int:
    """Add a route from every holder of t that overlaps the consumer; return the count."""
    have = holders.get(t.name)
    if not have:
        raise PlanError(f"stage {consumer.stage!r} needs tensor {t.name!r}, which no earlier "
                        "stage produces")
    n = 0
    shape = tuple(t.shape)
    for h in have:
        try:
            piece = intersect(h.region, consumer.window, shape)
        except ValueError:
            continue
        region = None if piece == h.region else piece
        routes[h.stage].append(Route(t.name, consumer.endpoint,
                                     "" if consumer.stage == CLIENT else consumer.stage,
                                     region=region))
        n += 1
    return n
