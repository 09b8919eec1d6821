"""Plan file (version 1): which ops run where, which tensors travel where, and the predictions.

A plan is the hand-off from planner to deployment (PROFILE_AND_PLAN.md): `tilefleet
deploy --plan` ships exactly its stages, and `deploy MODEL` plans and then deploys the
plan it made. Stages are listed in op order; a stage holds ops [start, end) on one
device, or a fused-tile stack whose tiles run on several devices. Routes say which stage
sends which tensors (by name) to which stage or to the sink; "source" is where frames
originate. The plan names its model (file and sha256) and embeds the profile it was made
from (`profile`, optional: older plans only name a `profile_file`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from node.wire.regions import TileSpec
from planner.errors import PlanError, ProfileError
from planner.planning.jsonfile import read_json
from planner.planning.profile import Profile, profile_from_json

VERSION = 1
SOURCE, SINK = "source", "sink"
MANUAL = "manual"  # the strategy of a plan written by hand (stages given, nothing predicted)
Endpoint = int | str  # a stage id, or SOURCE / SINK


@dataclass(frozen=True)
class TileGrid:
    """Tile grid of a stage: output split points per axis (0 ... size), one device per tile,
    and optionally each tile's regions (the wire's TileSpec, as the slice manifest has them)."""

    rows: tuple[int, ...]
    cols: tuple[int, ...]
    devices: tuple[str, ...]  # row-major, len = (len(rows)-1) * (len(cols)-1)
    regions: tuple[TileSpec, ...] = ()


@dataclass(frozen=True)
class Stage:
    """Ops [start, end) on one device, or on a tile grid."""

    id: int
    ops: tuple[int, int]
    device: str | None = None
    tiles: TileGrid | None = None

    @property
    def devices(self) -> tuple[str, ...]:
        """Every device the stage uses (the tile devices, or its one device)."""
        return self.tiles.devices if self.tiles else (self.device,)


@dataclass(frozen=True)
class Route:
    """Tensors one stage (or the source) sends to another stage (or the sink)."""

    src: Endpoint
    dst: Endpoint
    tensors: tuple[str, ...]
    bytes: int


@dataclass(frozen=True)
class Plan:
    """A complete plan: model and profile identity, stages, routes, predictions."""

    model_file: str
    model_sha256: str
    profile_sha256: str
    strategy: str
    objective: str
    source: str
    sink: str
    stages: tuple[Stage, ...]
    routes: tuple[Route, ...]
    predicted: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)  # strategy-specific: problem solved, optimality
    profile_file: str = ""  # where the profile was read from, when it came from a file
    profile: Profile | None = None  # the profile it was made from (sha256 = profile_sha256)

    def stage(self, sid: int) -> Stage:
        """Stage by id."""
        for s in self.stages:
            if s.id == sid:
                return s
        raise PlanError(f"plan has no stage {sid}")

    def devices(self) -> list[str]:
        """Devices used by some stage, in first-use order."""
        seen: dict[str, None] = {}
        for s in self.stages:
            for d in s.devices:
                seen.setdefault(d, None)
        return list(seen)

    def to_json(self) -> dict:
        """The version-1 JSON document."""
        def stage(s: Stage) -> dict:
            rec: dict = {"id": s.id, "ops": list(s.ops)}
            if s.tiles:
                rec["tiles"] = {"rows": list(s.tiles.rows), "cols": list(s.tiles.cols),
                                "devices": list(s.tiles.devices),
                                "regions": [r.to_json() for r in s.tiles.regions]}
            else:
                rec["device"] = s.device
            return rec

        doc = {
            "version": VERSION,
            "model": {"file": self.model_file, "sha256": self.model_sha256},
            "profile_sha256": self.profile_sha256, "profile_file": self.profile_file,
            "strategy": self.strategy, "objective": self.objective,
            "source": self.source, "sink": self.sink,
            "stages": [stage(s) for s in self.stages],
            "routes": [{"from": r.src, "to": r.dst, "tensors": list(r.tensors), "bytes": r.bytes}
                       for r in self.routes],
            "predicted": self.predicted, "notes": self.notes,
        }
        if self.profile is not None:  # optional key: a plan without it reads as before
            doc["profile"] = self.profile.to_json()
        return doc


# ---- reading and validation -----------------------------------------------------------------
def _need(rec: dict, key: str, kind: type | tuple, where: str):
    if not isinstance(rec, dict) or key not in rec:
        raise PlanError(f"{where}: missing key {key!r}")
    value = rec[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PlanError(f"{where}: key {key!r} has the wrong type ({type(value).__name__})")
    return value


def _ints(value: object, where: str, n: int | None = None) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise PlanError(f"{where}: must be a list of integers")
    if n is not None and len(value) != n:
        raise PlanError(f"{where}: must have {n} entries, got {len(value)}")
    return tuple(value)


def _stage(rec: object, i: int, where: str) -> Stage:
    w = f"{where}: stages[{i}]"
    sid = _need(rec, "id", int, w)
    start, end = _ints(_need(rec, "ops", list, w), f"{w}.ops", 2)
    if not 0 <= start < end:
        raise PlanError(f"{w}.ops: [{start}, {end}) is not a non-empty range")
    if "tiles" in rec:
        t = _need(rec, "tiles", dict, w)
        rows = _ints(_need(t, "rows", list, f"{w}.tiles"), f"{w}.tiles.rows")
        cols = _ints(_need(t, "cols", list, f"{w}.tiles"), f"{w}.tiles.cols")
        devs = _need(t, "devices", list, f"{w}.tiles")
        for axis, pts in (("rows", rows), ("cols", cols)):
            if (
                len(pts) < 2
                or pts[0] != 0
                or any(b <= a for a, b in zip(pts, pts[1:], strict=False))
            ):
                raise PlanError(f"{w}.tiles.{axis}: split points must start at 0 and increase")
        if len(devs) != (len(rows) - 1) * (len(cols) - 1) or not all(
            isinstance(d, str) for d in devs
        ):
            raise PlanError(f"{w}.tiles.devices: need one device name per tile "
                            f"({(len(rows) - 1) * (len(cols) - 1)}), got {devs!r}")
        regions = t.get("regions", [])
        if not isinstance(regions, list) or (regions and len(regions) != len(devs)):
            raise PlanError(f"{w}.tiles.regions: need one record per tile")
        try:
            tiles = tuple(
                TileSpec.from_json(r, f"{w}.tiles.regions[{k}]") for k, r in enumerate(regions)
            )
        except ValueError as exc:
            raise PlanError(str(exc)) from None
        return Stage(sid, (start, end), None, TileGrid(rows, cols, tuple(devs), tiles))
    return Stage(sid, (start, end), _need(rec, "device", str, w))


def _endpoint(value: object, ids: set[int], w: str) -> Endpoint:
    if value in (SOURCE, SINK) or (
        isinstance(value, int) and not isinstance(value, bool) and value in ids
    ):
        return value
    raise PlanError(f"{w}: {value!r} is neither a stage id nor 'source'/'sink'")


def plan_from_json(doc: object, where: str = "<plan>") -> Plan:
    """Validate a version-1 plan document; errors name the file and the key."""
    if not isinstance(doc, dict):
        raise PlanError(f"{where}: a plan must be a JSON object")
    if doc.get("version") != VERSION:
        raise PlanError(f"{where}: key 'version' must be {VERSION}, got {doc.get('version')!r}")
    model = _need(doc, "model", dict, where)
    stages = tuple(_stage(r, i, where) for i, r in enumerate(_need(doc, "stages", list, where)))
    if not stages:
        raise PlanError(f"{where}: key 'stages' is empty")
    ids = {s.id for s in stages}
    if len(ids) != len(stages):
        raise PlanError(f"{where}: key 'stages' repeats a stage id")
    routes = []
    for i, r in enumerate(_need(doc, "routes", list, where)):
        w = f"{where}: routes[{i}]"
        names = _need(r, "tensors", list, w)
        if not all(isinstance(n, str) for n in names):
            raise PlanError(f"{w}.tensors: must be a list of tensor names")
        routes.append(
            Route(
                _endpoint(r.get("from"), ids, f"{w}.from"),
                _endpoint(r.get("to"), ids, f"{w}.to"),
                tuple(names),
                _need(r, "bytes", int, w),
            )
        )
    profile = None
    if doc.get("profile") is not None:
        try:
            profile = profile_from_json(doc["profile"], f"{where}: profile")
        except ProfileError as exc:
            raise PlanError(str(exc)) from None
    return Plan(
        model_file=_need(model, "file", str, f"{where}: model"),
        model_sha256=_need(model, "sha256", str, f"{where}: model"),
        profile_sha256=_need(doc, "profile_sha256", str, where),
        strategy=_need(doc, "strategy", str, where),
        objective=_need(doc, "objective", str, where),
        source=_need(doc, "source", str, where),
        sink=_need(doc, "sink", str, where),
        stages=stages,
        routes=tuple(routes),
        predicted=doc.get("predicted", {}) if isinstance(doc.get("predicted", {}), dict) else {},
        notes=doc.get("notes", {}) if isinstance(doc.get("notes", {}), dict) else {},
        profile_file=doc.get("profile_file", "")
        if isinstance(doc.get("profile_file", ""), str)
        else "",
        profile=profile,
    )


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file."""
    p = Path(path)
    return plan_from_json(read_json(p, "plan", PlanError), str(p))


def save_plan(plan: Plan, path: str | Path) -> None:
    """Write a plan as indented JSON."""
    Path(path).write_text(json.dumps(plan.to_json(), indent=2) + "\n")


def check_plan(plan: Plan, graph, device_names) -> None:
    """Plan matches the model (sha, op coverage) and names only known devices."""
    check_model(plan, graph)
    check_coverage(sorted(plan.stages, key=lambda s: s.ops), len(graph.ops))
    for s in plan.stages:
        for d in s.devices:
            if d not in device_names:
                raise PlanError(f"stage {s.id}: unknown node {d!r}")


def check_model(plan: Plan, graph) -> None:
    """PlanError unless the plan was made for this model file (same sha256)."""
    if plan.model_sha256 != graph.sha256:
        raise PlanError(
            f"plan is for model {plan.model_sha256[:12]}, not {graph.sha256[:12]} ({graph.source})"
        )


def check_coverage(stages: Sequence[Stage], n_ops: int) -> tuple[Stage, ...]:
    """Stages in op order covering [0, n_ops) once, with distinct ids; PlanError says where not."""
    if not stages:
        raise PlanError("plan has no stages")
    if len({s.id for s in stages}) != len(stages):
        raise PlanError("plan stages repeat a stage id")
    pos = 0
    for s in stages:
        start, end = s.ops
        if start != pos:
            raise PlanError(
                f"plan stages leave ops [{pos}, {start}) unassigned or overlap at op {start}"
            )
        pos = end
    if pos != n_ops:
        raise PlanError(f"plan stages end at op {pos}, the model has {n_ops} ops")
    return tuple(stages)


def chain(n_ops: int, cuts: Sequence[int], devices: Sequence[str]) -> tuple[Stage, ...]:
    """A plain pipeline: ops cut at `cuts`, stage k on devices[k]."""
    bounds = [0, *cuts, n_ops]
    if len(devices) != len(bounds) - 1:
        raise PlanError(f"{len(bounds) - 1} stages but {len(devices)} devices")
    return check_coverage([Stage(k, (a, b), d) for k, (a, b, d) in
                           enumerate(zip(bounds, bounds[1:], devices, strict=False))], n_ops)


def tile_stage(graph, sid: int, ops: tuple[int, int], rows, cols, devices: Sequence[str]
               ) -> Stage:
    """A tile Stage of ops [start, end): rows/cols are tile counts or output split points
    (planner/model/tile.py's tile_layout), tile k on devices[k % len(devices)], with the
    manifest tile records; TileError when the grid cannot be tiled exactly."""
    from planner.model.tile import tile_layout  # the tiler is needed for tile stages only

    spec = [r if isinstance(r, int) else list(r) for r in (rows, cols)]
    layout = tile_layout(graph, ops[0], ops[1], *spec)
    n = len(layout.tiles)
    return Stage(sid, ops, None, TileGrid(tuple(layout.row_splits), tuple(layout.col_splits),
                                          tuple(devices[k % len(devices)] for k in range(n)),
                                          layout.tiles))


def manual_plan(graph, stages: Sequence[Stage]) -> Plan:
    """A hand-written plan of `graph`: the stages only (no routes, nothing predicted)."""
    return Plan(model_file=graph.source, model_sha256=graph.sha256, profile_sha256="",
                strategy=MANUAL, objective="", source="client", sink="client",
                stages=check_coverage(tuple(stages), len(graph.ops)), routes=())
