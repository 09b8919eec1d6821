"""The deployment record: retained JSON at `tilefleet/<fleet>/deployments/<name>`.

It holds everything another process needs to use or tear down a deployment: the epoch,
the model's input/output tensors, the plan and its strategy and objective (what every
re-plan keeps optimising), which node runs which wire stage (`StageEntry`), the nodes'
endpoints, the client's entry routes and the result tensors (with their piece counts).
Version 1; unknown keys are ignored so it can grow (`objective` was added: a record
without it takes its plan's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node.errors import WireError
from node.wire.messages import Route, TileSpec
from planner.errors import FleetError

RECORD_VERSION = 1


@dataclass(frozen=True)
class StageEntry:
    """One wire stage of a deployment: the node it runs on, its part, its ops, its tile."""

    node: str
    part: str  # sha256 of the part ("" in hand-written records)
    ops: tuple[int, int]
    tile: TileSpec | None = None  # the tile it computes (full-tensor regions), or None

    def to_json(self) -> dict[str, Any]:
        t = self.tile
        return {"node": self.node, "part": self.part, "ops": list(self.ops),
                "tile": None if t is None else t.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StageEntry:
        """Inverse of to_json (KeyError/TypeError/ValueError on a bad entry)."""
        t = d.get("tile")
        tile = None if not t else TileSpec.from_json(t)
        start, end = (int(v) for v in d["ops"])
        return cls(str(d["node"]), str(d.get("part") or ""), (start, end), tile)


def route_json(r: Route) -> dict[str, Any]:
    """An entry route as the record stores it."""
    return {"tensor": r.tensor, "to": r.to, "stage": r.stage, "name": r.name,
            "region": list(r.region) if r.region else None}


def route_of(d: dict[str, Any]) -> Route:
    """Inverse of route_json."""
    return Route(d["tensor"], d["to"], d.get("stage", ""), d.get("name", ""),
                 tuple(d["region"]) if d.get("region") else None)


@dataclass
class Record:
    """A deployment record (see the module docstring)."""

    name: str
    fleet: str
    epoch: int
    model: dict[str, Any]  # sha256, file, inputs [T], outputs [T]; T = name, shape, dtype
    nodes: dict[str, dict[str, Any]]  # node -> data_endpoint, service_endpoint, board
    stages: dict[str, StageEntry]  # wire stage id -> where it runs and what it computes
    entry: tuple[Route, ...]  # the client's routes into the first stages
    results: dict[str, dict[str, Any]]  # output name -> shape, dtype, pieces
    strategy: str = ""
    objective: str = ""  # what re-plans optimise ("": none, a hand-written plan)
    plan: dict[str, Any] | None = None  # the plan JSON (None: hand-written stages)
    predicted: dict[str, Any] | None = None
    created: float = 0.0
    updated: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def entry_routes(self) -> tuple[Route, ...]:
        """The client's entry routes (wire Routes)."""
        return self.entry

    def to_json(self) -> dict[str, Any]:
        """The retained JSON document."""
        return {"type": "deployment", "v": RECORD_VERSION, "name": self.name,
                "fleet": self.fleet, "epoch": self.epoch, "model": self.model,
                "strategy": self.strategy, "objective": self.objective, "plan": self.plan,
                "predicted": self.predicted, "nodes": self.nodes,
                "stages": {sid: st.to_json() for sid, st in self.stages.items()},
                "entry": [route_json(r) for r in self.entry], "results": self.results,
                "created": self.created, "updated": self.updated, "extra": self.extra}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Record:
        """Parse a retained record; FleetError names the missing key."""
        if not isinstance(d, dict) or d.get("type") != "deployment":
            raise FleetError("not a deployment record")
        if d.get("v") != RECORD_VERSION:
            raise FleetError(f"deployment record version {d.get('v')!r} is not "
                             f"{RECORD_VERSION}")
        try:
            plan = d.get("plan")
            objective = d.get("objective") or (plan or {}).get("objective", "")
            return cls(name=d["name"], fleet=d["fleet"], epoch=int(d["epoch"]),
                       model=d["model"], nodes=d["nodes"],
                       stages={str(sid): StageEntry.from_json(st)
                               for sid, st in d["stages"].items()},
                       entry=tuple(route_of(r) for r in d["entry"]), results=d["results"],
                       strategy=d.get("strategy", ""), objective=str(objective), plan=plan,
                       predicted=d.get("predicted"), created=d.get("created", 0.0),
                       updated=d.get("updated", 0.0), extra=d.get("extra") or {})
        except (KeyError, TypeError, ValueError, AttributeError, WireError) as exc:
            raise FleetError(f"deployment record {d.get('name')!r}: bad or missing key "
                             f"{exc}") from None

    def stage_nodes(self) -> list[str]:
        """Nodes that run at least one stage, in stage order."""
        return list(dict.fromkeys(s.node for s in self.stages.values()))


def tensor_json(t: Any) -> dict[str, Any]:
    """A TensorInfo/TensorSpec as {name, shape, dtype, scale, zero_point}."""
    scale, zp = t.quant() if hasattr(t, "quant") else (t.scale, t.zero_point)
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "scale": scale,
            "zero_point": zp}
